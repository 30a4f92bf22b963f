import argparse

import pytest

from lib.config import RunConfig, add_config_arguments, config_from_args, presets


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
