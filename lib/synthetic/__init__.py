"""Procedural driving scenes, and writers that put them on disk in the layout of a real dataset.

Painting one scene (image + label, pixel for pixel)::

    scene.py         render_scene / render_layers: camera, street layout, painting order, finish
    canvas.py        class ids, palettes, the pinhole camera, the canvas, the street layout
    painters.py      sky, ground, lane markings, buildings ... cars, pedestrians, street furniture
    anomalies.py     the test split's anomalies (rocks, debris, tyres, animals, crates)

Writing a dataset (`generate` picks the writer by format name)::

    formats.py       generate(format, root, ...) and FORMATS
    streethazards.py the StreetHazards layout (the project's default dataset)
    standin.py       what the offline stand-ins share: skip / refuse / write / mark complete
    cityscapes.py    bdd100k.py    lostandfound.py    roadanomaly.py    (one per format)
    writing.py       shared by all writers: marker file, argument checks, worker pool, progress

Nothing here imports torch (the worker processes stay light). The worker pool's threshold is
`lib.synthetic.writing._MIN_IMAGES_FOR_POOL` (patch it there).
"""

from __future__ import annotations

from lib.synthetic.anomalies import ANOMALY_KINDS
from lib.synthetic.formats import FORMATS, generate
from lib.synthetic.scene import (
    GENERATOR_VERSION,
    SPLIT_CODES,
    Scene,
    label_to_color,
    render_layers,
    render_scene,
)
from lib.synthetic.streethazards import _write_one as _write_one  # the worker entry point, for tests
from lib.synthetic.streethazards import dataset_is_complete, generate_streethazards
from lib.synthetic.writing import MARKER_FILE

__all__ = [
    "ANOMALY_KINDS",
    "FORMATS",
    "GENERATOR_VERSION",
    "MARKER_FILE",
    "SPLIT_CODES",
    "Scene",
    "dataset_is_complete",
    "generate",
    "generate_streethazards",
    "label_to_color",
    "render_layers",
    "render_scene",
]
