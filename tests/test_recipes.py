"""The five reference recipes through the commands a user types: every one tiny end to end, a checkpoint
evaluated on other test sets, and the one-line errors of bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lib.config import RunConfig, presets
from lib.recipes import RECIPES
from lib.registry import REGISTRY, resolve_test_sets

ROOT = Path(__file__).resolve().parents[1]


def test_every_recipe_has_a_real_a_demo_and_a_tiny_preset():
    assert set(RECIPES) == {"streethazards", "abet", "bdd100k-unet", "pans", "cityscapes-fcn"}
    for name, recipe in RECIPES.items():
        real, demo, tiny = (RunConfig(**presets()[name + suffix]) for suffix in ("", "-demo", "-tiny"))
        assert not REGISTRY[real.dataset].generated, name  # the published setting reads the real data
        for offline in (demo, tiny):  # the stand-ins need no download and no GPU
            assert REGISTRY[offline.dataset].generated, name
            assert all(
                REGISTRY[t.name].generated for t in resolve_test_sets(offline.dataset, "x", offline.test_sets)
            )
            assert not (
                offline.download or offline.pretrained_on or offline.pretrained_backbone or offline.weights
            )
            assert offline.amp == "off"
            # the method is the recipe's: architecture, head, loss, scores, protocols, optimiser
            for field in (
                "arch",
                "head",
                "loss",
                "scores",
                "protocols",
                "optimizer",
                "scheduler",
                "class_weights",
            ):
                assert getattr(offline, field) == getattr(real, field), (name, field)
        assert tiny.max_steps_per_epoch == 2 and demo.epochs > tiny.epochs, name
        assert recipe.measures and recipe.source and recipe.published, name


def test_recipe_settings_are_the_published_ones():
    abet, bdd, pans, fcn = (
        RunConfig(**presets()[n]) for n in ("abet", "bdd100k-unet", "pans", "cityscapes-fcn")
    )
    assert (abet.dataset, abet.head, abet.loss, abet.protocols) == ("cityscapes", "abet", "ce", ("pooled",))
    assert abet.test_sets == ("cityscapes", "lostandfound", "roadanomaly") and abet.scores[0] == "abet"
    assert (bdd.arch, bdd.backbone, bdd.pretrained_backbone, bdd.unknown_as_class) == (
        "unet",
        "resnet34",
        True,
        True,
    )
    assert (pans.arch, pans.backbone, pans.head, pans.protocols) == (
        "deeplabv3",
        "resnet50",
        "cosine",
        ("per-image",),
    )
    assert (pans.crop_size, pans.lr, pans.epochs, pans.scores[0]) == ((450, 450), 7e-3, 40, "pans")
    assert (fcn.arch, fcn.cities, fcn.optimizer, fcn.lr, fcn.weight_decay, fcn.loss) == (
        "my_fcn", ("train/hamburg", "val/frankfurt"), "adam", 1e-3, 1e-5, "fl",
    )  # fmt: skip
    assert fcn.scale_range and fcn.color_jitter > 0 and fcn.tensorboard


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One folder for every recipe's stand-in data (each generated once) and outputs."""
    return tmp_path_factory.mktemp("recipes")


def _offline_args(name: str, work: Path) -> list[str]:
    """The tiny preset with every stand-in generated under `work` instead of ./data."""
    cfg = RunConfig(**presets()[f"{name}-tiny"])
    sets = [
        f"{t.name}={work / 'data' / t.name}"
        for t in resolve_test_sets(cfg.dataset, "x", cfg.test_sets)
        if t.prefix
    ]
    args = ["--preset", f"{name}-tiny", "--data-root", str(work / "data" / cfg.dataset),
            "--out-dir", str(work / name), "--no-progress"]  # fmt: skip
    if sets:
        args += ["--test-sets", cfg.dataset, *sets]
    return args


#: Metric keys each recipe's tiny run must write, and keys it must not (its sets have no such labels).
EXPECTED = {
    "streethazards": (["seg/mIoU", "ood/entropy/AUPR/pooled", "ood/msp/FPR95/per-image"], ["seg/IoU/unknown"]),
    "abet": (
        ["seg/mIoU", "seg/IoU/road", "synthetic-lostandfound/ood/abet/AUPR/pooled",
         "synthetic-roadanomaly/ood/msp/FPR95/pooled", "synthetic-roadanomaly/ood/entropy/AUROC/pooled"],
        ["ood/abet/AUPR/pooled", "synthetic-lostandfound/seg/mIoU", "synthetic-roadanomaly/ood/abet/AUPR/per-image"],
    ),
    "bdd100k-unet": (["seg/mIoU", "seg/F1/unknown", "seg/IoU/unknown", "seg/mean_F1", "seg/pixel_accuracy"],
                     ["ood/anomaly_pixel_share"]),
    "pans": (["seg/mIoU", "ood/pans/AUPR/per-image", "ood/energy/AUROC/per-image"], ["ood/pans/AUPR/pooled"]),
    "cityscapes-fcn": (["seg/mIoU", "seg/mean_class_accuracy", "seg/pixel_accuracy", "seg/F1/car"],
                       ["ood/anomaly_pixel_share"]),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_runs_tiny_end_to_end(name, work, capsys):
    from scripts.main import main

    assert main(_offline_args(name, work)) == 0
    out = capsys.readouterr().out
    run_dir = work / name / "runs" / "run_0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    present, absent = EXPECTED[name]
    assert all(key in metrics for key in present), [k for k in present if k not in metrics]
    assert not any(key in metrics for key in absent), [k for k in absent if k in metrics]
    with open(work / name / "results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    cfg = RunConfig.load(run_dir / "config.json")
    for t in resolve_test_sets(cfg.dataset, cfg.data_root, cfg.test_sets):
        assert f"Results on the {t.label}" in out and t.label in row["data"]
        if t.prefix:  # every other set has its own figures
            assert (run_dir / t.name / "example_0.png").is_file()
    assert all(float(row[k]) == pytest.approx(v, abs=1e-4, nan_ok=True) for k, v in metrics.items())
    # honest splits: val chose the checkpoint, a split of its own gave the numbers
    assert row["checkpoint_chosen_on"] == f"{cfg.dataset} val split"
    assert f"{cfg.dataset} val split" not in row["data"] and "chosen on this same split" not in out
    assert (run_dir / "example_0.png").is_file() and (run_dir / "history.png").is_file()
    if name == "bdd100k-unet":  # unknown (255) trained as a 20th class
        import torch

        head = [
            v for k, v in torch.load(run_dir / "best.pt", weights_only=False)["model"].items() if "head" in k
        ]
        assert head[-1].shape[0] == 20
    if name == "cityscapes-fcn":
        assert list((run_dir / "tensorboard").iterdir())


@pytest.mark.slow
def test_a_checkpoint_is_evaluated_on_any_compatible_test_set(work, capsys):
    """`scripts/test.py --checkpoint RUN --test-set NAME --data-root ROOT`: the abet-tiny model on a
    RoadAnomaly-format folder; a set of other classes is refused in one line, naming both."""
    from scripts.test import main

    run_dir = work / "abet" / "runs" / "run_0"
    if not (run_dir / "best.pt").is_file():
        assert __import__("scripts.main").main.main(_offline_args("abet", work)) == 0
    ra = work / "data" / "synthetic-roadanomaly"
    assert main(["--checkpoint", str(run_dir), "--test-set", "synthetic-roadanomaly", "--data-root", str(ra),
                 "--no-progress", "--out-dir", str(work / "eval")]) == 0  # fmt: skip
    metrics = json.loads((run_dir / "test_best.json").read_text())
    assert sorted({k.split("/")[0] for k in metrics}) == ["synthetic-roadanomaly"]
    assert "synthetic-roadanomaly/ood/abet/AUPR/pooled" in metrics
    capsys.readouterr()
    assert main(["--checkpoint", str(run_dir), "--test-set", "synthetic", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "test set 'synthetic' is labelled with 13 streethazards classes" in err and "19 cityscapes" in err
    # a training field still may not change
    assert main(["--checkpoint", str(run_dir), "--head", "standard", "--no-progress"]) == 2
    assert "would change how the model was trained" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--test-sets", "kitti"], "test_sets='kitti' is not valid; choose one of: synthetic, streethazards"),
        (["--arch", "unet", "--backbone", "mobilenet_v2"], "arch='unet' with backbone='mobilenet_v2' does not exist"),
        (["--dataset", "synthetic-cityscapes", "--test-sets", "synthetic-cityscapes", "streethazards"],
         "test set 'streethazards' is labelled with 13 streethazards classes, but a model trained on "
         "'synthetic-cityscapes' predicts 19 cityscapes classes"),
        (["--cities", "hamburg", "--dataset", "synthetic-cityscapes"], "cities entry 'hamburg' must read split/city"),
        (["--unknown-as-class"], "unknown_as_class applies to BDD100K"),
    ],
)  # fmt: skip
def test_bad_settings_end_in_one_line_naming_the_value(argv, message, tmp_path, capsys):
    from scripts.main import main

    assert main(["--preset", "tiny", "--out-dir", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script", ["main", "train", "test"])
def test_unknown_names_at_the_cli_end_in_one_line_listing_the_valid_ones(script, capsys):
    main = __import__(f"scripts.{script}", fromlist=["main"]).main
    dataset_flag = "--dataset" if script == "main" else "--data"
    for argv, value, valid in (
        (["--preset", "no-such-recipe"], "'no-such-recipe'", "abet-tiny"),
        ([dataset_flag, "kitti"], "'kitti'", "synthetic-cityscapes"),
        (["--backbone", "vgg16"], "'vgg16'", "mobilenet_v2"),
        (["--scores", "odin"], "'odin'", "maxlogit"),
    ):
        if script != "main" and argv[0] == "--preset" and script == "train":
            continue  # scripts/train.py takes the reference recipe, no --preset
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
        assert value in err and valid in err and "--help" in err


def test_anomaly_sets_need_a_score_and_say_so_in_one_line(tmp_path, capsys):
    """bdd100k-unet has no anomaly scores: asking for LostAndFound numbers is refused up front."""
    from scripts.main import main

    argv = ["--preset", "bdd100k-unet-tiny", "--out-dir", str(tmp_path / "out"),
            "--test-sets", "synthetic-bdd100k", f"synthetic-lostandfound={tmp_path / 'laf'}"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'synthetic-lostandfound' has anomaly labels only" in err
    assert "--scores msp" in err and not (tmp_path / "out").exists() and not (tmp_path / "laf").exists()


@pytest.mark.slow
def test_tiny_then_demo_sized_data_share_a_root_both_ways(tmp_path, capsys):
    """The generator owns the stand-ins it wrote: a run asking for other sizes regenerates them (one
    line says so), in either order; a root in another format, or data it did not write, is refused in
    one line that names a flag the command has."""
    from lib.data import DatasetError
    from lib.experiment import prepare_data
    from lib.synthetic import MARKER_FILE, generate

    root = tmp_path / "cs"
    small = RunConfig(**{**presets()["cityscapes-fcn-tiny"], "data_root": str(root), "progress": False})
    larger = small.replace(n_train=10, n_val=3, n_test=5)
    for cfg in (small, larger, small):
        prepare_data(cfg)
        params = json.loads((root / MARKER_FILE).read_text())["params"]
        assert (params["n_train"], params["n_val"], params["n_test"]) == (cfg.n_train, cfg.n_val, cfg.n_test)
        assert len(list((root / "leftImg8bit" / "train" / "hamburg").iterdir())) == cfg.n_train
    assert capsys.readouterr().err.count("regenerating the generated dataset there") == 2

    other = tmp_path / "sh"
    generate("streethazards", other, n_train=1, n_val=1, n_test=1, height=32, width=64, progress=False)
    with pytest.raises(DatasetError, match=r"streethazards format, not cityscapes.*--data-root") as err:
        prepare_data(small.replace(data_root=str(other)))
    assert "\n" not in str(err.value) and "--overwrite" not in str(err.value).split(" - ")[1]
    foreign = tmp_path / "real"
    (foreign / "gtFine").mkdir(parents=True)
    with pytest.raises(DatasetError, match="did not write"):
        prepare_data(small.replace(data_root=str(foreign)))
    assert not (foreign / "leftImg8bit").exists()

    from scripts.main import main

    capsys.readouterr()
    assert (
        main(["--preset", "cityscapes-fcn-tiny", "--data-root", str(other), "--out-dir", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--data-root" in err, err


@pytest.mark.slow
def test_a_dataset_without_test_labels_says_its_checkpoint_split_is_the_test_split(tmp_path, capsys):
    """Real Cityscapes: val chooses the checkpoint and gives the numbers; the row names the split that
    chose it and the printed results flag the overlap (here on a generated root in its layout)."""
    from lib.synthetic import generate
    from scripts.main import main

    root = tmp_path / "cityscapes"
    generate("cityscapes", root, n_train=4, n_val=2, n_test=1, height=64, width=128, progress=False)
    argv = ["--preset", "cityscapes-fcn-tiny", "--dataset", "cityscapes", "--data-root", str(root),
            "--out-dir", str(tmp_path / "out"), "--no-progress", "--no-tensorboard"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Results on the cityscapes val split" in out
    assert "note: the checkpoint was chosen on this same split (cityscapes val split" in out
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["checkpoint_chosen_on"] == "cityscapes val split" and row["data"] == "cityscapes val split"


def test_a_root_in_another_format_says_which_format_it_looks_like(tmp_path, capsys):
    """A Cityscapes run pointed at a LostAndFound folder (leftImg8bit + gtCoarse, no gtFine): the error
    names the format found, and nothing is written."""
    from scripts.main import main

    for folder in ("leftImg8bit/train/x", "gtCoarse/train/x"):
        (tmp_path / "laf" / folder).mkdir(parents=True)
    argv = ["--preset", "cityscapes-fcn-tiny", "--dataset", "cityscapes", "--data-root", str(tmp_path / "laf"),
            "--out-dir", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert (
        f"{tmp_path / 'laf'} looks like a LostAndFound dataset (leftImg8bit/ + gtCoarse/), not Cityscapes"
        in err
    )
    assert "gtFine" in err  # the folder it lacks
    assert not (tmp_path / "out").exists()
    # leftImg8bit without gtFine: the folder and what the root must hold
    (tmp_path / "cs" / "leftImg8bit" / "train" / "x").mkdir(parents=True)
    assert main([*argv[:5], str(tmp_path / "cs"), *argv[6:]]) == 2
    err = capsys.readouterr().err.strip()
    assert f"Cityscapes folder {tmp_path / 'cs' / 'gtFine' / 'train'} does not exist" in err
    assert "leftImg8bit, gtFine" in err and len(err.splitlines()) == 1


def test_the_registry_classes_are_the_official_cityscapes_ones():
    from lib.datasets import cityscapes_label_table
    from lib.registry import CITYSCAPES_CLASSES

    assert cityscapes_label_table()[1] == CITYSCAPES_CLASSES
    assert REGISTRY["bdd100k"].known_classes(unknown_as_class=True)[-1] == "unknown"
    assert len(REGISTRY["streethazards"].known_classes()) == 13


@pytest.mark.slow
def test_the_recipe_table_command_runs_skips_and_continues(tmp_path, capsys):
    """scripts/recipes.py: one row per recipe in recipes.csv and the Markdown table; run again, it
    runs nothing; with a row lost after a kill, it continues that run from its checkpoint."""
    from scripts.recipes import main

    argv = ["--size", "tiny", "--recipes", "pans", "abet", "--out-dir", str(tmp_path),
            "--data-dir", str(tmp_path / "data"), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    csv_path = tmp_path / "recipes.csv"
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["recipe"], r["run"], r["resumed"]) for r in rows] == [("pans", "pans-tiny", "False"),
                                                                     ("abet", "abet-tiny", "False")]  # fmt: skip
    table = (tmp_path / "recipes.md").read_text()
    assert table.startswith("Synthetic-data results") and "not numbers of the real datasets" in table
    pans, abet = rows
    line = next(
        x for x in table.splitlines() if x.startswith("| pans | `python scripts/main.py --preset pans-tiny`")
    )
    numbers = " / ".join(f"{float(pans[f'ood/pans/{m}/per-image']):.1f}" for m in ("AUPR", "AUROC", "FPR95"))
    accuracy = float(pans["seg/pixel_accuracy"])
    assert (
        f"synthetic test split: mIoU {float(pans['seg/mIoU']):.1f}, pixel accuracy {accuracy:.1f}, "
        f"pans AUPR / AUROC / FPR95 {numbers}" in line
    )
    assert pans["commit"] in line and RECIPES["pans"].published in line
    line = next(x for x in table.splitlines() if x.startswith("| abet |"))
    assert (
        "synthetic-cityscapes test split: mIoU" in line
        and "synthetic-lostandfound test split: abet AUPR" in line
    )
    aupr = float(abet["synthetic-roadanomaly/ood/abet/AUPR/pooled"])
    assert f"synthetic-roadanomaly test split: abet AUPR / AUROC / FPR95 {aupr:.1f} / " in line

    capsys.readouterr()
    assert main(argv) == 0
    assert "2 done, 0 to run" in capsys.readouterr().out
    # killed after abet's last checkpoint, before its row: the next start continues it
    with open(csv_path, newline="") as f:
        kept = [r for r in csv.DictReader(f) if r["recipe"] != "abet"]
    from lib.utils import write_csv

    write_csv(csv_path, kept)
    assert main(argv) == 0
    assert "abet-tiny (continuing from its last checkpoint)" in capsys.readouterr().out
    with open(csv_path, newline="") as f:
        assert [(r["recipe"], r["resumed"]) for r in csv.DictReader(f)] == [
            ("pans", "False"),
            ("abet", "True"),
        ]
    assert main(["--table", "--out-dir", str(tmp_path)]) == 0
    assert "| abet |" in capsys.readouterr().out
    assert main(["--table", "--out-dir", str(tmp_path / "none")]) == 2


def test_a_second_recipe_runner_is_refused_in_one_line(tmp_path, capsys):
    from lib.grid import runner_lock
    from scripts.recipes import main

    with runner_lock(tmp_path / ".recipes.lock"):
        assert main(["--size", "tiny", "--recipes", "pans", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another runner is working on the recipe table" in err
    assert not (tmp_path / "recipes.csv").exists()


def test_dataset_facts_are_registry_attributes_not_name_branches():
    """What a run does per dataset follows the registry's attributes (city folders, an unknown
    label, a download), so the run path compares no dataset names."""
    import re

    assert [n for n, s in REGISTRY.items() if s.city_folders] == ["cityscapes", "synthetic-cityscapes"]
    assert [n for n, s in REGISTRY.items() if s.unknown_label] == ["bdd100k", "synthetic-bdd100k"]
    assert [n for n, s in REGISTRY.items() if s.downloadable] == ["streethazards"]
    names = "|".join(REGISTRY)
    for module in ("lib/experiment.py", "lib/config.py", "lib/test.py"):
        source = (ROOT / module).read_text()
        assert not re.search(rf'(loader|name|dataset) [!=]= "({names})"', source), module


@pytest.mark.slow
def test_roadanomaly_in_its_original_release_layout_through_the_command_line(work, tmp_path, capsys):
    """`scripts/test.py --checkpoint RUN --test-set roadanomaly --data-root ROOT` on a root in the
    original release layout (frame_list.json, frames/NAME.labels/labels_semantic.png)."""
    from scripts.test import main
    from tests.conftest import write_road_anomaly

    run_dir = work / "abet" / "runs" / "run_0"
    if not (run_dir / "best.pt").is_file():
        assert __import__("scripts.main").main.main(_offline_args("abet", work)) == 0
    root = tmp_path / "RoadAnomaly"
    write_road_anomaly(root, 2, layout="release", size=(64, 96))
    argv = ["--checkpoint", str(run_dir), "--test-set", "roadanomaly", "--data-root", str(root),
            "--no-progress", "--out-dir", str(tmp_path / "eval")]  # fmt: skip
    assert main(argv) == 0
    assert "Results on the roadanomaly test split (2 images" in capsys.readouterr().out
    metrics = json.loads((run_dir / "test_best.json").read_text())
    share = metrics["roadanomaly/ood/anomaly_pixel_share"]
    assert share == pytest.approx(100 * 2 * 42 / (2 * 64 * 96))  # class 2 of each frame, nothing ignored
