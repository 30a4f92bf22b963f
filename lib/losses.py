"""Training losses: cross-entropy, focal, and either one plus an entropy term.

Definitions (as in the StreetHazards reference project):

- CE    = mean over labelled pixels of -w_y log p_y / mean of w_y  (torch's weighted mean)
- FL    = sum over labelled pixels of -w_y (1 - p_y)^gamma log p_y / sum of w_y
- H     = mean over labelled pixels of -sum_c p_c log p_c
- CE+H  = CE + lambda * H,   FL+H = FL + lambda * H

``entropy_term="true-class-rows"`` replaces H by the term the StreetHazards reference CODE computes
(its notebook writes the softmax entropy above): with p_y the probability of the true class, a
(B, H, W) map, ``-sum(p_y * log p_y, dim=1).mean()`` - the sum runs over the image ROWS, not the
classes, then the mean over images and columns. Unlabelled pixels add nothing here (their p_y is
taken as 1); the reference code did not mask them. It is offered to reproduce that code, not as a
better loss: it rewards confident true-class predictions rather than low entropy.

Pixels labelled ``ignore_index`` (255) and any label outside the model's classes (the anomaly
id 13, which the training split never contains) do not count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lib.classes import IGNORE_INDEX
from lib.config import LOSSES


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float = 2.0,
    weight: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Focal loss, normalised by the summed class weights of the labelled pixels.

    With ``gamma=0`` it equals ``F.cross_entropy(logits, target, weight=weight, ignore_index=...)``.

    Args:
        logits: raw class scores. Shape (B, C, H, W).
        target: train ids, ``ignore_index`` where unlabelled. Shape (B, H, W), int64.
        gamma: focusing parameter (0 = cross-entropy).
        weight: optional per-class weights. Shape (C,).

    Returns:
        Scalar loss (0 when no pixel is labelled).
    """
    valid = (target != ignore_index) & (target >= 0) & (target < logits.shape[1])
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
    loss = -log_p
    if gamma != 0:
        loss = (1.0 - log_p.exp()).clamp(min=0).pow(gamma) * loss
    w = weight.to(logits.device)[safe_target] if weight is not None else torch.ones_like(loss)
    w = w * valid
    return (loss * w).sum() / w.sum().clamp(min=1e-12)


def entropy_term(
    logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Mean softmax entropy over labelled pixels. Shape: (B, C, H, W), (B, H, W) -> scalar."""
    log_p = F.log_softmax(logits.float(), dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    valid = (target != ignore_index) & (target >= 0) & (target < logits.shape[1])
    return (entropy * valid).sum() / valid.sum().clamp(min=1)


def true_class_rows_entropy(
    logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """The reference code's entropy term: -sum over rows of p_y log p_y, mean over images and columns.

    Shape: (B, C, H, W), (B, H, W) -> scalar. Unlabelled pixels count as p_y = 1 (they add 0).
    """
    valid = (target != ignore_index) & (target >= 0) & (target < logits.shape[1])
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
    log_p = log_p * valid
    return -(log_p.exp() * log_p).sum(dim=1).mean()


ENTROPY_TERMS = {"softmax": entropy_term, "true-class-rows": true_class_rows_entropy}


class SegmentationLoss(nn.Module):
    """One of ``ce``, ``ce+h``, ``fl``, ``fl+h`` with its parameters.

    Args:
        name: the loss (see module docstring).
        gamma_focal: focal focusing parameter (``fl``, ``fl+h``).
        entropy_weight: lambda of the entropy term (``ce+h``, ``fl+h``).
        class_weights: optional per-class weights. Shape (C,).
        entropy_term: ``softmax`` (H above) or ``true-class-rows`` (the reference code's term).
    """

    def __init__(
        self,
        name: str = "fl+h",
        *,
        gamma_focal: float = 2.0,
        entropy_weight: float = 0.1,
        class_weights: torch.Tensor | None = None,
        ignore_index: int = IGNORE_INDEX,
        entropy_term: str = "softmax",
    ) -> None:
        super().__init__()
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
        if entropy_term not in ENTROPY_TERMS:
            raise ValueError(
                f"unknown entropy_term {entropy_term!r}; choose one of: {', '.join(ENTROPY_TERMS)}"
            )
        self.name = name
        self.entropy = ENTROPY_TERMS[entropy_term]
        self.gamma = gamma_focal if name.startswith("fl") else 0.0
        self.entropy_weight = entropy_weight if name.endswith("+h") else 0.0
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Shape: logits (B, C, H, W), target (B, H, W) -> scalar."""
        loss = focal_loss(
            logits, target, gamma=self.gamma, weight=self.class_weights, ignore_index=self.ignore_index
        )
        if self.entropy_weight:
            loss = loss + self.entropy_weight * self.entropy(logits, target, ignore_index=self.ignore_index)
        return loss
