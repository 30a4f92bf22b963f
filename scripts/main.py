"""Train DeepLabv3+ and evaluate segmentation + anomaly detection in one run.

Examples:
    python scripts/main.py                                  # the demo on synthetic data
    python scripts/main.py --preset tiny                    # a few seconds, smoke test
    python scripts/main.py --preset streethazards           # the reference recipe on StreetHazards (GPU)
    python scripts/main.py --preset streethazards-reference # no training: the reference's weights, evaluated
    python scripts/main.py --head standard --loss ce --epochs 20
    python scripts/main.py --resume ckpts/runs/run_3        # finish an interrupted run, then evaluate
    torchrun --nproc_per_node=2 scripts/main.py --preset streethazards   # train on 2 GPUs, test on one

Every flag below is a field of lib.config.RunConfig; flags override the preset. Here --dataset is
the training data (scripts/train.py and scripts/test.py take the seed's flags, where --dataset
names the pretraining source and --data the training data).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.cli import script_parser  # noqa: E402
from lib.config import add_config_arguments, presets  # noqa: E402
from lib.recipes import preset_help  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--preset",
        choices=sorted(presets()),
        default="demo",
        help=preset_help() + " (default: demo)",
    )
    parser.add_argument(
        "--resume",
        metavar="PATH_OR_RUN_DIR",
        default=None,
        help="continue an interrupted run (a checkpoint file, a run folder, or 'latest': the run in "
        "--out-dir checkpointed last) with its own config, then evaluate it; only runtime flags "
        "(folders, epochs, workers, device, evaluation) may change",
    )
    add_config_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lib import distributed
    from lib.cli import run_config, run_reporting_errors
    from lib.experiment import run

    distributed.init_from_env(device=args.device or "auto")

    def body() -> int:
        checkpoint, cfg = run_config(args, preset=args.preset)
        if distributed.is_main():
            source = f"resuming {checkpoint['path']}" if checkpoint else f"preset {args.preset}"
            print(f"{source}:\n{cfg.to_json()}")
        run(cfg, resume=checkpoint)
        return 0

    return run_reporting_errors(body)


if __name__ == "__main__":
    sys.exit(main())
