"""Training a run can be trusted with for days: the loop and its guard rails.

Its set-up lives in `lib.optim` (optimiser, learning-rate schedule, the module the loop calls, mixed
precision, determinism) and what it checkpoints in `lib.checkpoint` (the state dict, random and
data-order states, atomic writes, `load_checkpoint`); their names stay importable from here.

`fit` is the whole of it: ``cfg.epochs`` passes of `train_one_epoch` (mixed precision, gradient
accumulation and clipping, channels-last, torch.compile, DistributedDataParallel under torchrun),
each followed by `validate` (the loss of the whole split as one batch, from sums over batches and
processes, and mIoU) and a checkpoint. `configure_determinism` sets torch's determinism switches
(``cfg.deterministic``); a NaN or infinite loss stops the run (`FloatingPointError`), read from the
device every `FINITE_CHECK_STEPS` steps rather than every step.

Checkpoints are one dict (`checkpoint_state`): model, optimizer, LR schedule, GradScaler, epoch,
history, best validation loss, the random states of every process (Python, NumPy, torch, CUDA)
and the state of the training data order, plus the RunConfig. Every epoch writes ``last.pt``
(atomically: a temporary file, then a rename, after checking the free disk space); an epoch with
a new best validation loss also makes it ``best.pt`` (a hard link, or a copy where links are not
supported). ``fit(..., resume=load_checkpoint(run_dir))`` continues exactly where the run stopped:
with ``num_workers=0`` the resumed run ends with the same weights as an uninterrupted one. It
must run with the checkpoint's number of processes; a poly schedule keeps its horizon. With
worker processes the order of the images resumes exactly too, but the random crops and flips come
from freshly seeded workers (persistent DataLoader workers keep their random state to themselves).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from lib import distributed
from lib.checkpoint import (  # the state a run checkpoints; lib.train.load_checkpoint etc. keep working
    CHECKPOINT_KEYS,
    CHECKPOINT_VERSION,
    CheckpointError,
    DiskSpaceError,
    check_free_space,
    checkpoint_nbytes,
    checkpoint_state,
    data_order_state,
    find_checkpoint,
    latest_run,
    load_checkpoint,
    mark_best,
    restore_data_order,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from lib.classes import IGNORE_INDEX
from lib.config import RunConfig
from lib.data import normalize
from lib.figures import colorize, palette_for
from lib.losses import SegmentationLoss, entropy_term, focal_loss, true_class_rows_entropy
from lib.metrics import ConfusionMatrix
from lib.optim import (  # the set-up of a run's training; lib.train.build_optimizer etc. keep working
    AMP_DTYPES,
    LRSchedule,
    autocast,
    build_optimizer,
    build_scheduler,
    configure_determinism,
    group_lr,
    param_groups,
    prepare_model,
    resolve_amp,
    set_batchnorm_eval,
)
from lib.utils import append_csv_row, log_line

__all__ = [
    "AMP_DTYPES",
    "autocast",
    "build_optimizer",
    "build_scheduler",
    "check_free_space",
    "CHECKPOINT_KEYS",
    "checkpoint_nbytes",
    "checkpoint_state",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "configure_determinism",
    "data_order_state",
    "DiskSpaceError",
    "find_checkpoint",
    "FINITE_CHECK_STEPS",
    "fit",
    "latest_run",
    "load_checkpoint",
    "loss_from_sums",
    "loss_sums",
    "LRSchedule",
    "param_groups",
    "prepare_model",
    "resolve_amp",
    "restore_data_order",
    "rng_state",
    "save_checkpoint",
    "set_batchnorm_eval",
    "set_rng_state",
    "train_one_epoch",
    "validate",
]


# ----------------------------------------------------------------------------- one epoch


def _steps_per_epoch(loader: DataLoader, cfg: RunConfig) -> int:
    steps = len(loader)
    return steps if cfg.max_steps_per_epoch is None else min(steps, cfg.max_steps_per_epoch)


#: Training steps whose losses are read and checked for NaN / inf together (and at an epoch's end).
FINITE_CHECK_STEPS = 20


class _LossWindow:
    """The training losses of one epoch, read from the device a window of steps at a time.

    Reading a loss every step (``.item()``, ``bool(isfinite)``) makes the host wait for the GPU
    each time, and agreeing on it across processes adds an all-reduce per step. Instead the
    detached losses of up to `FINITE_CHECK_STEPS` steps are kept as device tensors, then read in
    one copy by `check`, which also asks the processes once whether all of theirs were finite.
    A NaN is therefore caught up to FINITE_CHECK_STEPS - 1 steps late; the weights in memory are
    lost then anyway, and ``last.pt`` (written between epochs) is untouched.
    """

    def __init__(self, *, epoch: int, device: torch.device) -> None:
        self.epoch, self.device = epoch, device
        self.total, self.count = 0.0, 0  # image-weighted loss sum and images, checked steps only
        # Unchecked steps: (step, loss on the device, images, lr of the step, optimizer step it
        # ended or None, lr after that optimizer step).
        self.pending: list[tuple[int, torch.Tensor, int, float, int | None, float]] = []

    def add(
        self, step: int, loss: torch.Tensor, *, images: int, lr: float, update: int | None, next_lr: float
    ) -> None:
        """Keep the loss of `step`, trained with rate `lr`; `update`: the optimizer step it ended
        (None inside an accumulation group) and `next_lr` the rate after it, for TensorBoard."""
        self.pending.append((step, loss.detach(), images, lr, update, next_lr))

    def check(self, writer: Any = None) -> None:
        """Read the pending losses; raise in every process when one of any process is not finite.

        Collective under torchrun: every process calls it after the same steps.

        Raises:
            FloatingPointError: names the epoch, the first bad step and the steps read together.
        """
        if not self.pending:
            return
        values = torch.stack([entry[1] for entry in self.pending]).tolist()  # the one host sync
        bad = next((i for i, value in enumerate(values) if not math.isfinite(value)), None)
        if not distributed.all_true(bad is None, device=self.device):
            self._raise(values, bad)
        for (_, _, images, _, update, next_lr), value in zip(self.pending, values, strict=True):
            self.total += value * images
            self.count += images
            if writer is not None and update is not None:
                writer.add_scalar("train/loss_step", value, update)
                writer.add_scalar("train/lr", next_lr, update)
        self.pending.clear()

    def _raise(self, values: list[float], bad: int | None) -> None:
        first, last = self.pending[0][0], self.pending[-1][0]
        where = f"steps {first}-{last}" if last > first else f"step {first}"
        if bad is None:  # finite here: another process had the bad loss
            step, value, lr = first, "finite here but not in another process", self.pending[0][3]
            at = f"one of {where}"
        else:
            step, value, lr = self.pending[bad][0], values[bad], self.pending[bad][3]
            at = f"step {step}"
        raise FloatingPointError(
            f"loss is {value} at epoch {self.epoch}, {at} (losses are checked every "
            f"{FINITE_CHECK_STEPS} steps; this check read {where}): lower the learning rate "
            f"(lr={lr:g}), try --grad-clip, or check the labels of this batch"
        )

    @property
    def mean(self) -> float:
        return self.total / max(self.count, 1)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: RunConfig,
    *,
    device: torch.device,
    epoch: int,
    schedule: LRSchedule | None = None,
    scaler: torch.amp.GradScaler | None = None,
    writer: Any = None,
) -> float:
    """One pass over `loader` (at most ``cfg.max_steps_per_epoch`` batches).

    Per batch: forward under ``cfg.amp`` autocast, loss in float32, backward (scaled by `scaler`
    for fp16). Every ``cfg.grad_accum_steps`` batches, and after the last one, the accumulated
    gradients (each batch weighted 1 / batches in its group) are unscaled, clipped to
    ``cfg.grad_clip``, and the optimizer and `schedule` step. Under DDP the gradients are
    averaged across processes only on the batch that ends a group.

    Args:
        model: the module from `prepare_model` (plain, DDP-wrapped or compiled).
        loader: yields (uint8 images, int64 masks). Shape: (B, 3, H, W), (B, H, W).
        writer: a TensorBoard SummaryWriter for per-step loss and learning rate (rank 0), or None.

    Returns:
        The mean training loss over the images of every process.

    Raises:
        FloatingPointError: the loss became NaN or infinite (names the epoch and the step; the
            losses are read every `FINITE_CHECK_STEPS` steps, see `_LossWindow`).
    """
    model.train()
    if cfg.freeze_bn:
        set_batchnorm_eval(model)
    scaler = scaler if scaler is not None else torch.amp.GradScaler(device.type, enabled=False)
    steps = _steps_per_epoch(loader, cfg)
    accum = cfg.grad_accum_steps
    is_ddp = isinstance(getattr(model, "_orig_mod", model), DistributedDataParallel)
    ddp_module = getattr(model, "_orig_mod", model)
    world = distributed.world_size()
    losses = _LossWindow(epoch=epoch, device=device)
    show = cfg.progress and distributed.is_main()
    bar = tqdm(loader, total=steps, desc=f"epoch {epoch}", disable=not show, leave=False)
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    for step, (images, masks) in enumerate(bar):
        if step >= steps:
            break
        images = normalize(images.to(device, non_blocking=True))
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        masks = masks.to(device, non_blocking=True)
        group_start = step - step % accum
        group_size = min(accum, steps - group_start)
        ends_group = step == group_start + group_size - 1
        no_sync = ddp_module.no_sync() if is_ddp and not ends_group else contextlib.nullcontext()
        with no_sync:
            with autocast(device, cfg.amp):
                logits = model(images)
            loss = criterion(logits.float(), masks)
            lr = group_lr(optimizer)  # the rate this step's update uses, for the NaN message
            scaler.scale(loss / group_size if group_size > 1 else loss).backward()
        if ends_group:
            if cfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if schedule is not None:
                schedule.step()
        update = schedule.steps if ends_group and schedule is not None else None
        losses.add(step, loss, images=images.shape[0], lr=lr, update=update, next_lr=group_lr(optimizer))
        if (step + 1) % FINITE_CHECK_STEPS == 0 or step == steps - 1:
            losses.check(writer)
            bar.set_postfix(
                loss=f"{losses.mean:.4f}",
                lr=f"{group_lr(optimizer):.2e}",
                img_s=f"{world * losses.count / (time.perf_counter() - start):.1f}",
            )
    losses.check(writer)  # a loader shorter than its length says: nothing left unread
    total, count = losses.total, losses.count
    if distributed.is_distributed():
        sums = distributed.all_reduce_sum_(torch.tensor([total, count], dtype=torch.float64, device=device))
        total, count = sums[0].item(), int(sums[1].item())
    return total / max(count, 1)


def _labelled(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """The pixels `lib.losses` counts: not ``ignore_index`` and inside the model's classes."""
    return (target != ignore_index) & (target >= 0) & (target < logits.shape[1])


def loss_sums(criterion: nn.Module, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Sums over a batch from which `loss_from_sums` gives ``criterion`` of the whole split at once.

    Each term of a `lib.losses.SegmentationLoss` is a ratio of two sums over pixels: the focal /
    cross-entropy term divides the weighted pixel losses by the summed class weights of the
    labelled pixels; the softmax entropy term divides by the number of labelled pixels; the
    ``true-class-rows`` term by images x columns. Adding numerators and denominators over the
    batches (and processes) and dividing at the end gives exactly the loss of the split taken as
    one batch, whatever the batch size: the mean of per-batch losses would weight a batch with few
    labelled pixels (or light classes) as much as a full one.

    The loss functions stay the definitions: each numerator is a term's value times the
    denominator computed here (so equal up to float32 rounding of that product).

    Args:
        criterion: the training loss; a criterion other than SegmentationLoss (or with an unknown
            entropy term) gives None, and `validate` then averages its batch values by images.
        logits: Shape (B, C, H, W), float32.
        target: train ids. Shape (B, H, W).

    Returns:
        float64 (focal numerator, focal denominator, entropy numerator, entropy denominator), or
        None. Shape (4,).
    """
    if not _sums_known(criterion):
        return None
    valid = _labelled(logits, target, criterion.ignore_index)
    weights = criterion.class_weights
    if weights is not None:
        safe = torch.where(valid, target, torch.zeros_like(target))
        focal_den = (weights.to(logits.device)[safe] * valid).sum()
    else:
        focal_den = valid.sum()
    focal = focal_loss(
        logits, target, gamma=criterion.gamma, weight=weights, ignore_index=criterion.ignore_index
    )
    # focal_loss clamps its denominator at 1e-12: a batch without labelled pixels adds 0 / 0.
    sums = [focal.double() * focal_den.double().clamp(min=1e-12), focal_den.double()]
    if criterion.entropy_weight:
        entropy = criterion.entropy(logits, target, ignore_index=criterion.ignore_index)
        den = _ENTROPY_DENOMINATORS[criterion.entropy](valid).double()
        sums += [entropy.double() * den.clamp(min=1), den]
    else:
        sums += [focal.new_zeros((), dtype=torch.float64)] * 2
    return torch.stack(sums)


#: What each entropy term of `lib.losses` divides by, from the labelled-pixel mask (B, H, W).
_ENTROPY_DENOMINATORS: dict[Callable, Callable[[torch.Tensor], torch.Tensor]] = {
    entropy_term: lambda valid: valid.sum(),
    true_class_rows_entropy: lambda valid: torch.tensor(
        valid.shape[0] * valid.shape[2], dtype=torch.float64, device=valid.device
    ),
}


def _sums_known(criterion: nn.Module) -> bool:
    """Whether `loss_sums` can split `criterion` into sums."""
    return isinstance(criterion, SegmentationLoss) and criterion.entropy in _ENTROPY_DENOMINATORS


def loss_from_sums(criterion: SegmentationLoss, sums: torch.Tensor) -> float:
    """The loss of the data `sums` (from `loss_sums`, added up) covers, clamped as `lib.losses` does.

    Shape: sums (4,).
    """
    focal_num, focal_den, entropy_num, entropy_den = sums.tolist()
    loss = focal_num / max(focal_den, 1e-12)
    if criterion.entropy_weight:
        loss += criterion.entropy_weight * entropy_num / max(entropy_den, 1.0)
    return loss


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: DataLoader,
    criterion: nn.Module,
    *,
    device: torch.device,
    num_classes: int,
    amp: str = "off",
) -> dict[str, float]:
    """Validation loss of the whole split and mIoU in percent.

    The loss is that of the split taken as one batch (`loss_sums`): independent of the batch
    size and of the number of processes, so that best.pt, the plateau schedule and early stopping
    do not depend on them either. A criterion `loss_sums` does not know gets the mean of its batch
    values weighted by images (which does depend on the batching when batches differ in labelled
    pixels).

    Under torchrun each process passes its own shard (`lib.distributed.ShardSampler`); the loss
    sums and the confusion matrices are summed across processes, so every process returns the
    numbers of the whole split.

    Args:
        loader: yields (uint8 images, int64 masks). Shape: (B, 3, H, W), (B, H, W).

    Returns:
        ``{"val_loss": float, "val_mIoU": float}``.
    """
    model.eval()
    confusion = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, device=device)
    # Loss sums (see loss_sums), then the image-weighted sum and the image count of the fallback;
    # kept on the device: one host sync for the whole split instead of one per batch.
    totals = torch.zeros(6, dtype=torch.float64, device=device)
    exact = _sums_known(criterion)  # decided by the criterion: the same in every process
    for images, masks in loader:
        images = normalize(images.to(device, non_blocking=True))
        masks = masks.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images)
        logits = logits.float()
        if exact:
            totals[:4] += loss_sums(criterion, logits, masks)
        else:
            totals[4] += criterion(logits, masks).double() * images.shape[0]
        totals[5] += images.shape[0]
        masks = torch.where(masks < num_classes, masks, torch.full_like(masks, IGNORE_INDEX))
        confusion.update(logits.argmax(dim=1), masks)
    if distributed.is_distributed():
        distributed.all_reduce_sum_(totals)
        distributed.reduce_metric_(confusion)
    totals = totals.cpu()
    if exact:
        loss = loss_from_sums(criterion, totals[:4])
    else:
        loss = totals[4].item() / max(totals[5].item(), 1.0)
    return {"val_loss": loss, "val_mIoU": 100.0 * confusion.compute()["mIoU"]}


# ----------------------------------------------------------------------------- logging


def _tensorboard_writer(run_dir: Path, cfg: RunConfig, *, purge_step: int):
    """A SummaryWriter on ``run_dir/tensorboard``, or None (disabled, or tensorboard not installed)."""
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        return None
    # purge_step drops events a killed run logged after its last checkpoint.
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge_step or None)


@torch.no_grad()
def prediction_panels(
    model: nn.Module, dataset: Any, *, device: torch.device, count: int = 2, amp: str = "off"
) -> list[np.ndarray]:
    """Image | ground truth | prediction of the first `count` images of `dataset`.

    Shape: a list of (H, 3 * W, 3) uint8 arrays.
    """
    model.eval()
    panels = []
    palette = palette_for(dataset.classes)
    for i in range(min(count, len(dataset))):
        image, mask = dataset[i]
        with autocast(device, amp):
            logits = model(normalize(image[None].to(device)))
        prediction = logits.float().argmax(dim=1)[0]
        rgb = image.permute(1, 2, 0).cpu().numpy()
        panels.append(np.concatenate([rgb, colorize(mask, palette), colorize(prediction, palette)], axis=1))
    return panels


# ----------------------------------------------------------------------------- fit


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    criterion: nn.Module,
    cfg: RunConfig,
    *,
    device: torch.device,
    run_dir: str | Path,
    num_classes: int,
    resume: Mapping[str, Any] | None = None,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train for ``cfg.epochs`` epochs, checkpointing every epoch; the model ends with the best weights.

    Files (rank 0 only): ``run_dir/last.pt`` every epoch, ``best.pt`` at each new best validation
    loss (see `save_checkpoint`), a row per epoch in ``history.csv``, and TensorBoard scalars and
    prediction images under ``run_dir/tensorboard`` when tensorboard is installed.

    The steps, in order: check the checkpoint to resume (`_check_resumable`), build the optimiser,
    schedule and scaler (`_setup`), restore the checkpoint's state and files (`_resume`), then
    per epoch train and validate (`_train_and_validate`), checkpoint and log (`_end_epoch`) and
    stop early when the patience is used up (`_stops_early`); finally load best.pt.

    Args:
        model: the plain model on `device` (its state dict is what the checkpoints hold).
        train_loader, val_loader: from `lib.experiment.make_loaders` (sharded under torchrun).
        resume: a checkpoint dict (`load_checkpoint`) to continue from: weights, optimizer,
            schedule, scaler, random states and data order are restored and training goes on with
            the epoch after the saved one. ``history.csv`` is rewritten from the checkpoint's
            history (rows of an epoch that was cut short disappear). It must come from as many
            processes as this run has; a poly schedule keeps its horizon (see `LRSchedule`).
        on_epoch_end: called with each epoch's history row after its checkpoint is written.

    Returns:
        History: one dict per epoch (epoch, train_loss, val_loss, val_mIoU, lr, seconds).

    Raises:
        ValueError: `resume` cannot be continued by this run (names the checkpoint and the fix).
        FloatingPointError: a NaN or infinite loss (names the epoch and step).
        DiskSpaceError: not enough free space for a checkpoint (names the folder and the bytes).
    """
    run_dir = Path(run_dir)
    updates_per_epoch = math.ceil(_steps_per_epoch(train_loader, cfg) / cfg.grad_accum_steps)
    if resume is not None:
        _check_resumable(resume, cfg, updates_per_epoch=updates_per_epoch)
        model.load_state_dict(resume["model"])
    configure_determinism(cfg, device)
    run = _setup(
        model, train_loader, val_loader, criterion, cfg, device=device, run_dir=run_dir,
        num_classes=num_classes, total_steps=cfg.epochs * updates_per_epoch,
    )  # fmt: skip
    if resume is not None:
        _resume(run, resume)
    last_epoch = _last_epoch(run, resumed=resume is not None)
    run.writer = _open_writer(run, resumed=resume is not None)
    first_epoch = len(run.history) + 1
    epochs = tqdm(
        range(first_epoch, last_epoch + 1),
        desc="training",
        initial=first_epoch - 1,
        total=cfg.epochs,
        disable=not (cfg.progress and run.main),
    )
    try:
        for epoch in epochs:
            row, improved = _train_and_validate(run, epoch)
            _end_epoch(run, row, improved=improved, bar=epochs)
            if on_epoch_end is not None:
                on_epoch_end(row)
            if _stops_early(run, epoch):
                break
    finally:
        if run.writer is not None:
            run.writer.close()
    distributed.barrier()
    model.load_state_dict(torch.load(run_dir / "best.pt", map_location=device, weights_only=True)["model"])
    return run.history


@dataclasses.dataclass
class _Run:
    """What the steps of one `fit` call share: the objects it trains with and its progress."""

    model: nn.Module  # the plain model: saved, validated
    train_model: nn.Module  # what trains: `prepare_model` of `model`
    train_loader: DataLoader
    val_loader: DataLoader
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    cfg: RunConfig
    device: torch.device
    run_dir: Path
    num_classes: int
    main: bool  # rank 0: writes the files and logs
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    best: float = math.inf  # best validation loss so far
    since_best: int = 0  # epochs since it
    writer: Any = None  # TensorBoard SummaryWriter (rank 0) or None


def _check_resumable(resume: Mapping[str, Any], cfg: RunConfig, *, updates_per_epoch: int) -> None:
    """Refuse a checkpoint this run cannot continue exactly, before anything is built.

    Raises:
        ValueError: a checkpoint without the resume state, written by another number of processes
            (each process restores its own random state: another world size would hand ranks
            the states of others), or a poly schedule asked to go past its horizon.
    """
    path = resume.get("path", "the checkpoint")
    missing = sorted({"rng", "data_order", "best_val_loss", "epochs_since_best", "history"} - set(resume))
    if missing:
        raise ValueError(
            f"{path} cannot be resumed (it has no {', '.join(missing)}: written before resumable "
            "checkpoints); start a new run from its weights with --checkpoint"
        )
    saved_world, world = int(resume.get("world_size", len(resume["rng"]))), distributed.world_size()
    if saved_world != world:
        launch = "without torchrun" if saved_world == 1 else f"with torchrun --nproc_per_node={saved_world}"
        raise ValueError(
            f"{path} was written by {saved_world} process(es) and this run has {world}: the random "
            f"states and data shards of each process would not match; resume it {launch}, or start "
            "a new run from its weights with --checkpoint"
        )
    schedule = resume["scheduler"]
    if schedule.get("kind") == "poly" and "total_steps" in schedule:
        done, steps, horizon = int(resume["epoch"]), int(schedule["steps"]), int(schedule["total_steps"])
        most = done + max(0, horizon - steps) // updates_per_epoch
        if cfg.epochs > most:
            raise ValueError(
                f"{path}: its poly schedule reaches learning rate 0 at optimizer step {horizon} (epoch "
                f"{most}), so epochs {most + 1}-{cfg.epochs} of epochs={cfg.epochs} would train "
                f"nothing; resume with --epochs {most} or fewer, or start a new run with "
                f"--epochs {cfg.epochs} (from its weights with --checkpoint)"
            )


def _setup(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    criterion: nn.Module,
    cfg: RunConfig,
    *,
    device: torch.device,
    run_dir: Path,
    num_classes: int,
    total_steps: int,
) -> _Run:
    """The training module, optimiser, schedule (over `total_steps` updates) and GradScaler."""
    train_model = prepare_model(model, cfg, device=device)
    optimizer = build_optimizer(model, cfg)
    schedule = build_scheduler(optimizer, cfg, total_steps=total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=resolve_amp(cfg.amp, device) == "fp16")
    main = distributed.is_main()
    if main and cfg.amp == "auto":
        log_line(f"amp=auto on {device}: {resolve_amp(cfg.amp, device)}", progress=cfg.progress)
    return _Run(
        model=model, train_model=train_model, train_loader=train_loader, val_loader=val_loader,
        criterion=criterion, optimizer=optimizer, schedule=schedule, scaler=scaler, cfg=cfg,
        device=device, run_dir=run_dir, num_classes=num_classes, main=main,
    )  # fmt: skip


def _resume(run: _Run, resume: Mapping[str, Any]) -> None:
    """Load a checkpoint's training state into `run`; on rank 0 rewrite history.csv from it and
    put back a best.pt a kill may have lost."""
    run.optimizer.load_state_dict(resume["optimizer"])
    planned_steps = run.schedule.total_steps
    run.schedule.load_state_dict(resume["scheduler"])
    if resume.get("scaler"):
        run.scaler.load_state_dict(resume["scaler"])
    states = resume["rng"]
    set_rng_state(states[distributed.rank() % len(states)])
    restore_data_order(run.train_loader, resume["data_order"])
    run.history = [dict(row) for row in resume["history"]]
    if len(run.history) != int(resume["epoch"]):
        raise ValueError(f"checkpoint history has {len(run.history)} rows for epoch {resume['epoch']}")
    run.best, run.since_best = float(resume["best_val_loss"]), int(resume["epochs_since_best"])
    if not run.main:
        return
    (run.run_dir / "history.csv").unlink(missing_ok=True)
    for row in run.history:
        append_csv_row(run.run_dir / "history.csv", row)
    path = resume.get("path", "checkpoint")
    log_line(f"resuming {path} after epoch {len(run.history)}", progress=run.cfg.progress)
    if run.schedule.kind == "poly" and planned_steps < run.schedule.total_steps:
        log_line(
            f"poly schedule: keeping the checkpoint's horizon of {run.schedule.total_steps} optimizer "
            f"steps; epochs={run.cfg.epochs} ends at step {planned_steps}, before the rate reaches 0",
            progress=run.cfg.progress,
        )
    if run.since_best == 0 and Path(resume.get("path", "")).resolve() == (run.run_dir / "last.pt").resolve():
        mark_best(run.run_dir)  # the last epoch was the best: a kill may have come before best.pt was


def _last_epoch(run: _Run, *, resumed: bool) -> int:
    """``cfg.epochs``, or the checkpoint's epoch when the run it continues had stopped early (and
    was stopped again before the end)."""
    patience = run.cfg.early_stopping_patience
    if resumed and patience is not None and run.since_best >= patience:
        return len(run.history)
    return run.cfg.epochs


def _open_writer(run: _Run, *, resumed: bool) -> Any:
    """Rank 0's TensorBoard writer (or None), after checking the disk can take a checkpoint."""
    if not run.main:
        return None
    # Fail now rather than after the first epoch: weights + optimizer state (Adam: two moments).
    factor = 3 if run.cfg.optimizer == "adam" else 2
    check_free_space(run.run_dir, checkpoint_nbytes(run.model.state_dict()) * factor)
    writer = _tensorboard_writer(run.run_dir, run.cfg, purge_step=run.schedule.steps)
    if writer is not None and not resumed:
        writer.add_text("config", f"```\n{run.cfg.to_json()}\n```")
    return writer


def _train_and_validate(run: _Run, epoch: int) -> tuple[dict[str, float], bool]:
    """One epoch of training and validation; returns its history row and whether it is the best."""
    if isinstance(run.train_loader.sampler, DistributedSampler):
        run.train_loader.sampler.set_epoch(epoch)
    start = time.perf_counter()
    lrs = {"lr": group_lr(run.optimizer)}
    if run.cfg.backbone_lr is not None:
        lrs["lr_backbone"] = group_lr(run.optimizer, "backbone")
    train_loss = train_one_epoch(
        run.train_model, run.train_loader, run.criterion, run.optimizer, run.cfg,
        device=run.device, epoch=epoch, schedule=run.schedule, scaler=run.scaler, writer=run.writer,
    )  # fmt: skip
    val = validate(
        run.model, run.val_loader, run.criterion, device=run.device, num_classes=run.num_classes,
        amp=run.cfg.amp,
    )  # fmt: skip
    run.schedule.step_epoch(val["val_loss"])
    row = {"epoch": epoch, "train_loss": train_loss, **val, **lrs, "seconds": time.perf_counter() - start}
    run.history.append(row)
    improved = val["val_loss"] < run.best
    run.best, run.since_best = (val["val_loss"], 0) if improved else (run.best, run.since_best + 1)
    return row, improved


def _end_epoch(run: _Run, row: dict[str, float], *, improved: bool, bar: Any) -> None:
    """Checkpoint the epoch (collective), then on rank 0 its history.csv row, log line and
    TensorBoard scalars."""
    rng = distributed.all_gather_object(rng_state())  # every process's, for an exact resume
    state = None
    if run.main:
        state = checkpoint_state(
            model=run.model, optimizer=run.optimizer, schedule=run.schedule, scaler=run.scaler,
            cfg=run.cfg, history=run.history, best_val_loss=run.best, epochs_since_best=run.since_best,
            rng=rng, data_order=data_order_state(run.train_loader),
        )  # fmt: skip
    _save_epoch(state, run.run_dir, best=improved, device=run.device)
    if not run.main:
        return
    append_csv_row(run.run_dir / "history.csv", row)
    _report_epoch(row, run.cfg, improved=improved, bar=bar)
    if run.writer is not None:
        _log_epoch(
            run.writer, row, run.model, run.val_loader.dataset, step=run.schedule.steps,
            device=run.device, amp=run.cfg.amp,
        )  # fmt: skip


def _stops_early(run: _Run, epoch: int) -> bool:
    """Whether ``cfg.early_stopping_patience`` epochs have passed without a new best (logged)."""
    patience = run.cfg.early_stopping_patience
    if patience is None or run.since_best < patience:
        return False
    if run.main:
        log_line(
            f"early stopping after epoch {epoch}: no new best validation loss for {patience} epochs",
            progress=run.cfg.progress,
        )
    return True


def _report_epoch(row: Mapping[str, float], cfg: RunConfig, *, improved: bool, bar: Any) -> None:
    bar.set_postfix(
        train=f"{row['train_loss']:.4f}", val=f"{row['val_loss']:.4f}", mIoU=f"{row['val_mIoU']:.1f}"
    )
    log_line(
        f"epoch {row['epoch']}/{cfg.epochs}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
        f"val mIoU {row['val_mIoU']:.2f}, lr {row['lr']:.2e}, {row['seconds']:.0f} s"
        + (" (best)" if improved else ""),
        progress=cfg.progress,
    )


def _save_epoch(state: dict[str, Any] | None, run_dir: Path, *, best: bool, device: torch.device) -> None:
    """Check the disk on rank 0 and write its checkpoint `state` there (None on the other ranks).

    Collective: every process calls it, and all of them raise DiskSpaceError when rank 0 lacks
    the space (a rank that raised alone would leave the others waiting forever).
    """
    error = None
    if state is not None:
        try:
            check_free_space(run_dir, checkpoint_nbytes(state))
        except DiskSpaceError as err:
            error = err
    if not distributed.all_true(error is None, device=device):
        raise error or DiskSpaceError("rank 0 has no disk space for the checkpoint (see its message)")
    if state is not None:
        save_checkpoint(state, run_dir, best=best)


def _log_epoch(
    writer: Any, row: Mapping[str, float], model: nn.Module, dataset: Any, *, step: int, device, amp
) -> None:
    """Epoch scalars and prediction panels at global step `step` (optimizer steps so far), the x axis
    of every TensorBoard curve of the run."""
    for key in ("epoch", "train_loss", "val_loss", "val_mIoU", "lr", "lr_backbone", "seconds"):
        if key in row:
            writer.add_scalar(f"epoch/{key}", row[key], step)
    for i, panel in enumerate(prediction_panels(model, dataset, device=device, amp=amp)):
        writer.add_image(f"val/prediction_{i}", panel, step, dataformats="HWC")
    writer.flush()
