"""DeepLabv3+ (MobileNetV2 / ResNet-50 / ResNet-101) with a standard or distance head.

State dicts match VainF/DeepLabV3Plus-Pytorch checkpoints key for key::

    from network import build_model, load_pretrained

    model = build_model(backbone="mobilenet_v2", head="distance", num_classes=13)
    report = load_pretrained(model, "best_deeplabv3plus_mobilenet_cityscapes_os16.pth")  # head skipped
    logits = model(images)  # (B, 3, H, W) -> (B, 13, H, W)
"""

from .backbones import BACKBONES, Backbone, MobileNetV2Backbone, ResNetBackbone, build_backbone
from .builder import (
    ARCH_NAMES,
    ARCHS,
    ASPP_RATES,
    BACKBONE_NAMES,
    HEAD_NAMES,
    MODEL_NAMES,
    OUTPUT_STRIDES,
    build_model,
    count_parameters,
)
from .checkpoint import CheckpointMismatchError, LoadReport, load_pretrained, read_state_dict
from .deeplab import ASPP, DeepLabV3PlusDecoder, SegmentationModel
from .heads import HEADS, DistanceHead, StandardHead, build_head

__all__ = [
    "ARCHS",
    "ARCH_NAMES",
    "ASPP",
    "ASPP_RATES",
    "BACKBONES",
    "BACKBONE_NAMES",
    "HEADS",
    "HEAD_NAMES",
    "MODEL_NAMES",
    "OUTPUT_STRIDES",
    "Backbone",
    "CheckpointMismatchError",
    "DeepLabV3PlusDecoder",
    "DistanceHead",
    "LoadReport",
    "MobileNetV2Backbone",
    "ResNetBackbone",
    "SegmentationModel",
    "StandardHead",
    "build_backbone",
    "build_head",
    "build_model",
    "count_parameters",
    "load_pretrained",
    "read_state_dict",
]
