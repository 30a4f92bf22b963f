"""StreetHazards dataset, image+mask transforms, validation and DataLoader helpers.

The same code reads the real StreetHazards release and the synthetic one that
`lib.synthetic` writes in the identical layout::

    root/train/images/training/t1-3/*.png   root/train/annotations/training/t1-3/*.png
    root/train/images/validation/t4/*.png   root/train/annotations/validation/t4/*.png
    root/test/images/test/t5/*.png          root/test/annotations/test/t5/*.png   (t6, t5-6 too)
    root/train/training.odgt, root/train/validation.odgt, root/test/test.odgt    (optional index)

Annotations are single-channel PNGs with raw values 1..14; the dataset returns train ids
``raw - 1`` (0..13, anomaly = 13) as int64, and raw 0 becomes the ignore value 255.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from lib.classes import IGNORE_INDEX, RAW_MAX, RAW_MIN, STREETHAZARDS_CLASSES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: split name -> (odgt file, image folder, annotation folder), relative to the root.
SPLITS: dict[str, tuple[str, str, str]] = {
    "train": ("train/training.odgt", "train/images/training", "train/annotations/training"),
    "val": ("train/validation.odgt", "train/images/validation", "train/annotations/validation"),
    "test": ("test/test.odgt", "test/images/test", "test/annotations/test"),
}


class DatasetError(ValueError):
    """A problem with the files of a dataset; the message names the file and the fix."""


@dataclass(frozen=True)
class Sample:
    image: Path
    annotation: Path


# ----------------------------------------------------------------------------- discovery


def find_samples(root: str | Path, split: str) -> list[Sample]:
    """List (image, annotation) pairs of a StreetHazards split.

    Reads the split's ``.odgt`` index when present (one JSON array line, or one JSON object
    per line), else pairs the PNGs found under the split's image folder with the annotation
    of the same relative path.

    Raises:
        DatasetError: unknown split, missing folders, empty split or unpaired files.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    root = Path(root)
    odgt, image_dir, annotation_dir = SPLITS[split]
    if not (root / image_dir).is_dir():
        raise DatasetError(_missing_root_message(root, image_dir))
    if (root / odgt).is_file():
        samples = [Sample(root / r["fpath_img"], root / r["fpath_segm"]) for r in read_odgt(root / odgt)]
        missing = [s for s in samples if not s.image.is_file()]
        if missing:
            raise DatasetError(
                f"{root / odgt} lists {len(missing)} image(s) that do not exist, e.g. {missing[0].image}; "
                "re-extract the dataset or delete the .odgt file to index the folders instead"
            )
    else:
        images = sorted((root / image_dir).rglob("*.png"))
        samples = [Sample(p, root / annotation_dir / p.relative_to(root / image_dir)) for p in images]
    if not samples:
        raise DatasetError(
            f"split {split!r} under {root} is empty: no PNG in {root / image_dir}; "
            "check that the dataset was extracted completely"
        )
    for s in samples:
        if not s.annotation.is_file():
            raise DatasetError(
                f"image {s.image} has no annotation (expected {s.annotation}); "
                "restore the annotation or remove the image"
            )
    return samples


def read_odgt(path: str | Path) -> list[dict]:
    """Read an .odgt index: one line holding a JSON array, or one JSON object per line."""
    text = Path(path).read_text().strip()
    if not text:
        return []
    try:
        if text.startswith("["):
            return list(json.loads(text))
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path} is not a valid .odgt file ({err}); regenerate it or delete it") from None


def _missing_root_message(root: Path, image_dir: str) -> str:
    message = f"dataset folder {root / image_dir} does not exist"
    # Suggest a nearby folder that does have the expected layout (a common extraction slip).
    candidates = [root, *root.glob("*"), *root.glob("*/*")] if root.is_dir() else []
    for candidate in candidates:
        if (candidate / image_dir).is_dir():
            return f"{message}; did you mean data_root={str(candidate)!r}?"
    if not root.exists():
        return (
            f"{message}: {root} is missing. Download StreetHazards (scripts/download_streethazards.sh) "
            "or use dataset='synthetic' to generate the embedded dataset"
        )
    return f"{message}; point data_root at the folder that contains train/ and test/"


# ----------------------------------------------------------------------------- decoding


def read_image(path: Path) -> torch.Tensor:
    """Decode an RGB PNG to a uint8 tensor (OpenCV: the fastest reliable decoder here).

    Shape: (3, H, W).
    """
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot decode image {path}; the file is missing or damaged: re-extract it")
    return torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)


def read_annotation(path: Path) -> torch.Tensor:
    """Decode a StreetHazards annotation to train ids. Shape: (H, W), int64, ignore = 255."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"cannot decode annotation {path}; the file is missing or damaged: re-extract it")
    if raw.ndim != 2 or raw.dtype != np.uint8:
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        raise DatasetError(
            f"annotation {path} has {channels} channel(s) of {raw.dtype}; StreetHazards annotations are "
            "single-channel 8-bit PNGs with values 1..14 (a colour-coded label image is not an annotation)"
        )
    labels = torch.from_numpy(raw).long() - 1
    labels[labels < 0] = IGNORE_INDEX  # raw 0: no label
    return labels


def check_annotation_values(labels: torch.Tensor, path: Path) -> None:
    """Raise DatasetError if an annotation holds a value outside the StreetHazards range."""
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels > RAW_MAX - RAW_MIN))
    if bool(bad.any()):
        value = int(labels[bad][0]) + 1
        raise DatasetError(
            f"annotation {path} has value {value}; StreetHazards labels are {RAW_MIN}..{RAW_MAX} "
            "(raw PNG values): check that this is a StreetHazards annotation and not a colour or train-id image"
        )


# ----------------------------------------------------------------------------- dataset


class StreetHazards(Dataset):
    """StreetHazards split as (image, mask) pairs.

    Args:
        root: folder that contains ``train/`` and ``test/``.
        split: ``train``, ``val`` or ``test``.
        transforms: a transforms-v2 callable taking and returning ``(Image, Mask)``.
        limit: keep only the first ``limit`` samples.

    Returns (per item):
        image: ``tv_tensors.Image`` uint8, Shape (3, H, W) (normalise with `normalize`).
        mask: ``tv_tensors.Mask`` int64 train ids, Shape (H, W); 13 = anomaly, 255 = ignore.
    """

    classes = STREETHAZARDS_CLASSES

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        transforms: Callable | None = None,
        limit: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.samples = find_samples(self.root, split)[:limit]
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image = tv_tensors.Image(read_image(sample.image))
        mask = tv_tensors.Mask(read_annotation(sample.annotation))
        if image.shape[-2:] != mask.shape[-2:]:
            raise DatasetError(
                f"image {sample.image} is {tuple(image.shape[-2:])} but its annotation is "
                f"{tuple(mask.shape[-2:])}; they must have the same size (re-extract the pair)"
            )
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        return image, mask


def validate_split(root: str | Path, split: str, *, decode: bool = True) -> int:
    """Check a split before training: pairs exist, files decode, sizes match, labels in 1..14.

    Args:
        decode: also decode every image and annotation (reads every byte once).

    Returns:
        The number of samples checked.

    Raises:
        DatasetError: at the first problem, naming the file and the fix.
    """
    samples = find_samples(root, split)
    images = {s.image.relative_to(Path(root)) for s in samples}
    annotation_dir = Path(root) / SPLITS[split][2]
    image_dir = Path(root) / SPLITS[split][1]
    if annotation_dir.is_dir():
        for extra in sorted(annotation_dir.rglob("*.png")):
            twin = image_dir / extra.relative_to(annotation_dir)
            if twin.relative_to(Path(root)) not in images:
                raise DatasetError(
                    f"annotation {extra} has no image (expected {twin}); remove it or restore the image"
                )
    if decode:
        for s in samples:
            labels = read_annotation(s.annotation)
            check_annotation_values(labels, s.annotation)
            image = read_image(s.image)
            if image.shape[-2:] != labels.shape:
                raise DatasetError(
                    f"image {s.image} is {tuple(image.shape[-2:])} but annotation {s.annotation} is "
                    f"{tuple(labels.shape)}; they must have the same size (re-extract the pair)"
                )
    return len(samples)


# ----------------------------------------------------------------------------- transforms


def train_transforms(crop_size: Sequence[int]) -> v2.Compose:
    """Random crop (padded with image 0 / mask 255 when the image is smaller) and flip.

    Works on uint8 images; normalisation happens later, on the batch (`normalize`).
    """
    return v2.Compose(
        [
            v2.RandomCrop(
                tuple(crop_size),
                pad_if_needed=True,
                fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX},
            ),
            v2.RandomHorizontalFlip(),
        ]
    )


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
) -> DataLoader:
    """A DataLoader whose order and augmentation depend only on `seed`.

    With ``num_workers > 0`` each worker's augmentation RNG derives from `seed`; with 0 the
    transforms draw from the global torch RNG, which `lib.utils.seed_everything` seeds.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )


def class_pixel_counts(
    dataset: StreetHazards, *, num_classes: int = len(STREETHAZARDS_CLASSES)
) -> torch.Tensor:
    """Pixels per train id over a split, reading the annotations only. Shape: (num_classes,)."""
    counts = torch.zeros(num_classes, dtype=torch.int64)
    for s in dataset.samples:
        labels = read_annotation(s.annotation)
        labels = labels[labels != IGNORE_INDEX]
        counts += torch.bincount(labels.flatten(), minlength=num_classes)[:num_classes]
    return counts


def inverse_frequency_weights(counts: torch.Tensor) -> torch.Tensor:
    """Class weights proportional to 1 / frequency, normalised to mean 1 over present classes."""
    freq = counts.double() / counts.sum().clamp(min=1)
    weights = torch.where(freq > 0, 1.0 / freq.clamp(min=1e-12), torch.zeros_like(freq))
    present = freq > 0
    weights[present] = weights[present] / weights[present].mean()
    return weights.float()
