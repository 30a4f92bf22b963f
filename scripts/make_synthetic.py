"""Generate the synthetic street scenes, in the StreetHazards layout or as an offline stand-in of a real dataset.

Examples:
    python scripts/make_synthetic.py                                # the demo's dataset
    python scripts/make_synthetic.py --root /tmp/syn --n-train 20 --n-val 4 --n-test 6
    python scripts/make_synthetic.py --height 256 --width 512 --root data/synthetic_256 --workers 4
    python scripts/make_synthetic.py --format cityscapes            # data/synthetic-cityscapes
    python scripts/make_synthetic.py --format lostandfound --n-test 20 --root /tmp/laf

The defaults are the demo run's settings (lib.config.RunConfig), so a dataset made here is the
one `python scripts/main.py` expects under data/synthetic. An existing complete dataset with the
same settings is kept; one with other settings is an error unless --overwrite is given.
Only the test split contains anomalies (in StreetHazards: raw annotation value 14).

Formats (--format; each written exactly as the loader of that dataset in lib.datasets reads it):
  streethazards  train/, test/ and .odgt indexes, raw labels 1..14 (the default; --root data/synthetic)
  cityscapes     leftImg8bit/ + gtFine/ labelIds, train/hamburg and val/frankfurt; no anomalies,
                 no test split (val plays it): --n-test is ignored
  bdd100k        images/10k/ JPEGs + labels/sem_seg/masks/ train ids 0..18, 255 unknown;
                 train and val only: --n-test is ignored
  lostandfound   leftImg8bit/test + gtCoarse/test (0 off-road, 1 road, 2 obstacle): anomaly-only,
                 --n-test scenes that each hold an anomaly; --n-train and --n-val are ignored
  roadanomaly    images/ JPEGs + labels_masks/ (0 in-distribution, 1 anomaly): anomaly-only,
                 --n-test scenes that each hold an anomaly; --n-train and --n-val are ignored
Without --root a stand-in goes to data/synthetic-FORMAT, where its dataset name (synthetic-FORMAT,
lib.registry) looks for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.cli import script_parser  # noqa: E402
from lib.config import RunConfig  # noqa: E402
from lib.synthetic import FORMATS, generate  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = RunConfig()
    height, width = defaults.image_size
    parser = script_parser(__doc__)
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="streethazards",
        help="layout and label encoding to write (see Formats below; default: %(default)s)",
    )
    parser.add_argument(
        "--root",
        default=None,
        help="output folder (default: data/synthetic for streethazards, else data/synthetic-FORMAT)",
    )
    parser.add_argument(
        "--n-train", type=int, default=defaults.n_train, help="training images, >= 1 (default: %(default)s)"
    )
    parser.add_argument(
        "--n-val", type=int, default=defaults.n_val, help="validation images, >= 0 (default: %(default)s)"
    )
    parser.add_argument(
        "--n-test",
        type=int,
        default=defaults.n_test,
        help="test images, the only ones with anomalies, >= 0 (>= 1 for the anomaly-only formats) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--height", type=int, default=height, help="image height in pixels, >= 32 (default: %(default)s)"
    )
    parser.add_argument(
        "--width", type=int, default=width, help="image width in pixels, >= 32 (default: %(default)s)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.data_seed,
        help="generator seed; image i of a split depends only on (seed, split, i) (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that render images (default: min(2, CPU count); 1 = no worker pool)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="regenerate even if --root already holds a dataset (replaces its split folders and indexes)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.root is None:
        args.root = default_root(args.format)
    return args


def default_root(format: str) -> str:
    """Where the dataset name generated in `format` (`lib.registry`) looks for it by default."""
    from lib.registry import REGISTRY

    return next(s.default_root for s in REGISTRY.values() if s.generated == format)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = generate(
            args.format,
            args.root,
            n_train=args.n_train,
            n_val=args.n_val,
            n_test=args.n_test,
            height=args.height,
            width=args.width,
            seed=args.seed,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not summary["generated"]:
        print(f"{args.root} already holds this dataset; nothing to do (use --overwrite to regenerate)")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
