"""The names of every model part, with no torch import: architectures and the backbones each takes,
heads, backbone initialisations, output strides. `lib.config` reads them for ``--help`` and its checks
without loading torch; `network.builder` builds what they name and checks at import that its tables
(``network.backbones.BACKBONES``, ``network.heads.HEADS``) have exactly these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

#: The dilated backbones of the DeepLab architectures (`network.backbones.BACKBONES`).
DILATED_BACKBONES: tuple[str, ...] = ("mobilenet_v2", "resnet50", "resnet101")
#: torchvision ResNet encoders of the U-Net.
RESNET_ENCODERS: tuple[str, ...] = ("resnet34",)
#: The architecture's own from-scratch encoder (U-Net, my_fcn).
PLAIN = "plain"
#: Architecture name -> the backbones (encoders) it supports.
ARCHS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "deeplabv3plus": DILATED_BACKBONES,
        "deeplabv3": DILATED_BACKBONES,
        "unet": (*RESNET_ENCODERS, PLAIN),
        "my_fcn": (PLAIN,),
    }
)
ARCH_NAMES: tuple[str, ...] = tuple(ARCHS)
BACKBONE_NAMES: tuple[str, ...] = (*DILATED_BACKBONES, *RESNET_ENCODERS, PLAIN)
#: Classifier heads (`network.heads.HEADS`).
HEAD_NAMES: tuple[str, ...] = ("standard", "distance", "cosine", "abet")
#: The named ``pretrained`` sources of a backbone (anything else is a checkpoint path).
PRETRAINED_SOURCES: tuple[str, ...] = ("none", "imagenet")
#: Output strides of the dilated (DeepLab) backbones; the first is the default.
OUTPUT_STRIDES: tuple[int, ...] = (16, 8)
#: Valid names per ``build_model`` argument, e.g. ``MODEL_NAMES["backbone"]``.
MODEL_NAMES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"arch": ARCH_NAMES, "backbone": BACKBONE_NAMES, "head": HEAD_NAMES}
)

__all__ = [
    "ARCHS",
    "ARCH_NAMES",
    "BACKBONE_NAMES",
    "DILATED_BACKBONES",
    "HEAD_NAMES",
    "MODEL_NAMES",
    "OUTPUT_STRIDES",
    "PLAIN",
    "PRETRAINED_SOURCES",
    "RESNET_ENCODERS",
]
