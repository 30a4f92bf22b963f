"""network/: DeepLabv3+ builds, VainF state-dict compatibility, checkpoint loading, heads."""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from network import (
    BACKBONE_NAMES,
    HEAD_NAMES,
    MODEL_NAMES,
    CheckpointMismatchError,
    DistanceHead,
    StandardHead,
    build_model,
    count_parameters,
    load_pretrained,
    read_state_dict,
)

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_NAME = {"mobilenet_v2": "mobilenet", "resnet50": "resnet50", "resnet101": "resnet101"}
HEAD_KEY = "classifier.classifier.3"


def fixture_keys(backbone: str) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) pairs of the VainF 19-class OS16 checkpoint, in file order ("scalar" = 0-dim)."""
    pairs = []
    path = FIXTURES / f"deeplabv3plus_{FIXTURE_NAME[backbone]}_os16_19classes.keys.txt"
    for line in path.read_text().splitlines():
        key, shape = line.split()
        pairs.append((key, () if shape == "scalar" else tuple(int(n) for n in shape.split("x"))))
    return pairs


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


# --- builds, forward, backward -------------------------------------------------------------------


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("head", HEAD_NAMES)
@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_forward_backward(backbone: str, head: str, output_stride: int) -> None:
    torch.manual_seed(0)
    model = build_model(backbone=backbone, head=head, num_classes=13, output_stride=output_stride)
    if backbone == "mobilenet_v2":
        model.train()
        x = torch.randn(2, 3, 64, 64)
    else:  # ResNets are heavy: one image, BatchNorm in eval mode
        model.eval()
        x = torch.randn(1, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (x.shape[0], 13, 64, 64)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    head_weight = model.head.prototypes if head == "distance" else model.head.weight
    assert head_weight.grad.abs().sum() > 0
    if head == "distance":
        assert (logits <= 0).all()


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


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
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


# --- names ----------------------------------------------------------------------------------------


def test_names() -> None:
    assert MODEL_NAMES["arch"] == ("deeplabv3plus",)
    assert MODEL_NAMES["backbone"] == ("mobilenet_v2", "resnet50", "resnet101")
    assert MODEL_NAMES["head"] == ("standard", "distance")


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (
            {"backbone": "resnet18"},
            r"unknown backbone 'resnet18'; valid backbones: mobilenet_v2, resnet50, resnet101",
        ),
        ({"head": "cosine"}, r"unknown head 'cosine'; valid heads: standard, distance"),
        ({"arch": "pspnet"}, r"unknown arch 'pspnet'; valid archs: deeplabv3plus"),
        ({"output_stride": 32}, r"valid output strides: 16, 8"),
        ({"num_classes": 0}, r"num_classes must be a positive int"),
    ],
)
def test_unknown_names_raise(kwargs: dict[str, object], pattern: str) -> None:
    args = {"num_classes": 13, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        build_model(**args)


# --- golden output --------------------------------------------------------------------------------


def test_seeded_output_is_stable() -> None:
    """Seeded weights and input give the same logits as when this test was written (CPU, float32)."""
    torch.manual_seed(0)
    model = build_model(backbone="mobilenet_v2", head="standard", num_classes=13).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
    summary = torch.stack([logits.mean(), logits.std(), logits[0, :, 10, 20].mean(), logits[0, 5].max()])
    golden = torch.tensor([0.00901528, 0.0354386, 0.00916091, -0.00541802])
    torch.testing.assert_close(summary, golden, rtol=1e-3, atol=1e-6)
