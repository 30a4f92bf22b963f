"""The offline stand-ins: generated scenes in the Cityscapes, BDD100K, LostAndFound and RoadAnomaly
layouts, read by the loaders of `lib.datasets` with exactly the expected labels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import lib.synthetic as synthetic
from lib.classes import ANOMALY_ID, BDD100K_CLASSES, LAF_NON_HAZARD_IDS, STREETHAZARDS_CLASSES
from lib.synthetic import FORMATS, generate, generate_streethazards, render_layers, render_scene
from lib.synthetic.canvas import EXTRA_CLASSES
from lib.synthetic.scene import SCENE_CLASSES

pytest.importorskip("torch")  # the loaders read through torch
from lib.datasets import BDD100K, Cityscapes, LostAndFound, RoadAnomaly  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZE = dict(height=64, width=128, seed=3)
COUNTS = dict(n_train=3, n_val=2, n_test=3)

#: What each scene class must read as: its Cityscapes / BDD100K class name, or None for ignore
#: (Cityscapes void) / unknown (BDD100K 255). "sky" is the sky part of "unlabeled"; the rest of
#: "unlabeled" is bare paved ground beyond the property lines.
SAME_NAME = ("building", "fence", "pole", "road", "sidewalk", "vegetation", "car", "wall", "traffic sign",
             *EXTRA_CLASSES)  # fmt: skip
EXPECTED_NAMES = {n: n for n in SAME_NAME} | {
    "road line": "road",
    "pedestrian": "person",
    "sky": "sky",
    "unlabeled": None,
    "other": None,
}


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("standins")
    out = {}
    for name in FORMATS[1:]:
        summary = generate(name, base / name, **COUNTS, **SIZE, workers=1, progress=False)
        assert summary["generated"] is True and summary["format"] == name
        out[name] = base / name
    return out


def _read(path: Path) -> np.ndarray:
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert array is not None, f"cannot decode {path}"
    return array


def _expected_ids(scene, train_id_of: dict[str | None, int]) -> np.ndarray:
    """Hand-built expectation: every pixel's class name through `EXPECTED_NAMES` to an id."""
    out = np.full(scene.label.shape, -1, np.int64)
    for k, name in enumerate(SCENE_CLASSES):
        if name != "anomaly":
            out[scene.label == k] = train_id_of[EXPECTED_NAMES[name]]
    out[scene.sky] = train_id_of["sky"]
    return out


def _standin_scene(split: str, index: int, *, stream: int = 0):
    """The scene a stand-in of `roots` holds: the Cityscapes vocabulary, anomalies only in the
    anomaly-only formats (streams 1 and 2)."""
    return render_layers(
        seed=3, split=split, index=index, height=64, width=128, classes="cityscapes", stream=stream,
        anomalies=stream > 0,
    )  # fmt: skip


def _check_image(path: Path, expected: np.ndarray, *, exact: bool) -> None:
    image = _read(path)[:, :, ::-1].astype(np.int16)
    assert image.shape == expected.shape
    if exact:
        np.testing.assert_array_equal(image, expected)
    else:
        # JPEG at quality 95 of a small noisy picture: a few levels off on average
        assert float(np.abs(image - expected).mean()) < 4, f"{path} is far from the rendered image"


# ----------------------------------------------------------------------------- each format


def test_sky_is_told_apart_from_unlabeled_ground():
    """Scene 10 of seed 0 shows bare paved ground ("unlabeled" too) beyond the property lines."""
    from cityscapesscripts.helpers.labels import name2label

    from lib.synthetic.cityscapes import cityscapes_label_ids

    scene = render_layers(seed=0, split="train", index=10, height=64, width=128)
    image, label = render_scene(seed=0, split="train", index=10, height=64, width=128)
    assert np.array_equal(scene.image, image) and np.array_equal(scene.label, label)
    ground = (scene.label == STREETHAZARDS_CLASSES.index("unlabeled")) & ~scene.sky
    assert scene.sky.any() and ground.any()
    assert np.nonzero(scene.sky)[0].max() < np.nonzero(ground)[0].min()  # the sky is above the ground
    ids = cityscapes_label_ids(scene)
    assert (ids[scene.sky] == name2label["sky"].id).all() and (ids[ground] == name2label["ground"].id).all()


def test_cityscapes_stand_in_reads_as_the_official_train_ids(roots):
    from cityscapesscripts.helpers.labels import name2label

    train_id_of = {n: name2label[n].trainId for n in EXPECTED_NAMES.values() if n} | {None: 255}
    root = roots["cityscapes"]
    assert sorted(p.name for p in (root / "leftImg8bit").iterdir()) == ["test", "train", "val"]
    for split, city, n in (("train", "hamburg", 3), ("val", "frankfurt", 2), ("test", "berlin", 3)):
        ds = Cityscapes(root, split, cities=[city])
        assert len(ds) == n and ds.validate() == n
        for index, sample in enumerate(ds.samples):
            assert sample.image.name == f"{city}_{index:06d}_000019_leftImg8bit.png"
            scene = _standin_scene(split, index)
            _, mask = ds[index]
            np.testing.assert_array_equal(mask.numpy(), _expected_ids(scene, train_id_of))
            _check_image(sample.image, scene.image, exact=True)
        road = scene.label == STREETHAZARDS_CLASSES.index("road")
        raw = _read(ds.samples[-1].annotation)
        assert raw.ndim == 2 and (raw[road] == name2label["road"].id).all()  # raw labelIds, not train ids
    assert len(Cityscapes(root, "train")) == 3


def test_bdd100k_stand_in_holds_train_ids_and_unknown(roots):
    train_id_of = {n: BDD100K_CLASSES.index(n) for n in EXPECTED_NAMES.values() if n} | {None: 255}
    root = roots["bdd100k"]
    for split, n in (("train", 3), ("val", 2), ("test", 3)):
        ds = BDD100K(root, split)
        assert ds.layout == "10k" and len(ds) == n and ds.validate() == n
        for index, sample in enumerate(ds.samples):
            assert sample.image.suffix == ".jpg"
            scene = _standin_scene(split, index)
            expected = _expected_ids(scene, train_id_of)
            np.testing.assert_array_equal(_read(sample.annotation), expected)
            np.testing.assert_array_equal(ds[index][1].numpy(), expected)
            _check_image(sample.image, scene.image, exact=False)
    as_class = BDD100K(root, "train", unknown_as_class=True)
    masks = [as_class[i][1].numpy() for i in range(len(as_class))]
    assert any((m == len(BDD100K_CLASSES)).any() for m in masks), "the unknown class has no pixels"
    assert all(m.max() <= len(BDD100K_CLASSES) for m in masks)


def test_lostandfound_stand_in_marks_road_and_obstacles(roots):
    root = roots["lostandfound"]
    ds = LostAndFound(root, "test")
    assert len(ds) == 3 and ds.validate() == 3
    for index, sample in enumerate(ds.samples):
        scene = _standin_scene("test", index, stream=1)
        anomaly = scene.label == ANOMALY_ID
        road = np.isin(scene.label, [STREETHAZARDS_CLASSES.index(c) for c in ("road", "road line")])
        raw = _read(sample.annotation)
        assert anomaly.any() and set(np.unique(raw)) == {0, 1, 2}
        assert (raw[anomaly] == 2).all() and (raw[road] == 1).all() and (raw[~anomaly & ~road] == 0).all()
        mask = ds[index][1].numpy()
        assert (
            (mask[anomaly] == 1).all() and (mask[road] == 0).all() and (mask[~anomaly & ~road] == 255).all()
        )
        _check_image(sample.image, scene.image, exact=True)
    assert 2 not in LAF_NON_HAZARD_IDS  # so the obstacles stay anomalies with ignore_non_hazards
    kept = LostAndFound(root, "test", ignore_non_hazards=True, cities=["01_Synthetic_Street_1"])
    assert len(kept) == 3 and np.array_equal(kept[0][1].numpy(), ds[0][1].numpy())


def test_roadanomaly_stand_in_is_read_as_zero_one_masks(roots):
    root = roots["roadanomaly"]
    ds = RoadAnomaly(root)
    assert len(ds) == 3 and ds.validate() == 3
    for index, sample in enumerate(ds.samples):
        assert sample.annotation.name == f"synthetic_street_{index:06d}_labels_semantic.png"
        scene = _standin_scene("test", index, stream=2)
        anomaly = scene.label == ANOMALY_ID
        assert anomaly.any()
        np.testing.assert_array_equal(_read(sample.annotation), anomaly.astype(np.uint8))  # no void
        np.testing.assert_array_equal(ds[index][1].numpy(), anomaly.astype(np.int64))
        _check_image(sample.image, scene.image, exact=False)
    assert len(RoadAnomaly(root, label_values="0/1/255")) == 3


def test_every_cityscapes_class_is_in_a_good_share_of_the_stand_in_images():
    """All 19 train ids (BDD100K's too) appear, each in at least 5 % of 60 scenes of any split."""
    from lib.datasets import cityscapes_label_table
    from lib.synthetic.cityscapes import cityscapes_label_ids

    encoding, names, _ = cityscapes_label_table()
    assert names == BDD100K_CLASSES
    for split in ("train", "val", "test"):
        seen = np.zeros(len(names), int)
        for index in range(60):
            scene = render_layers(seed=0, split=split, index=index, height=64, width=128, classes="cityscapes",
                                  anomalies=False)  # fmt: skip
            train_ids = np.unique(
                encoding.encode(cityscapes_label_ids(scene), path=Path("scene"), dataset="x")
            )
            seen[train_ids[train_ids < len(names)]] += 1
        share = dict(zip(names, seen / 60, strict=True))
        assert min(share.values()) >= 0.05, (split, share)


def test_anomaly_only_stand_ins_draw_scenes_of_their_own():
    """LostAndFound and RoadAnomaly stand-ins are not pictures of the synthetic test split (nor of
    each other): the scene streams differ, and so do the images."""
    test = render_layers(seed=0, split="test", index=0, height=64, width=128)
    laf, ra = (
        render_layers(seed=0, split="test", index=0, height=64, width=128, classes="cityscapes", stream=s)
        for s in (1, 2)
    )
    for a, b in ((test, laf), (test, ra), (laf, ra)):
        assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() > 20
    # the default stream and vocabulary are the StreetHazards scenes, unchanged
    image, label = render_scene(seed=0, split="test", index=0, height=64, width=128)
    assert np.array_equal(test.image, image) and np.array_equal(test.label, label)
    assert label.max() <= ANOMALY_ID


def test_anomaly_only_sets_skip_scenes_without_anomalies(tmp_path, monkeypatch):
    """Test scene 1 is made anomaly-free: the set holds scenes 0, 2, 3 (the next index fills in)."""
    from lib.synthetic import standin

    def without_anomaly_in_scene_1(**kwargs):
        scene = render_layers(**kwargs)
        if kwargs["index"] == 1:
            scene.label[scene.label == ANOMALY_ID] = STREETHAZARDS_CLASSES.index("road")
        return scene

    monkeypatch.setattr(standin, "render_layers", without_anomaly_in_scene_1)
    generate("roadanomaly", tmp_path, n_test=3, height=32, width=64, seed=3, workers=1, progress=False)
    names = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert names == [f"synthetic_street_{i:06d}.jpg" for i in (0, 2, 3)]
    assert all(_read(p).max() == 1 for p in (tmp_path / "labels_masks").iterdir())


# ----------------------------------------------------------------------------- determinism, pool, marker


def test_same_parameters_give_the_same_png_bytes_with_or_without_the_pool(roots, tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic.writing, "_MIN_IMAGES_FOR_POOL", 1)
    for name, workers in (("cityscapes", 1), ("lostandfound", 2)):
        generate(name, tmp_path / name, **COUNTS, **SIZE, workers=workers, progress=False)
        pngs = sorted(p.relative_to(roots[name]) for p in roots[name].rglob("*.png"))
        assert len(pngs) == (16 if name == "cityscapes" else 6)
        for rel in pngs:
            assert (tmp_path / name / rel).read_bytes() == (roots[name] / rel).read_bytes(), rel
        marker = json.loads((tmp_path / name / "synthetic.json").read_text())
        assert marker["complete"] is True and marker["files"] == sorted(map(str, pngs))
        assert (
            marker["params"]["format"] == name
            and marker["params"]["version"] == synthetic.standin.STANDIN_VERSION
        )


def test_streethazards_format_is_generate_streethazards(tmp_path):
    params = dict(n_train=1, n_val=0, n_test=1, height=32, width=64, seed=2, progress=False)
    assert generate("streethazards", tmp_path / "a", **params)["counts"] == {"train": 1, "val": 0, "test": 1}
    generate_streethazards(tmp_path / "b", **params)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 8
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_complete_stand_in_is_kept_and_other_data_is_refused(tmp_path):
    root = tmp_path / "cs"
    params = dict(n_train=2, n_val=1, n_test=7, height=32, width=64, seed=1, progress=False)
    assert generate("cityscapes", root, **params)["generated"] is True
    image = root / "leftImg8bit/train/hamburg/hamburg_000001_000019_leftImg8bit.png"
    stamp = image.stat().st_mtime_ns
    again = generate("cityscapes", root, **params)
    assert again["generated"] is False and again["counts"] == {"train": 2, "val": 1, "test": 7}
    assert image.stat().st_mtime_ns == stamp

    with pytest.raises(ValueError, match=r"n_train=2 \(asked 3\).*overwrite=True.*another root"):
        generate("cityscapes", root, **dict(params, n_train=3))
    with pytest.raises(ValueError, match="in the cityscapes format, not lostandfound.*overwrite=True"):
        generate("lostandfound", root, **params)
    generate_streethazards(tmp_path / "sh", **params)
    with pytest.raises(ValueError, match="in the streethazards format, not bdd100k"):
        generate("bdd100k", tmp_path / "sh", **params)

    # overwrite=True regenerates with the new parameters; no stale file survives.
    assert generate("cityscapes", root, **dict(params, n_train=1), overwrite=True)["generated"] is True
    assert not image.exists()
    # A missing file makes the stand-in incomplete, and the next call rebuilds it.
    label = root / "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png"
    label.unlink()
    assert generate("cityscapes", root, **dict(params, n_train=1))["generated"] is True and label.exists()


def test_a_real_dataset_is_not_overwritten_silently(tmp_path):
    (tmp_path / "gtCoarse" / "test").mkdir(parents=True)
    with pytest.raises(
        ValueError, match="LostAndFound-layout files that this generator did not write.*overwrite"
    ):
        generate("lostandfound", tmp_path, n_test=1, height=32, width=32, progress=False)
    assert not (tmp_path / "leftImg8bit").exists()


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    [
        ("kitti", {}, "unknown synthetic format 'kitti'; valid formats: " + ", ".join(FORMATS)),
        ("cityscapes", dict(n_train=0), "n_train must be an integer >= 1"),
        ("bdd100k", dict(n_val=-1), "n_val must be an integer >= 0"),
        ("lostandfound", dict(n_test=0), "n_test must be an integer >= 1"),
        ("roadanomaly", dict(width=16), "width must be an integer >= 32"),
        ("roadanomaly", dict(workers=0), "workers must be an integer >= 1"),
    ],
)
def test_invalid_arguments_are_refused_up_front(tmp_path, name, changes, message):
    args = dict(n_train=1, n_val=0, n_test=1, height=32, width=32, progress=False) | changes
    with pytest.raises(ValueError, match=message):
        generate(name, tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_anomaly_only_formats_ignore_train_and_val_counts(tmp_path):
    summary = generate(
        "lostandfound", tmp_path, n_train=0, n_val=-5, n_test=1, height=32, width=32, progress=False
    )
    assert summary["counts"] == {"test": 1}


# ----------------------------------------------------------------------------- command line, imports


def test_cli_writes_a_format_and_defaults_its_root(tmp_path):
    from scripts.make_synthetic import parse_args

    assert parse_args([]).root == "data/synthetic"
    assert parse_args(["--format", "roadanomaly"]).root == "data/synthetic-roadanomaly"
    args = [
        "--format",
        "cityscapes",
        "--root",
        str(tmp_path),
        "--n-train",
        "1",
        "--n-val",
        "1",
        "--n-test",
        "1",
    ]
    args += ["--height", "32", "--width", "64", "--quiet"]
    done = subprocess.run(
        [sys.executable, "scripts/make_synthetic.py", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert summary["format"] == "cityscapes" and summary["counts"] == {"train": 1, "val": 1, "test": 1}
    assert len(Cityscapes(tmp_path, "val")) == 1


def test_the_stand_in_writers_do_not_import_torch(tmp_path):
    code = (
        "import sys, lib.synthetic as s; "
        f"[s.generate(f, {str(tmp_path)!r} + '/' + f, n_train=1, n_val=1, n_test=1, height=32, width=32, "
        "progress=False) for f in s.FORMATS[1:]]; "
        "loaded = [m for m in ('lib.data', 'torch') if m in sys.modules]; "
        "assert not loaded, f'the writers imported {loaded}'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
