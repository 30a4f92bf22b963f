"""Export a trained model and its anomaly score to ONNX as one graph, then check it with onnxruntime.

Examples:
    python scripts/export_onnx.py --checkpoint ckpts/runs/run_0/best.pt --score entropy \\
        --out model.onnx --height 128 --width 256
    python scripts/export_onnx.py --checkpoint ckpts/runs/run_3/best.pt --score abet --height 720 --width 1280

The graph takes one uint8 RGB image batch "image" (B, 3, H, W), 0..255, channels first, and normalises
it itself (ImageNet mean/std, as training did); --input float expects an already normalised float32
batch instead. It returns "class_map" (B, H, W) int64, the argmax over the known classes, and
"anomaly_map" (B, H, W) float32, the chosen score (higher = more anomalous). H and W are fixed at export;
the batch is 1 unless --dynamic-batch is given. See lib/export.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.cli import script_parser  # noqa: E402
from lib.scores import ALL_SCORES  # noqa: E402
from network import ARCH_NAMES, BACKBONE_NAMES, HEAD_NAMES  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="training checkpoint: a run's best.pt (a dict with the 'model' state dict and the run "
        "'config'), or any state dict if --backbone and --head name the model",
    )
    parser.add_argument(
        "--score",
        default="entropy",
        choices=[s for s in ALL_SCORES if s != "sml"],
        help="anomaly score computed inside the graph (lib.scores; 'abet' needs an abet-head model to "
        "differ from energy; 'sml' is not offered: it needs training-split statistics) (default: entropy)",
    )
    parser.add_argument("--out", default="model.onnx", help="ONNX file to write (default: model.onnx)")
    parser.add_argument(
        "--height",
        type=int,
        default=None,
        help="input height in pixels, fixed in the graph (default: the run config's image_size)",
    )
    parser.add_argument(
        "--width",
        type=int,
        default=None,
        help="input width in pixels, fixed in the graph (default: the run config's image_size)",
    )
    parser.add_argument(
        "--input",
        dest="input_format",
        default="uint8",
        choices=["uint8", "float"],
        help="graph input: uint8 RGB 0..255, normalised inside the graph, or float32 already "
        "ImageNet-normalised (default: uint8)",
    )
    parser.add_argument(
        "--dynamic-batch",
        action="store_true",
        help="let the batch size vary at run time (the export takes about twice as long); "
        "otherwise it is fixed to --batch-size",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="fixed batch size of the graph without --dynamic-batch (default: 1)",
    )
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset version (default: the exporter's default)"
    )
    parser.add_argument(
        "--arch",
        choices=ARCH_NAMES,
        default=None,
        help="model architecture, overriding the checkpoint config (default: the config's, else deeplabv3plus)",
    )
    parser.add_argument(
        "--backbone",
        choices=BACKBONE_NAMES,
        default=None,
        help="backbone, overriding the checkpoint config (required for a checkpoint without config)",
    )
    parser.add_argument(
        "--head",
        choices=HEAD_NAMES,
        default=None,
        help="head, overriding the checkpoint config (required for a checkpoint without config)",
    )
    parser.add_argument(
        "--output-stride",
        type=int,
        default=None,
        help="DeepLab output stride (16 or 8), overriding the checkpoint config",
    )
    parser.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="skip the check that onnxruntime (CPU) reproduces PyTorch's outputs on a random image",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lib.export import check_onnx, example_input, export_onnx, load_trained_model
    from network import count_parameters, read_checkpoint

    try:
        raw = read_checkpoint(args.checkpoint)
        model = load_trained_model(
            raw, arch=args.arch, backbone=args.backbone, head=args.head, output_stride=args.output_stride
        )
    except (OSError, ValueError, RuntimeError) as error:  # no file, no model named, weights do not fit
        print(f"error: {error}", file=sys.stderr)
        return 2
    height, width = args.height, args.width
    if height is None or width is None:
        size = (raw.get("config") or {}).get("image_size") if isinstance(raw, dict) else None
        if not size:
            print(
                "error: pass --height and --width (the checkpoint config has no image_size)", file=sys.stderr
            )
            return 2
        height = height or int(size[0])
        width = width or int(size[1])
    cfg = model.config
    print(
        f"model: {cfg['arch']} {cfg['backbone']} {cfg['head']} head, {cfg['num_classes']} classes, "
        f"output stride {cfg['output_stride']}, {count_parameters(model):,} parameters"
    )
    start = time.perf_counter()
    path = export_onnx(
        model,
        args.out,
        height=height,
        width=width,
        score=args.score,
        input_format=args.input_format,
        dynamic_batch=args.dynamic_batch,
        batch_size=args.batch_size,
        opset=args.opset,
    )
    size_mb = path.stat().st_size / 2**20
    print(
        f"wrote {path} ({size_mb:.1f} MiB) in {time.perf_counter() - start:.1f} s: input 'image' "
        f"{args.input_format} ({'B' if args.dynamic_batch else args.batch_size}, 3, {height}, {width}) -> "
        f"'class_map' int64, 'anomaly_map' float32 ({args.score})"
    )
    if args.check:
        batch = 2 if args.dynamic_batch else args.batch_size
        image = example_input(batch, height, width, args.input_format, seed=1)
        check = check_onnx(path, model, image, score=args.score, input_format=args.input_format)
        print(f"onnxruntime vs PyTorch on a random image: {check}")
        if not check.ok:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
