"""The known pretrained DeepLabv3+ weight files: one table, fetched on first use into one cache folder.

Each entry says where a file is (host and id), what it is called on disk, how its weights are
stored (``bare`` state dict, VainF's ``{"model_state": ...}`` wrapper, or either with DataParallel's
``module.`` prefix) and which model it fits (architecture, backbone, head, classes, output stride),
so that the file is checked against that model when it is read::

    from lib.weights import fetch_weights, find_weights
    path = fetch_weights("streethazards-reference", cache_dir="ckpts/pretrained")   # gdown, resumable
    entry = find_weights(backbone="resnet101", trained_on="cityscapes")               # for pretrained_on

`fetch_weights` skips a file that is already there and resumes a partial one (``gdown -c``). A file
that is damaged, truncated or another model's stops with `WeightsError`, naming the file and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import torch
from torch import nn

from network import LoadReport

__all__ = [
    "FORMATS",
    "WEIGHTS",
    "WeightsError",
    "WeightsFile",
    "fetch_weights",
    "find_weights",
    "load_initial_weights",
    "load_weights",
    "read_weights",
    "resolve_weights",
    "weights_names",
]

#: How a file stores its weights: a bare state dict, VainF's wrapper dict, or DataParallel keys.
FORMATS = ("bare", "model_state", "module.")


class WeightsError(ValueError):
    """A weights file that cannot be used: unknown name, damaged or truncated file, or another model's."""


@dataclass(frozen=True)
class WeightsFile:
    """One known weights file and the model it fits.

    Attributes:
        name: registry name (``RunConfig.weights`` / ``checkpoint`` accept it).
        host: ``gdrive`` (``id`` is a Google-Drive file id).
        id: the file's id on its host.
        file_name: name of the file in the cache folder.
        format: one of `FORMATS` (as published; reading accepts all three).
        arch, backbone, head, num_classes, output_stride: the model it fits (`network.build_model`).
        trained_on: the data it was trained on (cityscapes, voc, streethazards).
        head_shapes: head parameters (relative to the model's head key) and their shapes.
        source: who published it, and what it is.
    """

    name: str
    host: str
    id: str
    file_name: str
    format: str
    arch: str
    backbone: str
    head: str
    num_classes: int
    output_stride: int
    trained_on: str
    head_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    source: str = ""

    @property
    def model_settings(self) -> dict[str, object]:
        """The RunConfig fields of the model this file fits."""
        return dict(backbone=self.backbone, head=self.head, output_stride=self.output_stride)


def _deeplab(name: str, file_id: str, file_name: str, fmt: str, backbone: str, trained_on: str,
             classes: int, source: str, head: str = "standard") -> WeightsFile:  # fmt: skip
    shapes = {"prototypes": (classes, 256)} if head == "distance" else {"weight": (classes, 256, 1, 1),
                                                                          "bias": (classes,)}  # fmt: skip
    return WeightsFile(
        name=name, host="gdrive", id=file_id, file_name=file_name, format=fmt, arch="deeplabv3plus",
        backbone=backbone, head=head, num_classes=classes, output_stride=16, trained_on=trained_on,
        head_shapes=shapes, source=source,
    )  # fmt: skip


_REF = "StreetHazards reference project (README / notebook)"
#: Every known file, by name. Ids and formats: the StreetHazards reference project and
#: VainF/DeepLabV3Plus-Pytorch. Only the first two formats are documented by their publishers; the
#: other reference copies are assumed bare like them (reading accepts every format anyway).
WEIGHTS: Mapping[str, WeightsFile] = {
    w.name: w
    for w in (
        _deeplab(
            "streethazards-reference",
            "1h3oUMwKU5EZmmmiNrgs80ziLYbISYPVM",
            "streethazards_reference_weights.pt",
            "bare",
            "resnet101",
            "streethazards",
            13,
            f"{_REF}: its trained model (distance head, FL+H), mIoU 65.10, pooled entropy AUPR 17.37",
            head="distance",
        ),
        _deeplab(
            "deeplabv3plus_resnet101_cityscapes",
            "1nmER-DVgFgpbwLN3rRlx0Hf_jqYRYdvc",
            "deeplabv3plus_resnet101_cityscapes.pt",
            "bare",
            "resnet101",
            "cityscapes",
            19,
            f"{_REF}: its training init, VainF's Cityscapes model re-saved bare",
        ),
        _deeplab(
            "deeplabv3plus_resnet101_voc",
            "1-9mz8Dv2_td52qDeDlsBS_AMETXbDPJE",
            "deeplabv3plus_resnet101_voc.pt",
            "bare",
            "resnet101",
            "voc",
            21,
            _REF,
        ),
        _deeplab(
            "deeplabv3plus_mobilenet_cityscapes",
            "1-BWSqAzgPMy_QiTBwYHH5xJabmCWUHCz",
            "deeplabv3plus_mobilenet_cityscapes.pt",
            "bare",
            "mobilenet_v2",
            "cityscapes",
            19,
            _REF,
        ),
        _deeplab(
            "deeplabv3plus_mobilenet_voc",
            "1-B5OXRUE6K4G6NESlj6Acp5oO3Gqw9Vv",
            "deeplabv3plus_mobilenet_voc.pt",
            "bare",
            "mobilenet_v2",
            "voc",
            21,
            _REF,
        ),
        _deeplab(
            "vainf_deeplabv3plus_resnet101_cityscapes_os16",
            "1t7TC8mxQaFECt4jutdq_NMnWxdm6B-Nb",
            "best_deeplabv3plus_resnet101_cityscapes_os16.pth",
            "model_state",
            "resnet101",
            "cityscapes",
            19,
            "VainF/DeepLabV3Plus-Pytorch: Cityscapes mIoU 0.762",
        ),
    )  # fmt: skip
}


def weights_names() -> tuple[str, ...]:
    return tuple(WEIGHTS)


def _entry(name: str) -> WeightsFile:
    if name not in WEIGHTS:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(WEIGHTS)} (or give a file path)")
    return WEIGHTS[name]


def find_weights(*, backbone: str, trained_on: str, arch: str = "deeplabv3plus") -> WeightsFile:
    """The file to fine-tune from for ``pretrained_on=trained_on`` (the first matching entry).

    Raises:
        WeightsError: no known file fits; lists the (backbone, trained_on) pairs there are.
    """
    for entry in WEIGHTS.values():
        if (entry.arch, entry.backbone, entry.trained_on) == (arch, backbone, trained_on):
            return entry
    known = sorted(
        {f"{e.backbone}/{e.trained_on}" for e in WEIGHTS.values() if e.trained_on != "streethazards"}
    )
    raise WeightsError(
        f"no known {arch} {backbone} weights trained on {trained_on}; known backbone/source pairs: "
        f"{', '.join(known)}; or give a file with checkpoint (--checkpoint)"
    )


def fetch_weights(name: str, *, cache_dir: str | PathLike[str], quiet: bool = False) -> Path:
    """The path of a known file in `cache_dir`, downloaded first when it is not there.

    A partial download is resumed (gdown's ``resume``); a complete file is not fetched again.

    Raises:
        WeightsError: unknown name. lib.download.DownloadError: the host gave no file.
    """
    from lib.download import download_gdrive

    entry = _entry(name)
    path = Path(cache_dir) / entry.file_name
    if path.is_file():
        return path
    if not quiet:
        print(f"downloading {entry.name} ({entry.source}) to {path}")
    return download_gdrive(entry.id, path, quiet=quiet)


def resolve_weights(name_or_path: str, *, cache_dir: str | PathLike[str]) -> Path:
    """A registry name (fetched into `cache_dir`) or a file path, as a path to an existing file.

    Raises:
        WeightsError: neither a known name nor an existing file.
    """
    if name_or_path in WEIGHTS:
        return fetch_weights(name_or_path, cache_dir=cache_dir)
    path = Path(name_or_path)
    if not path.is_file():
        raise WeightsError(
            f"weights {name_or_path!r}: no such file, and not a known name ({', '.join(WEIGHTS)})"
        )
    return path


def read_weights(path: str | PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict in a weights file (any of `FORMATS`), read with ``weights_only=True``.

    Raises:
        WeightsError: the file cannot be read as a torch file (truncated or damaged download) or
            holds no state dict; the message names the file and the fix.
    """
    from network import read_state_dict

    path = Path(path)
    try:
        return read_state_dict(path)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch.load reports a truncated zip or pickle in several exception types
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(
            f"cannot read weights file {path} ({first_line}): the file is truncated or damaged, or is no "
            "torch checkpoint; delete it and run again (a known file is downloaded anew)"
        ) from None


def load_weights(model: nn.Module, path: str | PathLike[str]) -> None:
    """Load every tensor of a weights file into `model`, strictly: head included, nothing missing.

    Raises:
        WeightsError: unreadable file (see `read_weights`), or keys / shapes that do not fit the
            model, naming the file, a few keys and the fix.
    """
    from network import CheckpointMismatchError, load_pretrained

    state = read_weights(path)
    try:
        report = load_pretrained(model, state)
    except CheckpointMismatchError as err:
        raise WeightsError(f"weights file {path}: {err}; {_fix(path)}") from None
    if not report.head_loaded:
        raise WeightsError(f"weights file {path}: its head does not fit ({report.reason}); {_fix(path)}")


def load_initial_weights(model: nn.Module, path: str | PathLike[str]) -> LoadReport:
    """Load a file to fine-tune from: every key outside the head strictly, the head only when it fits
    (a 19-class Cityscapes file starts a 13-class distance-head model with a fresh head).

    Raises:
        WeightsError: unreadable file, or keys outside the head that do not fit the model.
    """
    from network import CheckpointMismatchError, load_pretrained

    try:
        return load_pretrained(model, read_weights(path))
    except CheckpointMismatchError as err:
        raise WeightsError(f"weights file {path}: {err}; {_fix(path)}") from None


def _fix(path: str | PathLike[str]) -> str:
    known = {e.file_name: e for e in WEIGHTS.values()}.get(Path(path).name)
    if known is not None:
        return (
            f"it should be {known.name} ({known.backbone}, {known.head} head, {known.num_classes} classes): "
            "delete the file and run again to download it anew"
        )
    return "choose the backbone / head / output stride it was trained with, or another file"
