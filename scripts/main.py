"""Train DeepLabv3+ and evaluate segmentation + anomaly detection in one run.

Examples:
    python scripts/main.py                                  # the demo on synthetic data
    python scripts/main.py --preset tiny                    # a few seconds, smoke test
    python scripts/main.py --preset streethazards --data-root data/streethazards --device cuda
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
from lib.config import add_config_arguments, config_from_args, presets  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--preset",
        choices=sorted(presets()),
        default="demo",
        help="starting settings: demo (synthetic, ~5 min on 2 CPU cores), tiny (seconds), "
        "streethazards (the real dataset, GPU) (default: demo)",
    )
    parser.add_argument(
        "--resume",
        metavar="PATH_OR_RUN_DIR",
        default=None,
        help="continue an interrupted run (checkpoint file or run folder) with its own config, then "
        "evaluate it; only runtime flags (folders, epochs, workers, device, evaluation) may change",
    )
    add_config_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lib import distributed
    from lib.config import config_with_overrides, given_fields
    from lib.data import DatasetError
    from lib.experiment import run
    from lib.train import load_checkpoint

    distributed.init_from_env(device=args.device or "auto")
    try:
        try:
            if args.resume:
                checkpoint = load_checkpoint(args.resume)
                purpose = f"--resume {checkpoint['path']}"
                cfg = config_with_overrides(checkpoint["config"], given_fields(args), purpose=purpose)
            else:
                checkpoint, cfg = None, config_from_args(args, base=presets()[args.preset])
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if distributed.is_main():
            print(
                f"{'resuming ' + checkpoint['path'] if checkpoint else 'preset ' + args.preset}:\n{cfg.to_json()}"
            )
        run(cfg, resume=checkpoint)
    except DatasetError as err:
        print(f"\ndataset error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        return 2
    finally:
        distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
