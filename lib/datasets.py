"""StreetHazards, Cityscapes, BDD100K, LostAndFound and RoadAnomaly on the shared base of `lib.data`.

StreetHazards (the real release and the synthetic one that `lib.synthetic` writes; the layout's one
definition is `lib.layout.STREETHAZARDS_SPLITS`, which `lib.synthetic` and `lib.download` use too)::

    root/train/images/training/t1-3/*.png   root/train/annotations/training/t1-3/*.png
    root/train/images/validation/t4/*.png   root/train/annotations/validation/t4/*.png
    root/test/images/test/t5/*.png          root/test/annotations/test/t5/*.png   (t6, t5-6 too)
    root/train/training.odgt, root/train/validation.odgt, root/test/test.odgt    (optional index)

  Annotations are single-channel PNGs with raw values 1..14; the dataset returns train ids
  ``raw - 1`` (0..13, anomaly = 13), and raw 0 becomes the ignore value 255.

Every class returns ``(image, mask)``: a uint8 ``tv_tensors.Image``
of Shape (3, H, W) and an int64 ``tv_tensors.Mask`` of train ids, Shape (H, W), 255 = ignore; all
take ``transforms`` (transforms v2 on the pair) and ``limit``, and check their files the same way
(`SegmentationDataset.validate`). What each reads and how its labels are mapped:

Cityscapes (root holds ``leftImg8bit/`` and ``gtFine/``)::

    leftImg8bit/{train,val,test}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    gtFine/{train,val,test}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png

  labelIds 0..33 -> the 19 train ids of the official table in ``cityscapesscripts.helpers.labels``
  (read at run time, never copied); ids whose trainId is 255 or -1 -> 255. Subset by ``cities``
  (the Cityscapes seed used train/hamburg and val/frankfurt) and by ``limit``.

BDD100K 10K semantic segmentation (root = the ``bdd100k`` folder), two layouts, found automatically::

    current: images/10k/{train,val,test}/{name}.jpg    labels/sem_seg/masks/{train,val}/{name}.png
    older:   seg/images/{train,val,test}/{name}.jpg    seg/labels/{train,val}/{name}_train_id.png

  Label PNGs hold train ids 0..18 directly and 255 = unknown: ignored by default, or class 19
  ("unknown") with ``unknown_as_class=True`` as the BDD seed did. The release's test split has no
  labels (the generated stand-in's has).

LostAndFound (Cityscapes-style; root holds ``leftImg8bit/`` and ``gtCoarse/``)::

    leftImg8bit/{train,test}/{scene}/{scene}_{seq}_{frame}_leftImg8bit.png
    gtCoarse/{train,test}/{scene}/{scene}_{seq}_{frame}_gtCoarse_labelIds.png

  gtCoarse labelIds (the LAF label table, also the convention of the SegmentMeIfYouCan
  road-anomaly benchmark code): 0 unlabeled -> 255 (ignore), 1 free space (the drivable road) ->
  0 (in-distribution), 2..43 obstacles -> 1 (anomaly). ``ignore_non_hazards=True`` ignores the
  ids the LAF table calls "random non-hazards" (`lib.classes.LAF_NON_HAZARD_IDS`) instead.
  Note the protocol this implies: only the road and the obstacles on it are evaluated.

RoadAnomaly (Lis et al. 2019; 60 images), the original release and the processed ones::

    frame_list.json + frames/{name}.jpg + frames/{name}.labels/labels_semantic.png   (the release)
    images/{name}.jpg|.png|.webp   + labels_masks/{name}_labels_semantic.png or labels_masks/{name}.png
    original/{name}.jpg|...        + labels/{name}.png                  (SynBoost-style processed copy)

  The original release is the output of its labelling tool (LabelGrab): per frame a folder
  ``{name}.labels`` beside the image with ``labels_semantic.png`` (class per pixel: 0 background,
  1 road, 2 anomaly; 255 void where present), read as 0 / 0 / 1 / ignore - the whole frame is
  evaluated, road or not, and anomaly is class 2, as the evaluation code of its users reads it
  (label >= 2, or {0: 0, 2: 1}). ``frame_list.json`` names the frames; the colour and instance PNGs
  beside are not read. The processed releases' label PNGs are single-channel masks, read per
  ``label_values``: ``"0/1/255"`` (0 in-distribution,
  1 anomaly, 255 void -> ignore; SegmentMeIfYouCan, SynBoost), ``"0/255"`` (binary mask: 0
  in-distribution, 255 anomaly), or ``"auto"`` (default): a file that holds a 1 is read as 0/1/255,
  one with only 0 and 255 as the binary mask. "auto" relies on every RoadAnomaly image having an
  anomaly (true of the release); name the encoding explicitly for other data. ``*_color.png``
  visualisations beside the masks are not annotations and are skipped.

LostAndFound and RoadAnomaly are anomaly-only evaluation sets for Cityscapes-trained models:
their masks hold 0 = in-distribution (`EVAL_INLIER_ID`, class attribute ``inlier_id``),
1 = anomaly (class attribute ``anomaly_id``), 255 = ignore.

Which name a run uses for each (and for their generated stand-ins), its splits and classes: the
dataset registry beside this module, `lib.registry`. `open_dataset` opens one and, when a root holds
another format's folders (`detect_format`), says which.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lib.classes import (
    ANOMALY_EVAL_CLASSES,
    ANOMALY_ID,
    BDD100K_CLASSES,
    BDD100K_UNKNOWN_CLASS,
    EVAL_ANOMALY_ID,
    EVAL_INLIER_ID,
    IGNORE_INDEX,
    LAF_FREE_SPACE_ID,
    LAF_MAX_ID,
    LAF_NON_HAZARD_IDS,
    LAF_UNLABELED_ID,
    RAW_MAX,
    RAW_MIN,
    STREETHAZARDS_CLASSES,
)
from lib.data import (
    DatasetError,
    LabelEncoding,
    Sample,
    SegmentationDataset,
    read_label_png,
    suggest_root,
    with_annotations,
)
from lib.layout import STREETHAZARDS_SPLITS

__all__ = [
    "BDD100K",
    "DATASETS",
    "STREETHAZARDS_ENCODING",
    "Cityscapes",
    "LostAndFound",
    "RoadAnomaly",
    "StreetHazards",
    "check_annotation_values",
    "find_samples",
    "read_annotation",
    "read_odgt",
    "validate_split",
    "build_dataset",
    "cityscapes_label_table",
    "detect_format",
    "open_dataset",
]

# ----------------------------------------------------------------------------- StreetHazards


def find_samples(root: str | Path, split: str) -> list[Sample]:
    """List (image, annotation) pairs of a StreetHazards split.

    Reads the split's ``.odgt`` index when present (one JSON array line, or one JSON object
    per line), else pairs the PNGs found under the split's image folder with the annotation
    of the same relative path.

    Raises:
        DatasetError: unknown split, missing folders, empty split or unpaired files.
    """
    if split not in STREETHAZARDS_SPLITS:
        raise DatasetError(f"unknown split {split!r}; valid splits: {', '.join(STREETHAZARDS_SPLITS)}")
    root = Path(root)
    layout = STREETHAZARDS_SPLITS[split]
    odgt, image_dir, annotation_dir = layout.odgt, layout.image_dir, layout.annotation_dir
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
    return with_annotations(samples)


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
    found = suggest_root(root, [image_dir])
    if found is not None:
        return f"{message}; did you mean data_root={str(found)!r}?"
    if not root.exists():
        return (
            f"{message}: {root} is missing. Download StreetHazards (scripts/download_streethazards.sh) "
            "or use dataset='synthetic' to generate the embedded dataset"
        )
    return f"{message}; point data_root at the folder that contains train/ and test/"


#: StreetHazards raw 1..14 -> train ids 0..13; raw 0 (no label) -> ignore.
STREETHAZARDS_ENCODING = LabelEncoding.from_mapping(
    {0: IGNORE_INDEX, **{raw: raw - RAW_MIN for raw in range(RAW_MIN, RAW_MAX + 1)}},
    f"{RAW_MIN}..{RAW_MAX} (0 = no label)",
)


class StreetHazards(SegmentationDataset):
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

    name = "StreetHazards"
    classes = STREETHAZARDS_CLASSES
    splits = tuple(STREETHAZARDS_SPLITS)
    anomaly_id = ANOMALY_ID
    encoding = STREETHAZARDS_ENCODING

    def find_samples(self) -> list[Sample]:
        return find_samples(self.root, self.split)

    def annotation_files(self) -> list[tuple[Path, Path]]:
        layout = STREETHAZARDS_SPLITS[self.split]
        image_dir, annotation_dir = self.root / layout.image_dir, self.root / layout.annotation_dir
        if not annotation_dir.is_dir():
            return []
        return [(a, image_dir / a.relative_to(annotation_dir)) for a in sorted(annotation_dir.rglob("*.png"))]


def read_annotation(path: Path) -> torch.Tensor:
    """Decode a StreetHazards annotation to train ids. Shape: (H, W), int64, ignore = 255.

    Raises:
        DatasetError: undecodable file, more than one channel, or a value outside 0..14.
    """
    labels = STREETHAZARDS_ENCODING.encode(read_label_png(path), path=Path(path), dataset="StreetHazards")
    return torch.from_numpy(labels).long()


def check_annotation_values(labels: torch.Tensor, path: Path) -> None:
    """Raise DatasetError if StreetHazards train ids hold a value outside 0..13 (255 allowed)."""
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels > RAW_MAX - RAW_MIN))
    if bool(bad.any()):
        value = int(labels[bad][0]) + 1
        raise DatasetError(
            f"annotation {path} has value {value}; StreetHazards labels are {RAW_MIN}..{RAW_MAX} "
            "(raw PNG values): check that this is a StreetHazards annotation and not a colour or train-id image"
        )


def validate_split(root: str | Path, split: str, *, decode: bool = True) -> int:
    """Check a StreetHazards split before training: pairs exist, files decode, sizes match,
    labels in 1..14 (see `SegmentationDataset.validate`; other datasets: ``ds.validate()``).

    Args:
        decode: also decode every image and annotation (reads every byte once).

    Returns:
        The number of samples checked.

    Raises:
        DatasetError: at the first problem, naming the file and the fix.
    """
    return StreetHazards(root, split).validate(decode=decode)


# ----------------------------------------------------------------------------- Cityscapes-style folders


class _CityFolders(SegmentationDataset):
    """``{images}/{split}/{city}/*{image_suffix}`` paired with ``{labels}/{split}/{city}/*{label_suffix}``."""

    image_folder = "leftImg8bit"
    image_suffix = "_leftImg8bit.png"
    label_folder = ""
    label_suffix = ""

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        cities: str | Sequence[str] | None = None,
        transforms: Callable | None = None,
        limit: int | None = None,
    ) -> None:
        self.cities = (cities,) if isinstance(cities, str) else (tuple(cities) if cities else None)
        super().__init__(root, split, transforms=transforms, limit=limit)

    @property
    def image_dir(self) -> Path:
        return self.root / self.image_folder / self.split

    @property
    def label_dir(self) -> Path:
        return self.root / self.label_folder / self.split

    def _annotation_for(self, image: Path) -> Path:
        return (
            self.label_dir / image.parent.name / (image.name[: -len(self.image_suffix)] + self.label_suffix)
        )

    def _image_for(self, annotation: Path) -> Path:
        return (
            self.image_dir
            / annotation.parent.name
            / (annotation.name[: -len(self.label_suffix)] + self.image_suffix)
        )

    def _selected(self, base: Path) -> list[str]:
        available = sorted(d.name for d in base.iterdir() if d.is_dir()) if base.is_dir() else []
        if self.cities is None:
            return available
        unknown = [c for c in self.cities if c not in available]
        if unknown and base == self.image_dir:
            raise DatasetError(
                f"{self.name} split {self.split!r} has no city {', '.join(map(repr, unknown))} in {base}; "
                f"available: {', '.join(available) or 'none'}"
            )
        return [c for c in self.cities if c in available]

    def find_samples(self) -> list[Sample]:
        required = [self.image_folder, self.label_folder]
        for folder in (self.image_dir, self.label_dir):
            if not folder.is_dir():
                raise self._missing_folder(folder, required)
        images = [
            p
            for city in self._selected(self.image_dir)
            for p in (self.image_dir / city).glob(f"*{self.image_suffix}")
        ]
        return self._pair(images, self._annotation_for, self.image_dir)

    def annotation_files(self) -> list[tuple[Path, Path]]:
        return [
            (a, self._image_for(a))
            for city in self._selected(self.label_dir)
            for a in sorted((self.label_dir / city).glob(f"*{self.label_suffix}"))
        ]


@functools.lru_cache(maxsize=1)
def cityscapes_label_table() -> tuple[LabelEncoding, tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """The official Cityscapes labelId -> trainId table from ``cityscapesscripts``.

    Returns:
        (encoding, class names in train-id order, RGB colour per train id). The encoding is a
        256-entry lookup table: each labelId (0..33) -> its trainId, or 255 where the official
        trainId is 255 or -1; values the table does not define are errors.

    Raises:
        ImportError: cityscapesscripts is not installed (``pip install cityscapesscripts``).
    """
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Cityscapes needs the official label table of the cityscapesscripts package: "
            "pip install cityscapesscripts"
        ) from err
    mapping: dict[int, int] = {}
    names: dict[int, str] = {}
    colors: dict[int, tuple[int, int, int]] = {}
    for label in labels:
        if label.id < 0:  # "license plate" (-1) never appears in a labelIds PNG
            continue
        train_id = label.trainId if 0 <= label.trainId < IGNORE_INDEX else IGNORE_INDEX
        mapping[label.id] = train_id
        if train_id != IGNORE_INDEX:
            names[train_id] = label.name
            colors[train_id] = tuple(label.color)
    if sorted(names) != list(range(len(names))):
        raise RuntimeError(f"cityscapesscripts train ids are not contiguous: {sorted(names)}")
    description = f"{min(mapping)}..{max(mapping)} (Cityscapes labelIds)"
    encoding = LabelEncoding.from_mapping(mapping, description)
    return encoding, tuple(names[i] for i in range(len(names))), tuple(colors[i] for i in range(len(colors)))


class Cityscapes(_CityFolders):
    """Cityscapes fine annotations mapped to the 19 official train ids.

    Args:
        root: folder that contains ``leftImg8bit/`` and ``gtFine/``.
        split: ``train``, ``val`` or ``test`` (the public test labels are placeholders).
        cities: keep only these city folders (e.g. ``["hamburg"]``); default all.
        transforms, limit: as in `lib.data.SegmentationDataset`.

    Returns (per item):
        image: ``tv_tensors.Image`` uint8, Shape (3, H, W).
        mask: ``tv_tensors.Mask`` int64 train ids 0..18, Shape (H, W); 255 = ignore.
    """

    name = "Cityscapes"
    splits = ("train", "val", "test")
    label_folder = "gtFine"
    label_suffix = "_gtFine_labelIds.png"
    download_hint = (
        "Cityscapes needs a login: csDownload gtFine_trainvaltest.zip leftImg8bit_trainvaltest.zip "
        "(pip install cityscapesscripts; see lib.download), then unzip both into data_root"
    )

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        cities: str | Sequence[str] | None = None,
        transforms: Callable | None = None,
        limit: int | None = None,
    ) -> None:
        self.encoding, self.classes, self.palette = cityscapes_label_table()
        super().__init__(root, split, cities=cities, transforms=transforms, limit=limit)


class LostAndFound(_CityFolders):
    """LostAndFound as an anomaly-only evaluation set: 0 road, 1 obstacle (anomaly), 255 ignore.

    Args:
        root: folder that contains ``leftImg8bit/`` and ``gtCoarse/``.
        split: ``train`` or ``test`` (both are used for evaluation).
        cities: keep only these scene folders (e.g. ``["04_Maurener_Weg_8"]``).
        ignore_non_hazards: map the LAF "random non-hazard" ids to ignore instead of anomaly.
        transforms, limit: as in `lib.data.SegmentationDataset`.
    """

    name = "LostAndFound"
    splits = ("train", "test")
    classes = ANOMALY_EVAL_CLASSES
    inlier_id = EVAL_INLIER_ID
    anomaly_id = EVAL_ANOMALY_ID
    label_folder = "gtCoarse"
    label_suffix = "_gtCoarse_labelIds.png"
    download_hint = "Download leftImg8bit.zip and gtCoarse.zip of LostAndFound and unzip both into data_root"

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        *,
        cities: str | Sequence[str] | None = None,
        ignore_non_hazards: bool = False,
        transforms: Callable | None = None,
        limit: int | None = None,
    ) -> None:
        mapping = {LAF_UNLABELED_ID: IGNORE_INDEX, LAF_FREE_SPACE_ID: EVAL_INLIER_ID}
        for raw in range(LAF_FREE_SPACE_ID + 1, LAF_MAX_ID + 1):
            ignored = ignore_non_hazards and raw in LAF_NON_HAZARD_IDS
            mapping[raw] = IGNORE_INDEX if ignored else EVAL_ANOMALY_ID
        self.encoding = LabelEncoding.from_mapping(
            mapping, f"0 (unlabeled), 1 (free space), 2..{LAF_MAX_ID} (obstacles)"
        )
        self.ignore_non_hazards = ignore_non_hazards
        super().__init__(root, split, cities=cities, transforms=transforms, limit=limit)


# ----------------------------------------------------------------------------- BDD100K

#: layout name -> (image folder, label folder, label name suffix before ".png"), {split} filled in.
BDD100K_LAYOUTS: dict[str, tuple[str, str, str]] = {
    "10k": ("images/10k/{split}", "labels/sem_seg/masks/{split}", ""),
    "seg": ("seg/images/{split}", "seg/labels/{split}", "_train_id"),
}


class BDD100K(SegmentationDataset):
    """BDD100K 10K semantic segmentation (19 Cityscapes-style classes), either release layout.

    Args:
        root: the ``bdd100k`` folder (holding ``images/10k`` + ``labels/sem_seg``, or ``seg/``).
        split: ``train``, ``val``, or ``test`` where it has labels (the stand-in's; the release has none).
        layout: ``"10k"`` (current), ``"seg"`` (older) or ``"auto"`` (the one present; current first).
        unknown_as_class: map the unknown value 255 to class 19 ("unknown") instead of ignoring it.
        transforms, limit: as in `lib.data.SegmentationDataset`.
    """

    name = "BDD100K"
    splits = ("train", "val", "test")
    download_hint = (
        "Download 10k_images_{train,val}.zip and bdd100k_sem_seg_labels_trainval.zip from the BDD100K "
        "site and unzip them so that data_root holds images/10k and labels/sem_seg"
    )

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        layout: str = "auto",
        unknown_as_class: bool = False,
        transforms: Callable | None = None,
        limit: int | None = None,
    ) -> None:
        if layout not in ("auto", *BDD100K_LAYOUTS):
            raise DatasetError(
                f"unknown BDD100K layout {layout!r}; valid: auto, {', '.join(BDD100K_LAYOUTS)}"
            )
        self.requested_layout = layout
        self.unknown_as_class = unknown_as_class
        unknown = len(BDD100K_CLASSES) if unknown_as_class else IGNORE_INDEX
        mapping = {i: i for i in range(len(BDD100K_CLASSES))} | {IGNORE_INDEX: unknown}
        self.encoding = LabelEncoding.from_mapping(mapping, "0..18 and 255 (unknown)")
        self.classes = BDD100K_CLASSES + ((BDD100K_UNKNOWN_CLASS,) if unknown_as_class else ())
        super().__init__(root, split, transforms=transforms, limit=limit)

    def _folders(self) -> tuple[str, Path, Path, str]:
        names = list(BDD100K_LAYOUTS) if self.requested_layout == "auto" else [self.requested_layout]
        for name in names:
            image_tpl, label_tpl, suffix = BDD100K_LAYOUTS[name]
            image_dir = self.root / image_tpl.format(split=self.split)
            if image_dir.is_dir():
                return name, image_dir, self.root / label_tpl.format(split=self.split), suffix
        options = [[tpl.format(split=self.split) for tpl in BDD100K_LAYOUTS[name][:2]] for name in names]
        raise self._missing_folder(self.root / options[0][0], options[0], alternatives=options[1:])

    @property
    def layout(self) -> str:
        return self._folders()[0]

    def find_samples(self) -> list[Sample]:
        _, image_dir, label_dir, suffix = self._folders()
        if not label_dir.is_dir() and self.split == "test":
            raise DatasetError(
                f"BDD100K publishes no labels for its test split ({image_dir} has no {label_dir}); "
                "evaluate on split='val'"
            )
        if not label_dir.is_dir():
            raise DatasetError(
                f"BDD100K label folder {label_dir} does not exist (images found in {image_dir}); "
                "unzip the semantic-segmentation labels into the same root"
            )
        images = sorted(image_dir.glob("*.jpg"))
        return self._pair(images, lambda p: label_dir / f"{p.stem}{suffix}.png", image_dir)

    def annotation_files(self) -> list[tuple[Path, Path]]:
        _, image_dir, label_dir, suffix = self._folders()
        out = []
        for a in sorted(label_dir.glob("*.png")) if label_dir.is_dir() else []:
            stem = a.stem[: -len(suffix)] if suffix and a.stem.endswith(suffix) else a.stem
            out.append((a, image_dir / f"{stem}.jpg"))
        return out


# ----------------------------------------------------------------------------- RoadAnomaly

#: (image folder, label folder, label name suffixes tried in order) RoadAnomaly is accepted in.
ROAD_ANOMALY_LAYOUTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("images", "labels_masks", ("_labels_semantic", "")),
    ("original", "labels", ("", "_labels_semantic")),
)
_ROAD_ANOMALY_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
_RA_TRINARY = LabelEncoding.from_mapping(
    {0: EVAL_INLIER_ID, 1: EVAL_ANOMALY_ID, IGNORE_INDEX: IGNORE_INDEX},
    "0 (in-distribution), 1 (anomaly), 255 (void)",
)
_RA_BINARY = LabelEncoding.from_mapping(
    {0: EVAL_INLIER_ID, 255: EVAL_ANOMALY_ID}, "0 (in-distribution) and 255 (anomaly)"
)
#: The original release's LabelGrab classes: 0 background, 1 road, 2 anomaly (255 void).
_RA_RELEASE = LabelEncoding.from_mapping(
    {0: EVAL_INLIER_ID, 1: EVAL_INLIER_ID, 2: EVAL_ANOMALY_ID, IGNORE_INDEX: IGNORE_INDEX},
    "0 (background), 1 (road), 2 (anomaly), 255 (void)",
)
#: The original release's file list and frame folder (its layout's markers).
ROAD_ANOMALY_RELEASE = ("frame_list.json", "frames")


class RoadAnomaly(SegmentationDataset):
    """RoadAnomaly as an anomaly-only evaluation set: 0 in-distribution, 1 anomaly, 255 ignore.

    Args:
        root: folder that contains ``frame_list.json`` + ``frames/`` (the original release), or
            ``images/`` + ``labels_masks/`` (or ``original/`` + ``labels/``).
        split: ``test`` (the only one).
        label_values: ``"auto"``, ``"0/1/255"``, ``"0/255"`` or ``"0/1/2/255"`` (the original
            release's classes, which "auto" reads it with; see the module docstring).
        skip_unlabeled: leave out images that have no label file (the held-out part of the
            SegmentMeIfYouCan release) instead of raising.
        transforms, limit: as in `lib.data.SegmentationDataset`.
    """

    name = "RoadAnomaly"
    splits = ("test",)
    classes = ANOMALY_EVAL_CLASSES
    inlier_id = EVAL_INLIER_ID
    anomaly_id = EVAL_ANOMALY_ID
    download_hint = (
        "Download RoadAnomaly and unzip it so that data_root holds frame_list.json and frames/ (the "
        "original release) or images/ (a processed one)"
    )

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        *,
        label_values: str = "auto",
        skip_unlabeled: bool = False,
        transforms: Callable | None = None,
        limit: int | None = None,
    ) -> None:
        encodings = {
            "auto": _RA_TRINARY,
            "0/1/255": _RA_TRINARY,
            "0/255": _RA_BINARY,
            "0/1/2/255": _RA_RELEASE,
        }
        if label_values not in encodings:
            raise DatasetError(
                f"unknown RoadAnomaly label_values {label_values!r}; valid: {', '.join(encodings)}"
            )
        self.label_values = label_values
        self.encoding = encodings[label_values]
        self.skip_unlabeled = skip_unlabeled
        #: The root holds the original release (``frame_list.json`` + ``frames/``), looked up once.
        self.is_release = all((Path(root) / p).exists() for p in ROAD_ANOMALY_RELEASE)
        super().__init__(root, split, transforms=transforms, limit=limit)

    @staticmethod
    def _image_named(folder: Path, stem: str) -> Path:
        """The image `stem` in `folder` with whichever extension it has (the first one when none)."""
        matches = [folder / f"{stem}{ext}" for ext in _ROAD_ANOMALY_IMAGE_EXTS]
        return next((m for m in matches if m.is_file()), matches[0])

    @staticmethod
    def _release_label(image: Path) -> Path:
        return image.parent / f"{image.stem}.labels" / "labels_semantic.png"

    def _folders(self) -> tuple[Path, Path, tuple[str, ...]]:
        for image_folder, label_folder, suffixes in ROAD_ANOMALY_LAYOUTS:
            if (self.root / image_folder).is_dir():
                return self.root / image_folder, self.root / label_folder, suffixes
        options = [list(layout[:2]) for layout in ROAD_ANOMALY_LAYOUTS]
        alternatives = [*options[1:], list(ROAD_ANOMALY_RELEASE)]
        raise self._missing_folder(self.root / options[0][0], options[0], alternatives=alternatives)

    @staticmethod
    def _label_for(image: Path, label_dir: Path, suffixes: tuple[str, ...]) -> Path:
        candidates = [label_dir / f"{image.stem}{s}.png" for s in suffixes]
        return next((c for c in candidates if c.is_file()), candidates[0])

    def find_samples(self) -> list[Sample]:
        if self.is_release:
            frames = self.root / ROAD_ANOMALY_RELEASE[1]
            images = sorted(
                p for p in frames.iterdir() if p.is_file() and p.suffix.lower() in _ROAD_ANOMALY_IMAGE_EXTS
            )
            if self.skip_unlabeled:
                images = [p for p in images if self._release_label(p).is_file()]
            return self._pair(images, self._release_label, frames)
        image_dir, label_dir, suffixes = self._folders()
        if not label_dir.is_dir():
            raise DatasetError(
                f"RoadAnomaly label folder {label_dir} does not exist (images found in {image_dir}); "
                "extract the label masks into the same root"
            )
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in _ROAD_ANOMALY_IMAGE_EXTS)
        if self.skip_unlabeled:
            images = [p for p in images if self._label_for(p, label_dir, suffixes).is_file()]
        return self._pair(images, lambda p: self._label_for(p, label_dir, suffixes), image_dir)

    def annotation_files(self) -> list[tuple[Path, Path]]:
        if self.is_release:
            out = []
            for folder in sorted((self.root / ROAD_ANOMALY_RELEASE[1]).glob("*.labels")):
                if (folder / "labels_semantic.png").is_file():
                    image = self._image_named(folder.parent, folder.name.removesuffix(".labels"))
                    out.append((folder / "labels_semantic.png", image))
            return out
        image_dir, label_dir, _ = self._folders()
        out = []
        for a in sorted(label_dir.glob("*.png")) if label_dir.is_dir() else []:
            if a.stem.endswith("_color"):  # colour visualisations that ship beside the masks
                continue
            out.append((a, self._image_named(image_dir, a.stem.removesuffix("_labels_semantic"))))
        return out

    def read_mask(self, path: Path) -> np.ndarray:
        if self.is_release and self.label_values == "auto":
            raw = read_label_png(path, dataset=self.name, expected=f"values {_RA_RELEASE.description}")
            return _RA_RELEASE.encode(raw, path=path, dataset=self.name)
        raw = read_label_png(
            path, dataset=self.name, expected=f"values {_RA_TRINARY.description} or {_RA_BINARY.description}"
        )
        encoding = self.encoding
        if self.label_values == "auto":
            # A 1 (or any value besides 0 and 255) means the 0/1/255 encoding; see the module docs.
            encoding = _RA_BINARY if _RA_BINARY.first_invalid(raw) is None else _RA_TRINARY
        return encoding.encode(raw, path=path, dataset=self.name)


# ----------------------------------------------------------------------------- registry

#: dataset name (as a config would spell it) -> class.
DATASETS: dict[str, type[SegmentationDataset]] = {
    "streethazards": StreetHazards,
    "cityscapes": Cityscapes,
    "bdd100k": BDD100K,
    "lostandfound": LostAndFound,
    "roadanomaly": RoadAnomaly,
}


def build_dataset(name: str, root: str | Path, split: str, **kwargs) -> Dataset:
    """The dataset called `name` (a key of `DATASETS`), built with `kwargs`.

    Raises:
        DatasetError: unknown name (the message lists the valid ones) or any problem with the files.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[key](root, split, **kwargs)


#: Loader name -> folders (and files) relative to a root that each of its layouts has, for `detect_format`.
FORMAT_MARKERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "streethazards": (("train/images/training",), ("test/images/test",)),
    "cityscapes": (("leftImg8bit", "gtFine"),),
    "lostandfound": (("leftImg8bit", "gtCoarse"),),
    "bdd100k": (("images/10k",), ("seg/images",)),
    "roadanomaly": (ROAD_ANOMALY_RELEASE, ("images", "labels_masks"), ("original", "labels")),
}


def detect_format(root: str | Path) -> str | None:
    """The format (a key of `DATASETS`) whose folders `root` holds, or None when it holds none."""
    root = Path(root)
    for name, layouts in FORMAT_MARKERS.items():
        if any(all((root / path).exists() for path in layout) for layout in layouts):
            return name
    return None


def open_dataset(loader: str, root: str | Path, split: str, *, what: str = "", **kwargs) -> Dataset:
    """`build_dataset`, with an error that says which format a root in another format looks like.

    Args:
        what: how the run names this data (``dataset='cityscapes'``, ``test set 'roadanomaly'``),
            for the messages.

    Raises:
        DatasetError: as `build_dataset`; when the folders are missing and `root` holds another
            dataset's layout, the message names that format and the setting to change.
    """
    try:
        return build_dataset(loader, root, split, **kwargs)
    except DatasetError as err:
        found = detect_format(root)
        if found is None or found == loader:
            raise
        folders = " + ".join(f if "." in f else f"{f}/" for f in FORMAT_MARKERS[found][0])
        raise DatasetError(
            f"{root} looks like a {DATASETS[found].name} dataset ({folders}), not {DATASETS[loader].name} "
            f"as {what or 'the run'} expects: point that setting at a {DATASETS[loader].name} folder, or "
            f"name the {DATASETS[found].name} format for this folder ({err})"
        ) from err
