"""U-Net family: a ResNet encoder or a from-scratch ("plain") encoder, and one U-Net decoder.

Encoders return their feature maps as a list, shallowest first, and describe them with ``channels``
and ``strides`` (input size / map size):

- ``ResNetEncoder`` (BDD100K seed: torchvision ResNet-34): the stem (stride 2, after ReLU), then
  ``layer1`` (4, after the max-pool), ``layer2`` (8), ``layer3`` (16), ``layer4`` (32). Module names
  are torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4``), so ImageNet weights load as is.
- ``PlainEncoder`` (Cityscapes seed, Ronneberger et al. 2015): a double 3x3 conv block at full
  resolution, then ``depth`` times max-pool 2x2 + double conv, doubling the width each time.

``UNetDecoder`` walks back up: each block upsamples by 2 (bilinear, or a 2x2 stride-2 transposed conv
that halves the channels), concatenates the encoder map of the same stride (matching its size first:
a centred crop or zero pad), and applies a double conv. Blocks past the shallowest skip have nothing to
concatenate; that is how the ResNet U-Net gets from stride 2 back to full resolution. The head
classifies the last block's output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from .heads import Head
from .layers import DoubleConv, adopt_resnet, init_conv_bn
from .model import Decoder

__all__ = ["UPSAMPLING_MODES", "PlainEncoder", "ResNetEncoder", "UNetDecoder", "UNetUpBlock"]

UPSAMPLING_MODES = ("transposed", "bilinear")


def _stage_out_channels(layer: nn.Sequential) -> int:
    last = layer[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


class ResNetEncoder(nn.Module):
    """torchvision ResNet without ``avgpool``/``fc`` (no dilation), returning five feature maps.

    Attributes:
        channels: channels of the maps (ResNet-34: 64, 64, 128, 256, 512).
        strides: their strides (2, 4, 8, 16, 32).
    """

    def __init__(self, resnet: models.ResNet) -> None:
        super().__init__()
        adopt_resnet(self, resnet)
        layers = (self.layer1, self.layer2, self.layer3, self.layer4)
        self.channels: tuple[int, ...] = (self.bn1.num_features, *map(_stage_out_channels, layers))
        self.strides: tuple[int, ...] = (2, 4, 8, 16, 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 2, 4, 8, 16, 32.

        Args:
            x: normalised images.

        Returns:
            ``[stem, layer1, layer2, layer3, layer4]`` outputs.

        Shape:
            - x: (B, 3, H, W)
            - output[i]: (B, channels[i], ~H/strides[i], ~W/strides[i])
        """
        stem = self.relu(self.bn1(self.conv1(x)))
        c2 = self.layer1(self.maxpool(stem))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [stem, c2, c3, c4, self.layer4(c4)]


class PlainEncoder(nn.Module):
    """U-Net contracting path: ``DoubleConv(3, w)``, then ``depth`` x (max-pool 2, ``DoubleConv``, width x2).

    ``stages.0`` is the full-resolution block, ``stages.i`` (i >= 1) = [MaxPool2d(2), DoubleConv]; the
    deepest stage is the U-Net bottleneck. Initialised like the DeepLab decoders (Kaiming-normal convs).

    Args:
        depth: number of max-pool downsamplings (4 in U-Net).
        base_width: channels of the first block (64 in U-Net).
        in_channels: image channels.

    Attributes:
        channels: ``base_width * 2**i`` for i = 0..depth.
        strides: ``2**i`` for i = 0..depth.
    """

    def __init__(self, *, depth: int, base_width: int, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 1 or base_width < 1:
            raise ValueError(f"depth and base_width must be >= 1, got {depth}, {base_width}")
        widths = [base_width * 2**i for i in range(depth + 1)]
        stages: list[nn.Module] = [DoubleConv(in_channels, widths[0])]
        stages += [
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(a, b)) for a, b in zip(widths, widths[1:], strict=False)
        ]
        self.stages = nn.ModuleList(stages)
        self.channels: tuple[int, ...] = tuple(widths)
        self.strides: tuple[int, ...] = tuple(2**i for i in range(depth + 1))
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 1, 2, ..., 2**depth.

        Args:
            x: normalised images.

        Returns:
            One map per stage, shallowest first (max-pooling floors odd sizes).

        Shape:
            - x: (B, 3, H, W)
            - output[i]: (B, channels[i], floor(H / 2**i), floor(W / 2**i))
        """
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def _match_size(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Centre-crop or zero-pad ``x`` to ``size`` (U-Net's "crop and concatenate")."""
    dh, dw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))  # negative padding crops


class UNetUpBlock(nn.Module):
    """Upsample by 2, concatenate the skip (if any), double 3x3 conv.

    Args:
        in_channels: channels coming from the block below.
        skip_channels: channels of the encoder map concatenated (0: none).
        out_channels: channels of the output.
        upsampling: "transposed" (``up`` = ConvTranspose2d(in, in // 2, 2, stride 2)) or "bilinear"
            (no parameters; to the skip's size, or x2 without a skip).
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, *, upsampling: str) -> None:
        super().__init__()
        if upsampling not in UPSAMPLING_MODES:
            raise ValueError(f"unknown upsampling {upsampling!r}; valid: {', '.join(UPSAMPLING_MODES)}")
        self.upsampling = upsampling
        if upsampling == "transposed":
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
            in_channels //= 2
        self.conv = DoubleConv(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """Shape: x (B, in, h, w), skip (B, skip, H', W') -> (B, out, H', W') (2h x 2w without a skip)."""
        size = skip.shape[-2:] if skip is not None else (2 * x.shape[-2], 2 * x.shape[-1])
        if self.upsampling == "transposed":
            x = _match_size(self.up(x), size)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([skip, x], dim=1)
        return self.conv(x)


class UNetDecoder(Decoder):
    """U-Net expansive path over an encoder's feature list, then the head.

    Block ``i`` upsamples the previous output and concatenates the ``i``-th deepest skip (encoder maps
    but the last, deepest first); blocks beyond the skips concatenate nothing.

    Args:
        encoder_channels: the encoder's ``channels`` (shallowest first; the last is the bottleneck).
        decoder_channels: output channels of each block, deepest first; at least one block per skip.
        head: a head mapping (B, decoder_channels[-1], H, W) to logits.
        upsampling: "transposed" or "bilinear" (see ``UNetUpBlock``).
    """

    head_key = "head"

    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int],
        head: Head,
        *,
        upsampling: str,
    ) -> None:
        super().__init__()
        skips = list(encoder_channels[:-1])[::-1]
        if len(decoder_channels) < len(skips):
            raise ValueError(
                f"need at least {len(skips)} decoder blocks (one per skip), got {len(decoder_channels)}"
            )
        blocks, channels = [], encoder_channels[-1]
        for i, out_channels in enumerate(decoder_channels):
            skip = skips[i] if i < len(skips) else 0
            blocks.append(UNetUpBlock(channels, skip, out_channels, upsampling=upsampling))
            channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.feature_channels = channels
        init_conv_bn(self.blocks)
        # Registered directly: ``head`` is a read-only property of every Decoder.
        self._modules["head"] = head

    @property
    def head(self) -> Head:
        """The final layer (submodule ``head``)."""
        return self._modules["head"]

    def forward_features(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """The last block's output, at stride ``encoder stride / 2**len(decoder_channels)``.

        Args:
            features: the encoder's maps, shallowest first.

        Shape:
            - features[i]: (B, encoder_channels[i], h_i, w_i)
            - output: (B, decoder_channels[-1], H', W')
        """
        skips = list(features[:-1])[::-1]
        x = features[-1]
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < len(skips) else None)
        return x
