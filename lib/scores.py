"""Pixel anomaly scores from logits. Higher always means more anomalous.

Every function maps logits of Shape (B, C, H, W) to scores of Shape (B, H, W), in float32.
The rank metrics (AUPR, AUROC, FPR95) depend only on the order of the scores, so a score
may be returned in any strictly increasing transform of its textbook form; where that is
done it is said, and it is done to keep float32 resolution where it matters.
"""

from __future__ import annotations

import torch

from lib.config import SCORES


def compute_scores(logits: torch.Tensor, names: tuple[str, ...] = SCORES) -> dict[str, torch.Tensor]:
    """All requested scores of one batch, from one shared softmax.

    Shape: (B, C, H, W) -> {name: (B, H, W)}.
    """
    unknown = [n for n in names if n not in SCORES]
    if unknown:
        raise ValueError(f"unknown score(s) {unknown}; valid scores: {', '.join(SCORES)}")
    z = logits.float()
    z_max = z.amax(dim=1, keepdim=True)
    e = torch.exp(z - z_max)
    # Mass of the non-maximal classes relative to the maximal one, without computing 1 + tiny - 1:
    # for a confident pixel it is ~1e-9 and must not round to zero.
    is_max = z == z_max
    rest = (e * ~is_max).sum(dim=1) + (is_max.sum(dim=1) - 1)
    log1p_rest = torch.log1p(rest)  # = logsumexp(z) - max(z) = -log(max softmax)
    z_max = z_max.squeeze(1)
    out: dict[str, torch.Tensor] = {}
    if "msp" in names:
        out["msp"] = log1p_rest
    if "maxlogit" in names:
        out["maxlogit"] = -z_max
    if "entropy" in names:
        # H = sum_c p_c (max(z) - z_c) + log(1 + rest): two non-negative terms, no cancellation.
        p = e / (1.0 + rest).unsqueeze(1)
        out["entropy"] = (p * (z_max.unsqueeze(1) - z)).sum(dim=1) + log1p_rest
    if "energy" in names:
        out["energy"] = -(z_max + log1p_rest)
    return {name: out[name] for name in names}


def msp(logits: torch.Tensor) -> torch.Tensor:
    """Maximum softmax probability, as ``-log(max_c softmax) = logsumexp(z) - max(z)``.

    The textbook score is ``-max softmax``; ``-log`` of the max softmax is a strictly increasing
    function of it, so every rank metric is identical, but confident pixels (MSP 0.99999 vs
    0.999999) stay distinguishable in float32 instead of all rounding to 1.
    """
    return compute_scores(logits, ("msp",))["msp"]


def maxlogit(logits: torch.Tensor) -> torch.Tensor:
    """Negative maximum logit: ``-max_c z_c``."""
    return compute_scores(logits, ("maxlogit",))["maxlogit"]


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Softmax entropy ``-sum_c p_c log p_c`` (natural log)."""
    return compute_scores(logits, ("entropy",))["entropy"]


def energy(logits: torch.Tensor) -> torch.Tensor:
    """Negative free energy at temperature 1: ``-logsumexp_c z_c``."""
    return compute_scores(logits, ("energy",))["energy"]
