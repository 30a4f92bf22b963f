"""One dataclass describes a run; the notebook and the scripts both build it."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.recipes import REFERENCE_RECIPE
from lib.registry import TEST_SETS, TRAINING_DATASETS, parse_test_set
from network.names import ARCHS as NETWORK_ARCHS
from network.names import BACKBONE_NAMES, HEAD_NAMES

LOSSES = ("ce", "ce+h", "fl", "fl+h")
SCORES = ("msp", "maxlogit", "entropy", "energy")
#: Every anomaly score `lib.scores` computes: SCORES need nothing but logits; ``sml`` needs
#: statistics fitted on the training split, ``pans`` suits a cosine head, ``abet`` the AbeT head.
ALL_SCORES = (*SCORES, "sml", "pans", "abet")
#: Training datasets and evaluation sets: the names of the dataset registry (`lib.registry`).
DATASETS = TRAINING_DATASETS
#: Architecture -> the backbones it takes, the backbones and the heads: `network.names`, the one
#: definition (it imports no torch, so --help answers at once).
ARCHS = NETWORK_ARCHS
BACKBONES = BACKBONE_NAMES
HEADS = HEAD_NAMES
SCHEDULERS = ("plateau", "poly")
#: Evaluation protocols of the anomaly metrics (`lib.test`): over every pixel at once, or per image.
PROTOCOLS = ("pooled", "per-image")
#: The official kits whose rules an evaluation can also follow, each named in its metric keys
#: (`lib.test`, README "Anomaly metrics under named conventions"): the official StreetHazards code,
#: the SegmentMeIfYouCan kit, pytorch-ood's segmentation metrics.
CONVENTIONS = ("anomaly-seg", "smiyc", "pytorch-ood")
#: SegmentMeIfYouCan tracks: their component size filters (`lib.metrics.SMIYC_TRACKS`).
SMIYC_TRACK_NAMES = ("anomaly", "obstacle")
OPTIMIZERS = ("adam", "sgd")
AMP_MODES = ("off", "auto", "bf16", "fp16")
#: Entropy terms of the +h losses (`lib.losses`): the softmax entropy, or the reference code's term.
ENTROPY_TERMS = ("softmax", "true-class-rows")
#: The data the known DeepLab weights to fine-tune from were trained on (`RunConfig.pretrained_on`,
#: the seed's --dataset; `lib.weights` names the files). Not network.PRETRAINED_SOURCES, which
#: names backbone initialisations.
PRETRAINED_ON = ("cityscapes", "voc")


def _field(
    default: Any,
    *,
    runtime: bool = False,
    grid_neutral: bool = False,
    added_later: bool = False,
    synthetic_data: bool = False,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A RunConfig field with its facts in the field's metadata (the lists below derive from them).

    Args:
        runtime: may differ from a checkpoint's config when training resumes or a checkpoint is
            evaluated: where data and outputs live, how fast it runs, how long it goes on, how it is
            evaluated (`RUNTIME_FIELDS`).
        grid_neutral: does not change a run's result (folders, workers, device, logging): left out of
            a grid row's ``config_id`` (`lib.grid`).
        added_later: added after grid rows were written: at its default it stays out of ``config_id``,
            so that older rows keep theirs.
        synthetic_data: a parameter of the generated data (`lib.synthetic`).
        choices: its valid values (checked, and argparse shows them).
    """
    metadata = {"runtime": runtime, "grid_neutral": grid_neutral, "added_later": added_later,
                "synthetic_data": synthetic_data, "choices": choices}  # fmt: skip
    return dataclasses.field(default=default, metadata=metadata)


@dataclass
class RunConfig:
    """Everything that defines a training + evaluation run.

    Saved as JSON beside every checkpoint and as columns of every results row, so a
    number can always be traced back to the settings that produced it.
    """

    # Data
    dataset: str = _field("synthetic", choices=DATASETS)
    """Training data, a name of the dataset registry (lib.registry): synthetic (StreetHazards layout,
    generated on first use under data_root), streethazards, cityscapes, bdd100k, or synthetic-cityscapes
    / synthetic-bdd100k (the generated scenes written in those formats: offline stand-ins)."""
    data_root: str = _field("data/synthetic", runtime=True, grid_neutral=True)
    """Folder of the training dataset, in its format (StreetHazards: train/ and test/)."""
    n_train: int = _field(240, synthetic_data=True)
    """Synthetic only: number of training images to generate."""
    n_val: int = _field(40, synthetic_data=True)
    """Synthetic only: number of validation images to generate."""
    n_test: int = _field(60, synthetic_data=True)
    """Synthetic only: number of test images to generate."""
    image_size: tuple[int, int] = _field((128, 256), synthetic_data=True)
    """Synthetic only: (height, width) of the generated images."""
    data_seed: int = _field(0, synthetic_data=True)
    """Synthetic only: seed of the scene generator."""
    cities: tuple[str, ...] = _field((), added_later=True)
    """Cityscapes: keep only these city folders, as split/city (the Cityscapes seed's subset:
    train/hamburg val/frankfurt); a split with none named keeps all its cities."""
    unknown_as_class: bool = _field(False, added_later=True)
    """BDD100K: train on its unknown label (255) as a 20th class, as the BDD100K seed did, instead of
    ignoring it."""
    crop_size: tuple[int, int] = (128, 128)
    """Random training crop (height, width); the real dataset's seed setting is 512x512."""
    download: bool = _field(False, runtime=True, grid_neutral=True)
    """StreetHazards: download (resumably) the archives missing from data_root before the run - the
    test archive alone when only evaluating `weights`; an archive whose extraction is complete is
    never fetched again."""
    validate_data: bool = _field(True, runtime=True, grid_neutral=True)
    """Decode every annotation once before training and stop on the first problem found."""
    augment: bool = True
    """Random crop and horizontal flip on the training split; off: whole images, no randomness
    (for debugging, or to compare multi-GPU and single-GPU runs exactly)."""
    scale_range: tuple[float, float] | None = _field(None, added_later=True)
    """Augmentation: resize each training image by a random factor in [min, max] before the crop
    (default: no resize)."""
    color_jitter: float = _field(0.0, added_later=True)
    """Augmentation: brightness, contrast and saturation jitter of this strength (0: none)."""

    # Model
    arch: str = _field("deeplabv3plus", added_later=True, choices=tuple(ARCHS))
    """Architecture: deeplabv3plus or deeplabv3 (backbones mobilenet_v2, resnet50, resnet101), unet
    (resnet34: ImageNet ResNet-34 encoder, the BDD100K seed's; or plain: Ronneberger's) or my_fcn
    (plain: the Cityscapes seed's shallow U-Net-like net)."""
    backbone: str = _field("mobilenet_v2", choices=BACKBONES)
    """Backbone (encoder) of the architecture: mobilenet_v2, resnet50, resnet101 (DeepLab), resnet34 or
    plain (U-Net, my_fcn)."""
    head: str = _field("distance", choices=HEADS)
    """Classifier head: standard (1x1 conv), distance (-Euclidean distance to class prototypes), cosine
    (PAnS: scaled cosine similarity) or abet (cosine logits over a learned per-pixel temperature)."""
    output_stride: int = 16
    """Backbone output stride, 16 or 8 (8 is sharper and about 3x slower)."""
    separable_conv: bool = False
    """Depthwise-separable 3x3 convolutions in the ASPP and decoder (VainF's --separable_conv): a
    lighter decoder, faster training; VainF's published (dense) checkpoints then do not load."""
    pretrained_backbone: bool = False
    """Start from torchvision's ImageNet weights (needs internet the first time)."""
    checkpoint: str | None = None
    """DeepLabv3+ weights to fine-tune from: a file (VainF's wrapper, a bare state dict, or
    module.-prefixed) or a name of lib.weights.WEIGHTS; the head is kept only when it fits."""
    pretrained_on: str | None = _field(None, choices=PRETRAINED_ON)
    """Fine-tune from the known DeepLabv3+ weights of this backbone trained on cityscapes or voc
    (the seed's --dataset), downloaded on first use into weights_dir; `checkpoint` wins when given."""
    weights: str | None = _field(None, added_later=True)
    """Evaluate these trained weights instead of training: a name of lib.weights.WEIGHTS (e.g.
    streethazards-reference, downloaded on first use) or a file; loaded strictly, head included."""
    weights_dir: str = _field("ckpts/pretrained", runtime=True, grid_neutral=True)
    """Cache folder of the known weight files (lib.weights); each is downloaded once."""

    # Loss
    loss: str = _field("fl+h", choices=LOSSES)
    """Training loss: ce, ce+h (with entropy term), fl (focal) or fl+h."""
    entropy_weight: float = 0.1
    """Lambda of the entropy term in ce+h / fl+h (the seed's --gamma)."""
    entropy_term: str = _field("softmax", added_later=True, choices=ENTROPY_TERMS)
    """The +h term: softmax (mean per-pixel entropy of the softmax, as the reference notebook writes
    it) or true-class-rows (what the reference code computes: -sum over image ROWS of p_y log p_y,
    p_y the true-class probability, averaged over images and columns; see lib.losses)."""
    gamma_focal: float = 2.0
    """Focusing parameter of the focal loss (fl, fl+h)."""
    class_weights: bool = False
    """Weight the loss by inverse class frequency measured on the training split."""

    # Optimisation
    epochs: int = _field(12, runtime=True)
    """Number of passes over the training split."""
    batch_size: int = 8
    """Training images per step and process (the global batch is batch_size x processes x grad_accum_steps)."""
    optimizer: str = _field("adam", choices=OPTIMIZERS)
    """adam (the seed's) or sgd (momentum 0.9, DeepLab's)."""
    lr: float = 1e-3
    """Learning rate of the decoder and classifier (and of the backbone unless backbone_lr is set)."""
    backbone_lr: float | None = None
    """Learning rate of the backbone; default: the same as lr (fine-tuning often uses lr / 10)."""
    weight_decay: float = 1e-5
    """Weight decay (L2, as Adam and SGD apply it)."""
    scheduler: str = _field("plateau", choices=SCHEDULERS)
    """LR schedule: plateau (halve on a validation-loss plateau, the seed's) or poly (DeepLab)."""
    plateau_patience: int = 5
    """Epochs without validation-loss improvement before the plateau schedule halves the LR."""
    warmup_iters: int = 0
    """Linear learning-rate warm-up over this many optimizer steps (0: none)."""
    grad_accum_steps: int = 1
    """Accumulate gradients over this many batches per optimizer step (a larger effective batch)."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value before each step (default: no clipping)."""
    early_stopping_patience: int | None = _field(None, runtime=True)
    """Stop after this many epochs without a new best validation loss (default: run every epoch)."""
    amp: str = _field("off", choices=AMP_MODES)
    """Mixed precision: off (float32), bf16 (CPU and recent GPUs), fp16 (GPU, with a GradScaler), or
    auto: bf16 on a GPU that has it, fp16 on one that has not (T4, P100), off on a CPU."""
    channels_last: bool = False
    """Train in the channels-last memory format (faster convolutions on tensor-core GPUs)."""
    compile: bool = _field(False, runtime=True, grid_neutral=True)
    """torch.compile the model for training (slow first steps, then faster; needs a C++ compiler)."""
    freeze_bn: bool = False
    """Keep BatchNorm layers in eval mode (running statistics fixed, affine weights still trained)."""
    sync_bn: bool = False
    """Multi-GPU: synchronise BatchNorm statistics across processes (CUDA only)."""
    num_workers: int = _field(2, runtime=True, grid_neutral=True)
    """DataLoader worker processes (0 loads in the main process)."""
    seed: int = 0
    """Seed for weights, data order and augmentation."""
    device: str = _field("auto", runtime=True, grid_neutral=True)
    """'auto' picks CUDA when available, else CPU."""
    max_steps_per_epoch: int | None = None
    """Cut every epoch short after this many steps (for smoke tests)."""
    deterministic: bool = _field(False, added_later=True)
    """Deterministic kernels (torch.use_deterministic_algorithms, no cuDNN autotuning): on a GPU a run
    then repeats bit for bit on the same machine, somewhat slower. Off, cuDNN picks the fastest kernels
    and GPU runs differ in the last bits. CPU runs repeat on the same machine either way."""

    # Evaluation
    eval_batch_size: int = _field(4, runtime=True, grid_neutral=True)
    """Test images per forward pass at full resolution."""
    scores: tuple[str, ...] = _field(SCORES, runtime=True, choices=ALL_SCORES)
    """Anomaly scores to evaluate: msp, maxlogit, entropy, energy; also sml (standardized max logit,
    statistics fitted on the training split before testing), pans (cosine head) and abet (AbeT head)."""
    miou_exclude: tuple[str, ...] | None = _field(None, runtime=True)
    """Class names left out of mIoU; default: what the test set's published protocol leaves out
    (lib.registry: 'pedestrian' on StreetHazards, absent from its test split; none elsewhere)."""
    max_eval_images: int | None = _field(None, runtime=True)
    """Evaluate on the first N test images only (for smoke tests)."""
    test_sets: tuple[str, ...] = _field((), runtime=True, added_later=True)
    """Evaluation sets, each NAME or NAME=ROOT (lib.registry; default: the training dataset's own test
    split): e.g. lostandfound roadanomaly for a Cityscapes model. The training dataset's name means its
    own split; the metrics of every other set are named <set>/... in results.csv and metrics.json."""
    eval_scales: tuple[float, ...] = _field((1.0,), runtime=True, added_later=True)
    """Test-time resize factors whose logits are averaged (PAnS averages its score over scales)."""
    protocols: tuple[str, ...] = _field(PROTOCOLS, runtime=True, added_later=True, choices=PROTOCOLS)
    """Anomaly-metric protocols: pooled (over every test pixel at once: the reference project,
    SegmentMeIfYouCan) and/or per-image (the mean over images with anomalies: the official code)."""
    ood_ignore: tuple[str, ...] = _field((), runtime=True, added_later=True)
    """Class names whose pixels the anomaly metrics skip (none in the official protocol; DenseHybrid
    skips 'other')."""
    window: tuple[int, int] | None = _field(None, runtime=True, added_later=True)
    """Sliding-window inference: (height, width) tiles with 1/3 overlap instead of whole images."""
    conventions: tuple[str, ...] = _field((), runtime=True, added_later=True, choices=CONVENTIONS)
    """Official kits whose rules the anomaly metrics also follow, each under its name in every key
    (ood/<score>/<metric>/<convention>): anomaly-seg (the official StreetHazards code: per image,
    every pixel counted, void as inlier), smiyc (SegmentMeIfYouCan: pooled, its AP and FPR95, and its
    component sIoU / PPV / mean F1 for the component_scores, every score when none are named),
    pytorch-ood (its per-image segmentation metrics). See README "Anomaly metrics under named conventions"."""
    smiyc_track: str = _field("anomaly", runtime=True, added_later=True, choices=SMIYC_TRACK_NAMES)
    """SegmentMeIfYouCan track of the component metrics: anomaly (predicted components under 500 px
    dropped, ground-truth instances under 100 px void) or obstacle (50 px / 10 px)."""
    component_scores: tuple[str, ...] = _field((), runtime=True, added_later=True, choices=ALL_SCORES)
    """Scores that get SegmentMeIfYouCan's component metrics (sIoU, PPV, mean F1; keys .../smiyc) at the
    best-F1 threshold of the kit's pooled curve (a second pass over maps kept in a temporary file,
    5 bytes per pixel and score). With smiyc among the conventions and none named: every score."""

    # Output
    out_dir: str = _field("ckpts", runtime=True, grid_neutral=True)
    """Where runs/<run_name>/ and results.csv are written."""
    run_name: str | None = _field(None, grid_neutral=True)
    """Folder name under out_dir/runs; default: the next free 'run_N'."""
    progress: bool = _field(True, runtime=True, grid_neutral=True)
    """Show tqdm progress bars."""
    tensorboard: bool = _field(True, runtime=True, grid_neutral=True)
    """Write TensorBoard scalars and prediction images to <run>/tensorboard (when it is installed)."""

    def __post_init__(self) -> None:
        self.image_size = tuple(self.image_size)
        self.crop_size = tuple(self.crop_size)
        self.scores = tuple(self.scores)
        self.miou_exclude = None if self.miou_exclude is None else tuple(self.miou_exclude)
        self.protocols = tuple(self.protocols)
        self.ood_ignore = tuple(self.ood_ignore)
        self.component_scores = tuple(self.component_scores)
        self.conventions = tuple(self.conventions)
        self.cities = tuple(self.cities)
        self.test_sets = tuple(self.test_sets)
        self.eval_scales = tuple(float(s) for s in self.eval_scales)
        self.scale_range = None if self.scale_range is None else tuple(float(s) for s in self.scale_range)
        self.window = None if self.window is None else tuple(self.window)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field and its valid values when a setting is off."""
        for f in dataclasses.fields(self):  # every field with choices (its metadata), each item of a tuple
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if choices is not None and value is not None:
                for item in value if isinstance(value, tuple) else (value,):
                    _check_choice(f.name, item, choices)
        if self.backbone not in ARCHS[self.arch]:
            raise ValueError(
                f"arch={self.arch!r} with backbone={self.backbone!r} does not exist; {self.arch} takes "
                f"backbone {' or '.join(ARCHS[self.arch])}"
            )
        if self.output_stride != 16 and self.arch not in ("deeplabv3plus", "deeplabv3"):
            raise ValueError(
                f"output_stride applies to the DeepLab archs only; arch={self.arch!r} has a fixed one"
            )
        if self.separable_conv and self.arch not in ("deeplabv3plus", "deeplabv3"):
            raise ValueError(
                f"separable_conv applies to the DeepLab decoders only, not to arch={self.arch!r}"
            )
        self._validate_data()
        self._validate_evaluation()
        if self.output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {self.output_stride}")
        for name in ("epochs", "batch_size", "eval_batch_size", "n_train", "grad_accum_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_iters", "plateau_patience", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "backbone_lr", "grad_clip"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(
                f"early_stopping_patience must be >= 1 (or None to disable), got {self.early_stopping_patience}"
            )
        if len(self.crop_size) != 2 or min(self.crop_size) < 16:
            raise ValueError(f"crop_size must be (height, width) >= 16, got {self.crop_size}")
        if self.weights and (self.checkpoint or self.pretrained_on):
            raise ValueError(
                f"weights={self.weights!r} evaluates trained weights without training, while checkpoint / "
                "pretrained_on name where training starts: give one or the other"
            )
        if self.gamma_focal < 0 or self.entropy_weight < 0:
            raise ValueError("gamma_focal and entropy_weight must be >= 0")

    @property
    def plan(self):
        """What the data settings resolve to (`lib.registry.RunPlan`: the dataset's entry, the model's
        classes, the test sets with their folders) - resolved once, when the config is checked, and
        again only if a data field was changed in place since."""
        from lib.registry import resolve_run

        key = (self.dataset, self.data_root, tuple(self.test_sets), self.unknown_as_class)
        cached = self.__dict__.get("_plan")
        if cached is None or cached[0] != key:
            plan = resolve_run(self.dataset, self.data_root, key[2], unknown_as_class=self.unknown_as_class)
            self.__dict__["_plan"] = cached = (key, plan)
        return cached[1]

    def _validate_data(self) -> None:
        from lib.registry import dataset_spec

        spec = dataset_spec(self.dataset)
        if self.unknown_as_class and not spec.unknown_label:
            raise ValueError(f"unknown_as_class applies to BDD100K, not to dataset={self.dataset!r}")
        for entry in self.cities:
            split, sep, city = entry.partition("/")
            if not spec.city_folders:
                raise ValueError(f"cities applies to Cityscapes, not to dataset={self.dataset!r}")
            if not sep or split not in ("train", "val", "test") or not city:
                raise ValueError(f"cities entry {entry!r} must read split/city, e.g. train/hamburg")
        for entry in self.test_sets:
            _check_choice("test_sets", parse_test_set(entry)[0], TEST_SETS)
        for t in self.plan.test_sets:
            if t.spec.anomaly_only and not self.scores:
                raise ValueError(
                    f"test set {t.name!r} has anomaly labels only and scores is empty: nothing would be "
                    f"measured on it; give scores (e.g. --scores {' '.join(SCORES)}) or leave the set out"
                )
        if self.scale_range is not None and (
            len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]
        ):
            raise ValueError(f"scale_range must be (min, max) with 0 < min <= max, got {self.scale_range}")
        if not 0 <= self.color_jitter <= 1:
            raise ValueError(f"color_jitter must be in [0, 1], got {self.color_jitter}")
        if not self.eval_scales or min(self.eval_scales) <= 0:
            raise ValueError(f"eval_scales must be positive factors, got {self.eval_scales}")

    def _validate_evaluation(self) -> None:
        if not self.protocols:
            raise ValueError(f"protocols must name at least one of: {', '.join(PROTOCOLS)}")
        classes = self.plan.classes
        for name in (*self.ood_ignore, *(self.miou_exclude or ())):
            if name not in classes:
                what = "ood_ignore" if name in self.ood_ignore else "miou_exclude"
                raise ValueError(
                    f"{what}={name!r} is not a class of dataset={self.dataset!r}; its classes: {', '.join(classes)}"
                )
        for name in self.component_scores:
            if name not in self.scores:
                raise ValueError(f"component_scores={name!r} must be among scores {list(self.scores)}")
        if self.window is not None and (len(self.window) != 2 or min(self.window) < 16):
            raise ValueError(f"window must be (height, width) >= 16, got {self.window}")

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
    """Every named setting (`lib.recipes.presets`: demo, grid, tiny, streethazards-reference, and each
    recipe of `lib.recipes.RECIPES` as NAME, NAME-demo and NAME-tiny)."""
    from lib.recipes import presets as recipe_presets

    return recipe_presets()


def _fields_with(fact: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata.get(fact))


#: Fields that may differ from the checkpoint's config when training resumes (`--resume`) or a
#: checkpoint is evaluated (`scripts/test.py`); every other field defines the training and must match.
RUNTIME_FIELDS: tuple[str, ...] = _fields_with("runtime")
#: Fields that do not change a run's result (left out of a grid row's config_id).
GRID_NEUTRAL_FIELDS: tuple[str, ...] = _fields_with("grid_neutral")
#: Fields added after grid rows were written -> their default (at it, they stay out of config_id).
ADDED_LATER_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(RunConfig) if f.metadata.get("added_later")
}
#: The generated data's parameters.
SYNTHETIC_DATA_FIELDS: tuple[str, ...] = _fields_with("synthetic_data")
#: Valid values of the fields that take a name (argparse shows them as choices).
FIELD_CHOICES: dict[str, tuple[str, ...]] = {
    f.name: f.metadata["choices"] for f in dataclasses.fields(RunConfig) if f.metadata.get("choices")
}

#: Flag spellings of scripts/train.py and scripts/test.py, so that the seed's command lines work
#: there unchanged. The seed's --dataset named the PRETRAINING source of the DeepLabv3+ weights
#: (cityscapes or voc), so the training data (RunConfig.dataset) is spelled --data there.
SEED_FLAGS: dict[str, tuple[str, ...]] = {
    "entropy_weight": ("--entropy-weight", "--gamma"),
    "gamma_focal": ("--gamma-focal", "--gamma_focal"),
    "pretrained_on": ("--pretrained-on", "--dataset"),
    "dataset": ("--data",),
}
#: Help text added to those flags.
SEED_FLAG_NOTES: dict[str, str] = {
    "entropy_weight": "--gamma is the seed's spelling.",
    "gamma_focal": "--gamma_focal is the seed's spelling.",
    "pretrained_on": "--dataset is the seed's spelling: it names where the weights were trained, "
    "not the training data (that is --data).",
    "dataset": "Spelled --data here because --dataset is the seed's pretraining source "
    "(scripts/main.py spells this one --dataset).",
}


def add_config_arguments(
    parser: argparse.ArgumentParser,
    *,
    flags: Mapping[str, Sequence[str]] | None = None,
    help_notes: Mapping[str, str] | None = None,
    exclude: Sequence[str] = (),
) -> None:
    """Add one --flag per RunConfig field, with the field's documentation as help.

    Args:
        parser: gets one argument per field, ``dest`` = the field name, default None (not given).
        flags: option strings per field replacing the default ``--field-name`` (e.g. the seed's
            ``{"gamma_focal": ("--gamma-focal", "--gamma_focal")}``).
        help_notes: text appended to a field's help (e.g. why a flag is spelled differently).
        exclude: fields that get no flag.
    """
    defaults = RunConfig()
    docs = _field_docs()
    flags = dict(flags or {})
    help_notes = dict(help_notes or {})
    for f in dataclasses.fields(RunConfig):
        if f.name in exclude:
            continue
        names = tuple(flags.get(f.name, ("--" + f.name.replace("_", "-"),)))
        default = getattr(defaults, f.name)
        help_text = " ".join(docs.get(f.name, "").split())
        if f.name in help_notes:
            help_text += " " + help_notes[f.name]
        if "default" not in help_text:
            help_text = f"{help_text} (default: {default})".strip()
        common = dict(dest=f.name, default=None, help=help_text, choices=FIELD_CHOICES.get(f.name))
        if isinstance(default, bool):
            common.pop("choices")
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **common)
        elif isinstance(default, tuple) or "tuple" in str(f.type):
            text = str(f.type)
            item_type = float if "float" in text else int if "int" in text else str
            parser.add_argument(*names, nargs="+", type=item_type, **common)
        else:
            parser.add_argument(*names, type=_scalar_type(f.type, default), **common)


def config_from_args(args: argparse.Namespace, *, base: dict[str, Any] | None = None) -> RunConfig:
    """Build a RunConfig from parsed flags: defaults < base (a preset) < flags given."""
    return RunConfig.from_dict({**(base or {}), **given_fields(args)})


def given_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig fields whose flags were given (not None) in parsed `args`."""
    values = {}
    for f in dataclasses.fields(RunConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    return values


def config_with_overrides(
    saved: RunConfig | Mapping[str, Any], given: Mapping[str, Any], *, purpose: str
) -> RunConfig:
    """A checkpoint's config with the `RUNTIME_FIELDS` among `given` changed.

    Args:
        saved: the config stored in the checkpoint.
        given: field -> value the user asked for (e.g. the flags given on the command line).
        purpose: what is being done, for the error message ("resuming run_3").

    Raises:
        ValueError: a field outside RUNTIME_FIELDS was given a different value; names each one
            with both values.
    """
    saved = saved if isinstance(saved, RunConfig) else RunConfig.from_dict(dict(saved))
    conflicts = []
    for name, value in given.items():
        current = getattr(saved, name)
        value = tuple(value) if isinstance(value, list) else value
        if name not in RUNTIME_FIELDS and value != current:
            conflicts.append(f"--{name.replace('_', '-')} {value!r} (the checkpoint has {current!r})")
    if conflicts:
        raise ValueError(
            f"{purpose}: {'; '.join(conflicts)} would change how the model was trained; only these "
            f"fields may change: {', '.join(RUNTIME_FIELDS)}. Start a new run to change the others."
        )
    return saved.replace(**{k: v for k, v in given.items() if k in RUNTIME_FIELDS})


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
    "ARCHS",
    "LOSSES",
    "SCORES",
    "ALL_SCORES",
    "DATASETS",
    "BACKBONES",
    "HEADS",
    "SCHEDULERS",
    "OPTIMIZERS",
    "AMP_MODES",
    "ENTROPY_TERMS",
    "REFERENCE_RECIPE",
    "PRETRAINED_ON",
    "ADDED_LATER_DEFAULTS",
    "GRID_NEUTRAL_FIELDS",
    "SYNTHETIC_DATA_FIELDS",
    "PROTOCOLS",
    "CONVENTIONS",
    "SMIYC_TRACK_NAMES",
    "RUNTIME_FIELDS",
    "FIELD_CHOICES",
    "SEED_FLAGS",
    "SEED_FLAG_NOTES",
    "RunConfig",
    "presets",
    "add_config_arguments",
    "config_from_args",
    "config_with_overrides",
    "given_fields",
]


def __getattr__(name: str):
    if name == "PRETRAINED_SOURCES":
        raise AttributeError(
            "lib.config.PRETRAINED_SOURCES is now lib.config.PRETRAINED_ON (the data DeepLab weights were "
            "trained on); network.PRETRAINED_SOURCES names backbone initialisations"
        )
    raise AttributeError(f"module 'lib.config' has no attribute {name!r}")
