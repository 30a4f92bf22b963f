"""Grids of runs: every combination of a few config fields, each a normal run, one CSV row each.

The tuning and ablation studies are grids: ``scripts/grids/tuning.toml`` crosses the entropy
weight with the focal gamma, ``scripts/grids/ablation.toml`` crosses loss, class weights and head.
A grid is a small TOML file (or a `Grid` built in a notebook):

.. code-block:: toml

    name = "tuning"               # rows go to <out_dir>/tuning.csv, runs to <out_dir>/runs/tuning_*
    preset = "grid"               # lib.config.presets(); [base] then overrides it
    seeds = [0, 1]                # every combination once per seed (mean and std in the summary)
    protocol = "pooled"           # which anomaly protocol fills the score columns

    [base]                        # fixed RunConfig fields
    loss = "fl+h"

    [params]                      # RunConfig field -> values to cross
    entropy_weight = [1.0, 0.1]
    gamma_focal = [1.0, 2.0]

`run_grid` runs the combinations that have no row yet, in order, and appends each finished run's
row to the CSV in one atomic write (`lib.utils.append_csv_row`), so the file is never half
written. Killed at any moment, it is simply started again: combinations with a row are skipped,
the interrupted one continues from its last epoch checkpoint (``last.pt``; a run killed before its
first checkpoint starts over), and the rest follow. One runner per CSV at a time.

A run whose loss turns NaN gets a row too, with ``status`` "failed: ..." and no metrics (on a CPU
it would fail again on a re-run; on a GPU most likely, see ``RunConfig.deterministic``), and the grid
goes on. Each row carries ``config_id``, a hash of every
setting that shapes the result: a re-run whose settings changed stops with a message instead of
mixing old and new rows. A lock file (``.<name>.lock``) keeps a second runner off the same grid.
``wall_seconds`` of a resumed run counts the time since it was resumed.

Rows keep the StreetHazards reference project's columns (mIoU, minIoU, maxIoU, the AUPR of each
score under its short name - msp, maxlog, entropy, energy -, loss, entropy_weight, gamma_focal,
class_weights, backbone, dataset = the pretraining source, head) and add AUROC and FPR95 per score
(``<score>_AUROC``, ``<score>_FPR95``), the protocol, the data evaluated, seed, epochs, wall time,
commit, and every other field the grid varies. Values are percentages.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from lib.config import (
    ADDED_LATER_DEFAULTS,
    GRID_NEUTRAL_FIELDS,
    RUNTIME_FIELDS,
    SYNTHETIC_DATA_FIELDS,
    RunConfig,
    presets,
)
from lib.figures import plot_loss_curves, plot_setting_bars, plot_two_field_heatmaps
from lib.utils import append_csv_row, atomic_write_bytes, write_csv

#: Short column names of the reference project's CSVs (other scores keep their own name).
SCORE_COLUMNS = {"maxlogit": "maxlog"}
#: Synthetic-data generation fields: a grid cannot vary them over one shared data_root.
#: Per-run figures copied next to the CSV for the grid's best run.
BEST_RUN_FIGURES = ("example_0", "curves", "histograms", "confusion", "iou_vs_share", "class_distribution")
#: Config fields that are columns of every row, in the reference project's order.
CONFIG_COLUMNS = ("loss", "entropy_weight", "gamma_focal", "class_weights", "backbone", "dataset", "head")


def score_column(score: str) -> str:
    """CSV column of a score's AUPR: ``maxlogit`` -> ``maxlog``, others unchanged."""
    return SCORE_COLUMNS.get(score, score)


@dataclass(frozen=True)
class GridRun:
    """One combination of a grid, for one seed."""

    name: str
    values: dict[str, Any]
    seed: int
    config: RunConfig


@dataclass
class Grid:
    """A grid of runs over `RunConfig` fields.

    Attributes:
        name: the CSV is ``<out_dir>/<name>.csv``; run folders are ``runs/<name>_<values>_seed<s>``.
        params: RunConfig field -> list of values; every combination is run (in the order of the
            lists, the last field varying fastest).
        base: fixed RunConfig fields on top of the preset.
        preset: a name from `lib.config.presets` (None: the RunConfig defaults).
        seeds: training seeds; each combination is run once per seed.
        protocol: anomaly protocol of the score columns: ``pooled`` or ``per-image``.
    """

    name: str
    params: dict[str, list[Any]]
    base: dict[str, Any] = field(default_factory=dict)
    preset: str | None = "grid"
    seeds: Sequence[int] = (0,)
    protocol: str = "pooled"

    def __post_init__(self) -> None:
        self.params = {k: list(v) if isinstance(v, list | tuple) else [v] for k, v in self.params.items()}
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ValueError(f"grid name {self.name!r} must be letters, digits, '-' or '_' (it names files)")
        if self.preset is not None and self.preset not in presets():
            raise ValueError(
                f"grid {self.name}: preset {self.preset!r} is unknown; choose one of {sorted(presets())}"
            )
        if self.protocol not in ("pooled", "per-image"):
            raise ValueError(
                f"grid {self.name}: protocol must be 'pooled' or 'per-image', got {self.protocol!r}"
            )
        if not self.seeds:
            raise ValueError(f"grid {self.name}: give at least one seed")
        fields = set(RunConfig.__dataclass_fields__)
        for key in (*self.params, *self.base):
            if key not in fields:
                raise ValueError(
                    f"grid {self.name}: {key!r} is not a RunConfig field; valid: {sorted(fields)}"
                )
        for key in ("seed", "run_name"):
            if key in self.params or key in self.base:
                raise ValueError(f"grid {self.name}: {key!r} is set by the runner (use 'seeds' for seeds)")
        empty = [k for k, v in self.params.items() if not v]
        if empty:
            raise ValueError(f"grid {self.name}: parameter(s) {empty} have no values")
        both = sorted(set(self.params) & set(self.base))
        if both:
            raise ValueError(f"grid {self.name}: {both} are both fixed ([base], --set) and varied ([params])")
        data = sorted(set(self.params) & set(SYNTHETIC_DATA_FIELDS))
        if data:
            raise ValueError(
                f"grid {self.name}: {data} change the generated data, which every run shares (data_root); "
                "run one grid per data setting, each with its own data_root"
            )
        names = [item.name for item in self.runs()]  # every config must be valid: fail now, not in hours
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"grid {self.name}: combinations share a run name (repeated values?): {repeated[:3]}"
            )

    @classmethod
    def load(cls, path: str | Path) -> Grid:
        """Read a grid from a TOML file (see the module docstring).

        Raises:
            ValueError: unknown keys, or a value RunConfig rejects; names the file.
        """
        path = Path(path)
        try:
            spec = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path} is not valid TOML: {err}") from err
        unknown = sorted(set(spec) - {"name", "params", "base", "preset", "seeds", "protocol"})
        if unknown:
            raise ValueError(
                f"{path}: unknown key(s) {unknown}; a grid has name, preset, seeds, protocol, [base], [params]"
            )
        spec.setdefault("name", path.stem)
        if "params" not in spec:
            raise ValueError(f"{path}: a grid needs a [params] table (RunConfig field = [values])")
        try:
            return cls(**spec)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from err

    def runs(self, **overrides: Any) -> list[GridRun]:
        """Every combination x seed, as configs.

        Args:
            overrides: RunConfig fields applied last (e.g. ``out_dir``, ``device``, ``progress``).
        """
        keys = list(self.params)
        base = {**(presets()[self.preset] if self.preset else {}), **self.base, **overrides}
        out = []
        for combo in itertools.product(*(self.params[k] for k in keys)):
            values = dict(zip(keys, combo, strict=True))
            for seed in self.seeds:
                name = "_".join([self.name, *(f"{k}={_slug(v)}" for k, v in values.items()), f"seed{seed}"])
                cfg = RunConfig.from_dict({**base, **values, "seed": seed, "run_name": name})
                out.append(GridRun(name, values, seed, cfg))
        return out


def cell(value: Any) -> str:
    """How a config value reads in a CSV cell: lists space-separated, None empty, else ``str``."""
    if value is None:
        return ""
    return " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _slug(value: Any) -> str:
    return "".join(c if c.isalnum() or c in ".+-" else "-" for c in cell(value) or "None")


def config_id(cfg: RunConfig, protocol: str, *, training_only: bool = False) -> str:
    """Short hash of every setting that shapes a run's result (and the protocol of its row).

    Args:
        training_only: hash only what a resumed run must keep (not `lib.config.RUNTIME_FIELDS`:
            e.g. more epochs may be asked of an interrupted run).
    """
    import hashlib
    import json

    neutral = set(GRID_NEUTRAL_FIELDS) | set(RUNTIME_FIELDS) if training_only else set(GRID_NEUTRAL_FIELDS)
    values = {
        k: v
        for k, v in cfg.to_dict().items()
        if k not in neutral and not (k in ADDED_LATER_DEFAULTS and v == ADDED_LATER_DEFAULTS[k])
    }
    if "miou_exclude" in values and values["miou_exclude"] is None:
        # None means the dataset's own protocol (lib.registry): hash what that is, as rows written
        # when the field's default was the explicit () did
        values["miou_exclude"] = cfg.plan.dataset.miou_exclude
    text = json.dumps({**values, "protocol": protocol}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def grid_row(grid: Grid, item: GridRun, row: Mapping[str, Any]) -> dict[str, Any]:
    """The CSV row of one finished run, from `lib.experiment.run`'s results row."""
    cfg, p = item.config, grid.protocol
    out: dict[str, Any] = {
        "run": item.name,
        "mIoU": row["seg/mIoU"],
        "minIoU": row["seg/minIoU"],
        "maxIoU": row["seg/maxIoU"],
    }
    for score in cfg.scores:
        out[score_column(score)] = row[f"ood/{score}/AUPR/{p}"]
    for score in cfg.scores:
        out[f"{score_column(score)}_AUROC"] = row[f"ood/{score}/AUROC/{p}"]
        out[f"{score_column(score)}_FPR95"] = row[f"ood/{score}/FPR95/{p}"]
    out.update(_setting_columns(item))
    out.update(
        protocol=p,
        data=row["data"],
        anomaly_pixel_share=row["ood/anomaly_pixel_share"],
        seed=item.seed,
        epochs=cfg.epochs,
        wall_seconds=row["wall_seconds"],
        commit=row["commit"],
        status="ok",
        config_id=config_id(cfg, p),
    )
    return out


def _setting_columns(item: GridRun) -> dict[str, Any]:
    """The reference project's config columns (``dataset`` = the pretraining source), then every
    other field the grid varies, as its CSV cell."""
    cfg = item.config
    out = {
        name: (cfg.pretrained_on or "none") if name == "dataset" else getattr(cfg, name)
        for name in CONFIG_COLUMNS
    }
    for name, value in item.values.items():
        out.setdefault(name, cell(value))
    return out


def failed_row(grid: Grid, item: GridRun, error: BaseException) -> dict[str, Any]:
    """The row of a run that diverged (NaN loss): its settings and why, no metrics."""
    from lib.experiment import git_commit

    cfg = item.config
    out: dict[str, Any] = {"run": item.name, **_setting_columns(item)}
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    out.update(protocol=grid.protocol, seed=item.seed, epochs=cfg.epochs, commit=git_commit(),
               status=f"failed: {first_line}", config_id=config_id(cfg, grid.protocol))  # fmt: skip
    return out


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of a grid CSV ([] when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def run_grid(
    grid: Grid,
    *,
    out_dir: str | Path | None = None,
    keep_examples: int = 2,
    dry_run: bool = False,
    **overrides: Any,
) -> list[dict[str, str]]:
    """Run every combination of `grid` that has no row yet; return all its rows.

    Args:
        out_dir: where ``<name>.csv`` and ``runs/`` go (default: the config's ``out_dir``, ckpts).
        keep_examples: qualitative panels written per run.
        dry_run: print what would run, run nothing.
        overrides: RunConfig fields applied to every run; only fields that do not change training
            (`lib.config.RUNTIME_FIELDS`, e.g. device, num_workers, progress) keep a resumed run
            consistent with its checkpoint.

    Returns:
        The CSV's rows (str values) belonging to this grid, in grid order.
    """
    from lib.experiment import run  # the training stack is imported only when a grid runs

    if out_dir is not None:
        overrides["out_dir"] = str(out_dir)
    items = grid.runs(**overrides)
    out = Path(items[0].config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"{grid.name}.csv"
    with runner_lock(out / f".{grid.name}.lock"):
        done = {r["run"]: r for r in read_rows(csv_path)}
        _check_unchanged(grid, items, done, out)
        todo = [item for item in items if item.name not in done]
        print(
            f"grid {grid.name}: {len(items)} runs, {len(items) - len(todo)} done, {len(todo)} to run -> {csv_path}"
        )
        for i, item in enumerate(todo, start=1):
            run_dir = out / "runs" / item.name
            resume = run_dir if (run_dir / "last.pt").is_file() else None
            note = "continuing from its last checkpoint" if resume else "new"
            print(f"\n[{i}/{len(todo)}] {item.name} ({note})")
            if dry_run:
                continue
            clear_unstarted(run_dir)
            try:
                row = grid_row(grid, item, run(item.config, keep_examples=keep_examples, resume=resume,
                                               results_csv=None))  # fmt: skip
            except FloatingPointError as err:  # diverged: it would again, deterministically; go on
                print(f"{item.name} failed: {err}")
                row = failed_row(grid, item, err)
            append_csv_row(csv_path, row)
    names = [item.name for item in items]
    rows = {r["run"]: r for r in read_rows(csv_path)}
    result = [rows[n] for n in names if n in rows]
    if any(r.get("status", "ok") == "ok" for r in result) and not dry_run:
        summary = summarize(grid, result)
        write_csv(out / f"{grid.name}_summary.csv", summary)
        plot_grid(grid, result, out, summary=summary)
    return result


def clear_unstarted(run_dir: Path) -> None:
    """Remove a run folder that holds no ``last.pt`` (a run stopped before its first checkpoint:
    nothing worth keeping), so that the run starts afresh there; a folder with one is kept (the run
    continues from it)."""
    if run_dir.exists() and not (run_dir / "last.pt").is_file():
        shutil.rmtree(run_dir)


class GridLockedError(RuntimeError):
    """Another runner holds the grid's lock file."""


@contextlib.contextmanager
def runner_lock(path: Path, *, what: str = "this grid"):
    """Hold an exclusive lock on `path` for one runner per grid (or recipe table) and folder
    (released at exit, also when the process is killed)."""
    import fcntl

    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise GridLockedError(
                f"another runner is working on {what} (it holds {path}); wait for it or stop it"
            ) from err
        yield


def _check_unchanged(
    grid: Grid, items: Sequence[GridRun], done: Mapping[str, Mapping[str, str]], out: Path
) -> None:
    """Stop when finished rows or an interrupted run were made with other settings than now."""
    changed = [
        item.name
        for item in items
        if item.name in done
        and done[item.name].get("config_id") not in (None, "", config_id(item.config, grid.protocol))
    ]
    for item in items:
        saved = out / "runs" / item.name / "config.json"
        if item.name not in done and (saved.parent / "last.pt").is_file() and saved.is_file():
            cfg = RunConfig.load(saved)
            if config_id(cfg, "", training_only=True) != config_id(item.config, "", training_only=True):
                changed.append(f"{item.name} (interrupted run)")
    if changed:
        raise ValueError(
            f"grid {grid.name}: {len(changed)} run(s) in {out} were made with other settings than the grid now "
            f"asks for, e.g. {changed[:2]}; delete their rows from {grid.name}.csv and their runs/ folders, or "
            "choose another out_dir"
        )


def metric_columns(rows: Sequence[Mapping[str, Any]], *, exclude: Sequence[str] = ()) -> list[str]:
    """Result columns of grid rows (mIoU, min/max IoU, per-score AUPR / AUROC / FPR95, anomaly
    share), without the fields in `exclude` (a grid's varied fields, which may be numbers)."""
    skip = {"run", "protocol", "data", "seed", "epochs", "wall_seconds", "commit", "status", "config_id",
            *CONFIG_COLUMNS, *exclude}  # fmt: skip
    numeric = [r for r in rows if r.get("status", "ok") == "ok"]
    if not numeric:
        return []
    return [k for k in numeric[0] if k not in skip and _is_number(numeric[0][k])]


def summarize(grid: Grid, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over seeds of every metric column, per combination.

    Returns one dict per combination: the grid's parameters, ``n`` (seeds with a row), and
    ``<metric>`` (mean) plus ``<metric>_std`` (empty with a single seed).
    """
    columns = metric_columns(rows, exclude=list(grid.params))
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("status", "ok") == "ok":
            groups.setdefault(tuple(str(row[k]) for k in grid.params), []).append(row)
    out = []
    for key, members in groups.items():
        entry: dict[str, Any] = dict(zip(grid.params, key, strict=True))
        entry["n"] = len(members)
        for column in columns:
            values = [float(m[column]) for m in members if m.get(column, "") != ""]
            if not values:
                entry[column] = entry[f"{column}_std"] = ""
                continue
            mean = sum(values) / len(values)
            entry[column] = round(mean, 4)
            if len(values) > 1:
                var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
                entry[f"{column}_std"] = round(math.sqrt(var), 4)
            else:
                entry[f"{column}_std"] = ""
        out.append(entry)
    return out


def paired_difference(
    grid: Grid, rows: Sequence[Mapping[str, Any]], field: str, baseline: Any, other: Any
) -> list[dict[str, Any]]:
    """Effect of one field on every result column: ``other - baseline`` between runs that agree
    on every other field the grid varies, and on the seed.

    E.g. ``paired_difference(grid, rows, "head", "standard", "distance")`` answers "what does the
    distance head change?" with one line per metric: the mean difference, its min and max over
    the pairs, and how many pairs went up.

    Args:
        baseline, other: two of the grid's values of `field` (as in the grid: ``False``, ``0.1``).

    Returns:
        One dict per metric column: ``metric``, ``pairs``, ``mean``, ``min``, ``max``, ``up``.

    Raises:
        ValueError: `field` is not varied by the grid, or a value is not among its values.
    """
    if field not in grid.params:
        raise ValueError(f"{field!r} is not a field the grid varies ({list(grid.params)})")
    for value in (baseline, other):
        if value not in grid.params[field]:
            raise ValueError(f"{value!r} is not a value of {field} in the grid: {grid.params[field]}")
    others = [k for k in grid.params if k != field]

    def key(row):
        return (*(str(row[k]) for k in others), str(row["seed"]))

    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    base = {key(r): r for r in ok if r[field] == cell(baseline)}
    pairs = [(base[key(r)], r) for r in ok if r[field] == cell(other) and key(r) in base]
    out = []
    for column in metric_columns(ok, exclude=[*grid.params, "anomaly_pixel_share"]):  # a data property
        diffs = [float(b[column]) - float(a[column]) for a, b in pairs if a[column] != "" and b[column] != ""]
        if diffs:
            out.append(dict(metric=column, pairs=len(diffs), mean=round(sum(diffs) / len(diffs), 4),
                            min=round(min(diffs), 4), max=round(max(diffs), 4), up=sum(d > 0 for d in diffs)))  # fmt: skip
    return out


def _number(value: Any, missing: float = math.nan) -> float:
    """A cell as a float; `missing` for an empty one."""
    return missing if value in ("", None) else float(value)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool) and str(value).lower() not in ("true", "false")


def setting_label(grid: Grid, row: Mapping[str, Any]) -> str:
    """Label of a combination: its varied fields and values ("head=distance, loss=fl+h")."""
    return ", ".join(f"{k}={row[k]}" for k in grid.params)


def plot_grid(
    grid: Grid,
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    summary: Sequence[Mapping[str, Any]] | None = None,
) -> list[Path]:
    """Write the grid's figures next to its CSV and return their paths.

    - ``<name>_aupr.png``: AUPR of each score per combination (mean over seeds, error bars = std),
      with mIoU beside it;
    - ``<name>_heatmap.png`` (grids over exactly two fields): AUPR of each score over the two;
    - ``<name>_loss.png``: validation loss per epoch of every run (from its ``history.csv``);
    - ``<name>_best_<figure>.png``: the per-run figures (`lib.figures.save_run_figures`) of the run
      with the highest AUPR of any score, for each name in `BEST_RUN_FIGURES`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    summary = list(summary if summary is not None else summarize(grid, rows))
    rows = [r for r in rows if r.get("status", "ok") == "ok"]
    scores = [c for c in metric_columns(rows, exclude=list(grid.params)) if f"{c}_AUROC" in rows[0]]
    paths = []
    labels = [setting_label(grid, s) for s in summary]
    fig = plot_setting_bars(summary, scores, labels=labels, name=grid.name, protocol=grid.protocol)
    paths.append(out_dir / f"{grid.name}_aupr.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    if len(grid.params) == 2:
        fields = {name: [cell(v) for v in values] for name, values in grid.params.items()}
        fig = plot_two_field_heatmaps(summary, scores, fields=fields, name=grid.name, protocol=grid.protocol)
        paths.append(out_dir / f"{grid.name}_heatmap.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    histories = {
        r["run"].split("_", 1)[-1]: read_rows(out_dir / "runs" / r["run"] / "history.csv") for r in rows
    }
    fig = plot_loss_curves({label: h for label, h in histories.items() if h})
    if fig is not None:
        paths.append(out_dir / f"{grid.name}_loss.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    best = max(rows, key=lambda r: max(_number(r[s]) for s in scores))
    for figure in BEST_RUN_FIGURES:
        source = out_dir / "runs" / best["run"] / f"{figure}.png"
        if source.is_file():
            paths.append(out_dir / f"{grid.name}_best_{figure}.png")
            atomic_write_bytes(paths[-1], source.read_bytes())
    print(
        f"figures of the best run ({best['run']}, highest AUPR of any score): {out_dir}/{grid.name}_best_*.png"
    )
    return paths


__all__ = [
    "Grid",
    "GridLockedError",
    "GridRun",
    "cell",
    "config_id",
    "grid_row",
    "metric_columns",
    "paired_difference",
    "plot_grid",
    "read_rows",
    "run_grid",
    "score_column",
    "summarize",
]
