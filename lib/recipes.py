"""The five reference workflows as named recipes, and every preset of the project, in one place.

A recipe is the published setting of one reference project (../shared/seeds, DOMAIN.md section 2)
on its real data, plus how it runs offline: the same method (architecture, head, loss, scores,
protocol, optimiser) on the project's generated scenes written in the real dataset's format
(`lib.registry`: ``synthetic-cityscapes``, ``synthetic-lostandfound``, ...), with a small backbone
and no download. Every recipe ``NAME`` gives three presets:

- ``NAME``: the published setting on the real data (a GPU; the data where `lib.download` can fetch
  it, else under ``data_root``);
- ``NAME-demo``: the offline stand-in, sized to finish in a few minutes on 2 CPU cores;
- ``NAME-tiny``: the offline stand-in in seconds (CI runs every one end to end).

==================  =====================================================================================
recipe              what it is
==================  =====================================================================================
streethazards       the StreetHazards reference: DeepLabv3+ R101 distance head, FL+H, both protocols
abet                AbeT: DeepLabv3+ (R101 for WideResNet38) AbeT head, CE, Cityscapes -> LostAndFound,
                    RoadAnomaly; abet score beside MSP, MaxLogit, entropy; pooled protocol
bdd100k-unet        BDD100K 10K: U-Net ImageNet ResNet-34, unknown (255) as a 20th class, CE (the seed's
                    better run; focal + class weights is --loss fl --class-weights); accuracy, IoU, F1
pans                PAnS: DeepLabv3 R50 cosine head (scale 10) on StreetHazards, pans score, per-image
cityscapes-fcn      Cityscapes subset (train/hamburg, val/frankfurt): my_fcn (or unet / deeplabv3plus via
                    --arch), Adam 1e-3 wd 1e-5, focal loss, resize + crop + colour jitter, TensorBoard
==================  =====================================================================================

Where a recipe departs from its source, its ``notes`` say so. This module imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The StreetHazards reference project's model and training recipe (its notebook, as the code runs):
#: DeepLabv3+ ResNet-101 OS16 with the distance head, fine-tuned from Cityscapes weights with Adam
#: (backbone lr 1e-5, head lr 1e-4, weight decay 1e-4), the learning rate halved after 5 epochs
#: without a better validation loss, 50 epochs of batch 16 on 512x512 crops + flips, focal loss
#: (gamma 2) + 0.1 x entropy, no class weights; mIoU over 12 classes (pedestrian, absent from the
#: test split, left out: the registry's StreetHazards protocol). It trained in fp32 on a 16 GB P100; ``amp="auto"`` (fp16 + GradScaler on a
#: T4, which has no bf16) is ours, so that batch 16 fits a 16 GB Colab GPU.
REFERENCE_RECIPE: dict[str, Any] = dict(
    dataset="streethazards",
    data_root="data/streethazards",
    download=True,
    backbone="resnet101",
    head="distance",
    output_stride=16,
    pretrained_on="cityscapes",
    loss="fl+h",
    gamma_focal=2.0,
    entropy_weight=0.1,
    class_weights=False,
    optimizer="adam",
    lr=1e-4,
    backbone_lr=1e-5,
    weight_decay=1e-4,
    scheduler="plateau",
    plateau_patience=5,
    epochs=50,
    batch_size=16,
    crop_size=(512, 512),
    amp="auto",
    eval_batch_size=4,
    num_workers=2,
)

#: The offline sizes: the demo's data (240 / 40 / 60 images at 128x256, `lib.config.RunConfig`'s
#: defaults) and CPU-sized training; tiny: a few images, two steps.
DEMO_SIZE: dict[str, Any] = dict(
    crop_size=(128, 128), batch_size=8, eval_batch_size=4, amp="off", download=False, num_workers=2
)
TINY_SIZE: dict[str, Any] = dict(
    n_train=8, n_val=4, n_test=4, image_size=(64, 128), crop_size=(64, 64), epochs=1, batch_size=4,
    eval_batch_size=4, num_workers=0, max_steps_per_epoch=2, amp="off", download=False,
)  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """One reference workflow: its real setting and its offline stand-in."""

    name: str
    summary: str
    source: str
    """The reference project (a README under ../shared/seeds) and what it published."""
    settings: dict[str, Any]
    """RunConfig fields of the published setting on the real data."""
    standin: dict[str, Any]
    """Changes for the offline stand-in (generated data in the same format, small backbone, no
    download), applied on top of `settings` with the demo or tiny sizes."""
    demo: dict[str, Any] = field(default_factory=dict)
    """Changes of the demo-sized stand-in beyond `DEMO_SIZE` (epochs, mostly)."""
    measures: str = ""
    """What a run of it reports."""
    published: str = ""
    """The published numbers its real setting stands for (with their protocol)."""
    notes: str = ""
    """Where it departs from its source, and why."""

    def presets(self) -> dict[str, dict[str, Any]]:
        """``name``, ``name-demo`` and ``name-tiny`` (see the module docstring)."""
        offline = {**self.settings, **self.standin}
        return {
            self.name: dict(self.settings),
            f"{self.name}-demo": {**offline, **DEMO_SIZE, **self.demo},
            f"{self.name}-tiny": {**offline, **TINY_SIZE},
        }


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "streethazards",
            "the StreetHazards reference project's model and training (REFERENCE_RECIPE)",
            "streethazards-deeplabv3plus: mIoU 65.10, pooled AUPR entropy 17.37 / MSP 12.70 (its weights)",
            settings=REFERENCE_RECIPE,
            standin=dict(
                dataset="synthetic",
                data_root="data/synthetic",
                backbone="mobilenet_v2",
                pretrained_on=None,
                lr=1e-3,
                backbone_lr=None,
            ),  # fmt: skip
            demo=dict(epochs=18),
            measures="mIoU (12 classes; the stand-in's test split has pedestrians: all 13), AUPR / AUROC / FPR95 "
            "of MSP, MaxLogit, entropy, energy, both protocols",
            published="mIoU 65.10; pooled AUPR: entropy 17.37, MSP 12.70, MaxLogit 2.63, energy 2.19",
            notes="Stand-in: MobileNetV2 from scratch with Adam 1e-3 (the recipe's 1e-4 / 1e-5 assume "
            "Cityscapes weights), every class in mIoU (the synthetic test split has pedestrians).",
        ),
        Recipe(
            "abet",
            "AbeT: learned per-pixel temperature, Cityscapes -> LostAndFound and RoadAnomaly",
            "abet-learned-temperature (LeVine et al. 2024): DeepLabv3+ WideResNet38, Mapillary then Cityscapes",
            settings=dict(
                dataset="cityscapes",
                data_root="data/cityscapes",
                test_sets=("cityscapes", "lostandfound", "roadanomaly"),
                arch="deeplabv3plus",
                backbone="resnet101",
                head="abet",
                pretrained_on="cityscapes",
                loss="ce",
                class_weights=False,
                optimizer="sgd",
                lr=1e-2,
                backbone_lr=1e-3,
                weight_decay=1e-4,
                scheduler="poly",
                epochs=30,
                batch_size=8,
                crop_size=(768, 768),
                scores=("abet", "msp", "maxlogit", "entropy"),
                protocols=("pooled",),
                amp="auto",
                eval_batch_size=2,
            ),
            standin=dict(
                dataset="synthetic-cityscapes",
                data_root="data/synthetic-cityscapes",
                test_sets=("synthetic-cityscapes", "synthetic-lostandfound", "synthetic-roadanomaly"),
                backbone="mobilenet_v2",
                pretrained_on=None,
                backbone_lr=None,
            ),
            demo=dict(epochs=18),
            measures="mIoU on Cityscapes (val; the stand-in's own test split); pooled AUPR / AUROC / FPR95 of abet (the energy of the "
            "tempered logits), MSP, MaxLogit, entropy on LostAndFound (road vs obstacle) and RoadAnomaly",
            published="abet, pooled: LostAndFound AUPR / AUROC / FPR95 68.35 / 99.09 / 3.42; RoadAnomaly "
            "31.12 / 81.55 / 53.50",
            notes="ResNet-101 stands in for WideResNet38 (no public weights in this format) and starts from "
            "VainF's Cityscapes DeepLabv3+ instead of Mapillary pretraining; the optimiser settings "
            "(SGD 1e-2 poly, 30 epochs, 768 crops) are ours. Stand-in: MobileNetV2 from scratch, one learning rate.",
        ),  # fmt: skip
        Recipe(
            "bdd100k-unet",
            "U-Net with an ImageNet ResNet-34 encoder on BDD100K 10K, unknown as a 20th class",
            "bdd100k-unet: CE vs focal + class weights; accuracy, IoU, F1, confusion matrix, IoU vs pixel share",
            settings=dict(
                dataset="bdd100k",
                data_root="data/bdd100k",
                arch="unet",
                backbone="resnet34",
                head="standard",
                pretrained_backbone=True,
                unknown_as_class=True,
                loss="ce",
                class_weights=False,
                optimizer="adam",
                lr=1e-3,
                weight_decay=1e-5,
                scheduler="plateau",
                epochs=30,
                batch_size=8,
                crop_size=(512, 512),
                scores=(),
                amp="auto",
            ),
            standin=dict(
                dataset="synthetic-bdd100k", data_root="data/synthetic-bdd100k", pretrained_backbone=False
            ),  # fmt: skip
            demo=dict(epochs=10),
            measures="pixel accuracy, mean class accuracy, IoU and F1 per class (20 with unknown), confusion "
            "matrix, IoU vs pixel share",
            published="figures only (the seed published no numbers)",
            notes="Epochs, crop and learning rate are ours (the seed gives none). Stand-in: the encoder "
            "starts from scratch (no ImageNet download).",
        ),  # fmt: skip
        Recipe(
            "pans",
            "PAnS: cosine prototypes on StreetHazards, the pans score, per-image protocol",
            "pans-prototypes (Fontanel et al., CVPRW 2021): ResNet-50, crop 450, lr 0.007, 40 epochs",
            settings=dict(
                dataset="streethazards",
                data_root="data/streethazards",
                download=True,
                arch="deeplabv3",
                backbone="resnet50",
                head="cosine",
                pretrained_backbone=True,
                loss="ce",
                optimizer="sgd",
                lr=7e-3,
                weight_decay=1e-4,
                scheduler="poly",
                epochs=40,
                batch_size=8,
                crop_size=(450, 450),
                scores=("pans", "msp", "maxlogit", "entropy", "energy"),
                protocols=("per-image",),
                eval_scales=(0.75, 1.0, 1.25),
                amp="auto",
            ),
            standin=dict(
                dataset="synthetic",
                data_root="data/synthetic",
                download=False,
                backbone="mobilenet_v2",
                pretrained_backbone=False,
            ),  # fmt: skip
            demo=dict(epochs=18),
            measures="mIoU; per-image AUPR / AUROC / FPR95 of pans (beside MSP, MaxLogit, entropy, energy), "
            "averaged over test scales 0.75, 1, 1.25",
            published="pans, per-image on StreetHazards: AUPR / AUROC / FPR95 8.8 / 91.1 / 23.2 (as the DiCNet "
            "README reports it)",
            notes="No deep supervision (PAnS adds 0.4 x an auxiliary CE) and torchvision's ImageNet ResNet-50 "
            "instead of InPlaceABN's; the test scales are ours (PAnS averages over scales).",
        ),  # fmt: skip
        Recipe(
            "cityscapes-fcn",
            "my_FCN (or U-Net / DeepLabv3+) on the Cityscapes hamburg / frankfurt subset",
            "cityscapes-unet-fcn: Adam 1e-3 wd 1e-5, focal loss, batch 8, 500 epochs; global and mean "
            "class accuracy, IoU; resize, random crop, colour jitter; TensorBoard",
            settings=dict(
                dataset="cityscapes",
                data_root="data/cityscapes",
                cities=("train/hamburg", "val/frankfurt"),
                arch="my_fcn",
                backbone="plain",
                head="standard",
                loss="fl",
                class_weights=False,
                optimizer="adam",
                lr=1e-3,
                weight_decay=1e-5,
                scheduler="plateau",
                epochs=500,
                batch_size=8,
                scale_range=(0.25, 0.5),
                crop_size=(256, 512),
                color_jitter=0.3,
                scores=(),
                tensorboard=True,
                amp="auto",
            ),
            standin=dict(
                dataset="synthetic-cityscapes",
                data_root="data/synthetic-cityscapes",
                scale_range=(0.75, 1.0),
                crop_size=(96, 192),
            ),  # fmt: skip
            demo=dict(epochs=8),
            measures="pixel (global) accuracy, mean class accuracy, IoU and F1 per class, confusion matrix",
            published="figures only (the seed published TensorBoard curves, no numbers)",
            notes="The resize range and crop are ours (the seed names the augmentations, not their sizes); "
            "--arch unet --backbone plain or --arch deeplabv3plus --backbone resnet101 give its other models.",
        ),  # fmt: skip
    )
}


def presets() -> dict[str, dict[str, Any]]:
    """Every named setting, on top of the RunConfig defaults.

    - ``demo``: the README's main job, a few minutes on 2 CPU cores.
    - ``grid``: the demo's data, shorter training; one run of the tuning / ablation grids
      (``scripts/grids/``) in one to three minutes on 2 CPU cores.
    - ``tiny``: seconds; used by the tests and the notebook test.
    - ``streethazards-reference``: no training: the reference project's published weights
      evaluated on the real test split (1500 images at 1280x720, batch 8 as it did), test archive only.
    - every recipe of `RECIPES` as ``NAME``, ``NAME-demo`` and ``NAME-tiny``.
    """
    out: dict[str, dict[str, Any]] = {
        "demo": dict(epochs=18),
        "grid": dict(epochs=5),
        "tiny": {k: v for k, v in TINY_SIZE.items() if k not in ("amp", "download")},
        "streethazards-reference": dict(
            REFERENCE_RECIPE, weights="streethazards-reference", pretrained_on=None, eval_batch_size=8
        ),
    }
    for recipe in RECIPES.values():
        out.update(recipe.presets())
    return out


def preset_settings(name: str) -> dict[str, Any]:
    """The settings of the preset called `name` (a copy; see `presets`).

    Raises:
        ValueError: an unknown name; the message lists the valid ones.
    """
    every = presets()
    if name not in every:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(every)}")
    return dict(every[name])


def preset_help() -> str:
    """One paragraph naming every preset, for the scripts' --preset help."""
    recipes = "; ".join(f"{r.name}: {r.summary}" for r in RECIPES.values())
    return (
        "starting settings that the flags override: demo (synthetic StreetHazards-layout data, ~5 min on "
        "2 CPU cores), tiny (seconds), grid (one grid run), streethazards-reference (the reference's "
        f"published weights evaluated, no training), and the recipes - {recipes}. Each recipe NAME runs "
        "its published setting on the real data (GPU); NAME-demo runs it on the offline stand-in data in "
        "a few CPU minutes, NAME-tiny in seconds"
    )


__all__ = [
    "DEMO_SIZE",
    "RECIPES",
    "REFERENCE_RECIPE",
    "TINY_SIZE",
    "Recipe",
    "preset_help",
    "preset_settings",
    "presets",
]
