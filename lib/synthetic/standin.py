"""The writer shared by the offline stand-ins: the generated scenes written in the layout and label
encoding of a real dataset (Cityscapes, BDD100K, LostAndFound, RoadAnomaly), so that its loader in
`lib.datasets` reads them unchanged.

Each format module describes itself with a `StandIn` (its splits, the folders it writes, and a
function that writes one rendered scene); `generate_standin` does the rest the same way for all:
argument checks, skip when complete, refusal of other data, the worker pool and the progress bar
of `lib.synthetic.writing`, and ``synthetic.json`` written last with the list of files::

    {"params": {"generator": "lib.synthetic", "format": "cityscapes", "version": 2, "n_train": 8,
                "n_val": 4, "n_test": 4, "height": 256, "width": 512, "seed": 0},
     "complete": true, "files": ["gtFine/train/hamburg/...", ...]}

Image i of a split is the scene `lib.synthetic.render_layers` draws for (seed, split, i) in the
Cityscapes vocabulary (every class of Cityscapes and BDD100K appears), on the format's own stream:
the Cityscapes and BDD100K stand-ins share their scenes (stream 0; train, val and a labelled test
split without anomalies), the LostAndFound (stream 1) and RoadAnomaly (stream 2) stand-ins each have
test scenes of their own, none of them a picture of the StreetHazards-format test split. The
anomaly-only formats keep only scenes with at least one anomaly pixel: their j-th image is the j-th
such scene (its index is in the file name, so an index may be skipped).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.classes import ANOMALY_ID
from lib.synthetic.scene import Scene, _check_size, render_layers
from lib.synthetic.writing import (
    _Progress,
    check_count,
    check_root,
    reset_folders,
    resolve_workers,
    run_tasks,
    summary,
    write_jpeg,
    write_marker,
    write_png,
)

#: Version of the stand-ins' drawing, in their marker: bumped whenever it changes, so that an old
#: dataset is regenerated rather than reused (2: the Cityscapes vocabulary, test splits, own streams).
STANDIN_VERSION = 2

#: Writes one rendered scene under the root: (root, split, index, seed, scene) -> the paths
#: written, relative to the root.
SceneWriter = Callable[[Path, str, int, int, Scene], list[str]]


@dataclass(frozen=True)
class StandIn:
    """How one format is written.

    Attributes:
        name: the format's name in `lib.synthetic.FORMATS`.
        layout: how messages name the real dataset (``"Cityscapes"``).
        splits: the splits rendered and written: ``("train", "val", "test")`` (their sizes are
            ``n_train``, ``n_val`` and ``n_test``; no anomalies) or ``("test",)`` for the anomaly-only
            sets (size ``n_test``, an anomaly in every image).
        folders: the folders it writes, relative to the root; emptied before writing.
        markers: folders whose presence, without a ``synthetic.json``, means a dataset this
            generator did not write (refused unless overwrite).
        write: writes one scene (a module-level function: the worker pool pickles it by name).
        stream: the scene stream it draws from (`lib.synthetic.scene`; module docstring).
    """

    name: str
    layout: str
    splits: tuple[str, ...]
    folders: tuple[str, ...]
    markers: tuple[str, ...]
    write: SceneWriter
    stream: int = 0

    @property
    def anomaly_only(self) -> bool:
        return self.splits == ("test",)


def write_pair(
    root: Path, image: str, label: str, rgb: np.ndarray, ids: np.ndarray, *, jpeg: bool = False
) -> list[str]:
    """Write one image (PNG, or JPEG with `jpeg`) and its single-channel label PNG under `root`,
    creating their folders; returns the two relative paths (what a `SceneWriter` returns)."""
    for rel in (image, label):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (write_jpeg if jpeg else write_png)(root / image, rgb)
    write_png(root / label, ids)
    return [image, label]


def _render_and_write(task: tuple) -> tuple[str, int, list[str]] | None:
    """Render one scene and write it (worker entry point); None when an anomaly-only format gets
    a scene without anomaly pixels (nothing is written)."""
    write, root, split, index, seed, height, width, need_anomaly, stream = task
    scene = render_layers(
        seed=seed, split=split, index=index, height=height, width=width, classes="cityscapes",
        stream=stream, anomalies=need_anomaly,
    )  # fmt: skip
    if need_anomaly and not (scene.label == ANOMALY_ID).any():
        return None
    return split, index, write(Path(root), split, index, seed, scene)


def _write_all(
    spec: StandIn,
    root: Path,
    counts: dict[str, int],
    seed: int,
    size: tuple[int, int],
    *,
    workers: int,
    bar: _Progress,
) -> list[str]:
    """Write `counts` images per split; returns the paths written, sorted. Rounds of tasks until each
    split has its count: the first round renders indices 0..n-1, the next ones the indices after the
    last tried, as many as images are still missing (only the anomaly-only formats skip scenes)."""
    found = dict.fromkeys(counts, 0)
    tried = dict.fromkeys(counts, 0)
    files: list[str] = []
    while any(found[s] < n for s, n in counts.items()):
        tasks = []
        for split, n in counts.items():
            if tried[split] > 20 * n + 100:
                raise RuntimeError(
                    f"only {found[split]} of {tried[split]} {split} scenes had an anomaly pixel (seed {seed})"
                )
            indices = range(tried[split], tried[split] + n - found[split])
            tasks += [
                (spec.write, str(root), split, i, seed, *size, spec.anomaly_only, spec.stream)
                for i in indices
            ]
            tried[split] = indices.stop
        for result in run_tasks(_render_and_write, tasks, workers=workers, bar=bar):
            if result is not None:
                found[result[0]] += 1
                files += result[2]
    return sorted(files)


def _is_complete(root: Path, marker: dict, params: dict) -> bool:
    files = marker.get("files")
    if not marker.get("complete") or marker.get("params") != params or not isinstance(files, list):
        return False
    return all(isinstance(f, str) and (root / f).is_file() for f in files)


def generate_standin(
    spec: StandIn,
    root: str | Path,
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    height: int,
    width: int,
    seed: int,
    workers: int | None = None,
    overwrite: bool = False,
    regenerate: bool = False,
    progress: bool = True,
) -> dict:
    """Write the stand-in `spec` describes (skipped when `root` already holds it complete).

    Args:
        spec: the format.
        root: output folder (created if needed).
        n_train, n_val, n_test: images per split; only those of ``spec.splits`` count (train >= 1,
            val >= 0, test >= 1), the others are ignored.
        height, width: image size in pixels (>= 32).
        seed: generator seed (>= 0).
        workers: render processes; None = min(2, CPU count).
        overwrite: regenerate even if `root` holds other data (empties ``spec.folders`` first).
        regenerate: regenerate a stand-in this generator wrote at `root` in this format with other
            parameters (never data it did not write, nor another format).
        progress: show a progress bar on stderr.

    Returns:
        As `lib.synthetic.generate_streethazards`, plus ``format``.

    Raises:
        ValueError: invalid arguments, or `root` holds another dataset, format or parameters and
            `overwrite` is False.
    """
    asked = {"train": n_train, "val": n_val, "test": n_test}
    counts = {split: asked[split] for split in spec.splits}
    for split, n in counts.items():
        check_count(f"n_{split}", n, 0 if split == "val" else 1)
    check_count("seed", seed, 0)
    _check_size(height, width)
    workers = resolve_workers(workers)
    root, start = Path(root), time.perf_counter()
    counts = {split: int(n) for split, n in counts.items()}
    params = {"generator": "lib.synthetic", "format": spec.name, "version": STANDIN_VERSION,
              **{f"n_{split}": n for split, n in counts.items()},
              "height": int(height), "width": int(width), "seed": int(seed)}  # fmt: skip
    replaces = "the folders it writes: " + ", ".join(f"{folder}/" for folder in spec.folders)
    marker = check_root(
        root, params, owned=spec.markers, layout=spec.layout, overwrite=overwrite, replaces=replaces,
        regenerate=regenerate,
    )  # fmt: skip
    generated = overwrite or marker is None or not _is_complete(root, marker, params)
    if generated:
        reset_folders(root, spec.folders)
        write_marker(root, params, complete=False)
        bar = _Progress(sum(counts.values()), progress, desc=f"synthetic {spec.name}")
        try:
            files = _write_all(
                spec, root, counts, int(seed), (int(height), int(width)), workers=workers, bar=bar
            )
        finally:
            bar.close()
        write_marker(root, params, complete=True, files=files)
    return {**summary(root, counts, params, start, generated), "format": spec.name}
