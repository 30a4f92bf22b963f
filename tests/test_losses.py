import math

import pytest
import torch
import torch.nn.functional as F

from lib.losses import SegmentationLoss, entropy_term, focal_loss


def _random(seed=0, c=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, c, 4, 6, generator=g) * 3
    target = torch.randint(0, c, (2, 4, 6), generator=g)
    target[0, 0, :3] = 255
    return logits, target


def test_focal_gamma_zero_equals_cross_entropy():
    logits, target = _random()
    assert torch.allclose(
        focal_loss(logits, target, gamma=0), F.cross_entropy(logits, target, ignore_index=255)
    )


def test_focal_gamma_zero_equals_weighted_cross_entropy():
    logits, target = _random(1)
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.1])
    expected = F.cross_entropy(logits, target, weight=weight, ignore_index=255)
    assert torch.allclose(focal_loss(logits, target, gamma=0, weight=weight), expected)


def test_focal_hand_computed():
    # Two classes, one pixel, logits (0, 0): p_y = 0.5, loss = (1 - 0.5)^2 * log 2.
    logits = torch.zeros(1, 2, 1, 1)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    assert focal_loss(logits, target, gamma=2).item() == pytest.approx(0.25 * math.log(2))


def _focal_by_hand(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, gamma: float) -> float:
    """FL = sum over labelled pixels of -w_y (1 - p_y)^gamma log p_y / sum of w_y, one pixel at a
    time in float64 Python (labels 255 or outside the classes are not labelled)."""
    z, w = logits.double().numpy(), weight.double().numpy()
    numerator = denominator = 0.0
    for b in range(z.shape[0]):
        for i in range(z.shape[2]):
            for j in range(z.shape[3]):
                y = int(target[b, i, j])
                if not 0 <= y < z.shape[1]:
                    continue
                v = z[b, :, i, j]
                top = max(v)
                p_y = math.exp(v[y] - top) / sum(math.exp(x - top) for x in v)
                numerator += -w[y] * (1.0 - p_y) ** gamma * math.log(p_y)
                denominator += w[y]
    return numerator / denominator


@pytest.mark.parametrize("gamma", [2.0, 0.5])
def test_weighted_focal_matches_a_per_pixel_loop(gamma):
    logits, target = _random(4)  # 3 pixels labelled 255
    target[1, 2, 3] = 7  # outside the 5 classes (like the anomaly id): not labelled either
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.1])
    expected = _focal_by_hand(logits, target, weight, gamma)
    got = focal_loss(logits, target, gamma=gamma, weight=weight).item()
    assert got == pytest.approx(expected, rel=1e-5)
    # The weights matter here (so the check can catch a loss that drops or mis-normalises them).
    unweighted = _focal_by_hand(logits, target, torch.ones(5), gamma)
    assert abs(expected - unweighted) > 0.05 * unweighted


def test_focal_down_weights_easy_pixels():
    logits = torch.tensor([[10.0, 0.0], [0.0, 0.0]]).T.reshape(1, 2, 1, 2)  # pixel 0 easy, pixel 1 hard
    target = torch.zeros(1, 1, 2, dtype=torch.long)
    per_pixel_ce = F.cross_entropy(logits, target, reduction="none").flatten()
    fl = focal_loss(logits, target, gamma=2)
    assert fl < per_pixel_ce.mean()


def test_entropy_term_hand_computed():
    # Uniform over 4 classes -> entropy log 4; a one-hot-like pixel -> ~0. Ignored pixel does not count.
    logits = torch.zeros(1, 4, 1, 3)
    logits[0, 0, 0, 1] = 100.0
    target = torch.tensor([[[0, 0, 255]]])
    assert entropy_term(logits, target).item() == pytest.approx(math.log(4) / 2, rel=1e-5)


@pytest.mark.parametrize("name", ["ce", "ce+h", "fl", "fl+h"])
def test_segmentation_loss_definitions(name):
    logits, target = _random(2)
    loss = SegmentationLoss(name, gamma_focal=2.0, entropy_weight=0.3)(logits, target)
    expected = focal_loss(logits, target, gamma=2.0 if name.startswith("fl") else 0.0)
    if name.endswith("+h"):
        expected = expected + 0.3 * entropy_term(logits, target)
    assert torch.allclose(loss, expected)


def test_anomaly_and_ignore_labels_do_not_count():
    logits, target = _random(3)
    with_anomaly = target.clone()
    with_anomaly[1, 1, :2] = 13  # anomaly id, outside the 5 model classes
    reference = target.clone()
    reference[1, 1, :2] = 255
    loss = SegmentationLoss("fl+h")
    assert torch.allclose(loss(logits, with_anomaly), loss(logits, reference))


def test_all_ignored_gives_zero_not_nan():
    logits = torch.randn(1, 3, 2, 2)
    target = torch.full((1, 2, 2), 255)
    assert SegmentationLoss("fl+h")(logits, target).item() == 0.0


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match="ce, ce\\+h, fl, fl\\+h"):
        SegmentationLoss("dice")


def test_true_class_rows_entropy_is_the_reference_codes_term():
    """-sum over ROWS of p_y log p_y, then the mean over images and columns; ignored pixels add 0."""
    from lib.losses import true_class_rows_entropy

    # One image, 2 classes, 2 rows x 2 columns; logits (0, log 3) give p = (1/4, 3/4).
    logits = torch.zeros(1, 2, 2, 2)
    logits[:, 1] = math.log(3.0)
    target = torch.tensor([[[0, 1], [1, 255]]])
    q, t = 0.25, 0.75
    column_0 = -(q * math.log(q) + t * math.log(t))  # rows: class 0 (p 1/4), class 1 (p 3/4)
    column_1 = -(t * math.log(t))  # rows: class 1, ignored
    expected = (column_0 + column_1) / 2
    assert true_class_rows_entropy(logits, target).item() == pytest.approx(expected, rel=1e-6)
    loss = SegmentationLoss("ce+h", entropy_weight=0.5, entropy_term="true-class-rows")
    ce = F.cross_entropy(logits, target, ignore_index=255)
    assert loss(logits, target).item() == pytest.approx(ce.item() + 0.5 * expected, rel=1e-6)
    with pytest.raises(
        ValueError, match="unknown entropy_term 'rows'; choose one of: softmax, true-class-rows"
    ):
        SegmentationLoss("fl+h", entropy_term="rows")
