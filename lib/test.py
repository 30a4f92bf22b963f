"""Evaluation in one forward pass per batch: closed-set segmentation and anomaly scores.

For every test batch the model runs once; its logits feed the confusion matrix (mIoU on the
known classes) and, for each anomaly score, AUPR, AUROC and FPR95 under two protocols, named
in every output key:

- ``pooled``: over every counted pixel of the split at once (the StreetHazards reference
  project, SegmentMeIfYouCan, Mask2Anomaly), from a constant-memory rank histogram;
- ``per-image``: per image (with the same score bins as the pooled histogram), averaged over
  the images holding both anomaly and inlier pixels (the official anomaly-seg code, PAnS, DML).

The two give different numbers; compare a result only with one of the same protocol. On request
(``EvalSpec.conventions``) the same pass also gives each official kit's numbers under its own rules,
read from its code, each under its name (``ood/<score>/<metric>/<convention>``):

- ``anomaly-seg`` (hendrycks/anomaly-seg eval_ood.py): per image, images without anomaly or without
  inlier pixels skipped, every pixel counted (void as inlier), sklearn's AP and AUROC, its FPR at the
  recall nearest 0.95;
- ``smiyc`` (SegmentMeIfYouCan road_anomaly_benchmark): pooled over the non-void pixels, its AP
  (trapezoids), AUROC and FPR at the first threshold reaching TPR 0.95; its component sIoU, PPV and
  mean F1 (`lib.metrics.ComponentMetric`) at the best-F1 threshold of that curve, per track;
- ``pytorch-ood`` (pytorch-ood 0.4 OODPerImageSegmentationMetrics): per image over the non-void
  pixels, images without in- or out-of-distribution pixels skipped, its AUPR-OUT (trapezoids with the
  (0, 1) end point) and FPR at the first ROC point with TPR >= 0.95.

Every stream is counted once: conventions that count the same pixels the same way share a state.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lib.classes import IGNORE_INDEX
from lib.config import CONVENTIONS, PROTOCOLS, SCORES, SMIYC_TRACK_NAMES
from lib.data import normalize
from lib.metrics import (
    TIE_TOLERANCE,
    AnomalyMetric,
    ComponentMetric,
    ConfusionMatrix,
    PerImageAnomalyMetric,
    best_f1_threshold,
)
from lib.scores import NonFiniteLogitsError, SMLStatistics, compute_scores, scores_and_prediction


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
    anomaly: dict[str, AnomalyMetric]  # pooled states (curves come from these)
    confusion: ConfusionMatrix
    examples: list[Example] = field(default_factory=list)
    num_images: int = 0
    class_names: tuple[str, ...] = ()  # names of the labels' train ids (figures)
    closed_set: bool = True  # the set had class labels: seg/ metrics and the confusion matrix count


@dataclass(frozen=True)
class EvalSpec:
    """What an evaluation measures, and how: everything `evaluate` needs but the model, the data and
    the device. One line builds it for a registry dataset, with its labels and published protocol::

        spec = EvalSpec.for_dataset("streethazards", scores=("msp", "entropy"), protocols=("per-image",))
        result = evaluate(model, loader, spec, device="cuda")

    Attributes:
        num_classes: classes the model predicts (13 for StreetHazards; the anomaly is not one).
        class_names: names of the masks' train ids (for the per-class IoU keys).
        anomaly_id: train id of anomaly pixels, the positives of the anomaly metrics; None for a set
            without anomaly labels (then `scores` must be empty).
        closed_set: the masks hold the model's class ids (mIoU and the confusion matrix count); False
            for the anomaly-only sets (LostAndFound, RoadAnomaly: 0 in-distribution, 1 anomaly).
        scores: anomaly scores to evaluate (`lib.scores`).
        protocols: ``pooled`` and/or ``per-image`` (see the module docstring).
        miou_exclude: class names left out of the mean IoU.
        ood_ignore: class names whose pixels the anomaly metrics skip (none in the official protocol;
            DenseHybrid skips "other").
        flip, scales, window: test-time augmentation and sliding-window inference (`predict_logits`);
            the defaults run each image once, whole.
        conventions: official kits whose rules the anomaly metrics also follow (`CONVENTIONS`; module
            docstring).
        smiyc_track: SegmentMeIfYouCan track of the component metrics, ``anomaly`` or ``obstacle``.
        component_scores: scores that get the SegmentMeIfYouCan component metrics
            (``ood/<score>/{sIoU,PPV,mean_F1,threshold}/smiyc``); with ``smiyc`` among the conventions
            and none named, every score.

    Raises:
        ValueError: a combination that cannot be measured (scores without anomaly labels, unknown
            class names, protocols, conventions or track); the message names it.
    """

    num_classes: int
    class_names: tuple[str, ...]
    anomaly_id: int | None
    closed_set: bool = True
    scores: tuple[str, ...] = SCORES
    protocols: tuple[str, ...] = PROTOCOLS
    miou_exclude: tuple[str, ...] = ()
    ood_ignore: tuple[str, ...] = ()
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    window: tuple[int, int] | None = None
    component_scores: tuple[str, ...] = ()
    conventions: tuple[str, ...] = ()
    smiyc_track: str = "anomaly"

    def __post_init__(self) -> None:
        fields = (
            "class_names",
            "scores",
            "protocols",
            "miou_exclude",
            "ood_ignore",
            "component_scores",
            "conventions",
        )
        for name in fields:
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if self.window is not None:
            object.__setattr__(self, "window", tuple(self.window))
        if self.anomaly_id is None and self.scores:
            raise ValueError(
                f"scores {list(self.scores)} need anomaly labels; this set has none (anomaly_id=None)"
            )
        if not self.closed_set and self.miou_exclude:
            raise ValueError(
                "miou_exclude needs class labels; an anomaly-only set (closed_set=False) has none"
            )
        known = self.class_names[: self.num_classes]
        unknown = [n for n in self.miou_exclude if n not in known]
        if unknown:
            raise ValueError(f"miou_exclude names unknown class(es) {unknown}; valid: {list(known)}")
        unknown = [n for n in self.ood_ignore if n not in self.class_names]
        unknown += [p for p in self.protocols if p not in PROTOCOLS]
        if unknown:
            raise ValueError(
                f"unknown class or protocol {unknown}; classes: {list(self.class_names)}, protocols: {PROTOCOLS}"
            )
        unknown = [n for n in self.component_scores if n not in self.scores]
        if unknown:
            raise ValueError(f"component_scores {unknown} must be among score_names {list(self.scores)}")
        unknown = [c for c in self.conventions if c not in CONVENTIONS]
        if unknown or self.smiyc_track not in SMIYC_TRACK_NAMES:
            raise ValueError(
                f"unknown convention(s) {unknown} or smiyc_track {self.smiyc_track!r}; conventions: "
                f"{list(CONVENTIONS)}, tracks: {list(SMIYC_TRACK_NAMES)}"
            )

    @property
    def component_score_names(self) -> tuple[str, ...]:
        """The scores that get the component metrics: `component_scores`, else every score with smiyc."""
        if self.component_scores:
            return self.component_scores
        return self.scores if "smiyc" in self.conventions else ()

    def streams(self) -> dict[str, tuple[str, str, str]]:
        """Each output protocol or convention -> (pixels counted, aggregation, rules).

        Pixels: ``counted`` (not void, not `ood_ignore`), ``non-void`` (the same when nothing is
        ignored) or ``all``; aggregation: ``pooled`` or ``per-image``; rules: `lib.metrics.RULES`.
        """
        non_void = "non-void" if self.ood_ignore else "counted"
        plan = {
            "pooled": ("counted", "pooled", "anomaly-seg"),
            "per-image": ("counted", "per-image", "anomaly-seg"),
            "anomaly-seg": ("all", "per-image", "anomaly-seg"),
            "smiyc": (non_void, "pooled", "smiyc"),
            "pytorch-ood": (non_void, "per-image", "pytorch-ood"),
        }
        wanted = [*self.protocols, *self.conventions]
        if self.component_score_names and "smiyc" not in wanted:
            wanted.append("smiyc")  # the components' threshold comes from the kit's pooled curve
        return {name: plan[name] for name in wanted}

    @classmethod
    def for_dataset(cls, name: str, *, num_classes: int | None = None, **options) -> EvalSpec:
        """The spec of registry dataset `name` (`lib.registry`): its labels, its published mIoU
        exclusions, every `SCORES` where it has anomaly labels (none where it has not), `options`
        on top. `num_classes` defaults to the dataset's own classes; an anomaly-only set needs the
        model's count."""
        from lib.registry import dataset_spec

        spec = dataset_spec(name)
        if num_classes is None:
            if spec.num_known is None:
                raise ValueError(f"{name} is an anomaly-only set: give num_classes, the model's class count")
            num_classes = spec.num_known
        defaults = dict(
            scores=SCORES if spec.anomaly_id is not None else (),
            miou_exclude=spec.miou_exclude if spec.closed_set else (),
        )
        return cls(num_classes=num_classes, **spec.label_args, **{**defaults, **options})


#: `evaluate`'s keywords before `EvalSpec` (they still work, as the spec's fields).
_SPEC_KEYWORDS = {"score_names": "scores", **{f: f for f in EvalSpec.__dataclass_fields__}}


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    *,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    window: tuple[int, int] | None = None,
    overlap: float = 1 / 3,
) -> torch.Tensor:
    """Logits at the input resolution, with optional test-time augmentation and tiling.

    Augmented predictions are averaged as logits (so every score sees one set of logits).

    Args:
        model: maps normalised images to logits.
        images: normalised images. Shape (B, 3, H, W).
        flip: also predict the horizontally flipped image and average.
        scales: resize factors; each prediction is resized back to (H, W) bilinearly.
        window: (height, width) of the tiles for sliding-window inference on inputs too large
            for memory; None runs the whole image at once.
        overlap: fraction of a tile shared with its neighbour.

    Returns:
        Logits. Shape (B, C, H, W).
    """
    height, width = images.shape[-2:]
    total, count = None, 0
    for scale in scales:
        x = images
        if scale != 1.0:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            x = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        for flipped in (False, True) if flip else (False,):
            inp = x.flip(-1) if flipped else x
            out = _tiled(model, inp, window, overlap) if window else model(inp)
            out = out.flip(-1) if flipped else out
            if out.shape[-2:] != (height, width):
                out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False)
            total = out.float() if total is None else total + out.float()
            count += 1
    return total if count == 1 else total / count


def _tiled(model: nn.Module, images: torch.Tensor, window: tuple[int, int], overlap: float) -> torch.Tensor:
    """Sliding-window logits: tiles overlap, their logits are averaged where they do."""
    height, width = images.shape[-2:]
    win_h, win_w = min(window[0], height), min(window[1], width)
    stride_h = max(1, int(win_h * (1 - overlap)))
    stride_w = max(1, int(win_w * (1 - overlap)))
    tops = list(range(0, height - win_h + 1, stride_h))
    lefts = list(range(0, width - win_w + 1, stride_w))
    if tops[-1] != height - win_h:
        tops.append(height - win_h)
    if lefts[-1] != width - win_w:
        lefts.append(width - win_w)
    total = count = None
    for top in tops:
        for left in lefts:
            out = model(images[..., top : top + win_h, left : left + win_w]).float()
            if total is None:
                total = out.new_zeros(out.shape[0], out.shape[1], height, width)
                count = out.new_zeros(1, 1, height, width)
            total[..., top : top + win_h, left : left + win_w] += out
            count[..., top : top + win_h, left : left + win_w] += 1
    return total / count


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    spec: EvalSpec | None = None,
    *,
    device: torch.device | str,
    sml_stats: SMLStatistics | None = None,
    keep_examples: int = 0,
    progress: bool = True,
    **options,
) -> EvaluationResult:
    """Evaluate segmentation and every anomaly score of `spec` with one forward pass per batch.

    Args:
        model: maps normalised images (B, 3, H, W) to logits (B, num_classes, H, W).
        batches: yields (uint8 images (B, 3, H, W), int64 masks (B, H, W)), e.g. a DataLoader.
        spec: what to measure and how (`EvalSpec`, e.g. ``EvalSpec.for_dataset("streethazards")``).
        device: where the model runs and the metrics accumulate.
        sml_stats: training-split statistics for the ``sml`` score (`fit_sml_statistics`).
        keep_examples: keep the first N images with their predictions and score maps.
        options: instead of `spec`, its fields as keywords (``num_classes=13, class_names=...,
            anomaly_id=13, score_names=...``; the calls written before `EvalSpec` keep working).

    The component metrics' threshold is known only once every pixel has been seen, so their score
    maps are kept in a temporary file (4 bytes per pixel and score, deleted at the end) and a
    second, model-free pass over that file finds the components.

    Returns:
        EvaluationResult whose ``metrics`` hold, in percent: ``seg/mIoU``, ``seg/minIoU``,
        ``seg/maxIoU``, ``seg/pixel_accuracy``, ``seg/mean_class_accuracy``,
        ``seg/IoU/<class>``, ``ood/<score>/{AUPR,AUROC,FPR95}/<protocol>`` and
        ``ood/anomaly_pixel_share`` (pooled: the AUPR of a random score).

    Raises:
        ValueError: an impossible spec (see `EvalSpec`), both a spec and keywords, or no batch.
    """
    if spec is None:
        unknown = sorted(set(options) - set(_SPEC_KEYWORDS))
        if unknown:
            raise TypeError(
                f"evaluate() got unexpected keyword(s) {unknown}; EvalSpec fields: {list(_SPEC_KEYWORDS)}"
            )
        spec = EvalSpec(**{_SPEC_KEYWORDS[k]: v for k, v in options.items()})
    elif options:
        raise ValueError(
            f"evaluate() got a spec and the options {sorted(options)}: put them in the spec "
            "(dataclasses.replace(spec, ...))"
        )
    num_classes, class_names, anomaly_id, closed_set = (
        spec.num_classes, spec.class_names, spec.anomaly_id, spec.closed_set,
    )  # fmt: skip
    score_names, miou_exclude, ood_ignore = spec.scores, spec.miou_exclude, spec.ood_ignore
    flip, scales, window = spec.flip, spec.scales, spec.window
    component_scores = spec.component_score_names
    device = torch.device(device)
    ignored_ids = torch.tensor([class_names.index(n) for n in ood_ignore], dtype=torch.long, device=device)
    model.eval()
    confusion = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, device=device)
    outputs = spec.streams()  # protocol or convention -> (pixels, aggregation, rules)
    states: dict[tuple[str, str], dict[str, AnomalyMetric | PerImageAnomalyMetric]] = {}
    for pixels, aggregation in dict.fromkeys((p, a) for p, a, _ in outputs.values()):
        if aggregation == "pooled":
            states[pixels, aggregation] = {name: AnomalyMetric(device=device) for name in score_names}
        else:
            rules = tuple(dict.fromkeys(r for p, a, r in outputs.values() if (p, a) == (pixels, aggregation)))
            states[pixels, aggregation] = {
                name: PerImageAnomalyMetric(rules=rules, device=device) for name in score_names
            }
    examples: list[Example] = []
    num_images = 0

    def pixel_masks_of(masks: torch.Tensor) -> dict[str, torch.Tensor | None]:
        non_void = masks != IGNORE_INDEX
        return {"counted": non_void & ~torch.isin(masks, ignored_ids), "non-void": non_void, "all": None}

    stores = {name: _MapStore() for name in component_scores}
    total = len(batches) if hasattr(batches, "__len__") else None
    batch_iter = tqdm(batches, total=total, desc="evaluate", disable=not progress, leave=False)
    for batch_index, (images, masks) in enumerate(batch_iter):
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        logits = predict_logits(model, normalize(images), flip=flip, scales=scales, window=window)
        try:
            prediction, scores = scores_and_prediction(logits, tuple(score_names), sml_stats=sml_stats)
        except NonFiniteLogitsError as error:
            raise NonFiniteLogitsError(
                f"test batch {batch_index} (image {num_images + error.image} of the split): {error}",
                error.image,
                error.pixel,
            ) from None
        # Anomaly pixels are not a known class: they count for the anomaly metrics only.
        is_anomaly = (
            masks == anomaly_id if anomaly_id is not None else torch.zeros_like(masks, dtype=torch.bool)
        )
        if closed_set:
            known_target = torch.where(is_anomaly, torch.full_like(masks, IGNORE_INDEX), masks)
            confusion.update(prediction, known_target)
        pixel_masks = pixel_masks_of(masks)
        for (pixels, aggregation), by_score in states.items():
            if aggregation == "pooled" and (pixels, "per-image") in states:
                continue  # the per-image update below counts these pixels into it too: one pass
            pooled = states.get((pixels, "pooled")) if aggregation == "per-image" else None
            for name, score in scores.items():
                extra = {"pooled": pooled[name]} if pooled else {}
                by_score[name].update(score, is_anomaly, pixel_masks[pixels], **extra)
        for name, store in stores.items():
            store.append(scores[name], torch.where(pixel_masks["non-void"], is_anomaly.to(torch.uint8), 255))
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
    _resolve_pooled_ties(model, batches, spec, states, pixel_masks_of, device=device, sml_stats=sml_stats)
    components = {}
    smiyc_curve = states[outputs["smiyc"][:2]] if stores else {}
    for name, store in stores.items():
        components[name] = ComponentMetric(best_f1_threshold(smiyc_curve[name]), track=spec.smiyc_track)
        for score, labels in store.read():
            components[name].update(score, labels == 1, labels != 255)
        store.close()
    metrics = _flatten(
        confusion if closed_set else None,
        {output: (states[pixels, aggregation], rules) for output, (pixels, aggregation, rules) in outputs.items()},
        class_names[:num_classes], miou_exclude,
    )  # fmt: skip
    for name, metric in components.items():
        values = metric.compute()
        for key in ("sIoU", "PPV", "mean_F1"):
            metrics[f"ood/{name}/{key}/smiyc"] = 100.0 * values[key]
        metrics[f"ood/{name}/threshold/smiyc"] = values["threshold"]
    # Curves and figures read the project's pooled state (else the kit's pooled one, same pixels).
    pooled = states.get(("counted", "pooled")) or next(
        (by_score for (_, aggregation), by_score in states.items() if aggregation == "pooled"), {}
    )
    return EvaluationResult(metrics, pooled, confusion, examples, num_images, tuple(class_names), closed_set)


def _resolve_pooled_ties(model, batches, spec, states, pixel_masks_of, *, device, sml_stats) -> None:
    """Second, exact pass for the pooled states whose bins tie scores that matter (`AnomalyMetric.
    resolve_ties`): rare (a cluster of scores far from the offset inside one bin), said loudly, and
    exact afterwards. Needs `batches` to be iterable twice (a DataLoader or a list)."""
    todo = [
        (pixels, name, metric)
        for (pixels, aggregation), by_score in states.items()
        if aggregation == "pooled"
        for name, metric in by_score.items()
        if metric.tie_bound() > TIE_TOLERANCE
    ]
    if not todo:
        return
    what = ", ".join(sorted({name for _, name, _ in todo}))
    if iter(batches) is batches:
        warnings.warn(
            f"evaluate: the pooled bins of {what} tie scores that matter and the batches can be read only once, "
            "so the pooled metrics are not resolved exactly (pass a DataLoader or a list)",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    n_bins = sum(metric.resolve_ties() for _, _, metric in todo)  # every state, two may share a score
    warnings.warn(
        f"evaluate: the pooled bins of {what} tie anomaly and inlier scores that differ beyond {TIE_TOLERANCE:g} "
        f"of AUPR / AUROC / FPR95 ({n_bins} bins); ranking those bins exactly in a second pass "
        "over the test set",
        RuntimeWarning,
        stacklevel=3,
    )
    names = tuple(dict.fromkeys(name for _, name, _ in todo))
    for images, masks in batches:
        images, masks = images.to(device), masks.to(device)
        logits = predict_logits(
            model, normalize(images), flip=spec.flip, scales=spec.scales, window=spec.window
        )
        scores = compute_scores(logits, names, sml_stats=sml_stats)
        pixel_masks = pixel_masks_of(masks)
        is_anomaly = masks == spec.anomaly_id
        for pixels, name, metric in todo:
            metric.update(scores[name], is_anomaly, pixel_masks[pixels])


@torch.no_grad()
def fit_sml_statistics(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_classes: int,
    device: torch.device | str,
    progress: bool = True,
) -> SMLStatistics:
    """Max-logit statistics per predicted class over labelled pixels (one pass, e.g. the training split)."""
    model.eval()
    stats = SMLStatistics(num_classes, device=device)
    total = len(batches) if hasattr(batches, "__len__") else None
    for images, masks in tqdm(batches, total=total, desc="SML statistics", disable=not progress, leave=False):
        logits = model(normalize(images.to(device)))
        stats.update(logits, valid=masks.to(device) != IGNORE_INDEX)
    return stats


class _MapStore:
    """Per-image score maps and labels appended to a temporary file, read back image by image."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()
        self.shapes: list[tuple[int, int]] = []

    def append(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Shape: (B, H, W) float scores, (B, H, W) uint8 labels (0 inlier, 1 anomaly, 255 skip)."""
        for score, label in zip(scores.float().cpu().numpy(), labels.cpu().numpy(), strict=True):
            self.file.write(score.tobytes())
            self.file.write(label.astype(np.uint8).tobytes())
            self.shapes.append(score.shape)

    def read(self):
        self.file.seek(0)
        for shape in self.shapes:
            n = shape[0] * shape[1]
            score = np.frombuffer(self.file.read(4 * n), dtype=np.float32).reshape(shape)
            label = np.frombuffer(self.file.read(n), dtype=np.uint8).reshape(shape)
            yield score, label

    def close(self) -> None:
        self.file.close()


def _flatten(
    confusion: ConfusionMatrix | None,
    anomaly: dict[str, tuple[dict[str, AnomalyMetric | PerImageAnomalyMetric], str]],
    class_names: Sequence[str],
    miou_exclude: Sequence[str],
) -> dict[str, float]:
    """Flat metrics in percent; ``anomaly``: protocol or convention -> (its state per score, its rules)."""
    metrics: dict[str, float] = {}
    if confusion is not None:
        exclude = [class_names.index(n) for n in miou_exclude]
        seg = confusion.compute(exclude=exclude)
        metrics.update(
            {f"seg/{key}": 100.0 * float(seg[key])
             for key in ("mIoU", "minIoU", "maxIoU", "pixel_accuracy", "mean_class_accuracy", "mean_F1")}
        )  # fmt: skip
        for name, iou, f1 in zip(class_names, seg["IoU"], seg["F1"], strict=True):
            metrics[f"seg/IoU/{name}"] = 100.0 * float(iou)
            metrics[f"seg/F1/{name}"] = 100.0 * float(f1)
    for protocol, (by_score, rules) in anomaly.items():
        for score, metric in by_score.items():
            values = metric.compute(rules)
            for key in ("AUPR", "AUROC", "FPR95"):
                metrics[f"ood/{score}/{key}/{protocol}"] = 100.0 * float(values[key])
            if protocol == "pooled":
                # The AUPR of a score that ranks at random: the share of anomaly pixels.
                metrics["ood/anomaly_pixel_share"] = (
                    100.0 * values["n_pos"] / max(values["n_pos"] + values["n_neg"], 1)
                )
    return metrics


def results_table(metrics: dict[str, float], score_names: Sequence[str] = SCORES) -> str:
    """A plain-text table of mIoU and each score's AUPR / AUROC / FPR95 (percent), per protocol; a
    set without class labels has no mIoU line, one without anomaly labels no score table."""
    head = []
    if "seg/mIoU" in metrics:
        head.append(
            f"mIoU {metrics['seg/mIoU']:.2f}   pixel accuracy {metrics['seg/pixel_accuracy']:.2f}   "
            f"mean class accuracy {metrics['seg/mean_class_accuracy']:.2f}   mean F1 {metrics['seg/mean_F1']:.2f}"
        )
    if "ood/anomaly_pixel_share" in metrics:
        head.append(
            f"anomaly pixels {metrics['ood/anomaly_pixel_share']:.2f} (= pooled AUPR of a random score)"
        )
    lines = ["   ".join(head)]
    for protocol in (*PROTOCOLS, *CONVENTIONS):
        if not any(key.endswith(f"/{protocol}") for key in metrics):
            continue
        with_components = any(f"ood/{name}/sIoU/{protocol}" in metrics for name in score_names)
        columns = ("AUPR", "AUROC", "FPR95", *(("sIoU", "PPV", "mean_F1") if with_components else ()))
        lines += [
            "",
            f"{'score':<10}" + "".join(f"{c:>8}" for c in columns) + f"   ({protocol}: {_WHERE[protocol]})",
        ]
        for name in score_names:
            if f"ood/{name}/AUPR/{protocol}" not in metrics:
                continue
            row = [metrics.get(f"ood/{name}/{k}/{protocol}", math.nan) for k in columns]
            lines.append(f"{name:<10}" + "".join(f"{v:8.2f}" for v in row))
    return "\n".join(lines)


#: How each protocol or convention counts, for the printed table.
_WHERE = {
    "pooled": "over all test pixels",
    "per-image": "mean over images with anomalies",
    "anomaly-seg": "official StreetHazards code: per image, void as inlier",
    "smiyc": "SegmentMeIfYouCan kit: pooled, trapezoid AP, first TPR >= 0.95",
    "pytorch-ood": "pytorch-ood 0.4: per image, trapezoid AUPR-OUT",
}
