"""Published StreetHazards numbers, quoted for comparison (this project measured none of them).

Percentages. Each table says where it comes from and each number under which convention it was
measured, by the names of `lib.test`'s keys: ``pooled`` / ``per-image`` (this project's protocols;
the reference project pooled every test pixel), ``anomaly-seg`` (the official StreetHazards code:
per image, void as inlier), ``smiyc``, ``pytorch-ood``; None where the source does not say. Compare a
result only with numbers of the same convention: `comparison_table` prints a published number only
beside ours under the same key.
"""

from __future__ import annotations

from collections.abc import Mapping

#: The StreetHazards reference project's ablation (its ``ckpts/ablation.csv``): DeepLabv3+
#: ResNet-101 fine-tuned from Cityscapes weights, StreetHazards test split, pooled AUPR per score.
REFERENCE_ABLATION_SOURCE = (
    "StreetHazards reference project, ckpts/ablation.csv: DeepLabv3+ ResNet-101 from Cityscapes "
    "weights, StreetHazards test split, pooled AUPR (%)"
)
#: The convention of `REFERENCE_ABLATION`'s AUPR: every test pixel at once, unlabeled pixels as inliers.
REFERENCE_ABLATION_CONVENTION = "pooled"
REFERENCE_ABLATION: tuple[dict[str, object], ...] = (
    dict(head="standard", loss="ce", mIoU=65.30, msp=8.87, maxlog=12.68, entropy=11.15, energy=13.27),
    dict(head="standard", loss="fl+h", mIoU=64.30, msp=8.91, maxlog=13.09, entropy=11.48, energy=13.71),
    dict(head="distance", loss="ce", mIoU=65.12, msp=12.19, maxlog=2.70, entropy=15.86, energy=2.26),
    dict(head="distance", loss="fl+h", mIoU=65.10, msp=12.70, maxlog=2.63, entropy=17.37, energy=2.19),
)

#: Published StreetHazards anomaly results (AUPR, FPR95, AUROC; mIoU where given), with sources.
STREETHAZARDS_RESULTS: tuple[dict[str, object], ...] = (
    # The anomaly-seg paper's own numbers come from its per-image evaluation code.
    dict(method="MSP", AUPR=6.6, FPR95=33.7, AUROC=87.7, convention="anomaly-seg",
         source="Hendrycks et al. (via DiCNet README)"),
    dict(method="MaxLogit", AUPR=10.6, convention="anomaly-seg", source="Hendrycks et al."),
    dict(method="Deep Ensemble", AUPR=7.2, FPR95=25.4, AUROC=90.0, convention=None, source="DiCNet README"),
    dict(method="SynthCP", AUPR=9.3, FPR95=28.4, AUROC=88.5, convention=None, source="DiCNet README"),
    # PAnS and DML evaluate per image as the official code does.
    dict(method="PAnS", AUPR=8.8, FPR95=23.2, AUROC=91.1, convention="anomaly-seg", source="DiCNet README"),
    dict(method="DML", AUPR=14.7, FPR95=17.3, mIoU=53.9, convention="anomaly-seg", source="Cen et al. 2021"),
    dict(method="DiCNet", AUPR=16.2, FPR95=17.6, AUROC=93.4, convention=None, source="DiCNet README"),
    dict(
        method="reference project: R101, distance head, FL+H, entropy (pooled)",
        AUPR=17.37,
        mIoU=65.1,
        convention="pooled",
        source="reference project ckpts/ablation.csv",
    ),
    # DenseHybrid: per image, with the class "other" left out of the anomaly metrics
    # (this project: protocols per-image, ood_ignore other).
    dict(method="DenseHybrid", AUPR=30.2, mIoU=63.0, convention="per-image", source="Grcic et al. 2022"),
)  # fmt: skip

#: What the StreetHazards reference project reports for its published weights (the
#: ``streethazards-reference`` entry of `lib.weights`): its ablation row "distance head, FL+H", as
#: this project's metric keys. mIoU over 12 classes (pedestrian left out); AUPR pooled over every
#: test pixel, computed exactly (with 1600 bins it got 17.30 for entropy).
REFERENCE_WEIGHTS_RESULTS: dict[str, object] = dict(
    source="StreetHazards reference project, ckpts/ablation.csv (distance head, FL+H): 1500 test images "
    "at 1280x720, pooled AUPR",
    metrics={
        "seg/mIoU": 65.10,
        "ood/entropy/AUPR/pooled": 17.37,
        "ood/msp/AUPR/pooled": 12.70,
        "ood/maxlogit/AUPR/pooled": 2.63,
        "ood/energy/AUPR/pooled": 2.19,
    },
)
_PUBLISHED_BY_WEIGHTS = {"streethazards-reference": REFERENCE_WEIGHTS_RESULTS}


def published_results(weights: str | None) -> dict[str, object] | None:
    """The published results of a `lib.weights` entry (``{"source", "metrics"}``), or None."""
    return _PUBLISHED_BY_WEIGHTS.get(weights or "")


def comparison_table(measured: Mapping[str, float], published: Mapping[str, float]) -> str:
    """Plain text: each published metric beside ours under the same key (so the same convention: the
    key ends with it) and the difference (points). A published number we did not measure under its
    convention is not printed beside another one; the last line names those keys."""
    lines = [f"{'metric':<28}{'measured':>10}{'published':>11}{'diff':>8}"]
    missing = []
    for key, value in published.items():
        if key not in measured:
            missing.append(key)
            continue
        got = measured[key]
        lines.append(f"{key:<28}{got:>10.2f}{value:>11.2f}{got - value:>+8.2f}")
    if missing:
        lines.append(
            f"not measured under the published convention (add it with --protocols / --conventions): {', '.join(missing)}"
        )
    return "\n".join(lines)


__all__ = [
    "REFERENCE_ABLATION",
    "REFERENCE_ABLATION_CONVENTION",
    "REFERENCE_ABLATION_SOURCE",
    "REFERENCE_WEIGHTS_RESULTS",
    "STREETHAZARDS_RESULTS",
    "comparison_table",
    "published_results",
]
