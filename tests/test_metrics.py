import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

from lib.metrics import AnomalyMetric, ConfusionMatrix, PerImageAnomalyMetric, exact_rank_metrics

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# ============================================================================== reference


def reference_fpr95(y_true: np.ndarray, y_score: np.ndarray, recall_level: float = 0.95) -> float:
    """FPR at 95 % recall as `fpr_and_fdr_at_recall` of the official anomaly-seg code defines it."""
    y_true = np.asarray(y_true).astype(bool)
    y_score = np.asarray(y_score, dtype=np.float64)
    desc_score_indices = np.argsort(y_score, kind="mergesort")[::-1]
    y_score = y_score[desc_score_indices]
    y = y_true[desc_score_indices].astype(np.int64)
    distinct_value_indices = np.where(np.diff(y_score))[0]
    threshold_idxs = np.r_[distinct_value_indices, y.size - 1]
    tps = np.cumsum(y)[threshold_idxs]
    fps = 1 + threshold_idxs - tps
    recall = tps / tps[-1]
    last_ind = tps.searchsorted(tps[-1])
    sl = slice(last_ind, None, -1)
    recall = np.r_[recall[sl], 1]
    fps = np.r_[fps[sl], 0]
    cutoff = np.argmin(np.abs(recall - recall_level))
    return float(fps[cutoff] / np.sum(~y_true))


def reference(y_true: np.ndarray, y_score: np.ndarray) -> dict[str, float]:
    return {
        "AUPR": average_precision_score(y_true, y_score),
        "AUROC": roc_auc_score(y_true, y_score),
        "FPR95": reference_fpr95(y_true, y_score),
    }


def streamed(scores: np.ndarray, labels: np.ndarray, chunks: int = 1, **kwargs) -> AnomalyMetric:
    metric = AnomalyMetric(**kwargs)
    for s, y in zip(np.array_split(scores, chunks), np.array_split(labels, chunks), strict=True):
        metric.update(torch.from_numpy(np.ascontiguousarray(s)), torch.from_numpy(np.ascontiguousarray(y)))
    return metric


def assert_matches(result: dict, expected: dict, atol: float) -> None:
    for key in ("AUPR", "AUROC", "FPR95"):
        assert result[key] == pytest.approx(expected[key], abs=atol), key


def test_reference_fpr95_hand_computed():
    # Scores descending: + + - + - -; tps 1 2 2 3 3 3; fps 0 0 1 1 2 3; recall .33 .67 .67 1 ...
    y = np.array([1, 1, 0, 1, 0, 0])
    s = np.array([6.0, 5, 4, 3, 2, 1])
    # Up to the first full-recall point: recall 1 (index 3) is closest to 0.95 -> 1 FP of 3.
    assert reference_fpr95(y, s) == pytest.approx(1 / 3)


# ============================================================================== confusion


def test_confusion_hand_computed():
    cm = ConfusionMatrix(3, ignore_index=255)
    target = torch.tensor([[0, 0, 1, 1, 255, 7]])
    pred = torch.tensor([[0, 1, 1, 1, 2, 2]])  # last two pixels are not counted
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    out = cm.compute()
    iou = out["IoU"]
    assert iou[0] == 0.5  # tp 1, union 2
    assert iou[1] == pytest.approx(2 / 3)  # tp 2, union 3
    assert math.isnan(iou[2])  # neither in target nor in prediction (ignored pixels do not count)
    assert out["mIoU"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert out["minIoU"] == 0.5
    assert out["maxIoU"] == pytest.approx(2 / 3)
    assert out["pixel_accuracy"] == pytest.approx(3 / 4)
    assert out["class_accuracy"][:2] == [0.5, 1.0] and math.isnan(out["class_accuracy"][2])
    assert out["mean_class_accuracy"] == pytest.approx(0.75)
    assert out["n_pixels"] == 4
    assert all(isinstance(out[k], float) for k in ("mIoU", "minIoU", "maxIoU", "pixel_accuracy"))


def test_confusion_exclude_and_predicted_only_class():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 2, 1]), torch.tensor([0, 0, 1]))  # class 2 predicted, never a target
    out = cm.compute()
    assert out["IoU"] == [0.5, 1.0, 0.0]  # predicted-only class: IoU 0, not NaN
    assert math.isnan(out["class_accuracy"][2])
    assert out["mIoU"] == pytest.approx(0.5)
    excl = cm.compute(exclude=[2])
    assert excl["mIoU"] == pytest.approx(0.75)
    assert excl["minIoU"] == 0.5 and excl["maxIoU"] == 1.0
    assert excl["IoU"] == out["IoU"]  # per-class values are still reported
    assert math.isnan(cm.compute(exclude=[0, 1, 2])["mIoU"])
    with pytest.raises(ValueError, match="exclude"):
        cm.compute(exclude=[3])


def test_confusion_pred_out_of_range_raises():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        cm.update(torch.tensor([-1, 0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shapes differ"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0]))
    assert cm.matrix.sum() == 0


def test_confusion_chunks_equal_one_update_and_sklearn():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (4, 9, 11), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.1] = 255
    pred = torch.randint(0, 5, (4, 9, 11), generator=g)
    one = ConfusionMatrix(5)
    one.update(pred, target)
    chunked = ConfusionMatrix(5)
    for p, t in zip(pred.split(1), target.split(1), strict=True):
        chunked.update(p, t)
    assert torch.equal(one.matrix, chunked.matrix)
    counted = (target != 255) & (target < 5)
    expected = confusion_matrix(target[counted].numpy(), pred[counted].numpy(), labels=range(5))
    assert one.matrix.numpy().tolist() == expected.tolist()
    merged = ConfusionMatrix(5)
    merged.merge(chunked)
    assert torch.equal(merged.matrix, one.matrix)
    one.reset()
    assert one.matrix.sum() == 0 and math.isnan(one.compute()["pixel_accuracy"])


# ============================================================================== anomaly


@pytest.fixture(scope="module")
def continuous():
    rng = np.random.default_rng(0)
    n = 100_000
    y = rng.random(n) < 0.03
    s = (rng.normal(size=n) + 1.5 * y).astype(np.float32)
    return s, y


def test_anomaly_random_continuous_matches_sklearn(continuous):
    s, y = continuous
    valid = np.random.default_rng(1).random(s.size) > 0.1
    metric = AnomalyMetric()
    for chunk in np.array_split(np.arange(s.size), 5):
        metric.update(torch.from_numpy(s[chunk]), torch.from_numpy(y[chunk]), torch.from_numpy(valid[chunk]))
    out = metric.compute()
    assert out["protocol"] == "pooled"
    assert out["n_pos"] == int((y & valid).sum()) and out["n_neg"] == int((~y & valid).sum())
    assert_matches(out, reference(y[valid], s[valid]), atol=1e-3)


def test_anomaly_exact_when_scores_distinct_in_top_bits():
    # +-exp(k / 1000): neighbours differ by 0.1 % relative, more than a bin (2**-11 ~ 0.05 %).
    rng = np.random.default_rng(2)
    k = np.arange(25_000)
    s = np.concatenate([np.exp(k * 1e-3), -np.exp(k * 1e-3)]).astype(np.float32)
    s = s[rng.permutation(s.size)]
    y = rng.random(s.size) < 0.05 + 0.2 * (s > 0)
    metric = streamed(s, y, chunks=4)
    assert metric.curves()["tps"].size == s.size  # one threshold per pixel: no tie at all
    assert_matches(metric.compute(), reference(y, s), atol=1e-12)


def test_anomaly_heavy_ties_exact():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 6, 20_000).astype(np.float32)
    y = rng.random(s.size) < 0.02 * (s + 1)
    metric = streamed(s, y, chunks=3)
    assert metric.curves()["tps"].size == 6
    assert_matches(metric.compute(), reference(y, s), atol=1e-12)


def test_anomaly_huge_magnitudes_infinities_and_signed_zero():
    rng = np.random.default_rng(4)
    values = np.array([-np.inf, -1e30, -3e-38, -0.0, 0.0, 1e-30, 1.0, 3e38, np.inf], dtype=np.float32)
    s = rng.choice(values, 20_000)
    y = rng.random(s.size) < np.linspace(0.01, 0.3, s.size)[np.argsort(np.argsort(s))]
    metric = streamed(s, y, chunks=2)
    assert metric.curves()["tps"].size == values.size - 1  # -0.0 and +0.0 are one score
    # sklearn rejects inf: compare on ranks (the metrics depend only on the order).
    ranks = np.unique(s, return_inverse=True)[1].astype(np.float64)
    assert_matches(metric.compute(), reference(y, ranks), atol=1e-12)
    big = (rng.normal(size=50_000) * 1e30).astype(np.float32)
    y_big = rng.random(big.size) < 0.05 + 0.1 * (big > 0)
    assert_matches(streamed(big, y_big, chunks=3).compute(), reference(y_big, big), atol=1e-3)


def test_anomaly_near_tied_scores_documented_behaviour():
    rng = np.random.default_rng(5)
    y = rng.random(10_000) < 0.1
    # 0.75 + k * 1e-7 are distinct float32 values, but without an offset they all fall in the bin
    # [0.75, 0.75 + 2.4e-4) at bits=20: the metric sees a single threshold, as if every score were 0.75.
    close = (0.75 + 1e-7 * rng.integers(0, 10, y.size) + 1e-6 * y).astype(np.float32)
    assert np.unique(close).size > 10
    metric = streamed(close, y, offset=0.0)
    assert metric.curves()["tps"].size == 1
    out = metric.compute()
    assert_matches(out, reference(y, np.full(y.size, 0.75)), atol=1e-12)
    assert out["AUROC"] == 0.5 and out["FPR95"] == 1.0
    assert out["AUPR"] == pytest.approx(y.mean())
    # Separated by 1e-3 (> 2.4e-4 bins), the same layout is resolved exactly.
    apart = (0.75 + 1e-3 * rng.integers(0, 10, y.size) + 1e-2 * y).astype(np.float32)
    assert_matches(streamed(apart, y, offset=0.0).compute(), reference(y, apart), atol=1e-12)
    # By default the scores crowd around 0.75 (spread 3e-6): it becomes the offset, and 0.75 + k * 1e-7
    # minus 0.75 are 1e-7 apart in bins ~1e-10 wide, so every distinct score is its own threshold.
    metric = streamed(close, y)
    assert metric.offset == pytest.approx(0.75, abs=1e-5)
    assert metric.curves()["tps"].size == np.unique(close).size
    assert_matches(metric.compute(), reference(y, close), atol=1e-12)


# ------------------------------------------------------------------ binning offset

KINDS = ["ordinary", "tied", "huge", "large_offset"]


def scores_of_kind(kind: str, z: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float32 scores, anomalies (y) one unit of z higher: ordinary, tied (steps of 0.5), huge (both
    signs, magnitudes spread over 1e-30 .. 1e30) or around a large offset (as a distance head's
    energy: 1e4 * (z + y) - 5e5, where float32 bins without an offset are 244 wide)."""
    s = z + y
    if kind == "tied":
        s = np.round(2 * s) / 2
    elif kind == "huge":
        s = s * 10.0 ** rng.uniform(-30, 30, s.shape)
    elif kind == "large_offset":
        s = 1e4 * s - 5e5
    return s.astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_anomaly_within_bound_of_exact(kind):
    """Pooled, default bits and offset, 4 updates: within 1e-3 of scikit-learn and the official FPR95.
    (Binning the raw float32 large-offset scores gave AUPR -1.1e-3 and FPR95 +1.7e-3 here.)"""
    rng = np.random.default_rng(1)
    y = rng.random(50_000) < 0.2
    s = scores_of_kind(kind, rng.normal(size=y.size), y, rng)
    metric = streamed(s, y, chunks=4)
    assert_matches(metric.compute(), reference(y, s), atol=1e-3)
    # The offset is the first update's median only where the scores crowd far from 0.
    assert (metric.offset != 0.0) == (kind == "large_offset")


@pytest.mark.parametrize("kind", KINDS)
def test_per_image_binned_within_bound_of_exact(kind):
    """Per image, default (binned, each image around its own offset) vs exact=True: within 1e-3.
    (Binning the raw float32 large-offset scores gave FPR95 -2.0e-3 and AUPR -8.0e-4 here.)"""
    rng = np.random.default_rng(0)
    shape = (3, 100, 200)
    y = rng.random(shape) < 0.1
    s = torch.from_numpy(scores_of_kind(kind, rng.normal(size=shape), y, rng))
    y, valid = torch.from_numpy(y), torch.from_numpy(rng.random(shape) < 0.9)
    binned, exact = PerImageAnomalyMetric(), PerImageAnomalyMetric(exact=True)
    binned.update(s, y, valid)
    exact.update(s, y, valid)
    b, e = binned.compute(), exact.compute()
    assert b["n_images"] == e["n_images"] == 3
    assert_matches(b, e, atol=1e-3)


def test_anomaly_float64_scores_are_shifted_before_the_float32_cast():
    # 5e5 + 0.01 k: distinct in float64; float32 steps at 5e5 are 0.03 (3 values each) and raw bins 244.
    # Shifted in float64 by the offset (~5e5 + 5), they are 0.01 apart in bins under 4e-3 wide.
    rng = np.random.default_rng(7)
    k = rng.integers(0, 1000, 20_000)
    y = rng.random(k.size) < 0.05 + 0.3 * (k / 1000)
    s = 5e5 + 0.01 * k
    metric = streamed(s, y, chunks=2)
    assert metric.offset == pytest.approx(5e5 + 5, abs=1)
    assert metric.curves()["tps"].size == np.unique(k).size
    assert_matches(metric.compute(), reference(y, s), atol=1e-12)


def test_anomaly_curve_thresholds_are_in_score_units_with_an_offset():
    rng = np.random.default_rng(9)
    y = rng.random(30_000) < 0.1
    s = scores_of_kind("large_offset", rng.normal(size=y.size), y, rng)
    metric = streamed(s, y)
    curves = metric.curves()
    thresholds = curves["thresholds"]
    assert np.all(np.diff(thresholds) < 0)
    # The lowest bin holds the lowest score, less than a bin (2**-11 of its distance to the offset) above.
    assert 0 <= s.min() - thresholds[-1] < 2**-11 * abs(s.min() - metric.offset)
    # s - offset is exact in float32 here (both near 5e5, 0.03 steps), so the counts are exact too.
    for i in range(0, thresholds.size, max(1, thresholds.size // 7)):
        assert curves["tps"][i] + curves["fps"][i] == np.sum(s >= thresholds[i])


def test_anomaly_merge_and_all_reduce_refuse_different_offsets():
    rng = np.random.default_rng(8)
    y = rng.random(20_000) < 0.2
    s = scores_of_kind("large_offset", rng.normal(size=y.size), y, rng)
    half = y.size // 2
    a, b = streamed(s[:half], y[:half]), streamed(s[half:], y[half:])  # each picks its own median
    assert a.offset != b.offset
    with pytest.raises(ValueError, match=r"different offsets .* same offset="):
        a.merge(b)
    summed = AnomalyMetric()  # what an all-reduce of the two processes' states gives
    for part in (a, b):
        for name, tensor in summed.state_tensors.items():
            tensor += part.state_tensors[name]
    with pytest.raises(RuntimeError, match=r"different offsets .* same offset="):
        summed.compute()
    with pytest.raises(RuntimeError, match="different offsets"):
        summed.update(torch.zeros(1), torch.zeros(1, dtype=torch.bool))
    # One offset given to every part: merging and summing both give the one-shot state.
    one = streamed(s, y, offset=-5e5)
    parts = [streamed(s[:half], y[:half], offset=-5e5), streamed(s[half:], y[half:], offset=-5e5)]
    merged = AnomalyMetric().merge(parts[0]).merge(parts[1])  # the empty metric adopts the offset
    summed = AnomalyMetric()
    for part in parts:
        for name, tensor in summed.state_tensors.items():
            tensor += part.state_tensors[name]
    for metric in (merged, summed):
        assert metric.offset == -5e5
        assert torch.equal(metric.pos_hist, one.pos_hist) and torch.equal(metric.neg_hist, one.neg_hist)
        assert metric.compute() == one.compute()


def test_anomaly_offset_reset_repr_and_validation():
    metric = AnomalyMetric(bits=12)
    assert metric.offset is None
    metric.update(torch.tensor([float("inf"), -float("inf")]), torch.tensor([True, False]))
    assert metric.offset is None  # infinities fall in the same bins whatever the offset
    metric.update(torch.tensor([-5e5, -5e5 + 1, -5e5 + 2]), torch.tensor([False, True, True]))
    assert metric.offset == -5e5 + 1 and "offset=-499999.0" in repr(metric)
    metric.reset()
    assert metric.offset is None and metric.pos_hist.sum() == 0
    # The offset comes from a strided sample of the pixels; one that misses every counted finite score
    # falls back to all of them (else that pixel would be binned before the offset is fixed).
    scores, valid = torch.zeros(300_001), torch.zeros(300_001, dtype=torch.bool)
    scores[1], valid[1] = -5e5, True
    metric.update(scores, torch.zeros_like(valid), valid)
    assert metric.offset == -5e5
    metric.reset()
    given = AnomalyMetric(bits=12, offset=0.1)
    assert given.offset == float(np.float32(0.1))  # rounded to float32
    given.update(torch.tensor([3.0, 4.0]), torch.tensor([False, True]))
    given.reset()
    assert given.offset == float(np.float32(0.1))  # a given offset survives reset
    for bad in (float("inf"), float("nan"), 1e39):
        with pytest.raises(ValueError, match="offset must be a finite float32"):
            AnomalyMetric(offset=bad)


def test_anomaly_chunked_equals_one_shot_and_merge(continuous):
    s, y = continuous  # centred near 0: every part chooses offset 0, so the states can be summed
    one = streamed(s, y, chunks=1)
    many = streamed(s, y, chunks=13)
    for name, tensor in one.state_tensors.items():
        assert torch.equal(tensor, many.state_tensors[name])
    assert one.compute() == many.compute()
    a, b = streamed(s[:40_000], y[:40_000]), streamed(s[40_000:], y[40_000:])
    assert a.merge(b).compute() == one.compute()
    # An all-reduce is a sum of the state tensors.
    summed = AnomalyMetric()
    for part in (streamed(s[:500], y[:500]), streamed(s[500:], y[500:])):
        for name, tensor in summed.state_tensors.items():
            tensor += part.state_tensors[name]
    assert summed.compute() == one.compute()


def test_anomaly_input_forms(continuous):
    s, y = continuous
    s2d, y2d = torch.from_numpy(s[:60_000]).view(2, 100, 300), torch.from_numpy(y[:60_000]).view(2, 100, 300)
    a = AnomalyMetric()
    a.update(s2d, y2d)  # any shape
    b = AnomalyMetric()
    b.update(s2d.double(), y2d.to(torch.uint8), torch.ones_like(y2d))  # float64, 0/1 labels, valid
    b.update(torch.empty(0), torch.empty(0, dtype=torch.bool))  # an empty update is fine
    assert a.compute() == b.compute()
    with pytest.raises(ValueError, match="shapes differ"):
        a.update(torch.zeros(3), torch.zeros(4, dtype=torch.bool))


def test_anomaly_nan_raises_unless_not_counted():
    metric = AnomalyMetric()
    scores = torch.tensor([0.1, float("nan"), 0.3])
    labels = torch.tensor([False, False, True])
    with pytest.raises(ValueError, match="NaN"):
        metric.update(scores, labels)
    assert metric.pos_hist.sum() == 0 and metric.neg_hist.sum() == 0  # nothing half-counted
    metric.update(scores, labels, valid=torch.tensor([True, False, True]))
    assert metric.compute()["AUROC"] == 1.0


@pytest.mark.parametrize("labels", [[False, False, False], [True, True, True]])
def test_anomaly_single_class_warns_and_returns_nan(labels):
    metric = AnomalyMetric()
    metric.update(torch.tensor([0.1, 0.2, 0.3]), torch.tensor(labels))
    with pytest.warns(RuntimeWarning, match="no (anomaly|inlier)"):
        out = metric.compute()
    assert all(math.isnan(out[k]) for k in ("AUPR", "AUROC", "FPR95"))
    assert out["n_pos"] + out["n_neg"] == 3


def test_anomaly_empty_warns():
    with pytest.warns(RuntimeWarning, match="no anomaly"):
        out = AnomalyMetric().compute()
    assert math.isnan(out["AUPR"]) and out["n_pos"] == out["n_neg"] == 0
    assert AnomalyMetric().curves()["precision"].size == 0


@pytest.mark.parametrize("bits", [20, 12, 5])
def test_occupied_bins_path_equals_full_histogram_path(bits):
    """The CPU update counts only the bins a batch occupies, in blocks (binades) laid side by side;
    the GPU's full-size bincount (`_add_full`, run here on the CPU) must give the same state. Scores
    straddle the offset (the blocks are not one run), some are +-inf, zero or tiny, some uncounted."""
    g = torch.Generator().manual_seed(11)
    s = torch.cat(
        [torch.randn(5000, generator=g) * 1e-3 + 2.5, torch.tensor([0.0, -0.0, 1e-40, -3e38, 3e38])]
    )
    s = torch.cat([s, torch.tensor([float("inf"), float("-inf"), 2.5, 2.5])])
    y = torch.rand(s.shape, generator=g) < 0.2
    valid = torch.rand(s.shape, generator=g) < 0.9
    span, full = AnomalyMetric(bits=bits), AnomalyMetric(bits=bits)
    for metric in (span, full):
        metric.update(s[:100], y[:100], valid[:100])  # the first batch chooses the offset (the median)
    assert span.offset == full.offset == pytest.approx(2.5, abs=1e-2)
    span.update(s, y, valid)
    shifted = s.float() - full.offset
    full._add_full(shifted, y.to(torch.int32), valid)
    for name, tensor in span.state_tensors.items():
        assert torch.equal(tensor, full.state_tensors[name]), name
    assert int(span.block_counts.sum()) == int(valid[:100].sum() + valid.sum())
    assert span.compute() == full.compute()


@pytest.mark.parametrize("n", [1, 2, 7, 10, 65_536])
def test_lower_median_is_torch_median(n):
    from lib.metrics import _lower_median

    g = torch.Generator().manual_seed(n)
    values = torch.randint(-5, 6, (n,), generator=g).float() * 0.3  # many duplicates, negatives
    assert _lower_median(values) == float(values.median())
    values = torch.randn(n, generator=g)
    assert _lower_median(values) == float(values.median())


def test_anomaly_state_size_constant():
    metric = AnomalyMetric(bits=16)

    def state_bytes():
        return sum(t.numel() * t.element_size() for t in metric.state_tensors.values())

    before = state_bytes()
    # four int64 histograms (counts, in-bin sums), 2**9 block sums of 2**7 bins each, the offset_state
    assert before == 4 * 2**16 * 8 + 2**9 * 8 + 3 * 8
    g = torch.Generator().manual_seed(6)
    for _ in range(50):
        metric.update(torch.randn(10_000, generator=g), torch.rand(10_000, generator=g) < 0.1)
    assert state_bytes() == before
    assert metric.pos_hist.sum() + metric.neg_hist.sum() == 500_000
    assert torch.equal(metric.block_counts, (metric.pos_hist + metric.neg_hist).view(2**9, 2**7).sum(dim=1))
    metric.reset()
    assert state_bytes() == before and metric.pos_hist.sum() == 0


def test_anomaly_curves_consistent(continuous):
    s, y = continuous
    metric = streamed(s, y, chunks=2)
    out, curves = metric.compute(), metric.curves()
    assert np.trapezoid(curves["tpr"], curves["fpr"]) == pytest.approx(out["AUROC"], abs=1e-12)
    ap = np.sum(np.diff(curves["recall"], prepend=0.0) * curves["precision"])
    assert ap == pytest.approx(out["AUPR"], abs=1e-12)
    thresholds = curves["thresholds"]
    assert np.all(np.diff(thresholds) < 0)
    # A threshold counts exactly the scores at or above it (its bin and the bins above).
    for i in (0, thresholds.size // 2, thresholds.size - 1):
        assert curves["tps"][i] + curves["fps"][i] == np.sum(s >= thresholds[i])


def test_anomaly_compute_on_full_histogram_matches_weighted_sklearn():
    metric = AnomalyMetric(bits=16)  # every bin non-empty
    metric.pos_hist.random_(0, 3, generator=torch.Generator().manual_seed(7))
    metric.neg_hist.random_(1, 50, generator=torch.Generator().manual_seed(8))
    blocks = metric.block_counts.numel()  # a state written by hand keeps its block sums
    metric.block_counts.copy_((metric.pos_hist + metric.neg_hist).view(blocks, -1).sum(dim=1))
    out = metric.compute()
    n = metric.pos_hist.numel()
    score = np.concatenate([np.arange(n), np.arange(n)])  # bin index orders like the scores
    y = np.concatenate([np.ones(n), np.zeros(n)])
    w = np.concatenate([metric.pos_hist.numpy(), metric.neg_hist.numpy()]).astype(np.float64)
    assert out["AUPR"] == pytest.approx(average_precision_score(y, score, sample_weight=w), abs=1e-9)
    assert out["AUROC"] == pytest.approx(roc_auc_score(y, score, sample_weight=w), abs=1e-9)


def test_anomaly_bits_validated():
    with pytest.raises(ValueError, match="bits"):
        AnomalyMetric(bits=0)
    with pytest.raises(ValueError, match="bits"):
        AnomalyMetric(bits=40)


@CUDA
def test_state_stays_on_input_device(continuous):
    s, y = continuous
    cpu = streamed(s, y, chunks=3)
    gpu = AnomalyMetric()
    for chunk in np.array_split(np.arange(s.size), 3):
        gpu.update(torch.from_numpy(s[chunk]).cuda(), torch.from_numpy(y[chunk]).cuda())
    assert gpu.pos_hist.is_cuda and gpu.neg_hist.is_cuda
    assert gpu.compute() == cpu.compute()
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 2]).cuda(), torch.tensor([0, 1, 1]).cuda())
    assert cm.matrix.is_cuda and cm.compute()["pixel_accuracy"] == pytest.approx(2 / 3)
    fixed = AnomalyMetric(device="cpu")
    fixed.update(torch.from_numpy(s).cuda(), torch.from_numpy(y).cuda())
    assert not fixed.pos_hist.is_cuda and fixed.compute() == cpu.compute()
    # Around an offset (float32, and float64 shifted before its cast): the GPU's full bincount and the
    # CPU's span path bin the same shifted scores.
    rng = np.random.default_rng(10)
    for big in (scores_of_kind("large_offset", s, y, rng), 5e5 + 0.01 * rng.integers(0, 1000, s.size)):
        cpu, gpu = streamed(big, y, chunks=3), AnomalyMetric()
        for chunk in np.array_split(np.arange(s.size), 3):
            gpu.update(torch.from_numpy(big[chunk]).cuda(), torch.from_numpy(y[chunk]).cuda())
        assert gpu.offset == cpu.offset != 0.0 and gpu.offset_state.is_cuda
        assert torch.equal(gpu.pos_hist.cpu(), cpu.pos_hist) and torch.equal(gpu.neg_hist.cpu(), cpu.neg_hist)


def _images(n=5, h=12, w=16, seed=3):
    g = np.random.default_rng(seed)
    y = g.random((n, h, w)) < 0.1
    s = np.round(g.normal(size=(n, h, w)) + 1.2 * y, 1)  # rounded: ties inside images
    return s.astype(np.float32), y


def test_per_image_matches_sklearn_mean_and_skips_single_class_images():
    s, y = _images()
    y[2] = False  # no anomaly: skipped
    y[3] = True  # only anomaly: skipped
    valid = np.ones_like(y)
    valid[0, :2] = False
    metric = PerImageAnomalyMetric()
    metric.update(torch.from_numpy(s[:2]), torch.from_numpy(y[:2]), torch.from_numpy(valid[:2]))
    metric.update(torch.from_numpy(s[2:]), torch.from_numpy(y[2:]), torch.from_numpy(valid[2:]))
    out = metric.compute()
    kept = [0, 1, 4]
    expected = [reference(y[i][valid[i]], s[i][valid[i]]) for i in kept]
    for key in ("AUPR", "AUROC", "FPR95"):
        assert out[key] == pytest.approx(np.mean([e[key] for e in expected]), abs=1e-12)
    assert (out["n_images"], out["n_skipped"], out["protocol"]) == (3, 2, "per-image")


def test_pooled_and_per_image_differ_on_crafted_case():
    # Image A: the anomaly has the top score (perfect). Image B: anomaly scores sit below image A's
    # inliers, though above B's own inliers. Per image both are perfect; pooled they are not.
    s = torch.tensor([[[0.9, 0.5, 0.4, 0.3]], [[0.2, 0.1, 0.05, 0.0]]])
    y = torch.tensor([[[True, False, False, False]], [[True, False, False, False]]])
    per_image = PerImageAnomalyMetric()
    per_image.update(s, y)
    pooled = AnomalyMetric()
    pooled.update(s, y)
    assert per_image.compute()["AUPR"] == pytest.approx(1.0)
    assert per_image.compute()["AUROC"] == pytest.approx(1.0)
    expected = reference(y.flatten().numpy(), s.flatten().numpy())
    assert pooled.compute()["AUPR"] == pytest.approx(expected["AUPR"])
    assert expected["AUPR"] < 0.9 and expected["AUROC"] < 1.0


def test_per_image_state_is_constant_and_no_image_warns():
    metric = PerImageAnomalyMetric()
    size = metric.state.numel()
    s, y = _images(n=20)
    for i in range(20):
        metric.update(torch.from_numpy(s[i : i + 1]), torch.from_numpy(y[i : i + 1]))
    assert metric.state.numel() == size and int(metric.state[3]) == 20
    empty = PerImageAnomalyMetric()
    empty.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool))
    with pytest.warns(RuntimeWarning, match="no image had both"):
        assert math.isnan(empty.compute()["AUPR"])


def test_best_f1_threshold():
    from lib.metrics import best_f1_threshold

    metric = AnomalyMetric()
    metric.update(torch.tensor([0.9, 0.8, 0.7, 0.2, 0.1]), torch.tensor([True, True, False, True, False]))
    # Thresholds 0.9 (F1 2/4), 0.8 (F1 0.8), 0.7 (F1 2*2/3*2/3/(4/3)=0.667), 0.2 (F1 6/7) -> 0.2.
    assert best_f1_threshold(metric) == pytest.approx(0.2, rel=1e-3)


@pytest.mark.parametrize("seed", range(6))
def test_exact_rank_metrics_match_references_with_ties(seed):
    from lib.metrics import exact_rank_metrics

    g = np.random.default_rng(seed)
    n = int(g.integers(20, 400))
    y = g.random(n) < g.uniform(0.05, 0.6)
    y[:2] = [True, False]
    levels = int(g.integers(2, 12))  # few distinct values: heavy ties within and across classes
    s = g.integers(0, levels, n).astype(np.float32) + 1.5 * y * g.random()
    assert_matches(exact_rank_metrics(s, y), reference(y, s), atol=1e-12)


def test_exact_rank_metrics_continuous():
    from lib.metrics import exact_rank_metrics

    g = np.random.default_rng(11)
    y = g.random(5000) < 0.04
    s = (g.normal(size=5000) + y).astype(np.float32)
    assert_matches(exact_rank_metrics(s, y), reference(y, s), atol=1e-12)


@pytest.mark.parametrize("kind", ["normal", "both_signs_huge", "ties"])
def test_per_image_binned_matches_exact(kind):
    """The default per-image path (binned keys, one integer sort) agrees with the exact sort of the
    float scores within 0.001, on scores spanning both signs and huge magnitudes, and on ties."""
    g = torch.Generator().manual_seed(3)
    shape = (3, 40, 50)
    scores = torch.randn(shape, generator=g)
    if kind == "both_signs_huge":
        scores = scores * torch.logspace(-30, 30, 2000)[torch.randint(0, 2000, shape, generator=g)]
    elif kind == "ties":
        scores = torch.round(scores * 2) / 2
    is_anomaly = torch.rand(shape, generator=g) < 0.1 + 0.3 * torch.sigmoid(scores.clamp(-50, 50))
    valid = torch.rand(shape, generator=g) < 0.9
    binned, exact = PerImageAnomalyMetric(), PerImageAnomalyMetric(exact=True)
    binned.update(scores, is_anomaly, valid)
    exact.update(scores, is_anomaly, valid)
    b, e = binned.compute(), exact.compute()
    assert b["n_images"] == e["n_images"] == 3
    for key in ("AUPR", "AUROC", "FPR95"):
        assert b[key] == pytest.approx(e[key], abs=1e-3), key


def test_exact_paths_keep_float64_precision():
    # 1 + 1e-12 z rounds to 1.0 in float32: an exact path that casts would see constant scores.
    rng = np.random.default_rng(0)
    z = rng.normal(size=4000)
    labels = z + rng.normal(size=4000) > 1.0
    scores = 1.0 + 1e-12 * z
    assert np.unique(scores.astype(np.float32)).size == 1
    expected = roc_auc_score(labels, scores)  # float64 ties a few neighbours, nothing more
    assert expected == pytest.approx(roc_auc_score(labels, z), abs=1e-5)
    assert exact_rank_metrics(scores, labels)["AUROC"] == pytest.approx(expected, abs=1e-12)
    metric = PerImageAnomalyMetric(exact=True)
    metric.update(torch.from_numpy(scores).view(1, 40, 100), torch.from_numpy(labels).view(1, 40, 100))
    assert metric.compute()["AUROC"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("exact", [False, True])
def test_one_nan_rule_on_every_path(exact):
    scores = torch.rand(2, 4, 4)
    scores[1, 0, 0] = math.nan  # image 1 has no anomaly pixel: it would be skipped, NaN still counts
    is_anomaly = torch.zeros(2, 4, 4, dtype=torch.bool)
    is_anomaly[0, :2] = True
    with pytest.raises(
        ValueError, match=r"1 NaN value\(s\) among the counted pixels \(image 1 of the batch\)"
    ):
        PerImageAnomalyMetric(exact=exact).update(scores, is_anomaly)
    with pytest.raises(ValueError, match="NaN"):
        AnomalyMetric().update(scores, is_anomaly)
    with pytest.raises(ValueError, match="NaN"):
        exact_rank_metrics(scores.numpy(), is_anomaly.numpy())
    valid = torch.ones(2, 4, 4, dtype=torch.bool)
    valid[1, 0, 0] = False  # NaN where nothing is counted is allowed on every path
    PerImageAnomalyMetric(exact=exact).update(scores, is_anomaly, valid)
    AnomalyMetric().update(scores, is_anomaly, valid)
