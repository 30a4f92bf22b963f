"""Training-step time of our DeepLabv3+ against segmentation_models_pytorch's, and fp32 against AMP.

One step = forward + cross-entropy + backward + Adam step on random images and labels, the same
batch for every model. The models are timed in turns (ours, smp, ours, smp, ...) so that load from
other processes falls on all of them alike; each gets the median of its timed steps after warm-up.

Ours in two layouts (``network.build_model``, output stride 16):

- ``ours``: the default, VainF's layout (its checkpoints load): dense 3x3 atrous convs in the ASPP
  and one dense 3x3 conv (304 -> 256) in the decoder.
- ``ours-sep``: ``separable_conv=True`` (VainF's ``--separable_conv``): those convs depthwise-
  separable, the layout of smp's default DeepLabV3Plus - the like-for-like comparison with ``smp``.

Peers (both from ``segmentation_models_pytorch``, encoder_weights=None, output stride 16):

- ``smp``: ``smp.DeepLabV3Plus`` with its defaults: depthwise-separable ASPP and decoder convs.
- ``smp-dense``: the same with ``decoder_aspp_separable=False``, closest to ours (VainF's layout,
  which our checkpoints must match): dense 3x3 atrous convs in the ASPP; smp keeps a separable
  3x3 after the ASPP and in the decoder, where ours has one dense 3x3 conv (304 -> 256).

Forward GFLOPs (torch.utils.flop_counter) are printed beside the times: a ratio of times close to
the ratio of FLOPs means the difference is the architecture, not the implementation.

Examples:
    python scripts/bench_train.py                          # CPU: MobileNetV2 + ResNet-101, batch 4, 256x256
    python scripts/bench_train.py --backbones mobilenet_v2 --steps 10 --profile
    python scripts/bench_train.py --device cuda --size 512 512 --batch 8   # GPU: + fp32 vs AMP images/s
    python scripts/bench_train.py --device cuda --amp-only --steps 3        # ours only: fp32 vs AMP (no smp)

Target: ours at most 1.05x the time of smp's DeepLabV3Plus with the same encoder (ours-sep vs smp
is the same architecture; ours vs smp also measures VainF's heavier dense decoder).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.cli import script_parser  # noqa: E402
from network import build_model  # noqa: E402

SMP_ENCODERS = {"mobilenet_v2": "mobilenet_v2", "resnet50": "resnet50", "resnet101": "resnet101"}
NUM_CLASSES = 13


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--backbones", nargs="+", default=["mobilenet_v2", "resnet101"], choices=sorted(SMP_ENCODERS)
    )
    parser.add_argument(
        "--head", default="standard", help="our head (standard = smp's 1x1 conv) (default: standard)"
    )
    parser.add_argument("--batch", type=int, default=4, help="images per step (default: 4)")
    parser.add_argument(
        "--size", type=int, nargs=2, default=None, help="H W (default: 256 256 on CPU, 512 512 on GPU)"
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (default: 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--amp", default=None, choices=["bf16", "fp16"], help="AMP dtype for the fp32-vs-AMP part "
                        "(default: bf16 on CPU; on CUDA bf16 where the GPU has it natively, "
                        "else fp16)")  # fmt: skip
    parser.add_argument(
        "--channels-last", action="store_true", help="channels-last memory format for all models"
    )
    parser.add_argument("--no-smp-dense", action="store_true", help="skip the smp-dense peer")
    parser.add_argument(
        "--amp-only",
        action="store_true",
        help="time only ours in fp32 and under AMP (no smp peers, no FLOPs; smp need not be installed)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="print the top operators of one step of each model"
    )
    return parser.parse_args(argv)


def _native_bf16() -> bool:
    """bf16 in hardware (Ampere and later); torch's default also counts the slow emulation (T4)."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def build_ours(backbone: str, head: str, *, separable: bool = False) -> nn.Module:
    return build_model(
        backbone=backbone, head=head, num_classes=NUM_CLASSES, output_stride=16, separable_conv=separable
    )


def build_smp(backbone: str, *, separable: bool) -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.DeepLabV3Plus(
        encoder_name=SMP_ENCODERS[backbone],
        encoder_weights=None,
        encoder_output_stride=16,
        decoder_aspp_separable=separable,
        classes=NUM_CLASSES,
    )


def make_step(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, amp: torch.dtype | None
) -> Callable[[], None]:
    """A closure running one training step (forward, loss, backward, Adam step)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    device = images.device

    def step() -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def time_in_turns(
    steps: dict[str, Callable[[], None]], *, warmup: int, repeats: int
) -> dict[str, tuple[float, float]]:
    """(median, min) seconds per step of each closure, run in alternation.

    The median is the figure asked for; the minimum is the one to trust on a machine shared with
    other jobs (load only ever adds time).
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(values), min(values)) for name, values in times.items()}


def forward_gflops(model: nn.Module, images: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(images)
    return counter.get_total_flops() / 1e9


def profile_step(name: str, step: Callable[[], None], device: torch.device) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\n--- {name}: top operators of one step ---")
    print(prof.key_averages().table(sort_by=key, row_limit=12, max_name_column_width=40))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    height, width = args.size or ((512, 512) if device.type == "cuda" else (256, 256))
    amp_name = args.amp or ("bf16" if device.type == "cpu" or _native_bf16() else "fp16")
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp_name]
    smp_version = "not used (--amp-only)"
    if not args.amp_only:
        try:
            import segmentation_models_pytorch as smp
        except ImportError:
            print(
                "segmentation_models_pytorch is not installed: pip install segmentation-models-pytorch "
                "(or pass --amp-only)",
                file=sys.stderr,
            )
            return 2
        smp_version = smp.__version__
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, height, width, device=device)
    labels = torch.randint(0, NUM_CLASSES, (args.batch, height, width), device=device)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    print(
        f"torch {torch.__version__}, smp {smp_version}, device {device}"
        + (
            f" ({torch.cuda.get_device_name(device)})"
            if device.type == "cuda"
            else f", {torch.get_num_threads()} threads"
        )
        + f"; batch {args.batch} x {height}x{width}, {args.warmup} warm-up + median of {args.steps} steps, "
        f"training mode, Adam, cross-entropy; our head: {args.head}"
    )
    rows = []
    for backbone in args.backbones:
        models = build_models(backbone, args)
        for model in models.values():
            model.to(device).train()
            if args.channels_last:
                model.to(memory_format=torch.channels_last)
        flops, params = {}, {}
        if not args.amp_only:
            with torch.no_grad():
                shapes = {name: tuple(m(images).shape) for name, m in models.items()}
            assert len(set(shapes.values())) == 1, f"output shapes differ: {shapes}"
            flops = {name: forward_gflops(m, images) for name, m in models.items()}
            params = {name: sum(p.numel() for p in m.parameters()) / 1e6 for name, m in models.items()}
        steps = {name: make_step(m, images, labels, amp=None) for name, m in models.items()}
        steps[f"ours {amp_name}"] = make_step(models["ours"], images, labels, amp=amp)
        seconds = time_in_turns(steps, warmup=args.warmup, repeats=args.steps)
        rows.append((backbone, seconds, flops, params))
        if args.profile:
            for name in models:
                profile_step(f"{backbone} {name}", steps[name], device)
    if not args.amp_only:
        print_peer_tables(rows, batch=args.batch)
    print(f"\nours, fp32 vs {amp_name} autocast ({device.type}, medians):")
    for backbone, seconds, _, _ in rows:
        fp32, mixed = seconds["ours"][0], seconds[f"ours {amp_name}"][0]
        print(
            f"{backbone:<14}fp32 {1000 * fp32:8.1f} ms ({args.batch / fp32:6.1f} img/s)   "
            f"{amp_name} {1000 * mixed:8.1f} ms ({args.batch / mixed:6.1f} img/s)   speed-up {fp32 / mixed:.2f}x"
        )
    return 0


def build_models(backbone: str, args: argparse.Namespace) -> dict[str, nn.Module]:
    """Ours and the smp peers (only ours with ``--amp-only``), on the CPU."""
    models = {"ours": build_ours(backbone, args.head)}
    if args.amp_only:
        return models
    models["ours-sep"] = build_ours(backbone, args.head, separable=True)
    models["smp"] = build_smp(backbone, separable=True)
    if not args.no_smp_dense:
        models["smp-dense"] = build_smp(backbone, separable=False)
    return models


def print_peer_tables(rows: list, *, batch: int) -> None:
    """The per-model table (times, img/s, FLOPs, parameters) and the ours / smp ratio lines."""
    print(
        f"\n{'backbone':<14}{'model':<11}{'median ms':>10}{'vs smp':>8}{'min ms':>10}{'vs smp':>8}"
        f"{'img/s':>7}{'GFLOPs':>8}{'vs smp':>8}{'Mparams':>8}"
    )
    for backbone, seconds, flops, params in rows:
        for name in [n for n in seconds if not n.startswith("ours ")]:
            (median, fastest), (smp_median, smp_fastest) = seconds[name], seconds["smp"]
            print(
                f"{backbone:<14}{name:<11}{1000 * median:>10.1f}{median / smp_median:>7.2f}x"
                f"{1000 * fastest:>10.1f}{fastest / smp_fastest:>7.2f}x{batch / median:>7.1f}"
                f"{flops[name]:>8.1f}{flops[name] / flops['smp']:>7.2f}x{params[name]:>8.2f}"
            )
    print()
    for backbone, seconds, _, _ in rows:
        for name in ("ours-sep", "ours"):
            ratio = seconds[name][0] / seconds["smp"][0]
            verdict = "within" if ratio <= 1.05 else "above"
            print(f"{backbone}: {name} / smp = {ratio:.2f}x median, {seconds[name][1] / seconds['smp'][1]:.2f}x "
                  f"min ({verdict} the 1.05x target by the median)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
