"""How a run trains, set up before its first step: the optimiser and its parameter groups, the
learning-rate schedule, the module the loop calls (SyncBatchNorm, channels-last, DDP, torch.compile),
mixed precision and torch's determinism switches. `lib.train.fit` builds them from the RunConfig.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lib import distributed
from lib.config import RunConfig
from lib.utils import log_line

__all__ = [
    "AMP_DTYPES",
    "CUBLAS_WORKSPACE_CONFIG",
    "LRSchedule",
    "autocast",
    "build_optimizer",
    "build_scheduler",
    "configure_determinism",
    "group_lr",
    "param_groups",
    "prepare_model",
    "resolve_amp",
    "set_batchnorm_eval",
]

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


def group_lr(optimizer: torch.optim.Optimizer, name: str = "head") -> float:
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

    The horizon ``total_steps`` is part of the state: a resumed poly schedule continues the curve
    it started on, whatever the resumed run's ``epochs``. `fit` refuses a resume whose epochs would
    go past that horizon (the poly rate is 0 there: those epochs would train nothing) and logs
    when the resumed run ends before it (the rate then stops above 0).
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
            "total_steps": self.total_steps,
            "steps": self.steps,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "plateau_scales": list(self.plateau_scales),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the progress and the horizon; the base rates come from the current config.

        A state without ``total_steps`` (checkpoints before version 3) keeps this schedule's.
        """
        if state["kind"] != self.kind:
            raise ValueError(f"schedule state is for {state['kind']!r}, this schedule is {self.kind!r}")
        # The horizon shapes the whole poly curve: rebuilding it from a changed `epochs` would make
        # the learning rate jump at the resume.
        self.total_steps = max(1, int(state.get("total_steps", self.total_steps)))
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


#: The cuBLAS workspace setting torch's deterministic mode requires on CUDA >= 10.2.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


def configure_determinism(cfg: RunConfig, device: torch.device) -> None:
    """Set torch's process-wide determinism switches for a run of `cfg` on `device`.

    ``cfg.deterministic``: deterministic kernels wherever torch has them
    (``torch.use_deterministic_algorithms(True, warn_only=True)``: an op without one warns, naming
    it, and runs its usual kernel - raising would stop every DeepLab run, see below), cuDNN in its
    deterministic mode without autotuning, and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the
    environment when it is unset. cuBLAS reads that variable when its first call of the process
    sets up the workspace, so it must be set before the first cuBLAS call (a matmul / linear
    layer on the GPU): `fit` calls this before its first CUDA computation, but a process that ran
    one earlier (a notebook that trained before) needs it exported before it starts.

    Otherwise on CUDA, cuDNN autotunes (``benchmark``: the crops are of fixed size, so it picks the
    fastest kernels once), unless the caller enabled deterministic algorithms; nothing is switched
    off that the caller switched on.

    Where the guarantee holds: the same config and seed repeat bit for bit on the same machine,
    GPU model, driver and software versions (torch, CUDA, cuDNN) and number of processes; the
    DataLoader workers are seeded (`lib.data.seed_worker`), so augmentations repeat too. Other
    GPU models or versions pick other kernels. CPU runs repeat on the same machine either way.
    Except: on CUDA, the backward of bilinear upsampling and of adaptive average pooling (both in
    every DeepLab) has no deterministic kernel in torch's docs; torch warns about them and those
    gradients may differ in the last bits from run to run. (Not yet checked on a GPU.)
    """
    if not cfg.deterministic:
        if device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
            torch.backends.cudnn.benchmark = True
        return
    if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        if device.type == "cuda" and torch.cuda.is_initialized() and distributed.is_main():
            log_line(
                "deterministic: CUBLAS_WORKSPACE_CONFIG set after CUDA started; if cuBLAS ran before, "
                f"export CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE_CONFIG} before starting Python",
                progress=cfg.progress,
            )
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE_CONFIG
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
