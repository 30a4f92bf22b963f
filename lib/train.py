"""A short training loop: Adam, plateau or poly schedule, best-validation checkpoint."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lib.classes import IGNORE_INDEX
from lib.config import RunConfig
from lib.data import normalize
from lib.metrics import ConfusionMatrix
from lib.utils import append_csv_row, atomic_torch_save


def build_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: RunConfig, *, total_steps: int):
    """``plateau``: halve the LR when the validation loss stalls (stepped once per epoch).
    ``poly``: lr * (1 - step / total_steps) ** 0.9 (stepped after every batch)."""
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=0.5, patience=cfg.plateau_patience
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / max(1, total_steps)) ** 0.9
    )


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    epoch: int,
    scheduler=None,
    max_steps: int | None = None,
    progress: bool = True,
) -> float:
    """One pass over `loader`; returns the mean training loss.

    `scheduler`, when given, is stepped after every batch (per-iteration schedules such as poly).

    Raises:
        FloatingPointError: the loss became NaN or infinite (names the epoch and step).
    """
    model.train()
    total, count = 0.0, 0
    steps = len(loader) if max_steps is None else min(len(loader), max_steps)
    bar = tqdm(loader, total=steps, desc=f"epoch {epoch}", disable=not progress, leave=False)
    start = time.perf_counter()
    for step, (images, masks) in enumerate(bar):
        if step >= steps:
            break
        images = normalize(images.to(device, non_blocking=True))
        masks = masks.to(device, non_blocking=True)
        loss = criterion(model(images), masks)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at epoch {epoch}, step {step}: lower the learning rate "
                f"(lr={optimizer.param_groups[0]['lr']:g}) or check the labels of this batch"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * images.shape[0]
        count += images.shape[0]
        bar.set_postfix(
            loss=f"{total / count:.4f}",
            lr=f"{optimizer.param_groups[0]['lr']:.2e}",
            img_s=f"{count / (time.perf_counter() - start):.1f}",
        )
    return total / max(count, 1)


@torch.no_grad()
def validate(
    model: nn.Module, loader: DataLoader, criterion: nn.Module, *, device: torch.device, num_classes: int
) -> dict[str, float]:
    """Validation loss (pixel-weighted mean over batches) and mIoU in percent."""
    model.eval()
    confusion = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, device=device)
    total, count = 0.0, 0
    for images, masks in loader:
        images = normalize(images.to(device, non_blocking=True))
        masks = masks.to(device, non_blocking=True)
        logits = model(images)
        total += criterion(logits, masks).item() * images.shape[0]
        count += images.shape[0]
        masks = torch.where(masks < num_classes, masks, torch.full_like(masks, IGNORE_INDEX))
        confusion.update(logits.argmax(dim=1), masks)
    return {"val_loss": total / max(count, 1), "val_mIoU": 100.0 * confusion.compute()["mIoU"]}


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
) -> list[dict[str, float]]:
    """Train for ``cfg.epochs`` epochs, keeping the weights of the best validation loss.

    Writes ``run_dir/best.pt`` (one dict: model, optimizer, scheduler, epoch, config, history)
    whenever the validation loss improves, and appends a row per epoch to ``run_dir/history.csv``.
    On return the model holds the best weights.

    Returns:
        History: one dict per epoch (epoch, train_loss, val_loss, val_mIoU, lr, seconds).
    """
    run_dir = Path(run_dir)
    optimizer = build_optimizer(model, cfg)
    steps_per_epoch = (
        len(train_loader)
        if cfg.max_steps_per_epoch is None
        else min(len(train_loader), cfg.max_steps_per_epoch)
    )
    scheduler = build_scheduler(optimizer, cfg, total_steps=cfg.epochs * steps_per_epoch)
    per_batch = not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    history: list[dict[str, float]] = []
    best = math.inf
    epochs = tqdm(range(1, cfg.epochs + 1), desc="training", disable=not cfg.progress)
    for epoch in epochs:
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_one_epoch(
            model,
            train_loader,
            criterion,
            optimizer,
            device=device,
            epoch=epoch,
            scheduler=scheduler if per_batch else None,
            max_steps=cfg.max_steps_per_epoch,
            progress=cfg.progress,
        )
        val = validate(model, val_loader, criterion, device=device, num_classes=num_classes)
        if not per_batch:
            scheduler.step(val["val_loss"])
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            **val,
            "lr": lr,
            "seconds": time.perf_counter() - start,
        }
        history.append(row)
        append_csv_row(run_dir / "history.csv", row)
        if val["val_loss"] < best:
            best = val["val_loss"]
            atomic_torch_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "config": cfg.to_dict(),
                    "history": history,
                },
                run_dir / "best.pt",
            )
        epochs.set_postfix(
            train=f"{train_loss:.4f}", val=f"{val['val_loss']:.4f}", mIoU=f"{val['val_mIoU']:.1f}"
        )
    model.load_state_dict(torch.load(run_dir / "best.pt", map_location=device, weights_only=True)["model"])
    return history
