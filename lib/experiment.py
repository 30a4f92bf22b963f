"""The steps of a run, and the functions that chain them: data -> model -> training -> evaluation -> files.

The notebook calls the steps one by one; ``scripts/train.py`` calls `train` (every process under
torchrun), ``scripts/main.py`` calls `run` (train, then evaluate on rank 0, or - when the config
names trained ``weights`` - `evaluate_weights` alone), ``scripts/test.py`` `evaluate_weights` for a
weights file and its own loop for a training checkpoint.
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from lib import distributed
from lib.classes import NUM_KNOWN_CLASSES
from lib.config import RunConfig, config_with_overrides
from lib.data import (
    StreetHazards,
    class_pixel_counts,
    inverse_frequency_weights,
    make_loader,
    seed_worker,
    train_transforms,
    validate_split,
)
from lib.losses import SegmentationLoss
from lib.published import comparison_table, published_results
from lib.test import EvaluationResult, evaluate, fit_sml_statistics, results_table
from lib.train import fit, load_checkpoint
from lib.utils import append_csv_row, atomic_write_bytes, next_run_dir, pick_device, seed_everything
from lib.weights import fetch_weights, find_weights, load_initial_weights, load_weights, resolve_weights
from network import build_model


@dataclass
class Datasets:
    """The splits of a run; a split left out (evaluation only: the test split alone) is None."""

    train: StreetHazards | None
    val: StreetHazards | None
    test: StreetHazards | None


SPLITS = ("train", "val", "test")


def prepare_data(cfg: RunConfig, *, splits: tuple[str, ...] = SPLITS) -> Path:
    """Make sure the dataset's `splits` are on disk and valid: the synthetic data is generated when
    absent; with ``cfg.download`` the StreetHazards archives holding `splits` are downloaded when
    their images are not all there (`lib.download.download_streethazards`).

    Raises:
        lib.data.DatasetError: the first problem found, naming the file and the fix.
        lib.download.DownloadError: a download that failed, naming the file and the fix.
    """
    root = Path(cfg.data_root)
    if cfg.dataset == "streethazards" and cfg.download:
        from lib.download import download_streethazards

        parts = tuple(dict.fromkeys("test" if split == "test" else "train" for split in splits))
        download_streethazards(root, parts=parts, progress=cfg.progress)
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
    for split in splits:
        validate_split(root, split, decode=cfg.validate_data)
    return root


def make_datasets(cfg: RunConfig, *, splits: tuple[str, ...] = SPLITS) -> Datasets:
    """Training split with random crop + flip (unless ``cfg.augment`` is off); validation and test
    at full resolution. Splits not in `splits` are None."""
    root = Path(cfg.data_root)
    make = {
        "train": lambda: StreetHazards(
            root, "train", transforms=train_transforms(cfg.crop_size) if cfg.augment else None
        ),
        "val": lambda: StreetHazards(root, "val"),
        "test": lambda: StreetHazards(root, "test", limit=cfg.max_eval_images),
    }
    return Datasets(**{split: make[split]() if split in splits else None for split in SPLITS})


def pretrained_path(cfg: RunConfig) -> Path | None:
    """The DeepLabv3+ weights a training run starts from, on disk: ``cfg.checkpoint`` (a file or a
    `lib.weights.WEIGHTS` name); else for ``cfg.pretrained_on`` (the seed's --dataset) the known file
    of that backbone and source; else None. Known files are downloaded into ``cfg.weights_dir`` on
    first use.

    Raises:
        lib.weights.WeightsError: an unknown name, a missing file, or no known file for the pair.
    """
    if cfg.checkpoint:
        return resolve_weights(cfg.checkpoint, cache_dir=cfg.weights_dir)
    if cfg.pretrained_on is None:
        return None
    entry = find_weights(backbone=cfg.backbone, trained_on=cfg.pretrained_on)
    return fetch_weights(entry.name, cache_dir=cfg.weights_dir, quiet=not cfg.progress)


def make_model(cfg: RunConfig, *, initial_weights: bool = True) -> nn.Module:
    """The DeepLabv3+ the config describes with its weights: the trained ``cfg.weights`` (loaded
    strictly, `lib.weights.load_weights`), else the start of training (`pretrained_path`, and the
    ImageNet backbone when ``cfg.pretrained_backbone``).

    Args:
        initial_weights: load those weights; False when a training checkpoint will overwrite them
            anyway (resume, test).

    Raises:
        lib.weights.WeightsError: a weights file that cannot be read or does not fit the model.
    """
    model = build_model(
        arch="deeplabv3plus",
        backbone=cfg.backbone,
        head=cfg.head,
        num_classes=NUM_KNOWN_CLASSES,
        output_stride=cfg.output_stride,
        separable_conv=cfg.separable_conv,
        pretrained_backbone=cfg.pretrained_backbone and initial_weights,
    )
    if initial_weights and cfg.weights:
        load_weights(model, resolve_weights(cfg.weights, cache_dir=cfg.weights_dir))
        return model
    path = pretrained_path(cfg) if initial_weights else None
    if path is not None:
        load_initial_weights(model, path)
    return model


def make_criterion(cfg: RunConfig, train_set: StreetHazards) -> SegmentationLoss:
    weights = None
    if cfg.class_weights:
        weights = inverse_frequency_weights(class_pixel_counts(train_set)[:NUM_KNOWN_CLASSES])
    return SegmentationLoss(
        cfg.loss, gamma_focal=cfg.gamma_focal, entropy_weight=cfg.entropy_weight, class_weights=weights,
        entropy_term=cfg.entropy_term,
    )  # fmt: skip


def save_figures(
    result: EvaluationResult, history: list[dict[str, float]], cfg: RunConfig, run_dir: Path
) -> list[Path]:
    """Write a run's figures as PNGs and return their paths.

    ``example_<i>.png`` (image, ground truth, prediction, every score's anomaly map), ``scores.png``
    (AUPR / AUROC / FPR95 per score), ``curves.png`` (PR and ROC), ``histograms.png`` (scores on
    inliers vs anomalies), ``confusion.png``, ``iou_vs_share.png``, ``class_distribution.png``
    (test split, anomaly included) and ``history.png`` (loss curves).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lib.classes import ANOMALY_ID, STREETHAZARDS_CLASSES
    from lib.data import plot_class_distribution
    from lib.utils import (
        plot_confusion_matrix,
        plot_curves,
        plot_example,
        plot_history,
        plot_iou_vs_share,
        plot_score_bars,
        plot_score_histograms,
    )

    what = f"{cfg.backbone}, {cfg.head} head, {cfg.loss} - {cfg.dataset} test split"
    known = STREETHAZARDS_CLASSES[:NUM_KNOWN_CLASSES]
    counts = result.confusion.matrix.sum(dim=1).cpu()
    pooled = "pooled" in cfg.protocols and result.anomaly  # only pooled states count the anomaly pixels
    anomaly_pixels = [int(next(iter(result.anomaly.values())).pos_hist.sum())] if pooled else []
    figures = {f"example_{i}": lambda ex=ex: plot_example(ex.image, ex.target, ex.prediction, ex.scores)
               for i, ex in enumerate(result.examples)}  # fmt: skip
    figures["scores"] = lambda: plot_score_bars(
        result.metrics, cfg.scores, protocol=cfg.protocols[0], title=what
    )
    if "pooled" in cfg.protocols:  # curves and histograms come from the pooled states
        figures.update(
            curves=lambda: plot_curves(result.anomaly, title=what),
            histograms=lambda: plot_score_histograms(result.anomaly, title=what),
        )
    figures.update(
        confusion=lambda: plot_confusion_matrix(result.confusion.matrix, known),
        iou_vs_share=lambda: plot_iou_vs_share(result.confusion.compute()["IoU"], counts, known),
        class_distribution=lambda: plot_class_distribution(
            [*counts.tolist(), *anomaly_pixels], STREETHAZARDS_CLASSES[: ANOMALY_ID + len(anomaly_pixels)],
            title=f"{cfg.dataset} test split: labelled pixels per class", log_scale=True,
        ),
    )  # fmt: skip
    if history:
        figures["history"] = lambda: plot_history(history)
    paths = []
    for name, make in figures.items():
        fig = make()
        paths.append(run_dir / f"{name}.png")
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths


_REPO = Path(__file__).resolve().parents[1]


@functools.cache
def git_commit() -> str:
    """Short hash of the checked-out commit, with ``-dirty`` when tracked files differ from it
    ('' outside a git checkout). Read once per process - the code a process runs is the code it
    imported - and first called when a run starts."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, cwd=_REPO
        )
        commit = out.stdout.strip()
        if commit:
            dirty = subprocess.run(
                ["git", "diff", "--quiet", "HEAD"], capture_output=True, timeout=10, cwd=_REPO
            )
            commit += "-dirty" if dirty.returncode == 1 else ""
        return commit
    except (OSError, subprocess.SubprocessError):
        return ""


def make_loaders(
    cfg: RunConfig, data: Datasets, *, shard: tuple[int, int] | None = None
) -> dict[str, DataLoader]:
    """Shuffled training loader (full batches) and ordered validation / test loaders.

    Args:
        shard: (rank, world_size) to split the training and validation sets the way torchrun's
            processes do (`lib.distributed.train_sampler`, `lib.distributed.ShardSampler`);
            default: the process group's when there is one. One process without a process group
            keeps the shuffling of `lib.data.make_loader` (the demo's order). The test loader is
            never sharded (rank 0 evaluates alone).
    """
    common = dict(num_workers=cfg.num_workers, seed=cfg.seed)
    test = make_loader(data.test, batch_size=cfg.eval_batch_size, shuffle=False, **common)
    if data.train is None or data.val is None:  # evaluation only
        return {"test": test}
    if shard is None and distributed.is_distributed():
        shard = (distributed.rank(), distributed.world_size())
    if shard is None:
        return {
            "train": make_loader(
                data.train,
                batch_size=cfg.batch_size,
                shuffle=True,
                drop_last=len(data.train) > cfg.batch_size,
                **common,
            ),
            "val": make_loader(data.val, batch_size=cfg.eval_batch_size, shuffle=False, **common),
            "test": test,
        }
    rank, world = shard
    train_sampler = distributed.train_sampler(data.train, seed=cfg.seed, rank=rank, world_size=world)
    val_sampler = distributed.ShardSampler(data.val, rank=rank, world_size=world)
    return {
        "train": _sharded_loader(
            data.train, train_sampler, cfg, batch_size=cfg.batch_size, rank=rank,
            drop_last=len(train_sampler) > cfg.batch_size,
        ),
        "val": _sharded_loader(data.val, val_sampler, cfg, batch_size=cfg.eval_batch_size, rank=rank),
        "test": test,
    }  # fmt: skip


def _sharded_loader(
    dataset, sampler, cfg: RunConfig, *, batch_size: int, rank: int, drop_last: bool = False
) -> DataLoader:
    generator = torch.Generator()
    generator.manual_seed(cfg.seed + rank)  # worker augmentation seeds differ between processes
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        worker_init_fn=seed_worker,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=cfg.num_workers > 0,
    )


def evaluate_model(
    cfg: RunConfig,
    model: nn.Module,
    test_loader: DataLoader,
    *,
    device: torch.device,
    keep_examples: int = 0,
    flip: bool = False,
    scales: tuple[float, ...] = (1.0,),
) -> EvaluationResult:
    """`lib.test.evaluate` with the config's scores, classes, protocols, ignored classes, sliding
    window and component metrics; when ``sml`` is among the scores, its statistics are first fitted
    on the (un-augmented) training split."""
    sml_stats = None
    if "sml" in cfg.scores:
        train_set = StreetHazards(Path(cfg.data_root), "train")
        loader = make_loader(
            train_set,
            batch_size=cfg.eval_batch_size,
            shuffle=False,
            num_workers=cfg.num_workers,
            seed=cfg.seed,
        )
        sml_stats = fit_sml_statistics(
            model, loader, num_classes=NUM_KNOWN_CLASSES, device=device, progress=cfg.progress
        )
    return evaluate(
        model, test_loader, num_classes=NUM_KNOWN_CLASSES, device=device, score_names=cfg.scores,
        miou_exclude=cfg.miou_exclude, ood_ignore=cfg.ood_ignore, protocols=cfg.protocols, flip=flip,
        scales=scales, window=cfg.window, sml_stats=sml_stats, component_scores=cfg.component_scores,
        keep_examples=keep_examples, progress=cfg.progress,
    )  # fmt: skip


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


@dataclass
class Trained:
    """What `train` leaves: the model with its best weights, and everything needed to evaluate it."""

    model: nn.Module
    history: list[dict[str, float]]
    run_dir: Path
    device: torch.device
    data: Datasets
    loaders: dict[str, DataLoader]


def train(
    cfg: RunConfig,
    *,
    resume: str | Path | Mapping[str, Any] | None = None,
    device: torch.device | None = None,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
) -> Trained:
    """Data, model and training of one run; every process calls it under torchrun.

    Rank 0 prepares the data (the others wait), picks the run folder (a new ``run_N``, or the
    folder of the checkpoint being resumed) and writes ``config.json``; `lib.train.fit` does the
    rest.

    Args:
        resume: a checkpoint written by `fit`, its run folder (``last.pt``), or the checkpoint
            already loaded (`lib.train.load_checkpoint`); `cfg` must be its config up to
            `lib.config.RUNTIME_FIELDS` (`lib.config.config_with_overrides`).
        device: default: ``cfg.device`` (under torchrun, this process's GPU).
        on_epoch_end: passed to `fit`.
    """
    if cfg.weights:
        raise ValueError(
            f"weights={cfg.weights!r} means evaluation only: call evaluate_weights (scripts/test.py "
            "--weights), or unset weights to train"
        )
    checkpoint = load_checkpoint(resume) if isinstance(resume, str | Path) else resume
    if checkpoint is not None:
        config_with_overrides(checkpoint["config"], cfg.to_dict(), purpose=f"resuming {checkpoint['path']}")
    else:
        pretrained_path(cfg)  # a missing weights file stops the run before it makes a folder
    main = distributed.is_main()
    seed_everything(cfg.seed)
    if device is None:
        device = pick_device(cfg.device)
        if device.type == "cuda" and distributed.is_distributed():
            device = torch.device("cuda", torch.cuda.current_device())
    if main:
        prepare_data(cfg)
    distributed.barrier()
    data = make_datasets(cfg)
    if main:
        print(
            f"data: {cfg.dataset} at {cfg.data_root} - train {len(data.train)}, val {len(data.val)}, "
            f"test {len(data.test)} images; device: {device}"
            + (f" x {distributed.world_size()} processes" if distributed.is_distributed() else "")
        )
    if checkpoint is not None:
        run_dir = Path(checkpoint["path"]).parent
    else:
        run_dir = Path(
            distributed.broadcast_object(str(next_run_dir(cfg.out_dir, cfg.run_name)) if main else None)
        )
    if main:
        atomic_write_bytes(run_dir / "config.json", cfg.to_json().encode())
    model = make_model(cfg, initial_weights=checkpoint is None).to(device)
    if distributed.is_distributed():
        seed_everything(cfg.seed + distributed.rank())  # different crops and flips in each process
    criterion = make_criterion(cfg, data.train).to(device)
    loaders = make_loaders(cfg, data)
    history = fit(
        model, loaders["train"], loaders["val"], criterion, cfg,
        device=device, run_dir=run_dir, num_classes=NUM_KNOWN_CLASSES, resume=checkpoint,
        on_epoch_end=on_epoch_end,
    )  # fmt: skip
    return Trained(model, history, run_dir, device, data, loaders)


def run(
    cfg: RunConfig,
    *,
    keep_examples: int = 3,
    resume: str | Path | Mapping[str, Any] | None = None,
    results_csv: str | None = "results.csv",
) -> dict[str, Any]:
    """Data, model, training, evaluation, and every output file of one run.

    Writes under ``cfg.out_dir``: ``runs/<name>/{config.json,best.pt,last.pt,history.csv,metrics.json,
    *.png}`` and one row in ``results.csv``. Prints the results table. Under torchrun every process
    trains and rank 0 alone evaluates. A config that names trained ``weights`` is evaluated without
    training (`evaluate_weights`).

    Args:
        resume: continue an interrupted run (see `train`) before evaluating it.
        results_csv: file name under ``cfg.out_dir`` that gets the row; None: no file (the grid
            runner, `lib.grid`, writes its own).

    Returns:
        The results row (config fields, metrics in percent, run folder, wall time); on ranks other
        than 0 only the run folder.
    """
    if cfg.weights:
        if resume is not None:
            raise ValueError("resume continues a training run; a config with weights trains nothing")
        return evaluate_weights(cfg, keep_examples=keep_examples, results_csv=results_csv)
    start = time.perf_counter()
    git_commit()  # the commit of the code this run starts with
    trained = train(cfg, resume=resume)
    if not distributed.is_main():
        return {"run_dir": str(trained.run_dir)}
    result = evaluate_model(
        cfg, trained.model, trained.loaders["test"], device=trained.device, keep_examples=keep_examples
    )
    return report_run(
        cfg, result, trained.history, run_dir=trained.run_dir, start=start, results_csv=results_csv
    )


def evaluate_weights(
    cfg: RunConfig,
    *,
    keep_examples: int = 3,
    flip: bool = False,
    scales: tuple[float, ...] = (1.0,),
    results_csv: str | None = "results.csv",
) -> dict[str, Any]:
    """Evaluate trained weights (``cfg.weights``: a `lib.weights.WEIGHTS` name or a file) on the test
    split, without training: e.g. the StreetHazards reference project's published model.

    Fetches the weights into ``cfg.weights_dir`` when they are a known name and absent, prepares the
    test split alone (with ``cfg.download``: the test archive alone), loads the weights strictly into
    the model the config describes, evaluates under both protocols and writes what `run` writes
    (no checkpoints or history). When the weights have published results (`lib.published`), prints
    them beside the measured ones.

    Raises:
        lib.weights.WeightsError: unknown name, unreadable file, or weights that do not fit the model.
    """
    if not cfg.weights:
        raise ValueError("evaluate_weights needs cfg.weights (a lib.weights.WEIGHTS name or a file)")
    start = time.perf_counter()
    git_commit()
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    model = make_model(cfg)
    prepare_data(cfg, splits=("test",))
    data = make_datasets(cfg, splits=("test",))
    loader = make_loaders(cfg, data)["test"]
    print(f"weights {cfg.weights}; data: {cfg.dataset} test split at {cfg.data_root}, {len(data.test)} images; "
          f"device: {device}")  # fmt: skip
    run_dir = next_run_dir(cfg.out_dir, cfg.run_name)
    atomic_write_bytes(run_dir / "config.json", cfg.to_json().encode())
    result = evaluate_model(
        cfg, model.to(device), loader, device=device, keep_examples=keep_examples, flip=flip, scales=scales
    )
    row = report_run(cfg, result, [], run_dir=run_dir, start=start, results_csv=results_csv)
    published = published_results(cfg.weights)
    if published is not None:
        print(f"\nBeside the published results ({published['source']}):")
        print(comparison_table(result.metrics, published["metrics"]))
    return row


def report_run(
    cfg: RunConfig,
    result: EvaluationResult,
    history: list[dict[str, float]],
    *,
    run_dir: Path,
    start: float,
    results_csv: str | None,
) -> dict[str, Any]:
    """Figures, ``metrics.json``, the results row (appended to ``<out_dir>/<results_csv>`` unless
    None) and the printed table of an evaluated run; returns the row with its ``run_dir``."""
    save_figures(result, history, cfg, run_dir)
    atomic_write_bytes(run_dir / "metrics.json", json.dumps(result.metrics, indent=2).encode())
    seconds = time.perf_counter() - start
    row = results_row(cfg, result, run_dir=run_dir, seconds=seconds)
    if results_csv is not None:
        append_csv_row(Path(cfg.out_dir) / results_csv, row)
    print(f"\nResults on the {cfg.dataset} test split ({result.num_images} images, {seconds:.0f} s):")
    print(results_table(result.metrics, cfg.scores))
    print(
        f"\nrun folder: {run_dir}"
        + (f"   results row: {Path(cfg.out_dir) / results_csv}" if results_csv else "")
    )
    return {**row, "run_dir": str(run_dir)}
