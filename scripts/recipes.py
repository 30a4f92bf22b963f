"""Run every recipe's offline stand-in (NAME-demo or NAME-tiny) in turn into one results table; safe to kill and restart.

Examples:
    python scripts/recipes.py --size demo                    # the README's table (~30 min on 2 CPU cores)
    python scripts/recipes.py --size demo --recipes abet pans
    python scripts/recipes.py --size tiny --out-dir /tmp/try --data-dir /tmp/try/data   # seconds
    python scripts/recipes.py --table                        # print the table of what has run

Each finished recipe appends one row to <out-dir>/recipes.csv (every setting and metric of the run,
written atomically) and the Markdown table is rewritten to <out-dir>/recipes.md; the run folders go
to <out-dir>/recipes/runs/NAME-SIZE. Killed and started again, the runner skips the recipes that
have a row and continues the interrupted one from its last epoch checkpoint. To redo a recipe,
delete its row and its run folder. The numbers are synthetic-data results (generated scenes in each
real dataset's format), not results on the real datasets; the table says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.cli import script_parser  # noqa: E402
from lib.recipes import RECIPES  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--size",
        choices=("demo", "tiny"),
        default="demo",
        help="demo: each recipe's NAME-demo preset (minutes on 2 CPU cores); tiny: NAME-tiny (seconds) "
        "(default: demo)",
    )
    parser.add_argument(
        "--recipes",
        nargs="+",
        choices=list(RECIPES),
        default=None,
        metavar="NAME",
        help=f"run only these recipes, in this order (default: all: {' '.join(RECIPES)})",
    )
    parser.add_argument(
        "--out-dir",
        default="ckpts",
        help="where recipes.csv, recipes.md and recipes/runs/ go (default: ckpts)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="one folder for every generated stand-in (<data-dir>/<name>); default: each one's folder "
        "under data/",
    )
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument(
        "--num-workers", type=int, default=None, help="DataLoader workers per run (default: the preset's)"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="tqdm progress bars (default: on)",
    )
    parser.add_argument(
        "--table", action="store_true", help="print the Markdown table of <out-dir>/recipes.csv; run nothing"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lib.cli import run_reporting_errors

    def body() -> int:
        from lib.grid import GridLockedError, read_rows
        from lib.recipe_results import RESULTS_CSV, markdown_table, run_recipes

        if args.table:
            rows = [r for r in read_rows(Path(args.out_dir) / RESULTS_CSV) if r.get("recipe") in RECIPES]
            if not rows:
                print(f"error: {Path(args.out_dir) / RESULTS_CSV} holds no recipe rows yet", file=sys.stderr)
                return 2
            print(markdown_table(rows))
            return 0
        overrides = {"device": args.device, "num_workers": args.num_workers, "progress": args.progress}
        try:
            run_recipes(
                args.size, args.recipes, out_dir=args.out_dir, data_dir=args.data_dir,
                **{k: v for k, v in overrides.items() if v is not None},
            )  # fmt: skip
        except GridLockedError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0

    return run_reporting_errors(body)


if __name__ == "__main__":
    sys.exit(main())
