"""Train DeepLabv3+ for segmentation with anomaly scores, in one process or several (torchrun).

Examples:
    python scripts/train.py --backbone resnet101 --head distance --dataset cityscapes \\
        --loss fl+h --gamma 0.1 --gamma_focal 2.0        # the reference's command line: its recipe
    python scripts/train.py                              # the same: the streethazards preset
    python scripts/train.py --preset tiny                # seconds, synthetic data
    python scripts/train.py --preset demo                # the demo's training, synthetic data
    python scripts/train.py --entropy-term true-class-rows   # the reference code's entropy term
    torchrun --nproc_per_node=4 scripts/train.py --sync-bn --batch-size 4   # 4 GPUs, global batch 16
    python scripts/train.py --resume ckpts/runs/run_3                       # continue where it stopped
    python scripts/train.py --resume ckpts/runs/run_3 --epochs 80           # ... longer (plateau schedule)

Without --preset this is the streethazards preset, the StreetHazards reference project's recipe
(lib.config.REFERENCE_RECIPE): DeepLabv3+ ResNet-101 OS16, distance head, Cityscapes weights
(downloaded on first use), Adam with backbone lr 1e-5 / head lr 1e-4, weight decay 1e-4, plateau
schedule, 50 epochs, batch 16, 512x512 crops, focal loss gamma 2 + 0.1 entropy, amp=auto (fp16 on a
T4), mIoU without pedestrian; the dataset is downloaded into data/streethazards when missing.
The seed's flags work as they did: --dataset names the PRETRAINING source of the DeepLabv3+
weights (cityscapes or voc, same as --pretrained-on; the known file of lib.weights, downloaded on
first use into --weights-dir, or the file given with --checkpoint), while --data picks the training data (synthetic or streethazards);
--gamma is the entropy weight (--entropy-weight) and --gamma_focal the focal-loss gamma.

Every run gets its own folder, <out-dir>/runs/run_N (never reused): config.json, last.pt (every
epoch), best.pt (best validation loss), history.csv, and tensorboard/ when tensorboard is
installed. Each checkpoint holds the whole RunConfig, the optimizer, schedule, scaler and random
states, so --resume continues exactly; on --resume only the runtime flags (data and output
folders, epochs, early stopping, workers, device, compile, evaluation, logging) may change.
Evaluate a run with: python scripts/test.py --checkpoint <out-dir>/runs/run_N
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib import distributed  # noqa: E402
from lib.cli import script_parser  # noqa: E402
from lib.config import (  # noqa: E402
    SEED_FLAG_NOTES,
    SEED_FLAGS,
    add_config_arguments,
    presets,
)
from lib.recipes import preset_help  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--preset",
        choices=sorted(presets()),
        default=None,
        help=preset_help() + " (default: streethazards; ignored with --resume)",
    )
    parser.add_argument(
        "--resume",
        metavar="PATH_OR_RUN_DIR",
        default=None,
        help="continue an interrupted run from a checkpoint file, a run folder (its last.pt) or 'latest' "
        "(the run in --out-dir checkpointed last), in that folder, with the checkpoint's config",
    )
    add_config_arguments(parser, flags=SEED_FLAGS, help_notes=SEED_FLAG_NOTES)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lib.cli import UsageError, run_config, run_reporting_errors
    from lib.experiment import train

    device = distributed.init_from_env(device=args.device or "auto")

    def body() -> int:
        preset = args.preset or "streethazards"
        checkpoint, cfg = run_config(args, preset=preset)
        if cfg.weights:
            raise UsageError(
                f"weights={cfg.weights!r} is evaluation only: run python scripts/test.py --preset {preset}"
                + (f" --weights {cfg.weights}" if args.weights else "")
            )
        if distributed.is_main():
            source = f"resuming {checkpoint['path']}" if checkpoint else f"preset {preset}"
            print(f"{source}:\n{cfg.to_json()}")
        # One process: cfg.device decides (it may come from the checkpoint); torchrun: this rank's.
        trained = train(cfg, resume=checkpoint, device=device if distributed.is_distributed() else None)
        if distributed.is_main():
            best = min(trained.history, key=lambda row: row["val_loss"])
            print(
                f"\nbest validation loss {best['val_loss']:.4f} (mIoU {best['val_mIoU']:.2f}) at epoch "
                f"{best['epoch']}; run folder: {trained.run_dir}\n"
                f"evaluate it with: python scripts/test.py --checkpoint {trained.run_dir}"
            )
        return 0

    return run_reporting_errors(body)


if __name__ == "__main__":
    sys.exit(main())
