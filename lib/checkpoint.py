"""What a training checkpoint holds and how it is written, found and read: the state dict of a run
(`checkpoint_state`), the random states of every process (Python, NumPy, torch, CUDA) and of the
training data order, atomic writes after a free-space check (``last.pt`` every epoch, ``best.pt`` a
hard link to the best one), and `load_checkpoint`'s one-line refusals of files that are not one.
`lib.train.fit` writes and resumes them.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from lib import distributed
from lib.config import RunConfig
from lib.optim import LRSchedule
from lib.utils import atomic_torch_save

__all__ = [
    "CHECKPOINT_KEYS",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "DiskSpaceError",
    "check_free_space",
    "checkpoint_nbytes",
    "checkpoint_state",
    "data_order_state",
    "find_checkpoint",
    "latest_run",
    "load_checkpoint",
    "mark_best",
    "restore_data_order",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

CHECKPOINT_VERSION = 3  # 3: the schedule state holds its horizon (total_steps)


class DiskSpaceError(OSError):
    """Not enough free disk space to write a checkpoint."""


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
        mark_best(run_dir)


def mark_best(run_dir: Path) -> None:
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


class CheckpointError(ValueError):
    """A file that is not a usable training checkpoint (the message names it and the fix).

    A ValueError: the command lines (``--resume``, ``scripts/test.py --checkpoint``) turn it into
    their one-line usage error.
    """


#: What `fit` writes into every checkpoint and `load_checkpoint` requires.
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "config")


def load_checkpoint(path: str | Path, *, name: str = "last.pt", map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint written by `fit`, from its file or its run folder (``name`` inside it).

    Returns:
        The checkpoint dict (see `checkpoint_state`) with ``path`` added: the file read.

    Raises:
        FileNotFoundError: no such file, or a run folder without ``name``.
        CheckpointError: (a ValueError) the file is not a torch file or is truncated, is not a dict
            with the `CHECKPOINT_KEYS`, or its config is not a RunConfig of this code; one line
            naming the file and what to do.
    """
    file = find_checkpoint(path, name=name)
    fix = "pass a last.pt or best.pt that scripts/train.py wrote (a run folder works too), or start a new run"
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except OSError:
        raise  # permissions, a vanished file: the system's message says it
    except Exception as err:  # torch raises many types for a bad file; all mean the same here
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(
            f"{file} cannot be read as a torch checkpoint ({type(err).__name__}: {reason}): it is "
            f"truncated or not a torch file; {fix}"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{file} holds a {type(state).__name__}, not a training checkpoint of this project; {fix}"
        )
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"{file} is not a training checkpoint of this project (missing {missing}; weights to "
            f"fine-tune from go to --checkpoint of scripts/train.py, trained weights to --weights "
            f"of scripts/test.py); {fix}"
        )
    try:
        RunConfig.from_dict(dict(state["config"]))
    except (TypeError, ValueError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(
            f"{file} has a config that is not a RunConfig of this code ({reason}): it was written by "
            "another version of the project; use that version, or start a new run"
        ) from err
    state["path"] = str(file)
    return state


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
