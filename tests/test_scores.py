import math

import pytest
import torch

from lib.scores import compute_scores, energy, entropy, first_max_index, maxlogit, msp, scores_and_prediction


def _logits(seed=0):
    return torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(seed)) * 4


def test_hand_computed_two_classes():
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1)  # softmax (0.25, 0.75)
    assert msp(logits).item() == pytest.approx(-math.log(0.75))
    assert maxlogit(logits).item() == pytest.approx(-math.log(3.0))
    assert entropy(logits).item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert energy(logits).item() == pytest.approx(-math.log(4.0))


def test_match_textbook_definitions():
    logits = _logits()
    p = logits.softmax(dim=1)
    assert torch.allclose(torch.exp(-msp(logits)), p.amax(dim=1))  # -log MSP, monotone in -MSP
    assert torch.allclose(entropy(logits), -(p * p.log()).sum(dim=1), atol=1e-5)
    assert torch.allclose(energy(logits), -torch.logsumexp(logits, dim=1))
    assert torch.allclose(maxlogit(logits), -logits.amax(dim=1))


def test_msp_order_equals_textbook_order():
    logits = _logits(1)
    textbook = -logits.softmax(dim=1).amax(dim=1).flatten()
    ours = msp(logits).flatten()
    assert torch.equal(torch.argsort(textbook, stable=True), torch.argsort(ours, stable=True))


def test_confident_pixels_keep_their_order():
    # Both pixels have an MSP that rounds to 1.0 in float32; the scores still tell them apart.
    logits = torch.tensor([[20.0, 0.0], [25.0, 0.0]]).T.reshape(1, 2, 1, 2)
    assert (logits.softmax(dim=1).amax(dim=1) == 1.0).all()
    for score in (msp, entropy):
        s = score(logits).flatten()
        assert s[0] > s[1] > 0
    assert msp(logits)[0, 0, 0].item() == pytest.approx(math.exp(-20.0), rel=1e-5)
    h = -(math.exp(-20) * -20 + 0)  # p_2 log p_2 with p_2 ~ e^-20, p_1 log p_1 ~ -e^-20
    assert entropy(logits)[0, 0, 0].item() == pytest.approx(h + math.exp(-20.0), rel=1e-4)


def test_tied_maxima():
    logits = torch.tensor([3.0, 3.0, -50.0]).view(1, 3, 1, 1)
    assert msp(logits).item() == pytest.approx(math.log(2.0), rel=1e-6)
    assert entropy(logits).item() == pytest.approx(math.log(2.0), rel=1e-6)


@pytest.mark.parametrize("classes", [2, 13, 300])
def test_prediction_is_argmax_first_on_ties(classes):
    g = torch.Generator().manual_seed(classes)
    logits = torch.randint(-3, 4, (2, classes, 9, 7), generator=g).float()  # many tied maxima
    logits[0, :, 0, 0] = -torch.inf
    logits[0, classes - 1, 0, 0] = 5.0  # the last class, the rest -inf
    logits[1, :, 1, 1] = 2.0  # every class tied: the first
    prediction, scores = scores_and_prediction(logits, ("msp", "entropy"))
    assert prediction.dtype == torch.int64 and torch.equal(prediction, logits.argmax(dim=1))
    assert prediction[0, 0, 0] == classes - 1 and prediction[1, 1, 1] == 0
    assert all(torch.equal(scores[n], compute_scores(logits, ("msp", "entropy"))[n]) for n in scores)
    assert torch.equal(
        first_max_index(torch.zeros(1, classes, 2, dtype=torch.bool)), torch.full((1, 2), classes)
    )


def test_compute_scores_shapes_and_unknown_name():
    scores = compute_scores(_logits(2))
    assert list(scores) == ["msp", "maxlogit", "entropy", "energy"]
    assert all(s.shape == (2, 3, 4) and s.dtype == torch.float32 for s in scores.values())
    with pytest.raises(ValueError, match="msp, maxlogit, entropy, energy"):
        compute_scores(_logits(), ("odin",))


def test_sml_standardizes_by_predicted_class():
    from lib.scores import SMLStatistics

    # Training pixels: class 0 predicted with max logits 2 and 4 (mean 3, std 1); class 1 never.
    train = torch.tensor([[2.0, 0.0], [4.0, 0.0]]).T.reshape(1, 2, 1, 2)
    stats = SMLStatistics(2)
    stats.update(train)
    mean, std = stats.mean_std()
    assert mean.tolist() == [3.0, 0.0] and std.tolist() == [1.0, 1.0]
    test = torch.tensor([[5.0, 0.0], [0.0, 0.5]]).T.reshape(1, 2, 1, 2)
    sml = compute_scores(test, ("sml",), sml_stats=stats)["sml"].flatten()
    assert sml.tolist() == [-2.0, -0.5]  # -(5 - 3) / 1 ; class 1 unseen: -(0.5 - 0) / 1


def test_sml_needs_statistics():
    with pytest.raises(ValueError, match="needs sml_stats"):
        compute_scores(_logits(), ("sml",))


def test_pans_and_abet():
    logits = torch.tensor([10.0, -10.0, 0.0]).view(1, 3, 1, 1)  # cosine logits at scale 10
    scores = compute_scores(logits, ("pans", "abet", "energy"))
    assert scores["pans"].item() == pytest.approx(0.0)  # on a prototype: least anomalous
    assert torch.equal(scores["abet"], scores["energy"])  # AbeT is the energy of the head's logits
    # The AbeT head's logits are cos / T: the same cosines under a lower (more confident) temperature
    # give a lower score, and the value is -logsumexp(cos / T) (no T in front).
    cosine = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    confident, unsure = (compute_scores(cosine / t, ("abet",))["abet"].item() for t in (0.25, 1.0))
    assert unsure == pytest.approx(-math.log(math.e + 2))
    assert confident == pytest.approx(-math.log(math.exp(4) + 2)) and confident < unsure


@pytest.mark.parametrize(
    "values",
    [
        [3e38, -3e38, 0.0],  # the gap to the maximum overflows float32
        [0.0, -math.inf, 1.0],  # -inf on a class that is not the maximum
        [1e38, 1e38, -3e38],  # tied maxima far from the rest
        [-3e38, -3e38, -3e38],
    ],
)
def test_every_score_finite_for_finite_logits_and_non_maximal_minus_inf(values):
    logits = torch.tensor(values).view(1, 3, 1, 1)
    scores = compute_scores(logits, ("msp", "maxlogit", "entropy", "energy", "pans"))
    assert all(bool(torch.isfinite(s).all()) for s in scores.values()), scores
    finite = logits.clamp(min=-1e4)  # the same softmax where the rest is negligible: same entropy
    p = torch.softmax(finite.double(), dim=1)
    textbook = -(p * p.clamp(min=1e-300).log()).sum(dim=1)
    if max(values) - min(values) < 1e30:
        assert scores["entropy"].item() == pytest.approx(textbook.item(), rel=1e-6)


def test_fp16_logits_are_scored_in_float32():
    logits = _logits(3)
    half = compute_scores(logits.half())
    full = compute_scores(logits.half().float())
    for name in half:
        assert half[name].dtype == torch.float32
        assert torch.equal(half[name], full[name])


@pytest.mark.parametrize("bad, what", [(math.inf, r"\+inf"), (math.nan, "NaN"), (None, "only -inf")])
def test_non_finite_logit_names_image_and_pixel(bad, what):
    from lib.scores import NonFiniteLogitsError

    logits = torch.zeros(3, 4, 5, 6)
    if bad is None:
        logits[2, :, 4, 1] = -math.inf
    else:
        logits[2, 1, 4, 1] = bad
    with pytest.raises(
        NonFiniteLogitsError, match=f"image 2 .*{what} at pixel \\(row 4, column 1\\)"
    ) as info:
        compute_scores(logits)
    assert info.value.image == 2 and info.value.pixel == (4, 1)


def test_evaluate_names_the_batch_of_an_overflowed_logit():
    from lib.scores import NonFiniteLogitsError
    from lib.test import evaluate

    class Overflow(torch.nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 3, *x.shape[-2:])
            if x.shape[0] == 1:  # the last, short batch: image 4 of the split
                out[0, 2, 1, 1] = math.inf
            return out

    images = torch.zeros(5, 3, 4, 4, dtype=torch.uint8)
    masks = torch.zeros(5, 4, 4, dtype=torch.long)
    batches = [(images[:2], masks[:2]), (images[2:4], masks[2:4]), (images[4:], masks[4:])]
    with pytest.raises(NonFiniteLogitsError, match=r"test batch 2 \(image 4 of the split\)"):
        evaluate(Overflow(), batches, num_classes=3, class_names=("a", "b", "c", "x"), anomaly_id=3,
                 device="cpu", progress=False)  # fmt: skip
