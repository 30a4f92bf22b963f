"""Feature extractors for DeepLab: torchvision ResNet-50/101 and MobileNetV2, dilated to stride 16 or 8.

Every backbone maps an image batch to ``{"low_level": ..., "out": ...}``:

- ``low_level``: stride-4 features for the DeepLabv3+ decoder (ResNet ``layer1``, 256 channels;
  MobileNetV2 ``features[:4]``, 24 channels);
- ``out``: the deepest features at the requested output stride (ResNet ``layer4``, 2048 channels;
  MobileNetV2 ``features[4:18]``, 320 channels).

Module names follow VainF/DeepLabV3Plus-Pytorch, so their checkpoints load key for key:
``backbone.conv1 ... backbone.layer4`` for ResNet, ``backbone.low_level_features.{0..3}`` and
``backbone.high_level_features.{4..17}`` for MobileNetV2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models
from torchvision.models.mobilenetv2 import InvertedResidual

from .layers import adopt_resnet

__all__ = ["BACKBONES", "Backbone", "MobileNetV2Backbone", "ResNetBackbone", "build_backbone"]


class Backbone(nn.Module):
    """Base class: a feature extractor that returns ``{"low_level": ..., "out": ...}``.

    Attributes:
        low_level_channels: channels of the ``low_level`` map (stride 4).
        out_channels: channels of the ``out`` map (stride ``output_stride``).
        output_stride: input size / ``out`` size (8 or 16).
    """

    low_level_channels: int
    out_channels: int
    output_stride: int


class ResNetBackbone(Backbone):
    """torchvision ResNet without ``avgpool``/``fc``; the last stage(s) dilated instead of strided.

    Output stride 16 dilates ``layer4`` (``replace_stride_with_dilation=[False, False, True]``),
    output stride 8 dilates ``layer3`` and ``layer4`` (``[False, True, True]``).
    """

    def __init__(self, resnet: models.ResNet, *, output_stride: int) -> None:
        super().__init__()
        adopt_resnet(self, resnet)
        self.low_level_channels = resnet.layer1[-1].conv3.out_channels
        self.out_channels = resnet.layer4[-1].conv3.out_channels
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extract the decoder's two feature maps.

        Args:
            x: normalised images.

        Returns:
            ``{"low_level": layer1 output, "out": layer4 output}``.

        Shape:
            - x: (B, 3, H, W)
            - low_level: (B, 256, ceil(H/4), ceil(W/4))
            - out: (B, 2048, ~H/output_stride, ~W/output_stride)
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low_level = self.layer1(x)
        x = self.layer4(self.layer3(self.layer2(low_level)))
        return {"low_level": low_level, "out": x}


class _PadThenSequential(nn.Sequential):
    """``nn.Sequential`` that zero-pads its input first (VainF's MobileNetV2 padding scheme).

    Children keep their indices, so the state-dict keys are those of the wrapped ``Sequential``.
    """

    def __init__(self, padding: int, *modules: nn.Module) -> None:
        super().__init__(*modules)
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad by ``padding`` pixels on every side, then run the layers. Shape: (B, C, H, W) -> layers'."""
        p = self.padding
        return super().forward(F.pad(x, (p, p, p, p)))

    def extra_repr(self) -> str:
        return f"padding={self.padding}"


class MobileNetV2Backbone(Backbone):
    """torchvision MobileNetV2 ``features[:18]``, split into low-level (0..3) and high-level (4..17) parts.

    ``features[18]`` (the 1x1 conv to 1280 channels) and the ImageNet classifier are dropped.
    Strides past ``output_stride`` are turned into dilation the way VainF's MobileNetV2 does it: the
    first block of a stage that would exceed the output stride gets stride 1 and keeps the previous
    dilation; the dilation is multiplied by the dropped stride for all later blocks (output stride 16:
    block 14 stride 1 / dilation 1, blocks 15..17 dilation 2; output stride 8: block 7 stride 1 /
    dilation 1, blocks 8..14 dilation 2, blocks 15..17 dilation 4). This mirrors torchvision's
    ``replace_stride_with_dilation`` for ResNet.

    With ``vainf_padding=False`` (default) the depthwise convolutions pad themselves (padding =
    dilation), as torchvision does. With ``vainf_padding=True`` the network computes exactly what
    VainF's MobileNetV2 computes: the stem conv has no padding and every inverted-residual block pads
    its input by ``dilation`` pixels *before* its 1x1 expansion conv (so the border sees
    ReLU6(BN(0)) instead of zeros). Use it to reproduce a VainF checkpoint's outputs bit for bit;
    the parameters and state-dict keys are the same either way.
    """

    def __init__(
        self, mobilenet: models.MobileNetV2, *, output_stride: int, vainf_padding: bool = False
    ) -> None:
        super().__init__()
        features = mobilenet.features
        _dilate_mobilenet_v2(features, output_stride=output_stride, vainf_padding=vainf_padding)
        # Slicing an nn.Sequential keeps the original indices as names: high_level_features.4 ... .17.
        self.low_level_features = features[:4]
        self.high_level_features = features[4:18]
        self.low_level_channels = features[3].out_channels
        self.out_channels = features[17].out_channels
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extract the decoder's two feature maps.

        Args:
            x: normalised images.

        Returns:
            ``{"low_level": features[:4] output, "out": features[4:18] output}``.

        Shape:
            - x: (B, 3, H, W)
            - low_level: (B, 24, ~H/4, ~W/4)
            - out: (B, 320, ~H/output_stride, ~W/output_stride)
        """
        low_level = self.low_level_features(x)
        return {"low_level": low_level, "out": self.high_level_features(low_level)}


def _dilate_mobilenet_v2(features: nn.Sequential, *, output_stride: int, vainf_padding: bool) -> None:
    """Turn strides beyond ``output_stride`` into dilation in place (see ``MobileNetV2Backbone``)."""
    stem_conv = features[0][0]
    if vainf_padding:
        stem_conv.padding = (0, 0)
    current_stride = stem_conv.stride[0]
    dilation = 1
    for index in range(1, 18):
        block = features[index]
        assert isinstance(block, InvertedResidual), f"features[{index}] is {type(block).__name__}"
        dw_conv = block.conv[-3][0]  # conv = [pw expansion,] dw (conv, bn, relu6), pw-linear, bn
        stride = dw_conv.stride[0]
        block_dilation = dilation
        if stride > 1:
            if current_stride >= output_stride:
                dilation *= stride  # later blocks of this stage dilate; this one keeps the old dilation
                stride = 1
            else:
                current_stride *= stride
        dw_conv.stride = (stride, stride)
        dw_conv.dilation = (block_dilation, block_dilation)
        block.stride = stride
        if vainf_padding:
            dw_conv.padding = (0, 0)
            block.conv = _PadThenSequential(block_dilation, *block.conv)
        else:
            dw_conv.padding = (block_dilation, block_dilation)


def _resnet(name: str, factory: Callable[..., models.ResNet], weights: object) -> Callable[..., Backbone]:
    def build(*, output_stride: int, pretrained: bool, vainf_padding: bool = False) -> Backbone:
        # VainF's ResNet is torchvision's, so vainf_padding changes nothing here.
        dilate = [False, False, True] if output_stride == 16 else [False, True, True]
        resnet = factory(weights=weights if pretrained else None, replace_stride_with_dilation=dilate)
        return ResNetBackbone(resnet, output_stride=output_stride)

    build.__name__ = f"build_{name}"
    return build


def _mobilenet_v2(*, output_stride: int, pretrained: bool, vainf_padding: bool = False) -> Backbone:
    weights = models.MobileNet_V2_Weights.IMAGENET1K_V1 if pretrained else None
    return MobileNetV2Backbone(
        models.mobilenet_v2(weights=weights), output_stride=output_stride, vainf_padding=vainf_padding
    )


#: Backbone name -> builder ``(*, output_stride, pretrained, vainf_padding) -> Backbone``.
#: ImageNet weights are torchvision's V1 ones, the same files VainF starts from.
BACKBONES: dict[str, Callable[..., Backbone]] = {
    "mobilenet_v2": _mobilenet_v2,
    "resnet50": _resnet("resnet50", models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": _resnet("resnet101", models.resnet101, models.ResNet101_Weights.IMAGENET1K_V1),
}


def build_backbone(
    name: str, *, output_stride: int = 16, pretrained: bool = False, vainf_padding: bool = False
) -> Backbone:
    """Build a dilated backbone by name.

    Args:
        name: one of ``BACKBONES`` ("mobilenet_v2", "resnet50", "resnet101").
        output_stride: 16 or 8.
        pretrained: start from torchvision's ImageNet weights (downloads them on first use).
        vainf_padding: MobileNetV2 only, see ``MobileNetV2Backbone``; ignored for ResNet.

    Returns:
        A ``Backbone`` whose forward returns ``{"low_level": ..., "out": ...}``.

    Raises:
        ValueError: unknown name or output stride; the message lists the valid values.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}")
    if output_stride not in (8, 16):
        raise ValueError(f"unsupported output_stride {output_stride!r}; valid output strides: 8, 16")
    return BACKBONES[name](output_stride=output_stride, pretrained=pretrained, vainf_padding=vainf_padding)
