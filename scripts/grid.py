"""Run a grid of trainings + evaluations (tuning, ablation) into one CSV; safe to kill and restart.

Examples:
    python scripts/grid.py scripts/grids/tuning.toml              # entropy weight x focal gamma
    python scripts/grid.py scripts/grids/ablation.toml --device cuda --num-workers 8
    python scripts/grid.py scripts/grids/ablation.toml --dry-run  # list the runs still to do
    python scripts/grid.py scripts/grids/ablation.toml --compare head=standard,distance  # + effect table
    python scripts/grid.py scripts/grids/tuning.toml --set epochs=2 --set n_train=40 --out-dir /tmp/try

A grid file (TOML) names a preset, fixed fields ([base]), the fields to cross ([params]) and the
seeds; see lib/grid.py. Each finished run appends one row to <out-dir>/<name>.csv (written
atomically); killed and started again, the runner skips the rows already there and continues
the interrupted run from its last epoch checkpoint. After the last run it writes
<name>_summary.csv (mean and std over seeds) and the figures <name>_aupr.png, <name>_heatmap.png
(two-field grids), <name>_loss.png and the best run's figures (<name>_best_*.png) next to the CSV,
and prints the summary table (and the --compare tables) in Markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.cli import script_parser  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("grid", type=Path, help="grid file (TOML), e.g. scripts/grids/tuning.toml")
    parser.add_argument(
        "--out-dir", default=None, help="where <name>.csv and runs/ go (default: the config's, ckpts)"
    )
    parser.add_argument("--data-root", default=None, help="dataset folder (default: the preset's)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument(
        "--num-workers", type=int, default=None, help="DataLoader workers per run (default: the preset's)"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="replace the grid's seeds, e.g. --seeds 0 1 2"
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="fix a RunConfig field for every run; VALUE in TOML syntax (--set epochs=4, --set amp=bf16; "
        "bare words are strings); repeatable. Runs that already have a row keep it: to redo them with "
        "another training setting, delete their rows and run folders (or use another --out-dir)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tqdm progress bars (default: on)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list the runs that would run, run nothing")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="FIELD=A,B",
        help="after the grid, print what changing FIELD from A to B does to every metric, over the runs that "
        "agree on everything else (e.g. --compare head=standard,distance); repeatable",
    )
    return parser.parse_args(argv)


def parse_setting(text: str) -> tuple[str, object]:
    """``FIELD=VALUE`` -> (field, value): VALUE read as TOML, else kept as a string."""
    field, sep, value = text.partition("=")
    if not sep or not field.strip():
        raise ValueError(f"--set {text!r}: expected FIELD=VALUE, e.g. --set epochs=4")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return field.strip(), parsed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lib.data import DatasetError
    from lib.grid import Grid, GridLockedError, run_grid

    try:
        grid = Grid.load(args.grid)
        base = dict(grid.base)
        base.update(parse_setting(s) for s in args.settings)
        grid = Grid(grid.name, grid.params, base, grid.preset, args.seeds or grid.seeds, grid.protocol)
    except FileNotFoundError:
        print(f"error: grid file {args.grid} not found (see scripts/grids/ for examples)", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    runtime = {
        "data_root": args.data_root,
        "device": args.device,
        "num_workers": args.num_workers,
        "progress": args.progress,
    }
    try:
        comparisons = [parse_comparison(text, grid) for text in args.compare]
        rows = run_grid(
            grid,
            out_dir=args.out_dir,
            dry_run=args.dry_run,
            **{k: v for k, v in runtime.items() if v is not None},
        )
    except (DatasetError, FileNotFoundError, ValueError, GridLockedError) as err:
        print(f"\nerror: {err}", file=sys.stderr)
        return 2
    if rows and not args.dry_run:
        print_report(grid, rows, comparisons)
    return 0


def parse_comparison(text: str, grid) -> tuple[str, object, object]:
    """``FIELD=A,B`` -> (field, A, B), values read like --set ones and checked against the grid's."""
    field, _, values = text.partition("=")
    pair = values.split(",")
    if field not in grid.params or len(pair) != 2:
        raise ValueError(f"--compare {text!r}: expected FIELD=A,B with FIELD among {list(grid.params)}")
    parsed = [parse_setting(f"v={value}")[1] for value in pair]
    for value in parsed:
        if value not in grid.params[field]:
            raise ValueError(
                f"--compare {text!r}: {value!r} is not among the grid's {field} values {grid.params[field]}"
            )
    return field, parsed[0], parsed[1]


def print_report(grid, rows, comparisons) -> None:
    """The summary (mean, std over seeds) and the asked comparisons, as Markdown tables."""
    from lib.grid import paired_difference, summarize

    summary = summarize(grid, rows)
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    scores = [c for c in ok[0] if f"{c}_AUROC" in ok[0]] if ok else []
    columns = [*grid.params, "n", "mIoU", *scores]
    if not ok:
        print(f"\n{grid.name}: every run failed: " + "; ".join(f"{r['run']}: {r['status']}" for r in rows))
        return
    print(f"\n{grid.name}: {len(ok)} runs, {ok[0]['data']}, {grid.protocol} AUPR (%), mean +- std over seeds")
    for r in rows:
        if r not in ok:
            print(f"  left out: {r['run']} ({r['status']})")
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for entry in summary:
        cells = [str(entry[c]) for c in (*grid.params, "n")]
        for c in ("mIoU", *scores):
            std = entry.get(f"{c}_std")
            mean = "" if entry[c] == "" else f"{entry[c]:.2f}"
            cells.append(mean + (f" +- {std:.2f}" if std not in ("", None) else ""))
        print("| " + " | ".join(cells) + " |")
    for field, a, b in comparisons:
        print(f"\n{field}: {b} minus {a}, over runs equal in everything else (percentage points)")
        print("| metric | pairs | mean | min | max | pairs up |\n|---|---|---|---|---|---|")
        for e in paired_difference(grid, rows, field, a, b):
            print(
                f"| {e['metric']} | {e['pairs']} | {e['mean']:+.2f} | {e['min']:+.2f} | {e['max']:+.2f} | {e['up']} |"
            )


if __name__ == "__main__":
    sys.exit(main())
