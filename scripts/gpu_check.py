"""GPU correctness checks in one command: one ``PASS|FAIL|SKIP name: detail`` line per check.

    python scripts/gpu_check.py                       # on CUDA: about 2-8 minutes (H200 .. Colab T4)
    python scripts/gpu_check.py --device cpu --quick  # the same checks on the CPU, under a minute
    python scripts/gpu_check.py --checks metrics evaluate

Checks (by group, as --checks names them):

  metrics   metrics/{pooled,per-image,per-image-exact,confusion}: AnomalyMetric (GPU histogram branch
            vs the CPU span branch), PerImageAnomalyMetric (binned and exact; state on the device
            with inputs on the device and on the CPU) and ConfusionMatrix, updated on --device and
            on the CPU with the same score maps (ties, signed zeros, +-inf, ignored and NaN pixels);
            histograms and matrices must be identical, computed metrics within 1e-6.
  scores    every lib.scores score and SML statistics (fitted with a CPU mask on --device logits)
            on --device vs the CPU, within 1e-5 (float32 exp / log rounding).
  evaluate  lib.test.evaluate (both protocols, the kits' conventions, component metrics) of one small model (DeepLabv3+
            MobileNetV2; my_fcn with --quick) on --device vs the CPU on the same batches; the model
            runs in float64 so that convolution rounding (cuDNN, TF32) cannot flip a prediction:
            every metric within 1e-3 percentage points.
  train     train/{fp32,fp16,bf16,channels_last}: the tiny preset trained and evaluated end to end
            by lib.experiment.run on --device; PASS when it finishes with finite losses and metrics.
            fp16 is skipped on the CPU, bf16 where torch.cuda.is_bf16_supported() is False.
  sync_bn   lib.optim.prepare_model with sync_bn in a world-size-1 process group (NCCL on CUDA,
            else gloo) as under torchrun: every BatchNorm becomes a SyncBatchNorm, DDP wraps it, one
            training step matches plain BatchNorm. On the CPU (no SyncBatchNorm training path): the
            conversion, an eval forward and prepare_model's refusal are checked.
  bench     bench/{fp16,bf16}: scripts/bench_train.py --amp-only, fp32 vs AMP images/s (reported,
            not judged); fp16 is skipped on the CPU, bf16 on GPUs without it in hardware (T4).

Exit status: 0 when no check failed, 1 when one did, 2 when --device names a missing CUDA device.
A failing check's captured output and traceback go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import functools
import gc
import importlib.util
import io
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.cli import script_parser  # noqa: E402
from lib.registry import REGISTRY  # noqa: E402

STREETHAZARDS_LABELS = REGISTRY["streethazards"].label_args

GROUPS = ("metrics", "scores", "evaluate", "train", "sync_bn", "bench")
TRAIN_MODES: dict[str, dict] = {
    "fp32": {"amp": "off"},
    "fp16": {"amp": "fp16"},
    "bf16": {"amp": "bf16"},
    "channels_last": {"amp": "off", "channels_last": True},
}
#: --quick: the tiny preset, smaller still (a few seconds per run on 2 CPU cores).
QUICK_RUN = dict(n_train=4, n_val=2, n_test=2, image_size=(32, 64), crop_size=(32, 32), batch_size=2,
                 eval_batch_size=2, max_steps_per_epoch=1)  # fmt: skip
METRIC_TOL = 1e-6  # metrics computed the same way from identical integer states
SCORE_TOL = 1e-5  # float32 transcendental functions, GPU vs CPU
EVAL_TOL_PP = 1e-3  # percentage points, float64 model
NUM_CLASSES = 13


class Skip(Exception):
    """A check that does not apply to this device (the message says why)."""


@dataclass
class Context:
    device: torch.device
    quick: bool
    work: Path


# ============================================================================== command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--device", default="cuda",
                        help="device to check against the CPU: cuda, cuda:N or cpu "
                        "(default: cuda)")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="smaller images and models, fewer steps, no run figures "
                        "(the CPU run stays under a minute)")  # fmt: skip
    parser.add_argument("--checks", nargs="+", choices=GROUPS, default=list(GROUPS), metavar="GROUP",
                        help=f"check groups to run, any of: {' '.join(GROUPS)} (default: all)")  # fmt: skip
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="folder for the runs and the synthetic data, kept afterwards "
                        "(default: a temporary folder, deleted at the end)")  # fmt: skip
    return parser.parse_args(argv)


def missing_device(device: torch.device) -> str | None:
    """Why `device` cannot be used (one line), or None."""
    if device.type == "cpu":
        return None
    if device.type != "cuda":
        return f"gpu_check: unsupported --device {device}; use cuda, cuda:N or cpu"
    if not torch.cuda.is_available():
        return (f"gpu_check: --device {device} but CUDA is not available (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda}); run it on a GPU machine or pass "
                "--device cpu")  # fmt: skip
    if (device.index or 0) >= torch.cuda.device_count():
        return f"gpu_check: --device {device} but only {torch.cuda.device_count()} CUDA device(s) are visible"
    return None


def header(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        bf16 = "yes" if native_bf16(device) else "no"
        return (f"gpu_check: torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN "
                f"{torch.backends.cudnn.version()}), device {device}: {p.name}, "
                f"{p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}, "
                f"native bf16 {bf16}")  # fmt: skip
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    bf16 = "yes" if native_bf16(device) else "no"
    return (f"gpu_check: torch {torch.__version__}, device cpu: {device_name(device)}, "
            f"{torch.get_num_threads()} threads, {ram:.1f} GiB RAM, native bf16 {bf16}")  # fmt: skip


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU ({torch.backends.cpu.get_cpu_capability()})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    problem = missing_device(device)
    if problem:
        print(problem)
        return 2
    print(header(device), flush=True)
    start = time.perf_counter()
    with work_dir(args.work_dir) as work:
        ctx = Context(device=device, quick=args.quick, work=work)
        statuses = [run_check(name, fn) for name, fn in checks(ctx, args.checks)]
    counts = {s: statuses.count(s) for s in ("PASS", "SKIP", "FAIL")}
    print(f"gpu_check: {counts['PASS']} passed, {counts['SKIP']} skipped, {counts['FAIL']} failed "
          f"in {time.perf_counter() - start:.0f} s")  # fmt: skip
    return 1 if counts["FAIL"] else 0


@contextlib.contextmanager
def work_dir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    folder = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def checks(ctx: Context, groups: list[str]) -> list[tuple[str, Callable[[], str]]]:
    """(name, check) of the selected groups, in the order of GROUPS."""
    p = functools.partial
    table: dict[str, list[tuple[str, Callable[[], str]]]] = {
        "metrics": [("metrics/pooled", p(check_pooled, ctx)),
                    ("metrics/per-image", p(check_per_image, ctx, exact=False)),
                    ("metrics/per-image-exact", p(check_per_image, ctx, exact=True)),
                    ("metrics/confusion", p(check_confusion, ctx))],
        "scores": [("scores", p(check_scores, ctx))],
        "evaluate": [("evaluate", p(check_evaluate, ctx))],
        "train": [(f"train/{mode}", p(check_train, ctx, mode)) for mode in TRAIN_MODES],
        "sync_bn": [("sync_bn", p(check_sync_bn, ctx))],
        "bench": [(f"bench/{amp}", p(check_bench, ctx, amp)) for amp in ("fp16", "bf16")],
    }  # fmt: skip
    return [item for group in GROUPS if group in groups for item in table[group]]


def run_check(name: str, check: Callable[[], str]) -> str:
    """Run one check with its output captured; print its line; return PASS, SKIP or FAIL."""
    captured = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            detail = check()
        status = "PASS"
    except Skip as reason:
        status, detail = "SKIP", str(reason)
    except Exception as err:  # every failure becomes a FAIL line, and the other checks still run
        status, detail = "FAIL", f"{type(err).__name__}: {first_line(err)}"
        tail = "\n".join(captured.getvalue().splitlines()[-40:])
        print(f"--- {name}: output (last lines) ---\n{tail}\n{traceback.format_exc()}", file=sys.stderr)
    seconds = time.perf_counter() - start
    print(f"{status} {name}: {detail}" + (f" ({seconds:.1f} s)" if status != "SKIP" else ""), flush=True)
    return status


# ============================================================================== helpers


def first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else "(no message)"


def max_diff(
    a: Mapping[str, float], b: Mapping[str, float], keys: list[str] | None = None
) -> tuple[float, str]:
    """Largest |a[k] - b[k]| over the float values (NaN on both sides counts 0, on one side inf)."""
    worst, where = 0.0, ""
    for key in keys or [k for k, v in a.items() if isinstance(v, float)]:
        x, y = float(a[key]), float(b[key])
        d = 0.0 if (math.isnan(x) and math.isnan(y)) or x == y else abs(x - y)
        d = math.inf if math.isnan(d) else d
        if d > worst or not where:
            worst, where = d, key
    return worst, where


def score_maps(shape: tuple[int, int, int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scores, is_anomaly, valid) on the CPU: ties, +-0, +-inf, huge values, NaN where not counted;
    image 1 has no anomaly (skipped by the per-image protocol)."""
    g = torch.Generator().manual_seed(seed)
    b, h, w = shape
    is_anomaly = torch.zeros(shape, dtype=torch.bool)
    for i in range(b):
        if i != 1:
            is_anomaly[i, h // 4 + i : h // 2 + i, w // 3 + 5 * i : w // 2 + 5 * i] = True
    scores = torch.round((torch.randn(shape, generator=g) + 1.5 * is_anomaly) * 4) / 4  # heavy ties
    scores[:, :, :4], scores[:, :, 4:8] = 0.0, -0.0
    scores[0, 0, :16], scores[0, 1, :16], scores[0, 2, :16] = 3e38, -math.inf, 1e-30
    scores[-1, 3, :16] = math.inf
    valid = torch.rand(shape, generator=g) > 0.05
    valid[:, -2:, :] = False
    scores[:, -1, ::3] = math.nan  # only where valid is False
    return scores, is_anomaly, valid


def metric_shape(ctx: Context) -> tuple[int, int, int]:
    return (4, 64, 128) if ctx.quick else (4, 256, 512)


def on_device(ctx: Context, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.to(ctx.device) for t in tensors]


# ============================================================================== metrics


def check_pooled(ctx: Context) -> str:
    """AnomalyMetric: device state (GPU histogram branch) vs CPU state (span branch)."""
    from lib.metrics import AnomalyMetric

    s, y, v = score_maps(metric_shape(ctx))
    details = []
    # As they are, and with a large shared offset (the binning then shifts the scores first).
    for name, scores in (("centred", s), ("offset", 1e4 * s - 5e5)):
        cpu, dev = AnomalyMetric(device="cpu"), AnomalyMetric(device=ctx.device)
        for i in range(scores.shape[0]):  # one update per image, as the test loop streams batches
            cpu.update(scores[i : i + 1], y[i : i + 1], v[i : i + 1])
            dev.update(*on_device(ctx, scores[i : i + 1], y[i : i + 1], v[i : i + 1]))
        assert dev.pos_hist.device.type == ctx.device.type, f"state on {dev.pos_hist.device}"
        assert cpu.offset == dev.offset, (
            f"{name}: offsets differ: cpu {cpu.offset}, {ctx.device} {dev.offset}"
        )
        for state, tensor in cpu.state_tensors.items():  # counts, in-bin sums, block sums, offset
            assert torch.equal(dev.state_tensors[state].cpu(), tensor), f"{name}: {state} differs"
        ref, got = cpu.compute(), dev.compute()
        diff, key = max_diff(ref, got, ["AUPR", "AUROC", "FPR95"])
        assert diff <= METRIC_TOL, f"{name} {key}: cpu {ref[key]} vs {ctx.device} {got[key]}"
        details.append(
            f"{name} (offset {dev.offset:g}) max |diff| {diff:.1e}, AUROC {100 * got['AUROC']:.2f}"
        )
    n = got["n_pos"] + got["n_neg"]
    return f"{n} px, histograms identical (tol {METRIC_TOL:g}): " + "; ".join(details)


def check_per_image(ctx: Context, *, exact: bool) -> str:
    """PerImageAnomalyMetric with its state on the device (the lib.test setting), fed device and
    CPU inputs, vs the CPU."""
    from lib.metrics import PerImageAnomalyMetric

    s, y, v = score_maps(metric_shape(ctx))
    cpu = PerImageAnomalyMetric(exact=exact, device="cpu")
    dev = PerImageAnomalyMetric(exact=exact, device=ctx.device)
    mixed = PerImageAnomalyMetric(exact=exact, device=ctx.device)
    cpu.update(s, y, v)
    dev.update(*on_device(ctx, s, y, v))
    mixed.update(s, y, v)
    assert dev.state.device.type == ctx.device.type, f"state on {dev.state.device}"
    ref = cpu.compute()
    assert ref["n_images"] == s.shape[0] - 1 and ref["n_skipped"] == 1, f"images counted: {ref}"
    worst = 0.0
    for label, metric in (("device inputs", dev), ("CPU inputs", mixed)):
        got = metric.compute()
        diff, key = max_diff(ref, got, ["AUPR", "AUROC", "FPR95"])
        assert diff <= METRIC_TOL, f"{label}, {key}: cpu {ref[key]} vs {got[key]}"
        assert (got["n_images"], got["n_skipped"]) == (ref["n_images"], ref["n_skipped"]), label
        worst = max(worst, diff)
    return (f"{ref['n_images']} images + {ref['n_skipped']} skipped, device and CPU inputs, max |diff| "
            f"{worst:.1e} (tol {METRIC_TOL:g}); AUROC {100 * ref['AUROC']:.2f}")  # fmt: skip


def check_confusion(ctx: Context) -> str:
    """ConfusionMatrix on the device vs the CPU (anomaly id 13 and 255 not counted)."""
    from lib.metrics import ConfusionMatrix

    g = torch.Generator().manual_seed(1)
    shape = metric_shape(ctx)
    pred = torch.randint(0, NUM_CLASSES, shape, generator=g)
    target = torch.randint(0, NUM_CLASSES + 2, shape, generator=g)
    target[target == NUM_CLASSES + 1] = 255
    cpu, dev = ConfusionMatrix(NUM_CLASSES, device="cpu"), ConfusionMatrix(NUM_CLASSES, device=ctx.device)
    cpu.update(pred, target)
    dev.update(*on_device(ctx, pred, target))
    assert dev.matrix.device.type == ctx.device.type, f"state on {dev.matrix.device}"
    assert torch.equal(dev.matrix.cpu(), cpu.matrix), "confusion matrices differ"
    ref, got = cpu.compute(), dev.compute()
    diff, key = max_diff(ref, got, ["mIoU", "pixel_accuracy", "mean_class_accuracy"])
    assert diff <= METRIC_TOL, f"{key}: {ref[key]} vs {got[key]}"
    return f"{got['n_pixels']} px counted, matrices identical, mIoU {100 * got['mIoU']:.2f}"


def check_scores(ctx: Context) -> str:
    """compute_scores (all scores, SML fitted with a CPU mask) on the device vs the CPU."""
    from lib.config import ALL_SCORES
    from lib.scores import SMLStatistics, compute_scores

    g = torch.Generator().manual_seed(2)
    logits = torch.round(torch.randn(2, NUM_CLASSES, 48, 64, generator=g) * 12) / 4  # tied maxima too
    valid = torch.rand(2, 48, 64, generator=g) > 0.1
    results = {}
    for device in (torch.device("cpu"), ctx.device):
        stats = SMLStatistics(NUM_CLASSES, device=device)
        stats.update(logits.to(device), valid)  # the mask stays on the CPU
        scores = compute_scores(logits.to(device), ALL_SCORES, sml_stats=stats)
        results[device.type] = {name: s.cpu() for name, s in scores.items()}
    worst, where = 0.0, ""
    for name, ref in results["cpu"].items():
        got = results[ctx.device.type][name]
        assert got.shape == ref.shape and bool(torch.isfinite(got).all()), f"{name}: shape or non-finite"
        diff = float(((got - ref).abs() / (1 + ref.abs())).max())
        worst, where = max((worst, where), (diff, name))
    assert worst <= SCORE_TOL, f"{where}: relative difference {worst:.2e} > {SCORE_TOL:g}"
    return (
        f"{len(ALL_SCORES)} scores ({' '.join(ALL_SCORES)}), max rel |diff| {worst:.1e} (tol {SCORE_TOL:g})"
    )


# ============================================================================== evaluate


class Float64(nn.Module):
    """Runs a model in float64 (normalised float32 images in, float64 logits out)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.double())


def eval_batches(ctx: Context) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 images and blocky masks with anomaly rectangles (none in image 0) and ignored borders."""
    from lib.classes import ANOMALY_ID, IGNORE_INDEX

    g = torch.Generator().manual_seed(3)
    n, (h, w) = (2, (32, 64)) if ctx.quick else (3, (128, 256))
    batches = []
    for b in range(n):
        images = torch.randint(0, 256, (2, 3, h, w), generator=g, dtype=torch.uint8)
        coarse = torch.randint(0, NUM_CLASSES, (2, 1, h // 8, w // 8), generator=g).float()
        masks = F.interpolate(coarse, size=(h, w), mode="nearest")[:, 0].long()
        masks[1, h // 4 : h // 2, w // 4 : w // 2] = ANOMALY_ID
        if b:
            masks[0, h // 2 :, : w // 5] = ANOMALY_ID
        masks[:, :2, :] = IGNORE_INDEX
        batches.append((images, masks))
    return batches


def check_evaluate(ctx: Context) -> str:
    """lib.test.evaluate on the device vs the CPU, same model (float64) and batches."""
    from lib.test import evaluate
    from network import build_model

    torch.manual_seed(0)
    arch = (
        dict(arch="my_fcn", backbone="plain", base_width=16) if ctx.quick else dict(backbone="mobilenet_v2")
    )
    model = Float64(build_model(**arch, head="distance", num_classes=NUM_CLASSES))
    batches = eval_batches(ctx)
    kwargs = dict(
        num_classes=NUM_CLASSES, component_scores=("entropy",), conventions=("anomaly-seg", "smiyc", "pytorch-ood"),
        progress=False, **STREETHAZARDS_LABELS,
    )  # fmt: skip
    ref = evaluate(copy.deepcopy(model), batches, device="cpu", **kwargs).metrics
    got = evaluate(model.to(ctx.device), batches, device=ctx.device, **kwargs).metrics
    assert ref.keys() == got.keys(), f"metric keys differ: {sorted(set(ref) ^ set(got))}"
    assert any(k.endswith("/per-image") for k in ref), "no per-image metric"
    diff, key = max_diff(ref, got)
    assert diff <= EVAL_TOL_PP, f"{key}: cpu {ref[key]:.6f} vs {ctx.device} {got[key]:.6f}"
    return (f"{len(ref)} metrics (pooled, per-image, the three kits' conventions, components), max |diff| {diff:.1e} pp ({key}); "
            f"tol {EVAL_TOL_PP:g} pp, {arch.get('arch', 'deeplabv3plus')} in float64")  # fmt: skip


# ============================================================================== train


def skip_unsupported_amp(device: torch.device, amp: str) -> None:
    if amp == "fp16" and device.type == "cpu":
        raise Skip("fp16 autocast training is a GPU setting (GradScaler); not checked on the CPU")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise Skip(f"torch.cuda.is_bf16_supported() is False on {torch.cuda.get_device_name(device)}")


def read_history(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def check_train(ctx: Context, mode: str) -> str:
    """The tiny preset through lib.experiment.run (data, training, evaluation, files) on the device."""
    from lib import experiment
    from lib.config import RunConfig, presets

    skip_unsupported_amp(ctx.device, TRAIN_MODES[mode]["amp"])
    fields = {**presets()["tiny"], **(QUICK_RUN if ctx.quick else {}), **TRAIN_MODES[mode]}
    fields.update(device=str(ctx.device), out_dir=str(ctx.work / "runs" / mode),
                  data_root=str(ctx.work / "data"), progress=False, tensorboard=False)  # fmt: skip
    cfg = RunConfig(**fields)
    log = io.StringIO()
    figures = not ctx.quick  # matplotlib's figures take most of a quick run's time
    no_figures = mock.patch.object(experiment, "save_run_figures", return_value=[])
    with contextlib.redirect_stdout(log), contextlib.nullcontext() if figures else no_figures:
        row = experiment.run(cfg, keep_examples=1, results_csv=None)
    print(log.getvalue())
    assert f"device: {ctx.device}" in log.getvalue(), f"the run did not report device {ctx.device}"
    history = read_history(Path(row["run_dir"]) / "history.csv")
    losses = [float(r[k]) for r in history for k in ("train_loss", "val_loss")]
    keys = ["seg/mIoU", "seg/pixel_accuracy", *(k for k in row if k.startswith("ood/"))]
    bad = [k for k in keys if not math.isfinite(float(row[k]))]
    assert history and all(map(math.isfinite, losses)), f"non-finite losses {losses}"
    assert len(keys) > 2 and not bad, f"non-finite metrics: {bad or 'no ood metric'}"
    return (f"{len(history)} epoch(s), train loss {losses[0]:.3f}, {len(keys)} finite metrics: mIoU "
            f"{row['seg/mIoU']:.2f}, msp AUROC pooled {row['ood/msp/AUROC/pooled']:.2f} / per-image "
            f"{row['ood/msp/AUROC/per-image']:.2f}"
            + ("" if figures else "; figures skipped (--quick)"))  # fmt: skip


# ============================================================================== sync_bn


def count_modules(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def check_sync_bn(ctx: Context) -> str:
    """prepare_model(sync_bn) in a single-process group, the way torchrun runs it."""
    import torch.distributed as dist

    from lib import distributed

    cuda = ctx.device.type == "cuda"
    backend = "nccl" if cuda and dist.is_nccl_available() else "gloo"
    if cuda and ctx.device.index is not None:
        torch.cuda.set_device(ctx.device)  # (an index-less "cuda" is the current device already)
    init_file = ctx.work / f"process_group_{os.getpid()}"
    init_file.unlink(missing_ok=True)
    dist.init_process_group(backend, init_method=init_file.as_uri(), rank=0, world_size=1)
    try:
        return sync_bn_step(ctx, backend) if cuda else sync_bn_on_cpu(ctx)
    finally:
        gc.collect()  # the DDP wrapper's reducer goes before its process group
        distributed.cleanup()


def sync_bn_model(ctx: Context) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """(model, a BatchNorm copy of it, an input batch), on the device."""
    from network import build_model

    torch.manual_seed(0)
    model = build_model(backbone="mobilenet_v2", head="distance", num_classes=NUM_CLASSES).to(ctx.device)
    size = (32, 32) if ctx.quick else (128, 128)
    return model, copy.deepcopy(model), torch.randn(2, 3, *size, device=ctx.device)


def sync_bn_step(ctx: Context, backend: str) -> str:
    """CUDA: convert + DDP through prepare_model, one training step, compared with BatchNorm."""
    from lib import distributed
    from lib.config import RunConfig
    from lib.optim import prepare_model

    model, reference, x = sync_bn_model(ctx)
    n_bn = count_modules(model, nn.BatchNorm2d)
    device = torch.device("cuda", torch.cuda.current_device())
    with mock.patch.object(distributed, "is_distributed", return_value=True):  # as with N processes
        train_model = prepare_model(model, RunConfig(sync_bn=True), device=device)
    n_sync = count_modules(model, nn.SyncBatchNorm)
    assert n_sync == n_bn > 0 and count_modules(model, nn.BatchNorm2d) == 0, f"{n_sync} of {n_bn} converted"
    train_model.train()
    out, expected = train_model(x), reference.train()(x)
    diff = float((out - expected).abs().max())
    assert diff <= 1e-3 * (1 + float(expected.abs().max())), f"SyncBatchNorm forward differs by {diff:.2e}"
    target = torch.randint(0, NUM_CLASSES, out.shape[:1] + out.shape[2:], device=x.device)
    F.cross_entropy(out, target).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads), "missing or non-finite gradients"
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    kind = type(train_model).__name__
    return (f"{n_sync} BatchNorm -> SyncBatchNorm, {kind} under {backend} (world size 1); train forward "
            f"matches BatchNorm (max |diff| {diff:.1e}), backward + step ok")  # fmt: skip


def sync_bn_on_cpu(ctx: Context) -> str:
    """CPU: torch's SyncBatchNorm trains on GPUs only; check the conversion, an eval forward and that
    prepare_model refuses sync_bn on the CPU with its message."""
    from lib import distributed
    from lib.config import RunConfig
    from lib.optim import prepare_model

    model, reference, x = sync_bn_model(ctx)
    with mock.patch.object(distributed, "is_distributed", return_value=True):
        try:
            prepare_model(copy.deepcopy(model), RunConfig(sync_bn=True), device=ctx.device)
            raise AssertionError("prepare_model accepted sync_bn on the CPU")
        except ValueError as err:
            assert "sync_bn needs CUDA" in str(err), str(err)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    n_sync = count_modules(converted, nn.SyncBatchNorm)
    assert n_sync == count_modules(reference, nn.BatchNorm2d) > 0, f"{n_sync} layers converted"
    with torch.no_grad():
        diff = float((converted.eval()(x) - reference.eval()(x)).abs().max())
    assert diff <= 1e-5, f"eval forward differs by {diff:.2e}"
    return (f"cpu: {n_sync} BatchNorm -> SyncBatchNorm under gloo, eval forward identical; prepare_model "
            f"refuses sync_bn on the CPU as designed (training needs CUDA)")  # fmt: skip


# ============================================================================== bench


def load_script(name: str):
    """A module of scripts/ by file name, imported in this process."""
    spec = importlib.util.spec_from_file_location(f"_gpu_check_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_args(ctx: Context) -> list[str]:
    if ctx.quick:
        return "--backbones mobilenet_v2 --batch 2 --size 32 32 --steps 1 --warmup 1".split()
    if ctx.device.type == "cuda":
        return "--backbones mobilenet_v2 resnet101 --batch 4 --size 512 512 --steps 5 --warmup 2".split()
    return "--backbones mobilenet_v2 --batch 2 --size 128 128 --steps 3 --warmup 1".split()


def native_bf16(device: torch.device) -> bool:
    """bf16 in hardware: on CUDA Ampere and later (torch.cuda.is_bf16_supported() also counts a T4's
    slow emulation); on a CPU, oneDNN's bf16 kernels (else convolutions fall back to slow loops)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_bench(ctx: Context, amp: str) -> str:
    """scripts/bench_train.py --amp-only: fp32 vs `amp` training-step images/s (reported, not judged)."""
    if amp == "fp16" and ctx.device.type == "cpu":
        raise Skip("fp16 autocast is a GPU setting; not timed on the CPU")
    if amp == "bf16" and ctx.device.type == "cuda" and not native_bf16(ctx.device):
        raise Skip(f"{device_name(ctx.device)} has no native bf16: its emulation is not worth timing")
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        code = load_script("bench_train").main(["--device", str(ctx.device), "--amp-only", "--amp", amp,
                                                *bench_args(ctx)])  # fmt: skip
    print(log.getvalue())
    lines = [" ".join(line.split()) for line in log.getvalue().splitlines() if "speed-up" in line]
    assert code == 0 and lines, f"bench_train exited {code} with no speed-up line"
    return " | ".join(lines)


if __name__ == "__main__":
    sys.exit(main())
