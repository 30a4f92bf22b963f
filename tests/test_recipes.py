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


def test_unknown_recipe_and_dataset_list_the_valid_ones(capsys):
    from scripts.main import main

    for argv, valid in (
        (["--preset", "abet-huge"], "abet-tiny"),
        (["--dataset", "kitti"], "synthetic-cityscapes"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and valid in capsys.readouterr().err


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
