"""Load VainF/DeepLabV3Plus-Pytorch checkpoints (or our own) into a model from ``build_model``.

A VainF checkpoint is ``{"model_state": state_dict, "optimizer_state": ..., "best_score": ...}``; the
state dict may also come bare, and keys may carry DataParallel's ``module.`` prefix. Every key must
match the model exactly, except the final layer (the head, ``classifier.classifier.3.*``), which is
copied only when the checkpoint's head has the same kind and shapes as the model's: a 19-class
Cityscapes checkpoint initialises a 13-class or distance-head model with a fresh head.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["CheckpointMismatchError", "LoadReport", "load_pretrained", "read_checkpoint", "read_state_dict"]

_STATE_DICT_KEYS = ("model_state", "state_dict", "model")
_DDP_PREFIX = "module."


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not fit the model (outside the head)."""


@dataclass
class LoadReport:
    """What ``load_pretrained`` did.

    Attributes:
        loaded: model keys whose values came from the checkpoint.
        skipped: checkpoint keys that were not loaded (the checkpoint's head when it did not fit).
        head_loaded: whether the final layer came from the checkpoint.
        reason: why the head was skipped ("" when it was loaded).
        missing_batch_counters: ``num_batches_tracked`` buffers absent from the checkpoint (left as is).
    """

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    head_loaded: bool = False
    reason: str = ""
    missing_batch_counters: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"loaded {len(self.loaded)} tensors"
        if self.head_loaded:
            text += " including the head"
        else:
            text += f"; head kept freshly initialised ({self.reason})"
            if self.skipped:
                text += f"; skipped {', '.join(self.skipped)}"
        if self.missing_batch_counters:
            text += f"; {len(self.missing_batch_counters)} num_batches_tracked buffers absent"
        return text


def _numpy_scalar_globals() -> list[object]:
    """Globals a VainF checkpoint needs beyond tensors: its ``best_score`` is a numpy float64."""
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    allowed: list[object] = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    allowed += [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32)]
    return allowed


def read_checkpoint(path: str | PathLike[str], *, weights_only: bool = True) -> object:
    """``torch.load`` a checkpoint file on the CPU, allowing the numpy scalars VainF's files contain.

    Args:
        path: a ``torch.save`` file.
        weights_only: load with ``torch.load(weights_only=True)`` (tensors, containers, numbers and
            numpy scalars only). Set to False only for files you trust.

    Returns:
        Whatever the file holds (usually a dict).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file needs ``weights_only=False``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"cannot read {path} with weights_only=True ({error}); if you trust the file, "
            "pass weights_only=False"
        ) from error


def read_state_dict(
    checkpoint: str | PathLike[str] | Mapping[str, object], *, weights_only: bool = True
) -> dict[str, torch.Tensor]:
    """The model state dict inside a checkpoint file or dict, without a DataParallel ``module.`` prefix.

    Args:
        checkpoint: a path to a ``torch.save`` file, or an already loaded dict; either a wrapper
            holding the weights under "model_state" (VainF), "state_dict" or "model", or a bare
            state dict.
        weights_only: see ``read_checkpoint``.

    Returns:
        ``{key: tensor}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file or dict holds no state dict.
    """
    if isinstance(checkpoint, str | PathLike):
        checkpoint = read_checkpoint(checkpoint, weights_only=weights_only)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"expected a dict checkpoint, got {type(checkpoint).__name__}")
    for key in _STATE_DICT_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    state = dict(checkpoint)
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"no state dict found: expected tensors under one of {', '.join(_STATE_DICT_KEYS)} or a bare "
            f"state dict; top-level keys: {', '.join(map(str, list(state)[:8]))}"
        )
    if all(k.startswith(_DDP_PREFIX) for k in state):
        state = {k[len(_DDP_PREFIX) :]: v for k, v in state.items()}
    return state


def _few(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def load_pretrained(
    model: nn.Module,
    checkpoint: str | PathLike[str] | Mapping[str, object],
    *,
    load_head: bool = True,
    weights_only: bool = True,
) -> LoadReport:
    """Copy a checkpoint's weights into ``model``: every key strictly, the head only when it fits.

    Args:
        model: a model from ``build_model`` (it must have a ``head_key`` attribute, e.g.
            "classifier.classifier.3"); any other module is treated as having no separate head.
        checkpoint: path or dict, see ``read_state_dict`` (VainF's "model_state" wrapper, a bare state
            dict, with or without the "module." prefix).
        load_head: set to False to keep the model's fresh head even when the checkpoint's fits.
        weights_only: see ``read_state_dict``.

    Returns:
        A ``LoadReport`` (``str(report)`` is a one-line summary).

    Raises:
        CheckpointMismatchError: keys outside the head are missing from the checkpoint, unexpected, or
            differently shaped; the message names a few of them.
        RuntimeError: ``model.load_state_dict`` left out or refused keys that ``model.state_dict()``
            lists (the model's two methods disagree; the checkpoint is not at fault).
    """
    state = read_state_dict(checkpoint, weights_only=weights_only)
    own = model.state_dict()
    head_prefix = getattr(model, "head_key", None)

    def is_head(key: str) -> bool:
        return head_prefix is not None and key.startswith(head_prefix + ".")

    body_own = [k for k in own if not is_head(k)]
    missing = [k for k in body_own if k not in state]
    batch_counters = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if k not in batch_counters]
    unexpected = [k for k in state if not is_head(k) and k not in own]
    wrong_shape = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in body_own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected in the checkpoint: {_few(unexpected)}")
    if wrong_shape:
        problems.append(f"shape mismatch: {_few(wrong_shape, 3)}")
    if problems:
        config = getattr(model, "config", None) or {}
        name = " ".join(str(config[k]) for k in ("arch", "backbone", "head") if k in config)
        name = f"{name} head" if name else type(model).__name__
        raise CheckpointMismatchError(f"checkpoint does not fit the model ({name}): " + "; ".join(problems))

    head_own = {k: v for k, v in own.items() if is_head(k)}
    head_ckpt = {k: v for k, v in state.items() if is_head(k)}
    if not load_head:
        reason = "load_head=False"
    elif set(head_ckpt) != set(head_own):
        n = len(head_prefix) + 1
        reason = (
            f"checkpoint head has {[k[n:] for k in head_ckpt]}, model head has {[k[n:] for k in head_own]}"
        )
    elif any(head_ckpt[k].shape != v.shape for k, v in head_own.items()):
        shapes = {k[len(head_prefix) + 1 :]: tuple(v.shape) for k, v in head_ckpt.items()}
        reason = f"checkpoint head shapes {shapes} differ from the model's"
    else:
        reason = ""

    to_load = {k: state[k] for k in body_own if k in state}
    head_loaded = not reason
    if head_loaded:
        to_load.update(head_ckpt)
    result = model.load_state_dict(to_load, strict=False)
    # The keys were checked against model.state_dict(), so only the head (when skipped) and absent
    # batch counters can be left out - unless load_state_dict disagrees with state_dict (a custom
    # _load_from_state_dict or load hook). That is not the checkpoint's fault: say so, not "retry".
    allowed_missing = set(batch_counters) | (set() if head_loaded else set(head_own))
    not_loaded = [k for k in result.missing_keys if k not in allowed_missing]
    if result.unexpected_keys or not_loaded:
        problems = [f"left out {_few(not_loaded)}"] if not_loaded else []
        if result.unexpected_keys:
            problems.append(f"called unexpected {_few(list(result.unexpected_keys))}")
        raise RuntimeError(
            f"{type(model).__name__}.load_state_dict did not take the keys its state_dict() lists: "
            + "; ".join(problems)
            + ". The model's state_dict() and load_state_dict() disagree (a custom "
            "_load_from_state_dict or load_state_dict hook?); make them agree. The model may now be "
            "partly loaded: rebuild it before using it."
        )
    return LoadReport(
        loaded=list(to_load),
        skipped=[] if head_loaded else list(head_ckpt),
        head_loaded=head_loaded,
        reason=reason,
        missing_batch_counters=batch_counters,
    )
