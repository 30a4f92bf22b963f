"""network/: every architecture x backbone x head builds and trains; VainF / torchvision state-dict
compatibility, checkpoint and ImageNet loading, heads (incl. AbeT extras), errors, golden outputs."""

from __future__ import annotations

import functools
import importlib.util
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from lib.scores import compute_scores
from network import (
    ARCHS,
    HEAD_NAMES,
    MODEL_NAMES,
    AbeTHead,
    CheckpointMismatchError,
    CosineHead,
    DistanceHead,
    StandardHead,
    build_model,
    count_parameters,
    forward_with_extras,
    head_key_of,
    infer_num_classes,
    load_pretrained,
    model_grid,
    read_state_dict,
    valid_output_strides,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
HEAD_KEY = "classifier.classifier.3"
DEEPLAB_BACKBONES = ARCHS["deeplabv3plus"]
HEAVY_BACKBONES = ("resnet50", "resnet101")  # run in eval mode on one image to keep the suite fast


def load_make_golden():
    """scripts/make_golden.py as a module: the recipe of GOLDEN and the reader of the key lists."""
    spec = importlib.util.spec_from_file_location(
        "make_golden_under_test", ROOT / "scripts" / "make_golden.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


make_golden = load_make_golden()


def fixture_keys(backbone: str) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) pairs of the VainF 19-class OS16 checkpoint, in file order ("scalar" = 0-dim)."""
    return make_golden.read_keys(FIXTURES / make_golden.KEYS_FILES[backbone])


@functools.cache
def vainf_like_model(backbone: str) -> torch.nn.Module:
    """The 19-class standard-head OS16 model, i.e. the layout of the published VainF checkpoints."""
    torch.manual_seed(0)
    return build_model(backbone=backbone, head="standard", num_classes=19, output_stride=16)


def random_state_dict(backbone: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """A state dict with exactly the fixture's keys and shapes and random values."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in fixture_keys(backbone):
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g)
    return sd


def head_weight(model: nn.Module) -> torch.Tensor:
    return model.head.prototypes if isinstance(model.head, DistanceHead) else model.head.weight


# --- every model builds, runs forward and backward ------------------------------------------------


def _check_forward_backward(model: nn.Module, backbone: str, head: str, num_classes: int = 13) -> None:
    if backbone in HEAVY_BACKBONES:  # one image, BatchNorm in eval mode
        model.eval()
        x = torch.randn(1, 3, 64, 64)
    else:
        model.train()
        x = torch.randn(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (x.shape[0], num_classes, 64, 64)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert head_weight(model).grad.abs().sum() > 0
    if head == "distance":
        assert (logits <= 0).all()
    if head == "cosine":
        assert logits.abs().max() <= 10.0 + 1e-5


@pytest.mark.parametrize("head", HEAD_NAMES)
@pytest.mark.parametrize(("arch", "backbone"), model_grid())
def test_forward_backward(arch: str, backbone: str, head: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch=arch, backbone=backbone, head=head, num_classes=13)
    assert model.config["output_stride"] == valid_output_strides(arch, backbone)[0]
    assert model.num_classes == 13
    _check_forward_backward(model, backbone, head)


@pytest.mark.parametrize(
    ("arch", "backbone"),
    [
        ("deeplabv3plus", "mobilenet_v2"),
        ("deeplabv3plus", "resnet101"),
        ("deeplabv3", "mobilenet_v2"),
        ("deeplabv3", "resnet50"),
    ],
)
def test_forward_backward_output_stride_8(arch: str, backbone: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch=arch, backbone=backbone, head="distance", num_classes=5, output_stride=8)
    _check_forward_backward(model, backbone, "distance", num_classes=5)


def test_experiment_call_still_works() -> None:
    """The exact call lib/experiment.py makes (legacy pretrained_backbone flag)."""
    model = build_model(
        arch="deeplabv3plus",
        backbone="mobilenet_v2",
        head="distance",
        num_classes=13,
        output_stride=16,
        pretrained_backbone=False,
    )
    assert model.config["pretrained"] == "none" and model.load_report is None


@pytest.mark.parametrize(
    ("arch", "backbone", "kwargs"),
    [
        ("deeplabv3plus", "mobilenet_v2", {"output_stride": 8, "vainf_padding": True}),
        ("deeplabv3", "resnet50", {}),
        ("deeplabv3plus", "mobilenet_v2", {"separable_conv": True}),
        ("unet", "resnet34", {"upsampling": "transposed"}),
        ("unet", "plain", {"base_width": 8, "upsampling": "bilinear"}),
        ("my_fcn", "plain", {"base_width": 4}),
    ],
)
def test_config_rebuilds_the_same_model(arch: str, backbone: str, kwargs: dict[str, object]) -> None:
    model = build_model(arch=arch, backbone=backbone, head="abet", num_classes=3, **kwargs)
    twin = build_model(**model.config)
    assert twin.config == model.config
    assert [(k, v.shape) for k, v in twin.state_dict().items()] == [
        (k, v.shape) for k, v in model.state_dict().items()
    ]


# The DeepLab decoders are the same whatever the backbone: MobileNetV2 stands for the ResNets here.
@pytest.mark.parametrize(("arch", "backbone"), [p for p in model_grid() if p[1] not in HEAVY_BACKBONES])
def test_odd_input_sizes(arch: str, backbone: str) -> None:
    """Sizes that no stride divides: every output (logits and AbeT extras) at the input size."""
    model = build_model(arch=arch, backbone=backbone, head="abet", num_classes=4).eval()
    x = torch.randn(1, 3, 37, 53)
    with torch.no_grad():
        out = model.forward_with_extras(x)
    assert out["logits"].shape == out["untempered_logits"].shape == (1, 4, 37, 53)
    assert out["temperature"].shape == (1, 1, 37, 53)


# --- architecture layouts -------------------------------------------------------------------------


def test_deeplabv3_matches_torchvision_layout() -> None:
    """VainF's DeepLabHead is torchvision's: the same keys under ``classifier.classifier``, head at .4."""
    ours = build_model(arch="deeplabv3", backbone="resnet50", num_classes=19).state_dict()
    reference = models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=19, aux_loss=False
    ).state_dict()
    renamed = {k.replace("classifier.", "classifier.classifier.", 1): v for k, v in reference.items()}
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in renamed.items()]
    assert head_key_of("deeplabv3") == "classifier.classifier.4"
    assert ours["classifier.classifier.1.weight"].shape == (256, 256, 3, 3)
    assert "classifier.classifier.1.bias" not in ours
    # the backbone keys are the DeepLabv3+ ones (VainF's backbones do not depend on the decoder)
    backbone_keys = [k for k, _ in fixture_keys("resnet50") if k.startswith("backbone.")]
    assert [k for k in ours if k.startswith("backbone.")] == backbone_keys


def test_unet_resnet34_encoder_is_torchvision_resnet34() -> None:
    model = build_model(arch="unet", backbone="resnet34", num_classes=19)
    reference = {k: v for k, v in models.resnet34().state_dict().items() if not k.startswith("fc.")}
    encoder = model.backbone.state_dict()
    assert [(k, v.shape) for k, v in encoder.items()] == [(k, v.shape) for k, v in reference.items()]
    assert model.backbone.channels == (64, 64, 128, 256, 512)
    with torch.no_grad():
        maps = model.backbone(torch.randn(1, 3, 64, 96))
    assert [m.shape[-2:] for m in maps] == [(64 // s, 96 // s) for s in (2, 4, 8, 16, 32)]
    assert [b.conv[0].in_channels for b in model.classifier.blocks] == [
        512 + 256,
        256 + 128,
        128 + 64,
        64 + 64,
        32,
    ]
    assert model.head.weight.shape == (19, 32, 1, 1)


def _plain_unet_parameters(base: int, depth: int, num_classes: int) -> int:
    """Ronneberger's U-Net with bias-free convs + BN and transposed-conv upsampling, counted by hand."""

    def double(cin: int, cout: int) -> int:
        return 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout

    widths = [base * 2**i for i in range(depth + 1)]
    total = double(3, widths[0]) + sum(double(a, b) for a, b in zip(widths, widths[1:], strict=False))
    for w in reversed(widths[1:]):  # up: ConvTranspose2d(w, w/2, 2, 2) with bias, then double(w, w/2)
        total += 4 * w * (w // 2) + w // 2 + double(w, w // 2)
    return total + base * num_classes + num_classes


@pytest.mark.parametrize(("arch", "base", "depth"), [("unet", 64, 4), ("my_fcn", 32, 3), ("unet", 16, 4)])
def test_plain_unet_layout(arch: str, base: int, depth: int) -> None:
    kwargs = {} if base in (64, 32) else {"base_width": base}
    model = build_model(arch=arch, backbone="plain", num_classes=19, **kwargs)
    assert count_parameters(model) == _plain_unet_parameters(base, depth, 19)
    assert model.backbone.channels == tuple(base * 2**i for i in range(depth + 1))
    assert model.config["output_stride"] == 2**depth
    with torch.no_grad():
        maps = model.backbone(torch.randn(1, 3, 64, 64))
    assert [m.shape[-1] for m in maps] == [64 // 2**i for i in range(depth + 1)]


def test_unet_bilinear_has_no_transposed_convs() -> None:
    model = build_model(arch="unet", backbone="plain", num_classes=3, base_width=8, upsampling="bilinear")
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())
    transposed = build_model(arch="unet", backbone="plain", num_classes=3, base_width=8)
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in transposed.modules()) == 4


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head", HEAD_NAMES)
def test_head_key_and_num_classes_from_state_dict(arch: str, head: str) -> None:
    backbone = ARCHS[arch][0] if arch != "unet" else "plain"
    kwargs = {"base_width": 4} if backbone == "plain" else {}
    model = build_model(arch=arch, backbone=backbone, head=head, num_classes=7, **kwargs)
    assert model.head_key == head_key_of(arch)
    assert infer_num_classes(model.state_dict(), arch=arch) == 7
    head_keys = [k for k in model.state_dict() if k.startswith(model.head_key + ".")]
    assert head_keys == [f"{model.head_key}.{k}" for k in model.head.state_dict()]


def test_infer_num_classes_wrong_arch() -> None:
    state = build_model(arch="my_fcn", backbone="plain", num_classes=3, base_width=4).state_dict()
    with pytest.raises(ValueError, match=r"no head weights under 'classifier.classifier.3'"):
        infer_num_classes(state, arch="deeplabv3plus")


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50"])
def test_feature_strides(backbone: str, output_stride: int) -> None:
    model = build_model(backbone=backbone, num_classes=3, output_stride=output_stride).eval()
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 64, 96))
    assert features["low_level"].shape[-2:] == (16, 24)
    assert features["out"].shape[-2:] == (64 // output_stride, 96 // output_stride)
    assert features["low_level"].shape[1] == model.backbone.low_level_channels
    assert features["out"].shape[1] == model.backbone.out_channels
    rates = [model.classifier.aspp.convs[i][0].dilation[0] for i in (1, 2, 3)]
    assert rates == ([6, 12, 18] if output_stride == 16 else [12, 24, 36])


@pytest.mark.parametrize(
    ("output_stride", "expected"),
    [
        # block index -> (stride, dilation) of its depthwise conv, as in VainF's MobileNetV2
        (16, {2: (2, 1), 4: (2, 1), 7: (2, 1), 13: (1, 1), 14: (1, 1), 15: (1, 2), 17: (1, 2)}),
        (8, {4: (2, 1), 7: (1, 1), 8: (1, 2), 13: (1, 2), 14: (1, 2), 15: (1, 4), 17: (1, 4)}),
    ],
)
def test_mobilenet_dilation_matches_vainf(output_stride: int, expected: dict[int, tuple[int, int]]) -> None:
    backbone = build_model(backbone="mobilenet_v2", num_classes=3, output_stride=output_stride).backbone
    blocks = {
        **dict(backbone.low_level_features.named_children()),
        **dict(backbone.high_level_features.named_children()),
    }
    for index, (stride, dilation) in expected.items():
        dw = blocks[str(index)].conv[-3][0]
        assert (dw.stride[0], dw.dilation[0], dw.padding[0]) == (stride, dilation, dilation), index


def test_vainf_padding_same_keys_different_border() -> None:
    torch.manual_seed(0)
    plain = build_model(backbone="mobilenet_v2", num_classes=5).eval()
    vainf = build_model(backbone="mobilenet_v2", num_classes=5, vainf_padding=True).eval()
    vainf.load_state_dict(plain.state_dict())  # same keys and shapes
    assert vainf.backbone.low_level_features[0][0].padding == (0, 0)
    x = torch.randn(1, 3, 66, 66)
    with torch.no_grad():
        out_vainf, out_plain = vainf(x), plain(x)
        assert out_vainf.shape == out_plain.shape == (1, 5, 66, 66)
        assert not torch.allclose(out_vainf, out_plain)
        # unpadded stride-2 stem, as in VainF: 66 -> 32 -> 16 instead of 66 -> 33 -> 17
        assert vainf.backbone(x)["low_level"].shape[-2:] == (16, 16)
        assert plain.backbone(x)["low_level"].shape[-2:] == (17, 17)


# --- VainF compatibility --------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", DEEPLAB_BACKBONES)
def test_state_dict_matches_vainf_fixture(backbone: str) -> None:
    model = vainf_like_model(backbone)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    expected = fixture_keys(backbone)
    assert dict(got) == dict(expected)
    assert got == expected  # same order too
    assert model.head_key == HEAD_KEY


@pytest.mark.parametrize(("backbone", "expected"), [("mobilenet_v2", 5_225_203), ("resnet101", 58_753_459)])
def test_parameter_counts_match_published_models(backbone: str, expected: int) -> None:
    assert count_parameters(vainf_like_model(backbone)) == expected


def test_count_parameters_trainable_only() -> None:
    model = build_model(backbone="mobilenet_v2", head="distance", num_classes=13)
    total = count_parameters(model)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == total - count_parameters(model.backbone)
    assert count_parameters(model.head) == 13 * 256


# --- load_pretrained ------------------------------------------------------------------------------


@pytest.mark.parametrize("ddp_prefix", [False, True])
def test_load_vainf_checkpoint_into_distance_model(tmp_path: Path, ddp_prefix: bool) -> None:
    sd = random_state_dict("mobilenet_v2")
    if ddp_prefix:
        sd = {f"module.{k}": v for k, v in sd.items()}
    path = tmp_path / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth"
    # VainF also stores numbers next to the weights; best_score is a numpy float64.
    torch.save({"cur_itrs": 30000, "model_state": sd, "best_score": np.float64(0.72)}, path)

    torch.manual_seed(0)
    model = build_model(backbone="mobilenet_v2", head="distance", num_classes=13)
    prototypes = model.head.prototypes.detach().clone()
    report = load_pretrained(model, path)

    source = read_state_dict(path)
    state = model.state_dict()
    for key in (
        "backbone.low_level_features.0.0.weight",
        "backbone.high_level_features.17.conv.3.running_var",
    ):
        assert torch.equal(state[key], source[key])
    assert state["classifier.aspp.project.1.num_batches_tracked"].item() == 7
    assert torch.equal(model.head.prototypes, prototypes)  # fresh head kept
    assert not report.head_loaded
    assert sorted(report.skipped) == [f"{HEAD_KEY}.bias", f"{HEAD_KEY}.weight"]
    assert len(report.loaded) == len(state) - 1  # everything but the prototypes
    assert "head kept" in str(report)


def test_load_bare_state_dict_with_matching_head() -> None:
    source = vainf_like_model("mobilenet_v2")
    torch.manual_seed(1)
    model = build_model(backbone="mobilenet_v2", head="standard", num_classes=19)
    report = load_pretrained(model, source.state_dict())
    assert report.head_loaded and not report.skipped
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key

    report = load_pretrained(model, source.state_dict(), load_head=False)
    assert not report.head_loaded and report.reason == "load_head=False"


def test_load_distance_checkpoint_into_distance_model() -> None:
    torch.manual_seed(0)
    source = build_model(backbone="mobilenet_v2", head="distance", num_classes=13)
    model = build_model(backbone="mobilenet_v2", head="distance", num_classes=13)
    report = load_pretrained(model, {"model_state": source.state_dict()})
    assert report.head_loaded
    assert torch.equal(model.head.prototypes, source.head.prototypes)
    # a distance checkpoint into a standard model: the head differs in kind, so it is skipped
    report = load_pretrained(build_model(backbone="mobilenet_v2", num_classes=13), source.state_dict())
    assert not report.head_loaded and "prototypes" in report.reason


def test_load_renamed_key_raises_with_names() -> None:
    sd = random_state_dict("mobilenet_v2")
    sd["backbone.low_level_features.0.0.kernel"] = sd.pop("backbone.low_level_features.0.0.weight")
    model = build_model(backbone="mobilenet_v2", head="distance", num_classes=13)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"missing from the checkpoint: backbone\.low_level_features\.0\.0\.weight",
    ) as info:
        load_pretrained(model, {"model_state": sd})
    assert "unexpected in the checkpoint: backbone.low_level_features.0.0.kernel" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_load_wrong_backbone_raises() -> None:
    sd = random_state_dict("resnet50")
    model = build_model(backbone="mobilenet_v2", num_classes=19)
    with pytest.raises(CheckpointMismatchError, match=r"missing from the checkpoint: .*\(\d+ in all\)"):
        load_pretrained(model, sd)
    sd = random_state_dict("mobilenet_v2")
    sd["classifier.project.0.weight"] = torch.zeros(48, 32, 1, 1)
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatch: classifier\.project\.0\.weight"):
        load_pretrained(model, sd)


def test_load_raises_when_the_model_does_not_take_its_own_keys() -> None:
    """A load hook that renames a key (as legacy-key migrations do) makes load_state_dict disagree
    with state_dict: a RuntimeError naming both keys (it was a bare assert, gone under python -O)."""
    torch.manual_seed(0)
    source = build_model(arch="my_fcn", backbone="plain", num_classes=3, base_width=4)
    model = build_model(arch="my_fcn", backbone="plain", num_classes=3, base_width=4)
    key = next(k for k in model.state_dict() if k.endswith(".weight") and not k.startswith(model.head_key))

    def rename(module, state_dict, prefix, *args) -> None:
        if prefix + key in state_dict:
            state_dict[prefix + key + "_legacy"] = state_dict.pop(prefix + key)

    model.register_load_state_dict_pre_hook(rename)
    with pytest.raises(RuntimeError, match=r"load_state_dict did not take the keys") as info:
        load_pretrained(model, source.state_dict())
    message = str(info.value)
    assert f"left out {key}" in message and f"called unexpected {key}_legacy" in message
    assert "make them agree" in message and not isinstance(info.value, CheckpointMismatchError)
    # Without the hook the same call loads everything, head included.
    assert load_pretrained(source, model.state_dict()).head_loaded


def test_read_checkpoint_pickled_by_numpy_1(tmp_path: Path) -> None:
    """VainF's files were written with numpy 1.x, whose float64 pickles as numpy.core.multiarray.scalar."""
    new, old = tmp_path / "new.pth", tmp_path / "old.pth"
    torch.save({"model_state": {"w": torch.ones(2)}, "best_score": np.float64(0.7)}, new)
    with zipfile.ZipFile(new) as zin, zipfile.ZipFile(old, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(info, data)
    assert torch.equal(read_state_dict(old)["w"], torch.ones(2))


def test_read_state_dict_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="no state dict found"):
        read_state_dict({"cur_itrs": 3, "best_score": 0.5})


# --- pretrained sources ---------------------------------------------------------------------------


def test_pretrained_checkpoint_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_model(arch="unet", backbone="resnet34", head="cosine", num_classes=5)
    path = tmp_path / "best.pt"
    torch.save({"model": source.state_dict(), "config": {"backbone": "resnet34"}}, path)  # lib/train's format
    model = build_model(arch="unet", backbone="resnet34", head="cosine", num_classes=5, pretrained=path)
    assert model.load_report.head_loaded
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model.config["pretrained"] == str(path)
    # a different head kind: body loaded, head kept fresh
    model = build_model(arch="unet", backbone="resnet34", head="abet", num_classes=5, pretrained=str(path))
    assert not model.load_report.head_loaded
    # a checkpoint of another architecture does not fit
    with pytest.raises(CheckpointMismatchError, match="missing from the checkpoint"):
        build_model(arch="deeplabv3plus", backbone="mobilenet_v2", num_classes=5, pretrained=path)


@pytest.mark.parametrize(
    ("arch", "backbone", "factory", "prefix"),
    [
        ("unet", "resnet34", models.resnet34, "backbone."),
        ("deeplabv3", "mobilenet_v2", models.mobilenet_v2, None),
    ],
)
def test_pretrained_imagenet_uses_torchvision_weights(
    monkeypatch: pytest.MonkeyPatch, arch: str, backbone: str, factory, prefix: str | None
) -> None:
    """'imagenet' fetches torchvision's weights file (stubbed here: no network in tests)."""
    torch.manual_seed(123)
    imagenet = factory().state_dict()
    urls = []

    def fake_download(url: str, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        urls.append(url)
        return imagenet

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", fake_download)
    for kwargs in ({"pretrained": "imagenet"}, {"pretrained_backbone": True}):
        model = build_model(arch=arch, backbone=backbone, num_classes=3, **kwargs)
        assert model.config["pretrained"] == "imagenet"
        state = model.state_dict()
        if prefix:  # ResNet encoder: torchvision names under backbone.
            assert torch.equal(state["backbone.layer3.1.conv2.weight"], imagenet["layer3.1.conv2.weight"])
        else:  # MobileNetV2: features.i -> low_level_features.i / high_level_features.i
            assert torch.equal(
                state["backbone.low_level_features.0.0.weight"], imagenet["features.0.0.weight"]
            )
            assert torch.equal(
                state["backbone.high_level_features.17.conv.2.weight"], imagenet["features.17.conv.2.weight"]
            )
    assert len(urls) == 2 and urls[0].endswith(".pth")


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (
            {"pretrained": "imagnet"},
            r"pretrained must be 'none', 'imagenet' or an existing checkpoint file; got 'imagnet'",
        ),
        ({"pretrained": "none", "pretrained_backbone": True}, r"conflicting arguments"),
        ({"pretrained": "imagenet", "pretrained_backbone": False}, r"conflicting arguments"),
        (
            {"arch": "my_fcn", "backbone": "plain", "pretrained": "imagenet"},
            r"'plain' has no ImageNet weights",
        ),
    ],
)
def test_pretrained_errors(kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        build_model(num_classes=3, **kwargs)


# --- heads ----------------------------------------------------------------------------------------


def _cdist_logits(f: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    b, d, h, wd = f.shape
    flat = f.permute(0, 2, 3, 1).reshape(b, h * wd, d)
    dist = torch.cdist(flat, w.unsqueeze(0).expand(b, -1, -1), compute_mode="donot_use_mm_for_euclid_dist")
    return -dist.reshape(b, h, wd, -1).permute(0, 3, 1, 2)


def test_distance_head_matches_cdist() -> None:
    torch.manual_seed(0)
    head = DistanceHead(256, 13)
    f = torch.randn(2, 256, 5, 7, requires_grad=True)
    logits = head(f)
    assert logits.shape == (2, 13, 5, 7)
    torch.testing.assert_close(logits, _cdist_logits(f, head.prototypes), rtol=1e-4, atol=1e-4)
    logits.sum().backward()
    assert torch.isfinite(f.grad).all() and torch.isfinite(head.prototypes.grad).all()

    # float64 in, float64 out, and gradients agree with cdist's
    head64 = DistanceHead(16, 4).double()
    f64 = torch.randn(1, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    ours = head64(f64)
    ref = _cdist_logits(f64, head64.prototypes)
    torch.testing.assert_close(ours, ref)
    g_ours = torch.autograd.grad(ours.sum(), f64)[0]
    g_ref = torch.autograd.grad(ref.sum(), f64)[0]
    torch.testing.assert_close(g_ours, g_ref)


def test_distance_head_squared() -> None:
    torch.manual_seed(0)
    head = DistanceHead(32, 6, squared=True).double()
    f = torch.randn(2, 32, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(head(f), -_cdist_logits(f, head.prototypes).square())


@pytest.mark.parametrize("squared", [False, True])
def test_distance_head_gradient_finite_at_zero_distance(squared: bool) -> None:
    torch.manual_seed(0)
    head = DistanceHead(8, 3, squared=squared)
    f = torch.randn(1, 8, 2, 2)
    f[0, :, 0, 0] = head.prototypes[1].detach()  # one pixel exactly on a prototype
    f.requires_grad_(True)
    logits = head(f)
    assert logits[0, 1, 0, 0].abs() <= 1e-3
    logits.sum().backward()
    assert torch.isfinite(f.grad).all() and torch.isfinite(head.prototypes.grad).all()


def test_distance_head_under_autocast_is_float32() -> None:
    head = DistanceHead(16, 3)
    f = torch.randn(1, 16, 2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(f.bfloat16())
    assert out.dtype == torch.float32


def test_standard_head_keys() -> None:
    head = StandardHead(256, 13)
    assert sorted(head.state_dict()) == ["bias", "weight"]
    assert head(torch.randn(1, 256, 3, 3)).shape == (1, 13, 3, 3)


def test_cosine_head_matches_definition() -> None:
    torch.manual_seed(0)
    head = CosineHead(16, 5)
    assert sorted(head.state_dict()) == ["weight"]  # bias-free
    f = torch.randn(2, 16, 3, 4, requires_grad=True)
    logits = head(f)
    w = head.weight.flatten(1)
    expected = 10.0 * F.cosine_similarity(f.unsqueeze(1), w[None, :, :, None, None], dim=2)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    # invariant to the scale of features and weights
    with torch.no_grad():
        head.weight.mul_(3.0)
    torch.testing.assert_close(head(2.5 * f), logits, rtol=1e-5, atol=1e-5)


def test_cosine_heads_finite_at_zero_features() -> None:
    """A ReLU can zero a whole feature vector: cosine 0, finite gradients."""
    for head in (CosineHead(8, 3), AbeTHead(8, 3)):
        f = torch.randn(2, 8, 2, 2)
        f[0, :, 0, 0] = 0.0
        f.requires_grad_(True)
        out = head.forward_with_extras(f)
        assert torch.equal(out.get("untempered_logits", out["logits"])[0, :, 0, 0], torch.zeros(3))
        out["logits"].sum().backward()
        assert torch.isfinite(f.grad).all() and torch.isfinite(head.weight.grad).all()


def test_abet_head_extras() -> None:
    torch.manual_seed(0)
    head = AbeTHead(16, 5).train()
    f = torch.randn(2, 16, 3, 4)
    out = head.forward_with_extras(f)
    assert sorted(out) == ["logits", "temperature", "untempered_logits"]
    cosine = F.cosine_similarity(f.unsqueeze(1), head.weight.flatten(1)[None, :, :, None, None], dim=2)
    torch.testing.assert_close(out["untempered_logits"], cosine, rtol=1e-5, atol=1e-5)
    conv, bn = head.temperature
    assert conv.bias is None and conv.weight.shape == (1, 16, 1, 1)
    head.eval()  # running stats were updated by the train-mode call; recompute the temperature in eval
    out = head.forward_with_extras(f)
    t = torch.sigmoid(bn(conv(f))) + 1e-12
    torch.testing.assert_close(out["temperature"], t)
    assert out["temperature"].shape == (2, 1, 3, 4)
    assert ((out["temperature"] > 0) & (out["temperature"] <= 1)).all()
    torch.testing.assert_close(out["logits"], out["untempered_logits"] / t)
    assert torch.equal(head(f), out["logits"])
    # The AbeT score on the head's output (AbeT's scoring_fns.abet_score): -logsumexp(cos / T), the
    # energy of the tempered logits with no temperature in front - not the untempered energy, not
    # -T logsumexp(cos / T).
    abet = compute_scores(out["logits"], ("abet",))["abet"]
    by_definition = -torch.logsumexp(cosine / t, dim=1)
    torch.testing.assert_close(abet, by_definition, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(abet, -torch.logsumexp(cosine, dim=1), atol=1e-3)
    assert not torch.allclose(abet, t[:, 0] * by_definition, atol=1e-3)


def test_heads_without_extras_return_logits_only() -> None:
    f = torch.randn(1, 8, 2, 2)
    for head in (StandardHead(8, 3), DistanceHead(8, 3), CosineHead(8, 3)):
        out = head.forward_with_extras(f)
        assert list(out) == ["logits"] and torch.equal(out["logits"], head(f))


def test_model_forward_with_extras_and_abet_score() -> None:
    torch.manual_seed(0)
    model = build_model(arch="deeplabv3plus", backbone="mobilenet_v2", head="abet", num_classes=6).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        logits = model(x)
        out = model.forward_with_extras(x)
        assert torch.equal(forward_with_extras(model, x)["logits"], out["logits"])
    assert torch.equal(out["logits"], logits)  # the same tensor plain forward gives
    assert out["untempered_logits"].shape == (1, 6, 64, 96) and out["temperature"].shape == (1, 1, 64, 96)
    # the AbeT score: -logsumexp(cos / T), the energy without the temperature in front
    abet = compute_scores(out["logits"], ("abet",))["abet"]
    # (the model upsamples the head's logits, so the tempered logits are out["logits"] here)
    torch.testing.assert_close(abet, -torch.logsumexp(out["logits"], dim=1))
    with_front_t = -out["temperature"][:, 0] * torch.logsumexp(out["logits"], dim=1)
    assert not torch.allclose(abet, with_front_t)
    # any module: the helper falls back to {"logits": model(x)}
    plain = nn.Conv2d(3, 2, 1)
    assert list(forward_with_extras(plain, x)) == ["logits"]


def test_heads_under_autocast_are_float32() -> None:
    f = torch.randn(1, 16, 2, 2)
    for head in (DistanceHead(16, 3), CosineHead(16, 3), AbeTHead(16, 3).eval()):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = head.forward_with_extras(f.bfloat16())
        assert all(v.dtype == torch.float32 for v in out.values()), type(head).__name__


# --- names and errors -----------------------------------------------------------------------------


def test_names() -> None:
    assert MODEL_NAMES["arch"] == ("deeplabv3plus", "deeplabv3", "unet", "my_fcn")
    assert MODEL_NAMES["backbone"] == ("mobilenet_v2", "resnet50", "resnet101", "resnet34", "plain")
    assert MODEL_NAMES["head"] == ("standard", "distance", "cosine", "abet")
    assert dict(ARCHS) == {
        "deeplabv3plus": ("mobilenet_v2", "resnet50", "resnet101"),
        "deeplabv3": ("mobilenet_v2", "resnet50", "resnet101"),
        "unet": ("resnet34", "plain"),
        "my_fcn": ("plain",),
    }
    assert len(model_grid()) == 9
    assert valid_output_strides("deeplabv3", "resnet50") == (16, 8)
    assert valid_output_strides("unet", "resnet34") == (32,)
    assert valid_output_strides("unet", "plain") == (16,)
    assert valid_output_strides("my_fcn", "plain") == (8,)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (
            {"backbone": "resnet18"},
            r"unknown backbone 'resnet18'; valid backbones: mobilenet_v2, resnet50, resnet101, resnet34, plain",
        ),
        ({"head": "arcface"}, r"unknown head 'arcface'; valid heads: standard, distance, cosine, abet"),
        ({"arch": "pspnet"}, r"unknown arch 'pspnet'; valid archs: deeplabv3plus, deeplabv3, unet, my_fcn"),
        (
            {"arch": "unet", "backbone": "mobilenet_v2"},
            r"arch 'unet' does not support backbone 'mobilenet_v2'; valid backbones for unet: resnet34, plain",
        ),
        ({"arch": "deeplabv3plus", "backbone": "plain"}, r"valid backbones for deeplabv3plus: mobilenet_v2"),
        ({"arch": "my_fcn", "backbone": "resnet34"}, r"valid backbones for my_fcn: plain"),
        ({"output_stride": 32}, r"valid output strides: 16, 8"),
        (
            {"arch": "unet", "backbone": "resnet34", "output_stride": 16},
            r"fixed output stride of 32; pass output_stride=None \(or 32\)",
        ),
        ({"num_classes": 0}, r"num_classes must be a positive int"),
        ({"base_width": 16}, r"base_width applies to the plain encoder only"),
        ({"arch": "my_fcn", "backbone": "plain", "base_width": 1}, r"base_width must be an int >= 2"),
        ({"upsampling": "bilinear"}, r"upsampling applies to the U-Net decoders only"),
        ({"arch": "unet", "backbone": "plain", "upsampling": "nearest"}, r"valid: transposed, bilinear"),
        ({"arch": "unet", "backbone": "resnet34", "vainf_padding": True}, r"vainf_padding applies to"),
        (
            {"arch": "unet", "backbone": "resnet34", "separable_conv": True},
            r"separable_conv applies to the DeepLab",
        ),
    ],
)
def test_unknown_names_raise(kwargs: dict[str, object], pattern: str) -> None:
    args = {"num_classes": 13, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        build_model(**args)


# --- golden outputs -------------------------------------------------------------------------------

#: (arch, backbone, train mode) -> [mean, std, mean over classes at pixel (10, 20), max of class 5] of
#: the logits of a seeded standard-head model on a seeded 64x64 input (CPU, float32; image 0 of a batch
#: of 2 in train mode, where BatchNorm uses batch statistics and DeepLab's untrained eval-mode features
#: would leave little more than the head's bias). Made by scripts/make_golden.py, which prints this
#: dict to paste and checks it (--check; last checked with torch 2.14.1, CPU): the recipe is its
#: golden_summary. Regenerate only when a model change is meant to change the outputs.
GOLDEN = {
    ("deeplabv3plus", "mobilenet_v2", False): [0.00901528, 0.0354386, 0.00916091, -0.00541802],
    ("deeplabv3plus", "mobilenet_v2", True): [-0.116363, 0.867947, -0.00330992, 0.221129],
    ("deeplabv3", "mobilenet_v2", True): [-0.117066, 0.826351, -0.078626, 1.39527],
    ("unet", "resnet34", False): [-0.822443, 7.47137, 0.208472, 3.59311],
    ("unet", "plain", False): [0.144951, 0.943603, 0.3724, 1.00439],
    ("my_fcn", "plain", False): [0.400845, 1.07274, 0.584382, 4.14335],
}


@pytest.mark.parametrize(("arch", "backbone", "train"), list(GOLDEN))
def test_seeded_output_is_stable(arch: str, backbone: str, train: bool) -> None:
    """Seeded weights and input give the same logits as when this test was written (CPU, float32)."""
    summary = make_golden.golden_summary(arch=arch, backbone=backbone, train=train)
    make_golden.assert_matches_golden(summary, GOLDEN[arch, backbone, train])


def test_golden_models_are_the_scripts() -> None:
    assert list(GOLDEN) == list(make_golden.MODELS)
    assert make_golden.read_golden(Path(__file__)) == GOLDEN  # what --check compares with


def test_make_golden_check_passes(capsys: pytest.CaptureFixture[str]) -> None:
    """`scripts/make_golden.py --check` on one model (the six run above) and the three key lists."""
    assert make_golden.main(["--check", "--models", "my_fcn/plain/eval"]) == 0
    out = capsys.readouterr().out
    assert "PASS golden my_fcn/plain/eval" in out and out.count("PASS keys") == 3
    assert out.strip().endswith("all checks passed")


def test_make_golden_check_fails_on_a_changed_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = {**GOLDEN, ("my_fcn", "plain", False): [0.401845, *GOLDEN["my_fcn", "plain", False][1:]]}
    golden_file = tmp_path / "test_golden.py"
    golden_file.write_text(make_golden.golden_literal(changed) + "\n")  # the printed form reads back
    assert make_golden.read_golden(golden_file) == changed
    argv = ["--check", "--models", "my_fcn/plain/eval", "--golden-file", str(golden_file), "--no-keys"]
    assert make_golden.main(argv) == 1
    assert "FAIL golden my_fcn/plain/eval" in capsys.readouterr().out


def test_make_golden_check_fails_on_a_changed_key_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key list that lost a line: the model no longer matches it (the script never rewrites it)."""
    fixtures = tmp_path / "fixtures"
    shutil.copytree(FIXTURES, fixtures)
    path = fixtures / make_golden.KEYS_FILES["mobilenet_v2"]
    lines = path.read_text().splitlines(keepends=True)
    removed = lines[5].split()[0]
    path.write_text("".join(lines[:5] + lines[6:]))
    argv = ["--check", "--models", "my_fcn/plain/eval", "--fixtures", str(fixtures)]
    assert make_golden.main([*argv, "--reference-dir", str(FIXTURES)]) == 1  # differs from the reference
    assert "differs from the reference copy" in capsys.readouterr().out
    assert make_golden.main(argv) == 1
    out = capsys.readouterr().out
    assert "FAIL keys deeplabv3plus/mobilenet_v2" in out and f"not in the list [{removed!r}]" in out
    assert out.count("PASS keys") == 2


@pytest.mark.parametrize("arch", ["deeplabv3plus", "deeplabv3"])
def test_separable_conv_layout(arch: str) -> None:
    """VainF's --separable_conv: every 3x3 conv of the decoder becomes depthwise + pointwise
    (keys ``...body.0``, ``...body.1``), the backbone and 1x1 convs stay; fewer parameters."""
    dense = build_model(arch=arch, backbone="mobilenet_v2", head="distance", num_classes=13)
    sep = build_model(
        arch=arch, backbone="mobilenet_v2", head="distance", num_classes=13, separable_conv=True
    )
    dense_keys, sep_keys = set(dense.state_dict()), set(sep.state_dict())
    assert {k for k in dense_keys if k.startswith("backbone.")} == {
        k for k in sep_keys if k.startswith("backbone.")
    }
    converted = sorted(k for k in sep_keys if ".body." in k)
    prefix = "classifier.aspp" if arch == "deeplabv3plus" else "classifier.classifier.0"
    for rate_branch in (1, 2, 3):
        depthwise = sep.state_dict()[f"{prefix}.convs.{rate_branch}.0.body.0.weight"]
        assert depthwise.shape == (320, 1, 3, 3)  # one 3x3 filter per input channel
        assert f"{prefix}.convs.{rate_branch}.0.body.1.weight" in sep_keys
    assert len(converted) == 8  # 3 ASPP rates + the 3x3 after them, two convs each
    assert count_parameters(sep) < count_parameters(dense)
    x = torch.randn(2, 3, 64, 64)  # batch 2: the ASPP pooling branch's BatchNorm needs 2 values
    out = sep(x)
    assert out.shape == (2, 13, 64, 64)
    out.sum().backward()
    assert all(p.grad is not None for p in sep.parameters())
