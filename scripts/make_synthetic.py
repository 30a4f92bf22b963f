"""Generate the synthetic street-scene dataset in the exact StreetHazards layout.

Examples:
    python scripts/make_synthetic.py                                # the demo's dataset
    python scripts/make_synthetic.py --root /tmp/syn --n-train 20 --n-val 4 --n-test 6
    python scripts/make_synthetic.py --height 256 --width 512 --root data/synthetic_256 --workers 4

The defaults are the demo run's settings (lib.config.RunConfig), so a dataset made here is the
one `python scripts/main.py` expects under data/synthetic. An existing complete dataset with the
same settings is kept; one with other settings is an error unless --overwrite is given.
Only the test split contains anomalies (raw annotation value 14).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.cli import script_parser  # noqa: E402
from lib.config import RunConfig  # noqa: E402
from lib.synthetic import generate_streethazards  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = RunConfig()
    height, width = defaults.image_size
    parser = script_parser(__doc__)
    parser.add_argument(
        "--root",
        default="data/synthetic",
        help="output folder; train/ and test/ are written inside it (default: %(default)s)",
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
        help="test images, the only ones with anomalies, >= 0 (default: %(default)s)",
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = generate_streethazards(
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
