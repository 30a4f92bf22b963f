"""Figures of runs and datasets: label maps in colour, examples, curves, histograms, confusion
matrices, IoU against pixel share, class distributions, loss curves; `save_run_figures` writes a
run's set; the figures of a grid of runs (`lib.grid`) from plain rows. Each ``plot_*`` returns a matplotlib Figure (matplotlib is imported when one is drawn)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib.classes import ANOMALY_EVAL_CLASSES, BDD100K_CLASSES, STREETHAZARDS_CLASSES, STREETHAZARDS_PALETTE

# ----------------------------------------------------------------------------- colours


def colorize(labels: torch.Tensor | np.ndarray, palette: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Train-id map -> RGB image with one colour per train id (`palette_for` gives a label set's);
    ignored pixels are white. Shape: (H, W) -> (H, W, 3) uint8."""
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    lut = np.full((256, 3), 255, dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return lut[np.clip(labels, 0, 255).astype(np.uint8)]


def palette_for(class_names: Sequence[str]) -> tuple[tuple[int, int, int], ...]:
    """Display colours for a label set: StreetHazards' own, the official Cityscapes colours for the 19
    Cityscapes / BDD100K classes (from cityscapesscripts), grey and cyan for the anomaly-only sets'
    in-distribution and anomaly, else matplotlib's tab20 cycle."""
    names = tuple(class_names)
    if names == STREETHAZARDS_CLASSES[: len(names)]:
        return STREETHAZARDS_PALETTE[: len(names)]
    if names == ANOMALY_EVAL_CLASSES:
        return ((128, 128, 128), STREETHAZARDS_PALETTE[-1])
    if names[:19] == BDD100K_CLASSES:
        from lib.datasets import cityscapes_label_table

        return (*cityscapes_label_table()[2], *_tab20(len(names) - 19))
    return _tab20(len(names))


def _tab20(n: int) -> tuple[tuple[int, int, int], ...]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return tuple(tuple(int(255 * v) for v in cmap(i % 20)[:3]) for i in range(n))


# ----------------------------------------------------------------------------- figures


def plot_example(
    image: torch.Tensor,
    target: torch.Tensor,
    prediction: torch.Tensor,
    anomaly_map: torch.Tensor | Mapping[str, torch.Tensor],
    *,
    score_name: str = "score",
    class_names: Sequence[str],
    model_classes: Sequence[str] | None = None,
):
    """Image, ground truth, prediction and the anomaly map of one score - or of each score when
    ``anomaly_map`` maps score names to maps - four panels per row; returns the Figure.

    Args:
        class_names: names of the ground truth's train ids (an "anomaly" one is outlined in cyan on
            every anomaly map).
        model_classes: names of the predicted classes when they are not `class_names` (a model
            evaluated on an anomaly-only set).
    """
    import matplotlib.pyplot as plt

    maps = dict(anomaly_map) if isinstance(anomaly_map, Mapping) else {score_name: anomaly_map}
    n = 3 + len(maps)
    cols = 4 if n > 4 else n
    rows = -(-n // cols)
    height, width = image.shape[-2:]
    panel_h = 4.0 * height / width + 0.6
    fig, axes = plt.subplots(
        rows, cols, figsize=(4 * cols, panel_h * rows), constrained_layout=True, squeeze=False
    )
    axes = axes.ravel()
    axes[0].imshow(image.permute(1, 2, 0).cpu().numpy())
    axes[0].set_title("image")
    axes[1].imshow(colorize(target, palette_for(class_names)))
    axes[1].set_title("ground truth (cyan = anomaly)" if "anomaly" in class_names else "ground truth")
    axes[2].imshow(colorize(prediction, palette_for(model_classes or class_names)))
    axes[2].set_title("prediction")
    anomaly = (
        (target == list(class_names).index("anomaly")).cpu().numpy()
        if "anomaly" in class_names
        else np.zeros(tuple(target.shape), dtype=bool)
    )
    for ax, (name, values) in zip(axes[3:], maps.items(), strict=False):
        im = ax.imshow(values.float().cpu().numpy(), cmap="inferno")
        ax.set_title(f"anomaly map: {name}")
        fig.colorbar(im, ax=ax, fraction=0.046)
        if anomaly.any():
            ax.contour(anomaly, levels=[0.5], colors="cyan", linewidths=0.8)
    for ax in axes:
        ax.axis("off")
    return fig


def plot_confusion_matrix(matrix: torch.Tensor | np.ndarray, class_names: Sequence[str], *, title: str = ""):
    """Row-normalised confusion matrix (percent of each true class), classes absent from the
    ground truth left out; returns the Figure."""
    import matplotlib.pyplot as plt

    cm = np.asarray(matrix.cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float64)
    present = np.flatnonzero(cm.sum(axis=1) > 0)
    cm = cm[np.ix_(present, present)]
    percent = 100.0 * cm / cm.sum(axis=1, keepdims=True)
    names = [class_names[i] for i in present]
    size = 2.0 + 0.5 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), constrained_layout=True)
    im = ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    for (i, j), v in np.ndenumerate(percent):
        if v >= 1.0:
            ax.text(
                j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if v > 60 else "black"
            )
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title(title or "confusion matrix (% of each true class)")
    fig.colorbar(im, ax=ax, fraction=0.046, label="% of the true class")
    return fig


def plot_iou_vs_share(
    iou: Sequence[float], pixel_counts: Sequence[float], class_names: Sequence[str], *, title: str = ""
):
    """Per-class IoU against the class's share of the labelled pixels (log scale): rare classes
    are usually the poorly segmented ones. Classes without pixels are left out; returns the Figure."""
    import matplotlib.pyplot as plt

    counts = np.asarray(pixel_counts, dtype=np.float64)
    iou = np.asarray(iou, dtype=np.float64)
    share = 100.0 * counts / counts.sum()
    keep = (counts > 0) & ~np.isnan(iou)
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    ax.scatter(share[keep], 100.0 * iou[keep], color="#4c72b0")
    for k in np.flatnonzero(keep):
        ax.annotate(
            class_names[k], (share[k], 100.0 * iou[k]), fontsize=8, xytext=(4, 2), textcoords="offset points"
        )
    ax.set_xscale("log")
    ax.set(xlabel="share of labelled pixels (%, log scale)", ylabel="IoU (%)", ylim=(-2, 102))
    ax.set_title(title or "per-class IoU vs pixel share")
    return fig


def plot_score_histograms(anomaly: Mapping[str, Any], *, bins: int = 60, title: str = ""):
    """Distribution of each score on inlier and anomaly pixels (each normalised to area 1), from
    pooled `lib.metrics.AnomalyMetric` states; the x range holds 99% of the pixels. Returns the Figure."""
    import matplotlib.pyplot as plt

    names = list(anomaly)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), constrained_layout=True, squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        curves = anomaly[name].curves()
        if not curves["thresholds"].size:
            ax.set_title(f"{name}: no pixels")
            continue
        values = curves["thresholds"]
        values = np.where(np.isfinite(values), values, np.nan)
        values = np.where(np.isnan(values), np.nanmin(values), values)  # the lowest bin: its edge is -inf
        pos = np.diff(curves["tps"], prepend=0).astype(np.float64)
        neg = np.diff(curves["fps"], prepend=0).astype(np.float64)
        lo, hi = _weighted_quantile(values, pos + neg, 0.005), _weighted_quantile(values, pos + neg, 0.995)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        clipped = np.clip(values, lo, hi)
        for weights, label, colour in ((neg, "inliers", "#4c72b0"), (pos, "anomalies", "#c44e52")):
            if weights.sum() > 0:
                ax.hist(clipped, bins=bins, range=(lo, hi), weights=weights / weights.sum(), alpha=0.6,
                        label=label, color=colour)  # fmt: skip
        ax.set(title=name, xlabel="score (higher = more anomalous)", ylabel="fraction of pixels")
        ax.legend(fontsize=8)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][min(np.searchsorted(cumulative, q * cumulative[-1]), len(values) - 1)])


def plot_score_bars(
    metrics: Mapping[str, float], score_names: Sequence[str], *, protocol: str = "pooled", title: str = ""
):
    """Bar plot of AUPR, AUROC and FPR95 (percent) per anomaly score; returns the Figure."""
    import matplotlib.pyplot as plt

    keys = ("AUPR", "AUROC", "FPR95")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), constrained_layout=True)
    for ax, key in zip(axes, keys, strict=True):
        values = [metrics[f"ood/{s}/{key}/{protocol}"] for s in score_names]
        bars = ax.bar(score_names, values, color=["#4c72b0", "#dd8452", "#55a868", "#c44e52"][: len(values)])
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        chance = {"AUPR": metrics.get("ood/anomaly_pixel_share"), "AUROC": 50.0}.get(key)
        if chance is not None:
            ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label="random score")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_title(f"{key} ({protocol}){' - lower is better' if key == 'FPR95' else ''}")
        ax.set_ylim(0, 105)
    if title:
        fig.suptitle(title)
    return fig


def plot_history(history: Sequence[Mapping[str, float]]):
    """Training and validation loss (and validation mIoU) per epoch; returns the Figure."""
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(10, 3.2), constrained_layout=True)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_iou.plot(epochs, [h["val_mIoU"] for h in history], marker="o", color="#55a868")
    ax_iou.set_xlabel("epoch")
    ax_iou.set_ylabel("validation mIoU (%)")
    return fig


def plot_sample(image: torch.Tensor, mask: torch.Tensor, *, class_names: Sequence[str]):
    """An image beside its colour-coded annotation, with a legend of the classes present."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), constrained_layout=True)
    axes[0].imshow(image.permute(1, 2, 0).cpu().numpy())
    palette = palette_for(class_names)
    axes[1].imshow(colorize(mask, palette))
    present = [int(c) for c in torch.unique(mask) if int(c) < len(class_names)]
    handles = [Patch(color=np.array(palette[c]) / 255, label=class_names[c]) for c in present]
    axes[1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    for ax, title in zip(axes, ("image", "annotation"), strict=True):
        ax.set_title(title)
        ax.axis("off")
    return fig


def plot_curves(anomaly: Mapping[str, Any], *, title: str = ""):
    """Precision-recall and ROC curves of each score, from pooled `AnomalyMetric` states.

    Args:
        anomaly: score name -> AnomalyMetric (e.g. ``EvaluationResult.anomaly``).
    """
    import matplotlib.pyplot as plt

    fig, (ax_pr, ax_roc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for name, metric in anomaly.items():
        curves, values = metric.curves(), metric.compute()
        ax_pr.plot(curves["recall"], curves["precision"], label=f"{name} (AUPR {100 * values['AUPR']:.1f})")
        ax_roc.plot(curves["fpr"], curves["tpr"], label=f"{name} (AUROC {100 * values['AUROC']:.1f})")
    ax_pr.set(
        xlabel="recall", ylabel="precision", title="precision-recall (pooled)", xlim=(0, 1), ylim=(0, 1.02)
    )
    ax_roc.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1)
    ax_roc.axhline(0.95, color="gray", linestyle=":", linewidth=1)
    ax_roc.set(
        xlabel="false-positive rate", ylabel="true-positive rate", title="ROC (pooled); dotted: TPR 95%"
    )
    for ax in (ax_pr, ax_roc):
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_class_distribution(
    counts: torch.Tensor | np.ndarray | Sequence[int],
    class_names: Sequence[str],
    *,
    title: str = "",
    log_scale: bool = False,
):
    """Bar chart of each class's share of the labelled pixels (percent); returns the Figure."""
    import matplotlib.pyplot as plt

    counts = np.asarray(counts, dtype=np.float64)
    if len(counts) != len(class_names):
        raise ValueError(f"{len(counts)} counts but {len(class_names)} class names")
    share = 100.0 * counts / max(counts.sum(), 1.0)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(counts) + 2), 3.6), constrained_layout=True)
    bars = ax.bar(range(len(counts)), share, color="tab:blue")
    ax.bar_label(bars, labels=[f"{s:.1f}" if s >= 0.05 else f"{s:.2g}" for s in share], fontsize=7)
    ax.set_xticks(range(len(counts)), class_names, rotation=60, ha="right")
    ax.set_ylabel("pixels (%)")
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(title or f"pixel distribution ({int(counts.sum()):,} labelled pixels)")
    return fig


# ----------------------------------------------------------------------------- a run's figures


def save_run_figures(
    result: Any,
    history: Sequence[Mapping[str, float]],
    cfg: Any,
    folder: str | Path,
    *,
    title: str,
    class_names: Sequence[str],
    model_classes: Sequence[str] | None = None,
) -> list[Path]:
    """Write the figures of one evaluated test set as PNGs in `folder`; returns their paths.

    ``example_<i>.png`` (image, ground truth, prediction, every score's anomaly map); where the set
    has anomaly labels ``scores.png`` (AUPR / AUROC / FPR95 per score) and, with the pooled protocol,
    ``curves.png`` (PR and ROC) and ``histograms.png`` (scores on inliers vs anomalies); where it has
    class labels ``confusion.png``, ``iou_vs_share.png`` and ``class_distribution.png`` (the anomaly
    included); ``history.png`` (loss curves) when `history` is given.

    Args:
        result: a `lib.test.EvaluationResult`.
        cfg: the run's `lib.config.RunConfig` (scores and protocols).
        class_names: names of the set's label ids; model_classes: of the model's outputs when
            they differ (anomaly-only sets).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = tuple(class_names)
    scores = [s for s in cfg.scores if any(k.startswith(f"ood/{s}/") for k in result.metrics)]
    pooled = "pooled" in cfg.protocols and bool(scores)
    figures = {f"example_{i}": lambda ex=ex: plot_example(ex.image, ex.target, ex.prediction, ex.scores,
                                                          class_names=names, model_classes=model_classes)
               for i, ex in enumerate(result.examples)}  # fmt: skip
    if scores:
        figures["scores"] = lambda: plot_score_bars(
            result.metrics, scores, protocol=cfg.protocols[0], title=title
        )
    if pooled:  # curves and histograms come from the pooled states
        figures.update(
            curves=lambda: plot_curves({s: result.anomaly[s] for s in scores}, title=title),
            histograms=lambda: plot_score_histograms({s: result.anomaly[s] for s in scores}, title=title),
        )
    if result.closed_set:
        known = names[: result.confusion.num_classes]
        counts = result.confusion.matrix.sum(dim=1).cpu()
        anomaly = [int(result.anomaly[scores[0]].pos_hist.sum())] if pooled and "anomaly" in names else []
        figures.update(
            confusion=lambda: plot_confusion_matrix(result.confusion.matrix, known),
            iou_vs_share=lambda: plot_iou_vs_share(result.confusion.compute()["IoU"], counts, known),
            class_distribution=lambda: plot_class_distribution(
                [*counts.tolist(), *anomaly], [*known, *(["anomaly"] if anomaly else [])],
                title=f"{title}: labelled pixels per class", log_scale=True,
            ),
        )  # fmt: skip
    if history:
        figures["history"] = lambda: plot_history(history)
    paths = []
    for name, make in figures.items():
        fig = make()
        paths.append(folder / f"{name}.png")
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths


# ----------------------------------------------------------------------------- grids of runs


def _as_float(value: Any, missing: float = math.nan) -> float:
    return missing if value in ("", None) else float(value)


def plot_setting_bars(
    summary: Sequence[Mapping[str, Any]],
    scores: Sequence[str],
    *,
    labels: Sequence[str],
    name: str,
    protocol: str,
):
    """Grouped bars: AUPR of each score per setting (error bars: ``<score>_std``), and mIoU; the Figure.

    Args:
        summary: one row per setting with ``<score>``, ``<score>_std``, ``mIoU``, ``mIoU_std``, ``n``
            (runs averaged) and ``anomaly_pixel_share`` (a random score's AUPR: a reference line).
        labels: a label per row (e.g. "head=distance, loss=fl+h").
        name, protocol: the grid's name and the AUPR protocol, for the titles.
    """
    import matplotlib.pyplot as plt

    height = 1.2 + 0.45 * len(summary) * max(1, len(scores)) / 2
    fig, (ax, ax_iou) = plt.subplots(
        1, 2, figsize=(13, height), gridspec_kw={"width_ratios": [3, 1]}, sharey=True, constrained_layout=True
    )
    y = np.arange(len(summary))
    bar = 0.8 / max(1, len(scores))
    for j, score in enumerate(scores):
        means = [_as_float(s[score]) for s in summary]
        stds = [_as_float(s.get(f"{score}_std"), 0.0) for s in summary]
        bars = ax.barh(y + (j - (len(scores) - 1) / 2) * bar, means, bar, xerr=stds, label=score, capsize=2)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    shares = [_as_float(s.get("anomaly_pixel_share")) for s in summary]
    shares = [v for v in shares if not math.isnan(v)]
    if shares:  # a random score's AUPR is the anomaly pixel share
        ax.axvline(sum(shares) / len(shares), color="gray", linestyle="--", linewidth=1, label="random score")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"AUPR (%, {protocol}) - higher is better")
    ax.legend(fontsize=8, loc="lower right")
    means = [_as_float(s["mIoU"]) for s in summary]
    stds = [_as_float(s.get("mIoU_std"), 0.0) for s in summary]
    bars = ax_iou.barh(y, means, 0.6, xerr=stds, color="#8c8c8c", capsize=2)
    ax_iou.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax_iou.set_xlabel("mIoU (%)")
    n = sorted({int(s["n"]) for s in summary})
    fig.suptitle(f"grid '{name}': mean over {'/'.join(map(str, n))} seed(s), bars = std")
    return fig


def plot_two_field_heatmaps(
    summary: Sequence[Mapping[str, Any]],
    scores: Sequence[str],
    *,
    fields: Mapping[str, Sequence[str]],
    name: str,
    protocol: str,
):
    """One heatmap per score (and mIoU) over two fields; the Figure.

    Args:
        summary: one row per setting, holding both fields' values (as strings) and the columns.
        fields: the two fields and their values in display order (rows: the first, columns: the
            second), written as in `summary`.
        name, protocol: the grid's name and the AUPR protocol, for the title.
    """
    import matplotlib.pyplot as plt

    (first, rows_v), (second, cols_v) = ((k, [str(v) for v in values]) for k, values in fields.items())
    panels = [*scores, "mIoU"]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(3.2 * len(panels), 0.5 * len(rows_v) + 2),
        constrained_layout=True,
        squeeze=False,
    )
    for ax, column in zip(axes[0], panels, strict=True):
        grid_values = np.full((len(rows_v), len(cols_v)), np.nan)
        for s in summary:
            if s[column] != "":
                grid_values[rows_v.index(str(s[first])), cols_v.index(str(s[second]))] = float(s[column])
        ax.imshow(grid_values, cmap="viridis")
        for (i, j), v in np.ndenumerate(grid_values):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="white", fontsize=8)
        ax.set_xticks(range(len(cols_v)), cols_v)
        ax.set_yticks(range(len(rows_v)), rows_v)
        ax.set_xlabel(second)
        ax.set_ylabel(first)
        ax.set_title("mIoU (%)" if column == "mIoU" else f"{column} AUPR (%)")
    fig.suptitle(f"grid '{name}' ({protocol}); brighter = higher")
    return fig


def plot_loss_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]]):
    """Validation loss per epoch of every run (label -> its ``history.csv`` rows); the Figure, or
    None when there is none."""
    import matplotlib.pyplot as plt

    if not histories:
        return None
    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    for label, history in histories.items():
        ax.plot([int(h["epoch"]) for h in history], [float(h["val_loss"]) for h in history],
                marker=".", linewidth=1, label=label)  # fmt: skip
    ax.set(xlabel="epoch", ylabel="validation loss", title="validation loss of every run")
    ax.set_yscale("log")
    if len(histories) <= 16:
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig
