"""The synthetic StreetHazards generator: layout, labels, determinism, anomalies, skip/overwrite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import lib.synthetic as synthetic
from lib.classes import ANOMALY_ID, NUM_KNOWN_CLASSES, STREETHAZARDS_CLASSES, class_id
from lib.synthetic import dataset_is_complete, generate_streethazards, render_scene

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(n_train=6, n_val=3, n_test=8, height=64, width=128, seed=3)
EXPECTED_DIRS = {
    "train": ("train/images/training/t1-3", "train/annotations/training/t1-3", "train/training.odgt"),
    "val": ("train/images/validation/t4", "train/annotations/validation/t4", "train/validation.odgt"),
    "test": ("test/images/test/t5", "test/annotations/test/t5", "test/test.odgt"),
}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    summary = generate_streethazards(root, **SMALL, workers=1, progress=False)
    assert summary["generated"] is True
    assert summary["counts"] == {"train": 6, "val": 3, "test": 8}
    assert summary["size"] == [64, 128] and summary["seed"] == 3 and summary["seconds"] >= 0
    return root


def _read(path: Path) -> np.ndarray:
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert array is not None, f"cannot decode {path}"
    return array


# ----------------------------------------------------------------------------- layout


def test_layout_and_odgt_are_exactly_streethazards(small_dataset):
    root = small_dataset
    counts = {"train": SMALL["n_train"], "val": SMALL["n_val"], "test": SMALL["n_test"]}
    for split, (image_dir, annotation_dir, odgt) in EXPECTED_DIRS.items():
        text = (root / odgt).read_text()
        assert text.endswith("\n") and len(text.splitlines()) == 1, f"{odgt} must be one JSON line"
        records = json.loads(text)
        names = [f"{i:06d}.png" for i in range(counts[split])]
        assert records == [
            {
                "dbName": "StreetHazards",
                "width": 128,
                "height": 64,
                "fpath_img": f"{image_dir}/{name}",
                "fpath_segm": f"{annotation_dir}/{name}",
            }
            for name in names
        ]
        assert sorted(p.name for p in (root / image_dir).iterdir()) == names
        assert sorted(p.name for p in (root / annotation_dir).iterdir()) == names
        for name in names:
            image = _read(root / image_dir / name)
            raw = _read(root / annotation_dir / name)
            assert image.dtype == np.uint8 and image.shape == (64, 128, 3)
            assert raw.dtype == np.uint8 and raw.shape == (64, 128), "annotations are single-channel"
            assert raw.min() >= 1 and raw.max() <= 14, f"raw values must be 1..14, got {np.unique(raw)}"
            if split != "test":
                assert (raw != ANOMALY_ID + 1).all(), f"{split} must not contain anomalies"
    assert json.loads((root / "synthetic.json").read_text())["complete"] is True


def test_files_hold_render_scene_output_in_rgb_and_raw_values(small_dataset):
    image_dir, annotation_dir, _ = EXPECTED_DIRS["test"]
    for index in (0, 5):
        image, label = render_scene(seed=3, split="test", index=index, height=64, width=128)
        on_disk = _read(small_dataset / image_dir / f"{index:06d}.png")
        np.testing.assert_array_equal(on_disk[:, :, ::-1], image)  # cv2 reads BGR
        np.testing.assert_array_equal(_read(small_dataset / annotation_dir / f"{index:06d}.png"), label + 1)


def test_the_data_module_accepts_the_dataset(small_dataset):
    pytest.importorskip("torch")
    from lib.data import validate_split

    for split, n in (("train", 6), ("val", 3), ("test", 8)):
        assert validate_split(small_dataset, split) == n


# ----------------------------------------------------------------------------- determinism


def test_render_is_deterministic_per_seed_split_index():
    a_img, a_lab = render_scene(seed=7, split="train", index=4, height=64, width=128)
    b_img, b_lab = render_scene(seed=7, split="train", index=4, height=64, width=128)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert a_img.dtype == np.uint8 and a_img.shape == (64, 128, 3)
    assert a_lab.dtype == np.uint8 and a_lab.shape == (64, 128) and a_lab.max() < NUM_KNOWN_CLASSES
    for other in (
        dict(seed=7, split="train", index=5),
        dict(seed=8, split="train", index=4),
        dict(seed=7, split="val", index=4),
    ):
        img, _ = render_scene(**other, height=64, width=128)
        assert not np.array_equal(img, a_img), f"{other} gave the same image"


def test_worker_pool_writes_the_same_bytes(small_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic.writing, "_MIN_IMAGES_FOR_POOL", 1)  # use the pool even for a few images
    params = dict(SMALL, n_train=3, n_val=1, n_test=2)
    generate_streethazards(tmp_path, **params, workers=2, progress=False)
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for folder in EXPECTED_DIRS[split][:2]:
            for i in range(n):
                name = f"{folder}/{i:06d}.png"
                assert (tmp_path / name).read_bytes() == (small_dataset / name).read_bytes(), name


def test_render_workers_do_not_import_torch(tmp_path):
    """A spawned worker imports lib.synthetic and runs `_write_one`; neither may import lib.data
    for the layout (it imports torch: seconds and hundreds of MB per worker)."""
    images, annotations = tmp_path / "images", tmp_path / "annotations"
    images.mkdir()
    annotations.mkdir()
    code = (
        "import sys, lib.synthetic as s; "
        f"s._write_one(({str(images)!r}, {str(annotations)!r}, 'test', 0, 0, 32, 32)); "
        "loaded = [m for m in ('lib.data', 'torch') if m in sys.modules]; "
        "assert not loaded, f'the worker imported {loaded}'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in images.iterdir()] == [p.name for p in annotations.iterdir()] == ["000000.png"]


# ----------------------------------------------------------------------------- content


def test_only_test_scenes_contain_anomalies():
    with_anomaly = 0
    shares = []
    for index in range(12):
        _, label = render_scene(seed=0, split="test", index=index, height=64, width=128)
        share = float((label == ANOMALY_ID).mean())
        with_anomaly += share > 0
        shares.append(share)
        for split in ("train", "val"):
            _, known = render_scene(seed=0, split=split, index=index, height=64, width=128)
            assert (known != ANOMALY_ID).all(), f"{split} image {index} has anomaly pixels"
    assert with_anomaly >= 10, f"only {with_anomaly}/12 test scenes have anomaly pixels"
    assert 0.0005 < float(np.median(shares)) < 0.1, f"anomaly share per image: {np.round(shares, 4)}"


def test_every_known_class_appears_and_shares_are_sane():
    counts = np.zeros(ANOMALY_ID + 1, np.int64)
    present = np.zeros(ANOMALY_ID + 1, np.int64)
    for index in range(30):
        _, label = render_scene(seed=0, split="train", index=index, height=128, width=256)
        hist = np.bincount(label.ravel(), minlength=ANOMALY_ID + 1)
        counts += hist
        present += hist > 0
    share = counts / counts.sum()
    missing = [STREETHAZARDS_CLASSES[k] for k in range(NUM_KNOWN_CLASSES) if present[k] == 0]
    assert not missing, f"classes never drawn in 30 scenes: {missing}"
    assert counts[ANOMALY_ID] == 0
    assert share[class_id("road")] > 0.15, f"road share {share[class_id('road')]:.3f}"
    assert share[class_id("road")] == max(share[class_id(c)] for c in ("road", "pedestrian", "car", "pole"))
    assert share.max() < 0.5, "one class covers half of all pixels"
    for name in ("road", "sidewalk", "building", "unlabeled", "pole", "road line"):
        assert present[class_id(name)] >= 25, f"{name} is in only {present[class_id(name)]}/30 scenes"


def _colour_rule_precision(pixels: np.ndarray, labels: np.ndarray, recall: float = 0.5) -> float:
    """Best precision of any colour-only rule (RGB bins, 8 per channel) at a given anomaly recall.

    The rule flags the bins with the highest anomaly fraction first, measured on the same pixels
    (an optimistic, in-sample score: it is an upper bound for a per-pixel colour lookup).
    """
    q = pixels.astype(np.int64) // 32
    bins = q[:, 0] * 64 + q[:, 1] * 8 + q[:, 2]
    is_anomaly = labels == ANOMALY_ID
    total = np.bincount(bins, minlength=512).astype(np.float64)
    anomalous = np.bincount(bins, weights=is_anomaly, minlength=512)
    order = np.argsort(-(anomalous / np.maximum(total, 1)), kind="stable")
    hit, flagged = np.cumsum(anomalous[order]), np.cumsum(total[order])
    k = int(np.searchsorted(hit, recall * hit[-1]))
    return float(hit[k] / flagged[k])


def _nearest_mean_precision(pixels: np.ndarray, labels: np.ndarray) -> float:
    """Precision on 'anomaly' of a nearest-class-mean colour classifier (all 14 class means)."""
    x = pixels.astype(np.float32)
    means = np.stack([x[labels == k].mean(0) for k in np.unique(labels)])
    classes = np.unique(labels)
    pred = classes[((x[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)]
    flagged = pred == ANOMALY_ID
    return float((flagged & (labels == ANOMALY_ID)).sum() / max(flagged.sum(), 1))


def test_anomaly_colour_alone_does_not_separate_anomalies():
    images, labels = [], []
    for index in range(16):
        image, label = render_scene(seed=0, split="test", index=index, height=96, width=192)
        images.append(image.reshape(-1, 3))
        labels.append(label.ravel())
    pixels, labels = np.concatenate(images), np.concatenate(labels)
    base_rate = float((labels == ANOMALY_ID).mean())
    assert base_rate > 0.003
    # The checks can fail: anomalies painted in one colour of their own are found at once.
    tinted = pixels.copy()
    rng = np.random.default_rng(0)
    n = int((labels == ANOMALY_ID).sum())
    tinted[labels == ANOMALY_ID] = np.clip(rng.normal((20, 240, 235), 6, (n, 3)), 0, 255).astype(np.uint8)
    assert _colour_rule_precision(tinted, labels) > 0.9
    assert _nearest_mean_precision(tinted, labels) > 0.9
    # With the generator's colours, a colour lookup is wrong most of the time.
    precision = _colour_rule_precision(pixels, labels)
    assert precision < 0.25, (
        f"a colour-only rule reaches precision {precision:.2f} (base rate {base_rate:.3f})"
    )
    assert _nearest_mean_precision(pixels, labels) < 0.2


# ----------------------------------------------------------------------------- skip / overwrite / errors


def test_complete_dataset_is_skipped_and_other_parameters_are_refused(tmp_path):
    params = dict(n_train=2, n_val=1, n_test=1, height=32, width=64, seed=1)
    first = generate_streethazards(tmp_path, **params, progress=False)
    assert first["generated"] is True
    assert dataset_is_complete(tmp_path, n_train=2, n_val=1, n_test=1)
    assert dataset_is_complete(tmp_path, n_train=2, n_val=1, n_test=1, height=32, width=64, seed=1)
    assert not dataset_is_complete(tmp_path, n_train=3, n_val=1, n_test=1)
    assert not dataset_is_complete(tmp_path, n_train=2, n_val=1, n_test=1, seed=2)
    image = tmp_path / EXPECTED_DIRS["train"][0] / "000001.png"
    stamp = image.stat().st_mtime_ns
    again = generate_streethazards(tmp_path, **params, progress=False)
    assert again["generated"] is False and image.stat().st_mtime_ns == stamp

    with pytest.raises(ValueError, match=r"n_train=2 \(asked 3\).*overwrite=True"):
        generate_streethazards(tmp_path, **dict(params, n_train=3), progress=False)
    with pytest.raises(ValueError, match="seed=1 .*overwrite=True.*another root"):
        generate_streethazards(tmp_path, **dict(params, seed=5), progress=False)

    # overwrite=True regenerates with the new parameters; no stale file survives.
    redo = generate_streethazards(tmp_path, **dict(params, n_train=1, seed=5), overwrite=True, progress=False)
    assert redo["generated"] is True
    assert not image.exists()
    assert dataset_is_complete(tmp_path, n_train=1, n_val=1, n_test=1, seed=5)

    # A missing file makes the dataset incomplete, and the next call rebuilds it.
    image = tmp_path / EXPECTED_DIRS["test"][1] / "000000.png"
    image.unlink()
    assert not dataset_is_complete(tmp_path, n_train=1, n_val=1, n_test=1)
    assert generate_streethazards(tmp_path, **dict(params, n_train=1, seed=5), progress=False)["generated"]
    assert image.exists()


def test_foreign_dataset_is_not_overwritten_silently(tmp_path):
    (tmp_path / EXPECTED_DIRS["train"][0]).mkdir(parents=True)
    with pytest.raises(ValueError, match="did not write.*overwrite=True"):
        generate_streethazards(tmp_path, n_train=1, n_val=0, n_test=0, height=32, width=32, progress=False)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(n_train=0), "n_train must be an integer >= 1"),
        (dict(n_val=-1), "n_val must be an integer >= 0"),
        (dict(n_test=2.5), "n_test must be an integer >= 0"),
        (dict(height=16), "height must be an integer >= 32"),
        (dict(width=31), "width must be an integer >= 32"),
        (dict(seed=-1), "seed must be an integer >= 0"),
        (dict(workers=0), "workers must be an integer >= 1"),
    ],
)
def test_invalid_arguments_are_refused_up_front(tmp_path, changes, message):
    args = dict(n_train=1, n_val=0, n_test=0, height=32, width=32, progress=False) | changes
    with pytest.raises(ValueError, match=message):
        generate_streethazards(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_render_scene_refuses_bad_split_and_size():
    with pytest.raises(ValueError, match="unknown split 'training'"):
        render_scene(seed=0, split="training", index=0)
    with pytest.raises(ValueError, match="height must be"):
        render_scene(seed=0, split="train", index=0, height=8, width=64)
    with pytest.raises(ValueError, match="index must be an integer >= 0"):
        render_scene(seed=0, split="train", index=-1)


# ----------------------------------------------------------------------------- command line


def test_cli_help_and_run(tmp_path):
    script = [sys.executable, "scripts/make_synthetic.py"]
    help_text = subprocess.run(
        script + ["--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for flag in (
        "--root",
        "--n-train",
        "--n-val",
        "--n-test",
        "--height",
        "--width",
        "--seed",
        "--workers",
        "--overwrite",
    ):
        assert flag in help_text
    args = ["--root", str(tmp_path / "syn"), "--n-train", "2", "--n-val", "1", "--n-test", "1"]
    args += ["--height", "32", "--width", "64", "--quiet"]
    done = subprocess.run(script + args, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert summary["counts"] == {"train": 2, "val": 1, "test": 1} and summary["generated"] is True
    refused = subprocess.run(script + args + ["--seed", "9"], cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
