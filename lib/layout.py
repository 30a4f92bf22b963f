"""The StreetHazards folder layout, in one place: which folders and index file each split uses, and
which release archive holds it.

Kept free of heavy imports (no torch): the synthetic generator's workers and the downloader use it
as well as the loader (`lib.data`, which re-exports it).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["STREETHAZARDS_SPLITS", "StreetHazardsSplit"]


@dataclass(frozen=True)
class StreetHazardsSplit:
    """Where one StreetHazards split lives, relative to the dataset root: the one definition of the
    layout that the loader, `lib.synthetic` (which writes it) and `lib.download` (which counts it)
    share.

    Attributes:
        image_dir: the folder whose PNGs, searched recursively, are the split's images.
        annotation_dir: the folder holding each image's annotation at the same relative path.
        odgt: the split's ``.odgt`` index (optional when reading).
        town: the town subfolder under both folders that the synthetic generator writes and the
            real release uses (``t1-3``, ``t4``, ``t5``; the real test split also has ``t6``, and
            some copies ``t5-6``: any subfolder is read, since the folders are searched recursively).
        part: the StreetHazards archive that holds the split (``"train"`` or ``"test"``, the keys
            of `lib.download.STREETHAZARDS_TARS`).
    """

    image_dir: str
    annotation_dir: str
    odgt: str
    town: str
    part: str

    @property
    def town_image_dir(self) -> str:
        """``image_dir/town``: where the synthetic generator writes the images."""
        return f"{self.image_dir}/{self.town}"

    @property
    def town_annotation_dir(self) -> str:
        """``annotation_dir/town``: where the synthetic generator writes the annotations."""
        return f"{self.annotation_dir}/{self.town}"


#: StreetHazards split name -> its folders, index file and archive part.
STREETHAZARDS_SPLITS: dict[str, StreetHazardsSplit] = {
    "train": StreetHazardsSplit(
        image_dir="train/images/training",
        annotation_dir="train/annotations/training",
        odgt="train/training.odgt",
        town="t1-3",
        part="train",
    ),
    "val": StreetHazardsSplit(
        image_dir="train/images/validation",
        annotation_dir="train/annotations/validation",
        odgt="train/validation.odgt",
        town="t4",
        part="train",
    ),
    "test": StreetHazardsSplit(
        image_dir="test/images/test",
        annotation_dir="test/annotations/test",
        odgt="test/test.odgt",
        town="t5",
        part="test",
    ),
}
