"""Deployment: a trained model and its anomaly score as ONE ONNX graph, checked with onnxruntime.

The graph's contract:

- input ``image``: the picture as decoded, **uint8** RGB 0..255, channels first, Shape (B, 3, H, W).
  The graph normalises it itself exactly as training and evaluation do (``lib.data.normalize``:
  ``(x / 255 - IMAGENET_MEAN) / IMAGENET_STD``), so a caller only decodes and transposes. With
  ``input_format="float"`` the input is instead float32 that is already normalised.
- output ``class_map``: int64 (B, H, W), the argmax of the logits (train ids 0..num_classes-1).
- output ``anomaly_map``: float32 (B, H, W), the anomaly score ``lib.scores.compute_scores`` gives
  for the chosen name (higher = more anomalous), computed from the same forward pass.

H and W are fixed at export, and so is the batch size (1) unless ``dynamic_batch=True``. Uses PyTorch's
``torch.export``-based ONNX exporter (needs the ``onnx`` and ``onnxscript`` packages) and
``onnxruntime`` for the check.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lib.data import normalize
from lib.scores import ALL_SCORES, SMLStatistics, compute_scores
from network import (
    build_model,
    infer_num_classes,
    read_checkpoint,
    read_state_dict,
    valid_output_strides,
)

__all__ = [
    "INPUT_FORMATS",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "OnnxCheck",
    "SegmentationWithScore",
    "check_onnx",
    "example_input",
    "export_onnx",
    "load_trained_model",
    "run_onnx",
]

INPUT_NAME = "image"
#: Config fields that describe the model (the rest of a run config is about training).
_MODEL_FIELDS = ("arch", "backbone", "head", "output_stride", "base_width", "upsampling")
OUTPUT_NAMES = ("class_map", "anomaly_map")
#: "uint8": raw RGB 0..255, normalised inside the graph; "float": already normalised float32.
INPUT_FORMATS = ("uint8", "float")


class SegmentationWithScore(nn.Module):
    """A segmentation model + input normalisation + argmax + one anomaly score, as one module.

    Args:
        model: maps normalised images (B, 3, H, W) to logits (B, C, H, W).
        score: a name from ``lib.scores.ALL_SCORES``.
        input_format: "uint8" (normalise inside) or "float" (input already normalised).
        sml_stats: fitted statistics, required for the "sml" score.

    Raises:
        ValueError: unknown score or input format, or "sml" without statistics.
    """

    def __init__(
        self,
        model: nn.Module,
        score: str,
        *,
        input_format: str = "uint8",
        sml_stats: SMLStatistics | None = None,
    ) -> None:
        super().__init__()
        if score not in ALL_SCORES:
            raise ValueError(f"unknown score {score!r}; valid scores: {', '.join(ALL_SCORES)}")
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"unknown input_format {input_format!r}; valid: {', '.join(INPUT_FORMATS)}")
        if score == "sml" and sml_stats is None:
            raise ValueError("the 'sml' score needs sml_stats fitted on the training split (SMLStatistics)")
        self.model = model
        self.score = score
        self.input_format = input_format
        self.sml_stats = sml_stats

    def outputs(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"class_map", "anomaly_map", "logits"}`` (the logits for checks and tie detection)."""
        x = normalize(image) if self.input_format == "uint8" else image.float()
        logits = self.model(x)
        anomaly = compute_scores(logits, (self.score,), sml_stats=self.sml_stats, check_finite=False)[
            self.score
        ]
        return {"class_map": logits.argmax(dim=1), "anomaly_map": anomaly, "logits": logits}

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class map and anomaly map.

        Args:
            image: uint8 RGB 0..255 (or normalised float32 with ``input_format="float"``).

        Returns:
            ``(class_map, anomaly_map)``.

        Shape:
            - image: (B, 3, H, W)
            - class_map: (B, H, W), int64
            - anomaly_map: (B, H, W), float32
        """
        out = self.outputs(image)
        return out["class_map"], out["anomaly_map"]


def _cpu_copy(model: nn.Module) -> nn.Module:
    """A float32, CPU, eval-mode copy (the caller's model keeps its device, dtype and mode)."""
    return copy.deepcopy(model).float().cpu().eval()


def example_input(
    batch: int, height: int, width: int, input_format: str = "uint8", seed: int = 0
) -> torch.Tensor:
    """A random input batch in the graph's format: uint8 0..255, or standard-normal float32. Shape (B, 3, H, W)."""
    g = torch.Generator().manual_seed(seed)
    if input_format == "uint8":
        return torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=g)
    return torch.randn(batch, 3, height, width, generator=g)


def export_onnx(
    model: nn.Module,
    path: str | PathLike[str],
    *,
    height: int,
    width: int,
    score: str = "entropy",
    input_format: str = "uint8",
    dynamic_batch: bool = False,
    batch_size: int = 1,
    sml_stats: SMLStatistics | None = None,
    opset: int | None = None,
) -> Path:
    """Export ``model`` with its anomaly score as one ONNX graph (see the module docstring).

    A float32 CPU copy of the model is exported in eval mode; ``model`` itself is left as it is.

    Args:
        model: a segmentation model (normalised images -> logits).
        path: the .onnx file to write (folders are created).
        height, width: the fixed input size.
        score: anomaly score, one of ``lib.scores.ALL_SCORES`` ("sml" needs ``sml_stats``).
        input_format: "uint8" (raw RGB, normalised in the graph) or "float" (already normalised).
        dynamic_batch: let the batch size vary at run time (the export then takes about twice as
            long); otherwise it is fixed to ``batch_size``.
        batch_size: the fixed batch size when ``dynamic_batch`` is False.
        sml_stats: statistics for the "sml" score (baked into the graph as constants).
        opset: ONNX opset version (None: the exporter's default).

    Returns:
        The path written.

    Raises:
        ValueError: bad score, input format or size.
    """
    if min(height, width) < 1 or batch_size < 1:
        raise ValueError(f"height, width and batch_size must be >= 1, got {height}, {width}, {batch_size}")
    wrapper = SegmentationWithScore(
        _cpu_copy(model), score, input_format=input_format, sml_stats=sml_stats
    ).eval()
    # Trace with 2 images when the batch is dynamic: a size-1 example would be specialised.
    example = example_input(2 if dynamic_batch else batch_size, height, width, input_format)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            verbose=False,
        )
    program.save(str(path))
    return path


def run_onnx(path: str | PathLike[str], image: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Run an exported graph with onnxruntime on the CPU.

    Args:
        path: the .onnx file.
        image: (B, 3, H, W) uint8 (or normalised float32 for a "float" graph).

    Returns:
        ``(class_map, anomaly_map)`` as numpy arrays, Shape (B, H, W) each.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    class_map, anomaly_map = session.run(list(OUTPUT_NAMES), {INPUT_NAME: array})
    return class_map, anomaly_map


@dataclass
class OnnxCheck:
    """How an exported graph's outputs compare with PyTorch's on the same input.

    Attributes:
        pixels: pixels compared.
        class_mismatches: pixels whose class differs.
        class_mismatches_not_tied: of those, pixels whose top-2 PyTorch logits differ by more than the
            tie tolerance (must be 0: elsewhere a rounding difference may flip the argmax).
        anomaly_max_abs_diff: largest absolute difference of the anomaly maps.
        anomaly_close: ``np.allclose`` of the anomaly maps with the given tolerances.
    """

    pixels: int
    class_mismatches: int
    class_mismatches_not_tied: int
    anomaly_max_abs_diff: float
    anomaly_close: bool

    @property
    def ok(self) -> bool:
        """No class difference outside near-ties and anomaly maps allclose."""
        return self.class_mismatches_not_tied == 0 and self.anomaly_close

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "MISMATCH"
        return (
            f"{verdict}: class map differs at {self.class_mismatches}/{self.pixels} pixels "
            f"({self.class_mismatches_not_tied} outside near-ties); anomaly map max |diff| "
            f"{self.anomaly_max_abs_diff:.3g}"
        )


def check_onnx(
    path: str | PathLike[str],
    model: nn.Module,
    image: torch.Tensor,
    *,
    score: str = "entropy",
    input_format: str = "uint8",
    sml_stats: SMLStatistics | None = None,
    tie_tol: float = 1e-3,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> OnnxCheck:
    """Compare an exported graph (onnxruntime, CPU) with the PyTorch model on ``image``.

    Args:
        path: the .onnx file from ``export_onnx``.
        model: the model that was exported (same score, input format and statistics).
        image: an input batch in the graph's format.
        tie_tol: logit gap under which two classes count as tied.
        rtol, atol: tolerances for the anomaly maps.

    Returns:
        An ``OnnxCheck``; ``check.ok`` says whether they match.
    """
    wrapper = SegmentationWithScore(
        _cpu_copy(model), score, input_format=input_format, sml_stats=sml_stats
    ).eval()
    with torch.no_grad():
        ref = wrapper.outputs(image)
    class_map, anomaly_map = run_onnx(path, image)
    top2 = ref["logits"].float().topk(2, dim=1).values
    tied = (top2[:, 0] - top2[:, 1] <= tie_tol).numpy()
    differs = class_map != ref["class_map"].numpy()
    expected = ref["anomaly_map"].numpy()
    return OnnxCheck(
        pixels=int(differs.size),
        class_mismatches=int(differs.sum()),
        class_mismatches_not_tied=int((differs & ~tied).sum()),
        anomaly_max_abs_diff=float(np.abs(anomaly_map - expected).max()),
        anomaly_close=bool(np.allclose(anomaly_map, expected, rtol=rtol, atol=atol)),
    )


def load_trained_model(checkpoint: str | PathLike[str] | Mapping[str, Any], **overrides: Any) -> nn.Module:
    """Rebuild the model of a training checkpoint and load its weights (CPU, eval mode).

    The checkpoint is ``lib.train.fit``'s ``best.pt``: ``{"model": state_dict, "config": RunConfig
    dict, ...}``. The architecture comes from the config (``arch``, default "deeplabv3plus";
    ``backbone``, ``head``, ``output_stride``; ``base_width`` and ``upsampling`` if present), the number
    of classes from the head's weights. ``overrides`` (e.g. ``arch="unet"``) replace config values; a
    bare or VainF state dict without config needs at least ``backbone`` and ``head`` there.

    Raises:
        ValueError: no state dict, or neither config nor overrides name the model.
        network.CheckpointMismatchError / RuntimeError: the weights do not fit the model.
    """
    raw = read_checkpoint(checkpoint) if isinstance(checkpoint, str | PathLike) else checkpoint
    config = dict(raw.get("config") or {}) if isinstance(raw, Mapping) else {}
    state = read_state_dict(raw)
    settings = {k: config[k] for k in _MODEL_FIELDS if k in config}
    given = {k: v for k, v in overrides.items() if v is not None}
    settings.update(given)
    missing = [k for k in ("backbone", "head") if k not in settings]
    if missing:
        raise ValueError(f"the checkpoint has no config naming the model; pass {', '.join(missing)}")
    settings.setdefault("arch", "deeplabv3plus")
    strides = valid_output_strides(settings["arch"], settings["backbone"])
    if "output_stride" not in given and settings.get("output_stride") not in strides:
        # The run config always holds a DeepLab output stride; a U-Net has its own fixed one.
        settings["output_stride"] = None
    model = build_model(num_classes=infer_num_classes(state, arch=settings["arch"]), **settings)
    model.load_state_dict(state)
    return model.eval()
