"""StreetHazards class table: names, raw annotation values and display colours."""

from __future__ import annotations

#: Class names in train-id order (train id = raw PNG value - 1).
STREETHAZARDS_CLASSES: tuple[str, ...] = (
    "unlabeled",
    "building",
    "fence",
    "other",
    "pedestrian",
    "pole",
    "road line",
    "road",
    "sidewalk",
    "vegetation",
    "car",
    "wall",
    "traffic sign",
    "anomaly",
)

#: Train id of the anomaly class; models are trained on ids 0..ANOMALY_ID-1.
ANOMALY_ID: int = 13
#: Number of classes a model predicts (all but the anomaly).
NUM_KNOWN_CLASSES: int = 13
#: Label value for pixels that no loss or metric looks at.
IGNORE_INDEX: int = 255
#: Raw annotation values allowed in StreetHazards PNGs.
RAW_MIN, RAW_MAX = 1, 14

#: RGB colour per train id (anomaly in a loud cyan so it stands out in figures).
STREETHAZARDS_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),  # unlabeled
    (70, 70, 70),  # building
    (190, 153, 153),  # fence
    (250, 170, 160),  # other
    (220, 20, 60),  # pedestrian
    (153, 153, 153),  # pole
    (157, 234, 50),  # road line
    (128, 64, 128),  # road
    (244, 35, 232),  # sidewalk
    (107, 142, 35),  # vegetation
    (0, 0, 142),  # car
    (102, 102, 156),  # wall
    (220, 220, 0),  # traffic sign
    (0, 255, 255),  # anomaly
)


def class_id(name: str) -> int:
    """Return the train id of a StreetHazards class name.

    Raises:
        KeyError: if the name is unknown; the message lists the valid names.
    """
    try:
        return STREETHAZARDS_CLASSES.index(name)
    except ValueError:
        raise KeyError(f"unknown class {name!r}; valid names: {', '.join(STREETHAZARDS_CLASSES)}") from None


# ----------------------------------------------------------------------------- other datasets
# The Cityscapes raw-id -> train-id table is NOT written here: lib.datasets builds it from the
# official `cityscapesscripts.helpers.labels` at run time.

#: BDD100K 10K semantic segmentation: the 19 Cityscapes evaluation classes in train-id order
#: (label PNGs hold these ids directly; 255 = unknown).
BDD100K_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
#: Name of the extra class 19 when BDD100K's unknown (255) is kept as a class, as the BDD seed did.
BDD100K_UNKNOWN_CLASS: str = "unknown"

#: Train ids of the anomaly-only evaluation sets (LostAndFound, RoadAnomaly); 255 = ignore.
ANOMALY_EVAL_CLASSES: tuple[str, ...] = ("in-distribution", "anomaly")
#: Train id of in-distribution (known) pixels in the anomaly-only evaluation sets.
EVAL_INLIER_ID: int = 0
#: Train id of anomaly pixels in the anomaly-only evaluation sets.
EVAL_ANOMALY_ID: int = 1

#: LostAndFound ``gtCoarse_labelIds``: 0 unlabeled, 1 free space (drivable road), 2..43 obstacle
#: types (the LAF label table); nothing above 43 exists.
LAF_UNLABELED_ID: int = 0
LAF_FREE_SPACE_ID: int = 1
LAF_MAX_ID: int = 43
#: Obstacle ids the LAF table files under "random non-hazards" (marker pole lying, red post lying,
#: post stand, small timber, squared timber, wheel cap, thin wood); some evaluations ignore them.
LAF_NON_HAZARD_IDS: tuple[int, ...] = (31, 33, 34, 36, 37, 38, 39)
