"""Seeding, devices, safe file writes, CSV rows and run folders (figures: `lib.figures`)."""

from __future__ import annotations

import csv
import io
import os
import random
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA if available else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ----------------------------------------------------------------------------- files


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save through a temporary file, flushed to disk, and a rename (neither a crash nor a
    power cut leaves a torn file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write rows as a CSV, atomically; the header is every key in order of first appearance."""
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


def append_csv_row(path: str | Path, row: Mapping[str, Any]) -> None:
    """Append one row to a CSV, widening the header when the row brings new columns.

    The whole file is rewritten atomically, so an interrupted append loses nothing.
    """
    path = Path(path)
    rows: list[Mapping[str, Any]] = []
    if path.is_file():
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = dict.fromkeys(reader.fieldnames or [], "")
            rows = [
                {**header, **{k: v for k, v in r.items() if k is not None}} for r in reader
            ]  # None: surplus cells
    write_csv(path, [*rows, row])


def next_run_dir(out_dir: str | Path, name: str | None = None) -> Path:
    """Create and return ``out_dir/runs/<name>``, or the next free ``run_N`` (never reused)."""
    runs = Path(out_dir) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    if name is not None:
        path = runs / name
        if path.exists():
            raise FileExistsError(f"run folder {path} exists; choose another run_name or delete it")
        path.mkdir()
        return path
    taken = [int(m.group(1)) for p in runs.iterdir() if (m := re.fullmatch(r"run_(\d+)", p.name))]
    n = max(taken, default=-1) + 1
    while True:
        path = runs / f"run_{n}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def log_line(message: str, *, progress: bool) -> None:
    """Print one line of a run's log: through tqdm while progress bars are shown (so that the bar
    is not broken), else plainly, flushed."""
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(message)
    else:
        print(message, flush=True)
