"""Shared fixtures: tiny StreetHazards-format folders written with OpenCV."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SPLIT_DIRS = {
    "train": ("train/images/training/t1-3", "train/annotations/training/t1-3", "train/training.odgt"),
    "val": ("train/images/validation/t4", "train/annotations/validation/t4", "train/validation.odgt"),
    "test": ("test/images/test/t5", "test/annotations/test/t5", "test/test.odgt"),
}


def write_split(
    root: Path, split: str, n: int, *, size=(16, 24), seed=0, odgt=True
) -> list[tuple[Path, Path]]:
    """Write n image/annotation pairs in the real layout; annotation raw values 1..13 (14 in test)."""
    rng = np.random.default_rng(seed)
    image_dir, annotation_dir, odgt_name = SPLIT_DIRS[split]
    (root / image_dir).mkdir(parents=True, exist_ok=True)
    (root / annotation_dir).mkdir(parents=True, exist_ok=True)
    h, w = size
    pairs, records = [], []
    for i in range(n):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        raw = rng.integers(1, 15 if split == "test" else 14, (h, w), dtype=np.uint8)
        image_path = root / image_dir / f"{i}.png"
        annotation_path = root / annotation_dir / f"{i}.png"
        cv2.imwrite(str(image_path), image[:, :, ::-1])
        cv2.imwrite(str(annotation_path), raw)
        pairs.append((image_path, annotation_path))
        records.append(
            {
                "dbName": "StreetHazards",
                "width": w,
                "height": h,
                "fpath_img": f"{image_dir}/{i}.png",
                "fpath_segm": f"{annotation_dir}/{i}.png",
            }
        )
    if odgt:
        (root / odgt_name).write_text(json.dumps(records) + "\n")
    return pairs


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A 3-split StreetHazards-format folder of random 16x24 images."""
    for k, split in enumerate(("train", "val", "test")):
        write_split(tmp_path, split, 3, seed=k)
    return tmp_path
