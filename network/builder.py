"""``build_model``: architecture x backbone x head by name, and small model utilities."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import MappingProxyType

from torch import nn

from .backbones import BACKBONES, Backbone, build_backbone
from .deeplab import DeepLabV3PlusDecoder, SegmentationModel
from .heads import HEADS, build_head

__all__ = [
    "ARCHS",
    "ARCH_NAMES",
    "BACKBONE_NAMES",
    "HEAD_NAMES",
    "MODEL_NAMES",
    "OUTPUT_STRIDES",
    "build_model",
    "count_parameters",
]

#: ASPP atrous rates per output stride (DeepLab's published settings).
ASPP_RATES: dict[int, tuple[int, int, int]] = {16: (6, 12, 18), 8: (12, 24, 36)}


def _deeplabv3plus(backbone: Backbone, head: nn.Module, atrous_rates: Sequence[int]) -> nn.Module:
    return DeepLabV3PlusDecoder(backbone.out_channels, backbone.low_level_channels, atrous_rates, head)


#: Architecture name -> decoder builder ``(backbone, head, atrous_rates) -> decoder``. A decoder takes
#: the backbone's feature dict, returns logits at its own resolution, exposes ``head_key`` (state-dict
#: prefix of its head) and ``feature_channels`` (what the head receives). "deeplabv3" would be an ASPP
#: on ``out`` only, with its head at ``classifier.4`` as in VainF.
ARCHS: dict[str, Callable[[Backbone, nn.Module, Sequence[int]], nn.Module]] = {
    "deeplabv3plus": _deeplabv3plus,
}
_FEATURE_CHANNELS: dict[str, int] = {"deeplabv3plus": DeepLabV3PlusDecoder.feature_channels}

ARCH_NAMES: tuple[str, ...] = tuple(ARCHS)
BACKBONE_NAMES: tuple[str, ...] = tuple(BACKBONES)
HEAD_NAMES: tuple[str, ...] = tuple(HEADS)
OUTPUT_STRIDES: tuple[int, ...] = (16, 8)
#: Valid names per ``build_model`` argument, e.g. ``MODEL_NAMES["backbone"]``.
MODEL_NAMES: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {"arch": ARCH_NAMES, "backbone": BACKBONE_NAMES, "head": HEAD_NAMES}
)


def build_model(
    *,
    arch: str = "deeplabv3plus",
    backbone: str = "mobilenet_v2",
    head: str = "standard",
    num_classes: int,
    output_stride: int = 16,
    pretrained_backbone: bool = False,
    vainf_padding: bool = False,
) -> SegmentationModel:
    """Build a segmentation model whose state dict matches VainF/DeepLabV3Plus-Pytorch's.

    Args:
        arch: one of ``ARCH_NAMES`` ("deeplabv3plus").
        backbone: one of ``BACKBONE_NAMES`` ("mobilenet_v2", "resnet50", "resnet101").
        head: one of ``HEAD_NAMES`` ("standard": 1x1 conv; "distance": -Euclidean distance to
            learnable class prototypes).
        num_classes: number of output classes.
        output_stride: 16 (ASPP rates 6/12/18) or 8 (12/24/36; sharper, about 3x slower).
        pretrained_backbone: start the backbone from torchvision's ImageNet weights (downloaded on first
            use); the decoder and head are always freshly initialised.
        vainf_padding: MobileNetV2 only: pad exactly as VainF's MobileNetV2 does, to reproduce a VainF
            checkpoint's outputs bit for bit (see ``MobileNetV2Backbone``). Same parameters either way.

    Returns:
        A ``SegmentationModel``: (B, 3, H, W) images -> (B, num_classes, H, W) logits.

    Raises:
        ValueError: an unknown name or unsupported value; the message lists the valid ones.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid archs: {', '.join(ARCHS)}")
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; valid backbones: {', '.join(BACKBONES)}")
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; valid heads: {', '.join(HEADS)}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(
            f"unsupported output_stride {output_stride!r}; valid output strides: "
            f"{', '.join(map(str, OUTPUT_STRIDES))}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")

    body = build_backbone(
        backbone, output_stride=output_stride, pretrained=pretrained_backbone, vainf_padding=vainf_padding
    )
    head_module = build_head(head, in_channels=_FEATURE_CHANNELS[arch], num_classes=num_classes)
    decoder = ARCHS[arch](body, head_module, ASPP_RATES[output_stride])
    config = {
        "arch": arch,
        "backbone": backbone,
        "head": head,
        "num_classes": num_classes,
        "output_stride": output_stride,
        "pretrained_backbone": pretrained_backbone,
        "vainf_padding": vainf_padding,
    }
    return SegmentationModel(body, decoder, config=config)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements (buffers such as BatchNorm running stats not included).

    Args:
        model: any module.
        trainable_only: count only parameters with ``requires_grad``.

    Returns:
        The total number of scalars in ``model.parameters()``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
