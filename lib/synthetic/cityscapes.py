"""The generated scenes in the Cityscapes layout: fine labelIds, the seed's train/hamburg and
val/frankfurt subset. Read by `lib.datasets.Cityscapes`.

Layout written (root = the folder given; image i of a split is sequence i, frame 19, the frame
Cityscapes annotates in each snippet)::

    leftImg8bit/train/hamburg/hamburg_000000_000019_leftImg8bit.png
    gtFine/train/hamburg/hamburg_000000_000019_gtFine_labelIds.png
    leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png
    gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png
    synthetic.json

Images are 8-bit RGB PNGs; labels single-channel PNGs of official Cityscapes labelIds, looked up
by label name in ``cityscapesscripts.helpers.labels`` when writing (never a copied number table).
No test split is written (its public labels are placeholders; the val split plays the test
role), and the scenes have no anomalies. Only the ``*_gtFine_labelIds.png`` files are written,
not the colour, instance or polygon files that the loader does not read.

Class mapping (`CITYSCAPES_NAMES`, StreetHazards train-id name -> Cityscapes label name): the
names that exist in both keep theirs; pedestrian -> person; road line -> road (Cityscapes has no
lane-marking class: markings are part of the road); "unlabeled" -> sky where it is sky and
ground (void, ignored) where it is the bare paved ground some scenes show beyond the property
lines; other (bins, benches, bollards, hydrants, cabinets) -> static (void, ignored: Cityscapes
files such street furniture under static, and its 19 classes have none of them).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from lib.classes import STREETHAZARDS_CLASSES
from lib.synthetic.scene import Scene
from lib.synthetic.standin import StandIn, write_pair

#: Split -> its one city folder (the Cityscapes seed's subset).
CITIES: dict[str, str] = {"train": "hamburg", "val": "frankfurt"}
#: StreetHazards class name -> Cityscapes label name; "unlabeled" pixels that are sky get `SKY`.
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
    "anomaly": "unlabeled",  # never drawn: train and val scenes have no anomalies
}
SKY = "sky"


@functools.lru_cache(maxsize=1)
def _label_ids() -> tuple[np.ndarray, int]:
    """(StreetHazards train id -> Cityscapes labelId lookup table, labelId of sky)."""
    try:
        from cityscapesscripts.helpers.labels import name2label
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Cityscapes-format stand-in needs the official label table of the cityscapesscripts "
            "package: pip install cityscapesscripts"
        ) from err
    lut = np.array([name2label[CITYSCAPES_NAMES[name]].id for name in STREETHAZARDS_CLASSES], np.uint8)
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
    splits=("train", "val"),
    folders=tuple(
        f"{top}/{split}/{city}" for split, city in CITIES.items() for top in ("leftImg8bit", "gtFine")
    ),
    markers=("leftImg8bit", "gtFine"),
    write=_write,
)
