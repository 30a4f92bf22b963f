"""Evaluation in one forward pass per batch: closed-set segmentation and anomaly scores.

For every test batch the model runs once; its logits feed the confusion matrix (mIoU on the
known classes) and, for each anomaly score, a constant-memory rank histogram from which
AUPR, AUROC and FPR95 are computed POOLED over every labelled pixel of the split (the
protocol of the StreetHazards reference project; the official anomaly-seg code averages
per image instead, which gives different numbers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from lib.classes import ANOMALY_ID, IGNORE_INDEX, STREETHAZARDS_CLASSES
from lib.config import SCORES
from lib.data import normalize
from lib.metrics import AnomalyMetric, ConfusionMatrix
from lib.scores import compute_scores

PROTOCOL = "pooled"


@dataclass
class Example:
    """One test image with what the model made of it (CPU tensors, for figures)."""

    image: torch.Tensor  # (3, H, W) uint8
    target: torch.Tensor  # (H, W) int64 train ids
    prediction: torch.Tensor  # (H, W) int64
    scores: dict[str, torch.Tensor]  # name -> (H, W) float32


@dataclass
class EvaluationResult:
    """Flat metrics (percent) plus the streaming states, for tables, CSV rows and curves."""

    metrics: dict[str, float]
    anomaly: dict[str, AnomalyMetric]
    confusion: ConfusionMatrix
    examples: list[Example] = field(default_factory=list)
    num_images: int = 0


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_classes: int,
    device: torch.device | str,
    score_names: Sequence[str] = SCORES,
    class_names: Sequence[str] = STREETHAZARDS_CLASSES,
    anomaly_id: int = ANOMALY_ID,
    miou_exclude: Sequence[str] = (),
    keep_examples: int = 0,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate segmentation and every anomaly score with one forward pass per batch.

    Args:
        model: maps normalised images (B, 3, H, W) to logits (B, num_classes, H, W).
        batches: yields (uint8 images (B, 3, H, W), int64 masks (B, H, W)), e.g. a DataLoader.
        num_classes: classes the model predicts (13 for StreetHazards; the anomaly is not one).
        score_names: anomaly scores to evaluate (see `lib.scores`).
        class_names: names of the train ids (for the per-class IoU keys).
        anomaly_id: train id of anomaly pixels (the positives of the anomaly metrics).
        miou_exclude: class names left out of the mean IoU.
        keep_examples: keep the first N images with their predictions and score maps.

    Returns:
        EvaluationResult whose ``metrics`` hold, in percent: ``seg/mIoU``, ``seg/minIoU``,
        ``seg/maxIoU``, ``seg/pixel_accuracy``, ``seg/mean_class_accuracy``,
        ``seg/IoU/<class>``, ``ood/<score>/{AUPR,AUROC,FPR95}/pooled`` and
        ``ood/anomaly_pixel_share`` (the AUPR of a random score).
    """
    device = torch.device(device)
    unknown = [n for n in miou_exclude if n not in class_names[:num_classes]]
    if unknown:
        raise ValueError(
            f"miou_exclude names unknown class(es) {unknown}; valid: {list(class_names[:num_classes])}"
        )
    model.eval()
    confusion = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, device=device)
    anomaly = {name: AnomalyMetric(device=device) for name in score_names}
    examples: list[Example] = []
    num_images = 0
    total = len(batches) if hasattr(batches, "__len__") else None
    for images, masks in tqdm(batches, total=total, desc="evaluate", disable=not progress, leave=False):
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        logits = model(normalize(images))
        prediction = logits.argmax(dim=1)
        # Anomaly pixels are not a known class: they count for the anomaly metrics only.
        known_target = torch.where(masks == anomaly_id, torch.full_like(masks, IGNORE_INDEX), masks)
        confusion.update(prediction, known_target)
        labelled = masks != IGNORE_INDEX
        is_anomaly = masks == anomaly_id
        scores = compute_scores(logits, tuple(score_names))
        for name, score in scores.items():
            anomaly[name].update(score, is_anomaly, labelled)
        for i in range(min(keep_examples - len(examples), images.shape[0])):
            examples.append(
                Example(
                    image=images[i].cpu(),
                    target=masks[i].cpu(),
                    prediction=prediction[i].cpu(),
                    scores={n: s[i].cpu() for n, s in scores.items()},
                )
            )
        num_images += images.shape[0]
    if num_images == 0:
        raise ValueError("evaluate() got no batch: the test split is empty")
    metrics = _flatten(confusion, anomaly, class_names[:num_classes], miou_exclude)
    return EvaluationResult(metrics, anomaly, confusion, examples, num_images)


def _flatten(
    confusion: ConfusionMatrix,
    anomaly: dict[str, AnomalyMetric],
    class_names: Sequence[str],
    miou_exclude: Sequence[str],
) -> dict[str, float]:
    exclude = [class_names.index(n) for n in miou_exclude]
    seg = confusion.compute(exclude=exclude)
    metrics = {
        f"seg/{key}": 100.0 * float(seg[key])
        for key in ("mIoU", "minIoU", "maxIoU", "pixel_accuracy", "mean_class_accuracy")
    }
    for name, iou in zip(class_names, seg["IoU"], strict=True):
        metrics[f"seg/IoU/{name}"] = 100.0 * float(iou)
    for score, metric in anomaly.items():
        values = metric.compute()
        for key in ("AUPR", "AUROC", "FPR95"):
            metrics[f"ood/{score}/{key}/{PROTOCOL}"] = 100.0 * float(values[key])
    if anomaly:
        # The AUPR of a score that ranks at random: the share of anomaly pixels.
        n_pos, n_neg = values["n_pos"], values["n_neg"]
        metrics["ood/anomaly_pixel_share"] = 100.0 * n_pos / max(n_pos + n_neg, 1)
    return metrics


def results_table(metrics: dict[str, float], score_names: Sequence[str] = SCORES) -> str:
    """A small plain-text table of mIoU and each score's AUPR / AUROC / FPR95 (percent)."""
    lines = [
        f"mIoU {metrics['seg/mIoU']:.2f}   pixel accuracy {metrics['seg/pixel_accuracy']:.2f}   "
        f"anomaly pixels {metrics['ood/anomaly_pixel_share']:.2f} (= AUPR of a random score)",
        "",
    ]
    lines.append(f"{'score':<10}{'AUPR':>8}{'AUROC':>8}{'FPR95':>8}   ({PROTOCOL} over all test pixels)")
    for name in score_names:
        row = [metrics[f"ood/{name}/{k}/{PROTOCOL}"] for k in ("AUPR", "AUROC", "FPR95")]
        lines.append(f"{name:<10}" + "".join(f"{v:8.2f}" for v in row))
    return "\n".join(lines)
