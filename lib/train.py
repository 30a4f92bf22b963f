"""Training a run can be trusted with for days: the loop, its schedule, checkpoints and guard rails.

`fit` is the whole of it: ``cfg.epochs`` passes of `train_one_epoch` (mixed precision, gradient
accumulation and clipping, channels-last, torch.compile, DistributedDataParallel under torchrun),
each followed by `validate` (loss and mIoU summed over processes) and a checkpoint.

Checkpoints are one dict (`checkpoint_state`): model, optimizer, LR schedule, GradScaler, epoch,
history, best validation loss, the random states of every process (Python, NumPy, torch, CUDA)
and the state of the training data order, plus the RunConfig. Every epoch writes ``last.pt``
(atomically: a temporary file, then a rename, after checking the free disk space); an epoch with
a new best validation loss also makes it ``best.pt`` (a hard link, or a copy where links are not
supported). ``fit(..., resume=load_checkpoint(run_dir))`` continues exactly where the run stopped:
with ``num_workers=0`` the resumed run ends with the same weights as an uninterrupted one. With
worker processes the order of the images resumes exactly too, but the random crops and flips come
from freshly seeded workers (persistent DataLoader workers keep their random state to themselves).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
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
from lib.classes import IGNORE_INDEX
from lib.config import RunConfig
from lib.data import normalize
from lib.metrics import ConfusionMatrix
from lib.utils import append_csv_row, atomic_torch_save, colorize

__all__ = [
    "AMP_DTYPES",
    "DiskSpaceError",
    "LRSchedule",
    "build_optimizer",
    "build_scheduler",
    "check_free_space",
    "checkpoint_state",
    "checkpoint_nbytes",
    "data_order_state",
    "find_checkpoint",
    "latest_run",
    "fit",
    "load_checkpoint",
    "prepare_model",
    "resolve_amp",
    "restore_data_order",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "train_one_epoch",
    "validate",
]

CHECKPOINT_VERSION = 2
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DiskSpaceError(OSError):
    """Not enough free disk space to write a checkpoint."""


# ----------------------------------------------------------------------------- optimiser, schedule


def param_groups(model: nn.Module, cfg: RunConfig) -> list[dict[str, Any]]:
    """Two parameter groups: ``backbone`` (lr ``cfg.backbone_lr``, default ``cfg.lr``) and ``head``
    (everything else: ASPP, decoder, classifier; lr ``cfg.lr``). Empty groups are left out."""
    backbone = getattr(model, "backbone", None)
    in_backbone = {id(p) for p in backbone.parameters()} if isinstance(backbone, nn.Module) else set()
    groups = [
        {
            "name": "backbone",
            "params": [p for p in model.parameters() if id(p) in in_backbone],
            "lr": cfg.backbone_lr if cfg.backbone_lr is not None else cfg.lr,
        },
        {"name": "head", "params": [p for p in model.parameters() if id(p) not in in_backbone], "lr": cfg.lr},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """Adam (the seed's) or SGD with momentum 0.9 over `param_groups`."""
    groups = param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _group_lr(optimizer: torch.optim.Optimizer, name: str = "head") -> float:
    for group in optimizer.param_groups:
        if group.get("name") == name:
            return group["lr"]
    return optimizer.param_groups[-1]["lr"]


class LRSchedule:
    """Learning rate of each parameter group = its base rate x warm-up x poly x plateau factor.

    - warm-up: optimizer step ``s`` (counted from 0) of the first ``warmup_iters`` uses
      ``(s + 1) / warmup_iters``;
    - ``kind="poly"``: ``(1 - s / total_steps) ** 0.9`` (DeepLab's schedule);
    - ``kind="plateau"``: the factor halves (``factor``) when the validation loss has not improved
      by a relative ``threshold`` for more than ``patience`` epochs, exactly as torch's
      ``ReduceLROnPlateau(mode="min")`` with its defaults decides (the seed's schedule).

    Call `step` after every optimizer step and `step_epoch` after every validation; the state
    (`state_dict`) is a few numbers, saved with every checkpoint.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        kind: str,
        total_steps: int,
        warmup_iters: int = 0,
        patience: int = 5,
        factor: float = 0.5,
        threshold: float = 1e-4,
        eps: float = 1e-8,
    ) -> None:
        if kind not in ("plateau", "poly"):
            raise ValueError(f"unknown schedule {kind!r}; choose plateau or poly")
        self.optimizer = optimizer
        self.kind = kind
        self.total_steps = max(1, int(total_steps))
        self.warmup_iters = int(warmup_iters)
        self.patience, self.factor, self.threshold, self.eps = patience, factor, threshold, eps
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.plateau_scales = [1.0] * len(self.base_lrs)
        self.steps = 0  # optimizer steps taken
        self.best = math.inf
        self.bad_epochs = 0
        self._apply()

    def _factor(self) -> float:
        s = self.steps
        factor = (s + 1) / self.warmup_iters if s < self.warmup_iters else 1.0
        if self.kind == "poly":
            factor *= max(0.0, 1.0 - s / self.total_steps) ** 0.9
        return factor

    def _apply(self) -> None:
        factor = self._factor()
        for group, base, scale in zip(
            self.optimizer.param_groups, self.base_lrs, self.plateau_scales, strict=True
        ):
            group["lr"] = base * factor * scale

    def step(self) -> None:
        """After an optimizer step: advance warm-up and poly."""
        self.steps += 1
        self._apply()

    def step_epoch(self, val_loss: float) -> None:
        """After a validation: the plateau rule (no-op for poly)."""
        if self.kind != "plateau":
            return
        if val_loss < self.best * (1.0 - self.threshold):
            self.best, self.bad_epochs = float(val_loss), 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            for i, group in enumerate(self.optimizer.param_groups):
                if group["lr"] - group["lr"] * self.factor > self.eps:
                    self.plateau_scales[i] *= self.factor
            self.bad_epochs = 0
            self._apply()

    @property
    def last_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "steps": self.steps,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "plateau_scales": list(self.plateau_scales),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the progress; the base rates and step counts come from the current config."""
        if state["kind"] != self.kind:
            raise ValueError(f"schedule state is for {state['kind']!r}, this schedule is {self.kind!r}")
        self.steps = int(state["steps"])
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.plateau_scales = [float(s) for s in state["plateau_scales"]]
        self._apply()


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: RunConfig, *, total_steps: int) -> LRSchedule:
    """The `LRSchedule` of `cfg` (scheduler, warmup_iters, plateau_patience) over `total_steps`
    optimizer steps."""
    return LRSchedule(
        optimizer,
        kind=cfg.scheduler,
        total_steps=total_steps,
        warmup_iters=cfg.warmup_iters,
        patience=cfg.plateau_patience,
    )


# ----------------------------------------------------------------------------- model preparation


def prepare_model(model: nn.Module, cfg: RunConfig, *, device: torch.device) -> nn.Module:
    """The module the training loop calls, sharing its parameters with `model`.

    In order: SyncBatchNorm (``cfg.sync_bn``, several CUDA processes), channels-last memory
    format (``cfg.channels_last``), DistributedDataParallel (under torchrun) and ``torch.compile``
    (``cfg.compile``). `model` itself is changed in place by the first two and stays the module
    to save, validate and evaluate.
    """
    if cfg.sync_bn and distributed.is_distributed():
        if device.type != "cuda":
            raise ValueError(
                "sync_bn needs CUDA (torch's SyncBatchNorm has no CPU path); on CPU leave it off "
                "(each process then normalises its own batch) or use --freeze-bn"
            )
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if converted is not model:
            raise ValueError("sync_bn: the model's top module is a BatchNorm layer; wrap it in a module")
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    train_model: nn.Module = model
    if distributed.is_distributed():
        train_model = DistributedDataParallel(
            model,
            device_ids=[torch.cuda.current_device() if device.index is None else device.index]
            if device.type == "cuda"
            else None,
        )
    if cfg.compile:
        train_model = torch.compile(train_model)
    return train_model


def set_batchnorm_eval(model: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode (running statistics used, not updated)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def resolve_amp(amp: str, device: torch.device) -> str:
    """The mixed-precision mode ``RunConfig.amp`` means on `device`: "auto" is bf16 on a GPU that
    supports it, fp16 on one that does not (T4, P100: fp16 + GradScaler), off on a CPU."""
    if amp != "auto":
        return amp
    if device.type != "cuda":
        return "off"
    # A T4 "supports" bf16 by emulation, slowly: only bf16 in hardware counts.
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context of ``RunConfig.amp`` ("off": none; "auto": see `resolve_amp`)."""
    amp = resolve_amp(amp, device)
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


# ----------------------------------------------------------------------------- one epoch


def _steps_per_epoch(loader: DataLoader, cfg: RunConfig) -> int:
    steps = len(loader)
    return steps if cfg.max_steps_per_epoch is None else min(steps, cfg.max_steps_per_epoch)


def _check_finite(loss: torch.Tensor, *, epoch: int, step: int, lr: float, device: torch.device) -> None:
    """Raise on a NaN or infinite loss, in every process at once (a lone rank would hang the others)."""
    finite = distributed.all_true(bool(torch.isfinite(loss)), device=device)
    if not finite:
        value = loss.item() if not torch.isfinite(loss) else "finite here but not in another process"
        raise FloatingPointError(
            f"loss is {value} at epoch {epoch}, step {step}: lower the learning rate "
            f"(lr={lr:g}), try --grad-clip, or check the labels of this batch"
        )


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
        FloatingPointError: the loss became NaN or infinite (names the epoch and step).
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
    total, count = 0.0, 0
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
            _check_finite(loss, epoch=epoch, step=step, lr=_group_lr(optimizer), device=device)
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
        loss_value = loss.item()
        total += loss_value * images.shape[0]
        count += images.shape[0]
        if writer is not None and ends_group and schedule is not None:
            writer.add_scalar("train/loss_step", loss_value, schedule.steps)
            writer.add_scalar("train/lr", _group_lr(optimizer), schedule.steps)
        bar.set_postfix(
            loss=f"{total / count:.4f}",
            lr=f"{_group_lr(optimizer):.2e}",
            img_s=f"{world * count / (time.perf_counter() - start):.1f}",
        )
    if distributed.is_distributed():
        sums = distributed.all_reduce_sum_(torch.tensor([total, count], dtype=torch.float64, device=device))
        total, count = sums[0].item(), int(sums[1].item())
    return total / max(count, 1)


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
    """Validation loss (image-weighted mean of the batch losses) and mIoU in percent.

    Under torchrun each process passes its own shard (`lib.distributed.ShardSampler`); the loss
    sums and the confusion matrices are summed across processes, so every process returns the
    numbers of the whole split.
    """
    model.eval()
    confusion = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, device=device)
    total, count = 0.0, 0
    for images, masks in loader:
        images = normalize(images.to(device, non_blocking=True))
        masks = masks.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images)
        logits = logits.float()
        total += criterion(logits, masks).item() * images.shape[0]
        count += images.shape[0]
        masks = torch.where(masks < num_classes, masks, torch.full_like(masks, IGNORE_INDEX))
        confusion.update(logits.argmax(dim=1), masks)
    if distributed.is_distributed():
        sums = distributed.all_reduce_sum_(torch.tensor([total, count], dtype=torch.float64, device=device))
        total, count = sums[0].item(), int(sums[1].item())
        distributed.reduce_metric_(confusion)
    return {"val_loss": total / max(count, 1), "val_mIoU": 100.0 * confusion.compute()["mIoU"]}


# ----------------------------------------------------------------------------- random and data state


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch and CUDA random states (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].cpu().numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())  # a checkpoint may have been loaded onto a GPU
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def data_order_state(loader: DataLoader) -> dict[str, Any]:
    """What decides the order of the next epochs of `loader`.

    A DistributedSampler's order is a function of (seed, epoch): nothing to save. A shuffling
    sampler with a generator (one process): the generator's state.
    """
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        return {"kind": "epoch"}
    generator = getattr(sampler, "generator", None)
    if isinstance(generator, torch.Generator):
        return {"kind": "generator", "state": generator.get_state()}
    return {"kind": "global"}  # drawn from the global torch RNG, restored with `set_rng_state`


def restore_data_order(loader: DataLoader, state: Mapping[str, Any]) -> None:
    """Make the next epochs of a fresh `loader` draw the order the interrupted run would have drawn.

    The sampler shares the loader's generator, from which a new DataLoader iterator first draws
    a seed for its workers. Persistent workers draw it once, in the first epoch only; a resumed run
    draws it again, so the sampler then gets its own generator restored to the saved state.
    """
    if state.get("kind") != "generator":
        return
    sampler = loader.sampler
    generator = getattr(sampler, "generator", None)
    if not isinstance(generator, torch.Generator):
        raise ValueError("the checkpoint saved a sampler generator but this loader's sampler has none")
    if loader.num_workers > 0 and loader.persistent_workers:
        generator = torch.Generator()
        sampler.generator = generator
    generator.set_state(state["state"])


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_nbytes(state: Any) -> int:
    """Bytes of the tensors in a (nested) checkpoint dict, plus 1 MiB for everything else."""

    def tensors(obj: Any) -> int:
        if isinstance(obj, torch.Tensor):
            return obj.nelement() * obj.element_size()
        if isinstance(obj, Mapping):
            return sum(tensors(v) for v in obj.values())
        if isinstance(obj, list | tuple):
            return sum(tensors(v) for v in obj)
        return 0

    return tensors(state) + 2**20


def check_free_space(folder: str | Path, needed: int) -> None:
    """Raise DiskSpaceError, naming the folder and the bytes, when `folder` has less than `needed` free."""
    folder = Path(folder)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskSpaceError(
            f"not enough free disk space to save a checkpoint in {folder}: need about {needed:,} bytes "
            f"({needed / 2**30:.2f} GiB), only {free:,} free; free some space there or choose another "
            "--out-dir (resume later with --resume pointing at the run folder)"
        )


def save_checkpoint(state: Mapping[str, Any], run_dir: str | Path, *, best: bool) -> None:
    """Write ``run_dir/last.pt`` atomically and, when `best`, make it ``best.pt`` too.

    The free space is checked first (DiskSpaceError). ``best.pt`` becomes a hard link to the new
    ``last.pt`` (no second write; the next ``last.pt`` replaces the link, not the file it shares),
    or a copy on file systems without hard links. Both are renamed into place, never half written.
    """
    run_dir = Path(run_dir)
    check_free_space(run_dir, checkpoint_nbytes(state))
    last = run_dir / "last.pt"
    atomic_torch_save(dict(state), last)
    if best:
        _mark_best(run_dir)


def _mark_best(run_dir: Path) -> None:
    """Make ``best.pt`` the current ``last.pt`` (hard link, else copy), renamed into place."""
    last = run_dir / "last.pt"
    tmp = run_dir / ".best.pt.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(last, tmp)
    except OSError:
        check_free_space(run_dir, last.stat().st_size)
        shutil.copyfile(last, tmp)
    os.replace(tmp, run_dir / "best.pt")


def find_checkpoint(path: str | Path, *, name: str = "last.pt") -> Path:
    """`path` itself when it is a file, else ``path/name`` (a run folder)."""
    path = Path(path)
    if path.is_dir():
        candidate = path / name
        if not candidate.is_file():
            found = ", ".join(sorted(p.name for p in path.glob("*.pt"))) or "no .pt file"
            raise FileNotFoundError(f"run folder {path} has no {name} ({found}); pass a checkpoint file")
        return candidate
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (pass a .pt file or a run folder)")
    return path


def latest_run(out_dir: str | Path) -> Path:
    """The run folder under ``out_dir/runs`` whose ``last.pt`` was written last: the run to resume
    after a disconnect (``--resume latest``, the notebook's ``RESUME = "latest"``).

    Raises:
        FileNotFoundError: no run folder there has a ``last.pt``.
    """
    found = sorted(Path(out_dir, "runs").glob("*/last.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no run to resume: no {Path(out_dir, 'runs')}/*/last.pt (start a new run)")
    return found[-1].parent


def load_checkpoint(path: str | Path, *, name: str = "last.pt", map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint written by `fit`, from its file or its run folder (``name`` inside it)."""
    file = find_checkpoint(path, name=name)
    state = torch.load(file, map_location=map_location, weights_only=True)
    missing = {"model", "optimizer", "scheduler", "epoch", "config"} - set(state)
    if missing:
        raise ValueError(f"{file} is not a training checkpoint of this project (missing {sorted(missing)})")
    state["path"] = str(file)
    return state


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
    for i in range(min(count, len(dataset))):
        image, mask = dataset[i]
        with autocast(device, amp):
            logits = model(normalize(image[None].to(device)))
        prediction = logits.float().argmax(dim=1)[0]
        rgb = image.permute(1, 2, 0).cpu().numpy()
        panels.append(np.concatenate([rgb, colorize(mask), colorize(prediction)], axis=1))
    return panels


def _log(message: str, *, progress: bool) -> None:
    if progress:
        tqdm.write(message)
    else:
        print(message, flush=True)


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

    Args:
        model: the plain model on `device` (its state dict is what the checkpoints hold).
        train_loader, val_loader: from `lib.experiment.make_loaders` (sharded under torchrun).
        resume: a checkpoint dict (`load_checkpoint`) to continue from: weights, optimizer,
            schedule, scaler, random states and data order are restored and training goes on with
            the epoch after the saved one. ``history.csv`` is rewritten from the checkpoint's
            history (rows of an epoch that was cut short disappear).
        on_epoch_end: called with each epoch's history row after its checkpoint is written.

    Returns:
        History: one dict per epoch (epoch, train_loss, val_loss, val_mIoU, lr, seconds).

    Raises:
        FloatingPointError: a NaN or infinite loss (names the epoch and step).
        DiskSpaceError: not enough free space for a checkpoint (names the folder and the bytes).
    """
    run_dir = Path(run_dir)
    main = distributed.is_main()
    if resume is not None:
        missing = sorted({"rng", "data_order", "best_val_loss", "epochs_since_best", "history"} - set(resume))
        if missing:
            raise ValueError(
                f"{resume.get('path', 'the checkpoint')} cannot be resumed (it has no {', '.join(missing)}: "
                "written before resumable checkpoints); start a new run from its weights with --checkpoint"
            )
        model.load_state_dict(resume["model"])
    train_model = prepare_model(model, cfg, device=device)
    optimizer = build_optimizer(model, cfg)
    updates_per_epoch = math.ceil(_steps_per_epoch(train_loader, cfg) / cfg.grad_accum_steps)
    schedule = build_scheduler(optimizer, cfg, total_steps=cfg.epochs * updates_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=resolve_amp(cfg.amp, device) == "fp16")
    if main and cfg.amp == "auto":
        _log(f"amp=auto on {device}: {resolve_amp(cfg.amp, device)}", progress=cfg.progress)
    if device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick the fastest kernels
    history: list[dict[str, float]] = []
    best, since_best = math.inf, 0
    if resume is not None:
        history, best, since_best = _restore(resume, optimizer, schedule, scaler, train_loader)
        if main:
            (run_dir / "history.csv").unlink(missing_ok=True)
            for row in history:
                append_csv_row(run_dir / "history.csv", row)
            _log(
                f"resuming {resume.get('path', 'checkpoint')} after epoch {len(history)}",
                progress=cfg.progress,
            )
        if (
            main
            and since_best == 0
            and Path(resume.get("path", "")).resolve() == (run_dir / "last.pt").resolve()
        ):
            _mark_best(run_dir)  # the last epoch was the best: a kill may have come before best.pt was
    first_epoch = len(history) + 1
    last_epoch = cfg.epochs
    patience = cfg.early_stopping_patience
    if resume is not None and patience is not None and since_best >= patience:
        last_epoch = len(history)  # it had stopped early (and was stopped again before the end)
    writer = _tensorboard_writer(run_dir, cfg, purge_step=schedule.steps) if main else None
    if writer is not None and resume is None:
        writer.add_text("config", f"```\n{cfg.to_json()}\n```")
    if main:  # fail now rather than after the first epoch: weights + optimizer state
        check_free_space(
            run_dir, checkpoint_nbytes(model.state_dict()) * (3 if cfg.optimizer == "adam" else 2)
        )
    epochs = tqdm(
        range(first_epoch, last_epoch + 1),
        desc="training",
        initial=first_epoch - 1,
        total=cfg.epochs,
        disable=not (cfg.progress and main),
    )
    try:
        for epoch in epochs:
            if isinstance(train_loader.sampler, DistributedSampler):
                train_loader.sampler.set_epoch(epoch)
            start = time.perf_counter()
            lrs = {"lr": _group_lr(optimizer)}
            if cfg.backbone_lr is not None:
                lrs["lr_backbone"] = _group_lr(optimizer, "backbone")
            train_loss = train_one_epoch(
                train_model, train_loader, criterion, optimizer, cfg,
                device=device, epoch=epoch, schedule=schedule, scaler=scaler, writer=writer,
            )  # fmt: skip
            val = validate(model, val_loader, criterion, device=device, num_classes=num_classes, amp=cfg.amp)
            schedule.step_epoch(val["val_loss"])
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                **val,
                **lrs,
                "seconds": time.perf_counter() - start,
            }
            history.append(row)
            improved = val["val_loss"] < best
            best, since_best = (val["val_loss"], 0) if improved else (best, since_best + 1)
            rng = distributed.all_gather_object(rng_state())  # every process's, for an exact resume
            state = None
            if main:
                state = checkpoint_state(
                    model=model, optimizer=optimizer, schedule=schedule, scaler=scaler, cfg=cfg,
                    history=history, best_val_loss=best, epochs_since_best=since_best, rng=rng,
                    data_order=data_order_state(train_loader),
                )  # fmt: skip
            _save_epoch(state, run_dir, best=improved, device=device)
            if main:
                append_csv_row(run_dir / "history.csv", row)
                _report_epoch(row, cfg, improved=improved, bar=epochs)
                if writer is not None:
                    _log_epoch(
                        writer,
                        row,
                        model,
                        val_loader.dataset,
                        step=schedule.steps,
                        device=device,
                        amp=cfg.amp,
                    )
            if on_epoch_end is not None:
                on_epoch_end(row)
            patience = cfg.early_stopping_patience
            if patience is not None and since_best >= patience:
                if main:
                    _log(
                        f"early stopping after epoch {epoch}: no new best validation loss for {patience} epochs",
                        progress=cfg.progress,
                    )
                break
    finally:
        if writer is not None:
            writer.close()
    distributed.barrier()
    model.load_state_dict(torch.load(run_dir / "best.pt", map_location=device, weights_only=True)["model"])
    return history


def checkpoint_state(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: LRSchedule,
    scaler: torch.amp.GradScaler,
    cfg: RunConfig,
    history: list[dict[str, float]],
    best_val_loss: float,
    epochs_since_best: int,
    rng: list[dict[str, Any]],
    data_order: dict[str, Any],
) -> dict[str, Any]:
    """The one dict a checkpoint holds: everything `fit` needs to go on exactly, and the config.

    ``rng`` holds one `rng_state` per process (by rank); ``epoch`` is the last finished epoch.
    """
    return {
        "version": CHECKPOINT_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": int(history[-1]["epoch"]),
        "config": cfg.to_dict(),
        "history": history,
        "best_val_loss": best_val_loss,
        "epochs_since_best": epochs_since_best,
        "rng": rng,
        "data_order": data_order,
        "world_size": distributed.world_size(),
    }


def _report_epoch(row: Mapping[str, float], cfg: RunConfig, *, improved: bool, bar: Any) -> None:
    bar.set_postfix(
        train=f"{row['train_loss']:.4f}", val=f"{row['val_loss']:.4f}", mIoU=f"{row['val_mIoU']:.1f}"
    )
    _log(
        f"epoch {row['epoch']}/{cfg.epochs}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
        f"val mIoU {row['val_mIoU']:.2f}, lr {row['lr']:.2e}, {row['seconds']:.0f} s"
        + (" (best)" if improved else ""),
        progress=cfg.progress,
    )


def _restore(
    resume: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    schedule: LRSchedule,
    scaler: torch.amp.GradScaler,
    train_loader: DataLoader,
) -> tuple[list[dict[str, float]], float, int]:
    """Load a checkpoint's training state in place; returns (history, best val loss, epochs since)."""
    optimizer.load_state_dict(resume["optimizer"])
    schedule.load_state_dict(resume["scheduler"])
    if resume.get("scaler"):
        scaler.load_state_dict(resume["scaler"])
    states = resume["rng"]
    set_rng_state(states[distributed.rank() % len(states)])
    restore_data_order(train_loader, resume["data_order"])
    history = [dict(row) for row in resume["history"]]
    if len(history) != int(resume["epoch"]):
        raise ValueError(f"checkpoint history has {len(history)} rows for epoch {resume['epoch']}")
    return history, float(resume["best_val_loss"]), int(resume["epochs_since_best"])


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
