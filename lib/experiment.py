"""The steps of a run, and `run` that chains them: data -> model -> training -> evaluation -> files.

The notebook calls the steps one by one; ``scripts/main.py`` calls `run`.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from lib.classes import NUM_KNOWN_CLASSES
from lib.config import RunConfig
from lib.data import (
    StreetHazards,
    class_pixel_counts,
    inverse_frequency_weights,
    make_loader,
    train_transforms,
    validate_split,
)
from lib.losses import SegmentationLoss
from lib.test import EvaluationResult, evaluate, results_table
from lib.train import fit
from lib.utils import append_csv_row, atomic_write_bytes, next_run_dir, pick_device, seed_everything
from network import build_model, load_pretrained


@dataclass
class Datasets:
    train: StreetHazards
    val: StreetHazards
    test: StreetHazards


def prepare_data(cfg: RunConfig) -> Path:
    """Make sure the dataset is on disk (generating the synthetic one if absent) and valid.

    Raises:
        lib.data.DatasetError: the first problem found, naming the file and the fix.
    """
    root = Path(cfg.data_root)
    if cfg.dataset == "synthetic":
        from lib.synthetic import generate_streethazards

        height, width = cfg.image_size
        generate_streethazards(
            root,
            n_train=cfg.n_train,
            n_val=cfg.n_val,
            n_test=cfg.n_test,
            height=height,
            width=width,
            seed=cfg.data_seed,
            progress=cfg.progress,
        )
    for split in ("train", "val", "test"):
        validate_split(root, split, decode=cfg.validate_data)
    return root


def make_datasets(cfg: RunConfig) -> Datasets:
    """Training split with random crop + flip; validation and test at full resolution."""
    root = Path(cfg.data_root)
    return Datasets(
        train=StreetHazards(root, "train", transforms=train_transforms(cfg.crop_size)),
        val=StreetHazards(root, "val"),
        test=StreetHazards(root, "test", limit=cfg.max_eval_images),
    )


def make_model(cfg: RunConfig) -> nn.Module:
    """The DeepLabv3+ the config describes, optionally initialised from a checkpoint."""
    model = build_model(
        arch="deeplabv3plus",
        backbone=cfg.backbone,
        head=cfg.head,
        num_classes=NUM_KNOWN_CLASSES,
        output_stride=cfg.output_stride,
        pretrained_backbone=cfg.pretrained_backbone,
    )
    if cfg.checkpoint:
        load_pretrained(model, cfg.checkpoint)
    return model


def make_criterion(cfg: RunConfig, train_set: StreetHazards) -> SegmentationLoss:
    weights = None
    if cfg.class_weights:
        weights = inverse_frequency_weights(class_pixel_counts(train_set)[:NUM_KNOWN_CLASSES])
    return SegmentationLoss(
        cfg.loss, gamma_focal=cfg.gamma_focal, entropy_weight=cfg.entropy_weight, class_weights=weights
    )


def save_figures(
    result: EvaluationResult, history: list[dict[str, float]], cfg: RunConfig, run_dir: Path
) -> list[Path]:
    """Write the qualitative panels, the score bar plot and the loss curves as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lib.utils import plot_example, plot_history, plot_score_bars

    paths = []
    best_score = max(cfg.scores, key=lambda s: result.metrics[f"ood/{s}/AUPR/pooled"])
    for i, ex in enumerate(result.examples):
        fig = plot_example(ex.image, ex.target, ex.prediction, ex.scores[best_score], score_name=best_score)
        paths.append(run_dir / f"example_{i}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    title = f"{cfg.backbone}, {cfg.head} head, {cfg.loss} - {cfg.dataset} test split"
    fig = plot_score_bars(result.metrics, cfg.scores, title=title)
    paths.append(run_dir / "scores.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    if history:
        fig = plot_history(history)
        paths.append(run_dir / "history.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def git_commit() -> str:
    """Short hash of the checked-out commit ('' outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def make_loaders(cfg: RunConfig, data: Datasets) -> dict[str, DataLoader]:
    """Shuffled training loader (full batches) and ordered validation / test loaders."""
    common = dict(num_workers=cfg.num_workers, seed=cfg.seed)
    return {
        "train": make_loader(
            data.train,
            batch_size=cfg.batch_size,
            shuffle=True,
            drop_last=len(data.train) > cfg.batch_size,
            **common,
        ),
        "val": make_loader(data.val, batch_size=cfg.eval_batch_size, shuffle=False, **common),
        "test": make_loader(data.test, batch_size=cfg.eval_batch_size, shuffle=False, **common),
    }


def results_row(cfg: RunConfig, result: EvaluationResult, *, run_dir: Path, seconds: float) -> dict[str, Any]:
    """One CSV row: run, data, commit, wall time, every config field and every metric (percent)."""
    config = {k: " ".join(map(str, v)) if isinstance(v, tuple) else v for k, v in cfg.to_dict().items()}
    return {
        "run": run_dir.name,
        "data": f"{cfg.dataset} test split",
        "commit": git_commit(),
        "wall_seconds": round(seconds, 1),
        "test_images": result.num_images,
        **config,
        **{k: round(v, 4) for k, v in result.metrics.items()},
    }


def run(cfg: RunConfig, *, keep_examples: int = 3) -> dict[str, Any]:
    """Data, model, training, evaluation, and every output file of one run.

    Writes under ``cfg.out_dir``: ``runs/<name>/{config.json,best.pt,history.csv,*.png}`` and one
    row in ``results.csv``. Prints the results table.

    Returns:
        The results row (config fields, metrics in percent, run folder, wall time).
    """
    start = time.perf_counter()
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    prepare_data(cfg)
    data = make_datasets(cfg)
    print(
        f"data: {cfg.dataset} at {cfg.data_root} - train {len(data.train)}, val {len(data.val)}, "
        f"test {len(data.test)} images; device: {device}"
    )
    run_dir = next_run_dir(cfg.out_dir, cfg.run_name)
    atomic_write_bytes(run_dir / "config.json", cfg.to_json().encode())
    model = make_model(cfg).to(device)
    criterion = make_criterion(cfg, data.train).to(device)
    loaders = make_loaders(cfg, data)
    history = fit(
        model, loaders["train"], loaders["val"], criterion, cfg,
        device=device, run_dir=run_dir, num_classes=NUM_KNOWN_CLASSES,
    )  # fmt: skip
    result = evaluate(
        model, loaders["test"], num_classes=NUM_KNOWN_CLASSES, device=device, score_names=cfg.scores,
        miou_exclude=cfg.miou_exclude, keep_examples=keep_examples, progress=cfg.progress,
    )  # fmt: skip
    save_figures(result, history, cfg, run_dir)
    seconds = time.perf_counter() - start
    row = results_row(cfg, result, run_dir=run_dir, seconds=seconds)
    append_csv_row(Path(cfg.out_dir) / "results.csv", row)
    print(f"\nResults on the {cfg.dataset} test split ({result.num_images} images, {seconds:.0f} s):")
    print(results_table(result.metrics, cfg.scores))
    print(f"\nrun folder: {run_dir}   results row: {Path(cfg.out_dir) / 'results.csv'}")
    return {**row, "run_dir": str(run_dir)}
