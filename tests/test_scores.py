import math

import pytest
import torch

from lib.scores import compute_scores, energy, entropy, maxlogit, msp


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
