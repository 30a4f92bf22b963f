"""The generated scenes in the Cityscapes layout: fine labelIds, the seed's train/hamburg and
val/frankfurt subset, and a labelled test split. Read by `lib.datasets.Cityscapes`.

Layout written (root = the folder given; image i of a split is sequence i, frame 19, the frame
Cityscapes annotates in each snippet)::

    leftImg8bit/train/hamburg/hamburg_000000_000019_leftImg8bit.png
    gtFine/train/hamburg/hamburg_000000_000019_gtFine_labelIds.png
    leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png
    gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png
    leftImg8bit/test/berlin/berlin_000000_000019_leftImg8bit.png
    gtFine/test/berlin/berlin_000000_000019_gtFine_labelIds.png
    synthetic.json

Images are 8-bit RGB PNGs; labels single-channel PNGs of official Cityscapes labelIds, looked up
by label name in ``cityscapesscripts.helpers.labels`` when writing (never a copied number table).
Unlike the real release, whose test labels are placeholders (its val split then plays both the
model-selection and the test role), the stand-in's test split is labelled: val chooses the
checkpoint, test gives the numbers. The scenes have no anomalies. Only the ``*_gtFine_labelIds.png``
files are written, not the colour, instance or polygon files that the loader does not read.

The scenes are those of the Cityscapes vocabulary (`lib.synthetic.scene`), so all 19 train classes
appear. Class mapping (`CITYSCAPES_NAMES`, scene class name -> Cityscapes label name): the names
that exist in both keep theirs (traffic light, terrain, rider, truck, bus, train, motorcycle and
bicycle included); pedestrian -> person; road line -> road (Cityscapes has no lane-marking class:
markings are part of the road); "unlabeled" -> sky where it is sky and ground (void, ignored) where
it is the bare paved ground some scenes show beyond the property lines; other (bins, benches,
bollards, hydrants, cabinets) -> static (void, ignored: Cityscapes files such street furniture under
static, and its 19 classes have none of them).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from lib.synthetic.canvas import EXTRA_CLASSES
from lib.synthetic.scene import SCENE_CLASSES, Scene
from lib.synthetic.standin import StandIn, write_pair

#: Split -> its one city folder (train and val: the Cityscapes seed's subset; test: a city of the
#: real test split).
CITIES: dict[str, str] = {"train": "hamburg", "val": "frankfurt", "test": "berlin"}
#: Scene class name -> Cityscapes label name; "unlabeled" pixels that are sky get `SKY`.
CITYSCAPES_NAMES: dict[str, str] = {
    "unlabeled": "ground",
    "building": "building",
    "fence": "fence",
    "other": "static",
    "pedestrian": "person",
    "pole": "pole",
    "road line": "road",
    "road": "road",
    "sidewalk": "sidewalk",
    "vegetation": "vegetation",
    "car": "car",
    "wall": "wall",
    "traffic sign": "traffic sign",
    "anomaly": "unlabeled",  # never drawn: the scenes of this format have no anomalies
    **{name: name for name in EXTRA_CLASSES},
}
SKY = "sky"


@functools.lru_cache(maxsize=1)
def _label_ids() -> tuple[np.ndarray, int]:
    """(scene label id -> Cityscapes labelId lookup table, labelId of sky)."""
    try:
        from cityscapesscripts.helpers.labels import name2label
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Cityscapes-format stand-in needs the official label table of the cityscapesscripts "
            "package: pip install cityscapesscripts"
        ) from err
    lut = np.array([name2label[CITYSCAPES_NAMES[name]].id for name in SCENE_CLASSES], np.uint8)
    return lut, int(name2label[SKY].id)


def cityscapes_label_ids(scene: Scene) -> np.ndarray:
    """The scene's label as Cityscapes labelIds, (H, W) uint8."""
    lut, sky = _label_ids()
    ids = lut[scene.label]
    ids[scene.sky] = sky
    return ids


def _write(root: Path, split: str, index: int, seed: int, scene: Scene) -> list[str]:
    city = CITIES[split]
    stem = f"{city}_{index:06d}_000019"
    image = f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"
    label = f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"
    return write_pair(root, image, label, scene.image, cityscapes_label_ids(scene))


STANDIN = StandIn(
    name="cityscapes",
    layout="Cityscapes",
    splits=("train", "val", "test"),
    folders=tuple(
        f"{top}/{split}/{city}" for split, city in CITIES.items() for top in ("leftImg8bit", "gtFine")
    ),
    markers=("leftImg8bit", "gtFine"),
    write=_write,
)
