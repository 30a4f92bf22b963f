"""The recipes' results table: every recipe's demo (or tiny) preset run in turn, one row each in
``<out_dir>/recipes.csv``, and the Markdown table the README shows in ``<out_dir>/recipes.md``.

``python scripts/recipes.py --size demo`` (or `run_recipes` from a notebook) runs what is missing:

- a recipe with a row in the CSV is skipped;
- one whose run folder (``<out_dir>/recipes/runs/NAME-SIZE``) holds ``last.pt`` continues from it
  (a killed runner loses at most the epoch in progress); a folder without one starts over;
- a lock file keeps a second runner off the same table.

Every number is a synthetic-data result: the recipes' methods on the project's generated scenes
written in each real dataset's format (`lib.registry`), not numbers of the real datasets; the table
says so, names the commit each run ran at and sets the published number of the real setting beside
it only for scale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lib.config import RunConfig
from lib.grid import clear_unstarted, read_rows, runner_lock
from lib.recipes import RECIPES, preset_settings
from lib.registry import resolve_test_sets
from lib.utils import append_csv_row, atomic_write_bytes

#: The offline sizes a table is made of (``NAME-demo`` or ``NAME-tiny`` presets).
SIZES = ("demo", "tiny")
RESULTS_CSV = "recipes.csv"
TABLE_MD = "recipes.md"


def recipe_config(name: str, size: str, *, out_dir: str | Path, data_dir: str | Path | None = None,
                  **overrides: Any) -> RunConfig:  # fmt: skip
    """The config of recipe `name` at `size`, writing under ``<out_dir>/recipes``.

    Args:
        data_dir: a folder for every stand-in the recipe reads (``<data_dir>/<name>``); default: each
            one's usual folder under ``data/``.
        overrides: other RunConfig fields (runtime ones: device, num_workers, progress, ...).

    Raises:
        ValueError: unknown recipe or size (the message lists the valid ones).
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; valid sizes: {', '.join(SIZES)}")
    settings = preset_settings(f"{name}-{size}")
    settings.update(out_dir=str(Path(out_dir) / "recipes"), run_name=f"{name}-{size}", **overrides)
    if data_dir is not None:
        cfg = RunConfig(**settings)
        settings["data_root"] = str(Path(data_dir) / cfg.dataset)
        if cfg.test_sets:
            settings["test_sets"] = tuple(t.name if not t.prefix else f"{t.name}={Path(data_dir) / t.name}"
                                          for t in cfg.plan.test_sets)  # fmt: skip
    return RunConfig(**settings)


def run_recipes(
    size: str = "demo",
    names: Sequence[str] | None = None,
    *,
    out_dir: str | Path = "ckpts",
    data_dir: str | Path | None = None,
    keep_examples: int = 2,
    **overrides: Any,
) -> list[dict[str, str]]:
    """Run every recipe of `names` (default: all five) at `size` that has no row yet; write the table.

    Args:
        size: ``demo`` (CPU minutes each) or ``tiny`` (seconds).
        out_dir: ``recipes.csv`` and ``recipes.md`` go here, the run folders to ``recipes/runs/``.
        data_dir, overrides: as in `recipe_config`.
        keep_examples: qualitative panels written per run.

    Returns:
        The CSV's rows of these recipes at this size, in recipe order.
    """
    from lib.experiment import run  # the training stack is imported only when recipes run

    names = list(names or RECIPES)
    configs = {n: recipe_config(n, size, out_dir=out_dir, data_dir=data_dir, **overrides) for n in names}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / RESULTS_CSV
    with runner_lock(out / ".recipes.lock", what="the recipe table"):
        done = {r["run"] for r in read_rows(csv_path)}
        todo = [n for n in names if configs[n].run_name not in done]
        print(
            f"recipes ({size}): {len(names)}, {len(names) - len(todo)} done, {len(todo)} to run -> {csv_path}"
        )
        for i, name in enumerate(todo, start=1):
            cfg = configs[name]
            run_dir = Path(cfg.out_dir) / "runs" / cfg.run_name
            resume = run_dir if (run_dir / "last.pt").is_file() else None
            print(
                f"\n[{i}/{len(todo)}] {cfg.run_name} ({'continuing from its last checkpoint' if resume else 'new'})"
            )
            clear_unstarted(run_dir)
            row = run(cfg, keep_examples=keep_examples, resume=resume, results_csv=None)
            row = {"recipe": name, "size": size, "resumed": resume is not None,
                   **{k: v for k, v in row.items() if k != "run_dir"}}  # fmt: skip
            append_csv_row(csv_path, row)
        every = [r for r in read_rows(csv_path) if r.get("recipe") in RECIPES]
        rows = {r["run"]: r for r in every}
        result = [rows[configs[n].run_name] for n in names if configs[n].run_name in rows]
        atomic_write_bytes(out / TABLE_MD, (markdown_table(every) + "\n").encode())
    print(f"\n{markdown_table(result)}\n\ntable: {out / TABLE_MD}   rows: {csv_path}")
    return result


def _number(row: Mapping[str, str], key: str) -> float | None:
    value = row.get(key, "")
    try:
        number = float(value)
    except ValueError:
        return None
    return None if math.isnan(number) else number


def measured_cell(row: Mapping[str, str]) -> str:
    """What a row measured, per test set: mIoU and pixel accuracy where it has class labels, the recipe's first anomaly
    score (AUPR / AUROC / FPR95 under its first protocol) where it has anomaly labels."""
    scores, protocols = row["scores"].split(), row["protocols"].split()
    parts = []
    for t in resolve_test_sets(row["dataset"], row["data_root"], tuple(row["test_sets"].split())):
        values = []
        if (miou := _number(row, f"{t.prefix}seg/mIoU")) is not None:
            values.append(f"mIoU {miou:.1f}")
        if (accuracy := _number(row, f"{t.prefix}seg/pixel_accuracy")) is not None:
            values.append(f"pixel accuracy {accuracy:.1f}")
        if scores and t.spec.anomaly_id is not None:
            keys = [f"{t.prefix}ood/{scores[0]}/{m}/{protocols[0]}" for m in ("AUPR", "AUROC", "FPR95")]
            numbers = [_number(row, k) for k in keys]
            if None not in numbers:
                values.append(f"{scores[0]} AUPR / AUROC / FPR95 {' / '.join(f'{n:.1f}' for n in numbers)} "
                              f"({protocols[0]})")  # fmt: skip
            if (share := _number(row, f"{t.prefix}ood/anomaly_pixel_share")) is not None:
                values.append(f"chance AUPR {share:.1f}")
        if values:
            parts.append(f"{t.label}: {', '.join(values)}")
    return "; ".join(parts) or "-"


def markdown_table(rows: Sequence[Mapping[str, str]]) -> str:
    """The README's table of the recipe rows (synthetic-data results, labelled so)."""
    lines = [
        "Synthetic-data results: each recipe's method on the project's generated scenes in its real "
        "dataset's format - not numbers of the real datasets; the published column is the real "
        "setting's, for scale only.",
        "",
        "| recipe | command | data (generated stand-in) | what is measured | stand-in result (%) | wall time "
        "| commit | the real setting published |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        recipe = RECIPES[row["recipe"]]
        wall = float(row["wall_seconds"])
        resumed = " (resumed)" if row.get("resumed") == "True" else ""
        lines.append(
            f"| {recipe.name} | `python scripts/main.py --preset {row['run']}` | {row['data']} | "
            f"{recipe.measures} | {measured_cell(row)} | {wall / 60:.1f} min{resumed} | {row['commit']} | "
            f"{recipe.published} |"
        )
    return "\n".join(lines)


__all__ = [
    "RESULTS_CSV",
    "SIZES",
    "TABLE_MD",
    "markdown_table",
    "measured_cell",
    "recipe_config",
    "run_recipes",
]
