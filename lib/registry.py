"""The dataset registry: every name a run's ``dataset`` or ``test_sets`` may take, and what it is.

Each entry says which loader reads it (a class of `lib.datasets`), its
class names (train-id order), how many classes a model trained on it predicts, the label of its
anomaly pixels, which split serves each role (train / val / test), the mIoU exclusions of its
published protocol, where it lives by default, and - for the ``synthetic*`` names - the format the
project's scene generator writes it in (`lib.synthetic`), so that it is generated on first use and
needs no download. This module imports neither torch nor the loaders (``--help`` reads it).

==========================  ============  =======  ==========  ========================================
name                        loader        classes  anomaly     test split
==========================  ============  =======  ==========  ========================================
synthetic                   streethazards 13       13          test (generated)
streethazards               streethazards 13       13          test (t5, t6)
cityscapes                  cityscapes    19       -           val (its test labels are placeholders)
synthetic-cityscapes        cityscapes    19       -           test (generated, labelled)
bdd100k                     bdd100k       19 (20)  -           val (its test split has no labels)
synthetic-bdd100k           bdd100k       19 (20)  -           test (generated, labelled)
lostandfound                lostandfound  2        1           test (anomaly-only: road vs obstacle)
synthetic-lostandfound      lostandfound  2        1           test (generated)
roadanomaly                 roadanomaly   2        1           test (anomaly-only)
synthetic-roadanomaly       roadanomaly   2        1           test (generated)
==========================  ============  =======  ==========  ========================================

BDD100K predicts 20 classes when its unknown label (255) is kept as class 19 (``unknown_as_class``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lib.classes import (
    ANOMALY_EVAL_CLASSES,
    ANOMALY_ID,
    BDD100K_CLASSES,
    BDD100K_UNKNOWN_CLASS,
    EVAL_ANOMALY_ID,
    NUM_KNOWN_CLASSES,
    STREETHAZARDS_CLASSES,
)

#: The 19 Cityscapes evaluation classes in train-id order (the names of the official table in
#: ``cityscapesscripts.helpers.labels``, which `lib.datasets.Cityscapes` reads; a test checks they
#: agree). BDD100K uses the same 19.
CITYSCAPES_CLASSES: tuple[str, ...] = BDD100K_CLASSES


@dataclass(frozen=True)
class DatasetSpec:
    """What the run path needs to know about one dataset name."""

    name: str
    """The config spelling (a key of `REGISTRY`)."""
    loader: str
    """Key of `lib.datasets.DATASETS`: the class that reads this format."""
    classes: tuple[str, ...]
    """Train-id names of its labels; for the anomaly-only sets ``("in-distribution", "anomaly")``."""
    num_known: int | None
    """Classes a model trained on it predicts; None for the anomaly-only evaluation sets."""
    anomaly_id: int | None
    """Label of anomaly pixels in its test split; None where it has no anomaly labels."""
    splits: dict[str, str] = field(default_factory=dict)
    """Role (train, val, test) -> the split folder that plays it; a missing role is not available."""
    miou_exclude: tuple[str, ...] = ()
    """Classes its published protocol leaves out of mIoU: what a run evaluated on it leaves out unless
    ``RunConfig.miou_exclude`` says otherwise (`lib.experiment.miou_exclusions`)."""
    default_root: str = ""
    """Where it is found (or generated) when no root is given."""
    generated: str | None = None
    """`lib.synthetic` format it is generated in (no download); None: real data."""
    description: str = ""
    city_folders: bool = False
    """Its splits hold city folders that ``RunConfig.cities`` can pick (Cityscapes)."""
    unknown_label: bool = False
    """Its label 255 is an "unknown" class that ``RunConfig.unknown_as_class`` can train (BDD100K)."""
    downloadable: bool = False
    """`lib.download` fetches it (``RunConfig.download``; StreetHazards)."""

    @property
    def closed_set(self) -> bool:
        """Its test split has class labels of a trained model (mIoU can be measured on it)."""
        return self.num_known is not None

    @property
    def anomaly_only(self) -> bool:
        return self.num_known is None

    @property
    def label_args(self) -> dict:
        """What `lib.test.evaluate` needs to know of its test split's labels: ``class_names``,
        ``anomaly_id`` and ``closed_set`` (``evaluate(model, loader, **spec.label_args, ...)``)."""
        return {"class_names": self.classes, "anomaly_id": self.anomaly_id, "closed_set": self.closed_set}

    def known_classes(self, *, unknown_as_class: bool = False) -> tuple[str, ...]:
        """The classes a model trained on it predicts, in output order."""
        if self.num_known is None:
            raise ValueError(f"{self.name} is an evaluation-only set: no model is trained on it")
        known = self.classes[: self.num_known]
        if unknown_as_class:
            if not self.unknown_label:
                raise ValueError(f"unknown_as_class applies to BDD100K only, not to {self.name}")
            known = (*known, BDD100K_UNKNOWN_CLASS)
        return known


def _pair(
    name: str, real_root: str, description: str, *, standin_splits: dict[str, str] | None = None, **common
) -> dict[str, DatasetSpec]:
    """The real dataset and its generated stand-in (``synthetic-<name>``, same loader and format;
    `standin_splits` where its splits play other roles than the real ones)."""
    standin = {**common, "splits": standin_splits or common["splits"]}
    return {
        name: DatasetSpec(name, default_root=real_root, description=description, **common),
        f"synthetic-{name}": DatasetSpec(
            f"synthetic-{name}",
            default_root=f"data/synthetic-{name}",
            generated=common["loader"],
            description=f"the project's generated scenes written in the {description} format (no download)",
            **standin,
        ),
    }


_STREETHAZARDS = dict(
    loader="streethazards",
    classes=STREETHAZARDS_CLASSES,
    num_known=NUM_KNOWN_CLASSES,
    anomaly_id=ANOMALY_ID,
    splits={"train": "train", "val": "val", "test": "test"},
)
#: Cityscapes and BDD100K publish no usable test labels: their val split plays the test role too
#: (the checkpoint is then chosen on the images it is scored on; runs say so). Their stand-ins have a
#: labelled test split of their own.
_CITY = dict(classes=CITYSCAPES_CLASSES, num_known=len(CITYSCAPES_CLASSES), anomaly_id=None,
             splits={"train": "train", "val": "val", "test": "val"},
             standin_splits={"train": "train", "val": "val", "test": "test"})  # fmt: skip
_ANOMALY_SET = dict(classes=ANOMALY_EVAL_CLASSES, num_known=None, anomaly_id=EVAL_ANOMALY_ID,
                    splits={"test": "test"})  # fmt: skip

#: name -> DatasetSpec. ``synthetic`` is the StreetHazards-format stand-in (the project's default).
REGISTRY: dict[str, DatasetSpec] = {
    "synthetic": DatasetSpec(
        "synthetic",
        default_root="data/synthetic",
        generated="streethazards",
        description="the project's generated street scenes in the StreetHazards layout (no download)",
        **_STREETHAZARDS,
    ),
    "streethazards": DatasetSpec(
        "streethazards",
        default_root="data/streethazards",
        miou_exclude=("pedestrian",),
        downloadable=True,
        description="StreetHazards (CARLA; 5125 train, 1031 val, 1500 test images with anomalies)",
        **_STREETHAZARDS,
    ),
    **_pair("cityscapes", "data/cityscapes", "Cityscapes (leftImg8bit + gtFine labelIds)",
            loader="cityscapes", city_folders=True, **_CITY),
    **_pair("bdd100k", "data/bdd100k", "BDD100K 10K semantic segmentation", loader="bdd100k",
            unknown_label=True, **_CITY),
    **_pair("lostandfound", "data/lostandfound", "LostAndFound (leftImg8bit + gtCoarse)",
            loader="lostandfound", **_ANOMALY_SET),
    **_pair("roadanomaly", "data/roadanomaly", "RoadAnomaly (images + labels_masks)",
            loader="roadanomaly", **_ANOMALY_SET),
}  # fmt: skip

#: Names a model can be trained on (RunConfig.dataset).
TRAINING_DATASETS: tuple[str, ...] = tuple(n for n, s in REGISTRY.items() if s.closed_set)
#: Names a model can be evaluated on (RunConfig.test_sets): all of them.
TEST_SETS: tuple[str, ...] = tuple(REGISTRY)


def dataset_spec(name: str, *, purpose: str = "dataset") -> DatasetSpec:
    """The entry called `name`.

    Raises:
        ValueError: an unknown name; the message lists the valid ones.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown {purpose} {name!r}; valid: {', '.join(REGISTRY)}")
    return REGISTRY[name]


@dataclass(frozen=True)
class TestSet:
    """One evaluation set of a run: a registry entry, the folder it is read from, and the prefix of
    its metric keys ('' for the training dataset's own test split, else ``<name>/``)."""

    spec: DatasetSpec
    root: str
    prefix: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def label(self) -> str:
        """How tables and rows name it, e.g. ``synthetic-cityscapes test split``."""
        return f"{self.name} {self.spec.splits['test']} split"

    def is_selection_split(self, dataset: str, data_root: str) -> bool:
        """Whether these are the very images that chose the checkpoint of a run trained on `dataset`
        at `data_root`: its val split, which also plays the test role where the dataset has no test
        labels (Cityscapes, BDD100K)."""
        own = dataset_spec(dataset)
        return (
            self.spec.loader == own.loader
            and Path(self.root).resolve() == Path(data_root).resolve()
            and self.spec.splits.get("test") == own.splits.get("val")
        )


def parse_test_set(text: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME=ROOT`` -> (name, root or None)."""
    name, sep, root = text.partition("=")
    if sep and not root:
        raise ValueError(f"test set {text!r} names no folder after '='; write NAME or NAME=ROOT")
    return name, (root or None)


def resolve_test_sets(dataset: str, data_root: str, test_sets: tuple[str, ...]) -> list[TestSet]:
    """The evaluation sets of a run trained on `dataset` (read from `data_root`).

    Args:
        test_sets: ``NAME`` or ``NAME=ROOT`` entries (`TEST_SETS`); empty: the training dataset's own
            test split. The training dataset's name means its own split (at `data_root` unless a root
            is given) and keeps unprefixed metric keys; every other set's keys start with ``NAME/``.

    Raises:
        ValueError: an unknown name, a set named twice, or a set with class labels that are not the
            training dataset's classes (a model's outputs fit only its own classes; the anomaly-only
            sets fit every model).
    """
    own = dataset_spec(dataset)
    entries = test_sets or (dataset,)
    out: list[TestSet] = []
    for text in entries:
        name, root = parse_test_set(text)
        spec = dataset_spec(name, purpose="test set")
        if any(t.name == name for t in out):
            raise ValueError(f"test set {name!r} is named twice in test_sets {list(test_sets)}")
        if spec.closed_set and spec.classes[: spec.num_known] != own.classes[: own.num_known]:
            raise ValueError(
                f"test set {name!r} is labelled with {spec.num_known} {spec.loader} classes, but a model "
                f"trained on {dataset!r} predicts {own.num_known} {own.loader} classes: evaluate it on "
                f"its own split, a set of the same classes, or an anomaly-only set "
                f"({', '.join(n for n, s in REGISTRY.items() if s.anomaly_only)})"
            )
        if name == dataset:
            out.append(TestSet(spec, root or data_root, ""))
        else:
            out.append(TestSet(spec, root or spec.default_root, f"{name}/"))
    return out


@dataclass(frozen=True)
class RunPlan:
    """What a run's data settings resolve to, once (`RunConfig.plan`): the training dataset's entry,
    the model's classes and every test set with its folder."""

    dataset: DatasetSpec
    data_root: str
    classes: tuple[str, ...]
    """The classes the model predicts, in output order."""
    test_sets: tuple[TestSet, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def resolve_run(
    dataset: str, data_root: str, test_sets: tuple[str, ...], *, unknown_as_class: bool = False
) -> RunPlan:
    """The `RunPlan` of a run trained on `dataset` at `data_root` and evaluated on `test_sets`.

    Raises:
        ValueError: an unknown name, or test sets that do not fit (see `resolve_test_sets`).
    """
    spec = dataset_spec(dataset)
    return RunPlan(
        dataset=spec,
        data_root=str(data_root),
        classes=spec.known_classes(unknown_as_class=unknown_as_class),
        test_sets=tuple(resolve_test_sets(dataset, data_root, test_sets)),
    )


__all__ = [
    "CITYSCAPES_CLASSES",
    "RunPlan",
    "resolve_run",
    "REGISTRY",
    "TEST_SETS",
    "TRAINING_DATASETS",
    "DatasetSpec",
    "TestSet",
    "dataset_spec",
    "parse_test_set",
    "resolve_test_sets",
]
