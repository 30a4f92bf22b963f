"""Small building blocks shared by the architectures: conv + BN + ReLU, the U-Net double conv, init."""

from __future__ import annotations

from torch import nn

__all__ = ["DoubleConv", "conv_bn_relu", "init_conv_bn"]


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> list[nn.Module]:
    """[bias-free conv ("same" padding), BatchNorm, ReLU] as a list, to splice into an ``nn.Sequential``."""
    padding = dilation * (kernel_size - 1) // 2
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class DoubleConv(nn.Sequential):
    """Two (3x3 conv, BatchNorm, ReLU) layers, "same" padding: the U-Net block.

    State-dict keys ``0`` (conv), ``1`` (BN), ``3`` (conv), ``4`` (BN).

    Args:
        in_channels: input channels.
        out_channels: channels of both convolutions' outputs.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            *conv_bn_relu(in_channels, out_channels, 3), *conv_bn_relu(out_channels, out_channels, 3)
        )
        self.in_channels = in_channels
        self.out_channels = out_channels


def init_conv_bn(module: nn.Module) -> None:
    """Kaiming-normal weights for every ``nn.Conv2d`` (bias, if any, left at PyTorch's default), and
    weight 1 / bias 0 for every BatchNorm / GroupNorm, as VainF's DeepLab decoders do.

    Transposed convolutions keep PyTorch's default initialisation.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
