"""Small building blocks shared by the architectures: conv + BN + ReLU, the U-Net double conv, init."""

from __future__ import annotations

from torch import nn

__all__ = [
    "AtrousSeparableConv",
    "DoubleConv",
    "adopt_resnet",
    "conv_bn_relu",
    "convert_to_separable",
    "init_conv_bn",
]


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


class AtrousSeparableConv(nn.Module):
    """Depthwise-separable (atrous) convolution: a per-channel k x k conv, then a 1x1 conv.

    About k*k times fewer multiply-adds than the dense conv it replaces. State-dict keys
    ``body.0`` (depthwise) and ``body.1`` (pointwise), as VainF's ``AtrousSeparableConvolution``,
    so its ``--separable_conv`` checkpoints load.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        c_in, c_out = conv.in_channels, conv.out_channels
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_in, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                      dilation=conv.dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=conv.bias is not None),
        )  # fmt: skip
        for m in self.body:
            nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        """Shape: (B, in_channels, H, W) -> (B, out_channels, H', W') as the replaced conv."""
        return self.body(x)


def convert_to_separable(module: nn.Module) -> nn.Module:
    """Replace, in place, every ungrouped ``nn.Conv2d`` with a kernel larger than 1x1 and more than
    one input channel inside ``module`` by an `AtrousSeparableConv` (fresh weights); returns it."""
    for name, child in module.named_children():
        if (
            type(child) is nn.Conv2d
            and child.kernel_size[0] > 1
            and child.in_channels > 1
            and child.groups == 1
        ):
            setattr(module, name, AtrousSeparableConv(child))
        else:
            convert_to_separable(child)
    return module


#: The parts of a torchvision ResNet an encoder keeps (``avgpool`` and ``fc`` are dropped).
RESNET_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def adopt_resnet(module: nn.Module, resnet: nn.Module) -> None:
    """Register `resnet`'s stem and four stages on `module` under torchvision's names and in its
    order, so the state-dict keys come out as torchvision's (and VainF's) do."""
    for name in RESNET_PARTS:
        setattr(module, name, getattr(resnet, name))
