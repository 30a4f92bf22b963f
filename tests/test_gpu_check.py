"""scripts/gpu_check.py on the CPU (--quick), its failure reporting, and the device fix of
PerImageAnomalyMetric that it checks on a GPU."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from lib.metrics import PerImageAnomalyMetric, exact_rank_metrics

ROOT = Path(__file__).resolve().parents[1]
CHECK_NAMES = {
    "metrics/pooled", "metrics/per-image", "metrics/per-image-exact", "metrics/confusion", "scores",
    "evaluate", "train/fp32", "train/fp16", "train/bf16", "train/channels_last", "sync_bn",
    "bench/fp16", "bench/bf16",
}  # fmt: skip
#: Checks that have a CPU path, so must PASS (not SKIP) with --device cpu.
MUST_PASS_ON_CPU = CHECK_NAMES - {"train/fp16", "bench/fp16"}


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def check_lines(out: str) -> dict[str, tuple[str, str]]:
    """{name: (status, detail)} of the PASS / FAIL / SKIP lines of a gpu_check output."""
    lines = {}
    for line in out.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("PASS", "FAIL", "SKIP"):
            name, _, detail = rest.partition(": ")
            assert name not in lines, f"check {name} reported twice"
            lines[name] = (status, detail)
    return lines


@pytest.mark.slow
def test_quick_cpu_run_passes_every_check(capsys):
    start = time.perf_counter()
    code = load_gpu_check().main(["--device", "cpu", "--quick"])
    out = capsys.readouterr().out
    lines = check_lines(out)
    assert out.startswith("gpu_check: torch ") and "device cpu" in out.splitlines()[0]
    assert set(lines) == CHECK_NAMES, out
    assert all(status in ("PASS", "SKIP") for status, _ in lines.values()), out
    assert all(lines[name][0] == "PASS" for name in MUST_PASS_ON_CPU), out
    assert lines["train/fp16"][0] == lines["bench/fp16"][0] == "SKIP"
    assert code == 0
    assert time.perf_counter() - start < 180  # about 30 s on 2 idle cores


def test_a_failing_check_is_reported_and_sets_the_exit_code(capsys, monkeypatch):
    gpu_check = load_gpu_check()

    def broken(ctx):
        print("noise that must not reach stdout")
        raise AssertionError("scores differ by 0.5")

    monkeypatch.setattr(gpu_check, "check_scores", broken)
    code = gpu_check.main(["--device", "cpu", "--quick", "--checks", "scores", "metrics"])
    captured = capsys.readouterr()
    lines = check_lines(captured.out)
    assert code == 1
    assert lines["scores"][0] == "FAIL"
    assert lines["scores"][1].startswith("AssertionError: scores differ by 0.5 (")
    assert lines["metrics/pooled"][0] == "PASS" and "train/fp32" not in lines
    assert "noise" not in captured.out and "noise" in captured.err and "Traceback" in captured.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_requested_without_cuda_exits_2(capsys):
    assert load_gpu_check().main(["--device", "cuda"]) == 2
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "CUDA is not available" in out and "--device cpu" in out


def test_bench_check_reports_the_speed_up_lines(monkeypatch):
    """The bench check runs scripts/bench_train.py --amp-only and quotes its fp32-vs-AMP lines
    (training steps stubbed out, so it takes no time)."""
    gpu_check = load_gpu_check()
    bench = gpu_check.load_script("bench_train")
    monkeypatch.setattr(bench, "make_step", lambda *args, **kwargs: lambda: time.sleep(0.001))
    monkeypatch.setattr(gpu_check, "load_script", lambda name: bench)
    ctx = gpu_check.Context(device=torch.device("cpu"), quick=True, work=ROOT)
    detail = gpu_check.check_bench(ctx, "bf16")
    assert detail.startswith("mobilenet_v2 fp32 ") and " bf16 " in detail and "speed-up" in detail


# ============================================================================== the metric fix


class DeviceMixGuard(TorchFunctionMode):
    """Raises when one torch call gets non-scalar tensors on two devices (what CUDA refuses)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        devices = {a.device for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.dim() > 0}
        if len(devices) > 1:
            raise RuntimeError(f"{func} mixes devices {devices}")
        return func(*args, **kwargs)


def hand_made_images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three 2x4 images: ties across classes, an ignored pixel, one image without an anomaly."""
    scores = torch.tensor([[[0.9, 0.5, 0.5, 0.1], [0.5, 0.3, 0.2, 0.2]],
                           [[0.7, 0.7, 0.1, 0.0], [0.4, 0.9, 0.8, 0.3]],
                           [[0.2, 0.1, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]]])  # fmt: skip
    is_anomaly = torch.tensor([[[1, 0, 1, 0], [0, 0, 1, 0]],
                               [[1, 0, 0, 0], [0, 1, 0, 0]],
                               [[0, 0, 0, 0], [0, 0, 0, 0]]], dtype=torch.bool)  # fmt: skip
    valid = torch.ones_like(is_anomaly)
    valid[1, 1, 2] = False  # an inlier scoring 0.8 that must not count
    return scores, is_anomaly, valid


@pytest.mark.parametrize("exact", [False, True])
def test_per_image_with_an_explicit_device_matches_exact_rank_metrics(exact):
    scores, is_anomaly, valid = hand_made_images()
    metric = PerImageAnomalyMetric(exact=exact, device="cpu")
    metric.update(scores[:1], is_anomaly[:1], valid[:1])
    metric.update(scores[1:], is_anomaly[1:], valid[1:])
    out = metric.compute()
    expected = [
        exact_rank_metrics(scores[i][valid[i]].numpy(), is_anomaly[i][valid[i]].numpy()) for i in (0, 1)
    ]
    for key in ("AUPR", "AUROC", "FPR95"):
        assert out[key] == pytest.approx(np.mean([e[key] for e in expected]), abs=1e-12), key
    assert (out["n_images"], out["n_skipped"]) == (2, 1)
    assert metric.state.dtype == torch.float64 and metric.state.tolist()[3:5] == [2.0, 1.0]
    # By hand, P(anomaly > inlier) + P(tie) / 2. Image 0, anomalies 0.9 0.5 0.2 vs inliers 0.5 0.5
    # 0.3 0.2 0.1: (5 + 3 + 2/2 + 1 + 1/2) / 15 = 0.7. Image 1, anomalies 0.9 0.7 vs inliers 0.7 0.4
    # 0.3 0.1 0.0 (the ignored 0.8 would lower it): (5 + 4 + 1/2) / 10 = 0.95.
    assert out["AUROC"] == pytest.approx((0.7 + 0.95) / 2, abs=1e-12)


def test_per_image_state_on_another_device_gets_no_cpu_tensor():
    """The state on a device that is not the inputs' (here "meta", standing in for CUDA) is only
    ever combined with tensors on its own device: the fix for the CUDA crash at the first batch."""
    scores, is_anomaly, valid = hand_made_images()
    for exact in (False, True):
        metric = PerImageAnomalyMetric(exact=exact, device="meta")
        with DeviceMixGuard():
            metric.update(scores, is_anomaly, valid)
        assert metric.state.device.type == "meta"


def test_device_mix_guard_catches_a_cpu_tensor_added_to_device_state():
    state = torch.zeros(5, dtype=torch.float64, device="meta")
    with DeviceMixGuard(), pytest.raises(RuntimeError, match="mixes devices"):
        state[:4] += torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)  # the old update
