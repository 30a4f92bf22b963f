"""One dataclass describes a run; the notebook and the scripts both build it."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOSSES = ("ce", "ce+h", "fl", "fl+h")
SCORES = ("msp", "maxlogit", "entropy", "energy")
DATASETS = ("synthetic", "streethazards")
SCHEDULERS = ("plateau", "poly")


@dataclass
class RunConfig:
    """Everything that defines a training + evaluation run.

    Saved as JSON beside every checkpoint and as columns of every results row, so a
    number can always be traced back to the settings that produced it.
    """

    # Data
    dataset: str = "synthetic"
    """'synthetic' (generated on first use under data_root) or 'streethazards' (the real one)."""
    data_root: str = "data/synthetic"
    """Folder that holds train/ and test/ in the StreetHazards layout."""
    n_train: int = 240
    """Synthetic only: number of training images to generate."""
    n_val: int = 40
    """Synthetic only: number of validation images to generate."""
    n_test: int = 60
    """Synthetic only: number of test images to generate."""
    image_size: tuple[int, int] = (128, 256)
    """Synthetic only: (height, width) of the generated images."""
    data_seed: int = 0
    """Synthetic only: seed of the scene generator."""
    crop_size: tuple[int, int] = (128, 128)
    """Random training crop (height, width); the real dataset's seed setting is 512x512."""
    validate_data: bool = True
    """Decode every annotation once before training and stop on the first problem found."""

    # Model
    backbone: str = "mobilenet_v2"
    """DeepLabv3+ backbone: mobilenet_v2, resnet50 or resnet101."""
    head: str = "distance"
    """Classifier head: standard (1x1 conv) or distance (-Euclidean distance to class prototypes)."""
    output_stride: int = 16
    """Backbone output stride, 16 or 8 (8 is sharper and about 3x slower)."""
    pretrained_backbone: bool = False
    """Start from torchvision's ImageNet weights (needs internet the first time)."""
    checkpoint: str | None = None
    """Optional VainF-format DeepLabv3+ checkpoint to fine-tune from (e.g. Cityscapes)."""

    # Loss
    loss: str = "fl+h"
    """Training loss: ce, ce+h (with entropy term), fl (focal) or fl+h."""
    entropy_weight: float = 0.1
    """Lambda of the entropy term in ce+h / fl+h (the seed's --gamma)."""
    gamma_focal: float = 2.0
    """Focusing parameter of the focal loss (fl, fl+h)."""
    class_weights: bool = False
    """Weight the loss by inverse class frequency measured on the training split."""

    # Optimisation
    epochs: int = 12
    """Number of passes over the training split."""
    batch_size: int = 8
    """Training images per step."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 1e-5
    """Adam weight decay."""
    scheduler: str = "plateau"
    """LR schedule: plateau (halve on a validation-loss plateau, the seed's) or poly (DeepLab)."""
    plateau_patience: int = 5
    """Epochs without validation-loss improvement before the plateau schedule halves the LR."""
    num_workers: int = 2
    """DataLoader worker processes (0 loads in the main process)."""
    seed: int = 0
    """Seed for weights, data order and augmentation."""
    device: str = "auto"
    """'auto' picks CUDA when available, else CPU."""
    max_steps_per_epoch: int | None = None
    """Cut every epoch short after this many steps (for smoke tests)."""

    # Evaluation
    eval_batch_size: int = 4
    """Test images per forward pass at full resolution."""
    scores: tuple[str, ...] = SCORES
    """Anomaly scores to evaluate: msp, maxlogit, entropy, energy."""
    miou_exclude: tuple[str, ...] = ()
    """Class names left out of mIoU (the seed left out 'pedestrian', absent from the test split)."""
    max_eval_images: int | None = None
    """Evaluate on the first N test images only (for smoke tests)."""

    # Output
    out_dir: str = "ckpts"
    """Where runs/<run_name>/ and results.csv are written."""
    run_name: str | None = None
    """Folder name under out_dir/runs; default: the next free 'run_N'."""
    progress: bool = True
    """Show tqdm progress bars."""

    def __post_init__(self) -> None:
        self.image_size = tuple(self.image_size)
        self.crop_size = tuple(self.crop_size)
        self.scores = tuple(self.scores)
        self.miou_exclude = tuple(self.miou_exclude)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field and its valid values when a setting is off."""
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("scheduler", self.scheduler, SCHEDULERS)
        for name in self.scores:
            _check_choice("scores", name, SCORES)
        if self.output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {self.output_stride}")
        for name in ("epochs", "batch_size", "eval_batch_size", "n_train"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if len(self.crop_size) != 2 or min(self.crop_size) < 16:
            raise ValueError(f"crop_size must be (height, width) >= 16, got {self.crop_size}")
        if self.gamma_focal < 0 or self.entropy_weight < 0:
            raise ValueError("gamma_focal and entropy_weight must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown RunConfig field(s) {unknown}; valid fields: {sorted(names)}")
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}")


def presets() -> dict[str, dict[str, Any]]:
    """Named settings on top of the defaults.

    - ``demo``: the README's main job, a few minutes on 2 CPU cores.
    - ``tiny``: seconds; used by the tests and the notebook test.
    - ``streethazards``: the seed's setting on the real dataset (GPU).
    """
    return {
        "demo": dict(epochs=18),
        "tiny": dict(
            n_train=8,
            n_val=4,
            n_test=4,
            image_size=(64, 128),
            crop_size=(64, 64),
            epochs=1,
            batch_size=4,
            eval_batch_size=4,
            num_workers=0,
            max_steps_per_epoch=2,
        ),
        "streethazards": dict(
            dataset="streethazards",
            data_root="data/streethazards",
            crop_size=(512, 512),
            backbone="resnet101",
            epochs=50,
            batch_size=16,
            eval_batch_size=2,
            num_workers=4,
        ),
    }


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one --flag per RunConfig field, with the field's documentation as help."""
    defaults = RunConfig()
    docs = _field_docs()
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{docs.get(f.name, '')} (default: {default})".strip()
        if isinstance(default, bool):
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif isinstance(default, tuple):
            item_type = int if f.name.endswith("size") else str
            parser.add_argument(flag, dest=f.name, nargs="+", type=item_type, default=None, help=help_text)
        else:
            parser.add_argument(
                flag, dest=f.name, type=_scalar_type(f.type, default), default=None, help=help_text
            )


def config_from_args(args: argparse.Namespace, *, base: dict[str, Any] | None = None) -> RunConfig:
    """Build a RunConfig from parsed flags: defaults < base (a preset) < flags given."""
    values = dict(base or {})
    for f in dataclasses.fields(RunConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    return RunConfig.from_dict(values)


def _scalar_type(annotation: Any, default: Any):
    if default is not None:
        return type(default)
    text = str(annotation)
    if "int" in text:
        return int
    if "float" in text:
        return float
    return str


def _field_docs() -> dict[str, str]:
    """Read the attribute docstrings under each field of RunConfig (for --help)."""
    import ast
    import inspect

    source = inspect.getsource(RunConfig)
    body = ast.parse(source).body[0].body
    docs: dict[str, str] = {}
    for previous, node in zip(body, body[1:], strict=False):
        if (
            isinstance(previous, ast.AnnAssign)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[previous.target.id] = node.value.value.strip()
    return docs


__all__ = [
    "LOSSES",
    "SCORES",
    "DATASETS",
    "SCHEDULERS",
    "RunConfig",
    "presets",
    "add_config_arguments",
    "config_from_args",
]
