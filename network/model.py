"""The model every architecture shares: an encoder (``backbone``) and a decoder (``classifier``) whose
last layer is a head from ``network.heads``; logits come back at the input resolution.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .heads import LOGITS, Head

__all__ = ["Decoder", "SegmentationModel", "forward_with_extras"]


class Decoder(nn.Module):
    """Base class of the decoders: the backbone's features -> logits, through a head.

    Subclasses implement ``forward_features`` (the features the head classifies) and the ``head``
    property, and set ``head_key`` (state-dict prefix of the head inside the decoder) and
    ``feature_channels`` (channels the head receives).
    """

    head_key: str
    feature_channels: int

    @property
    def head(self) -> Head:
        raise NotImplementedError

    def forward_features(self, features: Any) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: Any) -> torch.Tensor:
        """Class logits at the decoder's output resolution: ``head(forward_features(features))``."""
        return self.head(self.forward_features(features))

    def forward_with_extras(self, features: Any) -> dict[str, torch.Tensor]:
        """The head's ``forward_with_extras`` on the decoder features (logits plus any extras)."""
        return self.head.forward_with_extras(self.forward_features(features))


def _resize(t: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    if t.shape[-2:] == size:
        return t
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)


class SegmentationModel(nn.Module):
    """Backbone + decoder, with logits upsampled (bilinear, align_corners=False) to the input size.

    Build it with ``network.build_model``; the submodules are named ``backbone`` and ``classifier``
    as in VainF's models.

    Args:
        backbone: the encoder; its output is whatever the decoder takes (a dict for DeepLab, a list of
            feature maps for U-Net).
        classifier: the decoder (a ``Decoder``): maps the backbone's output to logits, has ``head``
            and ``head_key``.
        config: the ``build_model`` arguments, kept for logging and re-building.
    """

    def __init__(
        self, backbone: nn.Module, classifier: nn.Module, *, config: dict[str, object] | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.config = dict(config or {})
        #: What ``build_model(pretrained=<checkpoint>)`` loaded (a ``LoadReport``), else None.
        self.load_report = None

    @property
    def head_key(self) -> str:
        """State-dict prefix of the final layer, e.g. ``"classifier.classifier.3"``."""
        return f"classifier.{self.classifier.head_key}"

    @property
    def head(self) -> Head:
        """The final layer (a module from ``network.heads``)."""
        return self.classifier.head

    @property
    def num_classes(self) -> int:
        """Number of classes the head predicts."""
        return self.head.num_classes

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
        return _resize(self.classifier(self.backbone(x)), x.shape[-2:])

    def forward_with_extras(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits and the head's extra outputs, all at the input resolution, from one forward pass.

        ``out["logits"]`` equals ``forward(x)``. The other entries are the head's extras (see its
        ``forward_with_extras``; e.g. the AbeT head's ``untempered_logits`` and ``temperature``), each
        upsampled on its own the same way, so pass the dict as ``extras`` to
        ``lib.scores.compute_scores``. Heads without extras give ``{"logits": ...}`` only.

        Args:
            x: normalised images.

        Returns:
            ``{"logits": (B, num_classes, H, W), **extras}``.
        """
        outputs = self.classifier.forward_with_extras(self.backbone(x))
        return {name: _resize(value, x.shape[-2:]) for name, value in outputs.items()}


def forward_with_extras(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``model.forward_with_extras(x)`` when the model has it, else ``{"logits": model(x)}``.

    Lets evaluation code ask any segmentation module (ours, wrapped in (Distributed)DataParallel or
    ``torch.compile``, a third-party model) for the logits plus whatever extras it provides, in one
    forward pass.
    """
    method = getattr(model, "forward_with_extras", None)
    if method is None and isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
        method = getattr(model.module, "forward_with_extras", None)  # evaluation: the wrapped module
    if callable(method):
        return method(x)
    return {LOGITS: model(x)}
