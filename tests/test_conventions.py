"""Each official kit's rules, on cases whose answers follow from that kit's own code.

Expected values are worked out by hand from the kits' definitions (hendrycks/anomaly-seg
anom_utils.py; SegmentMeIfYouCan road_anomaly_benchmark/metrics/pixel_classification_curves.py and
instance_segmentation.py), or computed by the installed pytorch-ood 0.4 itself.
"""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from lib.metrics import ComponentMetric, PerImageAnomalyMetric, exact_rank_metrics, rank_metrics


def test_three_rule_sets_on_one_hand_built_curve():
    # 20 anomaly and 10 inlier pixels; three thresholds: recall 0.5, 0.9, 1.0; FPR 0, 0.2, 1.0.
    tps, fps = np.array([10, 18, 20]), np.array([0, 2, 10])
    precision = np.array([1.0, 18 / 20, 20 / 30])
    recall = np.array([0.5, 0.9, 1.0])
    smiyc = rank_metrics(tps, fps, "smiyc")
    # The kit: np.trapz(precision, recall) and np.trapz(tpr, fpr) over the points as they are.
    assert smiyc["AUPR"] == pytest.approx(0.4 * (1.0 + 0.9) / 2 + 0.1 * (0.9 + 2 / 3) / 2)
    assert smiyc["AUROC"] == pytest.approx(0.2 * (0.5 + 0.9) / 2 + 0.8 * (0.9 + 1.0) / 2)
    assert smiyc["FPR95"] == 1.0  # the first threshold whose TPR reaches 0.95 is the last one
    ood = rank_metrics(tps, fps, "pytorch-ood")
    # pytorch-ood: trapezoids of sklearn's curve, which ends at (recall 0, precision 1); ROC from (0, 0).
    assert ood["AUPR"] == pytest.approx(0.5 * (1 + 1) / 2 + 0.4 * (1 + 0.9) / 2 + 0.1 * (0.9 + 2 / 3) / 2)
    assert ood["AUROC"] == pytest.approx(0.2 * (0.5 + 0.9) / 2 + 0.8 * (0.9 + 1.0) / 2)
    assert ood["FPR95"] == 1.0
    official = rank_metrics(tps, fps, "anomaly-seg")
    # anomaly-seg: sklearn's step AP; FPR at the recall nearest 0.95 (0.9 beats 1.0 by a hair).
    assert official["AUPR"] == pytest.approx(float(np.sum(np.diff(recall, prepend=0) * precision)))
    assert official["FPR95"] == pytest.approx(0.2)


@pytest.mark.parametrize("seed", range(4))
def test_pytorch_ood_rules_equal_the_library(seed):
    from pytorch_ood.metrics import functional

    g = np.random.default_rng(seed)
    n = int(g.integers(50, 500))
    scores = np.round(g.normal(size=n), int(g.integers(0, 3)))  # ties
    is_anomaly = g.random(n) < 0.3
    labels = torch.from_numpy(np.where(is_anomaly, -1, 0))
    s = torch.from_numpy(scores)
    ours = exact_rank_metrics(scores, is_anomaly, "pytorch-ood")
    assert ours["AUPR"] == pytest.approx(float(functional.aupr(s, labels)), abs=1e-12)
    assert ours["AUROC"] == pytest.approx(float(functional.auroc(s, labels)), abs=1e-12)
    assert ours["FPR95"] == pytest.approx(float(functional.fpr_at_tpr(s, labels, 0.95)), abs=1e-12)


def test_per_image_pytorch_ood_equals_its_per_image_segmentation_metrics():
    from pytorch_ood.metrics import OODPerImageSegmentationMetrics

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 16, 16, generator=g).round(decimals=1)
    labels = torch.zeros(4, 16, 16, dtype=torch.long)
    labels[0, :5] = -1
    labels[1, 3:9, 2:6] = -1
    labels[2, 0, :3] = 255  # void
    labels[3, 4:12, 4:12] = -1
    labels[3, 0, 0] = 255
    scores = scores + (labels == -1) * 0.8
    oracle = OODPerImageSegmentationMetrics(void_label=255)
    oracle.update(scores, labels)
    with pytest.warns(UserWarning, match="Skipped 1 of 4 images"):
        expected = oracle.compute()
    for exact in (True,):
        metric = PerImageAnomalyMetric(exact=exact, rules=("anomaly-seg", "pytorch-ood"))
        metric.update(scores, labels == -1, labels != 255)
        got = metric.compute("pytorch-ood")
        assert got["n_images"] == 3 and got["n_skipped"] == 1
        assert got["AUPR"] == pytest.approx(expected["AUPR-OUT"], abs=1e-9)
        assert got["AUROC"] == pytest.approx(expected["AUROC"], abs=1e-9)
        assert got["FPR95"] == pytest.approx(expected["FPR95TPR"], abs=1e-9)
        sklearn_mean = np.mean(
            [
                average_precision_score((labels[i] == -1)[labels[i] != 255], scores[i][labels[i] != 255])
                for i in (0, 1, 3)
            ]
        )
        assert metric.compute("anomaly-seg")["AUPR"] == pytest.approx(sklearn_mean, abs=1e-9)


# ---------------------------------------------------------------- SegmentMeIfYouCan components


def test_components_follow_the_kits_comparisons_threshold_and_size_filters():
    gt = np.zeros((100, 100), dtype=bool)
    gt[10:30, 10:30] = True  # instance A, 400 px
    gt[90:95, 90:95] = True  # instance B, 25 px < 100: void on the anomaly track, not a miss
    scores = np.zeros((100, 100), dtype=np.float32)
    scores[10:30, 10:50] = 1.0  # 800 px over A and 400 inlier pixels: sIoU(A) = PPV = 0.5 exactly
    scores[60:90, 10:40] = 0.5  # equal to the threshold: not predicted (the kit keeps score > threshold)
    scores[60:70, 60:80] = 1.0  # 200 px < 500: dropped
    metric = ComponentMetric(0.5, track="anomaly")
    metric.update(scores, gt)
    out = metric.compute()
    assert (out["n_gt_components"], out["n_pred_components"]) == (1, 1)
    assert out["sIoU"] == pytest.approx(0.5) and out["PPV"] == pytest.approx(0.5)
    # Taus 0.25 .. 0.50: sIoU >= tau (TP) and PPV not < tau (no FP): F1 1; 0.55 .. 0.75: TP 0, FN 1, FP 1.
    assert out["mean_F1"] == pytest.approx(6 / 11)  # the old rules (>, <=) gave 5 / 11
    # The obstacle track (50 / 10 px) keeps B (a miss) and the 200 px component (a false positive).
    obstacle = ComponentMetric(0.5, track="obstacle")
    obstacle.update(scores, gt)
    out = obstacle.compute()
    assert (out["n_gt_components"], out["n_pred_components"]) == (2, 2)
    assert out["sIoU"] == pytest.approx(0.25) and out["PPV"] == pytest.approx(0.25)


def test_component_siou_subtracts_other_instances_and_ppv_counts_all_anomaly():
    gt = np.zeros((40, 40), dtype=bool)
    gt[0:10, 0:10] = True  # K1, 100 px
    gt[0:10, 20:30] = True  # K2, 100 px
    scores = np.zeros((40, 40), dtype=np.float32)
    scores[0:10, 5:25] = 1.0  # P1: half of K1, half of K2, 100 inlier pixels
    scores[20:30, 0:10] = 1.0  # P2: 100 inlier pixels
    metric = ComponentMetric(0.0, track="obstacle")
    metric.update(scores, gt)
    out = metric.compute()
    # sIoU(K1) = 50 / (100 + 100 inlier pixels of P1) = 0.25 (K2's pixels of P1 are not in the union).
    assert out["sIoU"] == pytest.approx(0.25)
    assert out["PPV"] == pytest.approx((100 / 200 + 0) / 2)
    # tau 0.25: TP 2, FN 0, FP 1 (P2) -> F1 0.8; every larger tau: TP 0 -> F1 0.
    assert out["mean_F1"] == pytest.approx(0.8 / 11)


def test_component_void_and_empty_frames():
    gt = np.zeros((40, 40), dtype=bool)
    gt[10:20, 10:20] = True
    scores = gt.astype(np.float32)
    scores[0:2, :] = 1.0  # 80 px of false detection, but on void pixels
    valid = np.ones_like(gt)
    valid[0:2, :] = False
    metric = ComponentMetric(0.5, track="obstacle")
    metric.update(scores, gt, valid)
    out = metric.compute()
    assert out["PPV"] == pytest.approx(1.0) and out["mean_F1"] == pytest.approx(1.0)
    empty = ComponentMetric(0.5)
    empty.update(np.zeros((8, 8), np.float32), np.zeros((8, 8), bool))
    out = empty.compute()
    assert math.isnan(out["sIoU"]) and math.isnan(out["PPV"]) and math.isnan(out["mean_F1"])
    with pytest.raises(ValueError, match="track"):
        ComponentMetric(0.5, track="lane")


def test_roc_auc_convention_free():
    # AUROC is the same under every kit's rules on an exact curve (trapezoids from (0, 0) or not
    # differ only when the first point is not at FPR 0).
    g = np.random.default_rng(1)
    scores, labels = g.normal(size=300), g.random(300) < 0.4
    expected = roc_auc_score(labels, scores)
    for rules in ("anomaly-seg", "pytorch-ood"):
        assert exact_rank_metrics(scores, labels, rules)["AUROC"] == pytest.approx(expected, abs=1e-12)


def test_published_numbers_name_their_convention_and_print_only_beside_the_same_one():
    from lib.config import CONVENTIONS, PROTOCOLS
    from lib.published import REFERENCE_WEIGHTS_RESULTS, STREETHAZARDS_RESULTS, comparison_table

    known = (*PROTOCOLS, *CONVENTIONS, None)
    assert all("convention" in row and row["convention"] in known for row in STREETHAZARDS_RESULTS)
    published = REFERENCE_WEIGHTS_RESULTS["metrics"]
    assert all(key.startswith("seg/") or key.rsplit("/", 1)[1] in known for key in published)
    measured = {"seg/mIoU": 60.0, "ood/entropy/AUPR/per-image": 20.0, "ood/entropy/AUPR/pooled": 15.0}
    table = comparison_table(measured, published)
    assert "ood/entropy/AUPR/pooled" in table and "-2.37" in table  # 15.00 beside 17.37
    assert "20.00" not in table  # the per-image number is never printed beside a pooled one
    assert table.splitlines()[-1].startswith("not measured under the published convention")
    assert "ood/msp/AUPR/pooled" in table.splitlines()[-1]


# ---------------------------------------------------------------- binning that cannot drift silently


def _cluster_case(n=120_000, seed=0):
    """55 % of the pixels at 0, the rest at 1e4 +- 1e-2, anomalies 2e-2 higher: with the offset the
    first batch picks (0), the whole cluster falls into one bin."""
    g = np.random.default_rng(seed)
    zero = g.random(n) < 0.55
    anomaly = ~zero & (g.random(n) < 0.1)
    scores = np.where(zero, 0.0, 1e4 + g.uniform(-1e-2, 1e-2, n) + 2e-2 * anomaly).astype(np.float32)
    return scores, anomaly


def test_cluster_case_per_image_is_ranked_exactly():
    scores, anomaly = _cluster_case()
    exact = exact_rank_metrics(scores, anomaly)
    metric = PerImageAnomalyMetric()
    metric.update(torch.from_numpy(scores).view(2, 300, 200), torch.from_numpy(anomaly).view(2, 300, 200))
    out = metric.compute()
    assert out["n_exact"] == 2
    per_image = [
        exact_rank_metrics(s, a) for s, a in zip(scores.reshape(2, -1), anomaly.reshape(2, -1), strict=True)
    ]
    for key in ("AUPR", "AUROC", "FPR95"):
        assert out[key] == pytest.approx(np.mean([m[key] for m in per_image]), abs=1e-12)
    assert exact["AUPR"] > 0.9  # what binning alone would miss (it gives about 0.18)


def test_cluster_case_pooled_warns_then_resolves_exactly():
    from lib.metrics import AnomalyMetric

    scores, anomaly = _cluster_case()
    exact = exact_rank_metrics(scores, anomaly)
    metric = AnomalyMetric()
    for part in np.array_split(np.arange(scores.size), 4):
        metric.update(torch.from_numpy(scores[part]), torch.from_numpy(anomaly[part]))
    with pytest.warns(RuntimeWarning, match="may be up to .* from the exact values"):
        binned = metric.compute()
    assert abs(binned["AUPR"] - exact["AUPR"]) > 0.5 and binned["tie_bound"] > 0.5  # the drift, said
    assert metric.resolve_ties() >= 1
    for part in np.array_split(np.arange(scores.size), 3):  # the same pixels, batched differently
        metric.update(torch.from_numpy(scores[part]), torch.from_numpy(anomaly[part]))
    resolved = metric.compute()
    for key in ("AUPR", "AUROC", "FPR95"):
        assert resolved[key] == pytest.approx(exact[key], abs=1e-12), key
    for rules in ("smiyc", "pytorch-ood"):
        expected = exact_rank_metrics(scores, anomaly, rules)
        assert metric.compute(rules)["AUPR"] == pytest.approx(expected["AUPR"], abs=1e-12)
    # The curves (and so the components' best-F1 threshold) follow the second pass too.
    from sklearn.metrics import precision_recall_curve

    from lib.metrics import best_f1_threshold

    curves = metric.curves()
    assert np.all(np.diff(curves["thresholds"]) < 0) and curves["tps"][-1] == anomaly.sum()
    assert np.trapezoid(curves["tpr"], curves["fpr"]) == pytest.approx(exact["AUROC"], abs=1e-12)
    precision, recall, thresholds = precision_recall_curve(anomaly, scores)
    f1 = np.where(
        precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0
    )
    assert best_f1_threshold(metric) == thresholds[int(np.argmax(f1[:-1]))]


def test_continuous_scores_need_no_second_pass():
    from lib.metrics import AnomalyMetric

    g = np.random.default_rng(3)
    labels = g.random(200_000) < 0.05
    scores = (g.normal(size=200_000) + 1.5 * labels).astype(np.float32)
    metric = AnomalyMetric()
    metric.update(torch.from_numpy(scores), torch.from_numpy(labels))
    assert metric.tie_bound() <= 1e-3 and metric.resolve_ties() == 0
    exact = exact_rank_metrics(scores, labels)
    out = metric.compute()
    assert all(abs(out[k] - exact[k]) <= 1e-3 for k in ("AUPR", "AUROC", "FPR95"))


def test_evaluate_resolves_the_cluster_case_in_a_second_pass():
    from lib.test import evaluate

    scores, anomaly = _cluster_case(n=2 * 3 * 100 * 100)
    scores, anomaly = torch.from_numpy(scores).view(6, 100, 100), torch.from_numpy(anomaly).view(6, 100, 100)

    class Replay(torch.nn.Module):
        """Logits whose max logit is minus the cluster scores, batch after batch, pass after pass."""

        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            i = self.calls % 3
            self.calls += 1
            logits = torch.zeros(2, 2, 100, 100)
            logits[:, 0] = -scores[2 * i : 2 * i + 2] - 1e-3  # maxlogit = -max logit = score
            logits[:, 1] = -scores[2 * i : 2 * i + 2]
            return logits

    images = torch.zeros(6, 3, 100, 100, dtype=torch.uint8)
    masks = torch.where(anomaly, 2, 0)
    batches = [(images[2 * i : 2 * i + 2], masks[2 * i : 2 * i + 2]) for i in range(3)]
    with pytest.warns(RuntimeWarning, match="ranking those bins exactly in a second pass"):
        result = evaluate(Replay(), batches, num_classes=2, class_names=("a", "b", "anomaly"), anomaly_id=2,
                          score_names=("maxlogit",), device="cpu", progress=False)  # fmt: skip
    exact = exact_rank_metrics(scores.numpy(), anomaly.numpy())
    assert result.metrics["ood/maxlogit/AUPR/pooled"] == pytest.approx(100 * exact["AUPR"], abs=1e-9)
    assert result.metrics["ood/maxlogit/AUROC/pooled"] == pytest.approx(100 * exact["AUROC"], abs=1e-9)


@pytest.mark.parametrize("with_valid", [False, True])
def test_pooled_counts_fed_by_the_per_image_pass_equal_its_own(with_valid):
    from lib.metrics import AnomalyMetric

    g = torch.Generator().manual_seed(5)
    batches = []
    for _ in range(3):
        scores = torch.randn(2, 40, 50, generator=g) * 3 + 100.0
        scores[:, :5] = 0.0  # real ties
        labels = torch.rand(2, 40, 50, generator=g) < 0.1
        valid = (torch.rand(2, 40, 50, generator=g) < 0.9) if with_valid else None
        batches.append((scores, labels, valid))
    alone, shared = AnomalyMetric(), AnomalyMetric()
    per_image, per_image_alone = PerImageAnomalyMetric(), PerImageAnomalyMetric()
    for scores, labels, valid in batches:
        alone.update(scores, labels, valid)
        per_image.update(scores, labels, valid, pooled=shared)
        per_image_alone.update(scores, labels, valid)
    assert alone.offset == shared.offset
    for name, tensor in alone.state_tensors.items():
        assert torch.equal(tensor, shared.state_tensors[name]), name
    assert per_image.compute() == per_image_alone.compute()  # the same first-batch offset either way
