"""Pixel anomaly scores from logits. Higher always means more anomalous.

Every function maps logits of Shape (B, C, H, W) to scores of Shape (B, H, W), in float32.
The rank metrics (AUPR, AUROC, FPR95) depend only on the order of the scores, so a score
may be returned in any strictly increasing transform of its textbook form; where that is
done it is said, and it is done to keep float32 resolution where it matters.

Scores: ``msp``, ``maxlogit``, ``entropy``, ``energy`` need the logits alone; ``sml``
(standardized max logit) also needs per-class statistics fitted on the training split
(`SMLStatistics`); ``pans`` is the PAnS prototype score for a cosine head of scale 10 (any
head's logits work); ``abet`` is the AbeT score (LeVine et al. 2024): the energy score of a model
with a learned temperature with the temperature in front removed, ``-logsumexp_c(cos_c / T)``, i.e.
the energy of the AbeT head's (tempered) logits. It is computed exactly like ``energy`` and named
apart so that a run reads like the method it reproduces; on any other head it *is* energy.
"""

from __future__ import annotations

import torch

from lib.config import ALL_SCORES, SCORES

PANS_SCALE = 10.0
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


class NonFiniteLogitsError(ValueError):
    """A pixel's logits hold +inf or NaN, or are all -inf: no score of it has a value.

    Attributes:
        image: index of the first such image in the batch. pixel: its (row, column).
    """

    def __init__(self, message: str, image: int, pixel: tuple[int, int]) -> None:
        super().__init__(message)
        self.image = image
        self.pixel = pixel


def _check_finite_max(z_max: torch.Tensor, logits: torch.Tensor) -> None:
    """Raise `NonFiniteLogitsError` unless every pixel's maximal logit is finite.

    The maximum over the classes is +inf or NaN when any logit is (``amax`` propagates NaN), and
    -inf only when all are, so this one reduction over (B, H, W) checks every logit.
    """
    if bool(torch.isfinite(z_max).all()):
        return
    bad = (~torch.isfinite(z_max)).nonzero()[0].tolist()  # (b, 0, row, col)
    image, row, col = bad[0], bad[-2], bad[-1]
    values = logits[image, :, row, col]
    what = (
        "NaN"
        if bool(values.isnan().any())
        else "+inf"
        if bool((values == float("inf")).any())
        else "only -inf"
    )
    raise NonFiniteLogitsError(
        f"logits of image {image} of the batch hold {what} at pixel (row {row}, column {col}) "
        f"({int((~torch.isfinite(z_max)).sum())} such pixel(s) in the batch); anomaly scores need finite "
        "logits (-inf is fine on a class that is not the maximum). In fp16, logits beyond 65504 overflow "
        "to inf: run the model in fp32 or bf16",
        image,
        (row, col),
    )


def compute_scores(
    logits: torch.Tensor,
    names: tuple[str, ...] = SCORES,
    *,
    sml_stats: SMLStatistics | None = None,
    check_finite: bool = True,
) -> dict[str, torch.Tensor]:
    """All requested scores of one batch, from one shared softmax.

    Args:
        logits: Shape (B, C, H, W).
        names: scores to compute (see the module docstring).
        sml_stats: fitted statistics, required for ``sml``.
        check_finite: raise on +inf / NaN logits (one reduction over the pixels); False inside a
            traced or exported graph, which cannot raise on data.

    Returns:
        {name: scores of Shape (B, H, W)}, float32, higher = more anomalous. Every score is finite
        for finite logits of any magnitude and for -inf logits on classes that are not the maximum;
        fp16 / bf16 logits are scored in float32.

    Raises:
        NonFiniteLogitsError: a pixel's logits hold +inf or NaN, or are all -inf (the message names
            the image of the batch and the pixel).
    """
    return scores_and_prediction(logits, names, sml_stats=sml_stats, check_finite=check_finite)[1]


def _count_dtype(classes: int) -> torch.dtype:
    """The dtype to count up to ``classes`` in: uint8 where it cannot overflow (several times faster
    than int64 on the CPU), int32 otherwise and in an ONNX export (its ReduceSum takes no uint8)."""
    return torch.uint8 if classes < 256 and not torch.onnx.is_in_onnx_export() else torch.int32


def first_max_index(is_max: torch.Tensor) -> torch.Tensor:
    """Index of the first True along dim 1 (argmax's rule for tied maxima), int64.

    ``logits.argmax(dim=1)`` is ``first_max_index(logits == logits.amax(dim=1, keepdim=True))`` for
    logits without NaN; from a mask already at hand it is several times faster than ``max(dim=1)``
    (which is itself ~10x faster than ``argmax(dim=1)`` on the CPU). A column without True gives
    ``C``. Shape (B, C, ...) -> (B, ...).
    """
    c = is_max.shape[1]
    rank = torch.arange(c, 0, -1, dtype=_count_dtype(c), device=is_max.device)
    rank = rank.view(1, c, *([1] * (is_max.dim() - 2)))  # C, C-1, ..., 1: the first True ranks highest
    return c - (is_max * rank).amax(dim=1).to(torch.int64)


def scores_and_prediction(
    logits: torch.Tensor,
    names: tuple[str, ...] = SCORES,
    *,
    sml_stats: SMLStatistics | None = None,
    check_finite: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`compute_scores` and the predicted class of each pixel, read from the same maximum.

    Returns:
        (prediction, scores): the prediction is ``logits.argmax(dim=1)`` (the first class on ties),
        int64 Shape (B, H, W), at a fraction of argmax's cost; the scores are `compute_scores`'.
    """
    unknown = [n for n in names if n not in ALL_SCORES]
    if unknown:
        raise ValueError(f"unknown score(s) {unknown}; valid scores: {', '.join(ALL_SCORES)}")
    if "sml" in names and sml_stats is None:
        raise ValueError("the 'sml' score needs sml_stats: fit them with SMLStatistics on the training split")
    z = logits.float()
    z_max = z.amax(dim=1, keepdim=True)
    if check_finite:
        _check_finite_max(z_max, logits)
    d = z - z_max  # <= 0, exactly 0 at the maximal class(es); -inf for -inf logits or a float32 overflow
    is_max = d == 0
    prediction = first_max_index(is_max)
    # Mass of the non-maximal classes relative to the maximal one, summed without the maximal
    # class's 1 (so 1 + tiny - 1 never happens): for a confident pixel it is ~1e-9 and must not
    # round to zero. Ties for the maximum add their exact 1s back.
    e = torch.exp(d).masked_fill_(is_max, 0.0)
    n_max = is_max.sum(dim=1, dtype=_count_dtype(z.shape[1]))
    rest = e.sum(dim=1) + (n_max.to(torch.int32) - 1)
    log1p_rest = torch.log1p(rest)  # = logsumexp(z) - max(z) = -log(max softmax)
    z_max = z_max.squeeze(1)
    out: dict[str, torch.Tensor] = {}
    if "msp" in names:
        out["msp"] = log1p_rest
    if "maxlogit" in names:
        out["maxlogit"] = -z_max
    if "entropy" in names:
        # H = sum_c p_c (max(z) - z_c) + log(1 + rest): two non-negative terms, no cancellation;
        # the maximal classes contribute 0 to the first, so the masked e serves. A -inf gap becomes
        # the most negative float: its e is 0, so its term is 0 (0 * inf would be NaN).
        d.clamp_(min=-_FLOAT32_MAX)
        out["entropy"] = e.mul_(d).sum(dim=1).neg_() / (1.0 + rest) + log1p_rest
    if "energy" in names or "abet" in names:
        out["energy"] = out["abet"] = -(z_max + log1p_rest)
    if "sml" in names:
        out["sml"] = sml_stats.standardize(z_max, prediction)
    if "pans" in names:
        # 1 - (max cosine logit + s) / (2 s): the distance of the nearest prototype, in [0, 1].
        out["pans"] = 1.0 - (z_max + PANS_SCALE) / (2 * PANS_SCALE)
    return prediction, {name: out[name] for name in names}


class SMLStatistics:
    """Per-class mean and standard deviation of the max logit, for standardized max logit (SML).

    SML (Jung et al., ICCV 2021) standardises each pixel's max logit with the statistics of the
    max logits of the training pixels *predicted* as the same class, so classes with
    habitually large logits no longer look familiar by default:
    ``sml = -(max_c z_c - mean[k]) / std[k]`` with ``k = argmax_c z_c``.

    Fill it with `update` over the training split (one streaming pass, three numbers per class),
    then pass it to `compute_scores`. A class never predicted keeps mean 0 and std 1.
    """

    def __init__(self, num_classes: int, *, device: torch.device | str | None = None) -> None:
        self.state = torch.zeros(3, num_classes, dtype=torch.float64, device=device or "cpu")

    @property
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """``state`` = [count, sum, sum of squares] per class (all_reduce-able)."""
        return {"state": self.state}

    def update(self, logits: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Add a batch. Shape: logits (B, C, H, W); valid optional bool (B, H, W)."""
        z_max, k = logits.float().max(dim=1)
        if valid is not None:
            valid = valid.to(z_max.device)  # a mask left on the CPU must not index GPU logits
            z_max, k = z_max[valid], k[valid]
        z_max, k = z_max.flatten().double(), k.flatten()
        self.state = self.state.to(logits.device)
        for row, values in enumerate((torch.ones_like(z_max), z_max, z_max * z_max)):
            self.state[row].index_add_(0, k, values)

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class mean and standard deviation. Shape: (C,), (C,)."""
        count, total, squares = self.state
        seen = count > 0
        mean = torch.where(seen, total / count.clamp(min=1), torch.zeros_like(total))
        var = torch.where(seen, squares / count.clamp(min=1) - mean * mean, torch.ones_like(total))
        return mean, var.clamp(min=1e-12).sqrt()

    def standardize(self, z_max: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``-(z_max - mean[k]) / std[k]``. Shape: (B, H, W), (B, H, W) -> (B, H, W)."""
        mean, std = (t.to(z_max.device, torch.float32) for t in self.mean_std())
        return -(z_max - mean[k]) / std[k]


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
