"""One procedural driving scene: `render_scene` draws an image and its label from (seed, split, index).

A pinhole camera on a car looks down a (possibly curving) road: asphalt with lane markings,
sidewalks with curbs, buildings / walls / fences / hedges along the property lines, street
lamps, traffic signs, trees, parked and moving cars, pedestrians and street furniture, a sky
labelled "unlabeled". Every object is a set of polygons projected through the same camera and
painted far to near into the image *and* (with the same mask) into the label, so the two agree
pixel for pixel. Lighting, colours, textures, sensor noise, blur and layout change per image.

Only the test split holds anomalies (`lib.synthetic.anomalies`): rocks, debris stars, tyres,
animal silhouettes and patterned crates, 0.1 % .. 5 % of the image, mostly on the road. Their
colours come from the same palettes the known objects use, so colour alone does not give them away.

Labels are StreetHazards train ids (`lib.classes.STREETHAZARDS_CLASSES`): 0 "unlabeled" is the
sky and, in some scenes, bare paved ground beyond the property lines (`Scene.sky` tells the two
apart); 13 is the anomaly. The writers of each on-disk format re-encode them.

Two vocabularies (`VOCABULARIES`): ``"streethazards"`` draws the 13 StreetHazards classes (the default
dataset; its scenes never change), ``"cityscapes"`` also draws the classes Cityscapes has and
StreetHazards has not - traffic lights, riders on bicycles and motorcycles, trucks, buses, trams,
and grass as terrain (`lib.synthetic.extras`; label ids 14..21, `SCENE_CLASSES`) - for the Cityscapes,
BDD100K, LostAndFound and RoadAnomaly stand-ins. A ``stream`` other than 0 draws other scenes for the
same (seed, split, index): the anomaly-only stand-ins take scenes of their own that way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from lib.classes import STREETHAZARDS_CLASSES
from lib.synthetic.anomalies import _anomaly
from lib.synthetic.canvas import (
    EXTRA_CLASSES,
    TERRAIN,
    UNLABELED,
    VEGETATION,
    _Camera,
    _Canvas,
    _Layout,
    _make_layout,
)
from lib.synthetic.painters import (
    _building,
    _bush,
    _car,
    _draw_ground,
    _draw_lines,
    _draw_sky,
    _draw_skyline,
    _fence,
    _hedge,
    _lamp,
    _other,
    _pedestrian,
    _sign,
    _tree,
    _wall,
)

#: split name -> code mixed into the random seed of every image of that split.
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2}
#: Bumped whenever the drawing changes, so an old dataset is not silently reused.
GENERATOR_VERSION = 1
#: What a scene may draw: the StreetHazards classes, or those plus Cityscapes' own (module docstring).
VOCABULARIES: tuple[str, ...] = ("streethazards", "cityscapes")
#: Names of every label id a scene of either vocabulary holds (ids 14.. only in "cityscapes" scenes).
SCENE_CLASSES: tuple[str, ...] = (*STREETHAZARDS_CLASSES, *EXTRA_CLASSES)


@dataclass(frozen=True)
class Scene:
    """One rendered scene.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        label: (H, W) uint8 StreetHazards train ids 0..13 (anomaly = 13); in scenes of the
            "cityscapes" vocabulary also the ids 14..21 of `EXTRA_CLASSES` (`SCENE_CLASSES` names all).
        sky: (H, W) bool, True on the label's "unlabeled" pixels that are sky (the others are
            bare ground beyond the property lines).
    """

    image: np.ndarray
    label: np.ndarray
    sky: np.ndarray


def _check_split(split: str) -> None:
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLIT_CODES)}")


def _check_size(height: int, width: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 32:
            raise ValueError(f"{name} must be an integer >= 32, got {value!r}")


def render_scene(
    *, seed: int, split: str, index: int, height: int = 256, width: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one street scene.

    Args:
        seed: dataset seed.
        split: ``"train"``, ``"val"`` or ``"test"``; only ``"test"`` scenes contain anomalies.
        index: image index within the split.
        height: image height in pixels (>= 32).
        width: image width in pixels (>= 32).

    Returns:
        (image, label): ``image`` is (height, width, 3) uint8 RGB, ``label`` is (height, width)
        uint8 with train ids 0..13 (raw annotation value - 1; anomaly = 13). The result depends
        only on (seed, split, index, height, width).

    Raises:
        ValueError: unknown split, negative index or too small a size.
    """
    scene = render_layers(seed=seed, split=split, index=index, height=height, width=width)
    return scene.image, scene.label


def render_layers(
    *,
    seed: int,
    split: str,
    index: int,
    height: int = 256,
    width: int = 512,
    classes: str = "streethazards",
    stream: int = 0,
    anomalies: bool | None = None,
) -> Scene:
    """`render_scene`, plus the sky mask that the formats with a "sky" class need.

    Args:
        seed, split, index, height, width: as in `render_scene`.
        classes: the vocabulary, one of `VOCABULARIES` (module docstring).
        stream: 0, or another integer >= 0 for scenes of their own (module docstring).
        anomalies: draw anomalies; default: in the test split only.

    Returns:
        The `Scene`; with the defaults its image and label are exactly those of `render_scene`.

    Raises:
        ValueError: unknown split or vocabulary, negative index or stream, or too small a size.
    """
    _check_split(split)
    _check_size(height, width)
    if classes not in VOCABULARIES:
        raise ValueError(f"unknown scene vocabulary {classes!r}; valid: {', '.join(VOCABULARIES)}")
    for name, value in (("seed", seed), ("index", index), ("stream", stream)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    key = [int(seed), SPLIT_CODES[split], int(index)] + ([int(stream)] if stream else [])
    rng = np.random.default_rng(key)
    extras = classes == "cityscapes"
    h, w = int(height), int(width)
    cam = _make_camera(rng, h, w)
    lay = _make_layout(rng, h, w, cam)
    haze_dist = float(rng.uniform(120, 500))
    cv = _Canvas(rng, h, w, np.zeros(3, np.float32), haze_dist, grass=TERRAIN if extras else VEGETATION)
    cv.haze_color = _draw_sky(cv, rng, cam)
    _draw_skyline(cv, rng, cam, lay)
    _draw_ground(cv, rng, cam, lay)
    _draw_lines(cv, rng, cam, lay)

    queue = _Queue(cv, rng, cam)
    if (
        split == "test" if anomalies is None else anomalies
    ):  # anomalies first, so that nothing is put right in front of them
        for _ in range(int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))):
            za, (xa0, xa1), paint = _anomaly(cv, rng, cam, lay)
            queue.objects.append((za, paint))
            queue.keep_out.append((za, xa0 - 2.0, xa1 + 2.0))
    z_max = lay.z_far * 0.8
    _queue_property_lines(queue, rng, lay, z_max)
    _queue_sidewalk_objects(queue, rng, lay, z_max)
    _queue_traffic_and_furniture(queue, rng, lay)
    if extras:
        from lib.synthetic.extras import queue_extras  # it imports the painters, as this module does

        queue_extras(queue, rng, lay)
    queue.paint()

    image = _finish(cv, rng)
    box = cv.mask([cam.below_horizon(w, h)])  # the only other painter of "unlabeled": bare ground
    ground_top = h if box is None else box[1][1] + int(np.argmax(box[0].any(axis=1)))
    sky = (cv.label == UNLABELED) & (np.arange(h) < ground_top)[:, None]
    return Scene(image, cv.label, sky)


def _make_camera(rng: np.random.Generator, h: int, w: int) -> _Camera:
    curve = float(rng.normal(0, 0.0012)) if rng.random() < 0.6 else 0.0
    return _Camera(
        f=float(rng.uniform(0.55, 0.85)) * min(w, 2 * h),  # ~65..85 deg across a 2:1 frame
        yh=float(rng.uniform(0.34, 0.5)) * h,
        xv=float(rng.uniform(0.42, 0.58)) * w,
        hc=float(rng.uniform(1.3, 1.8)),
        curve=curve,
    )


class _Queue:
    """Painters queued with their depth, painted far to near bucket by bucket: what lies beyond
    the property lines, what stands on them, then the sidewalks and the road."""

    def __init__(self, cv: _Canvas, rng: np.random.Generator, cam: _Camera):
        self.cv, self.rng, self.cam = cv, rng, cam
        self.behind: list[tuple[float, Callable[[], None]]] = []  # beyond the property lines
        self.along: list[tuple[float, Callable[[], None]]] = []  # on the property lines
        self.objects: list[tuple[float, Callable[[], None]]] = []  # sidewalks and road
        self.keep_out: list[tuple[float, float, float]] = []  # (depth, pixel x0, x1) of anomalies

    def later(self, bucket: list, Z: float, fn: Callable, *args) -> None:
        bucket.append((Z, lambda: fn(self.cv, self.rng, self.cam, *args)))

    def place(self, Z: float, X: float, half: float, depth: float, fn: Callable, *args) -> None:
        """Queue a road/sidewalk object (half width, depth in metres) unless it would hide an anomaly."""
        if self.keep_out:
            xs = self.cam.px(
                np.array([X - half, X + half, X - half, X + half]), np.array([Z, Z, Z + depth, Z + depth])
            )
            x0, x1 = float(xs[:, 0].min()), float(xs[:, 0].max())
            if any(Z < za and x0 < xa1 and x1 > xa0 for za, xa0, xa1 in self.keep_out):
                return
        self.later(self.objects, Z, fn, *args)

    def paint(self) -> None:
        for bucket in (self.behind, self.along, self.objects):
            for _, paint in sorted(bucket, key=lambda item: -item[0]):
                paint()


def _queue_property_lines(q: _Queue, rng: np.random.Generator, lay: _Layout, z_max: float) -> None:
    """Buildings, walls, fences, hedges and open gaps along each property line; trees behind the gaps."""
    for side in (-1, 1):
        style = int(rng.choice(3, p=[0.5, 0.3, 0.2]))  # city, mixed, park
        probs = ([0.86, 0.04, 0.04, 0.03, 0.03], [0.45, 0.15, 0.15, 0.15, 0.1], [0.08, 0.15, 0.3, 0.37, 0.1])[
            style
        ]
        z = float(rng.uniform(1.5, 5.0))
        while z < z_max:
            seg = int(rng.choice(5, p=probs))  # building, wall, fence, hedge, open
            length = float(rng.uniform(8, 35)) if seg == 0 else float(rng.uniform(5, 25))
            z1 = min(z + length, z_max)
            if seg < 4:
                q.later(q.along, z, (_building, _wall, _fence, _hedge)[seg], lay, side, z, z1)
            if seg != 0 and rng.random() < 0.7:  # trees behind a gap
                for zt in np.arange(z + float(rng.uniform(0, 4)), min(z1, 90.0), float(rng.uniform(4, 10))):
                    Xt = lay.prop(side) + side * float(rng.uniform(1.5, 8))
                    q.later(q.behind, float(zt), _tree, Xt, float(zt), float(rng.uniform(1.0, 1.8)))
            z = z1 + (float(rng.uniform(0, 6)) if rng.random() < 0.3 else 0.0)


def _queue_sidewalk_objects(q: _Queue, rng: np.random.Generator, lay: _Layout, z_max: float) -> None:
    """Street lamps, street trees or bushes on each side; traffic signs at the curbs."""
    for side in (-1, 1):
        curb, walk = lay.curb(side), lay.walk(side)
        if rng.random() < 0.75:  # street lamps
            spacing = float(rng.uniform(15, 35))
            for zl in np.arange(float(rng.uniform(2, spacing)), z_max * 0.6, spacing):
                q.place(float(zl), curb + side * 0.4, 0.2, 0.2, _lamp, curb + side * 0.4, float(zl), side)
        if rng.random() < 0.5 and abs(walk - curb) > 2.0:  # street trees
            spacing = float(rng.uniform(6, 15))
            for zt in np.arange(float(rng.uniform(2, spacing)), z_max * 0.6, spacing):
                q.place(float(zt), curb + side * 1.1, 2.5, 2.5, _tree, curb + side * 1.1, float(zt))
        elif rng.random() < 0.3:  # bushes / planters at the outer sidewalk edge
            for _ in range(int(rng.integers(1, 5))):
                zb = float(rng.uniform(lay.z_near, 50))
                q.place(zb, walk - side * 0.5, 1.2, 1.2, _bush, walk - side * 0.5, zb)
    if rng.random() < 0.9:
        for _ in range(int(rng.integers(1, 5))):
            side = -1 if rng.random() < 0.5 else 1
            zs = float(rng.uniform(lay.z_near * 1.1, 45))
            xs = lay.curb(side) + side * float(rng.uniform(0.3, 0.8))
            q.place(zs, xs, 0.5, 0.1, _sign, xs, zs)


def _queue_traffic_and_furniture(q: _Queue, rng: np.random.Generator, lay: _Layout) -> None:
    """Pedestrians, cars in the lanes, cars parked along the curbs, then street furniture."""
    n_ped = int(min(rng.poisson(3.0), 10))
    for _ in range(n_ped):
        if rng.random() < 0.8:
            side = -1 if rng.random() < 0.5 else 1
            a, b = sorted((lay.curb(side), lay.walk(side)))
            Xp = float(rng.uniform(a + 0.3, b - 0.3))
            Zp = float(rng.uniform(lay.z_near * 0.9, 45))
        else:
            Xp = float(rng.uniform(lay.road_l + 0.5, lay.road_r - 0.5))
            Zp = float(rng.uniform(lay.z_near + 1, 30))
        q.place(Zp, Xp, 0.35, 0.3, _pedestrian, Xp, Zp)
    for lane in range(lay.n_lanes):
        Xc = lay.road_l + (lane + 0.5) * lay.lane_w + float(rng.uniform(-0.3, 0.3))
        oncoming = lane < lay.n_oncoming
        zc = float(rng.uniform(lay.z_near + 2, 25)) + (4.0 if abs(Xc) < lay.lane_w / 2 else 0.0)
        for _ in range(int(rng.poisson(1.0))):
            if zc > 90:
                break
            q.place(zc, Xc, 1.1, 6.0, _car, Xc, zc, oncoming)
            zc += float(rng.uniform(8, 30))
    for side in (-1, 1):  # parked cars along the curbs
        if rng.random() < 0.45:
            zc = float(rng.uniform(lay.z_near * 0.8, 20))
            for _ in range(int(rng.integers(1, 5))):
                xp = lay.curb(side) - side * 1.1
                q.place(zc, xp, 1.1, 6.0, _car, xp, zc, rng.random() < 0.2)
                zc += float(rng.uniform(5.5, 12))
    for _ in range(int(rng.integers(0, 5))):
        side = -1 if rng.random() < 0.5 else 1
        a, b = sorted((lay.curb(side), lay.walk(side)))
        Xo = float(rng.uniform(a + 0.3, b - 0.3))
        Zo = float(rng.uniform(lay.z_near, 40))
        q.place(Zo, Xo, 1.0, 2.2, _other, Xo, Zo, side)


def _finish(cv: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Global lighting, colour cast, vignetting, gamma, sensor noise and blur; returns uint8 RGB."""
    gain = float(rng.uniform(0.65, 1.2)) * (1.0 + rng.normal(0, 0.05, 3)).astype(np.float32)
    v = float(rng.uniform(0.0, 0.35))
    yy = np.linspace(-1, 1, cv.h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, cv.w, dtype=np.float32)[None, :]
    vignette = 1.0 - v * 0.5 * (xx * xx + yy * yy)
    img = cv.image
    img *= vignette[..., None]
    img *= gain
    gamma = float(rng.uniform(0.85, 1.15))
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)
    img = cv2.LUT(np.clip(img + 0.5, 0, 255).astype(np.uint8), lut).astype(np.float32)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(1.0, 5.0))
    if rng.random() < 0.7:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.3, 0.9)))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def label_to_color(label: np.ndarray) -> np.ndarray:
    """Colour-code a train-id label with ``STREETHAZARDS_PALETTE`` (RGB uint8; ids > 13 black)."""
    from lib.classes import STREETHAZARDS_PALETTE

    lut = np.zeros((256, 3), np.uint8)
    lut[: len(STREETHAZARDS_PALETTE)] = np.asarray(STREETHAZARDS_PALETTE, np.uint8)
    return lut[label]
