"""Every model of the project, built by name: DeepLabv3+ / DeepLabv3 (MobileNetV2, ResNet-50/101),
U-Net (ResNet-34 or plain encoder) and my_FCN, each with a standard, distance, cosine or AbeT head.

DeepLab state dicts match VainF/DeepLabV3Plus-Pytorch checkpoints key for key::

    from network import build_model, forward_with_extras

    model = build_model(arch="deeplabv3plus", backbone="mobilenet_v2", head="distance", num_classes=13,
                        output_stride=16, pretrained="best_deeplabv3plus_mobilenet_cityscapes_os16.pth")
    logits = model(images)  # (B, 3, H, W) normalised -> (B, 13, H, W); head skipped when loading

    model = build_model(arch="unet", backbone="resnet34", head="abet", num_classes=19, pretrained="imagenet")
    out = model.forward_with_extras(images)  # {"logits", "untempered_logits", "temperature"}
    scores = lib.scores.compute_scores(out["logits"], ("abet",))  # energy of the tempered logits

``ARCHS`` lists the backbones each architecture supports; ``model_grid()`` every valid pair. The
names (`network.names`) import without torch; the rest loads on first use.
"""

from __future__ import annotations

import importlib

from .names import (
    ARCH_NAMES,
    ARCHS,
    BACKBONE_NAMES,
    HEAD_NAMES,
    MODEL_NAMES,
    OUTPUT_STRIDES,
    PRETRAINED_SOURCES,
)

#: Everything else loads (with torch) on first use, so that the names above cost no torch import
#: (``from network import build_model`` works as before).
_LAZY: dict[str, str] = {
    "ASPP": "deeplab",
    "ASPP_RATES": "builder",
    "AbeTHead": "heads",
    "BACKBONES": "backbones",
    "Backbone": "backbones",
    "CheckpointMismatchError": "checkpoint",
    "CosineHead": "heads",
    "Decoder": "model",
    "DeepLabV3Decoder": "deeplab",
    "DeepLabV3PlusDecoder": "deeplab",
    "DistanceHead": "heads",
    "HEADS": "heads",
    "Head": "heads",
    "LOGITS": "heads",
    "LoadReport": "checkpoint",
    "MobileNetV2Backbone": "backbones",
    "PlainEncoder": "unet",
    "ResNetBackbone": "backbones",
    "ResNetEncoder": "unet",
    "SegmentationModel": "model",
    "StandardHead": "heads",
    "TEMPERATURE": "heads",
    "UNTEMPERED_LOGITS": "heads",
    "UNetDecoder": "unet",
    "build_backbone": "backbones",
    "build_head": "heads",
    "build_model": "builder",
    "count_parameters": "builder",
    "forward_with_extras": "model",
    "head_key_of": "builder",
    "infer_num_classes": "builder",
    "load_pretrained": "checkpoint",
    "model_grid": "builder",
    "read_checkpoint": "checkpoint",
    "read_state_dict": "checkpoint",
    "valid_output_strides": "builder",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'network' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ARCHS",
    "ARCH_NAMES",
    "ASPP",
    "ASPP_RATES",
    "BACKBONES",
    "BACKBONE_NAMES",
    "HEADS",
    "HEAD_NAMES",
    "LOGITS",
    "MODEL_NAMES",
    "OUTPUT_STRIDES",
    "PRETRAINED_SOURCES",
    "TEMPERATURE",
    "UNTEMPERED_LOGITS",
    "AbeTHead",
    "Backbone",
    "CheckpointMismatchError",
    "CosineHead",
    "Decoder",
    "DeepLabV3Decoder",
    "DeepLabV3PlusDecoder",
    "DistanceHead",
    "Head",
    "LoadReport",
    "MobileNetV2Backbone",
    "PlainEncoder",
    "ResNetBackbone",
    "ResNetEncoder",
    "SegmentationModel",
    "StandardHead",
    "UNetDecoder",
    "build_backbone",
    "build_head",
    "build_model",
    "count_parameters",
    "forward_with_extras",
    "head_key_of",
    "infer_num_classes",
    "load_pretrained",
    "model_grid",
    "read_checkpoint",
    "read_state_dict",
    "valid_output_strides",
]
