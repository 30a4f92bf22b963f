"""The StreetHazards reference project's paths, offline: its published weights evaluated with one
command (a random model saved in exactly that file's format, a gdown stand-in, full-size 1280x720
test images in the real layout), the weights registry, and its training recipe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lib.config import REFERENCE_RECIPE, RunConfig, presets
from lib.registry import REGISTRY
from lib.weights import WEIGHTS, WeightsError, find_weights, load_weights
from network import build_model

STREETHAZARDS_LABELS = REGISTRY["streethazards"].label_args

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
REFERENCE = WEIGHTS["streethazards-reference"]


def _write_test_image(root: Path, town: str, name: str, seed: int) -> None:
    """One 1280x720 test pair under test/{images,annotations}/test/<town>: 40x40 blocks of raw labels
    1..13 and a 200x200 anomaly (raw 14), an image that follows the labels plus noise."""
    rng = np.random.default_rng(seed)
    raw = np.kron(rng.integers(1, 14, (18, 32)), np.ones((40, 40), dtype=np.int64)).astype(np.uint8)
    raw[300:500, 600:800] = 14
    palette = rng.integers(0, 256, (15, 3))
    image = np.clip(palette[raw] + rng.normal(0, 20, raw.shape + (3,)), 0, 255).astype(np.uint8)
    for kind, data in (("images", image), ("annotations", raw)):
        path = root / "test" / kind / "test" / town / name
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), data)


@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> dict[str, Path]:
    """Two full-size test images (t5 and t6) and a random model saved as the reference's weights.pt:
    a bare state dict of the distance-head DeepLabv3+ ResNet-101 OS16, VainF key names."""
    base = tmp_path_factory.mktemp("reference")
    _write_test_image(base / "data", "t5", "300.png", seed=0)
    _write_test_image(base / "data", "t6", "1200.png", seed=1)
    torch.manual_seed(0)
    model = build_model(arch="deeplabv3plus", backbone="resnet101", head="distance", num_classes=13)
    state = model.state_dict()
    torch.save(state, base / "weights.pt")
    return {"data": base / "data", "weights": base / "weights.pt", "base": base}


def test_the_stand_in_has_the_published_files_format(replica):
    state = torch.load(replica["weights"], weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # bare: no "model_state" wrapper
    assert tuple(state["classifier.classifier.3.prototypes"].shape) == (13, 256)
    vainf = [line.split()[0] for line in (FIXTURES / "deeplabv3plus_resnet101_os16_19classes.keys.txt")
             .read_text().splitlines() if line.strip()]  # fmt: skip
    head = "classifier.classifier.3."
    assert sorted(k for k in state if not k.startswith(head)) == sorted(
        k for k in vainf if not k.startswith(head)
    )


@pytest.fixture
def offline(monkeypatch, replica):
    """gdown copies the local stand-in; the StreetHazards download records what it was asked for."""
    import gdown

    calls: dict[str, list] = {"gdown": [], "streethazards": []}

    def fake_gdown(*, id, output, quiet, resume):
        calls["gdown"].append(id)
        shutil.copyfile(replica["weights"], output)
        return output

    def fake_streethazards(root, *, parts, progress):
        calls["streethazards"].append((Path(root), tuple(parts)))
        return {}

    monkeypatch.setattr(gdown, "download", fake_gdown)
    monkeypatch.setattr("lib.download.download_streethazards", fake_streethazards)
    return calls


def _flags(replica, tmp_path: Path) -> list[str]:
    return ["--data-root", str(replica["data"]), "--weights-dir", str(tmp_path / "cache"),
            "--out-dir", str(tmp_path / "out"), "--eval-batch-size", "1", "--num-workers", "0",
            "--no-progress", "--no-tensorboard", "--device", "cpu"]  # fmt: skip


@pytest.mark.slow
def test_reference_weights_evaluated_by_one_command(replica, offline, tmp_path, capsys):
    from lib.data import StreetHazards, make_loader
    from lib.test import evaluate
    from scripts.test import main

    assert main(["--preset", "streethazards-reference", *_flags(replica, tmp_path)]) == 0
    out = capsys.readouterr().out
    assert offline["gdown"] == [REFERENCE.id]
    assert offline["streethazards"] == [(replica["data"], ("test",))]  # the test archive alone
    assert (tmp_path / "cache" / REFERENCE.file_name).is_file()
    run_dir = tmp_path / "out" / "runs" / "run_0"
    measured = json.loads((run_dir / "metrics.json").read_text())

    # The same model, evaluated directly with the library: the same numbers.
    model = build_model(arch="deeplabv3plus", backbone="resnet101", head="distance", num_classes=13)
    model.load_state_dict(torch.load(replica["weights"], weights_only=True))
    loader = make_loader(
        StreetHazards(replica["data"], "test"), batch_size=1, shuffle=False, num_workers=0, seed=0
    )
    direct = evaluate(
        model,
        loader,
        num_classes=13,
        **STREETHAZARDS_LABELS,
        device="cpu",
        miou_exclude=("pedestrian",),
        progress=False,
    )
    assert measured.keys() == direct.metrics.keys()
    for key, value in direct.metrics.items():
        assert measured[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    assert direct.num_images == 2 and "ood/entropy/AUPR/per-image" in measured
    # mIoU over the 12 classes the reference averages (pedestrian left out).
    ious = [v for k, v in direct.metrics.items() if k.startswith("seg/IoU/") and k != "seg/IoU/pedestrian"]
    assert measured["seg/mIoU"] == pytest.approx(float(np.nanmean(ious)), abs=1e-6)
    # Printed beside the published numbers.
    assert "65.10" in out and "17.37" in out and "ood/energy/AUPR/pooled" in out
    line = next(line for line in out.splitlines() if line.startswith("ood/entropy/AUPR/pooled"))
    assert f"{measured['ood/entropy/AUPR/pooled']:.2f}" in line


def test_damaged_or_wrong_weights_end_with_one_line_naming_the_file(replica, offline, tmp_path, capsys):
    from scripts.test import main

    cache = tmp_path / "cache"
    cache.mkdir()
    truncated = cache / REFERENCE.file_name
    truncated.write_bytes(replica["weights"].read_bytes()[: 1 << 20])
    assert main(["--preset", "streethazards-reference", *_flags(replica, tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(truncated) in err and "truncated or damaged" in err
    assert "delete it and run again" in err

    # A Cityscapes 19-class file where the reference's file should be.
    other = build_model(arch="deeplabv3plus", backbone="resnet101", head="standard", num_classes=19)
    torch.save({"model_state": other.state_dict()}, truncated)
    assert main(["--preset", "streethazards-reference", *_flags(replica, tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(truncated) in err
    assert "should be streethazards-reference" in err and "delete the file" in err
    assert offline["gdown"] == []  # a file is there: nothing is downloaded over it

    assert main(["--weights", "no-such-weights", *_flags(replica, tmp_path)]) == 2
    assert "no such file, and not a known name (streethazards-reference" in capsys.readouterr().err


def test_load_weights_is_strict(replica):
    model = build_model(arch="deeplabv3plus", backbone="resnet101", head="distance", num_classes=13)
    load_weights(model, replica["weights"])
    expected = torch.load(replica["weights"], weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    standard = build_model(arch="deeplabv3plus", backbone="resnet101", head="standard", num_classes=13)
    with pytest.raises(WeightsError, match="its head does not fit"):
        load_weights(standard, replica["weights"])


# ----------------------------------------------------------------------------- registry


def test_registry_entries_describe_the_files():
    assert REFERENCE.id == "1h3oUMwKU5EZmmmiNrgs80ziLYbISYPVM" and REFERENCE.format == "bare"
    assert dict(REFERENCE.head_shapes) == {"prototypes": (13, 256)}
    for entry in WEIGHTS.values():
        assert entry.format in ("bare", "model_state", "module.") and entry.host == "gdrive"
        model = build_model(
            arch=entry.arch, backbone=entry.backbone, head=entry.head, num_classes=entry.num_classes
        )
        head = {k.removeprefix(model.head_key + "."): tuple(v.shape) for k, v in model.state_dict().items()
                if k.startswith(model.head_key + ".")}  # fmt: skip
        assert head == dict(entry.head_shapes), entry.name
    assert (
        find_weights(backbone="resnet101", trained_on="cityscapes").id == "1nmER-DVgFgpbwLN3rRlx0Hf_jqYRYdvc"
    )
    assert find_weights(backbone="mobilenet_v2", trained_on="voc").id == "1-B5OXRUE6K4G6NESlj6Acp5oO3Gqw9Vv"
    with pytest.raises(WeightsError, match="no known deeplabv3plus resnet50 weights.*resnet101/cityscapes"):
        find_weights(backbone="resnet50", trained_on="cityscapes")


@pytest.mark.parametrize("fmt", ["bare", "model_state", "module."])
def test_pretrained_on_downloads_once_into_the_cache_and_fine_tunes(tmp_path, monkeypatch, fmt):
    """pretrained_on="voc" (MobileNetV2): fetched on first use, in any of the three formats, with the
    21-class head left out of a 13-class distance-head model."""
    import gdown

    from lib.experiment import make_model

    source = build_model(arch="deeplabv3plus", backbone="mobilenet_v2", head="standard", num_classes=21)
    state = source.state_dict()
    if fmt == "module.":
        state = {f"module.{k}": v for k, v in state.items()}
    saved = tmp_path / "published.pt"
    torch.save({"model_state": state} if fmt == "model_state" else state, saved)
    ids = []

    def fake_gdown(*, id, output, quiet, resume):
        ids.append(id)
        shutil.copyfile(saved, output)
        return output

    monkeypatch.setattr(gdown, "download", fake_gdown)
    cfg = RunConfig(pretrained_on="voc", weights_dir=str(tmp_path / "cache"), progress=False)
    model = make_model(cfg)
    assert ids == [WEIGHTS["deeplabv3plus_mobilenet_voc"].id]
    key = "backbone.low_level_features.0.0.weight"
    assert torch.equal(model.state_dict()[key], source.state_dict()[key])
    make_model(cfg)
    assert len(ids) == 1  # cached


# ----------------------------------------------------------------------------- recipe


def test_streethazards_preset_is_the_reference_recipe():
    cfg = RunConfig(**presets()["streethazards"])
    expected = dict(
        dataset="streethazards", backbone="resnet101", head="distance", output_stride=16, pretrained_on="cityscapes",
        loss="fl+h", gamma_focal=2.0, entropy_weight=0.1, class_weights=False, optimizer="adam", lr=1e-4,
        backbone_lr=1e-5, weight_decay=1e-4, scheduler="plateau", plateau_patience=5, epochs=50, batch_size=16,
        crop_size=(512, 512), amp="auto", entropy_term="softmax", download=True,
    )  # fmt: skip
    assert {k: getattr(cfg, k) for k in expected} == expected
    # mIoU over 12 classes: the registry's StreetHazards protocol leaves pedestrian out by default
    from lib.experiment import miou_exclusions

    assert cfg.miou_exclude is None and miou_exclusions(cfg, REGISTRY["streethazards"]) == ("pedestrian",)
    assert miou_exclusions(cfg.replace(miou_exclude=()), REGISTRY["streethazards"]) == ()
    assert (
        miou_exclusions(cfg, REGISTRY["synthetic"]) == ()
        and miou_exclusions(cfg, REGISTRY["roadanomaly"]) == ()
    )
    evaluation = RunConfig(**presets()["streethazards-reference"])
    assert evaluation.weights == "streethazards-reference" and evaluation.pretrained_on is None
    assert (evaluation.backbone, evaluation.head, evaluation.miou_exclude) == ("resnet101", "distance", None)
    with pytest.raises(ValueError, match="weights='x' evaluates trained weights"):
        RunConfig(**REFERENCE_RECIPE, weights="x")


def test_train_script_with_the_reference_flags_alone_trains_its_recipe(monkeypatch):
    """scripts/train.py + the reference's command line = the streethazards preset (not the demo)."""
    import lib.experiment
    from scripts.train import main

    seen = []

    def fake_train(cfg, *, resume, device):
        seen.append(cfg)
        raise SystemExit(0)

    monkeypatch.setattr(lib.experiment, "train", fake_train)
    flags = (
        "--backbone resnet101 --head distance --dataset cityscapes --loss fl+h --gamma 0.1 --gamma_focal 2.0"
    )
    with pytest.raises(SystemExit):
        main(flags.split())
    assert seen == [RunConfig(**presets()["streethazards"])]


def test_resolve_amp():
    from lib.optim import resolve_amp

    assert resolve_amp("auto", torch.device("cpu")) == "off"
    assert resolve_amp("fp16", torch.device("cpu")) == "fp16"
    if torch.cuda.is_available():
        want = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
        assert resolve_amp("auto", torch.device("cuda")) == want


def test_resume_latest_picks_the_run_checkpointed_last(tmp_path, monkeypatch):
    """After a Colab disconnect: RESUME = "latest" / --resume latest."""
    import argparse
    import os

    import lib.checkpoint
    from lib.checkpoint import latest_run
    from lib.cli import run_config

    with pytest.raises(FileNotFoundError, match="no run to resume"):
        latest_run(tmp_path)
    for name, mtime in (("run_0", 100), ("run_7", 300), ("grid_a", 200)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "last.pt").write_bytes(b"")
        os.utime(tmp_path / "runs" / name / "last.pt", (mtime, mtime))
    assert latest_run(tmp_path) == tmp_path / "runs" / "run_7"
    loaded = []

    def fake_load(path):
        loaded.append(Path(path))
        return {"path": str(Path(path) / "last.pt"), "config": RunConfig().to_dict()}

    monkeypatch.setattr(lib.checkpoint, "load_checkpoint", fake_load)
    args = argparse.Namespace(resume="latest", out_dir=str(tmp_path))
    checkpoint, cfg = run_config(args, preset="streethazards")
    assert loaded == [tmp_path / "runs" / "run_7"] and cfg == RunConfig(out_dir=str(tmp_path))
