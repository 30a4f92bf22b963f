import math

import pytest
import torch
from torch import nn

from lib.registry import REGISTRY
from lib.test import evaluate, results_table

STREETHAZARDS_LABELS = REGISTRY["streethazards"].label_args


class MarkerModel(nn.Module):
    """Confident 'road' where the image's red channel is 0, uniform logits where it is 255."""

    def forward(self, x):
        flagged = x[:, 0] > 0  # normalised 255 > 0 > normalised 0
        logits = torch.zeros(x.shape[0], 13, *x.shape[-2:])
        logits[:, 7] = torch.where(flagged, 0.0, 10.0)
        return logits


def _batches():
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    masks = torch.full((2, 8, 8), 7, dtype=torch.int64)
    images[0, 0, 2:4, 2:5] = 255  # 6 anomaly pixels in image 0
    masks[0, 2:4, 2:5] = 13
    masks[1, 0, 0] = 255  # one unlabelled pixel
    return [(images[:1], masks[:1]), (images[1:], masks[1:])]


def test_one_pass_evaluation_of_a_perfect_detector():
    result = evaluate(
        MarkerModel(),
        _batches(),
        num_classes=13,
        **STREETHAZARDS_LABELS,
        device="cpu",
        keep_examples=1,
        progress=False,
    )
    m = result.metrics
    assert result.num_images == 2
    for score in ("msp", "maxlogit", "entropy", "energy"):
        for protocol in ("pooled", "per-image"):  # per image: image 1 has no anomaly, skipped
            assert m[f"ood/{score}/AUPR/{protocol}"] == pytest.approx(100.0)
            assert m[f"ood/{score}/AUROC/{protocol}"] == pytest.approx(100.0)
            assert m[f"ood/{score}/FPR95/{protocol}"] == pytest.approx(0.0)
    # Labelled pixels: 128 - 1 unlabelled; 6 of them anomalies.
    assert m["ood/anomaly_pixel_share"] == pytest.approx(100.0 * 6 / 127)
    # Only road is in the target, and every road pixel is predicted road; anomaly pixels do not count.
    assert m["seg/IoU/road"] == pytest.approx(100.0)
    assert m["seg/mIoU"] == pytest.approx(100.0)
    assert len(result.examples) == 1 and result.examples[0].scores["entropy"].shape == (8, 8)
    table = results_table(m)
    assert "pooled: over all test pixels" in table and "per-image: mean over images" in table


def test_ignored_classes_leave_the_anomaly_metrics():
    batches = _batches()
    batches[1][1][0, 4:, :] = 2  # 'fence' pixels the model calls confident road: inliers
    batches[1][0][0, 0, 4:, :] = 255  # ...but they look uncertain, like anomalies
    hurt = evaluate(
        MarkerModel(), batches, num_classes=13, **STREETHAZARDS_LABELS, device="cpu", progress=False
    ).metrics
    assert hurt["ood/entropy/AUPR/pooled"] < 50.0
    spared = evaluate(
        MarkerModel(),
        batches,
        num_classes=13,
        **STREETHAZARDS_LABELS,
        device="cpu",
        ood_ignore=("fence",),
        progress=False,
    )
    assert spared.metrics["ood/entropy/AUPR/pooled"] == pytest.approx(100.0)
    only_pooled = evaluate(
        MarkerModel(),
        batches,
        num_classes=13,
        **STREETHAZARDS_LABELS,
        device="cpu",
        protocols=("pooled",),
        progress=False,
    )
    assert not any(k.endswith("/per-image") for k in only_pooled.metrics)


def test_unknown_class_in_miou_exclude():
    with pytest.raises(ValueError, match="miou_exclude names unknown class"):
        evaluate(
            MarkerModel(),
            _batches(),
            num_classes=13,
            **STREETHAZARDS_LABELS,
            device="cpu",
            miou_exclude=("bicycle",),
            progress=False,
        )


def test_empty_split_is_an_error():
    with pytest.raises(ValueError, match="test split is empty"):
        evaluate(MarkerModel(), [], num_classes=13, **STREETHAZARDS_LABELS, device="cpu", progress=False)


class Ramp(nn.Module):
    """Logit of class 0 = column index; class 1 = 0. Not flip-invariant, not translation-invariant."""

    def forward(self, x):
        b, _, h, w = x.shape
        ramp = torch.arange(w, dtype=torch.float32).expand(b, h, w)
        return torch.stack([ramp, torch.zeros_like(ramp)], dim=1)


def test_flip_tta_averages_flipped_predictions():
    from lib.test import predict_logits

    out = predict_logits(Ramp(), torch.zeros(1, 3, 2, 5), flip=True)
    assert torch.allclose(out[0, 0], torch.full((2, 5), 2.0))  # (x + (4 - x)) / 2


def test_sliding_window_equals_whole_image_for_pointwise_model():
    from lib.test import predict_logits

    conv = nn.Conv2d(3, 4, kernel_size=1)
    x = torch.randn(2, 3, 17, 23)
    whole = predict_logits(conv, x)
    for window in [(8, 8), (17, 5), (40, 40)]:
        assert torch.allclose(predict_logits(conv, x, window=window), whole, atol=1e-6)


def test_multiscale_keeps_input_resolution():
    from lib.test import predict_logits

    conv = nn.Conv2d(3, 4, kernel_size=1)
    x = torch.ones(1, 3, 16, 24)
    out = predict_logits(conv, x, scales=(0.5, 1.0, 1.5))
    assert out.shape == (1, 4, 16, 24)
    assert torch.allclose(out, conv(x), atol=1e-5)  # a constant image stays constant at any scale


class LowConfidenceRoad(nn.Module):
    """Always predicts road: logit 10 + noise from the green channel, or 0.5 where red is 255."""

    def forward(self, x):
        flagged = x[:, 0] > 0
        logits = torch.full((x.shape[0], 13, *x.shape[-2:]), -1.0)
        logits[:, 7] = torch.where(flagged, 0.5, 10.0 + x[:, 1])
        return logits


def test_sml_through_the_evaluator():
    from lib.test import fit_sml_statistics

    g = torch.Generator().manual_seed(0)
    train_images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    train_images[:, 1] = torch.randint(0, 256, (2, 8, 8), dtype=torch.uint8, generator=g)
    train = [(train_images, torch.full((2, 8, 8), 7))]
    stats = fit_sml_statistics(LowConfidenceRoad(), train, num_classes=13, device="cpu", progress=False)
    mean, std = stats.mean_std()
    assert 9.0 < mean[7] < 11.0 and 0.5 < std[7] < 1.5
    result = evaluate(LowConfidenceRoad(), _batches(), num_classes=13, **STREETHAZARDS_LABELS, device="cpu", score_names=("sml",),
                      sml_stats=stats, progress=False)  # fmt: skip
    assert result.metrics["ood/sml/AUROC/pooled"] == pytest.approx(100.0)


def _large_batches():
    """Two 64x64 images: a 12x12 anomaly block (144 px) and a void row in the first, nothing in the second."""
    images = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    masks = torch.full((2, 64, 64), 7, dtype=torch.int64)
    images[0, 0, 20:32, 20:32] = 255
    masks[0, 20:32, 20:32] = 13
    masks[0, 0, :] = 255
    images[0, 0, 0, :] = 255  # flagged, but void: counted as an inlier by anomaly-seg alone
    return [(images[:1], masks[:1]), (images[1:], masks[1:])]


def test_conventions_and_components_through_the_evaluator():
    options = dict(
        num_classes=13, **STREETHAZARDS_LABELS, device="cpu", score_names=("entropy", "msp"), progress=False
    )
    result = evaluate(MarkerModel(), _large_batches(), conventions=("anomaly-seg", "smiyc", "pytorch-ood"),
                      smiyc_track="obstacle", **options)  # fmt: skip
    m = result.metrics
    # One anomaly component, found exactly by the best-F1 threshold: sIoU, PPV and F1 are 100 on the
    # obstacle track (50 / 10 px); on the anomaly track the 144 px prediction is under 500 px: dropped.
    for name in ("entropy", "msp"):
        assert m[f"ood/{name}/sIoU/smiyc"] == pytest.approx(100.0)
        assert m[f"ood/{name}/PPV/smiyc"] == pytest.approx(100.0)
        assert m[f"ood/{name}/mean_F1/smiyc"] == pytest.approx(100.0)
        # The kit's AP is np.trapz over its curve, which starts at the first threshold with
        # predictions: here recall 1 already, so a perfect two-valued score gets AP 0 (its AUROC 100).
        assert m[f"ood/{name}/AUPR/smiyc"] == 0.0 and m[f"ood/{name}/AUROC/smiyc"] == pytest.approx(100.0)
        assert m[f"ood/{name}/AUPR/pytorch-ood"] == pytest.approx(100.0)
        # The void row scores like the anomaly: only anomaly-seg counts it, as an inlier.
        assert m[f"ood/{name}/AUPR/anomaly-seg"] == pytest.approx(100 * 144 / (144 + 64))
        assert m[f"ood/{name}/AUPR/pooled"] == pytest.approx(100.0)
    anomaly_track = evaluate(
        MarkerModel(), _large_batches(), component_scores=("entropy",), **options
    ).metrics
    assert anomaly_track["ood/entropy/sIoU/smiyc"] == 0.0 and math.isnan(
        anomaly_track["ood/entropy/PPV/smiyc"]
    )
    assert "ood/msp/sIoU/smiyc" not in anomaly_track and "ood/msp/AUPR/pytorch-ood" not in anomaly_track
    with pytest.raises(ValueError, match="unknown convention"):
        evaluate(MarkerModel(), _large_batches(), conventions=("fishyscapes",), **options)


@pytest.mark.parametrize("flip", [False, True])
def test_abet_score_is_the_energy_of_the_logits_evaluated(flip):
    m = evaluate(MarkerModel(), _batches(), num_classes=13, **STREETHAZARDS_LABELS, device="cpu", score_names=("energy", "abet"),
                 flip=flip, progress=False).metrics  # fmt: skip
    assert m["ood/abet/AUROC/pooled"] == pytest.approx(100.0)
    for metric in ("AUPR", "AUROC", "FPR95"):
        assert m[f"ood/abet/{metric}/pooled"] == m[f"ood/energy/{metric}/pooled"]


def test_an_eval_spec_in_one_line_gives_what_the_keywords_give():
    """EvalSpec.for_dataset: the registry's labels and published protocol; evaluate(model, loader,
    spec) measures exactly what the keyword call (written before the spec) measures."""
    import dataclasses

    from lib.test import EvalSpec

    spec = EvalSpec.for_dataset("streethazards", miou_exclude=(), protocols=("pooled", "per-image"))
    assert (spec.num_classes, spec.anomaly_id, spec.class_names[-1], spec.scores) == (
        13, 13, "anomaly", ("msp", "maxlogit", "entropy", "energy"),
    )  # fmt: skip
    assert EvalSpec.for_dataset("streethazards").miou_exclude == ("pedestrian",)  # its protocol
    by_spec = evaluate(MarkerModel(), _batches(), spec, device="cpu", progress=False).metrics
    by_keywords = evaluate(
        MarkerModel(), _batches(), num_classes=13, **STREETHAZARDS_LABELS, device="cpu", progress=False
    ).metrics
    assert by_spec.keys() == by_keywords.keys()
    assert all(by_spec[k] == pytest.approx(v, nan_ok=True) for k, v in by_keywords.items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.scores = ("msp",)
    with pytest.raises(ValueError, match=r"put them in the spec \(dataclasses.replace"):
        evaluate(MarkerModel(), _batches(), spec, device="cpu", protocols=("pooled",))
    with pytest.raises(TypeError, match="unexpected keyword"):
        evaluate(MarkerModel(), _batches(), device="cpu", num_clases=13)
    # an anomaly-only set needs the model's class count; a set without anomaly labels gets no score
    with pytest.raises(ValueError, match="anomaly-only set: give num_classes"):
        EvalSpec.for_dataset("roadanomaly")
    ra = EvalSpec.for_dataset("roadanomaly", num_classes=19)
    assert (ra.closed_set, ra.anomaly_id, ra.num_classes, ra.miou_exclude) == (False, 1, 19, ())
    assert EvalSpec.for_dataset("cityscapes").scores == ()
    with pytest.raises(ValueError, match="need anomaly labels"):
        EvalSpec.for_dataset("cityscapes", scores=("msp",))
