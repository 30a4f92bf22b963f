"""The grid runner: grid files, rows, summaries, and crash safety under random kills."""

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib.config import presets
from lib.grid import Grid, grid_row, read_rows, run_grid, summarize

ROOT = Path(__file__).resolve().parents[1]


def _tiny_grid(tmp_path, **changes):
    spec = dict(
        name="t",
        preset="tiny",
        base={"data_root": str(tmp_path / "data"), "progress": False, "tensorboard": False},
        params={"head": ["standard", "distance"], "entropy_weight": [0.1, 1.0]},
    )
    spec.update(changes)
    return Grid(**spec)


def test_grid_combinations_names_and_configs(tmp_path):
    grid = _tiny_grid(tmp_path, seeds=[0, 1])
    runs = grid.runs(out_dir=str(tmp_path))
    assert len(runs) == 8
    assert runs[0].name == "t_head=standard_entropy_weight=0.1_seed0"
    assert runs[1].seed == 1 and runs[1].config.seed == 1
    assert runs[-1].config.head == "distance" and runs[-1].config.entropy_weight == 1.0
    assert runs[0].config.epochs == presets()["tiny"]["epochs"] and runs[0].config.out_dir == str(tmp_path)
    assert len({r.name for r in runs}) == 8


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(params={"heads": ["standard"]}), "'heads' is not a RunConfig field"),
        (dict(params={"loss": ["ce", "hinge"]}), "loss='hinge' is not valid"),
        (dict(params={"seed": [0, 1]}), "use 'seeds'"),
        (dict(params={"loss": []}), "have no values"),
        (dict(protocol="mean"), "protocol"),
        (dict(preset="huge"), "preset 'huge' is unknown"),
        (dict(name="a/b"), "names files"),
    ],
)
def test_bad_grids_fail_before_running(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        _tiny_grid(tmp_path, **changes)


def test_grid_file_errors_name_the_file(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text('preset = "tiny"\n[params]\nloss = ["ce"]\ncolour = "red"\n')
    with pytest.raises(ValueError, match=r"g\.toml: .*'colour' is not a RunConfig field"):
        Grid.load(path)
    path.write_text('preset = "tiny"\nparams = [1, 2\n')
    with pytest.raises(ValueError, match=r"g\.toml is not valid TOML"):
        Grid.load(path)
    path.write_text('preset = "tiny"\n')
    with pytest.raises(ValueError, match=r"needs a \[params\] table"):
        Grid.load(path)


def test_shipped_grid_files_are_valid():
    tuning = Grid.load(ROOT / "scripts/grids/tuning.toml")
    assert tuning.name == "tuning" and len(tuning.runs()) == 16
    assert {r.config.loss for r in tuning.runs()} == {"fl+h"}
    ablation = Grid.load(ROOT / "scripts/grids/ablation.toml")
    assert ablation.name == "ablation" and len(ablation.runs()) == 8 * len(ablation.seeds)


def test_row_keeps_the_reference_columns(tmp_path):
    grid = _tiny_grid(tmp_path)
    item = grid.runs()[0]
    metrics = {"seg/mIoU": 50.0, "seg/minIoU": 1.0, "seg/maxIoU": 90.0, "ood/anomaly_pixel_share": 2.0}
    for i, score in enumerate(item.config.scores):
        for protocol in ("pooled", "per-image"):
            for j, key in enumerate(("AUPR", "AUROC", "FPR95")):
                metrics[f"ood/{score}/{key}/{protocol}"] = (
                    10.0 * i + j + (0.5 if protocol == "per-image" else 0.0)
                )
    row = grid_row(
        grid, item, {**metrics, "data": "synthetic test split", "wall_seconds": 3.0, "commit": "abc"}
    )
    assert list(row)[:7] == ["run", "mIoU", "minIoU", "maxIoU", "msp", "maxlog", "entropy"]
    assert row["maxlog"] == 10.0 and row["maxlog_AUROC"] == 11.0 and row["energy_FPR95"] == 32.0
    for column in ("loss", "entropy_weight", "gamma_focal", "class_weights", "backbone", "head"):
        assert row[column] == getattr(item.config, column)
    assert row["dataset"] == "none" and row["protocol"] == "pooled" and row["seed"] == 0
    assert row["status"] == "ok" and len(row["config_id"]) == 10
    per_image = grid_row(Grid(**{**grid.__dict__, "protocol": "per-image"}), item, {**metrics, "data": "d",
                         "wall_seconds": 3.0, "commit": "abc"})  # fmt: skip
    assert per_image["maxlog"] == 10.5 and per_image["protocol"] == "per-image"


def test_summary_mean_and_std_over_seeds(tmp_path):
    grid = _tiny_grid(tmp_path, params={"head": ["standard", "distance"]}, seeds=[0, 1, 2])
    rows = [
        {"run": f"r{h}{s}", "head": h, "seed": str(s), "mIoU": str(v), "msp": str(2 * v), "loss": "ce"}
        for h, values in (("standard", (1.0, 2.0, 3.0)), ("distance", (5.0, 5.0, 8.0)))
        for s, v in enumerate(values)
    ]
    summary = summarize(grid, rows)
    assert [s["head"] for s in summary] == ["standard", "distance"]
    assert summary[0]["n"] == 3 and summary[0]["mIoU"] == 2.0 and summary[0]["mIoU_std"] == 1.0
    assert summary[1]["msp"] == 12.0 and summary[1]["msp_std"] == pytest.approx(3.4641, abs=1e-4)
    assert "seed" not in summary[0] and "loss" not in summary[0]


@pytest.mark.slow
def test_run_grid_resumes_the_interrupted_run_and_skips_done_ones(tmp_path, capsys):
    from lib.experiment import train

    grid = _tiny_grid(tmp_path, params={"head": ["standard", "distance"]}, base={
        "data_root": str(tmp_path / "data"), "progress": False, "tensorboard": False, "epochs": 2})  # fmt: skip
    first, second = grid.runs(out_dir=str(tmp_path))
    # The second run was stopped after its first epoch (its last.pt says epoch 1).
    train(second.config.replace(epochs=1))
    history_before = read_rows(tmp_path / "runs" / second.name / "history.csv")
    assert len(history_before) == 1
    rows = run_grid(grid, out_dir=tmp_path, keep_examples=1)
    out = capsys.readouterr().out
    assert f"{first.name} (new)" in out and f"{second.name} (continuing from its last checkpoint)" in out
    assert [r["run"] for r in rows] == [first.name, second.name]
    history = read_rows(tmp_path / "runs" / second.name / "history.csv")
    assert len(history) == 2 and history[0] == history_before[0]  # epoch 1 was not trained again
    for name in ("t_summary.csv", "t_aupr.png", "t_loss.png", "t_best_confusion.png", "t_best_example_0.png"):
        assert (tmp_path / name).is_file(), name
    # Everything done: a second call runs nothing and returns the same rows.
    again = run_grid(grid, out_dir=tmp_path)
    assert "2 done, 0 to run" in capsys.readouterr().out and again == rows


@pytest.mark.slow
def test_grid_survives_random_kills(tmp_path):
    """SIGKILL the runner at random moments, restart it each time: every row exactly once, whole."""
    grid_file = tmp_path / "kill.toml"
    grid_file.write_text(
        'name = "kill"\npreset = "tiny"\nseeds = [0]\n'
        f'[base]\ndata_root = "{tmp_path / "data"}"\ntensorboard = false\nepochs = 2\n'
        '[params]\nloss = ["ce", "fl+h"]\nhead = ["standard", "distance"]\n'
    )
    command = [sys.executable, "scripts/grid.py", str(grid_file), "--out-dir", str(tmp_path), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(7)
    csv_path = tmp_path / "kill.csv"
    kills = 0
    for _ in range(4):
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(rng.uniform(3.0, 9.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        rows = read_rows(csv_path)
        assert len({r["run"] for r in rows}) == len(rows)  # never a duplicate, even mid-way
    assert kills >= 2  # the runner really was interrupted
    finished = subprocess.run([*command, "--compare", "head=standard,distance"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-2000:]
    # The report: the summary table, and the head comparison over the two losses.
    assert "| loss | head | n | mIoU |" in finished.stdout
    assert "head: distance minus standard" in finished.stdout and "| entropy | 2 |" in finished.stdout
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    assert sorted(r["run"] for r in rows) == sorted(
        f"kill_loss={loss}_head={head}_seed0" for loss in ("ce", "fl+h") for head in ("standard", "distance")
    )
    for row in rows:  # complete rows: every column filled, numbers parse
        assert all(row[k] != "" for k in header), row
        assert 0.0 <= float(row["mIoU"]) <= 100.0 and 0.0 <= float(row["entropy"]) <= 100.0


def test_paired_difference_matches_runs_that_differ_in_one_field(tmp_path):
    from lib.grid import paired_difference

    grid = _tiny_grid(tmp_path, params={"head": ["standard", "distance"], "class_weights": [False, True]})
    rows = [
        {"run": "a", "head": "standard", "class_weights": "False", "seed": "0", "msp": "10", "maxlog": "20"},
        {"run": "b", "head": "distance", "class_weights": "False", "seed": "0", "msp": "14", "maxlog": "5"},
        {"run": "c", "head": "standard", "class_weights": "True", "seed": "0", "msp": "11", "maxlog": "21"},
        {"run": "d", "head": "distance", "class_weights": "True", "seed": "0", "msp": "10", "maxlog": "6"},
        {
            "run": "e",
            "head": "distance",
            "class_weights": "True",
            "seed": "1",
            "msp": "99",
            "maxlog": "99",
        },  # alone
        {"run": "f", "head": "standard", "class_weights": "True", "seed": "1", "status": "failed: NaN"},
    ]
    effect = {e["metric"]: e for e in paired_difference(grid, rows, "head", "standard", "distance")}
    assert effect["msp"] == dict(metric="msp", pairs=2, mean=1.5, min=-1.0, max=4.0, up=1)
    assert effect["maxlog"]["mean"] == -15.0 and effect["maxlog"]["up"] == 0
    weights = {e["metric"]: e for e in paired_difference(grid, rows, "class_weights", False, True)}
    assert weights["msp"]["pairs"] == 2 and weights["msp"]["mean"] == -1.5  # booleans as the CSV spells them
    with pytest.raises(ValueError, match="not a value of class_weights"):
        paired_difference(grid, rows, "class_weights", "false", "true")


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(seeds=[0, 0]), "share a run name"),
        (dict(params={"head": ["standard", "standard"]}), "share a run name"),
        (dict(params={"n_train": [8, 16]}), "change the generated data"),
        (dict(base={"head": "cosine"}), r"both fixed .* and varied"),
    ],
)
def test_grids_that_cannot_run_safely_are_refused(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        _tiny_grid(tmp_path, **changes)


def test_changed_settings_are_not_mixed_with_old_rows(tmp_path):
    grid = _tiny_grid(tmp_path, params={"head": ["standard"]})
    item = grid.runs(out_dir=str(tmp_path))[0]
    stale = {"run": item.name, "head": "standard", "config_id": "0123456789", "status": "ok"}
    with (tmp_path / "t.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(stale))
        writer.writeheader()
        writer.writerow(stale)
    with pytest.raises(ValueError, match=r"made with other settings.*delete their rows"):
        run_grid(grid, out_dir=tmp_path, dry_run=True)


def test_a_diverging_run_gets_a_failed_row_and_the_grid_goes_on(tmp_path, monkeypatch):
    import lib.experiment

    grid = _tiny_grid(tmp_path, params={"head": ["standard", "distance"]})
    real_run = lib.experiment.run

    def run(cfg, **kwargs):
        if cfg.head == "standard":
            raise FloatingPointError("loss is nan at epoch 1, step 0")
        return real_run(cfg, **kwargs)

    monkeypatch.setattr(lib.experiment, "run", run)
    rows = run_grid(grid, out_dir=tmp_path, keep_examples=0)
    assert [r["status"] for r in rows] == ["failed: loss is nan at epoch 1, step 0", "ok"]
    assert rows[0]["mIoU"] == "" and float(rows[1]["mIoU"]) >= 0.0
    summary = read_rows(tmp_path / "t_summary.csv")
    assert [s["head"] for s in summary] == ["distance"]


def test_one_runner_per_grid(tmp_path):
    import fcntl

    from lib.grid import GridLockedError

    grid = _tiny_grid(tmp_path, params={"head": ["standard"]})
    with (tmp_path / ".t.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(GridLockedError, match="another runner"):
            run_grid(grid, out_dir=tmp_path, dry_run=True)
    assert run_grid(grid, out_dir=tmp_path, dry_run=True) == []  # free again
