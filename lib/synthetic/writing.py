"""What every format writer shares: argument checks, the parameter file (``synthetic.json``) that
marks a generated root, refusing a root that holds other data, the worker pool and the progress bar.

A writer checks its arguments, asks `check_root` whether the root may be written (or already holds
the dataset asked for), clears the folders it writes (`reset_folders`), writes the marker with
``"complete": false``, renders every image through `run_tasks` and writes the marker again with
``"complete": true`` last: a root whose writing was interrupted never looks complete.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

#: Name of the parameter file written at the root; its presence marks a generated dataset.
MARKER_FILE = "synthetic.json"
#: Below this many images a worker pool costs more than it saves.
_MIN_IMAGES_FOR_POOL = 24
#: JPEG quality of the formats released as JPEG (BDD100K, RoadAnomaly).
JPEG_QUALITY = 95
#: Their JPEGs keep full-resolution colour (4:4:4, no chroma subsampling): at the small sizes the
#: scenes are rendered at, 4:2:0 would smear the colour of thin objects (poles, lines) off their labels.
_JPEG_PARAMS = [
    cv2.IMWRITE_JPEG_QUALITY,
    JPEG_QUALITY,
    cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
    cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
]


# ----------------------------------------------------------------------------- arguments


def check_count(name: str, value: Any, low: int) -> None:
    """Raise ValueError unless `value` is an integer >= `low` (bools are not counts)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def resolve_workers(workers: int | None) -> int:
    """The number of render processes: `workers`, or min(2, CPU count) when None.

    Raises:
        ValueError: not an integer >= 1.
    """
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1 or None, got {workers!r}")
    return int(workers)


# ----------------------------------------------------------------------------- the marker file


def read_marker(root: Path) -> dict | None:
    """The parsed ``synthetic.json`` of `root`, or None when it is absent or unreadable."""
    try:
        data = json.loads((root / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_marker(root: Path, params: dict, *, complete: bool, **extra: Any) -> None:
    """Write ``synthetic.json``: the generator's parameters, whether writing finished, and `extra`."""
    data = {"params": params, "complete": complete, **extra}
    write_text_atomic(root / MARKER_FILE, json.dumps(data, indent=2) + "\n")


def _other_data_message(root: Path, old: dict, params: dict) -> str:
    old_format = old.get("format", "streethazards")
    new_format = params.get("format", "streethazards")
    if old_format != new_format:
        what = f"a synthetic dataset in the {old_format} format, not {new_format}"
    else:
        diffs = ", ".join(f"{k}={old.get(k)!r} (asked {v!r})" for k, v in params.items() if old.get(k) != v)
        what = f"a synthetic dataset generated with other parameters: {diffs}"
    return (
        f"{root} already holds {what}; pass overwrite=True (scripts/make_synthetic.py --overwrite) to "
        "regenerate it there, or choose another root"
    )


def _same_generated_format(old: dict, params: dict) -> bool:
    """Whether marker parameters `old` are this generator's, in the format `params` asks for."""
    fmt = "streethazards"  # the StreetHazards writer's parameters name no format
    return old.get("generator") == params.get("generator") and old.get("format", fmt) == params.get(
        "format", fmt
    )


def check_root(
    root: Path,
    params: dict,
    *,
    owned: Sequence[str],
    layout: str,
    overwrite: bool,
    replaces: str = "them",
    regenerate: bool = False,
) -> dict | None:
    """Refuse to write into `root` when it holds other data, unless `overwrite`.

    Args:
        root: the output folder.
        params: the parameters the marker will record.
        owned: paths (relative to `root`) whose presence without a marker means a dataset this
            generator did not write.
        layout: the layout's name for the message (``"StreetHazards"``).
        overwrite: skip the checks.
        replaces: what overwrite=True replaces, for the message.
        regenerate: accept a dataset this generator wrote in the same format with other parameters
            (sizes, seed, version): the caller then writes it anew (one line on stderr says so).
            Data in another format, or that this generator did not write, is still refused.

    Returns:
        The marker already at `root` (its parameters equal `params` unless `overwrite` or
        `regenerate`), or None.

    Raises:
        ValueError: `root` holds a generated dataset with other parameters (unless `regenerate`) or
            format, or files of the layout and no marker; the message names the folder and the fix.
    """
    marker = read_marker(root)
    if overwrite:
        return marker
    if marker is not None:
        old = marker.get("params", {})
        if old != params:
            if not (regenerate and _same_generated_format(old, params)):
                raise ValueError(_other_data_message(root, old, params))
            diffs = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in params.items() if old.get(k) != v)
            print(f"{root}: regenerating the generated dataset there ({diffs})", file=sys.stderr)
    elif found := next((p for p in owned if (root / p).exists()), None):
        raise ValueError(
            f"{root} already holds {layout}-layout files that this generator did not write ({found}, no "
            f"{MARKER_FILE}); pass overwrite=True (CLI: --overwrite) to replace {replaces}, or choose another root"
        )
    return marker


def reset_folders(root: Path, folders: Sequence[str], files: Sequence[str] = ()) -> None:
    """Fresh start: remove `folders` and `files` under `root` (only what the writer writes), then
    create `root` and the empty `folders`."""
    for d in folders:
        if (root / d).is_dir():
            shutil.rmtree(root / d)
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in files:
        if (root / f).exists():
            (root / f).unlink()
    root.mkdir(parents=True, exist_ok=True)


def summary(root: Path, counts: dict[str, int], params: dict, start: float, generated: bool) -> dict:
    """What a writer returns: ``root``, ``counts`` (images per split), ``size`` ([height, width]),
    ``seed``, ``seconds`` and ``generated`` (False when an existing dataset was kept)."""
    return {
        "root": str(root),
        "counts": counts,
        "size": [int(params["height"]), int(params["width"])],
        "seed": int(params["seed"]),
        "seconds": round(time.perf_counter() - start, 3),
        "generated": generated,
    }


# ----------------------------------------------------------------------------- image files


def write_png(path: Path, array: np.ndarray) -> None:
    """Write an (H, W, 3) RGB or (H, W) single-channel uint8 array as PNG.

    Raises:
        OSError: OpenCV could not write the file.
    """
    if array.ndim == 3:
        array = np.ascontiguousarray(array[:, :, ::-1])
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) RGB uint8 array as JPEG of quality `JPEG_QUALITY`, 4:4:4.

    Raises:
        OSError: OpenCV could not write the file.
    """
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if not cv2.imwrite(str(path), bgr, _JPEG_PARAMS):
        raise OSError(f"could not write {path}")


# ----------------------------------------------------------------------------- rendering many images


def _init_worker() -> None:
    cv2.setNumThreads(1)


class _Progress:
    """tqdm when importable, else a line every ~10 %."""

    def __init__(self, total: int, enabled: bool, desc: str = "synthetic data"):
        self.total, self.done, self.enabled, self.desc = total, 0, enabled and total > 0, desc
        self.start = time.perf_counter()
        self.bar = None
        self.next_print = 0
        if self.enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=desc, unit="img")
            except ImportError:
                self.bar = None

    def update(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
        elif self.done >= self.next_print or self.done == self.total:
            elapsed = time.perf_counter() - self.start
            print(
                f"{self.desc}: {self.done}/{self.total} images ({elapsed:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
            self.next_print = self.done + max(1, self.total // 10)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_tasks(fn: Callable[[Any], Any], tasks: Sequence[Any], *, workers: int, bar: _Progress) -> list[Any]:
    """``fn(task)`` for every task, in a spawned worker pool when there are enough of them.

    Args:
        fn: a module-level function (the pool pickles it by name); a result of None means the task
            wrote no image and does not advance the progress bar.
        tasks: picklable arguments, one per image.
        workers: processes; 1, or fewer than `_MIN_IMAGES_FOR_POOL` tasks, renders in this process.
        bar: progress bar advanced once per image written.

    Returns:
        The results, in completion order (the pool returns them unordered).
    """
    results = []
    if workers > 1 and len(tasks) >= _MIN_IMAGES_FOR_POOL:
        # spawn: safe even when the parent has started threads (torch, OpenCV).
        with mp.get_context("spawn").Pool(int(workers), initializer=_init_worker) as pool:
            for result in pool.imap_unordered(fn, tasks, chunksize=4):
                results.append(result)
                if result is not None:
                    bar.update()
    else:
        for task in tasks:
            results.append(fn(task))
            if results[-1] is not None:
                bar.update()
    return results
