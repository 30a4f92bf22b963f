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
from lib.registry import REGISTRY

STREETHAZARDS_LABELS = REGISTRY["streethazards"].label_args

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
    # The run's numbers are those of its best checkpoint, evaluated here independently of the run.
    independent = _evaluate_checkpoint(run_dir / "best.pt", cfg)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics.keys() == independent.keys()
    for key, value in independent.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9, nan_ok=True), key
        assert float(rows[0][key]) == pytest.approx(value, abs=1e-4, nan_ok=True), key  # CSV: 4 decimals
    assert independent["ood/entropy/AUROC/pooled"] != independent["ood/msp/AUROC/pooled"]  # not one number
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


def _evaluate_checkpoint(path: Path, cfg: RunConfig, **options) -> dict[str, float]:
    """The test-split metrics of a checkpoint's weights, from the library's parts (not lib.experiment)."""
    from lib.data import StreetHazards, make_loader
    from lib.test import evaluate
    from network import build_model

    model = build_model(arch="deeplabv3plus", backbone=cfg.backbone, head=cfg.head, num_classes=13)
    model.load_state_dict(torch.load(path, weights_only=True)["model"])
    test = StreetHazards(cfg.data_root, "test")
    loader = make_loader(test, batch_size=cfg.eval_batch_size, shuffle=False, num_workers=0, seed=0)
    return evaluate(
        model,
        loader,
        num_classes=13,
        **STREETHAZARDS_LABELS,
        device="cpu",
        score_names=cfg.scores,
        progress=False,
        **options,
    ).metrics


@pytest.mark.slow
def test_evaluation_options_reach_the_run_from_the_command_line(tmp_path, capsys):
    """--protocols, --ood-ignore, --window and --component-scores, through scripts/main.py and
    scripts/test.py, give what lib.test.evaluate gives with the same options."""
    from scripts.main import main as main_script
    from scripts.test import main as test_script

    common = ["--preset", "tiny", "--data-root", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out"),
              "--no-progress", "--no-tensorboard"]  # fmt: skip
    options = ["--ood-ignore", "other", "--window", "32", "48", "--protocols", "per-image"]
    assert main_script([*common, *options]) == 0
    run_dir = tmp_path / "out" / "runs" / "run_0"
    cfg = RunConfig.load(run_dir / "config.json")
    assert (cfg.ood_ignore, cfg.window, cfg.protocols) == (("other",), (32, 48), ("per-image",))
    expected = _evaluate_checkpoint(
        run_dir / "best.pt", cfg, ood_ignore=("other",), window=(32, 48), protocols=("per-image",)
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == pytest.approx(expected, abs=1e-9, nan_ok=True)
    assert not any(key.endswith("/pooled") for key in metrics)
    plain = _evaluate_checkpoint(run_dir / "best.pt", cfg)
    assert (
        plain["ood/msp/AUPR/per-image"] != metrics["ood/msp/AUPR/per-image"]
    )  # the options changed something

    # Evaluation-time fields change on scripts/test.py: both protocols, another window, components.
    flags = ["--protocols", "pooled", "per-image", "--window", "64", "64", "--component-scores", "entropy",
             "--conventions", "anomaly-seg", "smiyc", "pytorch-ood", "--smiyc-track", "obstacle"]  # fmt: skip
    assert test_script(["--checkpoint", str(run_dir), *flags, "--no-progress"]) == 0
    measured = json.loads((run_dir / "test_best.json").read_text())
    expected = _evaluate_checkpoint(
        run_dir / "best.pt", cfg, ood_ignore=("other",), window=(64, 64), component_scores=("entropy",),
        conventions=("anomaly-seg", "smiyc", "pytorch-ood"), smiyc_track="obstacle",
    )  # fmt: skip
    assert (
        measured == pytest.approx(expected, abs=1e-9, nan_ok=True)
        and "ood/entropy/sIoU/smiyc" in measured
        and all(f"ood/msp/AUPR/{c}" in measured for c in ("anomaly-seg", "smiyc", "pytorch-ood"))
    )
    capsys.readouterr()

    # Combinations that cannot work end with one line and exit code 2.
    bad = {
        ("--ood-ignore", "sky"): "ood_ignore='sky' is not a class of dataset='synthetic'; its classes: unlabeled",
        ("--component-scores", "sml"): "component_scores='sml' must be among scores",
    }  # fmt: skip
    for flags, message in bad.items():
        assert main_script([*common, *flags]) == 2, flags
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in (tmp_path / "out" / "runs").iterdir()) == ["run_0"]


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
    # A notebook row means what a CLI row means: the run's metrics.json, a run's wall time.
    with open(tmp_path / "ckpts" / "results.csv", newline="") as f:
        first = next(csv.DictReader(f))
    metrics = json.loads((tmp_path / "ckpts" / "runs" / "run_0" / "metrics.json").read_text())
    assert all(
        float(first[key]) == pytest.approx(value, abs=1e-4, nan_ok=True) for key, value in metrics.items()
    )
    # The resume path (a Colab disconnect): same run folder, its own config, a second results row.
    execute(NOTEBOOK_RESUME=str(tmp_path / "ckpts" / "runs" / "run_0"))
    mini_runs = ["mini_head=distance_seed0", "mini_head=standard_seed0"]  # the Ablation section's grid
    assert sorted(p.name for p in (tmp_path / "ckpts" / "runs").iterdir()) == [*mini_runs, "run_0"]
    with open(tmp_path / "ckpts" / "results.csv", newline="") as f:
        assert [row["run"] for row in csv.DictReader(f)] == ["run_0", "run_0"]
    with open(tmp_path / "ckpts" / "mini.csv", newline="") as f:  # the second pass skipped both runs
        assert sorted(row["run"] for row in csv.DictReader(f)) == mini_runs
    with open(tmp_path / "ckpts" / "recipes.csv", newline="") as f:  # the recipe table's tiny call, once
        assert [(row["recipe"], row["run"]) for row in csv.DictReader(f)] == [("pans", "pans-tiny")]
    assert (
        "| pans | `python scripts/main.py --preset pans-tiny`"
        in (tmp_path / "ckpts" / "recipes.md").read_text()
    )
    # Evaluation only (the streethazards-reference path, with run_0's best weights as the file):
    # no training, a new run folder, and run_0's numbers again.
    # The evaluation options reach the notebook's run through OVERRIDES: component metrics and two
    # kits' conventions here (they add columns and change none of the others).
    overrides = json.dumps(
        {
            "component_scores": ["entropy"],
            "protocols": ["pooled", "per-image"],
            "conventions": ["smiyc", "pytorch-ood"],
        }
    )
    execute(
        NOTEBOOK_WEIGHTS=str(tmp_path / "ckpts" / "runs" / "run_0" / "best.pt"), NOTEBOOK_OVERRIDES=overrides
    )
    files = sorted(p.name for p in (tmp_path / "ckpts" / "runs" / "run_1").iterdir() if p.suffix != ".png")
    assert files == ["config.json", "metrics.json"]  # no checkpoint, no history: nothing was trained
    with open(tmp_path / "ckpts" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["run"] for row in rows] == ["run_0", "run_0", "run_1"] and rows[2]["weights"].endswith(
        "best.pt"
    )
    for key in ("seg/mIoU", "ood/entropy/AUPR/pooled", "ood/msp/FPR95/per-image"):
        assert float(rows[2][key]) == pytest.approx(float(rows[1][key]), abs=1e-3), key
    assert rows[1]["ood/entropy/sIoU/smiyc"] == "" and 0 <= float(rows[2]["ood/entropy/sIoU/smiyc"]) <= 100
    assert rows[2]["component_scores"] == "entropy" and "pytorch-ood" in rows[2]["conventions"]
    assert (
        rows[1]["ood/msp/FPR95/pytorch-ood"] == "" and 0 <= float(rows[2]["ood/msp/FPR95/pytorch-ood"]) <= 100
    )


@pytest.mark.slow
def test_notebook_runs_a_recipe_on_its_offline_stand_in(tmp_path):
    """One setting - PRESET = "abet-tiny" - and the notebook trains on the Cityscapes-format stand-in
    and evaluates on its val split and the LostAndFound / RoadAnomaly-format stand-ins."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    data = tmp_path / "data"
    overrides = {"test_sets": ["synthetic-cityscapes", f"synthetic-lostandfound={data / 'laf'}",
                               f"synthetic-roadanomaly={data / 'ra'}"], "tensorboard": False}  # fmt: skip
    env = {"NOTEBOOK_PRESET": "abet-tiny", "NOTEBOOK_OUT_DIR": str(tmp_path / "ckpts"),
           "NOTEBOOK_DATA_ROOT": str(data / "cs"), "NOTEBOOK_OVERRIDES": json.dumps(overrides),
           "MPLBACKEND": "Agg"}  # fmt: skip
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nb = nbformat.read(ROOT / "main.ipynb", as_version=4)
        nbclient.NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    metrics = json.loads((tmp_path / "ckpts" / "runs" / "run_0" / "metrics.json").read_text())
    assert "seg/mIoU" in metrics and "synthetic-roadanomaly/ood/abet/AUPR/pooled" in metrics
    assert "synthetic-lostandfound/ood/msp/FPR95/pooled" in metrics
    assert (tmp_path / "ckpts" / "runs" / "run_0" / "synthetic-lostandfound" / "curves.png").is_file()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert (
        "synthetic-roadanomaly test split" in text
        and "deeplabv3plus mobilenet_v2 with abet head, 19 classes" in text
    )


def test_an_unknown_notebook_preset_stops_at_once_naming_the_valid_ones(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    env = {"NOTEBOOK_PRESET": "abet-huge", "NOTEBOOK_OUT_DIR": str(tmp_path / "ckpts"), "MPLBACKEND": "Agg"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nb = nbformat.read(ROOT / "main.ipynb", as_version=4)
        with pytest.raises(nbclient.exceptions.CellExecutionError) as err:
            nbclient.NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert "unknown preset 'abet-huge'; valid presets: demo, grid, tiny" in str(err.value)
    assert "abet-tiny" in str(err.value) and not (tmp_path / "ckpts").exists()
