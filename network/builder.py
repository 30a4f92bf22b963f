"""``build_model``: architecture x backbone x head by name, and small model utilities.

Architectures and the backbones (encoders) each supports (``ARCHS``):

========================  =================================  ===============================
arch                      backbones                          output stride
========================  =================================  ===============================
``deeplabv3plus``         mobilenet_v2, resnet50, resnet101  16 (default) or 8 (dilated)
``deeplabv3``             mobilenet_v2, resnet50, resnet101  16 (default) or 8 (dilated)
``unet``                  resnet34 (BDD100K seed)            32 (fixed)
``unet``                  plain (Ronneberger U-Net)          16 (fixed: 4 max-pools)
``my_fcn``                plain (Cityscapes seed's my_FCN)   8 (fixed: 3 max-pools)
========================  =================================  ===============================

Every head of ``HEAD_NAMES`` works on every architecture. "plain" is the architecture's own
from-scratch encoder of double 3x3 conv blocks (no pretrained weights exist for it).

- ``unet`` + ``resnet34``: torchvision ResNet-34 encoder (skips at strides 2, 4, 8, 16, bottleneck at
  32) and a decoder of bilinear x2 upsampling + concatenation + double 3x3 conv with 256, 128, 64, 32,
  32 channels; the last block (no skip) is at full resolution, so the head sees 32-channel features.
- ``unet`` + ``plain``: Ronneberger's U-Net with "same" padding and BatchNorm: widths 64, 128, 256,
  512, 1024 (``base_width`` x 2**i), 2x2 stride-2 transposed convolutions up (or bilinear), head on
  ``base_width`` channels at full resolution (about 31 M parameters).
- ``my_fcn`` + ``plain``: the same blocks, shallower and narrower: 3 max-pool levels and
  ``base_width`` 32 (widths 32, 64, 128, bottleneck 256; about 1.9 M parameters). The seed describes
  my_FCN only as a smaller U-Net-like net (contracting path, bottleneck, expansive path with
  MaxPool2d down, ConvTranspose2d up, double 3x3 convs, crop-and-concatenate skips, 1x1 classifier);
  depth 3 / width 32 is our choice of "shallow".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from .backbones import BACKBONES, build_backbone
from .checkpoint import load_pretrained
from .deeplab import DeepLabV3Decoder, DeepLabV3PlusDecoder
from .heads import HEADS, build_head
from .layers import convert_to_separable
from .model import SegmentationModel
from .names import (
    ARCH_NAMES,
    ARCHS,
    BACKBONE_NAMES,
    DILATED_BACKBONES,
    HEAD_NAMES,
    MODEL_NAMES,
    OUTPUT_STRIDES,
    PLAIN,
    PRETRAINED_SOURCES,
    RESNET_ENCODERS,
)
from .unet import UPSAMPLING_MODES, PlainEncoder, ResNetEncoder, UNetDecoder

__all__ = [
    "ARCHS",
    "ARCH_NAMES",
    "ASPP_RATES",
    "BACKBONE_NAMES",
    "HEAD_NAMES",
    "MODEL_NAMES",
    "OUTPUT_STRIDES",
    "PRETRAINED_SOURCES",
    "build_model",
    "count_parameters",
    "head_key_of",
    "infer_num_classes",
    "model_grid",
    "valid_output_strides",
]

#: ASPP atrous rates per output stride (DeepLab's published settings).
ASPP_RATES: dict[int, tuple[int, int, int]] = {16: (6, 12, 18), 8: (12, 24, 36)}
_DILATED = DILATED_BACKBONES
#: U-Net encoders from torchvision: name -> (factory, ImageNet weights).
_RESNET_ENCODERS = {"resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1)}
_PLAIN = PLAIN
for _names, _table in (
    (DILATED_BACKBONES, BACKBONES),
    (HEAD_NAMES, HEADS),
    (RESNET_ENCODERS, _RESNET_ENCODERS),
):
    if tuple(_table) != _names:  # network.names is the one list of names; the tables must follow it
        raise RuntimeError(f"network.names lists {_names}, the model tables {tuple(_table)}")
#: Plain-encoder settings per architecture: depth (max-pools), default base width, default upsampling.
_PLAIN_SETTINGS = {"unet": (4, 64, "transposed"), "my_fcn": (3, 32, "transposed")}
#: Decoder block widths of the ResNet U-Net, deepest first (the last block is at full resolution).
RESNET_UNET_DECODER_CHANNELS: tuple[int, ...] = (256, 128, 64, 32, 32)
#: State-dict prefix of the head per architecture.
_HEAD_KEYS = {
    "deeplabv3plus": f"classifier.{DeepLabV3PlusDecoder.head_key}",
    "deeplabv3": f"classifier.{DeepLabV3Decoder.head_key}",
    "unet": f"classifier.{UNetDecoder.head_key}",
    "my_fcn": f"classifier.{UNetDecoder.head_key}",
}


def model_grid() -> list[tuple[str, str]]:
    """Every valid (arch, backbone) pair, in ``ARCHS`` order."""
    return [(arch, backbone) for arch, backbones in ARCHS.items() for backbone in backbones]


def valid_output_strides(arch: str, backbone: str) -> tuple[int, ...]:
    """Output strides ``build_model`` accepts for this pair; the first is the default.

    DeepLab's dilated backbones offer 16 and 8; the U-Nets are not dilated and have one fixed stride
    (their deepest encoder map): 32 for a ResNet encoder, ``2**depth`` for the plain one.
    """
    _check_arch_backbone(arch, backbone)
    if arch in ("deeplabv3plus", "deeplabv3"):
        return OUTPUT_STRIDES
    if backbone == _PLAIN:
        return (2 ** _PLAIN_SETTINGS[arch][0],)
    return (32,)


def head_key_of(arch: str) -> str:
    """State-dict prefix of the head of ``arch`` models, e.g. "classifier.classifier.3"."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid archs: {', '.join(ARCHS)}")
    return _HEAD_KEYS[arch]


def infer_num_classes(state_dict: Mapping[str, torch.Tensor], *, arch: str = "deeplabv3plus") -> int:
    """Number of classes of a saved model, read from its head's weights (any head kind).

    Raises:
        ValueError: no head parameter under ``head_key_of(arch)`` in the state dict.
    """
    prefix = head_key_of(arch)
    for name in ("weight", "prototypes"):  # standard / cosine / abet heads, distance head
        tensor = state_dict.get(f"{prefix}.{name}")
        if tensor is not None:
            return int(tensor.shape[0])
    raise ValueError(f"no head weights under {prefix!r} in the state dict (is arch={arch!r} right?)")


def _check_arch_backbone(arch: str, backbone: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid archs: {', '.join(ARCHS)}")
    if backbone not in BACKBONE_NAMES:
        raise ValueError(f"unknown backbone {backbone!r}; valid backbones: {', '.join(BACKBONE_NAMES)}")
    if backbone not in ARCHS[arch]:
        raise ValueError(
            f"arch {arch!r} does not support backbone {backbone!r}; "
            f"valid backbones for {arch}: {', '.join(ARCHS[arch])}"
        )


def _resolve_pretrained(
    pretrained: str | PathLike[str] | None, pretrained_backbone: bool | None, backbone: str
) -> str:
    """ "none", "imagenet" or the checkpoint path, from the two (legacy and new) arguments."""
    if pretrained is None:
        source = "imagenet" if pretrained_backbone else "none"
    else:
        source = os.fspath(pretrained)
        if pretrained_backbone is not None and pretrained_backbone != (source == "imagenet"):
            raise ValueError(
                f"conflicting arguments: pretrained={source!r} and pretrained_backbone={pretrained_backbone}; "
                "pass only pretrained"
            )
    if source not in PRETRAINED_SOURCES and not Path(source).is_file():
        raise ValueError(
            f"pretrained must be 'none', 'imagenet' or an existing checkpoint file; got {source!r} "
            "(no such file)"
        )
    if source == "imagenet" and backbone == _PLAIN:
        raise ValueError("backbone 'plain' has no ImageNet weights; use pretrained='none' or a checkpoint")
    return source


def build_model(
    *,
    arch: str = "deeplabv3plus",
    backbone: str = "mobilenet_v2",
    head: str = "standard",
    num_classes: int,
    output_stride: int | None = None,
    pretrained: str | PathLike[str] | None = None,
    pretrained_backbone: bool | None = None,
    vainf_padding: bool = False,
    base_width: int | None = None,
    upsampling: str | None = None,
    separable_conv: bool = False,
) -> SegmentationModel:
    """Build any model of the project; DeepLab state dicts match VainF/DeepLabV3Plus-Pytorch's.

    Args:
        arch: one of ``ARCH_NAMES`` ("deeplabv3plus", "deeplabv3", "unet", "my_fcn").
        backbone: one of ``ARCHS[arch]`` (see the module docstring): "mobilenet_v2", "resnet50",
            "resnet101" for DeepLab; "resnet34" or "plain" for unet; "plain" for my_fcn.
        head: one of ``HEAD_NAMES``: "standard" (1x1 conv), "distance" (-Euclidean distance to
            learnable class prototypes), "cosine" (PAnS: 10 x cosine similarity, no bias), "abet"
            (cosine logits over a learned per-pixel temperature; ``forward_with_extras`` exposes the
            untempered logits and the temperature).
        num_classes: number of output classes.
        output_stride: DeepLab: 16 (ASPP rates 6/12/18, the default) or 8 (12/24/36; sharper, about
            3x slower). U-Nets have one fixed stride (``valid_output_strides``); pass None or it.
        pretrained: where the starting weights come from: "none" (default), "imagenet" (torchvision's
            ImageNet weights for the backbone, downloaded on first use; decoder and head fresh), or a
            checkpoint file (VainF's or ours; loaded with ``load_pretrained``: every key must fit, the
            head only when it has the same kind and shapes, else it stays fresh; the ``LoadReport``
            is kept as ``model.load_report``).
        pretrained_backbone: legacy form of ``pretrained``: True means "imagenet", False "none".
        vainf_padding: DeepLab + MobileNetV2 only: pad exactly as VainF's MobileNetV2 does, to reproduce
            a VainF checkpoint's outputs bit for bit (see ``MobileNetV2Backbone``).
        base_width: plain encoder only: channels of the first block (default 64 for unet, 32 for
            my_fcn); the widths double at every level.
        separable_conv: DeepLab only: depthwise-separable 3x3 convolutions in the ASPP and the
            decoder (VainF's ``--separable_conv``; the layout of segmentation_models_pytorch's
            DeepLabV3Plus): about a quarter of the decoder's multiply-adds, keys ``...body.{0,1}``.
        upsampling: U-Net decoders only: "transposed" (2x2 stride-2 transposed conv; the default for
            the plain encoder) or "bilinear" (the default for the ResNet encoder).

    Returns:
        A ``SegmentationModel``: (B, 3, H, W) normalised images -> (B, num_classes, H, W) logits;
        ``model.config`` holds the arguments (``build_model(**model.config)`` rebuilds it).

    Raises:
        ValueError: an unknown name, an unsupported combination or value, conflicting ``pretrained``
            arguments, or a checkpoint path that does not exist; the message lists the valid values.
        network.CheckpointMismatchError: the checkpoint does not fit the model.
    """
    _check_arch_backbone(arch, backbone)
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; valid heads: {', '.join(HEADS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    strides = valid_output_strides(arch, backbone)
    if output_stride is None:
        output_stride = strides[0]
    elif output_stride not in strides:
        if len(strides) == 1:
            raise ValueError(
                f"arch {arch!r} with backbone {backbone!r} has a fixed output stride of {strides[0]}; "
                f"pass output_stride=None (or {strides[0]}), got {output_stride!r}"
            )
        raise ValueError(
            f"unsupported output_stride {output_stride!r}; valid output strides: {', '.join(map(str, strides))}"
        )
    is_deeplab = arch in ("deeplabv3plus", "deeplabv3")
    if vainf_padding and not (is_deeplab and backbone == "mobilenet_v2"):
        raise ValueError("vainf_padding applies to the DeepLab MobileNetV2 backbone only")
    if separable_conv and not is_deeplab:
        raise ValueError(f"separable_conv applies to the DeepLab decoders only, not to arch {arch!r}")
    if base_width is not None and backbone != _PLAIN:
        raise ValueError(f"base_width applies to the plain encoder only, not to backbone {backbone!r}")
    if base_width is not None and (
        isinstance(base_width, bool) or not isinstance(base_width, int) or base_width < 2
    ):
        raise ValueError(f"base_width must be an int >= 2, got {base_width!r}")
    if upsampling is not None:
        if is_deeplab:
            raise ValueError(f"upsampling applies to the U-Net decoders only, not to arch {arch!r}")
        if upsampling not in UPSAMPLING_MODES:
            raise ValueError(f"unknown upsampling {upsampling!r}; valid: {', '.join(UPSAMPLING_MODES)}")
    source = _resolve_pretrained(pretrained, pretrained_backbone, backbone)
    imagenet = source == "imagenet"

    config: dict[str, object] = {
        "arch": arch,
        "backbone": backbone,
        "head": head,
        "num_classes": num_classes,
        "output_stride": output_stride,
        "pretrained": source,
    }
    if is_deeplab:
        body = build_backbone(
            backbone, output_stride=output_stride, pretrained=imagenet, vainf_padding=vainf_padding
        )
        # The head is built before the decoder (the order the random initialisation was drawn in).
        head_module = build_head(
            head, in_channels=DeepLabV3PlusDecoder.feature_channels, num_classes=num_classes
        )
        rates = ASPP_RATES[output_stride]
        if arch == "deeplabv3plus":
            decoder = DeepLabV3PlusDecoder(body.out_channels, body.low_level_channels, rates, head_module)
        else:
            decoder = DeepLabV3Decoder(body.out_channels, rates, head_module)
        config["vainf_padding"] = vainf_padding
        if separable_conv:
            convert_to_separable(decoder)
            config["separable_conv"] = True
    elif backbone == _PLAIN:
        depth, default_width, default_upsampling = _PLAIN_SETTINGS[arch]
        config["base_width"] = base_width = base_width or default_width
        config["upsampling"] = upsampling = upsampling or default_upsampling
        body = PlainEncoder(depth=depth, base_width=base_width)
        decoder_channels = body.channels[:-1][::-1]
        head_module = build_head(head, in_channels=decoder_channels[-1], num_classes=num_classes)
        decoder = UNetDecoder(body.channels, decoder_channels, head_module, upsampling=upsampling)
    else:
        factory, weights = _RESNET_ENCODERS[backbone]
        config["upsampling"] = upsampling = upsampling or "bilinear"
        body = ResNetEncoder(factory(weights=weights if imagenet else None))
        decoder_channels = RESNET_UNET_DECODER_CHANNELS
        head_module = build_head(head, in_channels=decoder_channels[-1], num_classes=num_classes)
        decoder = UNetDecoder(body.channels, decoder_channels, head_module, upsampling=upsampling)
    model = SegmentationModel(body, decoder, config=config)
    model.load_report = load_pretrained(model, source) if source not in PRETRAINED_SOURCES else None
    return model


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements (buffers such as BatchNorm running stats not included).

    Args:
        model: any module.
        trainable_only: count only parameters with ``requires_grad``.

    Returns:
        The total number of scalars in ``model.parameters()``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
