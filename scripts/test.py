"""Evaluate a training checkpoint or trained weights on one or more test sets: mIoU, AUPR, AUROC, FPR95.

Examples:
    python scripts/test.py --preset streethazards-reference             # the reference's published model
    python scripts/test.py --weights ckpts/pretrained/my_weights.pt --preset streethazards-reference
    python scripts/test.py --checkpoint ckpts/runs/run_3                # the run's best.pt
    python scripts/test.py --checkpoint ckpts/runs/run_3/last.pt --flip --scales 0.75 1.0 1.25
    python scripts/test.py --checkpoint ckpts/runs/run_3 --backbone resnet101 --head distance \\
        --dataset cityscapes                                            # the seed's flags
    python scripts/test.py --checkpoint ckpts/runs/run_5 --test-set roadanomaly --data-root /data/RA
    python scripts/test.py --checkpoint ckpts/runs/run_5 --test-sets cityscapes lostandfound=/data/laf \\
        roadanomaly=/data/RoadAnomaly                                   # several sets in one call

Test sets (--test-set / --test-sets, lib.registry): the training dataset's own test split by default;
any set of the same classes (a StreetHazards model on streethazards or synthetic, a Cityscapes model
on cityscapes, bdd100k) or an anomaly-only set (lostandfound, roadanomaly, and their synthetic-*
stand-ins), each NAME or NAME=ROOT. With a single --test-set NAME other than the training dataset,
--data-root names that set's folder. Each set's metrics are named <set>/... in results.csv and the
json file (the training dataset's own split keeps plain names).

Trained weights (--weights, or a preset that names them such as streethazards-reference): a name
of lib.weights.WEIGHTS (downloaded with gdown on first use into --weights-dir, resumable) or a
state-dict file (bare, VainF's {"model_state": ...}, or module.-prefixed), loaded strictly into the
model that --preset and the flags describe. streethazards-reference downloads the reference
project's weights and the StreetHazards TEST archive alone (--download), evaluates the 1500 test
images at 1280x720 under both protocols (mIoU over 12 classes, pedestrian left out) and prints the
results beside the published ones.

A training checkpoint (--checkpoint): the model is rebuilt from the RunConfig saved in it. Runtime flags (--data-root,
--eval-batch-size, --scores, --miou-exclude, --max-eval-images, --device, --out-dir, ...) change how it
is evaluated; any other flag is checked against the checkpoint and stops with an error when it
differs (so the seed's --backbone/--head/--dataset cityscapes confirm what was trained). As in
scripts/train.py, --dataset is the seed's pretraining source and --data the dataset.

Prints the results table and appends one row (every config field and metric, the checkpoint and
its epoch) to <out-dir>/results.csv; the metrics also go to test_<checkpoint>.json in the run folder.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.cli import script_parser  # noqa: E402
from lib.config import SEED_FLAG_NOTES, SEED_FLAGS, add_config_arguments, presets  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--checkpoint",
        metavar="PATH_OR_RUN_DIR",
        default=None,
        help="a checkpoint written by scripts/train.py, or its run folder (then its best.pt)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(presets()),
        default=None,
        help="with --weights (or without --checkpoint): the settings of the model and data the weights "
        "are evaluated with, which the flags below override (default: streethazards-reference)",
    )
    parser.add_argument(
        "--flip", action="store_true", help="also predict the mirrored image and average the logits"
    )
    # RunConfig.checkpoint (the weights a training run started from) means nothing here.
    flags = {
        **SEED_FLAGS,
        "test_sets": ("--test-sets", "--test-set"),
        "eval_scales": ("--eval-scales", "--scales"),
    }
    notes = {
        **SEED_FLAG_NOTES,
        "test_sets": "With a single --test-set NAME (not the training dataset), --data-root is that set's folder.",
    }
    add_config_arguments(parser, flags=flags, help_notes=notes, exclude=("checkpoint",))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lib.cli import run_reporting_errors

    return run_reporting_errors(
        lambda: evaluate_checkpoint(args) if args.checkpoint else evaluate_weights(args)
    )


def evaluate_weights(args: argparse.Namespace) -> int:
    """Evaluate trained weights with the preset's model and data (`lib.experiment.evaluate_weights`)."""
    from lib.cli import UsageError
    from lib.config import config_from_args
    from lib.experiment import evaluate_weights

    preset = args.preset or "streethazards-reference"
    try:
        cfg = config_from_args(args, base=presets()[preset])
    except ValueError as err:
        raise UsageError(str(err)) from err
    if not cfg.weights:
        raise UsageError(
            f"nothing to evaluate: give --checkpoint RUN_DIR (a training run) or --weights NAME_OR_FILE "
            f"(preset {preset} names no weights)"
        )
    print(f"preset {preset}:\n{cfg.to_json()}")
    evaluate_weights(cfg, flip=args.flip)
    return 0


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    """Rebuild the checkpoint's model and config, evaluate it, print and record the results."""
    from lib.checkpoint import load_checkpoint
    from lib.cli import UsageError
    from lib.config import config_with_overrides, given_fields
    from lib.experiment import evaluate_test_sets, make_model, prepare_data, report_run
    from lib.utils import pick_device, seed_everything

    if args.preset or args.weights:
        raise UsageError("--checkpoint brings its own config: drop --preset and --weights")
    start = time.perf_counter()
    try:
        checkpoint = load_checkpoint(args.checkpoint, name="best.pt")
    except (FileNotFoundError, ValueError) as err:  # the user's --checkpoint
        raise UsageError(str(err)) from err
    path = Path(checkpoint["path"])
    given = {k: v for k, v in given_fields(args).items() if k != "checkpoint"}  # --checkpoint is ours
    given = _test_set_root(given, checkpoint["config"])
    try:
        cfg = config_with_overrides(checkpoint["config"], given, purpose=f"evaluating {path}")
    except ValueError as err:
        raise UsageError(str(err)) from err
    print(f"checkpoint {path} (epoch {checkpoint['epoch']}):\n{cfg.to_json()}")
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    # Evaluation reads (and checks) the test sets alone - and the training split for the sml score.
    prepare_data(cfg, splits=("train", "test") if "sml" in cfg.scores else ("test",))
    model = make_model(cfg, initial_weights=False)
    model.load_state_dict(checkpoint["model"])
    evaluation = evaluate_test_sets(cfg, model.to(device), device=device, flip=args.flip)
    report_run(
        cfg, evaluation, [], run_dir=path.parent, start=start, results_csv="results.csv",
        metrics_file=f"test_{path.stem}.json", figures=False,
        extra_columns={"checkpoint": str(path), "checkpoint_epoch": checkpoint["epoch"],
                       "tta": f"flip={args.flip} scales={' '.join(map(str, cfg.eval_scales))}"},
    )  # fmt: skip
    return 0


def _test_set_root(given: dict, saved: dict) -> dict:
    """``--test-set NAME --data-root ROOT`` (one set, not the training dataset): ROOT is the set's folder,
    and the training dataset's folder stays the checkpoint's."""
    sets = given.get("test_sets") or ()
    if len(sets) == 1 and "=" not in sets[0] and "data_root" in given and sets[0] != saved["dataset"]:
        given = dict(given)
        given["test_sets"] = (f"{sets[0]}={given.pop('data_root')}",)
    return given


if __name__ == "__main__":
    sys.exit(main())
