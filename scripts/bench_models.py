"""Parameter count and forward time of every model x head that ``network.build_model`` offers.

Examples:
    python scripts/bench_models.py                       # CPU, 1x3x512x1024, warm-up 1, median of 3
    nice python scripts/bench_models.py --repeats 1      # quicker
    python scripts/bench_models.py --arch unet my_fcn --head standard --height 256 --width 512
    python scripts/bench_models.py --device cuda --repeats 10

Each model is built with a fixed seed and 13 classes (StreetHazards), put in eval mode and timed under
``torch.no_grad()`` on one random image: one untimed warm-up forward, then the median (and minimum) of
``--repeats`` timed forwards (CUDA times are synchronised). "CPU s" is this process's CPU time per
forward summed over its threads: on a shared machine it moves less with other load than wall time
does. DeepLab models use output stride 16 unless --output-stride 8 is given; U-Nets have their own
fixed stride. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lib.cli import script_parser  # noqa: E402
from network import ARCH_NAMES, HEAD_NAMES, build_model, count_parameters, model_grid  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--height", type=int, default=512, help="input height (default: 512)")
    parser.add_argument("--width", type=int, default=1024, help="input width (default: 1024)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward (default: 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per model (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards first (default: 1)")
    parser.add_argument(
        "--arch", nargs="+", choices=ARCH_NAMES, default=list(ARCH_NAMES), help="architectures (default: all)"
    )
    parser.add_argument(
        "--head", nargs="+", choices=HEAD_NAMES, default=list(HEAD_NAMES), help="heads (default: all)"
    )
    parser.add_argument(
        "--output-stride",
        type=int,
        choices=[8, 16],
        default=16,
        help="output stride of the DeepLab models; U-Nets keep their fixed one (default: 16)",
    )
    parser.add_argument("--num-classes", type=int, default=13, help="classes of every model (default: 13)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice, one per core)"
    )
    return parser.parse_args(argv)


def time_forward(
    model: torch.nn.Module, x: torch.Tensor, *, warmup: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Wall seconds and process CPU seconds of each of ``repeats`` forwards after ``warmup`` untimed ones.

    Runs in eval mode under ``torch.no_grad()``; CUDA work is synchronised before each clock read.
    """
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    wall, cpu = [], []
    with torch.no_grad():
        for i in range(warmup + repeats):
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            model(x)
            sync()
            if i >= warmup:
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x = torch.randn(args.batch_size, 3, args.height, args.width, generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"Forward time of {args.batch_size}x3x{args.height}x{args.width} ({where}, torch {torch.__version__}): "
        f"eval, no_grad, {args.warmup} warm-up, median (min) of {args.repeats}; {args.num_classes} classes\n"
    )
    print("| arch | backbone | OS | head | parameters | forward s (median) | min | CPU s (median) |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for arch, backbone in model_grid():
        if arch not in args.arch:
            continue
        for head in args.head:
            torch.manual_seed(0)
            output_stride = args.output_stride if arch.startswith("deeplab") else None
            model = build_model(
                arch=arch,
                backbone=backbone,
                head=head,
                num_classes=args.num_classes,
                output_stride=output_stride,
            )
            model = model.to(device).eval()
            wall, cpu = time_forward(model, x, warmup=args.warmup, repeats=args.repeats)
            print(
                f"| {arch} | {backbone} | {model.config['output_stride']} | {head} | "
                f"{count_parameters(model):,} | {statistics.median(wall):.3f} | {min(wall):.3f} | "
                f"{statistics.median(cpu):.2f} |",
                flush=True,
            )
            del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
