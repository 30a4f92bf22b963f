"""The dataset base class, image+mask transforms, validation, loaders, class statistics.

Every dataset returns ``(image, mask)``: image a ``tv_tensors.Image`` uint8 of Shape (3, H, W),
mask a ``tv_tensors.Mask`` int64 train ids of Shape (H, W) with 255 = ignore. The base class
`SegmentationDataset` does the decoding, the raw-value -> train-id mapping (a 256-entry lookup
table per dataset, `LabelEncoding`), the checks and `validate`; a dataset only says where its
files are. The datasets themselves - StreetHazards, Cityscapes, BDD100K, LostAndFound, RoadAnomaly -
are in `lib.datasets` (``lib.data.StreetHazards`` and its helpers still resolve there).

Speed: 8-bit RGB PNGs are decoded by libspng when ``pyspng`` is installed (else, like every other
file, by OpenCV straight to RGB; both give identical pixels), transforms run on uint8 tensors,
the mask is cast to int64 only after the transforms (so only the crop is widened), and
normalisation happens on the batch, on the GPU (`normalize`). ``scripts/bench_data.py`` measures
it against the seed's PIL pipeline; PNG decoding (mostly zlib inflate) is most of the cost of both.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from lib.classes import IGNORE_INDEX
from lib.layout import STREETHAZARDS_SPLITS, StreetHazardsSplit  # noqa: F401 - re-exported

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# Decode straight to RGB where OpenCV can (4.10+); ignore EXIF orientation because label images
# are drawn on the stored pixel grid, never on a rotated view.
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)
_IMREAD_FLAGS = (cv2.IMREAD_COLOR if _IMREAD_RGB is None else _IMREAD_RGB) | cv2.IMREAD_IGNORE_ORIENTATION

try:  # optional: libspng decodes 8-bit RGB PNGs faster than OpenCV's libpng (scripts/bench_data.py)
    import pyspng as _pyspng
except ImportError:  # pragma: no cover - depends on the environment
    _pyspng = None


class DatasetError(ValueError):
    """A problem with the files of a dataset; the message names the file and the fix."""


@dataclass(frozen=True)
class Sample:
    image: Path
    annotation: Path


# ----------------------------------------------------------------------------- label encodings


@dataclass(frozen=True, eq=False)
class LabelEncoding:
    """How the raw values of a dataset's annotation PNGs become train ids.

    Args:
        lut: Shape (256,) uint8: raw value -> train id (255 for raw values that mean "no label").
        valid: Shape (256,) bool: raw values that may occur; any other value is an error.
        description: the allowed raw values in words, for error messages (e.g. ``"1..14"``).
    """

    lut: np.ndarray = field(repr=False)
    valid: np.ndarray = field(repr=False)
    description: str
    _invalid: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.lut.shape != (256,) or self.valid.shape != (256,):
            raise ValueError("lut and valid must have 256 entries, one per uint8 value")
        object.__setattr__(self, "lut", np.ascontiguousarray(self.lut, dtype=np.uint8))
        object.__setattr__(self, "valid", np.ascontiguousarray(self.valid, dtype=bool))
        object.__setattr__(self, "_invalid", (~self.valid).astype(np.uint8))

    @classmethod
    def from_mapping(cls, mapping: Mapping[int, int], description: str) -> LabelEncoding:
        """Encoding in which exactly the raw values in `mapping` are valid."""
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        valid = np.zeros(256, dtype=bool)
        for raw, train_id in mapping.items():
            if not (0 <= raw <= 255 and 0 <= train_id <= 255):
                raise ValueError(f"raw value {raw} -> train id {train_id}: both must be in 0..255")
            lut[raw] = train_id
            valid[raw] = True
        return cls(lut, valid, description)

    def encode(self, raw: np.ndarray, *, path: Path, dataset: str) -> np.ndarray:
        """Raw uint8 annotation -> uint8 train ids, same Shape (H, W).

        Raises:
            DatasetError: a raw value outside the valid set (naming the file and the value).
        """
        value = self.first_invalid(raw)
        if value is not None:
            raise DatasetError(
                f"annotation {path} has value {value}; {dataset} labels are {self.description} "
                f"(raw PNG values): check that this is a {dataset} annotation and not a colour or "
                "train-id image, or re-extract the file"
            )
        return cv2.LUT(raw, self.lut)

    def first_invalid(self, raw: np.ndarray) -> int | None:
        """The first raw value (in memory order) outside the valid set, or None."""
        # cv2.LUT + countNonZero: two fast passes, no temporary bool array on the common path.
        if not cv2.countNonZero(cv2.LUT(raw, self._invalid)):
            return None
        return int(raw[~self.valid[raw]].flat[0])

    @property
    def raw_values(self) -> list[int]:
        return np.flatnonzero(self.valid).tolist()


# ----------------------------------------------------------------------------- decoding


def read_image(path: Path) -> torch.Tensor:
    """Decode an image file (PNG, JPEG, WebP) to an RGB uint8 tensor with OpenCV.

    Shape: (3, H, W) (a view of the decoded H x W x 3 array: no copy).

    Raises:
        DatasetError: the file is missing or does not decode.
    """
    if _pyspng is not None and str(path).lower().endswith(".png"):
        image = _read_rgb8_png(Path(path))
        if image is not None:
            return image
    image = cv2.imread(str(path), _IMREAD_FLAGS)
    if image is None:
        raise DatasetError(f"cannot decode image {path}; the file is missing or damaged: re-extract it")
    if _IMREAD_RGB is None:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return torch.from_numpy(image).permute(2, 0, 1)


def _read_rgb8_png(path: Path) -> torch.Tensor | None:
    """pyspng fast path for 8-bit RGB PNGs (the images of every dataset here); None for any other
    PNG kind, which OpenCV then decodes (so both paths give identical pixels)."""
    try:
        data = path.read_bytes()
    except OSError:
        raise DatasetError(
            f"cannot decode image {path}; the file is missing or damaged: re-extract it"
        ) from None
    # IHDR is the first chunk: bit depth at byte 24, colour type at byte 25 (2 = RGB).
    if len(data) < 33 or data[12:16] != b"IHDR" or data[24] != 8 or data[25] != 2:
        return None
    try:
        image = _pyspng.load(data, format="RGB")
    except RuntimeError:
        raise DatasetError(
            f"cannot decode image {path}; the file is missing or damaged: re-extract it"
        ) from None
    return torch.from_numpy(image).permute(2, 0, 1)


def read_label_png(
    path: Path, *, dataset: str = "StreetHazards", expected: str = "values 1..14"
) -> np.ndarray:
    """Decode a label PNG as stored: Shape (H, W) uint8, no mapping.

    Raises:
        DatasetError: the file does not decode, or is not a single-channel 8-bit image.
    """
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"cannot decode annotation {path}; the file is missing or damaged: re-extract it")
    if raw.ndim != 2 or raw.dtype != np.uint8:
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        raise DatasetError(
            f"annotation {path} has {channels} channel(s) of {raw.dtype}; {dataset} annotations are "
            f"single-channel 8-bit PNGs with {expected} (a colour-coded label image is not an "
            "annotation: use the label-id PNGs of the release)"
        )
    return raw


def _jpeg_is_complete(path: Path) -> bool:
    """OpenCV decodes a truncated JPEG with only a warning; a complete one ends with the EOI marker."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 1024))
        tail = f.read()
    return b"\xff\xd9" in tail  # 0xFFD9 cannot occur inside entropy-coded data (0xFF is stuffed)


# ----------------------------------------------------------------------------- base class


class SegmentationDataset(Dataset):
    """Base of every dataset here: (image, mask) pairs decoded, mapped, checked and transformed.

    Subclasses set the class attributes and implement `find_samples` (pairs of the split, with
    the subset options applied, before `limit`) and `annotation_files` (every annotation of the
    split on disk with the image it needs, for the extra-annotation check).

    Args:
        root: the dataset folder (see the subclass for what it must contain).
        split: one of the subclass's `splits`.
        transforms: a transforms-v2 callable taking and returning ``(Image, Mask)``. It gets the
            mask as uint8 train ids (cheaper to crop); the mask is cast to int64 after it.
        limit: keep only the first ``limit`` samples (in sorted file order).

    Returns (per item):
        image: ``tv_tensors.Image`` uint8, Shape (3, H, W) (normalise with `normalize`).
        mask: ``tv_tensors.Mask`` int64 train ids, Shape (H, W); 255 = ignore.
    """

    #: Name used in messages.
    name: ClassVar[str] = "dataset"
    #: Class names in train-id order.
    classes: tuple[str, ...] = ()
    #: Valid split names.
    splits: ClassVar[tuple[str, ...]] = ()
    #: Train id of the anomaly class, or None where the dataset has none.
    anomaly_id: int | None = None
    #: Mask value no loss or metric looks at.
    ignore_index: ClassVar[int] = IGNORE_INDEX
    #: Raw annotation value -> train id.
    encoding: LabelEncoding
    #: One line on how to get the dataset, appended to "folder not found" errors.
    download_hint: ClassVar[str] = ""

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        transforms: Callable | None = None,
        limit: int | None = None,
    ) -> None:
        if split not in self.splits:
            raise DatasetError(
                f"unknown split {split!r} for {self.name}; valid splits: {', '.join(self.splits)}"
            )
        if limit is not None and limit < 1:
            raise DatasetError(f"limit must be a positive number of samples, got {limit}")
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        self.samples: list[Sample] = self.find_samples()[:limit]

    # -- what a subclass provides

    def find_samples(self) -> list[Sample]:
        """(image, annotation) pairs of the split, sorted; raises DatasetError on any problem."""
        raise NotImplementedError

    def annotation_files(self) -> list[tuple[Path, Path]]:
        """Every annotation file of the split on disk, with the image path it needs."""
        raise NotImplementedError

    # -- decoding

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def read_mask(self, path: Path) -> np.ndarray:
        """Annotation file -> uint8 train ids, Shape (H, W) (255 = ignore); checks every value."""
        raw = read_label_png(path, dataset=self.name, expected=f"values {self.encoding.description}")
        return self.encoding.encode(raw, path=path, dataset=self.name)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image = tv_tensors.Image(read_image(sample.image))
        mask = tv_tensors.Mask(torch.from_numpy(self.read_mask(sample.annotation)))
        if image.shape[-2:] != mask.shape[-2:]:
            raise DatasetError(
                f"image {sample.image} is {tuple(image.shape[-2:])} but its annotation {sample.annotation} is "
                f"{tuple(mask.shape[-2:])}; they must have the same size (re-extract the pair)"
            )
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        return image, tv_tensors.Mask(mask.to(torch.int64))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, samples={len(self)})"

    # -- validation

    def validate(self, *, decode: bool = True) -> int:
        """Check the split before use: every image has its annotation and every annotation its
        image, and (with `decode`) every file of `samples` decodes, pairs have one size and every
        label value is one the dataset defines.

        Returns:
            The number of samples checked.

        Raises:
            DatasetError: at the first problem, naming the file and the fix.
        """
        paired = {s.annotation for s in self.find_samples()}
        for annotation, image in self.annotation_files():
            if annotation not in paired:
                raise DatasetError(
                    f"annotation {annotation} has no image (expected {image}); remove it or restore the image"
                )
        if decode:
            for s in self.samples:
                self.check_sample(s)
        return len(self.samples)

    def check_sample(self, sample: Sample) -> None:
        """Decode one pair and check it (values, size, JPEG completeness); raises DatasetError."""
        labels = self.read_mask(sample.annotation)
        image = read_image(sample.image)
        if sample.image.suffix.lower() in (".jpg", ".jpeg") and not _jpeg_is_complete(sample.image):
            raise DatasetError(
                f"cannot decode image {sample.image} completely: the JPEG is truncated; re-extract it"
            )
        if image.shape[-2:] != labels.shape:
            raise DatasetError(
                f"image {sample.image} is {tuple(image.shape[-2:])} but annotation {sample.annotation} is "
                f"{tuple(labels.shape)}; they must have the same size (re-extract the pair)"
            )

    # -- helpers for subclasses

    def _missing_folder(
        self, missing: Path, required: Sequence[str], *, alternatives: Sequence[Sequence[str]] = ()
    ) -> DatasetError:
        """Error for a folder that is not there, suggesting a nearby root that holds `required`
        (or one of the `alternatives`, for datasets released in several layouts)."""
        message = f"{self.name} folder {missing} does not exist"
        for option in (required, *alternatives):
            found = suggest_root(self.root, option)
            if found is not None:
                return DatasetError(f"{message}; did you mean data_root={str(found)!r}?")
        if not self.root.exists():
            return DatasetError(f"{message}: {self.root} is missing. {self.download_hint}".rstrip())
        return DatasetError(f"{message}; point data_root at the folder that contains {', '.join(required)}")

    def _pair(
        self, images: Sequence[Path], annotation_for: Callable[[Path], Path], where: Path
    ) -> list[Sample]:
        """Samples for `images` (sorted), with `annotation_for(image)`; empty or unpaired -> error."""
        if not images:
            raise DatasetError(
                f"split {self.split!r} of {self.name} under {self.root} is empty: no image in {where}; "
                "check that the dataset was extracted completely"
            )
        return with_annotations([Sample(p, annotation_for(p)) for p in sorted(images)])


def suggest_root(root: Path, required: Sequence[str]) -> Path | None:
    """A folder near `root` (itself, two levels down, two up) that contains every `required` path."""
    root = Path(root)
    if not required:
        return None
    candidates: list[Path] = []
    if root.is_dir():
        candidates += [root, *sorted(root.glob("*")), *sorted(root.glob("*/*"))]
    candidates += [p for p in list(root.parents)[:2] if p.is_dir()]
    for candidate in candidates:
        if candidate.is_dir() and all((candidate / r).exists() for r in required):
            return candidate
    return None


# ----------------------------------------------------------------------------- pairing


def with_annotations(samples: list[Sample]) -> list[Sample]:
    """`samples`, after checking that every annotation file exists (else DatasetError naming it)."""
    for s in samples:
        if not s.annotation.is_file():
            raise DatasetError(
                f"image {s.image} has no annotation (expected {s.annotation}); "
                "restore the annotation or remove the image"
            )
    return samples


# ----------------------------------------------------------------------------- transforms


def train_transforms(
    crop_size: Sequence[int],
    *,
    scale_range: Sequence[float] | None = None,
    color_jitter: float = 0.0,
) -> v2.Compose:
    """Optional random resize, random crop (padded with image 0 / mask 255 when the image is
    smaller), horizontal flip and optional colour jitter, on the (image, mask) pair.

    Args:
        crop_size: (height, width) of the crop.
        scale_range: (min, max): the image is first resized by a random factor in this range
            (bilinear for the image, nearest for the mask: transforms v2 picks per type).
        color_jitter: brightness, contrast and saturation jitter of this strength (image only).

    Works on uint8 images; normalisation happens later, on the batch (`normalize`).
    """
    steps: list = []
    if scale_range is not None:
        steps.append(_RandomScale(tuple(scale_range)))
    steps += [
        v2.RandomCrop(
            tuple(crop_size), pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}
        ),
        v2.RandomHorizontalFlip(),
    ]
    if color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    return v2.Compose(steps)


class _RandomScale(v2.Transform):
    """Resize the pair by one random factor drawn uniformly from (min, max)."""

    def __init__(self, scale_range: tuple[float, float]) -> None:
        super().__init__()
        self.scale_range = scale_range

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.functional.get_size(
            next(x for x in flat_inputs if isinstance(x, tv_tensors.Image))
        )
        factor = float(torch.empty(()).uniform_(*self.scale_range))
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt, params: dict):
        if isinstance(inpt, tv_tensors.Mask):
            return v2.functional.resize(inpt, params["size"], interpolation=v2.InterpolationMode.NEAREST)
        if isinstance(inpt, tv_tensors.Image):
            return v2.functional.resize(inpt, params["size"], antialias=True)
        return inpt


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB batch -> float ImageNet-normalised batch, on the batch's device.

    Shape: (B, 3, H, W) -> (B, 3, H, W).
    """
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float().div_(255.0) - mean) / std


# ----------------------------------------------------------------------------- loaders


def seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a DataLoader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int,
    drop_last: bool = False,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A DataLoader whose order and augmentation depend only on `seed` - the project's one builder.

    With ``num_workers > 0`` each worker's augmentation RNG derives from `seed`; with 0 the
    transforms draw from the global torch RNG, which `lib.utils.seed_everything` seeds. A
    `sampler` (e.g. one process's shard under torchrun, `lib.distributed`) replaces shuffling
    (`shuffle` must then be False); give each process its own `seed` so that their workers'
    augmentations differ.

    Workers deliberately do not call ``cv2.setNumThreads``: in a worker forked after the main
    process used OpenCV's thread pool (e.g. `validate_split` decoding every file), that call
    blocks forever on the pool's inherited state. The per-sample OpenCV work here (decode, two
    lookup tables) is single-threaded or tiny, so there is nothing to oversubscribe.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )


# ----------------------------------------------------------------------------- class statistics


@dataclass
class ClassStatistics:
    """Pixel statistics of a split's annotations (train ids), from one pass over the files.

    Attributes:
        counts: Shape (C,) int64: pixels of each class.
        image_pixels: Shape (C,) int64: labelled pixels of the images in which the class occurs
            (the denominator of median frequency balancing).
        images: Shape (C,) int64: number of images in which the class occurs.
        num_images: images read.
        ignored: pixels with the ignore value.
        other: labelled pixels with an id >= C (e.g. the anomaly when C excludes it).
    """

    counts: torch.Tensor
    image_pixels: torch.Tensor
    images: torch.Tensor
    num_images: int
    ignored: int
    other: int

    @property
    def frequencies(self) -> torch.Tensor:
        """Share of each class among the counted pixels. Shape (C,), float64, sums to 1 (or 0)."""
        return self.counts.double() / self.counts.sum().clamp(min=1)


def class_statistics(
    dataset: SegmentationDataset, *, num_classes: int | None = None, progress: bool = False
) -> ClassStatistics:
    """Count pixels per train id over ``dataset.samples`` in one streaming pass (annotations only).

    Args:
        num_classes: ids 0..num_classes-1 are counted (default: all of ``dataset.classes``).
        progress: show a tqdm bar.

    Memory is constant: one annotation at a time, one 256-bin histogram each.
    """
    num_classes = dataset.num_classes if num_classes is None else num_classes
    counts = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    images = np.zeros(num_classes, dtype=np.int64)
    ignored = other = 0
    samples = dataset.samples
    if progress:
        from tqdm.auto import tqdm

        samples = tqdm(samples, desc=f"class statistics ({dataset.name} {dataset.split})", unit="img")
    for s in samples:
        hist = np.bincount(dataset.read_mask(s.annotation).ravel(), minlength=256)
        per_class = hist[:num_classes]
        present = per_class > 0
        labelled = int(hist.sum() - hist[IGNORE_INDEX])
        counts += per_class
        images += present
        image_pixels[present] += labelled
        ignored += int(hist[IGNORE_INDEX])
        other += labelled - int(per_class.sum())
    return ClassStatistics(
        counts=torch.from_numpy(counts),
        image_pixels=torch.from_numpy(image_pixels),
        images=torch.from_numpy(images),
        num_images=len(dataset.samples),
        ignored=ignored,
        other=other,
    )


def class_pixel_counts(dataset: SegmentationDataset, *, num_classes: int | None = None) -> torch.Tensor:
    """Pixels per train id over a split, reading the annotations only. Shape: (num_classes,).

    `num_classes` defaults to the dataset's number of classes (14 for StreetHazards).
    """
    return class_statistics(dataset, num_classes=num_classes).counts


def inverse_frequency_weights(counts: torch.Tensor) -> torch.Tensor:
    """Class weights proportional to 1 / frequency, normalised to mean 1 over present classes."""
    freq = counts.double() / counts.sum().clamp(min=1)
    weights = torch.where(freq > 0, 1.0 / freq.clamp(min=1e-12), torch.zeros_like(freq))
    present = freq > 0
    weights[present] = weights[present] / weights[present].mean()
    return weights.float()


def median_frequency_weights(counts: torch.Tensor, image_pixels: torch.Tensor | None = None) -> torch.Tensor:
    """Median frequency balancing (Eigen & Fergus 2015): weight_c = median(freq) / freq_c.

    Args:
        counts: Shape (C,): pixels per class.
        image_pixels: Shape (C,): labelled pixels of the images where the class occurs
            (`ClassStatistics.image_pixels`); without it freq_c is the plain pixel share.

    Returns:
        Shape (C,) float32; classes with no pixel get weight 0 and are left out of the median
        (for an even number of present classes the lower of the two middle values, as torch.median).
    """
    counts = counts.double()
    denominator = counts.sum().expand_as(counts) if image_pixels is None else image_pixels.double()
    present = counts > 0
    weights = torch.zeros_like(counts)
    if present.any():
        freq = counts[present] / denominator[present]
        weights[present] = freq.median() / freq
    return weights.float()


#: The StreetHazards loader and its helpers live in `lib.datasets` with the other datasets; these
#: names of lib.data keep working (imported on first use: lib.datasets imports this module).
_MOVED_TO_DATASETS = (
    "STREETHAZARDS_ENCODING",
    "StreetHazards",
    "check_annotation_values",
    "find_samples",
    "read_annotation",
    "read_odgt",
    "validate_split",
)


def __getattr__(name: str):
    if name in _MOVED_TO_DATASETS:
        import lib.datasets

        return getattr(lib.datasets, name)
    raise AttributeError(f"module 'lib.data' has no attribute {name!r}")
