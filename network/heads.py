"""Per-pixel classification heads: the last layer of a decoder, features -> class logits.

Every head takes ``(B, in_channels, H, W)`` features and its ``forward`` returns ``(B, num_classes, H, W)``
logits, so heads are interchangeable on every architecture (``build_model(head=...)``). Heads that
produce more than the logits (the AbeT head) also have ``forward_with_extras``, which returns a dict:
``"logits"`` (exactly what ``forward`` returns) plus the head's extra outputs (for inspection and
figures). Every head has ``forward_with_extras``; for heads
without extras it returns ``{"logits": forward(x)}``.

- ``standard``: a 1x1 convolution with bias (VainF's layer, same state-dict keys).
- ``distance``: minus the Euclidean distance to one learnable prototype per class.
- ``cosine``: PAnS's cosine classifier: ``10 * cos(f, w_c)``, bias-free, features and weights
  L2-normalised (the logits lie in [-10, 10]).
- ``abet``: AbeT's cosine logits divided by a learned per-pixel temperature
  ``T = sigmoid(BN(conv1x1(f))) + 1e-12``; extras ``untempered_logits`` (the cosine logits) and
  ``temperature``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "HEADS",
    "LOGITS",
    "TEMPERATURE",
    "UNTEMPERED_LOGITS",
    "AbeTHead",
    "CosineHead",
    "DistanceHead",
    "Head",
    "StandardHead",
    "build_head",
]

#: Key of the logits in every ``forward_with_extras`` dict.
LOGITS = "logits"
#: Key of the logits before the learned temperature (AbeT head); ``lib.scores``' "abet" reads it.
UNTEMPERED_LOGITS = "untempered_logits"
#: Key of the per-pixel temperature (AbeT head), Shape (B, 1, H, W).
TEMPERATURE = "temperature"


class Head(nn.Module):
    """Base class of the heads: ``forward`` gives logits, ``forward_with_extras`` a dict with them.

    Attributes:
        num_classes: number of output channels (classes).
    """

    num_classes: int

    def forward_with_extras(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"logits": forward(x)}``; heads with extra outputs override this (see ``AbeTHead``).

        Shape:
            - x: (B, in_channels, H, W)
            - logits: (B, num_classes, H, W)
        """
        return {LOGITS: self(x)}


class StandardHead(nn.Conv2d, Head):
    """Linear classifier: a 1x1 convolution with bias (state-dict keys ``weight``, ``bias``).

    Initialised like VainF's decoder: Kaiming-normal weight, PyTorch's default uniform bias.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(in_channels, num_classes, kernel_size=1)
        nn.init.kaiming_normal_(self.weight)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``w_c . f + b_c`` for every pixel feature ``f``.

        No extra outputs: ``forward_with_extras`` returns ``{"logits": forward(x)}``.

        Args:
            x: decoder features.

        Returns:
            Class logits.

        Shape:
            - x: (B, in_channels, H, W)
            - output: (B, num_classes, H, W)
        """
        return super().forward(x)


class DistanceHead(Head):
    """Prototype classifier: logit_c = -||f - w_c||_2 (or -||f - w_c||^2 with ``squared=True``).

    One learnable prototype ``w_c`` per class, stored as the parameter ``prototypes`` of shape
    (num_classes, in_channels) and initialised Xavier-uniform. The squared distance is computed as
    ``||f||^2 - 2 f.w_c + ||w_c||^2`` (a matrix product, never a (B, H, W, C, D) difference tensor),
    in float32 even under autocast (the expansion cancels badly in half precision), and clamped at 0.

    For the plain distance, ``sqrt(clamp(d2, min=eps))`` with ``eps=1e-6`` keeps the gradient finite
    where a feature sits on a prototype (sqrt has an infinite slope at 0); distances below
    ``sqrt(eps) = 1e-3`` read as 1e-3. ``eps`` is also about the rounding noise of the float32
    expansion for typical feature norms, so nothing meaningful is lost.

    Args:
        in_channels: feature dimension D.
        num_classes: number of prototypes C.
        squared: return minus the squared distance instead.
        eps: floor of the squared distance before the square root (plain distance only).
    """

    def __init__(
        self, in_channels: int, num_classes: int, *, squared: bool = False, eps: float = 1e-6
    ) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(torch.empty(num_classes, in_channels))
        nn.init.xavier_uniform_(self.prototypes)
        self.num_classes = num_classes
        self.squared = squared
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Minus the (squared) Euclidean distance of every pixel feature to every prototype.

        No extra outputs: ``forward_with_extras`` returns ``{"logits": forward(x)}``.

        Args:
            x: decoder features.

        Returns:
            Logits ``-||f - w_c||`` (or ``-||f - w_c||^2``), all <= 0, float32 (float64 for float64 input).

        Shape:
            - x: (B, in_channels, H, W)
            - output: (B, num_classes, H, W)
        """
        with torch.autocast(device_type=x.device.type, enabled=False):
            dtype = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 if given
            f = x.to(dtype)
            w = self.prototypes.to(dtype)
            f_sq = f.pow(2).sum(dim=1, keepdim=True)  # (B, 1, H, W)
            w_sq = w.pow(2).sum(dim=1).view(1, -1, 1, 1)  # (1, C, 1, 1)
            dot = torch.einsum("bdhw,cd->bchw", f, w)  # (B, C, H, W)
            d2 = (f_sq - 2.0 * dot + w_sq).clamp(min=0.0)
            if self.squared:
                return -d2
            return -d2.clamp(min=self.eps).sqrt()

    def extra_repr(self) -> str:
        c, d = self.prototypes.shape
        return f"in_channels={d}, num_classes={c}, squared={self.squared}, eps={self.eps}"


def cosine_similarity_map(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``cos(f, w_c)`` for every pixel feature ``f`` and class weight ``w_c``, in float32 (or float64).

    Features and weights are L2-normalised with ``F.normalize`` (norms floored at ``eps``, so an
    all-zero feature, common after a ReLU, gets cosine 0 and finite gradients). Computed with autocast
    off: half-precision cosines carry only ~3 significant digits.

    Shape:
        - x: (B, D, H, W)
        - weight: (C, D, 1, 1)
        - output: (B, C, H, W), values in [-1, 1]
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        dtype = torch.promote_types(x.dtype, torch.float32)
        f = F.normalize(x.to(dtype), dim=1, eps=eps)
        w = F.normalize(weight.to(dtype).flatten(1), dim=1, eps=eps)
        return F.conv2d(f, w[:, :, None, None])


class CosineHead(Head):
    """Cosine classifier (PAnS): logit_c = scale * cos(f, w_c), with no bias.

    The class weights ``w_c`` (parameter ``weight``, shape (num_classes, in_channels, 1, 1) like a 1x1
    conv, Kaiming-normal initialised) act as class prototypes; only their direction matters. PAnS's
    anomaly score ``1 - (max_c logit_c + scale) / (2 scale)`` (``lib.scores``' "pans", which assumes
    scale 10) is the cosine distance to the nearest prototype, mapped to [0, 1].

    Args:
        in_channels: feature dimension D.
        num_classes: number of classes C.
        scale: the fixed logit scale (10 in PAnS; not learned).
        eps: floor of the feature and weight norms.
    """

    def __init__(
        self, in_channels: int, num_classes: int, *, scale: float = 10.0, eps: float = 1e-12
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_channels, 1, 1))
        nn.init.kaiming_normal_(self.weight)
        self.num_classes = num_classes
        self.scale = float(scale)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarity of every pixel feature to every class weight.

        No extra outputs: ``forward_with_extras`` returns ``{"logits": forward(x)}``.

        Args:
            x: decoder features.

        Returns:
            Logits ``scale * cos(f, w_c)`` in [-scale, scale], float32 (float64 for float64 input).

        Shape:
            - x: (B, in_channels, H, W)
            - output: (B, num_classes, H, W)
        """
        return self.scale * cosine_similarity_map(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        c, d = self.weight.shape[:2]
        return f"in_channels={d}, num_classes={c}, scale={self.scale}"


class AbeTHead(Head):
    """Cosine logits over a learned per-pixel temperature (AbeT, LeVine et al. 2024).

    ``logits = cos(f, w_c) / T(f)`` with ``T(f) = sigmoid(BN(conv1x1(f))) + eps``, a scalar per pixel in
    (0, 1], so the temperature only ever sharpens the cosine logits. Trained with plain cross-entropy
    on ``logits``; the AbeT anomaly score is their energy without a temperature in front,
    ``-logsumexp_c(cos(f, w_c) / T(f))`` (``lib.scores``' "abet"): a confident in-distribution pixel
    gets a low temperature, large logits and a low score.

    Parameters: ``weight`` (num_classes, in_channels, 1, 1), the bias-free cosine weights as in
    ``CosineHead`` (no scale: the temperature plays its role); ``temperature.0`` the bias-free 1x1 conv
    (D -> 1; a bias would be cancelled by the BatchNorm) and ``temperature.1`` its BatchNorm.

    Args:
        in_channels: feature dimension D.
        num_classes: number of classes C.
        eps: added to the sigmoid so the temperature is never 0 (1e-12 as in AbeT).
    """

    def __init__(self, in_channels: int, num_classes: int, *, eps: float = 1e-12) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_channels, 1, 1))
        nn.init.kaiming_normal_(self.weight)
        self.temperature = nn.Sequential(nn.Conv2d(in_channels, 1, 1, bias=False), nn.BatchNorm2d(1))
        self.num_classes = num_classes
        self.eps = eps

    def forward_with_extras(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tempered logits, with the untempered cosine logits and the temperature beside them.

        Args:
            x: decoder features.

        Returns:
            ``{"logits": cos / T, "untempered_logits": cos, "temperature": T}``, float32 (float64 for
            float64 input); ``logits`` is what ``forward`` returns.

        Shape:
            - x: (B, in_channels, H, W)
            - logits, untempered_logits: (B, num_classes, H, W)
            - temperature: (B, 1, H, W), values in (0, 1]
        """
        cosine = cosine_similarity_map(x, self.weight)
        with torch.autocast(device_type=x.device.type, enabled=False):
            t = self.temperature(x.to(cosine.dtype))
            t = torch.sigmoid(t) + self.eps
        return {LOGITS: cosine / t, UNTEMPERED_LOGITS: cosine, TEMPERATURE: t}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tempered cosine logits ``cos(f, w_c) / T(f)``; see ``forward_with_extras`` for the extras.

        Args:
            x: decoder features.

        Returns:
            Logits, float32 (float64 for float64 input).

        Shape:
            - x: (B, in_channels, H, W)
            - output: (B, num_classes, H, W)
        """
        return self.forward_with_extras(x)[LOGITS]

    def extra_repr(self) -> str:
        c, d = self.weight.shape[:2]
        return f"in_channels={d}, num_classes={c}, eps={self.eps}"


#: Head name -> class ``(in_channels, num_classes) -> Head``.
HEADS: dict[str, Callable[[int, int], Head]] = {
    "standard": StandardHead,
    "distance": DistanceHead,
    "cosine": CosineHead,
    "abet": AbeTHead,
}


def build_head(name: str, *, in_channels: int, num_classes: int) -> Head:
    """Build a head by name.

    Args:
        name: one of ``HEADS`` ("standard", "distance", "cosine", "abet").
        in_channels: feature channels of the decoder (256 for DeepLab).
        num_classes: number of classes.

    Returns:
        A ``Head`` mapping (B, in_channels, H, W) features to (B, num_classes, H, W) logits.

    Raises:
        ValueError: unknown name; the message lists the valid heads.
    """
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; valid heads: {', '.join(HEADS)}")
    return HEADS[name](in_channels, num_classes)
