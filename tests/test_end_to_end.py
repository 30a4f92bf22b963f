"""The whole path on tiny synthetic data: generate, train a few steps, evaluate, write files."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib.config import RunConfig, presets
from lib.experiment import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_run_writes_checkpoint_csv_and_figures(tmp_path):
    cfg = RunConfig(
        **presets()["tiny"], data_root=str(tmp_path / "data"), out_dir=str(tmp_path / "ckpts"), progress=False
    )
    row = run(cfg, keep_examples=1)
    run_dir = Path(row["run_dir"])
    checkpoint = torch.load(run_dir / "best.pt", weights_only=True)
    assert set(checkpoint) >= {"model", "optimizer", "scheduler", "epoch", "config"}
    assert RunConfig.from_dict(checkpoint["config"]) == cfg
    assert {p.stem for p in run_dir.glob("*.png")} == {
        "example_0", "scores", "history", "curves", "histograms", "confusion", "iou_vs_share", "class_distribution"
    }  # fmt: skip
    with open(tmp_path / "ckpts" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["data"] == "synthetic test split"
    for score in cfg.scores:
        for metric in ("AUPR", "AUROC", "FPR95"):
            value = float(rows[0][f"ood/{score}/{metric}/pooled"])
            assert 0.0 <= value <= 100.0
    assert 0.0 <= float(rows[0]["seg/mIoU"]) <= 100.0
    # A second run gets its own folder and its own row; scores beyond the default four work too
    # (sml fits its statistics on the training split first).
    second = run(cfg.replace(epochs=1, scores=("entropy", "sml", "pans", "abet")), keep_examples=0)
    assert sorted(p.name for p in (tmp_path / "ckpts" / "runs").iterdir()) == ["run_0", "run_1"]
    metrics = json.loads((Path(second["run_dir"]) / "metrics.json").read_text())
    for score in ("sml", "pans", "abet"):
        assert 0.0 <= metrics[f"ood/{score}/AUPR/pooled"] <= 100.0
        assert second[f"ood/{score}/AUROC/per-image"] == pytest.approx(
            metrics[f"ood/{score}/AUROC/per-image"], abs=1e-4
        )


@pytest.mark.slow
def test_cli_help_and_bad_dataset(tmp_path):
    help_text = subprocess.run(
        [sys.executable, "scripts/main.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "--entropy-weight" in help_text and "--preset" in help_text
    missing = subprocess.run(
        [sys.executable, "scripts/main.py", "--preset", "tiny", "--dataset", "streethazards",
         "--data-root", str(tmp_path / "absent"), "--out-dir", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "dataset error" in missing.stderr and "download_streethazards.sh" in missing.stderr
    assert not (tmp_path / "out" / "runs").exists()  # stopped before any training


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(ROOT / "main.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        "main.ipynb is committed with outputs: clear them"
    )
    env = {"NOTEBOOK_PRESET": "tiny", "NOTEBOOK_OUT_DIR": str(tmp_path / "ckpts"),
           "NOTEBOOK_DATA_ROOT": str(tmp_path / "data"), "MPLBACKEND": "Agg"}  # fmt: skip

    def execute(**extra):
        old = {k: os.environ.get(k) for k in {**env, **extra}}
        os.environ.update({**env, **extra})
        try:
            nb = nbformat.read(ROOT / "main.ipynb", as_version=4)
            nbclient.NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(ROOT)}}).execute()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    execute()
    assert (tmp_path / "ckpts" / "results.csv").is_file()
    assert list((tmp_path / "ckpts" / "runs").glob("run_0/best.pt"))
    # The resume path (a Colab disconnect): same run folder, its own config, a second results row.
    execute(NOTEBOOK_RESUME=str(tmp_path / "ckpts" / "runs" / "run_0"))
    mini_runs = ["mini_head=distance_seed0", "mini_head=standard_seed0"]  # the Ablation section's grid
    assert sorted(p.name for p in (tmp_path / "ckpts" / "runs").iterdir()) == [*mini_runs, "run_0"]
    with open(tmp_path / "ckpts" / "results.csv", newline="") as f:
        assert [row["run"] for row in csv.DictReader(f)] == ["run_0", "run_0"]
    with open(tmp_path / "ckpts" / "mini.csv", newline="") as f:  # the second pass skipped both runs
        assert sorted(row["run"] for row in csv.DictReader(f)) == mini_runs
    # Evaluation only (the streethazards-reference path, with run_0's best weights as the file):
    # no training, a new run folder, and run_0's numbers again.
    execute(NOTEBOOK_WEIGHTS=str(tmp_path / "ckpts" / "runs" / "run_0" / "best.pt"))
    assert sorted(p.name for p in (tmp_path / "ckpts" / "runs" / "run_1").iterdir() if p.suffix != ".png") == [
        "config.json"
    ]  # fmt: skip
    with open(tmp_path / "ckpts" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["run"] for row in rows] == ["run_0", "run_0", "run_1"] and rows[2]["weights"].endswith(
        "best.pt"
    )
    for key in ("seg/mIoU", "ood/entropy/AUPR/pooled", "ood/msp/FPR95/per-image"):
        assert float(rows[2][key]) == pytest.approx(float(rows[1][key]), abs=1e-3), key
