"""Streaming metrics whose memory does not grow with the number of pixels.

Both metrics keep their state on the device of the inputs (or the ``device`` they were given),
update it with one ``torch.bincount`` per call, and hold nothing but a fixed-size integer
histogram, so a whole test split can be streamed through them:

* `ConfusionMatrix` -- closed-set segmentation: per-class IoU, mIoU, pixel and class accuracy.
* `AnomalyMetric` -- pixel-level anomaly detection, pooled over every counted pixel of a split:
  AUPR (average precision), AUROC and FPR at 95 % TPR, approximated from order-preserving
  histograms of the float32 bits of ``score - offset`` (ties only between scores closer than
  about 5e-4 relative to their distance from the offset; see the class docstring for the bound).
  `exact_rank_metrics` (and ``PerImageAnomalyMetric(exact=True)``) sort the scores instead.

States are plain tensors listed by ``state_tensors``; summing them across processes
(``torch.distributed.all_reduce``) or with ``merge`` gives the state of the union of the data
(`AnomalyMetric` also checks that every part was binned around the same offset).
"""

from __future__ import annotations

import math
import mmap
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from lib.classes import IGNORE_INDEX

__all__ = [
    "AnomalyMetric",
    "ComponentMetric",
    "ConfusionMatrix",
    "PerImageAnomalyMetric",
    "RULES",
    "SMIYC_TRACKS",
    "TIE_TOLERANCE",
    "best_f1_threshold",
    "check_no_nan",
    "exact_curve",
    "exact_rank_metrics",
    "rank_metrics",
    "tie_bounds",
]


def check_no_nan(
    scores: torch.Tensor | np.ndarray, keep: torch.Tensor | np.ndarray | None = None, where: str = ""
) -> None:
    """The one NaN rule of every anomaly metric (pooled, per image, exact or binned, components):
    NaN among the counted pixels raises ValueError, NaN where ``keep`` is False is allowed.

    Args:
        scores: float scores, any shape. keep: optional bool mask of the counted pixels, same shape.
        where: appended to the message, e.g. " (image 3 of the batch)".
    """
    if isinstance(scores, np.ndarray):
        scores = torch.from_numpy(np.require(scores, requirements="W"))  # copies a read-only map
        keep = None if keep is None else torch.from_numpy(np.require(keep, dtype=bool, requirements="W"))
    # A finite sum proves there is no NaN (one reduction, no mask); otherwise look closer.
    if bool(torch.isfinite(scores.sum())):
        return
    nan = torch.isnan(scores)
    if keep is not None:
        nan &= keep
    if bool(nan.any()):
        raise ValueError(
            f"anomaly scores contain {int(nan.sum())} NaN value(s) among the counted pixels{where}; "
            "NaN has no rank (check the score computation for 0/0 or inf - inf)"
        )


def _zeros(n: int, device: torch.device | None) -> torch.Tensor:
    """An int64 zero vector. On the CPU in an anonymous memory map: the OS hands out zero pages as
    they are first touched, so four 8 MiB histograms of which an evaluation touches a few pages
    cost nothing to create (torch.zeros writes every byte, ~10 ms each, and so does calloc when
    the allocator reuses freed memory for it)."""
    if device is None or device.type == "cpu":
        return torch.frombuffer(mmap.mmap(-1, max(n, 1) * 8), dtype=torch.int64, count=n)
    return torch.zeros(n, dtype=torch.int64, device=device)


def _as_device(device: torch.device | str | None) -> torch.device | None:
    return None if device is None else torch.device(device)


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN values; NaN (without numpy's RuntimeWarning) when there are none."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


# ================================================================================ segmentation


class ConfusionMatrix:
    """Streaming ``C x C`` confusion matrix (rows: target class, columns: predicted class).

    Pixels whose target equals ``ignore_index`` or lies outside ``[0, num_classes)`` are not
    counted (e.g. the StreetHazards anomaly class, id 13, when ``num_classes`` is 13).
    Predictions must lie in ``[0, num_classes)``; anything else raises ``ValueError``.

    Absent classes (rule used by `compute`):

    * ``IoU[c]`` is NaN when class ``c`` appears neither in the target nor in the prediction
      (union 0). A class predicted but never in the target has IoU 0, not NaN.
    * ``class_accuracy[c]`` (recall) is NaN when ``c`` never appears in the target.
    * ``mIoU``, ``minIoU``, ``maxIoU`` and ``mean_class_accuracy`` ignore NaN entries and the
      classes listed in ``exclude``; they are NaN if no class is left.
    * ``pixel_accuracy`` is over all counted pixels (``exclude`` does not change it); NaN when
      no pixel has been counted.
    """

    def __init__(
        self, num_classes: int, *, ignore_index: int = IGNORE_INDEX, device: torch.device | str | None = None
    ) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self._device = _as_device(device)
        self.matrix = torch.zeros(
            self.num_classes, self.num_classes, dtype=torch.int64, device=self._device or "cpu"
        )

    # ------------------------------------------------------------------ state

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    @property
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The live state tensors by attribute name; summing them over processes merges states."""
        return {"matrix": self.matrix}

    def reset(self) -> None:
        """Forget every counted pixel (the state stays on its device)."""
        self.matrix.zero_()

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (same ``num_classes``); returns self."""
        if not isinstance(other, ConfusionMatrix) or other.num_classes != self.num_classes:
            raise ValueError("can only merge a ConfusionMatrix with the same num_classes")
        self.matrix += other.matrix.to(self.device)
        return self

    def _place(self, device: torch.device) -> torch.device:
        """Move the (still empty) state to the first input's device unless a device was given."""
        if self._device is None:
            self._device = device
            if self.matrix.device != device:
                self.matrix = self.matrix.to(device)
        return self.matrix.device

    # ------------------------------------------------------------------ update / compute

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count one batch. ``pred`` and ``target``: integer tensors of equal shape, e.g. (N, H, W)."""
        if pred.shape != target.shape:
            raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
        if pred.is_floating_point() or pred.is_complex() or target.is_floating_point():
            raise ValueError(f"pred and target must be integer tensors, got {pred.dtype} and {target.dtype}")
        device = self._place(target.device)
        c = self.num_classes
        pred = pred.detach().reshape(-1).to(device=device, dtype=torch.int64)
        target = target.detach().reshape(-1).to(device=device, dtype=torch.int64)
        if pred.numel() == 0:
            return
        lo, hi = torch.aminmax(pred)
        lo, hi = int(lo), int(hi)
        if lo < 0 or hi >= c:
            raise ValueError(
                f"pred contains class ids outside [0, {c}) (min {lo}, max {hi}); "
                f"predictions must be class indices of a {c}-class model"
            )
        counted = (target >= 0) & (target < c) & (target != self.ignore_index)
        # Uncounted pixels go to one extra bin that is dropped: no boolean indexing, no sync.
        index = torch.where(counted, target * c + pred, c * c)
        self.matrix += torch.bincount(index, minlength=c * c + 1)[: c * c].view(c, c)

    def compute(self, *, exclude: Sequence[int] = ()) -> dict:
        """Segmentation metrics as python floats (fractions in [0, 1]) and per-class lists.

        Args:
            exclude: class ids left out of mIoU / minIoU / maxIoU / mean_class_accuracy / mean_F1
                (their per-class values are still reported).

        Returns:
            dict with ``IoU``, ``class_accuracy`` and ``F1`` (lists, one float per class, NaN for
            absent classes as described in the class docstring; F1 = 2 TP / (2 TP + FP + FN), the
            Dice score), ``mIoU``, ``minIoU``, ``maxIoU``, ``pixel_accuracy``, ``mean_class_accuracy``,
            ``mean_F1`` (floats) and ``n_pixels`` (int).
        """
        c = self.num_classes
        excluded = [int(k) for k in exclude]
        bad = [k for k in excluded if not 0 <= k < c]
        if bad:
            raise ValueError(f"exclude has class ids outside [0, {c}): {bad}")
        cm = self.matrix.detach().cpu().numpy().astype(np.float64)
        tp = np.diag(cm)
        in_target = cm.sum(axis=1)
        in_pred = cm.sum(axis=0)
        union = in_target + in_pred - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            recall = np.where(in_target > 0, tp / in_target, np.nan)
            f1 = np.where(in_target + in_pred > 0, 2 * tp / (in_target + in_pred), np.nan)
        keep = np.ones(c, dtype=bool)
        keep[excluded] = False
        kept_iou = iou[keep]
        kept_iou = kept_iou[~np.isnan(kept_iou)]
        total = cm.sum()
        return {
            "IoU": iou.tolist(),
            "class_accuracy": recall.tolist(),
            "mIoU": _nanmean(iou[keep]),
            "minIoU": float(kept_iou.min()) if kept_iou.size else math.nan,
            "maxIoU": float(kept_iou.max()) if kept_iou.size else math.nan,
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else math.nan,
            "mean_class_accuracy": _nanmean(recall[keep]),
            "F1": f1.tolist(),
            "mean_F1": _nanmean(f1[keep]),
            "n_pixels": int(total),
        }


# ================================================================================ anomaly


def _score_bins(scores: torch.Tensor, bits: int) -> torch.Tensor:
    """Order-preserving bin index in ``[0, 2**bits)`` of each float32 score (int32, flat).

    The float32 bit pattern ``i`` is read as sign and magnitude; ``key = +mag`` for
    non-negative floats and ``-mag`` for negative ones is an int32 ordered exactly like the
    floats (IEEE magnitudes are ordered like their bit patterns), with -0.0 and +0.0 both
    mapped to 0. The top ``bits`` bits of the 32-bit key (an arithmetic shift, shifted to be
    non-negative) are the bin. This is the classic "flip all bits of negatives, the sign bit
    of positives" radix key, up to a constant offset, except that it also merges the zeros.
    """
    return _score_index(scores, None, bits)


def _score_index(scores: torch.Tensor, label: torch.Tensor | None, bits: int) -> torch.Tensor:
    """`_score_bins`, times 2 plus the int32 label when one is given, in few in-place passes."""
    i = scores.reshape(-1).view(torch.int32)
    sign = i >> 31  # -1 for negative floats, else 0
    key = i & 0x7FFFFFFF  # magnitude
    key ^= sign  # two's-complement negation of the magnitude where sign == -1 ...
    key -= sign  # ... so key = -mag for negative floats, +mag otherwise
    key >>= 32 - bits
    if bits < 32:
        key += 1 << (bits - 1)
    if label is not None:
        key <<= 1
        key += label
    return key


def _full_keys(scores: torch.Tensor) -> torch.Tensor:
    """Order-preserving int64 key in ``[0, 2**32)`` of each float32 score: every distinct float32
    its own key (-0.0 and +0.0 one), and ``key >> (32 - bits)`` is its `_score_bins` bin."""
    return _score_index(scores, None, 32).to(torch.int64) + (1 << 31)


#: At most about this many finite scores (evenly strided) choose an offset: the median of such a
#: subsample centres the bins as well as the full median, at a fraction of its cost.
_OFFSET_SAMPLE = 1 << 16
#: The median becomes the offset only when it lies further than this many median absolute
#: deviations from 0: then the scores crowd around a level far from 0 (e.g. -5e5 +- 1e4), and
#: float32 bins of the raw scores are as coarse as the level. Otherwise 0 keeps the resolution,
#: relative to |score|, that scores around or across 0, or spanning decades, need (e.g. -log max
#: softmax of confident pixels, 1e-7 .. 1e-3).
_OFFSET_MIN_DEVIATIONS = 4.0
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _choose_offset(x: torch.Tensor, keep: torch.Tensor | None) -> float | None:
    """The offset a batch chooses for `_shifted`: the median of its finite counted scores when
    the scores sit far from 0 relative to their spread, else 0.0; None without a finite score.

    Args:
        x: float32 scores. Shape (N,). keep: optional bool mask of the counted pixels. Shape (N,).

    Returns:
        A float32 value as a Python float (+0.0, never -0.0), or None when no counted score is
        finite. It is the median ``m`` of the finite counted scores among every ``N // 2**16``-th
        pixel (all of them if that sample has none) if ``|m| > 4 * median(|score - m|)``, else 0.0.
        Equal inputs give the same offset on every device: the median is the lower middle value
        (`_lower_median`, a selection), and ``|score - m|`` is one correctly rounded float32 operation.
    """

    def finite_counted(sample: torch.Tensor, counted: torch.Tensor | None) -> torch.Tensor:
        finite = torch.isfinite(sample)
        if counted is not None:
            finite &= counted
        return sample[finite]

    # Stride before masking: a boolean mask over a whole 1-Mpixel image costs more than the rest.
    step = max(1, x.numel() // _OFFSET_SAMPLE)
    values = finite_counted(x[::step], None if keep is None else keep[::step])
    if values.numel() == 0 and step > 1:
        values = finite_counted(x, keep)  # the sample missed the few counted scores
    if values.numel() == 0:
        return None
    median = _lower_median(values)
    deviation = _lower_median((values - median).abs_())
    far = abs(median) > _OFFSET_MIN_DEVIATIONS * deviation
    return median + 0.0 if far else 0.0  # + 0.0 turns -0.0 into 0.0


def _lower_median(values: torch.Tensor) -> float:
    """``values.median()`` (the lower of the two middle values) as a Python float; on the CPU by
    numpy's selection, ten times faster than torch's and the same value."""
    if values.device.type != "cpu":
        return float(values.median())
    array = values.numpy()
    middle = (array.size - 1) // 2
    return float(np.partition(array, middle)[middle])


def _shifted(scores: torch.Tensor, x: torch.Tensor, offset: float | None) -> torch.Tensor:
    """``scores - offset`` as float32, for `_score_index`; ``x`` itself when there is no offset.

    Args:
        scores: the scores as given (any float dtype). x: the same scores as float32.
            Shape (N,) both, on one device.
        offset: a float32 value, or None / 0.0 for no shift.

    Returns:
        float32 differences. Shape (N,). float64 scores are shifted in float64 before the cast
        (their float32 rounding near a large offset would tie what the shift separates), others in
        float32, whose subtraction is correctly rounded. Rounding is monotone: equal scores stay
        equal and no two scores swap (scores closer than a float32 step of ``score - offset`` may
        become equal). A difference beyond the float32 range (3.4e38) becomes +-inf; +-inf stay.
    """
    if not offset:
        return x
    if scores.dtype == torch.float64:
        return (scores - offset).to(torch.float32)
    return x - offset


def _block_bits(bits: int) -> tuple[int, int]:
    """(log2 of the bins per block, log2 of the number of blocks) for ``2**bits`` bins: a block is
    a binade of ``|score - offset|`` (``2**(bits - 9)`` bins: 1 sign + 8 exponent bits come first),
    one bin when ``bits < 9``."""
    per_block = max(bits - 9, 0)
    return per_block, bits - per_block


def _span_counts(
    index: torch.Tensor, keep: torch.Tensor | None, bits: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Histogram of `_score_index` keys over the blocks of bins they touch, empty blocks left out.

    Scores that straddle the offset touch bins on both sides of the centre, and between the
    smallest ``|score - offset|`` (a float32 step of the offset) and 0 lie some 200 empty binades:
    a histogram over the whole span would be half a million bins for a few thousand occupied.
    So the keys are grouped in aligned blocks of ``2**(bits - 9)`` bins (`_block_bits`: a binade),
    and only the blocks that hold a counted pixel are laid side by side.

    Args:
        index: keys ``bin * 2 + label`` (int32, flat; modified in place: it ends up as the
            compact key, uncounted pixels one past the compact span).
        keep: optional bool mask of the pixels to count.

    Returns:
        (the first bin of each kept block, Shape (n_blocks,) int64; counts, Shape (n_blocks *
        bins_per_block, 2) int64 as [inlier, anomaly], bin ``b`` of block ``k`` in row
        ``k * bins_per_block + b``), numpy on the CPU, or None when no pixel is counted.
    """
    per_block, block_count = _block_bits(bits)
    shift = per_block + 1  # a block is 2**shift keys (two labels per bin)
    n_blocks = 1 << block_count
    if keep is not None:
        index.masked_fill_(~keep, n_blocks << shift)  # block n_blocks: past every real block
    blocks = index >> shift
    used = np.flatnonzero(torch.bincount(blocks, minlength=n_blocks + 1)[:n_blocks].cpu().numpy())
    if used.size == 0:
        return None
    first = int(used[0])
    index &= (1 << shift) - 1
    if int(used[-1]) - first + 1 == used.size:  # one run of blocks: a plain shift
        blocks -= first
        if keep is not None:
            blocks.clamp_(max=used.size)  # uncounted pixels: one block past the span
    else:
        table = np.full(n_blocks + 1, used.size, dtype=np.int32)
        table[used] = np.arange(used.size, dtype=np.int32)
        blocks = torch.from_numpy(table).to(blocks.device).index_select(0, blocks)
    index += blocks << shift
    size = used.size << shift
    counts = torch.bincount(index, minlength=size + 1)[:size].view(-1, 2).cpu().numpy()
    return used.astype(np.int64) << per_block, counts


def _bin_lower_edges(bins: np.ndarray, bits: int) -> np.ndarray:
    """Smallest float32 that falls in each bin (inverse of `_score_bins`), -inf for the lowest."""
    key = (bins.astype(np.int64) - (1 << (bits - 1))) << (32 - bits)
    mag = np.abs(key)
    pattern = np.where(key < 0, mag | 0x80000000, mag) & 0xFFFFFFFF
    edge = pattern.astype(np.uint32).view(np.float32).astype(np.float64)
    # The lowest key of the bin holding -inf lies beyond it (a NaN pattern or past the sign bit).
    return np.where(mag > 0x7F800000, np.where(key < 0, -np.inf, np.inf), edge)


#: The rules an anomaly number can be computed under: each official kit's definitions of AUPR (AP),
#: AUROC and FPR95 on one curve, read from its code (see `rank_metrics`).
RULES = ("anomaly-seg", "smiyc", "pytorch-ood")


def rank_metrics(tps: np.ndarray, fps: np.ndarray, rules: str = "anomaly-seg") -> dict[str, float]:
    """AUPR, AUROC and FPR95 from cumulative counts at each distinct threshold, under a kit's rules.

    Args:
        tps, fps: true and false positives above each threshold, thresholds from the highest
            score down (one entry per distinct score or bin, ties grouped); both classes present.
        rules: whose definitions (each read from that kit's code):

            * ``"anomaly-seg"`` (hendrycks/anomaly-seg ``anom_utils.py``, also this project's own
              ``pooled`` and ``per-image`` protocols): ``AUPR`` as sklearn's
              ``average_precision_score`` (``sum_n (R_n - R_{n-1}) P_n``), ``AUROC`` as
              ``roc_auc_score`` (trapezoids from (0, 0)), ``FPR95`` as its ``fpr_and_fdr_at_recall``
              (the threshold whose recall is closest to 0.95, up to the first reaching full recall).
            * ``"smiyc"`` (SegmentMeIfYouCan ``road_anomaly_benchmark/metrics/pixel_classification_curves.py``,
              ``curves_from_cmats``): one point per threshold, no end point added; ``AUPR`` (its
              AP) ``np.trapz(precision, recall)``, ``AUROC`` ``np.trapz(tpr, fpr)`` (not from (0, 0)),
              ``FPR95`` the FPR at the first threshold whose TPR reaches 0.95 (1.0 if none does).
            * ``"pytorch-ood"`` (pytorch-ood 0.4 ``metrics/functional.py``): ``AUPR`` (its AUPR-OUT) the
              trapezoids of sklearn's precision-recall curve with its (recall 0, precision 1) end
              point, ``AUROC`` trapezoids from (0, 0), ``FPR95`` the FPR of the first ROC point
              (from (0, 0)) whose TPR is at least 0.95.
    """
    n_pos, n_neg = int(tps[-1]), int(fps[-1])
    tps_f = tps.astype(np.float64)
    fps_f = fps.astype(np.float64)
    recall = tps_f / n_pos
    precision = tps_f / (tps_f + fps_f)  # every threshold has >= 1 pixel above it
    fpr = fps_f / n_neg
    if rules == "smiyc":
        aupr = _trapezoids(recall, precision)
        auroc = _trapezoids(fpr, recall)
        first = int(np.searchsorted(recall, 0.95))
        fpr95 = float(fpr[first]) if first < recall.size else 1.0
        return {"AUPR": aupr, "AUROC": auroc, "FPR95": fpr95}
    tpr = np.concatenate(([0.0], recall))
    fpr0 = np.concatenate(([0.0], fpr))
    auroc = _trapezoids(fpr0, tpr)
    if rules == "pytorch-ood":
        aupr = _trapezoids(np.concatenate(([0.0], recall)), np.concatenate(([1.0], precision)))
        fpr95 = float(fpr0[int(np.searchsorted(tpr, 0.95))])
        return {"AUPR": aupr, "AUROC": auroc, "FPR95": fpr95}
    if rules != "anomaly-seg":
        raise ValueError(f"unknown rules {rules!r}; valid: {', '.join(RULES)}")
    aupr = float(np.sum(np.diff(recall, prepend=0.0) * precision))
    last = int(np.searchsorted(tps, tps[-1]))
    rec = np.concatenate((recall[last::-1], [1.0]))
    fp = np.concatenate((fps_f[last::-1], [0.0]))
    fpr95 = float(fp[np.argmin(np.abs(rec - 0.95))] / n_neg)
    return {"AUPR": aupr, "AUROC": auroc, "FPR95": fpr95}


def _trapezoids(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoidal area under the points (x, y) in the order given (``np.trapz(y, x)``)."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2.0)


def _bin_index(shifted: torch.Tensor, label: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``bin * 2 + label`` (int32, as `_score_index`) and each score's position inside its bin (the
    low ``32 - bits`` bits of its full key, float64 for the weighted bincounts), in one key pass."""
    key = _score_index(shifted, None, 32)  # the full order-preserving key
    inside = (key & ((1 << (32 - bits)) - 1)).to(torch.float64)
    key >>= 32 - bits
    key += 1 << (bits - 1)
    key <<= 1
    return key.add_(label), inside


def _span_state(
    shifted: torch.Tensor, label: torch.Tensor, keep: torch.Tensor | None, bits: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Counts and in-bin sums of a group of pixels at the bins they occupy (`_span_counts`).

    Args:
        shifted: float32 scores minus the offset. label: int32 0/1. keep: optional bool. Shape (N,).

    Returns:
        Numpy arrays on the CPU: the occupied bins, increasing, Shape (n,) int64; their counts,
        Shape (n, 2) int64 as [inlier, anomaly]; the sum and the sum of squares of the scores'
        positions inside their bin (the low ``32 - bits`` bits of the key), Shape (n,) int64 each.
        None when no pixel is counted.
    """
    index, inside = _bin_index(shifted, label, bits)
    span = _span_counts(index, keep, bits)
    if span is None:
        return None
    block_bins, counts = span
    n = counts.shape[0]
    index >>= 1  # the row of each pixel's bin (uncounted pixels: one past the span)
    rows = np.flatnonzero((counts[:, 0] | counts[:, 1]) != 0)  # (numpy finds bools faster than ints)
    per_block = _block_bits(bits)[0]
    bins = block_bins[rows >> per_block] + (rows & ((1 << per_block) - 1))
    sums = [
        torch.bincount(index, weights=w, minlength=n + 1).cpu().numpy()[rows].astype(np.int64)
        for w in (inside, inside * inside)
    ]
    return bins, counts[rows], sums[0], sums[1]


def _pure_bins(count: np.ndarray, inside: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """True for the bins whose pixels all have one score: the positions inside the bin have
    ``count * squares == sum**2``, tested without overflow through their integer mean."""
    mean = inside // np.maximum(count, 1)  # < 2**(32 - bits)
    return (mean * count == inside) & (mean * mean * count == squares)


#: The most a binned AUPR, AUROC or FPR95 may differ from the exact value before the metrics say
#: so (`tie_bounds`): per image the image is then ranked exactly; pooled, `AnomalyMetric.compute`
#: warns and `lib.test.evaluate` resolves the bins that tie in a second, exact pass.
TIE_TOLERANCE = 1e-3


class _TieTerms(NamedTuple):
    """`_tie_terms`' result: per bin that ties can move (float64 arrays but ``at``)."""

    at: np.ndarray  # the bins' indices (int64)
    pos: np.ndarray  # their anomaly pixels
    neg: np.ndarray  # their inlier pixels
    tp: np.ndarray  # anomaly pixels above them
    fp: np.ndarray  # inlier pixels above them
    aupr: np.ndarray  # their shares of the AUPR bound
    auroc: np.ndarray  # their shares of the AUROC bound


def _tie_terms(tps: np.ndarray, fps: np.ndarray, pure: np.ndarray | None) -> _TieTerms:
    """The bins whose ties can move a metric (`tie_bounds`' order): those with an anomaly pixel and,
    when ``pure`` is given, more than one score; the others (no anomaly, or an exact tie) add
    nothing to any bound."""
    tps = tps.astype(np.float64)
    fps = fps.astype(np.float64)
    n_pos, n_neg = tps[-1], fps[-1]
    pos = np.diff(tps, prepend=0.0)
    moving = pos > 0
    if pure is not None:
        moving &= ~pure
    at = np.flatnonzero(moving)
    pos = pos[at]
    fp = np.where(at > 0, fps[at - 1], 0.0)  # above each bin
    neg = fps[at] - fp
    tp = tps[at] - pos
    best = (tp + pos) / (tp + fp + pos)
    worst = (tp + 1) / (tp + fp + neg + 1)
    return _TieTerms(at, pos, neg, tp, fp, pos / n_pos * (best - worst), pos * neg / (2.0 * n_pos * n_neg))


def tie_bounds(tps: np.ndarray, fps: np.ndarray, pure: np.ndarray | None = None) -> dict[str, float]:
    """How far AUPR, AUROC and FPR95 of a binned curve may be from those of the exact scores.

    A bin is one threshold; inside it the exact scores may rank its anomaly and inlier pixels in any
    order (or tie them: a bin that holds one value is exact, but the counts cannot tell). Every bound
    holds for every order, under every rule set of `rank_metrics`:

    * AUPR: each anomaly pixel of bin ``b`` adds ``1/P`` times a precision between the one it gets
      after all of the bin's inliers, ``(tp + 1) / (tp + fp + neg_b + 1)``, and the best it can get,
      ``(tp + pos_b) / (tp + fp + pos_b)`` (``tp, fp`` above the bin); the binned value lies in the
      same range. Bound: ``sum_b pos_b / P * (best - worst)`` (also bounds the trapezoid APs).
    * AUROC: pairs of an anomaly and an inlier pixel in one bin count half; exactly they count 0 or
      1. Bound: ``sum_b pos_b * neg_b / (2 P N)``.
    * FPR95: inside a bin holding both classes that the 0.95 recall level falls in or near (within
      the distance of the binned choice), the FPR of the chosen point can move across the bin's
      inliers. Bound: the largest such move, over ``N``.

    Args:
        tps, fps: cumulative counts per bin from the highest bin down (both classes present).
        pure: optional bool per bin: True where all the bin's scores are equal (its ties are the
            exact ties, no error).

    Returns:
        ``{"AUPR", "AUROC", "FPR95"}`` bounds (fractions).
    """
    t = _tie_terms(tps, fps, pure)
    out = {"AUPR": float(t.aupr.sum()), "AUROC": float(t.auroc.sum()), "FPR95": 0.0}
    mixed = t.neg > 0
    if mixed.any():
        n_pos, n_neg = float(tps[-1]), float(fps[-1])
        recall_hi = tps / n_pos
        # The binned choice (anomaly-seg rule: nearest recall); others choose within the same reach.
        chosen = int(np.argmin(np.abs(np.concatenate(([0.0], recall_hi)) - 0.95)))
        reach = abs((0.0 if chosen == 0 else recall_hi[chosen - 1]) - 0.95)
        chosen_fp = 0.0 if chosen == 0 else float(fps[chosen - 1])
        near = mixed & (t.tp / n_pos <= 0.95 + reach) & (recall_hi[t.at] >= 0.95 - reach)
        if near.any():
            fp, neg = t.fp[near], t.neg[near]
            moves = np.maximum(np.abs(fp - chosen_fp), np.abs(fp + neg - chosen_fp))
            out["FPR95"] = float(moves.max() / n_neg)
    return out


class AnomalyMetric:
    """Pixel-level AUPR, AUROC and FPR95 pooled over all counted pixels, in constant memory.

    Positives are anomaly pixels; a higher score means "more anomalous".

    Method (order-preserving histograms, an approximation): each score is shifted by an ``offset``
    (below) and cast to float32, and ``d = score - offset`` is mapped to an integer with the same
    order as the floats (see `_score_bins`); its top ``bits`` bits index two int64 histograms of
    ``2**bits`` bins, one for anomaly and one for inlier pixels, filled by one ``torch.bincount``
    per update (on the CPU over the binades the update occupies only, `_span_counts`). Two more
    per-bin sums tell real ties from binning ties (`tie_bound`) and ``block_counts`` sums the
    counts per binade. Memory is ``4 * 2**bits * 8`` bytes (32 MiB at the default ``bits=20``;
    on the CPU only the pages an evaluation touches are ever backed) however many pixels are
    streamed.

    The approximation: scores in the same bin are tied (one threshold). Bins never straddle a
    power of two of ``|d|``, and each binade ``[2**e, 2**(e+1))`` of ``|d|`` (likewise for
    negative ``d``) holds ``2**(bits - 9)`` equal bins (1 sign + 8 exponent bits come first), so
    tied scores differ by less than ``2**-(bits - 9) * |d|`` (4.9e-4 |d| at ``bits=20``) and
    scores that differ by more are never tied. The resolution is relative to the distance from
    the offset, not to the scores' magnitude. E.g. at ``bits=20`` with offset 0, 0.75 and
    0.75 + 1e-7 are tied (that bin spans [0.75, 0.75 + 2.4e-4)) while 0.75 and 0.751 are not, nor
    are 0.9999999 and 1.0 (another binade). Inputs of other float dtypes are rounded to float32
    after the shift (float64 is shifted first). If scores that matter differ by less, pass them
    through a strictly increasing transform that spreads them (the metrics depend only on the
    order), e.g. ``-log(1 - p)`` for probabilities near 1.

    Bound: pixels in different bins keep their order, so |AUROC - exact| is at most half the
    share of (anomaly, inlier) pairs that share a bin with different scores. AUPR and FPR95 have
    no such closed form; tests/test_metrics.py checks all three within 1e-3 of the exact values
    (scikit-learn, the official FPR95) for continuous, heavily tied, huge (1e30) and large-offset
    (``1e4 * z - 5e5``) scores. ``exact_rank_metrics`` sorts the scores when that is not enough.

    Offset: a strictly increasing shift changes no rank metric, and without one the bins of
    scores like the energies of a distance head (about -5e5 with a spread of 1e4) would be 244
    wide, 0.02 of the spread. By default the offset is fixed by the first update with a finite
    counted score, from (at most about 2**16 evenly strided of) those scores: their median ``m``
    when ``|m|`` exceeds 4 median absolute deviations (the scores crowd far from 0), else 0.0,
    which keeps the resolution relative to ``|score|`` that scores around 0 or spanning decades
    need. Until then only +-inf can have been counted, and their bins do not depend on the
    offset. ``offset=x`` fixes it in advance (rounded to float32; ``0.0`` bins the plain float32
    scores). Scores further than 3.4e38 from the offset are counted as +-inf. ``reset`` forgets a
    chosen offset, not a given one.

    Merging: ``merge`` and an all-reduce of ``state_tensors`` need histograms binned around the
    same offset. ``merge`` adopts the other metric's offset when this one has none yet and raises
    ``ValueError`` when both differ. ``offset_state`` holds [number of offsets, their sum, the sum
    of their squares] so that a sum over processes keeps the offset (sum / number); ``update``,
    ``compute`` and ``curves`` raise ``RuntimeError`` when the processes had different offsets
    (``number * squares != sum**2``). Pass the same ``offset=`` to every process that will be
    reduced (e.g. 0.0, or rank 0's ``metric.offset`` after its first update, broadcast).

    ``compute`` then walks the non-empty bins from the highest score down, one threshold per
    bin with ties grouped as in scikit-learn, and returns:

    * ``AUPR``: ``sklearn.metrics.average_precision_score``, i.e. ``sum_n (R_n - R_{n-1}) P_n``.
    * ``AUROC``: trapezoidal area under (FPR, TPR) from (0, 0), as ``roc_auc_score``.
    * ``FPR95``: as ``fpr_and_fdr_at_recall(..., recall_level=0.95)`` of the official
      anomaly-seg / outlier-exposure code: of the thresholds up to the first reaching full
      recall (plus that code's appended point of recall 1 and 0 false positives), the one whose
      recall is closest to 0.95 (first on ties, in that code's reversed order); its FP / negatives.

    Without any anomaly pixel or any inlier pixel the three metrics are NaN, with a warning.
    Scores of any finite magnitude and +-inf are fine; NaN among counted pixels raises
    ``ValueError`` (pixels outside ``valid`` are not checked).

    Args:
        bits: ``2**bits`` bins per histogram (memory ``2**(bits + 5)`` bytes), in [1, 28].
        offset: the shift of every score before binning (rounded to float32); None: chosen by
            the first update with a finite counted score (the rule above).
        device: where the state lives; None: the device of the first update's scores.
    """

    #: The state tensors that counting adds to (`state_tensors` also holds ``offset_state``).
    _COUNTED = ("pos_hist", "neg_hist", "res_sum", "res_sq", "block_counts")

    def __init__(
        self, *, bits: int = 20, offset: float | None = None, device: torch.device | str | None = None
    ) -> None:
        if not 1 <= int(bits) <= 28:
            raise ValueError(f"bits must be in [1, 28] (memory 2**(bits + 5) bytes), got {bits}")
        if offset is not None and not abs(float(offset)) <= _FLOAT32_MAX:
            raise ValueError(
                f"offset must be a finite float32 value (|offset| <= {_FLOAT32_MAX:g}), got {offset}; "
                "pass None to let the first update choose it"
            )
        self.bits = int(bits)
        self._device = _as_device(device)
        self._given_offset = None if offset is None else float(np.float32(offset)) + 0.0
        self.pos_hist = _zeros(1 << self.bits, self._device)
        self.neg_hist = _zeros(1 << self.bits, self._device)
        # Per bin, the sum and the sum of squares of the scores' positions inside the bin (the low
        # 32 - bits bits of their key): they are equal for all of the bin's pixels exactly when
        # count * squares == sum**2, i.e. when the bin's ties are real ties (`tie_bound`).
        self.res_sum = _zeros(1 << self.bits, self._device)
        self.res_sq = _zeros(1 << self.bits, self._device)
        # Pixels counted per block of 2**(bits - 9) bins (a binade of |score - offset|): `compute`
        # reads only the blocks that hold pixels, and a changed state changes these sums.
        self.block_counts = torch.zeros(
            1 << _block_bits(self.bits)[1], dtype=torch.int64, device=self.pos_hist.device
        )
        self.offset_state = torch.zeros(3, dtype=torch.float64, device=self.pos_hist.device)
        self._set_offset(self._given_offset)
        self._refine: dict | None = None  # the exact second pass of `resolve_ties`
        self._walked: tuple | None = None  # `_cumulative`'s last result, with the counts it read

    # ------------------------------------------------------------------ state

    @property
    def device(self) -> torch.device:
        return self.pos_hist.device

    @property
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The live state tensors by attribute name: the anomaly and inlier histograms and the in-bin
        position sums (int64, one entry per bin), ``block_counts`` (int64: the pixels counted in each
        block of ``2**(bits - 9)`` bins; whoever writes the histograms directly must keep it their
        block sums) and ``offset_state`` (float64: [number of offsets, sum, sum of squares]).

        Summing each over processes (e.g. ``dist.all_reduce`` in place) merges the states, provided
        every process binned around the same offset (checked by ``update``, ``compute``, ``curves``).
        """
        return {name: getattr(self, name) for name in (*self._COUNTED, "offset_state")}

    @property
    def offset(self) -> float | None:
        """The shift applied to every score before binning; None before it is chosen.

        Raises:
            RuntimeError: the state is a sum of states binned around different offsets.
        """
        return self._checked_offset()

    def _checked_offset(self) -> float | None:
        n, total, squares = self.offset_state.tolist()
        if n == 0:
            return None
        # Equal offsets give n * squares == total**2 up to float64 rounding; unequal ones give
        # n**2 times their variance, far above it for offsets that differ beyond ~1e-6 relative.
        if abs(n * squares - total * total) > 1e-12 * total * total:
            raise RuntimeError(
                f"this AnomalyMetric's state sums {n:g} states binned around different offsets "
                f"(mean {total / n:g}), so its histograms do not line up; create the metric of every "
                "process with the same offset= (e.g. 0.0, or rank 0's metric.offset broadcast)"
            )
        return float(np.float32(total / n)) + 0.0

    def _set_offset(self, offset: float | None) -> None:
        values = [0.0, 0.0, 0.0] if offset is None else [1.0, offset, offset * offset]
        self.offset_state.copy_(torch.tensor(values, dtype=torch.float64))

    def reset(self) -> None:
        """Forget every counted pixel and a chosen offset (the state stays on its device)."""
        for name in self._COUNTED:
            getattr(self, name).zero_()
        self._set_offset(self._given_offset)
        self._refine = None

    def merge(self, other: AnomalyMetric) -> AnomalyMetric:
        """Add another metric's histograms into this one (same ``bits`` and offset); returns self.

        Raises:
            ValueError: ``other`` is not an AnomalyMetric of the same ``bits``, or both metrics
                have an offset and they differ.
        """
        if not isinstance(other, AnomalyMetric) or other.bits != self.bits:
            raise ValueError("can only merge an AnomalyMetric with the same bits")
        mine, theirs = self.offset, other.offset
        if mine is not None and theirs is not None and mine != theirs:
            raise ValueError(
                f"cannot merge AnomalyMetrics binned around different offsets ({mine!r} and {theirs!r}); "
                "create both with the same offset= (e.g. AnomalyMetric(offset=0.0))"
            )
        if mine is None and theirs is not None:
            self._set_offset(theirs)
        for name in self._COUNTED:
            getattr(self, name).add_(getattr(other, name).to(self.device))
        return self

    def _place(self, device: torch.device) -> torch.device:
        if self._device is None:
            self._device = device
            if self.pos_hist.device != device:
                for name, tensor in self.state_tensors.items():
                    setattr(self, name, tensor.to(device))
        return self.pos_hist.device

    # ------------------------------------------------------------------ update

    def update(
        self, scores: torch.Tensor, is_anomaly: torch.Tensor, valid: torch.Tensor | None = None
    ) -> None:
        """Count one batch of pixels.

        Args:
            scores: floating scores of any shape; higher = more anomalous.
            is_anomaly: bool (or 0/1 integer) tensor of the same shape; True = positive.
            valid: optional bool tensor of the same shape; only True pixels are counted.
        """
        if scores.shape != is_anomaly.shape:
            raise ValueError(
                f"scores and is_anomaly shapes differ: {tuple(scores.shape)} vs {tuple(is_anomaly.shape)}"
            )
        if valid is not None and valid.shape != scores.shape:
            raise ValueError(
                f"valid shape {tuple(valid.shape)} differs from scores shape {tuple(scores.shape)}"
            )
        device = self._place(scores.device)
        if scores.numel() == 0:
            return
        raw = scores.detach().reshape(-1).to(device)
        x = raw.to(torch.float32)
        label = is_anomaly.detach().reshape(-1).to(device)
        label = label.to(torch.int32) if label.dtype == torch.bool else (label != 0).to(torch.int32)
        keep = None if valid is None else valid.detach().reshape(-1).to(device=device, dtype=torch.bool)
        check_no_nan(x, keep)
        offset = self._offset_for(x, keep)
        shifted = _shifted(raw, x, offset)
        if self._refine is not None:
            self._add_fine(shifted, label, keep)
            return
        if shifted.device.type == "cpu":
            # Count only the bins this batch occupies (scores of one image usually fill a few
            # thousand of the 2**bits bins): no histogram-sized array per update. (On a GPU the
            # full-size bincount of `_add_full` is cheap, and the span would cost synchronisations.)
            span = _span_state(shifted, label, keep, self.bits)
            if span is not None:
                self._add_state(*span)
            return
        self._add_full(shifted, label, keep)

    def _add_full(self, shifted: torch.Tensor, label: torch.Tensor, keep: torch.Tensor | None) -> None:
        """Count pixels with bincounts the size of the whole histogram (the GPU path of `update`;
        the same state as `_span_state` + `_add_state`, without reading anything back)."""
        n_bins = 1 << self.bits
        index, inside = _bin_index(shifted, label, self.bits)
        if keep is not None:
            # Uncounted pixels go to one extra bin that is dropped: no boolean indexing.
            index.masked_fill_(~keep, 2 * n_bins)
        counts = torch.bincount(index, minlength=2 * n_bins + 1)[: 2 * n_bins].view(n_bins, 2)
        self.neg_hist += counts[:, 0]
        self.pos_hist += counts[:, 1]
        self.block_counts += counts.reshape(self.block_counts.numel(), -1).sum(dim=1)
        index >>= 1
        for hist, weights in ((self.res_sum, inside), (self.res_sq, inside * inside)):
            hist += torch.bincount(index, weights=weights, minlength=n_bins + 1)[:n_bins].to(torch.int64)

    def _offset_for(self, x: torch.Tensor, keep: torch.Tensor | None) -> float | None:
        """The offset to bin these float32 scores around: the metric's, chosen from them if it has none."""
        offset = self._checked_offset()
        if offset is None:
            offset = _choose_offset(x, keep)
            self._set_offset(offset)
        return offset

    def _add_state(
        self, bins: np.ndarray, counts: np.ndarray, inside: np.ndarray, squares: np.ndarray
    ) -> None:
        """Add `_span_state`'s counts and in-bin sums of the bins it occupies to the state."""
        at = torch.from_numpy(bins).to(self.device)
        per_block = torch.from_numpy(counts[:, 0] + counts[:, 1]).to(self.device)
        self.block_counts.index_add_(0, at >> _block_bits(self.bits)[0], per_block)
        for hist, values in (
            (self.neg_hist, counts[:, 0]),
            (self.pos_hist, counts[:, 1]),
            (self.res_sum, inside),
            (self.res_sq, squares),
        ):
            hist.index_add_(0, at, torch.from_numpy(np.ascontiguousarray(values)).to(self.device))

    # ------------------------------------------------------------------ tied bins

    def tie_bound(self) -> float:
        """The most the binned AUPR, AUROC or FPR95 may differ from the exact values (`tie_bounds`;
        what is left after `resolve_ties`); 0.0 without both classes."""
        if self._refine is not None:
            return self._refine["bound_left"]
        bins, tps, fps = self._cumulative()
        if not tps.size or tps[-1] == 0 or fps[-1] == 0:
            return 0.0
        memo = self._walked[2]  # kept with the walk it was computed from
        if "tie_bound" not in memo:
            memo["tie_bound"] = max(tie_bounds(tps, fps, self._pure(bins)).values())
        return memo["tie_bound"]

    def _pure(self, bins: np.ndarray) -> np.ndarray:
        """Whether every pixel of each bin has the same score (float32 key): count * squares == sum**2."""
        count = self.pos_hist.detach().cpu().numpy()[bins] + self.neg_hist.detach().cpu().numpy()[bins]
        total = self.res_sum.detach().cpu().numpy()[bins]
        squares = self.res_sq.detach().cpu().numpy()[bins]
        return _pure_bins(count, total, squares)

    def resolve_ties(self, tolerance: float = TIE_TOLERANCE, max_keys: int = 1 << 24) -> int:
        """Start a second pass that ranks exactly the pixels of the bins whose ties matter.

        After this call, `update` no longer bins: it records the exact float32 keys (with their
        label) of the pixels falling in the chosen bins, and `compute` merges them with the first
        pass's histograms (the other bins stay as they were). Feed the same pixels again, in any
        order and batching. Bins are chosen by their share of `tie_bounds` until what is left is at
        most ``tolerance / 2``. The record holds at most one entry per distinct score in those
        bins (``2**(32 - bits)`` per bin at most); past ``max_keys`` entries the pass stops
        refining and `compute` warns.

        Returns:
            The number of bins to resolve (0: nothing to do, no second pass needed).
        """
        bins, tps, fps = self._cumulative()
        pure = self._pure(bins)
        if (
            not tps.size
            or tps[-1] == 0
            or fps[-1] == 0
            or max(tie_bounds(tps, fps, pure).values()) <= tolerance
        ):
            return 0
        t = _tie_terms(tps, fps, pure)  # the other bins: exact already
        weight = np.zeros(bins.size)
        weight[t.at] = t.aupr + t.auroc + t.neg / float(fps[-1]) * (t.neg > 0)  # FPR95: any mixed bin
        order = np.argsort(-weight, kind="stable")
        left = np.cumsum(weight[order][::-1])[::-1]  # what stays tied if bins order[:k] are resolved
        k = int(np.searchsorted(-left, -tolerance / 2)) if left.size else 0
        k = max(1, min(k, bins.size))
        chosen = np.sort(bins[order[:k]])
        bound_left = float(left[k]) if k < left.size else 0.0
        self._refine = {
            "bins": torch.from_numpy(chosen),
            "keys": np.zeros(0, np.int64),
            "counts": np.zeros(0, np.int64),
            "bound_left": bound_left,
            "max_keys": int(max_keys),
            "overflow": False,
        }
        return int(chosen.size)

    def _add_fine(self, shifted: torch.Tensor, label: torch.Tensor, keep: torch.Tensor | None) -> None:
        """Second pass: record (exact key, label) of the pixels in the bins being resolved."""
        refine = self._refine
        if refine["overflow"]:
            return
        keys = _full_keys(shifted)
        in_bins = torch.isin(keys >> (32 - self.bits), refine["bins"].to(keys.device))
        if keep is not None:
            in_bins &= keep
        selected = (keys[in_bins] * 2 + label[in_bins]).cpu().numpy()
        if not selected.size:
            return
        merged = np.concatenate((refine["keys"], selected))
        weights = np.concatenate((refine["counts"], np.ones(selected.size, np.int64)))
        keys_u, inverse = np.unique(merged, return_inverse=True)
        refine["keys"], refine["counts"] = keys_u, np.bincount(inverse, weights=weights).astype(np.int64)
        if keys_u.size > refine["max_keys"]:
            refine["overflow"] = True

    def _refined_cumulative(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, tps, fps) of the first pass's bins with the resolved bins replaced by their exact
        keys, from the highest down; ``keys`` are `_full_keys` (a kept bin: its lowest key)."""
        refine = self._refine
        shift = 32 - self.bits
        pos = self.pos_hist.detach().cpu().numpy().copy()
        neg = self.neg_hist.detach().cpu().numpy().copy()
        resolved = refine["bins"].numpy()
        pos[resolved] = 0
        neg[resolved] = 0
        bins = np.flatnonzero(pos + neg)
        fine_keys, fine_labels = refine["keys"] >> 1, (refine["keys"] & 1).astype(bool)
        # Bins and exact keys in one order: a bin sorts as its lowest key; keys never share a
        # resolved bin with a kept one.
        order_keys = np.concatenate((bins.astype(np.int64) << shift, fine_keys))
        p = np.concatenate((pos[bins], np.where(fine_labels, refine["counts"], 0)))
        n = np.concatenate((neg[bins], np.where(fine_labels, 0, refine["counts"])))
        order = np.argsort(-order_keys, kind="stable")
        values, first = np.unique(-order_keys[order], return_index=True)  # group equal keys
        p_grouped = np.add.reduceat(p[order], first)
        n_grouped = np.add.reduceat(n[order], first)
        return -values, np.cumsum(p_grouped), np.cumsum(n_grouped)

    # ------------------------------------------------------------------ compute

    def _cumulative(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bins, tps, fps) at each non-empty bin, from the highest score down (int64 numpy).

        Reads only the blocks of bins that hold pixels (``block_counts``), and keeps the walk until
        the counts change (their block sums are compared), so `tie_bound`, `compute` under several
        rule sets and `curves` walk the histograms once."""
        blocks = self.block_counts.detach().cpu().numpy()
        stamp = blocks.tobytes()
        if self._walked is not None and self._walked[0] == stamp:
            return self._walked[1]
        pos = self.pos_hist.detach().cpu().numpy()
        neg = self.neg_hist.detach().cpu().numpy()
        block_shift = _block_bits(self.bits)[0]
        # Every bin of every occupied block, highest first, then those with a pixel.
        bins = (np.flatnonzero(blocks)[::-1, None] << block_shift) + np.arange((1 << block_shift) - 1, -1, -1)
        bins = bins.reshape(-1)
        p, n = pos[bins], neg[bins]
        occupied = (p | n) != 0  # counts are >= 0: nonzero together iff either is
        walked = bins[occupied], np.cumsum(p[occupied]), np.cumsum(n[occupied])
        self._walked = (stamp, walked, {})
        return walked

    def compute(self, rules: str = "anomaly-seg") -> dict:
        """``{"AUPR", "AUROC", "FPR95"}`` as floats in [0, 1], ``"protocol": "pooled"``, ``n_pos``, ``n_neg``.

        Args:
            rules: whose definitions of the three metrics (`RULES`, see `rank_metrics`).

        Raises:
            RuntimeError: the state sums states binned around different offsets (see ``offset``).
        """
        self._checked_offset()  # histograms summed across different offsets mean nothing
        if self._refine is not None:
            _, tps, fps = self._refined_cumulative()
        else:
            _, tps, fps = self._cumulative()
        n_pos = int(tps[-1]) if tps.size else 0
        n_neg = int(fps[-1]) if fps.size else 0
        out = {"AUPR": math.nan, "AUROC": math.nan, "FPR95": math.nan}
        if n_pos == 0 or n_neg == 0:
            missing = "anomaly (positive)" if n_pos == 0 else "inlier (negative)"
            warnings.warn(
                f"AnomalyMetric saw no {missing} pixel ({n_pos} anomaly, {n_neg} inlier pixels counted): "
                "AUPR, AUROC and FPR95 are undefined and returned as NaN",
                RuntimeWarning,
                stacklevel=2,
            )
            return {**out, "protocol": "pooled", "n_pos": n_pos, "n_neg": n_neg}
        out = rank_metrics(tps, fps, rules)
        bound = self.tie_bound()
        if self._refine is not None and self._refine["overflow"]:
            bound = max(bound, tie_bounds(tps, fps)["AUPR"])  # pessimistic: refinement stopped early
        if bound > TIE_TOLERANCE:
            warnings.warn(
                f"AnomalyMetric: the pooled bins tie anomaly and inlier scores that differ, so AUPR, AUROC or "
                f"FPR95 may be up to {bound:.1e} from the exact values (more than {TIE_TOLERANCE:g}). "
                "lib.test.evaluate resolves such bins in a second pass; with the metric alone call "
                "resolve_ties() and feed the same scores again",
                RuntimeWarning,
                stacklevel=2,
            )
        return {**out, "protocol": "pooled", "n_pos": n_pos, "n_neg": n_neg, "tie_bound": bound}

    def curves(self) -> dict[str, np.ndarray]:
        """Curves for plotting, from the same state, one point per threshold (non-empty bin).

        Returns numpy arrays ordered from the highest threshold down:

        * ``thresholds`` (float64, in score units): the smallest float32 ``score - offset`` of each
          bin plus the offset (a pixel is "above" the threshold when its score falls in this bin
          or a higher one, which up to the float32 rounding of ``score - offset`` means
          ``score >= threshold``); ``tps``, ``fps`` (int64).
        * ``precision``, ``recall``: one per threshold (recall increasing); like scikit-learn's
          curve without its appended (recall 0, precision 1) end point.
        * ``fpr``, ``tpr``: with (0, 0) prepended, so ``np.trapezoid(tpr, fpr) == AUROC``.

        Empty arrays when nothing was counted; NaN recall/TPR (FPR) without positives (negatives).
        After a second pass (`resolve_ties`), the resolved bins' points are their exact scores
        (a threshold per distinct float32 ``score - offset``), as in `compute`.

        Raises:
            RuntimeError: the state sums states binned around different offsets (see ``offset``).
        """
        offset = self._checked_offset() or 0.0
        if self._refine is not None:
            keys, tps, fps = self._refined_cumulative()
            edges = _bin_lower_edges(keys, 32)  # a key's own float32 (a kept bin: its lowest)
        else:
            bins, tps, fps = self._cumulative()
            edges = _bin_lower_edges(bins, self.bits)
        tps_f, fps_f = tps.astype(np.float64), fps.astype(np.float64)
        n_pos = tps_f[-1] if tps.size else 0.0
        n_neg = fps_f[-1] if fps.size else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = tps_f / n_pos
            fpr = fps_f / n_neg
            precision = tps_f / (tps_f + fps_f)
        return {
            "thresholds": edges + offset,
            "tps": tps,
            "fps": fps,
            "precision": precision,
            "recall": recall,
            "fpr": np.concatenate(([0.0], fpr)),
            "tpr": np.concatenate(([0.0], recall)),
        }

    def __repr__(self) -> str:
        return f"AnomalyMetric(bits={self.bits}, offset={self.offset}, device={self.device})"


class PerImageAnomalyMetric:
    """AUPR, AUROC and FPR95 per image, averaged over images (the official anomaly-seg protocol).

    Each image's metrics come from its counted pixels, by default from the same order-preserving
    bins as `AnomalyMetric` (``bits``, an offset chosen by the first update by its rule, or the
    pooled metric's when ``update`` feeds one too), counted with one bincount over the span of bins
    each image touches, so scores closer than ``2**-(bits - 9) * |score - offset|`` are tied. Binning never drifts: when
    `tie_bounds` says an image's binned AUPR, AUROC or FPR95 may be more than `TIE_TOLERANCE` from its
    exact value (e.g. a cluster of scores far from the offset inside one bin), that image is ranked
    exactly (`exact_curve`) and counted in ``n_exact``. ``exact=True`` ranks every image exactly,
    in the scores' own precision. Images without an anomaly pixel or without an inlier pixel are
    skipped, as in the official code, and counted in ``n_skipped``. The state is a few numbers (three
    sums per rule set, three counts) in one float64 tensor, whatever the number of images, so
    ``all_reduce`` merges processes. ``rules``: the rule sets averaged (`rank_metrics`), all from
    one curve per image.
    """

    def __init__(
        self,
        *,
        exact: bool = False,
        bits: int = 20,
        rules: Sequence[str] = ("anomaly-seg",),
        device: torch.device | str | None = None,
    ) -> None:
        if not 1 <= int(bits) <= 28:
            raise ValueError(f"bits must be in [1, 28], got {bits}")
        self.rules = tuple(rules)
        unknown = [r for r in self.rules if r not in RULES]
        if unknown or not self.rules:
            raise ValueError(f"rules must name one or more of {', '.join(RULES)}; got {list(self.rules)}")
        self.exact = bool(exact)
        self.bits = int(bits)
        self.state = torch.zeros(3 * len(self.rules) + 3, dtype=torch.float64, device=device or "cpu")
        self._offset: float | None = None  # chosen by the first update, as `AnomalyMetric`'s

    @property
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """``state`` = [sum AUPR, sum AUROC, sum FPR95 (for each of ``rules``), images averaged, images
        skipped, images whose bins tied too much and were ranked exactly]."""
        return {"state": self.state}

    @property
    def device(self) -> torch.device:
        return self.state.device

    def reset(self) -> None:
        self.state.zero_()
        self._offset = None

    def merge(self, other: PerImageAnomalyMetric) -> PerImageAnomalyMetric:
        self.state += other.state.to(self.state.device)
        return self

    def update(
        self,
        scores: torch.Tensor,
        is_anomaly: torch.Tensor,
        valid: torch.Tensor | None = None,
        *,
        pooled: AnomalyMetric | None = None,
    ) -> None:
        """Count a batch of images.

        Args:
            scores: higher = more anomalous. Shape (B, H, W) (any shape whose first dim is the image).
            is_anomaly: bool, same shape. valid: optional bool, same shape (pixels to count).
                Both are moved to the device of ``scores``; the state stays on its own device.
            pooled: also count these pixels into this pooled metric (its bins and offset): one
                bincount per image serves both, instead of one pass each.
        """
        if scores.shape != is_anomaly.shape or (valid is not None and valid.shape != scores.shape):
            raise ValueError("scores, is_anomaly and valid must have the same shape (B, H, W)")
        n_images = scores.shape[0]
        if n_images == 0:
            return
        flat = scores.detach().reshape(n_images, -1)
        y = is_anomaly.detach().reshape(n_images, -1).to(flat.device).bool()
        keep = None if valid is None else valid.detach().reshape(n_images, -1).to(flat.device).bool()
        for i in range(n_images):
            check_no_nan(flat[i], None if keep is None else keep[i], f" (image {i} of the batch)")
        if self.exact:
            if pooled is not None:
                pooled.update(scores, is_anomaly, valid)
            curves = [self._exact(flat[i], y[i], None if keep is None else keep[i]) for i in range(n_images)]
            self._add_curves(curves, ranked_exactly=0)
            return
        if pooled is not None and pooled.bits != self.bits:
            raise ValueError(
                f"a pooled metric with bits={pooled.bits} cannot share the bins of bits={self.bits}"
            )
        x = flat.reshape(-1).to(torch.float32)
        keep_all = None if keep is None else keep.reshape(-1)
        if pooled is not None:
            pooled._place(flat.device)
            offset = pooled._offset_for(x, keep_all)
        else:
            if self._offset is None:
                self._offset = _choose_offset(x, keep_all)
            offset = self._offset
        shifted = _shifted(flat.reshape(-1), x, offset).view(n_images, -1)
        labels = y.to(torch.int32)
        curves, ranked_exactly = [], 0
        for i in range(n_images):
            image_keep = None if keep is None else keep[i]
            span = _span_state(shifted[i], labels[i], image_keep, self.bits)
            if span is None:  # no counted pixel
                curves.append(None)
                continue
            if pooled is not None:
                pooled._add_state(*span)
            counts, inside, squares = (t[::-1] for t in span[1:])  # highest bin first
            pos, neg = counts[:, 1], counts[:, 0]
            if not pos.any() or not neg.any():
                curves.append(None)
                continue
            curve = np.cumsum(pos), np.cumsum(neg)
            pure = _pure_bins(pos + neg, inside, squares)
            if max(tie_bounds(*curve, pure).values()) > TIE_TOLERANCE:
                curve = self._exact(flat[i], y[i], image_keep)  # the bins tie what matters: rank exactly
                ranked_exactly += 1
            curves.append(curve)
        self._add_curves(curves, ranked_exactly)

    def _add_curves(self, curves: list, ranked_exactly: int) -> None:
        """Add each image's metrics (None: skipped) to the state, once, on the state's device."""
        n_sums = 3 * len(self.rules)
        sums = [0.0] * (n_sums + 3)  # AUPR, AUROC, FPR95 per rules, images averaged, skipped, ranked exactly
        for curve in curves:
            if curve is None:
                sums[n_sums + 1] += 1.0
                continue
            for r, rules in enumerate(self.rules):
                m = rank_metrics(*curve, rules)
                for k, key in enumerate(("AUPR", "AUROC", "FPR95")):
                    sums[3 * r + k] += m[key]
            sums[n_sums] += 1.0
        sums[n_sums + 2] = float(ranked_exactly)
        self.state += torch.tensor(sums, dtype=torch.float64, device=self.state.device)

    def _exact(self, s: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None) -> tuple | None:
        if keep is not None:
            s, y = s[keep], y[keep]
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == y.numel():
            return None
        return exact_curve(s.cpu().numpy(), y.cpu().numpy())

    def compute(self, rules: str | None = None) -> dict:
        """Means over the averaged images (NaN with a warning when there are none), under ``rules``
        (one of those the metric was made with; default the first)."""
        rules = self.rules[0] if rules is None else rules
        if rules not in self.rules:
            raise ValueError(f"this metric averages under {list(self.rules)}, not {rules!r}")
        r = self.rules.index(rules)
        n_sums = 3 * len(self.rules)
        sums, n, skipped, ranked_exactly = (
            self.state[3 * r : 3 * r + 3].tolist(),
            int(self.state[n_sums]),
            int(self.state[n_sums + 1]),
            int(self.state[n_sums + 2]),
        )
        if n == 0:
            warnings.warn(
                f"no image had both anomaly and inlier pixels ({skipped} skipped): per-image metrics are NaN",
                RuntimeWarning,
                stacklevel=2,
            )
            values = [math.nan] * 3
        else:
            values = [v / n for v in sums]
        return {**dict(zip(("AUPR", "AUROC", "FPR95"), values, strict=True)), "protocol": "per-image",
                "n_images": n, "n_skipped": skipped, "n_exact": ranked_exactly}  # fmt: skip


def exact_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (tps, fps) at every distinct score, from the highest down, for `rank_metrics`.

    Sorts the inlier and the anomaly scores separately (values only, no argsort) and reads every
    count with ``searchsorted``, ties included. Scores keep their precision (float64 stays float64;
    integers become float64). Both classes must be present; NaN raises ValueError (`check_no_nan`).
    """
    scores = np.asarray(scores).ravel()
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    check_no_nan(torch.from_numpy(scores))
    labels = np.asarray(labels, dtype=bool).ravel()
    neg = np.sort(scores[~labels])
    pos = np.sort(scores[labels])
    if pos.size == 0 or neg.size == 0:
        raise ValueError("exact_curve needs both anomaly and inlier pixels")
    values = np.unique(np.concatenate((pos, neg)))[::-1]  # every distinct score, highest first
    tps = pos.size - np.searchsorted(pos, values, side="left")  # anomaly pixels >= each value
    fps = neg.size - np.searchsorted(neg, values, side="left")
    return tps.astype(np.int64), fps.astype(np.int64)


def exact_rank_metrics(
    scores: np.ndarray, labels: np.ndarray, rules: str = "anomaly-seg"
) -> dict[str, float]:
    """Exact AUPR, AUROC and FPR95 of one set of pixels under ``rules`` (`rank_metrics`), from
    `exact_curve` (about two sorts of the pixels). Both classes must be present."""
    return rank_metrics(*exact_curve(scores, labels), rules)


# ================================================================================ components

#: SegmentMeIfYouCan's sIoU thresholds, as its kit makes them (``np.linspace(0.25, 0.75, 11)``: the
#: float values matter where an sIoU or PPV equals one of them).
COMPONENT_TAUS = tuple(float(t) for t in np.linspace(0.25, 0.75, 11))
#: Its tracks' size filters: (predicted components under this many pixels are dropped,
#: ground-truth instances under this many pixels become void).
SMIYC_TRACKS = {"anomaly": (500, 100), "obstacle": (50, 10)}


class ComponentMetric:
    """SegmentMeIfYouCan's component metrics (sIoU, PPV, mean F1) at one pixel threshold, per image.

    The rules of the kit's code (road_anomaly_benchmark/metrics/instance_segmentation.py:
    ``default_instancer``, ``segment_metrics``, ``MetricSegment.aggregate``), in order:

    1. Predicted anomaly pixels: score ``> threshold`` (strict) outside void. Predicted components
       (8-connected) under ``min_pred`` pixels are dropped (their size counted before step 2).
    2. Ground-truth instances: 8-connected components of the anomaly pixels; those under ``min_gt``
       pixels become void (the kit's loop also voids every non-anomaly pixel when there are fewer
       than ``min_gt`` of them; so does this class). What follows counts non-void pixels only.
    3. For an instance ``k`` with ``P(k)`` the predicted components touching it:
       ``sIoU(k) = |k & P(k)| / (|k| + |P(k) & inlier pixels|)`` (the union without the pixels of
       other instances). For a predicted component ``p``: ``PPV(p) = |p & anomaly| / |p|``.
    4. At each ``tau`` of `COMPONENT_TAUS` an instance with ``sIoU >= tau`` is a true positive (else
       a false negative) and a component with ``PPV < tau`` a false positive; TP, FN and FP are
       summed over the images and ``F1(tau) = 2 TP / (2 TP + FN + FP)``.

    `compute` returns ``sIoU`` (mean over all instances of all images), ``PPV`` (mean over all
    predicted components) and ``mean_F1`` (mean of F1 over the taus); NaN where the kit would
    divide by zero. The state is a few counters.

    Args:
        threshold: the pixel threshold (the kit: the best-F1 threshold of its pooled pixel curve on
            the same split; `best_f1_threshold`).
        track: ``"anomaly"`` (500 / 100 px) or ``"obstacle"`` (50 / 10 px), `SMIYC_TRACKS`.
    """

    def __init__(self, threshold: float, *, track: str = "anomaly") -> None:
        if track not in SMIYC_TRACKS:
            raise ValueError(f"unknown SegmentMeIfYouCan track {track!r}; valid: {', '.join(SMIYC_TRACKS)}")
        self.threshold = float(threshold)
        self.track = track
        self.min_pred, self.min_gt = SMIYC_TRACKS[track]
        self.taus = np.asarray(COMPONENT_TAUS)
        self.reset()

    def reset(self) -> None:
        self.tp = np.zeros(len(self.taus), dtype=np.int64)
        self.fn = np.zeros_like(self.tp)
        self.fp = np.zeros_like(self.tp)
        self.siou_sum = self.ppv_sum = 0.0
        self.n_gt = self.n_pred = 0

    def update(self, scores: np.ndarray, is_anomaly: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one image. Shape: (H, W) each (numpy or CPU tensors); ``valid`` False = void."""
        import cv2

        scores, is_anomaly = np.asarray(scores), np.asarray(is_anomaly, dtype=bool)
        valid = np.ones_like(is_anomaly) if valid is None else np.asarray(valid, dtype=bool)
        check_no_nan(scores, valid)
        n_pr, pr, pr_stats, _ = cv2.connectedComponentsWithStats(
            ((scores > self.threshold) & valid).astype(np.uint8), connectivity=8
        )
        small = pr_stats[:, cv2.CC_STAT_AREA] < self.min_pred
        small[0] = False
        pr = np.where(small[pr], 0, pr)
        n_gt, gt, gt_stats, _ = cv2.connectedComponentsWithStats(
            (is_anomaly & valid).astype(np.uint8), connectivity=8
        )
        roi = valid & ~(gt_stats[:, cv2.CC_STAT_AREA] < self.min_gt)[gt]
        # overlap[g, p]: non-void pixels of instance g (0 = inlier) in predicted component p (0 = none).
        overlap = np.bincount((gt * n_pr + pr)[roi], minlength=n_gt * n_pr).reshape(n_gt, n_pr)
        gt_size, pred_size = overlap.sum(axis=1), overlap.sum(axis=0)
        instances = np.flatnonzero(gt_size[1:] > 0) + 1
        components = np.flatnonzero(pred_size[1:] > 0) + 1
        if instances.size:
            rows = overlap[instances][:, 1:]
            inlier_of_touching = ((rows > 0) * overlap[0, 1:]).sum(axis=1)
            siou = rows.sum(axis=1) / (gt_size[instances] + inlier_of_touching)
            self.siou_sum += float(siou.sum())
            self.n_gt += int(instances.size)
            self.tp += (siou[None, :] >= self.taus[:, None]).sum(axis=1)
            self.fn += (siou[None, :] < self.taus[:, None]).sum(axis=1)
        if components.size:
            ppv = overlap[1:, components].sum(axis=0) / pred_size[components]
            self.ppv_sum += float(ppv.sum())
            self.n_pred += int(components.size)
            self.fp += (ppv[None, :] < self.taus[:, None]).sum(axis=1)

    def compute(self) -> dict:
        """``sIoU``, ``PPV``, ``mean_F1`` in [0, 1] (NaN where undefined), the threshold, the track and counts."""
        denominator = 2 * self.tp + self.fn + self.fp
        f1 = np.where(denominator > 0, 2 * self.tp / np.maximum(denominator, 1), np.nan)
        return {
            "sIoU": self.siou_sum / self.n_gt if self.n_gt else math.nan,
            "PPV": self.ppv_sum / self.n_pred if self.n_pred else math.nan,
            "mean_F1": float(f1.mean()),
            "threshold": self.threshold,
            "track": self.track,
            "n_gt_components": self.n_gt,
            "n_pred_components": self.n_pred,
        }


def best_f1_threshold(metric: AnomalyMetric) -> float:
    """The pixel threshold of highest F1 on a pooled metric's precision-recall curve."""
    curves = metric.curves()
    p, r = curves["precision"], curves["recall"]
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return float(curves["thresholds"][int(np.nanargmax(f1))])
