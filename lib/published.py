"""Published StreetHazards numbers, quoted for comparison (this project measured none of them).

Percentages. Each table says where it comes from; compare a result only with numbers of the same
protocol (`lib.test`: pooled vs per-image).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

#: The StreetHazards reference project's ablation (its ``ckpts/ablation.csv``): DeepLabv3+
#: ResNet-101 fine-tuned from Cityscapes weights, StreetHazards test split, pooled AUPR per score.
REFERENCE_ABLATION_SOURCE = (
    "StreetHazards reference project, ckpts/ablation.csv: DeepLabv3+ ResNet-101 from Cityscapes "
    "weights, StreetHazards test split, pooled AUPR (%)"
)
REFERENCE_ABLATION: tuple[dict[str, object], ...] = (
    dict(head="standard", loss="ce", mIoU=65.30, msp=8.87, maxlog=12.68, entropy=11.15, energy=13.27),
    dict(head="standard", loss="fl+h", mIoU=64.30, msp=8.91, maxlog=13.09, entropy=11.48, energy=13.71),
    dict(head="distance", loss="ce", mIoU=65.12, msp=12.19, maxlog=2.70, entropy=15.86, energy=2.26),
    dict(head="distance", loss="fl+h", mIoU=65.10, msp=12.70, maxlog=2.63, entropy=17.37, energy=2.19),
)

#: Published StreetHazards anomaly results (AUPR, FPR95, AUROC; mIoU where given), with sources.
STREETHAZARDS_RESULTS: tuple[dict[str, object], ...] = (
    dict(method="MSP", AUPR=6.6, FPR95=33.7, AUROC=87.7, source="Hendrycks et al. (via DiCNet README)"),
    dict(method="MaxLogit", AUPR=10.6, source="Hendrycks et al."),
    dict(method="Deep Ensemble", AUPR=7.2, FPR95=25.4, AUROC=90.0, source="DiCNet README"),
    dict(method="SynthCP", AUPR=9.3, FPR95=28.4, AUROC=88.5, source="DiCNet README"),
    dict(method="PAnS", AUPR=8.8, FPR95=23.2, AUROC=91.1, source="DiCNet README"),
    dict(method="DML", AUPR=14.7, FPR95=17.3, mIoU=53.9, source="Cen et al. 2021"),
    dict(method="DiCNet", AUPR=16.2, FPR95=17.6, AUROC=93.4, source="DiCNet README"),
    dict(
        method="reference project: R101, distance head, FL+H, entropy (pooled)",
        AUPR=17.37,
        mIoU=65.1,
        source="reference project ckpts/ablation.csv",
    ),  # fmt: skip
    dict(method="DenseHybrid", AUPR=30.2, mIoU=63.0, source="Grcic et al. 2022"),
)

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
    """Plain text: each published metric, the measured value and the difference (points)."""
    lines = [f"{'metric':<28}{'measured':>10}{'published':>11}{'diff':>8}"]
    for key, value in published.items():
        got = measured.get(key, math.nan)
        lines.append(f"{key:<28}{got:>10.2f}{value:>11.2f}{got - value:>+8.2f}")
    return "\n".join(lines)


__all__ = [
    "REFERENCE_ABLATION",
    "REFERENCE_ABLATION_SOURCE",
    "REFERENCE_WEIGHTS_RESULTS",
    "STREETHAZARDS_RESULTS",
    "comparison_table",
    "published_results",
]
