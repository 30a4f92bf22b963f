"""`generate`: the one entry point that writes the generated scenes in any supported format.

Formats (each module's docstring shows the layout it writes and its label mapping)::

    streethazards  train, val, test (n_train, n_val, n_test)        lib.synthetic.streethazards
    cityscapes     train/hamburg, val/frankfurt, test/berlin        lib.synthetic.cityscapes
    bdd100k        train, val, test                                 lib.synthetic.bdd100k
    lostandfound   test, anomaly-only (n_test)                      lib.synthetic.lostandfound
    roadanomaly    one flat folder, anomaly-only (n_test)           lib.synthetic.roadanomaly
"""

from __future__ import annotations

from pathlib import Path

from lib.synthetic import bdd100k, cityscapes, lostandfound, roadanomaly
from lib.synthetic.standin import StandIn, generate_standin
from lib.synthetic.streethazards import generate_streethazards

#: The stand-ins of real datasets, by format name.
STANDINS: dict[str, StandIn] = {
    m.STANDIN.name: m.STANDIN for m in (cityscapes, bdd100k, lostandfound, roadanomaly)
}
#: Every format `generate` writes.
FORMATS: tuple[str, ...] = ("streethazards", *STANDINS)


def generate(
    format: str,
    root: str | Path,
    *,
    n_train: int = 200,
    n_val: int = 40,
    n_test: int = 60,
    height: int = 256,
    width: int = 512,
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    regenerate: bool = False,
    progress: bool = True,
) -> dict:
    """Write the generated scenes at `root` in `format` (skipped when already complete).

    ``streethazards`` is `generate_streethazards` (train, val and a test split with anomalies). The
    others are offline stand-ins of real datasets, read by the loaders of `lib.datasets`:
    ``cityscapes`` and ``bdd100k`` write ``n_train`` training, ``n_val`` validation and ``n_test``
    labelled test scenes (the real releases have no usable test labels; the stand-ins do, so that the
    split that chooses the checkpoint is not the one reported); ``lostandfound`` and ``roadanomaly`` are
    anomaly-only evaluation sets of ``n_test`` test scenes, each with an anomaly, and ignore
    ``n_train`` and ``n_val``. Each marks its root with ``synthetic.json``, written last.

    Args:
        format: one of `FORMATS`.
        root: output folder (created if needed).
        n_train: training images (>= 1) where the format has a train split.
        n_val: validation images (>= 0) where the format has a val split.
        n_test: test images (>= 0 for streethazards, >= 1 for the others).
        height: image height in pixels (>= 32).
        width: image width in pixels (>= 32).
        seed: generator seed; image i of a split depends only on (seed, split, i).
        workers: render processes; None = min(2, CPU count).
        overwrite: regenerate even if `root` holds other data (the format's folders are replaced).
        regenerate: regenerate a dataset this generator wrote at `root` in `format` with other
            parameters (what a run does: the generator owns the data it wrote); data it did not
            write, or in another format, is still refused.
        progress: show a progress bar on stderr.

    Returns:
        Summary dict: ``root``, ``counts`` (images per split written), ``size``, ``seed``,
        ``seconds``, ``generated`` (False when an existing dataset was kept), and for the
        stand-ins ``format``.

    Raises:
        ValueError: unknown format (the message lists the valid ones), invalid arguments, or
            `root` holds another dataset, format or parameters and `overwrite` is False.
    """
    common = dict(n_train=n_train, n_val=n_val, n_test=n_test, height=height, width=width, seed=seed,
                  workers=workers, overwrite=overwrite, regenerate=regenerate, progress=progress)  # fmt: skip
    if format == "streethazards":
        return generate_streethazards(root, **common)
    if format not in STANDINS:
        raise ValueError(f"unknown synthetic format {format!r}; valid formats: {', '.join(FORMATS)}")
    return generate_standin(STANDINS[format], root, **common)
