import argparse

import pytest

from lib.config import (
    RUNTIME_FIELDS,
    SEED_FLAG_NOTES,
    SEED_FLAGS,
    RunConfig,
    add_config_arguments,
    config_from_args,
    config_with_overrides,
    presets,
)


def test_json_round_trip(tmp_path):
    cfg = RunConfig(epochs=3, crop_size=(64, 96), scores=("msp", "energy"))
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json())
    assert RunConfig.load(path) == cfg


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("loss", "dice", "ce, ce\\+h, fl, fl\\+h"),
        ("scores", ("odin",), "msp"),
        ("output_stride", 32, "8 or 16"),
        ("epochs", 0, "epochs must be >= 1"),
        ("dataset", "kitti", "synthetic, streethazards"),
    ],
)
def test_bad_values_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**{field: value})


def test_unknown_field():
    with pytest.raises(ValueError, match="unknown RunConfig field"):
        RunConfig.from_dict({"epoch": 3})


def test_flags_override_preset_and_help_documents_fields():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(
        ["--epochs", "5", "--crop-size", "32", "48", "--class-weights", "--head", "standard"]
    )
    cfg = config_from_args(args, base=presets()["tiny"])
    assert (cfg.epochs, cfg.crop_size, cfg.class_weights, cfg.head) == (5, (32, 48), True, "standard")
    assert cfg.n_train == presets()["tiny"]["n_train"]  # from the preset, not the default
    help_text = parser.format_help()
    assert "Lambda of the entropy term" in help_text and "--gamma-focal" in help_text


def test_every_flag_has_help():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    undocumented = [a.dest for a in parser._actions if a.dest != "help" and a.help.startswith("(default")]
    assert undocumented == []


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("amp", "fp8", "off, auto, bf16, fp16"),
        ("optimizer", "lamb", "adam, sgd"),
        ("pretrained_on", "kitti", "cityscapes, voc"),
        ("grad_accum_steps", 0, "grad_accum_steps must be >= 1"),
        ("lr", 0.0, "lr must be > 0"),
        ("backbone_lr", -1e-4, "backbone_lr must be > 0"),
        ("early_stopping_patience", 0, "early_stopping_patience must be >= 1"),
        ("warmup_iters", -1, "warmup_iters must be >= 0"),
    ],
)
def test_training_fields_are_checked(field, value, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**{field: value})


def test_config_saved_before_the_training_fields_still_loads():
    old = RunConfig().to_dict()
    for name in ("amp", "optimizer", "warmup_iters", "pretrained_on", "tensorboard", "freeze_bn"):
        old.pop(name)
    assert RunConfig.from_dict(old) == RunConfig()


def test_seed_flags_map_to_their_fields():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, flags=SEED_FLAGS, help_notes=SEED_FLAG_NOTES)
    args = parser.parse_args(
        ["--dataset", "cityscapes", "--data", "streethazards", "--gamma", "0.5", "--gamma_focal", "3",
         "--loss", "fl+h", "--backbone", "resnet101", "--head", "distance"]
    )  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.pretrained_on, cfg.dataset, cfg.entropy_weight, cfg.gamma_focal) == (
        "cityscapes",
        "streethazards",
        0.5,
        3.0,
    )
    assert config_from_args(parser.parse_args(["--entropy-weight", "0.2"])).entropy_weight == 0.2
    with pytest.raises(SystemExit):  # --dataset takes a pretraining source here, not training data
        parser.parse_args(["--dataset", "synthetic"])
    help_text = " ".join(parser.format_help().split())
    assert "--pretrained-on {cityscapes,voc}, --dataset {cityscapes,voc}" in help_text
    assert "not the training data (that is --data)" in help_text


def test_overrides_allow_runtime_fields_and_name_the_others():
    saved = RunConfig(epochs=3, lr=1e-3)
    cfg = config_with_overrides(saved, {"epochs": 5, "num_workers": 0, "lr": 1e-3}, purpose="resuming run_0")
    assert (cfg.epochs, cfg.num_workers, cfg.lr) == (5, 0, 1e-3)
    with pytest.raises(ValueError, match=r"resuming run_0: --lr 0.1 \(the checkpoint has 0.001\); --head"):
        config_with_overrides(saved, {"lr": 0.1, "head": "standard", "epochs": 5}, purpose="resuming run_0")
    assert set(RUNTIME_FIELDS) <= {f for f in RunConfig().to_dict()}


def test_every_score_is_a_valid_choice():
    from lib.config import ALL_SCORES

    assert RunConfig(scores=ALL_SCORES).scores == ALL_SCORES
    with pytest.raises(ValueError, match="scores='odin'.*abet"):
        RunConfig(scores=("msp", "odin"))


def test_model_names_are_the_networks_and_checked_up_front():
    from lib.config import ARCHS as CONFIG_ARCHS
    from lib.config import BACKBONES, HEADS
    from network import ARCHS, HEAD_NAMES

    assert CONFIG_ARCHS == {arch: tuple(backbones) for arch, backbones in ARCHS.items()}
    assert set(BACKBONES) == {b for backbones in ARCHS.values() for b in backbones}
    assert HEADS == tuple(HEAD_NAMES)
    with pytest.raises(
        ValueError, match="backbone='resnet999' is not valid; choose one of: mobilenet_v2, resnet50"
    ):
        RunConfig(backbone="resnet999")
    # A U-Net encoder with DeepLab, and DeepLab's backbone with a U-Net: pairs that do not exist.
    with pytest.raises(ValueError, match="arch='deeplabv3plus' with backbone='resnet34' does not exist; "
                       "deeplabv3plus takes backbone mobilenet_v2 or resnet50 or resnet101"):  # fmt: skip
        RunConfig(backbone="resnet34")
    with pytest.raises(
        ValueError,
        match="arch='my_fcn' with backbone='resnet101' does not exist; my_fcn takes backbone plain$",
    ):
        RunConfig(arch="my_fcn", backbone="resnet101")
    with pytest.raises(
        ValueError, match="arch='vgg' is not valid; choose one of: deeplabv3plus, deeplabv3, unet, my_fcn"
    ):
        RunConfig(arch="vgg")
    with pytest.raises(ValueError, match="output_stride applies to the DeepLab archs only"):
        RunConfig(arch="unet", backbone="resnet34", output_stride=8)
    with pytest.raises(ValueError, match="head='linear' is not valid; choose one of: standard, distance"):
        RunConfig(head="linear")


def test_only_user_paths_become_one_line_errors(tmp_path, monkeypatch, capsys):
    """A missing --resume file is the user's mistake (exit 2, one line); a FileNotFoundError raised
    inside a run is a bug and keeps its traceback."""
    import lib.experiment
    from scripts.main import main

    assert main(["--resume", str(tmp_path / "nothing.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: checkpoint not found: {tmp_path / 'nothing.pt'} (pass a .pt file or a run folder)"

    def broken(cfg, **kwargs):
        raise FileNotFoundError("/tmp/some/internal/cache.bin")

    monkeypatch.setattr(lib.experiment, "run", broken)
    with pytest.raises(FileNotFoundError, match="internal/cache.bin"):
        main(["--preset", "tiny", "--out-dir", str(tmp_path)])


def test_a_run_resolves_its_datasets_once(monkeypatch, tmp_path):
    """The test sets are resolved when the config is checked (RunConfig.plan) and every step of the
    run reads that plan: no step resolves them again, unless a data field changes in place."""
    import lib.registry
    from lib.experiment import known_classes, make_datasets, num_classes, prepare_data, test_sets

    calls = []
    original = lib.registry.resolve_test_sets

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(lib.registry, "resolve_test_sets", counting)
    cfg = RunConfig(**{**presets()["tiny"], "data_root": str(tmp_path / "data"), "progress": False})
    prepare_data(cfg)
    make_datasets(cfg)
    assert [t.name for t in test_sets(cfg)] == ["synthetic"] and num_classes(cfg) == 13
    assert known_classes(cfg) == cfg.plan.classes and len(calls) == 1
    cfg.data_root = str(tmp_path / "elsewhere")  # changed in place: resolved again, once
    assert cfg.plan.test_sets[0].root == str(tmp_path / "elsewhere") and cfg.plan.data_root.endswith(
        "elsewhere"
    )
    assert len(calls) == 2
