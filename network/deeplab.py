"""DeepLabv3+ and DeepLabv3 decoders (ASPP, and for v3+ the low-level skip).

Module names and layer order follow VainF/DeepLabV3Plus-Pytorch, so their checkpoints load key for key:

- DeepLabv3+ (``DeepLabHeadV3Plus``): ``classifier.project``, ``classifier.aspp.convs.{0..4}``,
  ``classifier.aspp.project``, ``classifier.classifier.{0..3}``; the head is
  ``classifier.classifier.3``.
- DeepLabv3 (``DeepLabHead``): ``classifier.classifier.0`` (the ASPP), ``.1`` 3x3 conv 256 -> 256
  without bias, ``.2`` BN, ``.3`` ReLU, ``.4`` the head.

The head can be any module from ``network.heads``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .heads import Head
from .layers import conv_bn_relu, init_conv_bn
from .model import Decoder, SegmentationModel

__all__ = ["ASPP", "DeepLabV3Decoder", "DeepLabV3PlusDecoder", "SegmentationModel"]

ASPP_CHANNELS = 256
LOW_LEVEL_PROJECTION_CHANNELS = 48


class ASPPPooling(nn.Sequential):
    """Image-level branch of ASPP: global average pool, 1x1 conv + BN + ReLU, broadcast back."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), *conv_bn_relu(in_channels, out_channels, 1))

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
        branches = [nn.Sequential(*conv_bn_relu(in_channels, out_channels, 1))]
        branches += [
            nn.Sequential(*conv_bn_relu(in_channels, out_channels, 3, rate)) for rate in atrous_rates
        ]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            *conv_bn_relu(len(branches) * out_channels, out_channels, 1),
            nn.Dropout(0.1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (B, in_channels, H, W) -> (B, out_channels, H, W)."""
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabV3PlusDecoder(Decoder):
    """DeepLabv3+ decoder: ASPP on the deep features, upsampled and fused with projected low-level ones.

    ``classifier`` = [3x3 conv (48 + 256 -> 256), BN, ReLU, head]; the head (index 3) maps the 256
    fused channels to class logits at stride 4.

    Args:
        in_channels: channels of the backbone's ``out`` map (2048 ResNet, 320 MobileNetV2).
        low_level_channels: channels of the backbone's ``low_level`` map (256 ResNet, 24 MobileNetV2).
        atrous_rates: ASPP rates.
        head: a head mapping (B, 256, H, W) to (B, num_classes, H, W).
    """

    #: State-dict prefix of the head inside this module.
    head_key = "classifier.3"
    #: Channels the head receives.
    feature_channels = ASPP_CHANNELS

    def __init__(
        self, in_channels: int, low_level_channels: int, atrous_rates: Sequence[int], head: Head
    ) -> None:
        super().__init__()
        self.project = nn.Sequential(*conv_bn_relu(low_level_channels, LOW_LEVEL_PROJECTION_CHANNELS, 1))
        self.aspp = ASPP(in_channels, atrous_rates)
        self.classifier = nn.Sequential(
            *conv_bn_relu(LOW_LEVEL_PROJECTION_CHANNELS + ASPP_CHANNELS, self.feature_channels, 3)
        )
        init_conv_bn(self)  # before the head joins: heads initialise themselves
        self.classifier.append(head)

    @property
    def head(self) -> Head:
        """The final layer (``classifier[3]``)."""
        return self.classifier[3]

    def forward_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The 256-channel fused features the head classifies, at the low-level resolution.

        Args:
            features: the backbone's ``{"low_level": ..., "out": ...}``.

        Shape:
            - features["low_level"]: (B, low_level_channels, h, w)
            - features["out"]: (B, in_channels, h', w')
            - output: (B, 256, h, w)
        """
        low_level = self.project(features["low_level"])
        deep = self.aspp(features["out"])
        deep = F.interpolate(deep, size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier[:3](torch.cat([low_level, deep], dim=1))


class DeepLabV3Decoder(Decoder):
    """DeepLabv3 decoder (VainF's ``DeepLabHead``): ASPP and a 3x3 conv on the deep features only.

    ``classifier`` = [ASPP, 3x3 conv (256 -> 256, no bias), BN, ReLU, head]; the head (index 4) gives
    logits at the backbone's output stride (8 or 16).

    Args:
        in_channels: channels of the backbone's ``out`` map (2048 ResNet, 320 MobileNetV2).
        atrous_rates: ASPP rates.
        head: a head mapping (B, 256, H, W) to (B, num_classes, H, W).
    """

    head_key = "classifier.4"
    feature_channels = ASPP_CHANNELS

    def __init__(self, in_channels: int, atrous_rates: Sequence[int], head: Head) -> None:
        super().__init__()
        self.classifier = nn.Sequential(
            ASPP(in_channels, atrous_rates), *conv_bn_relu(ASPP_CHANNELS, self.feature_channels, 3)
        )
        init_conv_bn(self)
        self.classifier.append(head)

    @property
    def head(self) -> Head:
        """The final layer (``classifier[4]``)."""
        return self.classifier[4]

    def forward_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The 256-channel features the head classifies, at the backbone's output stride.

        Args:
            features: the backbone's dict; only ``"out"`` is used.

        Shape:
            - features["out"]: (B, in_channels, h, w)
            - output: (B, 256, h, w)
        """
        return self.classifier[:4](features["out"])
