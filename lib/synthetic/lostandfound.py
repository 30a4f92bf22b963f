"""The generated test scenes in the LostAndFound layout, an anomaly-only evaluation set. Read by
`lib.datasets.LostAndFound`.

Layout written (root = the folder given; ten images per scene folder, named in the LAF style; the
frame number is ten times the image's place in its scene, as LAF annotates about every tenth
frame)::

    leftImg8bit/test/01_Synthetic_Street_1/01_Synthetic_Street_1_000000_000000_leftImg8bit.png
    gtCoarse/test/01_Synthetic_Street_1/01_Synthetic_Street_1_000000_000000_gtCoarse_labelIds.png
    ...
    leftImg8bit/test/02_Synthetic_Street_2/02_Synthetic_Street_2_000000_000000_leftImg8bit.png
    synthetic.json

Scene k of its own test stream (stream 1, `lib.synthetic.standin`) is image k % 10 of folder k // 10; test
scenes without an anomaly pixel are skipped, so every image holds an obstacle. Only the test split
is written (``n_test`` images).

Images are 8-bit RGB PNGs; labels single-channel PNGs of LAF gtCoarse labelIds
(`lib.classes`): 0 unlabeled everywhere off the drivable road, 1 free space on road and road
markings, and `OBSTACLE_ID` on anomaly pixels. The painter does not say which anomaly kind a
pixel belongs to, so all obstacles share one id: 2, the first obstacle id of the LAF table and
not one of its "random non-hazards" (`lib.classes.LAF_NON_HAZARD_IDS`), so that
``ignore_non_hazards=True`` keeps them. Cars, pedestrians and anything else on the road are 0, as
in LAF.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lib.classes import ANOMALY_ID, LAF_FREE_SPACE_ID, LAF_UNLABELED_ID, class_id
from lib.synthetic.scene import Scene
from lib.synthetic.standin import StandIn, write_pair

#: LAF labelId written on every anomaly pixel.
OBSTACLE_ID = LAF_FREE_SPACE_ID + 1
#: Images per scene folder.
SCENE_LENGTH = 10
_FREE_SPACE = (class_id("road"), class_id("road line"))


def laf_label_ids(scene: Scene) -> np.ndarray:
    """The scene's label as LostAndFound gtCoarse labelIds, (H, W) uint8."""
    ids = np.full(scene.label.shape, LAF_UNLABELED_ID, np.uint8)
    ids[np.isin(scene.label, _FREE_SPACE)] = LAF_FREE_SPACE_ID
    ids[scene.label == ANOMALY_ID] = OBSTACLE_ID
    return ids


def _write(root: Path, split: str, index: int, seed: int, scene: Scene) -> list[str]:
    number = index // SCENE_LENGTH + 1
    folder = f"{number:02d}_Synthetic_Street_{number}"
    stem = f"{folder}_000000_{index % SCENE_LENGTH * 10:06d}"
    image = f"leftImg8bit/{split}/{folder}/{stem}_leftImg8bit.png"
    label = f"gtCoarse/{split}/{folder}/{stem}_gtCoarse_labelIds.png"
    return write_pair(root, image, label, scene.image, laf_label_ids(scene))


STANDIN = StandIn(
    name="lostandfound",
    layout="LostAndFound",
    splits=("test",),
    folders=("leftImg8bit/test", "gtCoarse/test"),
    markers=("leftImg8bit", "gtCoarse"),
    write=_write,
    stream=1,
)
