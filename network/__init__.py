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

``ARCHS`` lists the backbones each architecture supports; ``model_grid()`` every valid pair.
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
    PRETRAINED_SOURCES,
    build_model,
    count_parameters,
    head_key_of,
    infer_num_classes,
    model_grid,
    valid_output_strides,
)
from .checkpoint import CheckpointMismatchError, LoadReport, load_pretrained, read_checkpoint, read_state_dict
from .deeplab import ASPP, DeepLabV3Decoder, DeepLabV3PlusDecoder
from .heads import (
    HEADS,
    LOGITS,
    TEMPERATURE,
    UNTEMPERED_LOGITS,
    AbeTHead,
    CosineHead,
    DistanceHead,
    Head,
    StandardHead,
    build_head,
)
from .model import Decoder, SegmentationModel, forward_with_extras
from .unet import PlainEncoder, ResNetEncoder, UNetDecoder

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
