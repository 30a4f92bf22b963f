"""DeepLabv3+ decoder (ASPP + low-level skip) and the model that wraps backbone and decoder.

Module names and layer order follow VainF/DeepLabV3Plus-Pytorch (``classifier.project``,
``classifier.aspp.convs.{0..4}``, ``classifier.aspp.project``, ``classifier.classifier.{0..3}``), so
their checkpoints load key for key. The last layer, ``classifier.classifier.3``, is the head and can be
any module from ``network.heads``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ASPP", "DeepLabV3PlusDecoder", "SegmentationModel"]

ASPP_CHANNELS = 256
LOW_LEVEL_PROJECTION_CHANNELS = 48


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1
) -> list[nn.Module]:
    padding = dilation * (kernel_size - 1) // 2
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class ASPPPooling(nn.Sequential):
    """Image-level branch of ASPP: global average pool, 1x1 conv + BN + ReLU, broadcast back."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (B, in_channels, H, W) -> (B, out_channels, H, W), constant over H, W."""
        y = super().forward(x)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 conv, three 3x3 atrous convs, image pooling; then 1x1 project.

    Args:
        in_channels: channels of the backbone's ``out`` map.
        atrous_rates: the three dilation rates (6, 12, 18 at output stride 16; 12, 24, 36 at 8).
        out_channels: channels of every branch and of the output (256).
    """

    def __init__(
        self, in_channels: int, atrous_rates: Sequence[int], out_channels: int = ASPP_CHANNELS
    ) -> None:
        super().__init__()
        if len(atrous_rates) != 3:
            raise ValueError(f"ASPP needs three atrous rates, got {tuple(atrous_rates)}")
        branches = [nn.Sequential(*_conv_bn_relu(in_channels, out_channels, 1))]
        branches += [
            nn.Sequential(*_conv_bn_relu(in_channels, out_channels, 3, rate)) for rate in atrous_rates
        ]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            *_conv_bn_relu(len(branches) * out_channels, out_channels, 1),
            nn.Dropout(0.1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (B, in_channels, H, W) -> (B, out_channels, H, W)."""
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabV3PlusDecoder(nn.Module):
    """DeepLabv3+ decoder: ASPP on the deep features, upsampled and fused with projected low-level ones.

    ``classifier`` = [3x3 conv (48 + 256 -> 256), BN, ReLU, head]; the head (index 3) maps the 256
    fused channels to class logits.

    Args:
        in_channels: channels of the backbone's ``out`` map (2048 ResNet, 320 MobileNetV2).
        low_level_channels: channels of the backbone's ``low_level`` map (256 ResNet, 24 MobileNetV2).
        atrous_rates: ASPP rates.
        head: module mapping (B, 256, H, W) to (B, num_classes, H, W).
    """

    #: State-dict prefix of the head inside this module.
    head_key = "classifier.3"
    #: Channels the head receives.
    feature_channels = ASPP_CHANNELS

    def __init__(
        self, in_channels: int, low_level_channels: int, atrous_rates: Sequence[int], head: nn.Module
    ) -> None:
        super().__init__()
        self.project = nn.Sequential(*_conv_bn_relu(low_level_channels, LOW_LEVEL_PROJECTION_CHANNELS, 1))
        self.aspp = ASPP(in_channels, atrous_rates)
        self.classifier = nn.Sequential(
            *_conv_bn_relu(LOW_LEVEL_PROJECTION_CHANNELS + ASPP_CHANNELS, self.feature_channels, 3)
        )
        _init_like_vainf(self)  # before the head joins: heads initialise themselves
        self.classifier.append(head)

    @property
    def head(self) -> nn.Module:
        """The final layer (``classifier[3]``)."""
        return self.classifier[3]

    def forward_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The 256-channel fused features the head classifies, at the low-level resolution.

        Shape:
            - features["low_level"]: (B, low_level_channels, h, w)
            - features["out"]: (B, in_channels, h', w')
            - output: (B, 256, h, w)
        """
        low_level = self.project(features["low_level"])
        deep = self.aspp(features["out"])
        deep = F.interpolate(deep, size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier[:3](torch.cat([low_level, deep], dim=1))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class logits at the low-level resolution (stride 4).

        Args:
            features: the backbone's ``{"low_level": ..., "out": ...}``.

        Returns:
            Logits.

        Shape:
            - features["low_level"]: (B, low_level_channels, h, w)
            - features["out"]: (B, in_channels, h', w')
            - output: (B, num_classes, h, w)
        """
        return self.head(self.forward_features(features))


def _init_like_vainf(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SegmentationModel(nn.Module):
    """Backbone + decoder, with logits upsampled (bilinear, align_corners=False) to the input size.

    Build it with ``network.build_model``; the submodules are named ``backbone`` and ``classifier``
    as in VainF's models.

    Args:
        backbone: returns ``{"low_level": ..., "out": ...}``.
        classifier: the decoder; maps that dict to logits and has a ``head_key`` attribute.
        config: the ``build_model`` arguments, kept for logging and re-building.
    """

    def __init__(
        self, backbone: nn.Module, classifier: nn.Module, *, config: dict[str, object] | None = None
    ):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.config = dict(config or {})

    @property
    def head_key(self) -> str:
        """State-dict prefix of the final layer, e.g. ``"classifier.classifier.3"``."""
        return f"classifier.{self.classifier.head_key}"

    @property
    def head(self) -> nn.Module:
        """The final layer (a module from ``network.heads``)."""
        return self.classifier.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel class logits at the input resolution.

        Args:
            x: normalised images.

        Returns:
            Logits.

        Shape:
            - x: (B, 3, H, W)
            - output: (B, num_classes, H, W)
        """
        logits = self.classifier(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
