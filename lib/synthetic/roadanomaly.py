"""The generated test scenes in the processed RoadAnomaly layout (SegmentMeIfYouCan style), an
anomaly-only evaluation set. Read by `lib.datasets.RoadAnomaly`.

Layout written (root = the folder given; one flat folder of images, one of masks)::

    images/synthetic_street_000000.jpg   labels_masks/synthetic_street_000000_labels_semantic.png
    images/synthetic_street_000001.jpg   labels_masks/synthetic_street_000001_labels_semantic.png
    synthetic.json

The number is the index of the test scene on its own stream (stream 2, `lib.synthetic.standin`); scenes without an
anomaly pixel are skipped, so every mask holds a 1 - which the loader's ``label_values="auto"``
relies on to tell this encoding from the binary 0/255 one. ``n_test`` images are written.

Images are JPEGs (quality `lib.synthetic.writing.JPEG_QUALITY`, 4:4:4; the release ships JPEGs);
masks are single-channel PNGs in the 0/1/255 encoding: 0 in-distribution (every known class,
sky and unlabeled ground included), 1 anomaly. The void value 255 is used nowhere: every pixel
of a generated scene has a known class or is an anomaly, with no ambiguous region to leave out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lib.classes import ANOMALY_ID, EVAL_ANOMALY_ID, EVAL_INLIER_ID
from lib.synthetic.scene import Scene
from lib.synthetic.standin import StandIn, write_pair


def road_anomaly_mask(scene: Scene) -> np.ndarray:
    """The scene's label as a RoadAnomaly mask: 0 in-distribution, 1 anomaly, (H, W) uint8."""
    return np.where(scene.label == ANOMALY_ID, EVAL_ANOMALY_ID, EVAL_INLIER_ID).astype(np.uint8)


def _write(root: Path, split: str, index: int, seed: int, scene: Scene) -> list[str]:
    name = f"synthetic_street_{index:06d}"
    image, label = f"images/{name}.jpg", f"labels_masks/{name}_labels_semantic.png"
    return write_pair(root, image, label, scene.image, road_anomaly_mask(scene), jpeg=True)


STANDIN = StandIn(
    name="roadanomaly",
    layout="RoadAnomaly",
    splits=("test",),
    folders=("images", "labels_masks"),
    markers=("images", "labels_masks", "original", "labels"),
    write=_write,
    stream=2,
)
