"""The generated scenes written in the exact StreetHazards layout and label encoding.

Layout written by :func:`generate_streethazards` (root = the folder given)::

    train/images/training/t1-3/000000.png   train/annotations/training/t1-3/000000.png
    train/images/validation/t4/000000.png   train/annotations/validation/t4/000000.png
    test/images/test/t5/000000.png          test/annotations/test/t5/000000.png
    train/training.odgt  train/validation.odgt  test/test.odgt  synthetic.json

The folders and index files are those of `lib.layout.STREETHAZARDS_SPLITS` (each split's town
folder); this module does not import torch.

Images are 8-bit RGB PNGs; annotations are single-channel PNGs with raw values 1..14
(raw = train id + 1, sky/background = 1 "unlabeled", anomaly = 14). Only the test split holds
anomalies.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from lib.layout import STREETHAZARDS_SPLITS
from lib.synthetic.scene import GENERATOR_VERSION, _check_size, render_scene
from lib.synthetic.writing import (
    _Progress,
    check_count,
    check_root,
    read_marker,
    reset_folders,
    resolve_workers,
    run_tasks,
    summary,
    write_marker,
    write_png,
    write_text_atomic,
)


def _validate_counts(n_train: int, n_val: int, n_test: int, seed: int) -> None:
    for name, value, low in (("n_train", n_train, 1), ("n_val", n_val, 0), ("n_test", n_test, 0)):
        check_count(name, value, low)
    check_count("seed", seed, 0)


def _params(n_train: int, n_val: int, n_test: int, height: int, width: int, seed: int) -> dict:
    return {
        "generator": "lib.synthetic",
        "version": GENERATOR_VERSION,
        "n_train": int(n_train),
        "n_val": int(n_val),
        "n_test": int(n_test),
        "height": int(height),
        "width": int(width),
        "seed": int(seed),
    }


def _records(split: str, n: int, height: int, width: int) -> list[dict]:
    where = STREETHAZARDS_SPLITS[split]
    image_dir, annotation_dir = where.town_image_dir, where.town_annotation_dir
    return [
        {
            "dbName": "StreetHazards",
            "width": int(width),
            "height": int(height),
            "fpath_img": f"{image_dir}/{i:06d}.png",
            "fpath_segm": f"{annotation_dir}/{i:06d}.png",
        }
        for i in range(n)
    ]


def dataset_is_complete(
    root: str | Path,
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    height: int | None = None,
    width: int | None = None,
    seed: int | None = None,
) -> bool:
    """Whether ``root`` holds a finished synthetic dataset with these parameters.

    Args:
        root: dataset folder.
        n_train: expected number of training images.
        n_val: expected number of validation images.
        n_test: expected number of test images.
        height: expected image height, or None to accept any.
        width: expected image width, or None to accept any.
        seed: expected generator seed, or None to accept any.

    Returns:
        True when ``synthetic.json`` records a finished run of this generator version with these
        parameters and every index file and PNG it lists exists.
    """
    root = Path(root)
    marker = read_marker(root)
    if not marker or not marker.get("complete"):
        return False
    params = marker.get("params", {})
    expected = {
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "height": height,
        "width": width,
        "seed": seed,
    }
    if params.get("version") != GENERATOR_VERSION or "format" in params:
        return False
    if any(value is not None and params.get(key) != value for key, value in expected.items()):
        return False
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        try:
            records = json.loads((root / STREETHAZARDS_SPLITS[split].odgt).read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(records, list) or len(records) != n:
            return False
        for r in records:
            if not (root / r["fpath_img"]).is_file() or not (root / r["fpath_segm"]).is_file():
                return False
    return True


def _write_one(task: tuple[str, str, str, int, int, int, int]) -> str:
    """Render one scene and write its image and annotation PNGs (worker entry point).

    ``task`` is (image folder, annotation folder, split, index, seed, height, width): the parent
    resolves the folders.
    """
    image_dir, annotation_dir, split, index, seed, height, width = task
    image, label = render_scene(seed=seed, split=split, index=index, height=height, width=width)
    name = f"{index:06d}.png"
    write_png(Path(image_dir) / name, image)
    write_png(Path(annotation_dir) / name, label + np.uint8(1))
    return split


def generate_streethazards(
    root: str | Path,
    *,
    n_train: int = 200,
    n_val: int = 40,
    n_test: int = 60,
    height: int = 256,
    width: int = 512,
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    regenerate: bool = False,
    progress: bool = True,
) -> dict:
    """Write a synthetic dataset in the StreetHazards layout (skipped when already complete).

    Args:
        root: output folder (created if needed).
        n_train: training images (>= 1), written to ``train/images/training/t1-3``.
        n_val: validation images (>= 0), written to ``train/images/validation/t4``.
        n_test: test images with anomalies (>= 0), written to ``test/images/test/t5``.
        height: image height in pixels (>= 32).
        width: image width in pixels (>= 32).
        seed: generator seed; image i of a split depends only on (seed, split, i).
        workers: processes used to render; None = min(2, CPU count). Small datasets are
            rendered in this process.
        overwrite: regenerate even if ``root`` already holds a dataset (replaces its split
            folders and index files).
        regenerate: regenerate a dataset this generator wrote at ``root`` with other parameters
            (never one it did not write, nor one in another format).
        progress: show a progress bar (tqdm when installed) on stderr.

    Returns:
        Summary dict: ``root``, ``counts`` (images per split), ``size`` ([height, width]),
        ``seed``, ``seconds`` and ``generated`` (False when an existing dataset was kept).

    Raises:
        ValueError: invalid arguments, or ``root`` holds a dataset made with other parameters
            (or not made by this generator) and ``overwrite`` is False.
    """
    _validate_counts(n_train, n_val, n_test, seed)
    _check_size(height, width)
    workers = resolve_workers(workers)
    root = Path(root)
    start = time.perf_counter()
    params = _params(n_train, n_val, n_test, height, width, seed)
    counts = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}

    splits = STREETHAZARDS_SPLITS
    folders = [d for s in splits.values() for d in (s.town_image_dir, s.town_annotation_dir)]
    odgts = [s.odgt for s in splits.values()]
    marker = check_root(
        root,
        params,
        owned=folders + odgts,
        layout="StreetHazards",
        overwrite=overwrite,
        regenerate=regenerate,
    )
    if (
        marker is not None
        and not overwrite
        and dataset_is_complete(
            root, n_train=n_train, n_val=n_val, n_test=n_test, height=height, width=width, seed=seed
        )
    ):
        return summary(root, counts, params, start, False)

    reset_folders(root, folders, odgts)
    write_marker(root, params, complete=False)
    tasks = [
        (
            str(root / splits[split].town_image_dir),
            str(root / splits[split].town_annotation_dir),
            split,
            i,
            int(seed),
            int(height),
            int(width),
        )
        for split, n in counts.items()
        for i in range(n)
    ]
    bar = _Progress(len(tasks), progress)
    try:
        run_tasks(_write_one, tasks, workers=workers, bar=bar)
    finally:
        bar.close()

    for split, n in counts.items():
        odgt = root / splits[split].odgt
        write_text_atomic(odgt, json.dumps(_records(split, n, height, width)) + "\n")
    write_marker(root, params, complete=True)
    return summary(root, counts, params, start, True)
