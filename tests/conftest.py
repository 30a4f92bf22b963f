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

from lib.layout import STREETHAZARDS_SPLITS  # noqa: E402 - needs ROOT on the path


def write_split(
    root: Path, split: str, n: int, *, size=(16, 24), seed=0, odgt=True
) -> list[tuple[Path, Path]]:
    """Write n image/annotation pairs in the real layout (`lib.layout.STREETHAZARDS_SPLITS`, each
    split's town folder); annotation raw values 1..13 (14 in test)."""

    rng = np.random.default_rng(seed)
    layout = STREETHAZARDS_SPLITS[split]
    image_dir, annotation_dir, odgt_name = layout.town_image_dir, layout.town_annotation_dir, layout.odgt
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


# ----------------------------------------------------------------------------- other datasets
# Each writer produces a few files in the dataset's real folder layout, file-name pattern and
# label encoding, plus the sibling files of the real releases that a loader must NOT pick up.


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))


def _write_gray(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), values)


def write_cityscapes(
    root: Path,
    split: str,
    city: str,
    n: int,
    *,
    size=(16, 24),
    seed=0,
    label_folder: str = "gtFine",
    max_id: int = 33,
) -> list[tuple[Path, Path]]:
    """Cityscapes-style pairs: leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png and
    {label_folder}/{split}/{city}/..._{label_folder}_labelIds.png with raw ids 0..max_id; also the
    colour, instance and polygon files that sit beside the real labelIds."""
    rng = np.random.default_rng(seed)
    h, w = size
    pairs = []
    for i in range(n):
        stem = f"{city}_{i:06d}_{19 + i:06d}"
        image = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
        label = root / label_folder / split / city / f"{stem}_{label_folder}_labelIds.png"
        _write_rgb(image, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        _write_gray(label, rng.integers(0, max_id + 1, (h, w), dtype=np.uint8))
        _write_rgb(
            label.with_name(f"{stem}_{label_folder}_color.png"),
            rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        )
        _write_gray(label.with_name(f"{stem}_{label_folder}_instanceIds.png"), np.zeros((h, w), np.uint16))
        label.with_name(f"{stem}_{label_folder}_polygons.json").write_text("{}")
        pairs.append((image, label))
    return pairs


def write_bdd100k(
    root: Path, split: str, n: int, *, layout: str = "10k", size=(16, 24), seed=0
) -> list[tuple[Path, Path]]:
    """BDD100K 10K pairs: JPEG images and train-id PNGs (0..18, 255 unknown), current or older layout."""
    rng = np.random.default_rng(seed)
    h, w = size
    if layout == "10k":
        image_dir, label_dir, suffix = root / "images/10k" / split, root / "labels/sem_seg/masks" / split, ""
        color_dir = root / "labels/sem_seg/colormaps" / split
    else:
        image_dir, label_dir, suffix = root / "seg/images" / split, root / "seg/labels" / split, "_train_id"
        color_dir = root / "seg/color_labels" / split
    pairs = []
    for i in range(n):
        stem = f"{7 * i + 1:08x}-{i:08x}"
        image, label = image_dir / f"{stem}.jpg", label_dir / f"{stem}{suffix}.png"
        _write_rgb(image, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        values = rng.integers(0, 19, (h, w), dtype=np.uint8)
        values[0, :3] = 255  # unknown
        _write_gray(label, values)
        _write_rgb(color_dir / f"{stem}{suffix.replace('id', 'color')}.png", np.zeros((h, w, 3), np.uint8))
        pairs.append((image, label))
    return pairs


def write_road_anomaly(
    root: Path, n: int, *, layout: str = "images", values: str = "0/1/255", size=(16, 24), seed=0
) -> list[tuple[Path, Path]]:
    """RoadAnomaly: images/{name}.jpg + labels_masks/{name}_labels_semantic.png (SegmentMeIfYouCan,
    with *_color.png beside), original/{name}.jpg + labels/{name}.png (processed copy), or the original
    release (layout="release"): frame_list.json, frames/{name}.jpg and the LabelGrab folder
    frames/{name}.labels/ with labels_semantic.png (0 background, 1 road, 2 anomaly) and the colour and
    instance PNGs beside it."""
    rng = np.random.default_rng(seed)
    h, w = size
    pairs = []
    if layout == "release":
        root.mkdir(parents=True, exist_ok=True)
        names = [f"animals{i:02d}_road.jpg" for i in range(n)]
        (root / "frame_list.json").write_text(json.dumps(names))
        for name in names:
            image = root / "frames" / name
            label = root / "frames" / name.replace(".jpg", ".labels") / "labels_semantic.png"
            _write_rgb(image, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            mask = np.zeros((h, w), np.uint8)
            mask[h // 2 :, :] = 1  # the road
            mask[4:10, 5:12] = 2  # the anomaly, partly on the road
            _write_gray(label, mask)
            _write_rgb(label.with_name("labels_semantic_color.png"), np.zeros((h, w, 3), np.uint8))
            _write_gray(label.with_name("labels_instance.png"), (mask == 2).astype(np.uint8))
            pairs.append((image, label))
        return pairs
    for i in range(n):
        name = f"animals{i:02d}_road"
        if layout == "images":
            image, label = (
                root / "images" / f"{name}.jpg",
                root / "labels_masks" / f"{name}_labels_semantic.png",
            )
        else:
            image, label = root / "original" / f"{name}.jpg", root / "labels" / f"{name}.png"
        _write_rgb(image, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        mask = np.zeros((h, w), np.uint8)
        mask[4:10, 5:12] = 1 if values == "0/1/255" else 255  # the anomaly
        if values == "0/1/255":
            mask[-2:, :] = 255  # void
        _write_gray(label, mask)
        if layout == "images":
            _write_rgb(label.with_name(f"{name}_labels_semantic_color.png"), np.zeros((h, w, 3), np.uint8))
        pairs.append((image, label))
    return pairs
