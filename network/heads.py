"""Per-pixel classification heads: the last layer of the decoder, features -> class logits.

All heads take ``(B, in_channels, H, W)`` features and return ``(B, num_classes, H, W)`` logits, so
they are interchangeable (the DeepLabv3+ decoder keeps its head at ``classifier.classifier.3``).

- ``standard``: a 1x1 convolution with bias (VainF's layer, same state-dict keys).
- ``distance``: minus the Euclidean distance to one learnable prototype per class.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["HEADS", "DistanceHead", "StandardHead", "build_head"]


class StandardHead(nn.Conv2d):
    """Linear classifier: a 1x1 convolution with bias (state-dict keys ``weight``, ``bias``).

    Initialised like VainF's decoder: Kaiming-normal weight, PyTorch's default uniform bias.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(in_channels, num_classes, kernel_size=1)
        nn.init.kaiming_normal_(self.weight)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``w_c . f + b_c`` for every pixel feature ``f``.

        Args:
            x: decoder features.

        Returns:
            Class logits.

        Shape:
            - x: (B, in_channels, H, W)
            - output: (B, num_classes, H, W)
        """
        return super().forward(x)


class DistanceHead(nn.Module):
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


#: Head name -> class ``(in_channels, num_classes) -> nn.Module``.
HEADS: dict[str, Callable[[int, int], nn.Module]] = {
    "standard": StandardHead,
    "distance": DistanceHead,
}


def build_head(name: str, *, in_channels: int, num_classes: int) -> nn.Module:
    """Build a head by name.

    Args:
        name: one of ``HEADS`` ("standard", "distance").
        in_channels: feature channels of the decoder (256 for DeepLab).
        num_classes: number of classes.

    Returns:
        A module mapping (B, in_channels, H, W) features to (B, num_classes, H, W) logits.

    Raises:
        ValueError: unknown name; the message lists the valid heads.
    """
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; valid heads: {', '.join(HEADS)}")
    return HEADS[name](in_channels, num_classes)
