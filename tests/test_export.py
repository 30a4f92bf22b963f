"""lib/export.py and scripts/export_onnx.py: model + anomaly score as one ONNX graph, vs PyTorch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from lib.config import RunConfig  # noqa: E402
from lib.data import normalize  # noqa: E402
from lib.export import (  # noqa: E402
    SegmentationWithScore,
    check_onnx,
    example_input,
    export_onnx,
    load_trained_model,
    run_onnx,
)
from lib.scores import compute_scores  # noqa: E402
from network import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("export_onnx_script", ROOT / "scripts" / "export_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mobilenet_entropy_graph_matches_pytorch(tmp_path: Path) -> None:
    """DeepLabv3+ MobileNetV2 (distance head) + entropy, uint8 in, 1x3x64x128, onnxruntime on CPU."""
    torch.manual_seed(0)
    model = build_model(arch="deeplabv3plus", backbone="mobilenet_v2", head="distance", num_classes=13)
    model.train()  # the export must not depend on (or change) the caller's mode
    path = export_onnx(model, tmp_path / "model.onnx", height=64, width=128, score="entropy")
    assert model.training
    image = example_input(1, 64, 128, seed=3)
    class_map, anomaly_map = run_onnx(path, image)
    assert class_map.shape == anomaly_map.shape == (1, 64, 128)
    assert class_map.dtype == np.int64 and anomaly_map.dtype == np.float32

    # the reference, spelled out: normalise, forward, argmax, lib.scores
    model.eval()
    with torch.no_grad():
        logits = model(normalize(image))
    expected_class = logits.argmax(dim=1).numpy()
    expected_anomaly = compute_scores(logits, ("entropy",))["entropy"].numpy()
    top2 = logits.topk(2, dim=1).values
    tied = (top2[:, 0] - top2[:, 1] < 1e-3).numpy()
    assert ((class_map == expected_class) | tied).all()
    np.testing.assert_allclose(anomaly_map, expected_anomaly, rtol=1e-3, atol=1e-4)

    check = check_onnx(path, model, image, score="entropy")
    assert check.ok and check.pixels == 64 * 128, str(check)


def test_abet_graph_with_dynamic_batch(tmp_path: Path) -> None:
    """The AbeT head's score inside the graph (-logsumexp(cos / T)); float input; batch size varies."""
    torch.manual_seed(0)
    model = build_model(arch="my_fcn", backbone="plain", head="abet", num_classes=5, base_width=8).eval()
    path = export_onnx(
        model,
        tmp_path / "abet.onnx",
        height=32,
        width=48,
        score="abet",
        input_format="float",
        dynamic_batch=True,
    )
    for batch in (1, 3):
        image = example_input(batch, 32, 48, "float", seed=batch)
        class_map, anomaly_map = run_onnx(path, image)
        with torch.no_grad():
            out = model.forward_with_extras(image)
        expected = -torch.logsumexp(out["untempered_logits"] / out["temperature"], dim=1)
        np.testing.assert_allclose(anomaly_map, expected.numpy(), rtol=1e-3, atol=1e-4)
        assert class_map.shape == (batch, 32, 48)
        assert check_onnx(path, model, image, score="abet", input_format="float").ok


def test_wrapper_errors() -> None:
    model = torch.nn.Conv2d(3, 2, 1)
    with pytest.raises(ValueError, match="unknown score 'odin'"):
        SegmentationWithScore(model, "odin")
    with pytest.raises(ValueError, match="'sml' score needs sml_stats"):
        SegmentationWithScore(model, "sml")
    with pytest.raises(ValueError, match="unknown input_format 'uint16'"):
        SegmentationWithScore(model, "msp", input_format="uint16")
    # any module mapping images to logits works (no extras)
    class_map, anomaly = SegmentationWithScore(model, "msp")(example_input(1, 4, 4))
    assert class_map.shape == anomaly.shape == (1, 4, 4)


def _training_checkpoint(tmp_path: Path, **config_changes: object) -> tuple[Path, torch.nn.Module]:
    """A checkpoint in lib.train.fit's format: model state dict, optimizer, run config, history."""
    cfg = RunConfig(progress=False, **config_changes).to_dict()
    torch.manual_seed(1)
    model = build_model(
        backbone=cfg["backbone"], head=cfg["head"], num_classes=13, output_stride=cfg["output_stride"]
    )
    path = tmp_path / "runs" / "run_0" / "best.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "optimizer": {}, "epoch": 3, "config": cfg, "history": []}, path)
    return path, model


def test_load_trained_model(tmp_path: Path) -> None:
    path, model = _training_checkpoint(tmp_path, head="cosine", output_stride=8)
    loaded = load_trained_model(path)
    assert loaded.config["head"] == "cosine" and loaded.config["output_stride"] == 8
    assert loaded.num_classes == 13 and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(ValueError, match="no config naming the model; pass backbone, head"):
        load_trained_model({"model_state": model.state_dict()})
    bare = load_trained_model({"model_state": model.state_dict()}, backbone="mobilenet_v2", head="cosine")
    assert bare.config["output_stride"] == 16  # OS is not in the weights: the default


def test_script_exports_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A run config of today's format, whose model the flags re-describe (a tiny my_FCN with AbeT head).
    cfg = RunConfig(progress=False, image_size=(32, 64)).to_dict()
    torch.manual_seed(1)
    model = build_model(arch="my_fcn", backbone="plain", head="abet", num_classes=13)
    path = tmp_path / "best.pt"
    torch.save({"model": model.state_dict(), "config": cfg}, path)
    script = _script()
    out = tmp_path / "model.onnx"
    argv = ["--checkpoint", str(path), "--score", "abet", "--out", str(out)]
    assert script.main([*argv, "--arch", "my_fcn", "--backbone", "plain", "--head", "abet"]) == 0
    printed = capsys.readouterr().out
    assert "my_fcn plain abet head, 13 classes, output stride 8" in printed
    assert "(1, 3, 32, 64)" in printed  # the run config's image_size
    assert "onnxruntime vs PyTorch on a random image: OK" in printed
    class_map, anomaly_map = run_onnx(out, example_input(1, 32, 64))
    assert class_map.shape == anomaly_map.shape == (1, 32, 64)

    assert script.main(argv) == 2  # the config's model (DeepLabv3+) is not the one saved
    assert "error: no head weights under 'classifier.classifier.3'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        script.main(["--help"])
    assert info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in (
        "--checkpoint",
        "--score",
        "--out",
        "--height",
        "--width",
        "--input",
        "--dynamic-batch",
        "--no-check",
    ):
        assert flag in help_text
