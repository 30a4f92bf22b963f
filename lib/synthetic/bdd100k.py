"""The generated scenes in the current BDD100K 10K semantic-segmentation layout. Read by
`lib.datasets.BDD100K`.

Layout written (root = the folder given, playing the ``bdd100k`` folder)::

    images/10k/train/00000000-00000000.jpg   labels/sem_seg/masks/train/00000000-00000000.png
    images/10k/val/00000000-10000000.jpg     labels/sem_seg/masks/val/00000000-10000000.png
    images/10k/test/00000000-20000000.jpg    labels/sem_seg/masks/test/00000000-20000000.png
    synthetic.json

Names are BDD-style hex ids: ``{seed:08x}-{split code:x}{index:07x}`` (unique across splits, like
the release's). Images are JPEGs (quality `lib.synthetic.writing.JPEG_QUALITY`, 4:4:4); labels are
single-channel PNGs holding the 19 train ids of `lib.classes.BDD100K_CLASSES` directly and 255 =
unknown. Unlike the release, which publishes no test labels (its val split then both chooses the
checkpoint and gives the numbers), the stand-in's test split is labelled.

The scenes are those of the Cityscapes stand-in (the Cityscapes vocabulary: all 19 classes appear).
Class mapping: the Cityscapes one of `lib.synthetic.cityscapes.CITYSCAPES_NAMES` (BDD100K uses the
same 19 class names), and every name outside those 19 is unknown (255): other (street furniture)
and the bare paved ground; so the unknown class, which the BDD seed trained as a 20th class, has
pixels. The sky is sky.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lib.classes import BDD100K_CLASSES, IGNORE_INDEX
from lib.synthetic.cityscapes import CITYSCAPES_NAMES, SKY
from lib.synthetic.scene import SCENE_CLASSES, SPLIT_CODES, Scene
from lib.synthetic.standin import StandIn, write_pair

#: BDD100K's label value for pixels of none of its 19 classes.
UNKNOWN = IGNORE_INDEX
#: Scene label id -> BDD100K train id (255 = unknown).
_TRAIN_IDS = np.array(
    [
        BDD100K_CLASSES.index(CITYSCAPES_NAMES[n]) if CITYSCAPES_NAMES[n] in BDD100K_CLASSES else UNKNOWN
        for n in SCENE_CLASSES
    ],
    np.uint8,
)


def bdd100k_train_ids(scene: Scene) -> np.ndarray:
    """The scene's label as BDD100K train ids (255 = unknown), (H, W) uint8."""
    ids = _TRAIN_IDS[scene.label]
    ids[scene.sky] = BDD100K_CLASSES.index(SKY)
    return ids


def _write(root: Path, split: str, index: int, seed: int, scene: Scene) -> list[str]:
    name = f"{seed:08x}-{SPLIT_CODES[split]:x}{index:07x}"
    image, label = f"images/10k/{split}/{name}.jpg", f"labels/sem_seg/masks/{split}/{name}.png"
    return write_pair(root, image, label, scene.image, bdd100k_train_ids(scene), jpeg=True)


STANDIN = StandIn(
    name="bdd100k",
    layout="BDD100K",
    splits=("train", "val", "test"),
    folders=tuple(
        f"{top}/{split}"
        for split in ("train", "val", "test")
        for top in ("images/10k", "labels/sem_seg/masks")
    ),
    markers=("images/10k", "labels/sem_seg", "seg"),
    write=_write,
)
