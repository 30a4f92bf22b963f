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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from lib import distributed
from lib.checkpoint import load_checkpoint
from lib.config import RunConfig, config_with_overrides
from lib.data import (
    DatasetError,
    SegmentationDataset,
    class_pixel_counts,
    inverse_frequency_weights,
    make_loader,
    train_transforms,
)
from lib.datasets import open_dataset
from lib.figures import save_run_figures
from lib.losses import SegmentationLoss
from lib.published import comparison_table, published_results
from lib.registry import DatasetSpec, TestSet
from lib.test import EvalSpec, EvaluationResult, evaluate, fit_sml_statistics, results_table
from lib.train import fit
from lib.utils import append_csv_row, atomic_write_bytes, next_run_dir, pick_device, seed_everything
from lib.weights import fetch_weights, find_weights, load_initial_weights, load_weights, resolve_weights
from network import build_model


@dataclass
class Datasets:
    """The splits of a run; a split left out (evaluation only: the test split alone) is None.
    ``test`` is the first of the run's test sets (`test_sets`), ``tests`` all of them."""

    train: SegmentationDataset | None
    val: SegmentationDataset | None
    test: SegmentationDataset | None
    tests: dict[str, SegmentationDataset] = field(default_factory=dict)


SPLITS = ("train", "val", "test")


def known_classes(cfg: RunConfig) -> tuple[str, ...]:
    """The classes the run's model predicts, in output order (``cfg.plan.classes``)."""
    return cfg.plan.classes


def num_classes(cfg: RunConfig) -> int:
    """How many classes the run's model predicts: 13 for StreetHazards, 19 for Cityscapes, ..."""
    return cfg.plan.num_classes


def test_sets(cfg: RunConfig) -> list[TestSet]:
    """The run's evaluation sets, resolved once with the config (``cfg.plan.test_sets``): its own
    test split by default."""
    return list(cfg.plan.test_sets)


def _loader_options(cfg: RunConfig, spec: DatasetSpec, split: str) -> dict[str, Any]:
    """The run's options for the loader of `spec`, from what the registry says the dataset has."""
    options: dict[str, Any] = {}
    if spec.city_folders:
        chosen = [entry.split("/", 1)[1] for entry in cfg.cities if entry.split("/", 1)[0] == split]
        options["cities"] = chosen or None
    if spec.unknown_label:
        options["unknown_as_class"] = cfg.unknown_as_class
    return options


def open_split(
    cfg: RunConfig,
    spec: DatasetSpec,
    root: str | Path,
    role: str,
    *,
    transforms: Callable | None = None,
    limit: int | None = None,
) -> SegmentationDataset:
    """The split of `spec` (at `root`) that plays `role` (train, val or test) in the run.

    Raises:
        lib.data.DatasetError: missing or broken files; a root in another format says which one.
    """
    if role not in spec.splits:
        raise ValueError(f"{spec.name} has no {role} split (it is an evaluation-only set)")
    split = spec.splits[role]
    what = f"dataset={spec.name!r}" if spec.name == cfg.dataset else f"test set {spec.name!r}"
    return open_dataset(
        spec.loader, root, split, what=what, transforms=transforms, limit=limit,
        **_loader_options(cfg, spec, split),
    )  # fmt: skip


def _prepare(cfg: RunConfig, spec: DatasetSpec, root: Path, roles: list[str]) -> None:
    """Download (StreetHazards with ``cfg.download``) or generate (the synthetic names) what `roles`
    of `spec` need under `root`, then check every file of those splits."""
    if spec.downloadable and cfg.download:
        from lib.download import download_streethazards

        parts = tuple(dict.fromkeys("test" if role == "test" else "train" for role in roles))
        download_streethazards(root, parts=parts, progress=cfg.progress)
    if spec.generated is not None:
        from lib.synthetic import generate

        height, width = cfg.image_size
        try:  # the generator owns what it wrote: other sizes (a tiny run, then a demo) are regenerated
            generate(
                spec.generated, root, n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test,
                height=height, width=width, seed=cfg.data_seed, progress=cfg.progress, regenerate=True,
            )  # fmt: skip
        except ValueError as err:  # another format, or data the generator did not write
            where = "--data-root" if spec.name == cfg.dataset else f"{spec.name}=ROOT in --test-sets"
            raise DatasetError(
                f"{err} - {spec.name} is generated in the {spec.generated} format: give it a folder of its "
                f"own with {where} (its default is {spec.default_root})"
            ) from err
    for role in roles:
        open_split(cfg, spec, root, role).validate(decode=cfg.validate_data)


def prepare_data(cfg: RunConfig, *, splits: tuple[str, ...] = SPLITS) -> Path:
    """Make sure the run's `splits` are on disk and valid: ``train`` and ``val`` of the training
    dataset, and with ``test`` every test set. The synthetic names are generated when absent; with
    ``cfg.download`` the StreetHazards archives holding the splits are downloaded when their images
    are not all there (`lib.download.download_streethazards`).

    Returns:
        The training dataset's root.

    Raises:
        lib.data.DatasetError: the first problem found, naming the file and the fix.
        lib.download.DownloadError: a download that failed, naming the file and the fix.
    """
    root = Path(cfg.data_root)
    sets = test_sets(cfg) if "test" in splits else []
    own = [role for role in splits if role != "test"] + ["test" for t in sets if not t.prefix]
    if own:
        _prepare(cfg, cfg.plan.dataset, root, own)
    for t in sets:
        if t.prefix:
            _prepare(cfg, t.spec, Path(t.root), ["test"])
    return root


def make_datasets(cfg: RunConfig, *, splits: tuple[str, ...] = SPLITS) -> Datasets:
    """Training split with random crop + flip (unless ``cfg.augment`` is off; and the resize and
    colour jitter the config asks for); validation and test sets at full resolution. Splits not in
    `splits` are None."""
    spec, root = cfg.plan.dataset, Path(cfg.data_root)
    train = val = None
    if "train" in splits:
        transforms = (
            train_transforms(cfg.crop_size, scale_range=cfg.scale_range, color_jitter=cfg.color_jitter)
            if cfg.augment
            else None
        )
        train = open_split(cfg, spec, root, "train", transforms=transforms)
    if "val" in splits:
        val = open_split(cfg, spec, root, "val")
    tests = {}
    if "test" in splits:
        for t in test_sets(cfg):
            tests[t.name] = open_split(cfg, t.spec, t.root, "test", limit=cfg.max_eval_images)
    return Datasets(train, val, next(iter(tests.values()), None), tests)


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
    deeplab = cfg.arch in ("deeplabv3plus", "deeplabv3")
    model = build_model(
        arch=cfg.arch,
        backbone=cfg.backbone,
        head=cfg.head,
        num_classes=num_classes(cfg),
        output_stride=cfg.output_stride if deeplab else None,
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


def make_criterion(cfg: RunConfig, train_set: SegmentationDataset) -> SegmentationLoss:
    weights = None
    if cfg.class_weights:
        n = num_classes(cfg)
        weights = inverse_frequency_weights(class_pixel_counts(train_set)[:n])
    return SegmentationLoss(
        cfg.loss, gamma_focal=cfg.gamma_focal, entropy_weight=cfg.entropy_weight, class_weights=weights,
        entropy_term=cfg.entropy_term,
    )  # fmt: skip


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
    # worker augmentation seeds differ between processes
    return make_loader(
        dataset, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=cfg.num_workers,
        seed=cfg.seed + rank, drop_last=drop_last,
    )  # fmt: skip


def fit_sml(cfg: RunConfig, model: nn.Module, *, device: torch.device):
    """Statistics of the ``sml`` score, fitted on the (un-augmented) training split of the run."""
    train_set = open_split(cfg, cfg.plan.dataset, cfg.data_root, "train")
    loader = make_loader(
        train_set, batch_size=cfg.eval_batch_size, shuffle=False, num_workers=cfg.num_workers, seed=cfg.seed
    )
    return fit_sml_statistics(
        model, loader, num_classes=num_classes(cfg), device=device, progress=cfg.progress
    )


def evaluate_model(
    cfg: RunConfig,
    model: nn.Module,
    test_loader: DataLoader,
    *,
    device: torch.device,
    keep_examples: int = 0,
    flip: bool = False,
    scales: tuple[float, ...] | None = None,
    test_set: TestSet | None = None,
    sml_stats=None,
) -> EvaluationResult:
    """`lib.test.evaluate` on one test set with the config's scores, classes, protocols, ignored
    classes, test-time scales (``cfg.eval_scales`` unless `scales` is given), sliding window and
    component metrics.

    Args:
        test_set: the set `test_loader` reads (default: the run's first test set). Closed-set metrics
            are measured where it has the model's class labels, anomaly metrics where it has anomaly
            labels (a Cityscapes split has none; LostAndFound and RoadAnomaly have no class labels).
        sml_stats: the ``sml`` score's statistics; fitted on the training split when it is among the
            scores and they are not given (`fit_sml`).
    """
    spec = eval_spec(cfg, test_set or test_sets(cfg)[0], flip=flip, scales=scales)
    if "sml" in spec.scores and sml_stats is None:
        sml_stats = fit_sml(cfg, model, device=device)
    return evaluate(
        model,
        test_loader,
        spec,
        device=device,
        sml_stats=sml_stats,
        keep_examples=keep_examples,
        progress=cfg.progress,
    )


def eval_spec(
    cfg: RunConfig, test_set: TestSet, *, flip: bool = False, scales: tuple[float, ...] | None = None
) -> EvalSpec:
    """What the run measures on `test_set` (`lib.test.EvalSpec`), from its config - the one place
    where the evaluation options of a RunConfig become an evaluation: the model's classes, the
    set's labels (its known classes and, after them, its anomaly class), the scores where the set
    has anomaly labels, the protocols, the set's mIoU exclusions (`miou_exclusions`), the ignored
    classes where it has class labels, test-time scales (``cfg.eval_scales`` unless `scales`),
    flip, window, the kits' conventions and component metrics."""
    spec = test_set.spec
    scores = cfg.scores if spec.anomaly_id is not None else ()
    labels = (*known_classes(cfg), *spec.classes[spec.num_known :]) if spec.closed_set else spec.classes
    return EvalSpec(
        num_classes=num_classes(cfg), class_names=labels, anomaly_id=spec.anomaly_id,
        closed_set=spec.closed_set, scores=scores, protocols=cfg.protocols,
        miou_exclude=miou_exclusions(cfg, spec), ood_ignore=cfg.ood_ignore if spec.closed_set else (),
        flip=flip, scales=scales or cfg.eval_scales, window=cfg.window,
        component_scores=tuple(n for n in cfg.component_scores if n in scores),
        conventions=cfg.conventions, smiyc_track=cfg.smiyc_track,
    )  # fmt: skip


def miou_exclusions(cfg: RunConfig, spec: DatasetSpec) -> tuple[str, ...]:
    """The classes left out of mIoU on test set `spec`: ``cfg.miou_exclude`` when given, else the
    set's published protocol (`lib.registry.DatasetSpec.miou_exclude`); none on an anomaly-only set."""
    if not spec.closed_set:
        return ()
    return cfg.miou_exclude if cfg.miou_exclude is not None else spec.miou_exclude


@dataclass
class SetResult:
    """The evaluation of one test set of a run."""

    test_set: TestSet
    result: EvaluationResult


@dataclass
class Evaluation:
    """A run's evaluation: one result per test set, and their metrics under one roof."""

    sets: list[SetResult]

    @property
    def metrics(self) -> dict[str, float]:
        """Every set's metrics; the keys of a set other than the training dataset's own test split
        start with its name (``synthetic-lostandfound/ood/abet/AUPR/pooled``)."""
        return {f"{s.test_set.prefix}{k}": v for s in self.sets for k, v in s.result.metrics.items()}

    @property
    def num_images(self) -> int:
        return sum(s.result.num_images for s in self.sets)

    @property
    def first(self) -> EvaluationResult:
        return self.sets[0].result

    def __getitem__(self, name: str) -> EvaluationResult:
        for s in self.sets:
            if s.test_set.name == name:
                return s.result
        raise KeyError(f"no test set {name!r}; this evaluation has {[s.test_set.name for s in self.sets]}")


def evaluate_test_sets(
    cfg: RunConfig,
    model: nn.Module,
    *,
    device: torch.device,
    datasets: Mapping[str, SegmentationDataset] | None = None,
    keep_examples: int = 0,
    flip: bool = False,
    scales: tuple[float, ...] | None = None,
) -> Evaluation:
    """Evaluate `model` on every test set of the run (``cfg.test_sets``; its own test split by default).

    Args:
        datasets: test set name -> dataset already opened (`make_datasets`); the others are opened here
            (prepare them first: `prepare_data`).
        keep_examples, flip, scales: as in `evaluate_model`.
    """
    sml_stats = fit_sml(cfg, model, device=device) if "sml" in cfg.scores else None
    out = []
    for t in test_sets(cfg):
        dataset = (datasets or {}).get(t.name) or open_split(
            cfg, t.spec, t.root, "test", limit=cfg.max_eval_images
        )
        loader = make_loader(dataset, batch_size=cfg.eval_batch_size, shuffle=False, num_workers=cfg.num_workers,
                             seed=cfg.seed)  # fmt: skip
        result = evaluate_model(
            cfg, model, loader, device=device, keep_examples=keep_examples, flip=flip, scales=scales,
            test_set=t, sml_stats=sml_stats,
        )  # fmt: skip
        out.append(SetResult(t, result))
    return Evaluation(out)


def results_row(
    cfg: RunConfig, evaluation: Evaluation | EvaluationResult, *, run_dir: Path, seconds: float
) -> dict[str, Any]:
    """One CSV row: run, data, commit, wall time, every config field and every metric (percent) of
    every test set."""
    evaluation = _as_evaluation(cfg, evaluation)
    config = {k: " ".join(map(str, v)) if isinstance(v, tuple) else v for k, v in cfg.to_dict().items()}
    return {
        "run": run_dir.name,
        "data": "; ".join(s.test_set.label for s in evaluation.sets),
        "checkpoint_chosen_on": selection_split(cfg),
        "commit": git_commit(),
        "wall_seconds": round(seconds, 1),
        "test_images": evaluation.num_images,
        **config,
        **{k: round(v, 4) for k, v in evaluation.metrics.items()},
    }


def selection_split(cfg: RunConfig) -> str:
    """Which split chose the run's checkpoint (the best validation loss), e.g. ``cityscapes val
    split``; ``-`` for trained weights evaluated as they are (`RunConfig.weights`)."""
    if cfg.weights:
        return "-"
    return f"{cfg.dataset} {cfg.plan.dataset.splits['val']} split"


def selection_overlap_note(cfg: RunConfig, test_set: TestSet) -> str | None:
    """A warning when `test_set` is the very split that chose the checkpoint (Cityscapes and BDD100K
    publish no test labels, so their val split plays both roles), else None."""
    if cfg.weights or not test_set.is_selection_split(cfg.dataset, cfg.data_root):
        return None
    return (
        f"note: the checkpoint was chosen on this same split ({selection_split(cfg)}, best validation "
        "loss): these numbers are optimistic; hold out part of the training split as validation for an "
        "unbiased test"
    )


def _as_evaluation(cfg: RunConfig, evaluation: Evaluation | EvaluationResult) -> Evaluation:
    """A single `EvaluationResult` (of the run's first test set) as an `Evaluation`."""
    if isinstance(evaluation, Evaluation):
        return evaluation
    return Evaluation([SetResult(test_sets(cfg)[0], evaluation)])


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
            already loaded (`lib.checkpoint.load_checkpoint`); `cfg` must be its config up to
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
            f"test {', '.join(f'{name} {len(ds)}' for name, ds in data.tests.items())} images; device: {device}"
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
        device=device, run_dir=run_dir, num_classes=num_classes(cfg), resume=checkpoint,
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
    evaluation = evaluate_test_sets(
        cfg, trained.model, device=trained.device, datasets=trained.data.tests, keep_examples=keep_examples
    )
    return report_run(
        cfg, evaluation, trained.history, run_dir=trained.run_dir, start=start, results_csv=results_csv
    )


def evaluate_weights(
    cfg: RunConfig,
    *,
    keep_examples: int = 3,
    flip: bool = False,
    scales: tuple[float, ...] | None = None,
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
    sets = ", ".join(f"{t.label} at {t.root} ({len(data.tests[t.name])} images)" for t in test_sets(cfg))
    print(f"weights {cfg.weights}; test sets: {sets}; device: {device}")
    run_dir = next_run_dir(cfg.out_dir, cfg.run_name)
    atomic_write_bytes(run_dir / "config.json", cfg.to_json().encode())
    evaluation = evaluate_test_sets(
        cfg, model.to(device), device=device, datasets=data.tests, keep_examples=keep_examples, flip=flip,
        scales=scales,
    )  # fmt: skip
    row = report_run(cfg, evaluation, [], run_dir=run_dir, start=start, results_csv=results_csv)
    published = published_results(cfg.weights)
    if published is not None:
        print(f"\nBeside the published results ({published['source']}):")
        print(comparison_table(evaluation.first.metrics, published["metrics"]))
    return row


def report_run(
    cfg: RunConfig,
    evaluation: Evaluation | EvaluationResult,
    history: list[dict[str, float]],
    *,
    run_dir: Path,
    start: float,
    results_csv: str | None,
    metrics_file: str = "metrics.json",
    figures: bool = True,
    extra_columns: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Figures, ``metrics.json``, the results row (appended to ``<out_dir>/<results_csv>`` unless
    None) and the printed tables of an evaluated run; returns the row with its ``run_dir``. The one
    evaluate-and-report of `run`, `evaluate_weights`, ``scripts/test.py --checkpoint`` and the notebook.

    The figures of the training dataset's own test split go to the run folder, those of every other
    test set to ``<run folder>/<set name>/`` (`lib.figures.save_run_figures`).

    Args:
        metrics_file: the metrics' file name in the run folder (a checkpoint evaluated again writes
            ``test_best.json`` beside its training run's ``metrics.json``).
        figures: write the figures.
        extra_columns: appended to the row (e.g. the checkpoint evaluated, its epoch, the TTA).
    """
    evaluation = _as_evaluation(cfg, evaluation)
    for i, s in enumerate(evaluation.sets if figures else ()):
        folder = run_dir / s.test_set.prefix if s.test_set.prefix else run_dir
        save_run_figures(
            s.result, history if i == 0 else [], cfg, folder,
            title=f"{cfg.arch} {cfg.backbone}, {cfg.head} head, {cfg.loss} - {s.test_set.label}",
            class_names=s.result.class_names, model_classes=known_classes(cfg),
        )  # fmt: skip
    atomic_write_bytes(run_dir / metrics_file, json.dumps(evaluation.metrics, indent=2).encode())
    seconds = time.perf_counter() - start
    row = {**results_row(cfg, evaluation, run_dir=run_dir, seconds=seconds), **(extra_columns or {})}
    if results_csv is not None:
        append_csv_row(Path(cfg.out_dir) / results_csv, row)
    for s in evaluation.sets:
        print(f"\nResults on the {s.test_set.label} ({s.result.num_images} images, {seconds:.0f} s):")
        print(results_table(s.result.metrics, cfg.scores))
        if note := selection_overlap_note(cfg, s.test_set):
            print(note)
    print(
        f"\nrun folder: {run_dir}"
        + (f"   results row: {Path(cfg.out_dir) / results_csv}" if results_csv else "")
        + (f"   metrics: {run_dir / metrics_file}" if metrics_file != "metrics.json" else "")
    )
    return {**row, "run_dir": str(run_dir)}
