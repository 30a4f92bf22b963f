"""Procedural driving scenes written in the exact StreetHazards layout and label encoding.

A pinhole camera on a car looks down a (possibly curving) road: asphalt with lane markings,
sidewalks with curbs, buildings / walls / fences / hedges along the property lines, street
lamps, traffic signs, trees, parked and moving cars, pedestrians and street furniture, a sky
labelled "unlabeled". Every object is a set of polygons projected through the same camera and
painted far to near into the image *and* (with the same mask) into the label, so the two agree
pixel for pixel. Lighting, colours, textures, sensor noise, blur and layout change per image.

Only the test split holds anomalies: rocks, debris stars, tyres, animal silhouettes and
patterned crates, 0.1 % .. 5 % of the image, mostly on the road. Their colours come from the
same palettes the known objects use, so colour alone does not give them away.

Layout written by :func:`generate_streethazards` (root = the folder given)::

    train/images/training/t1-3/000000.png   train/annotations/training/t1-3/000000.png
    train/images/validation/t4/000000.png   train/annotations/validation/t4/000000.png
    test/images/test/t5/000000.png          test/annotations/test/t5/000000.png
    train/training.odgt  train/validation.odgt  test/test.odgt  synthetic.json

The folders and index files are those of `lib.layout.STREETHAZARDS_SPLITS` (each split's town
folder); this module does not import torch.

Images are 8-bit RGB PNGs; annotations are single-channel PNGs with raw values 1..14
(raw = train id + 1, sky/background = 1 "unlabeled", anomaly = 14).
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lib.classes import ANOMALY_ID, class_id
from lib.layout import STREETHAZARDS_SPLITS

# ----------------------------------------------------------------------------- constants

UNLABELED = class_id("unlabeled")
BUILDING = class_id("building")
FENCE = class_id("fence")
OTHER = class_id("other")
PEDESTRIAN = class_id("pedestrian")
POLE = class_id("pole")
ROAD_LINE = class_id("road line")
ROAD = class_id("road")
SIDEWALK = class_id("sidewalk")
VEGETATION = class_id("vegetation")
CAR = class_id("car")
WALL = class_id("wall")
TRAFFIC_SIGN = class_id("traffic sign")
ANOMALY = ANOMALY_ID

#: split name -> code mixed into the random seed of every image of that split.
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2}
#: Name of the parameter file written at the root; its presence marks a generated dataset.
MARKER_FILE = "synthetic.json"
#: Bumped whenever the drawing changes, so an old dataset is not silently reused.
GENERATOR_VERSION = 1
#: Below this many images a worker pool costs more than it saves.
_MIN_IMAGES_FOR_POOL = 24
#: Anomaly kinds drawn in the test split.
ANOMALY_KINDS: tuple[str, ...] = ("rock", "debris", "tyre", "animal", "crate")

# Colour palettes (RGB). Known classes draw from their own subset; anomalies from all of them.
_PALETTES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "asphalt": ((82, 82, 86), (96, 94, 92), (70, 72, 78), (108, 106, 104)),
    "marking": ((232, 232, 226), (238, 204, 78)),
    "pavement": ((165, 160, 152), (140, 138, 135), (176, 138, 122), (190, 182, 162)),
    "grass": ((90, 130, 55), (108, 138, 62), (72, 108, 46), (128, 132, 72)),
    "foliage": ((56, 100, 42), (42, 82, 36), (86, 120, 46), (118, 112, 42), (150, 98, 42)),
    "bark": ((86, 66, 50), (102, 86, 70), (70, 60, 55)),
    "facade": (
        (200, 186, 160),
        (152, 84, 64),
        (162, 158, 152),
        (96, 96, 106),
        (186, 152, 140),
        (150, 170, 190),
        (214, 208, 172),
        (120, 100, 86),
    ),
    "glass": ((56, 70, 90), (92, 110, 130), (150, 168, 186), (40, 46, 56)),
    "metal": ((120, 125, 130), (80, 85, 90), (170, 172, 176), (60, 90, 72)),
    "paint": (
        (182, 28, 28),
        (26, 52, 140),
        (224, 224, 228),
        (26, 26, 30),
        (140, 140, 146),
        (200, 170, 32),
        (32, 90, 52),
        (100, 62, 32),
        (210, 100, 22),
        (90, 140, 180),
    ),
    "rubber": ((30, 30, 32), (46, 46, 50)),
    "cloth": (
        (40, 40, 46),
        (32, 46, 92),
        (150, 32, 36),
        (200, 200, 196),
        (90, 90, 96),
        (120, 90, 60),
        (52, 90, 62),
        (200, 160, 42),
        (140, 62, 120),
        (72, 110, 170),
    ),
    "skin": ((230, 190, 160), (200, 156, 122), (150, 106, 76), (96, 66, 46)),
    "wood": ((130, 90, 56), (160, 120, 76), (96, 66, 42)),
    "sign": ((200, 32, 36), (32, 72, 170), (230, 190, 32), (236, 236, 236), (32, 120, 62), (230, 120, 22)),
    "stone": ((150, 146, 136), (120, 116, 110), (170, 160, 140), (100, 96, 90)),
}
#: Palettes an anomaly may take its colours from (those of the known objects), weighted roughly
#: by how much of a scene each covers, so that no colour is more typical of anomalies.
_ANOMALY_PALETTES: dict[str, float] = {
    "asphalt": 0.14,
    "pavement": 0.12,
    "facade": 0.16,
    "stone": 0.1,
    "foliage": 0.1,
    "bark": 0.05,
    "glass": 0.06,
    "metal": 0.07,
    "paint": 0.06,
    "rubber": 0.03,
    "cloth": 0.04,
    "skin": 0.02,
    "wood": 0.03,
    "sign": 0.02,
}
_ANOMALY_PALETTE_NAMES = tuple(_ANOMALY_PALETTES)
_ANOMALY_PALETTE_P = np.array(list(_ANOMALY_PALETTES.values())) / sum(_ANOMALY_PALETTES.values())
#: Texture strengths (fine, medium, coarse noise) that known objects use; anomalies reuse them.
_TEXTURES: tuple[tuple[float, float, float], ...] = (
    (0.03, 0.04, 0.03),
    (0.05, 0.08, 0.04),
    (0.02, 0.03, 0.08),
    (0.06, 0.12, 0.06),
)

Poly = np.ndarray  # (N, 2) float pixel coordinates


def _color(rng: np.random.Generator, palette: str, jitter: float = 12.0) -> np.ndarray:
    """One colour from a palette, jittered per channel and in brightness."""
    choices = _PALETTES[palette]
    base = np.asarray(choices[int(rng.integers(len(choices)))], np.float32)
    base = base + rng.normal(0.0, jitter, 3) + rng.normal(0.0, jitter)
    return np.clip(base, 4.0, 250.0).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Unit-variance value noise of feature size ``cell`` pixels, shape (h, w)."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    field = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return field / max(float(field[::7, ::7].std()), 1e-6)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 20, rot: float = 0.0) -> np.ndarray:
    """Polygon (n, 2) of an ellipse in local coordinates."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(rot), math.sin(rot)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _rect(u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
    return np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]], np.float64)


def _poly_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# ----------------------------------------------------------------------------- camera and canvas


@dataclass
class _Camera:
    """Pinhole camera at height ``hc`` over a flat ground; the road bends by ``curve * Z**2``."""

    f: float
    yh: float
    xv: float
    hc: float
    curve: float

    def px(self, X, Z, Y=0.0) -> np.ndarray:
        """Project world points (lateral X, depth Z, height Y, metres) to (N, 2) pixels."""
        Z = np.maximum(Z, 0.4)
        x = self.xv + self.f * (X + self.curve * Z * Z) / Z
        y = self.yh + self.f * (self.hc - np.asarray(Y, np.float64)) / Z
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        out = np.empty(np.broadcast_shapes(x.shape, y.shape) + (2,))
        out[..., 0] = x
        out[..., 1] = y
        return out.reshape(-1, 2)

    @staticmethod
    def _depths(z0: float, z1: float, n: int) -> np.ndarray:
        return np.array([z0, z1]) if n <= 2 else np.geomspace(z0, z1, n)

    def ground(self, X0: float, X1: float, z0: float, z1: float, n: int = 2) -> Poly:
        """Ground strip between lateral X0 and X1 from depth z0 to z1."""
        zs = self._depths(z0, z1, n)
        return self.px(
            np.concatenate([np.full(len(zs), X0), np.full(len(zs), X1)]), np.concatenate([zs, zs[::-1]])
        )

    def side(self, X: float, z0: float, z1: float, y0: float, y1: float, n: int = 2) -> Poly:
        """Vertical plane parallel to the road at lateral X (a facade, wall, fence, car side)."""
        zs = self._depths(z0, z1, n)
        ys = np.concatenate([np.full(len(zs), y0), np.full(len(zs), y1)])
        return self.px(X, np.concatenate([zs, zs[::-1]]), ys)

    def upright(self, X: float, Z: float, local: np.ndarray) -> Poly:
        """Flat shape facing the camera at depth Z; local (u lateral, v height) in metres."""
        return self.px(X + local[:, 0], Z, local[:, 1])

    def flat(self, X: float, Z: float, local: np.ndarray, height: float = 0.0) -> Poly:
        """Shape lying on the ground; local (u lateral, d depth offset) in metres."""
        return self.px(X + local[:, 0], Z + local[:, 1], height)


class _Canvas:
    """Float RGB image + train-id label painted with the same polygon masks."""

    def __init__(self, rng: np.random.Generator, h: int, w: int, haze: np.ndarray, haze_dist: float):
        self.rng, self.h, self.w = rng, h, w
        self.image = np.zeros((h, w, 3), np.float32)
        self.label = np.zeros((h, w), np.uint8)
        self.haze_color, self.haze_dist = haze, haze_dist
        self.fine = rng.standard_normal((h, w), dtype=np.float32)
        # Texture fields 1.5x the image; each object reads them at a random offset.
        self.oh, self.ow = h // 2, w // 2
        self.medium = _smooth_noise(rng, h + self.oh, w + self.ow, max(2, w // 90))
        self.coarse = _smooth_noise(rng, h + self.oh, w + self.ow, max(4, w // 14))
        self._offsets: list[list[int]] = []
        self._next = 0

    def hazed(self, color: np.ndarray, Z: float) -> np.ndarray:
        """Blend a colour toward the horizon colour with distance (aerial perspective)."""
        t = 1.0 - math.exp(-max(Z, 0.0) / self.haze_dist)
        return (np.asarray(color, np.float32) * (1.0 - t) + self.haze_color * t).astype(np.float32)

    def _offset(self) -> tuple[int, int]:
        """Next random offset into the texture fields (drawn in bulk: fewer RNG calls)."""
        if self._next >= len(self._offsets):
            self._offsets = self.rng.integers(0, (self.oh + 1, self.ow + 1), size=(256, 2)).tolist()
            self._next = 0
        self._next += 1
        return self._offsets[self._next - 1]

    def _noise(self, y0: int, y1: int, x0: int, x1: int, tex: Sequence[float]) -> np.ndarray:
        oy, ox = self._offset()
        n = self.fine[y0:y1, x0:x1] * np.float32(tex[0])
        if tex[1]:
            n += np.float32(tex[1]) * self.medium[oy + y0 : oy + y1, ox + x0 : ox + x1]
        if tex[2]:
            n += np.float32(tex[2]) * self.coarse[oy + y0 : oy + y1, ox + x0 : ox + x1]
        return n

    def _pattern(self, pattern: tuple, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        kind = pattern[0]
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        if kind == "stripes":  # ("stripes", period px, angle rad)
            _, period, angle = pattern
            t = (xx * math.cos(angle) + yy * math.sin(angle)) / max(period, 1.0)
            return (np.floor(t) % 2).astype(bool)
        if kind == "checker":  # ("checker", period px, angle rad)
            _, period, angle = pattern
            c, s = math.cos(angle), math.sin(angle)
            u = np.floor((xx * c + yy * s) / max(period, 1.0))
            v = np.floor((-xx * s + yy * c) / max(period, 1.0))
            return ((u + v) % 2).astype(bool)
        if kind == "bricks":  # ("bricks", row height px, brick width px): True on mortar
            _, rh, bw = pattern
            rh, bw = max(rh, 2.0), max(bw, 3.0)
            row = np.floor(yy / rh)
            return ((yy % rh) < 1.0) | (((xx + (row % 2) * bw / 2) % bw) < 1.0)
        if kind == "blotch":  # ("blotch", threshold): medium-noise spots
            oy, ox = self._offset()
            return self.medium[oy + y0 : oy + y1, ox + x0 : ox + x1] > pattern[1]
        raise ValueError(f"unknown pattern {kind!r}")

    def fill(
        self,
        polys: Sequence[Poly],
        cls: int,
        color: np.ndarray,
        *,
        tex: Sequence[float] = (0.03, 0.05, 0.03),
        pattern: tuple | None = None,
        color2: np.ndarray | None = None,
        vgrad: float = 0.0,
        label: bool = True,
        multiply: float | None = None,
        even_odd: bool = False,
    ) -> None:
        """Paint polygons (their union, or even-odd with holes) into image and label.

        Args:
            polys: (N, 2) float pixel polygons.
            cls: train id written into the label under the mask (when ``label``).
            color: RGB base colour.
            tex: strengths of fine / medium / coarse brightness noise.
            pattern: optional two-colour pattern; ``color2`` is used where it is True.
            vgrad: brighter top, darker bottom by this relative amount.
            label: also write ``cls`` into the label (False for details of the same object).
            multiply: darken/brighten the existing image by this factor instead of painting.
            even_odd: fill all polygons in one even-odd pass (inner rings become holes; also
                faster for many disjoint polygons such as windows).
        """
        polys = [p for p in polys if len(p) >= 3]
        if not polys:
            return
        allp = np.concatenate(polys) if len(polys) > 1 else polys[0]
        lo, hi = allp.min(axis=0), allp.max(axis=0)
        x0, y0 = max(int(math.floor(lo[0])), 0), max(int(math.floor(lo[1])), 0)
        x1, y1 = min(int(math.ceil(hi[0])) + 1, self.w), min(int(math.ceil(hi[1])) + 1, self.h)
        if x0 >= x1 or y0 >= y1:
            return
        # Projected coordinates stay far below 2**27 (depths >= 0.4 m), so int32 in 1/16 px is safe.
        fixed = np.rint((allp - (x0, y0)) * 16.0).astype(np.int32)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        if len(polys) == 1:
            cv2.fillPoly(mask, [fixed], 1, lineType=cv2.LINE_8, shift=4)
        else:
            pts = np.split(fixed, np.cumsum([len(p) for p in polys[:-1]]))
            if even_odd:  # one call: overlaps cancel, so inner rings become holes
                cv2.fillPoly(mask, pts, 1, lineType=cv2.LINE_8, shift=4)
            else:  # union of the polygons
                for p in pts:
                    cv2.fillPoly(mask, [p], 1, lineType=cv2.LINE_8, shift=4)
        m = mask.view(bool)
        region = self.image[y0:y1, x0:x1]
        m3 = m[..., None]
        if multiply is not None:
            np.copyto(region, region * np.float32(multiply), where=m3)
            return
        shade = self._noise(y0, y1, x0, x1, tex)
        shade += 1.0
        if vgrad:
            shade *= (1.0 + vgrad * np.linspace(0.5, -0.5, y1 - y0, dtype=np.float32))[:, None]
        col = np.asarray(color, np.float32)
        if pattern is not None:
            sel = self._pattern(pattern, y0, y1, x0, x1)
            c2 = np.asarray(col * 0.55 if color2 is None else color2, np.float32)
            values = np.where(sel[..., None], c2, col) * shade[..., None]
        else:
            values = shade[..., None] * col
        np.copyto(region, values, where=m3)
        if label:
            np.copyto(self.label[y0:y1, x0:x1], np.uint8(cls), where=m)


# ----------------------------------------------------------------------------- scene layout


@dataclass
class _Layout:
    h: int
    w: int
    z_near: float
    z_far: float
    lane_w: float
    n_lanes: int
    n_oncoming: int
    road_l: float
    road_r: float
    walk_l: float  # outer sidewalk edge, left (negative X)
    walk_r: float
    prop_l: float  # property line, left
    prop_r: float
    light: dict[int, float]  # facade brightness per side (-1 left, +1 right)

    def curb(self, side: int) -> float:
        return self.road_l if side < 0 else self.road_r

    def walk(self, side: int) -> float:
        return self.walk_l if side < 0 else self.walk_r

    def prop(self, side: int) -> float:
        return self.prop_l if side < 0 else self.prop_r


def _make_layout(rng: np.random.Generator, h: int, w: int, cam: _Camera) -> _Layout:
    lane_w = float(rng.uniform(2.9, 3.7))
    n_lanes = int(rng.choice([2, 2, 3, 4]))
    n_oncoming = n_lanes // 2 if rng.random() < 0.7 else 0
    ego = int(rng.integers(n_oncoming, n_lanes))
    road_l = -(ego + 0.5) * lane_w + float(rng.uniform(-0.5, 0.5))
    road_r = road_l + n_lanes * lane_w
    walk_l = road_l - float(rng.uniform(1.8, 5.0))
    walk_r = road_r + float(rng.uniform(1.8, 5.0))
    prop_l = walk_l - (float(rng.uniform(0.5, 4.0)) if rng.random() < 0.4 else 0.0)
    prop_r = walk_r + (float(rng.uniform(0.5, 4.0)) if rng.random() < 0.4 else 0.0)
    z_near = cam.f * cam.hc / max(h - cam.yh, 1.0)
    sun = float(rng.uniform(0.7, 1.1))
    light = {-1: sun, 1: float(rng.uniform(0.7, 1.1))}
    return _Layout(
        h, w, z_near, float(rng.uniform(110, 220)), lane_w, n_lanes, n_oncoming,
        road_l, road_r, walk_l, walk_r, prop_l, prop_r, light,
    )  # fmt: skip


# ----------------------------------------------------------------------------- background and ground


def _draw_sky(cv: _Canvas, rng: np.random.Generator, cam: _Camera) -> np.ndarray:
    """Fill the whole frame with a sky gradient (unlabeled); returns the horizon colour."""
    kind = rng.choice(3, p=[0.55, 0.3, 0.15])
    if kind == 0:  # clear blue
        top, hor = np.array([70, 125, 205], np.float32), np.array([175, 200, 230], np.float32)
    elif kind == 1:  # overcast
        g = float(rng.uniform(150, 205))
        top, hor = np.array([g - 15, g - 10, g], np.float32), np.array([g + 20, g + 20, g + 22], np.float32)
    else:  # dusk
        top, hor = np.array([80, 90, 140], np.float32), np.array([230, 165, 120], np.float32)
    top = top + rng.normal(0, 10, 3).astype(np.float32)
    hor = hor + rng.normal(0, 10, 3).astype(np.float32)
    t = np.clip(np.arange(cv.h, dtype=np.float32) / max(cam.yh, 1.0), 0.0, 1.0)[:, None]
    grad = top[None, :] * (1 - t) + hor[None, :] * t
    clouds = cv.coarse[: cv.h, : cv.w] * float(rng.uniform(0.0, 0.12))
    cv.image[:] = grad[:, None, :] * (1.0 + clouds[..., None])
    cv.label[:] = UNLABELED
    return np.clip(hor, 0, 255)


def _draw_skyline(cv: _Canvas, rng: np.random.Generator, cam: _Camera, lay: _Layout) -> None:
    """Distant buildings and tree lines on the horizon (closes the far end of the street)."""
    if rng.random() < 0.15:
        return
    x = -float(rng.uniform(0, 0.05)) * cv.w
    base = cam.yh + 1.5
    while x < cv.w:
        bw = float(rng.uniform(0.03, 0.12)) * cv.w
        if rng.random() < 0.3:
            r = bw / 2
            top = base - float(rng.uniform(0.4, 1.0)) * r * 1.2
            poly = _ellipse(x + r, top + r * 0.6, r, r * 0.7, n=16)
            poly = np.concatenate([poly, [[x + bw, base], [x, base]]])
            color = cv.hazed(_color(rng, "foliage"), 260.0)
            cv.fill([poly], VEGETATION, color, tex=(0.03, 0.15, 0.05))
        else:
            bh = float(rng.uniform(0.02, 0.14)) * cv.h
            color = cv.hazed(_color(rng, "facade"), 220.0)
            cv.fill([_rect(x, base - bh, x + bw, base)], BUILDING, color, tex=(0.02, 0.04, 0.02))
        x += bw * float(rng.uniform(0.7, 1.1))


def _draw_ground(cv: _Canvas, rng: np.random.Generator, cam: _Camera, lay: _Layout) -> None:
    z0, z1 = lay.z_near * 0.7, lay.z_far
    n = 24 if cam.curve else 2
    # Base ground beyond the property lines, up to the horizon.
    kind = rng.choice(3, p=[0.5, 0.35, 0.15])
    base_cls, palette = [(VEGETATION, "grass"), (SIDEWALK, "pavement"), (UNLABELED, "stone")][int(kind)]
    base_color = cv.hazed(_color(rng, palette), 25.0)
    ground = np.array([[-1, cam.yh + 0.5], [cv.w + 1, cam.yh + 0.5], [cv.w + 1, cv.h + 1], [-1, cv.h + 1]])
    cv.fill([ground], base_cls, base_color, tex=(0.05, 0.1, 0.1))
    road_color = _color(rng, "asphalt")
    walk_color = _color(rng, "pavement")
    for side in (-1, 1):
        prop, walk, curb = lay.prop(side), lay.walk(side), lay.curb(side)
        if abs(prop - walk) > 0.01:
            green = rng.random() < 0.55
            color = _color(rng, "grass" if green else "pavement")
            cv.fill(
                [cam.ground(prop, walk, z0, z1, n)],
                VEGETATION if green else SIDEWALK,
                color,
                tex=(0.06, 0.12, 0.08),
            )
        pattern = (
            ("bricks", float(rng.uniform(3, 6)), float(rng.uniform(6, 12))) if rng.random() < 0.3 else None
        )
        cv.fill(
            [cam.ground(walk, curb, z0, z1, n)],
            SIDEWALK,
            walk_color,
            tex=(0.04, 0.06, 0.05),
            pattern=pattern,
            color2=walk_color * 0.8,
        )
    cv.fill([cam.ground(lay.road_l, lay.road_r, z0, z1, n)], ROAD, road_color, tex=(0.05, 0.05, 0.04))
    # Repair patches and manholes: road texture only.
    for _ in range(int(rng.integers(0, 4))):
        X = float(rng.uniform(lay.road_l + 1, lay.road_r - 1))
        Z = float(rng.uniform(lay.z_near, 50))
        if rng.random() < 0.5:
            local = _rect(-rng.uniform(0.5, 2), 0, rng.uniform(0.5, 2), rng.uniform(1, 6))
        else:
            local = _ellipse(0, 0, 0.35, 0.35, n=12)
        cv.fill(
            [cam.flat(X, Z, local)], ROAD, road_color * float(rng.uniform(0.7, 1.2)), tex=(0.05, 0.1, 0.05)
        )
    for side in (-1, 1):  # curb faces, 15 cm high
        cv.fill(
            [cam.side(lay.curb(side), z0, z1, 0.0, 0.15, n)],
            SIDEWALK,
            walk_color * 1.1,
            tex=(0.03, 0.03, 0.03),
        )


def _draw_lines(cv: _Canvas, rng: np.random.Generator, cam: _Camera, lay: _Layout) -> None:
    """Lane dividers (dashed / solid / double yellow), edge lines and zebra crossings."""
    z0, z1 = lay.z_near * 0.7, lay.z_far * 0.8
    n = 24 if cam.curve else 2
    white = np.asarray(_PALETTES["marking"][0], np.float32) * float(rng.uniform(0.8, 1.05))
    yellow = np.asarray(_PALETTES["marking"][1], np.float32) * float(rng.uniform(0.8, 1.05))
    wear = (0.05, 0.15, 0.05)
    lw = float(rng.uniform(0.12, 0.2))

    def solid(X: float, color: np.ndarray) -> None:
        cv.fill([cam.ground(X - lw / 2, X + lw / 2, z0, z1, n)], ROAD_LINE, color, tex=wear)

    def dashed(X: float, color: np.ndarray) -> None:
        period, dash = float(rng.uniform(7, 12)), float(rng.uniform(2, 4))
        starts = np.arange(z0 - float(rng.uniform(0, period)), z1, period)
        starts = starts[starts + dash > z0]
        if len(starts) == 0:
            return
        za, zb = np.maximum(starts, z0), starts + dash
        u = np.array([X - lw / 2, X + lw / 2, X + lw / 2, X - lw / 2])
        polys = [cam.px(u, np.array([a, a, b, b])) for a, b in zip(za, zb, strict=True)]
        cv.fill(polys, ROAD_LINE, color, tex=wear, even_odd=True)

    for k in range(1, lay.n_lanes):
        X = lay.road_l + k * lay.lane_w
        if lay.n_oncoming and k == lay.n_oncoming:
            if rng.random() < 0.5:
                solid(X - lw, yellow)
                solid(X + lw, yellow)
            else:
                solid(X, yellow if rng.random() < 0.5 else white)
        else:
            dashed(X, white)
    if rng.random() < 0.6:
        solid(lay.road_l + 0.3, white)
        solid(lay.road_r - 0.3, white)
    if rng.random() < 0.3:  # zebra crossing
        zc = float(rng.uniform(lay.z_near + 2, 30))
        depth, sw = float(rng.uniform(2.5, 4.0)), float(rng.uniform(0.4, 0.6))
        xs = np.arange(lay.road_l + 0.3, lay.road_r - 0.3, 2 * sw)
        polys = [
            cam.px(np.array([x, x + sw, x + sw, x]), np.array([zc, zc, zc + depth, zc + depth])) for x in xs
        ]
        cv.fill(polys, ROAD_LINE, white, tex=wear, even_odd=True)
        solid_z = zc - float(rng.uniform(1, 2))
        stop = cam.px(
            np.array([lay.road_l + 0.3, lay.road_r - 0.3, lay.road_r - 0.3, lay.road_l + 0.3]),
            np.array([solid_z, solid_z, solid_z + 0.4, solid_z + 0.4]),
        )
        if rng.random() < 0.5:
            cv.fill([stop], ROAD_LINE, white, tex=wear)


# ----------------------------------------------------------------------------- property-line structures


def _building(
    cv: _Canvas, rng: np.random.Generator, cam: _Camera, lay: _Layout, side: int, z0: float, z1: float
):
    X = lay.prop(side) + side * float(rng.uniform(0.0, 1.5))
    height = float(rng.uniform(5, 32))
    n = 10 if cam.curve else 2
    light = lay.light[side]
    color = cv.hazed(_color(rng, "facade", 16) * light, z0)
    pattern = None
    if rng.random() < 0.3:
        rows = cam.f * 0.08 / max(z0, 1.0)
        pattern = ("bricks", max(rows, 2.0), max(rows * 3, 5.0))
    tex = _TEXTURES[int(rng.integers(len(_TEXTURES)))]
    # End face toward the camera, then the facade along the road.
    depth = float(rng.uniform(8, 20))
    end = cam.px(np.array([X, X + side * depth, X + side * depth, X]), z0, np.array([0, 0, height, height]))
    cv.fill([end], BUILDING, color * 0.72, tex=tex, pattern=pattern, color2=color * 0.55)
    cv.fill(
        [cam.side(X, z0, z1, 0.0, height, n)], BUILDING, color, tex=tex, pattern=pattern, color2=color * 0.75
    )
    # Cornice strip.
    cv.fill([cam.side(X, z0, z1, height - 0.5, height, n)], BUILDING, color * 0.8, tex=(0.02, 0.02, 0.02))
    if rng.random() < 0.85:  # windows
        floor_h = float(rng.uniform(2.8, 3.6))
        col_w = float(rng.uniform(2.0, 4.0))
        win_w, win_h = col_w * float(rng.uniform(0.35, 0.7)), floor_h * float(rng.uniform(0.35, 0.6))
        shop = rng.random() < 0.4
        y_start = floor_h * (1 if shop else 0) + (floor_h - win_h) * 0.55
        ys = np.arange(y_start, height - win_h - 0.6, floor_h)
        zs = np.arange(z0 + float(rng.uniform(0.4, col_w)), z1 - win_w, col_w)
        glass = cv.hazed(_color(rng, "glass") * light, z0)
        if len(ys) and len(zs):
            zz, yy = np.meshgrid(zs, ys)
            za, ya = zz.ravel(), yy.ravel()
            zq = np.stack([za, za + win_w, za + win_w, za], 1)
            yq = np.stack([ya, ya, ya + win_h, ya + win_h], 1)
            pts = cam.px(np.full(zq.shape, X), zq, yq).reshape(-1, 4, 2)
            cv.fill(list(pts), BUILDING, glass, tex=(0.03, 0.08, 0.08), even_odd=True)
        if shop:
            shop_color = cv.hazed(_color(rng, "glass") * 0.8, z0)
            zs = np.arange(z0 + 0.5, z1 - 2.5, float(rng.uniform(3, 6)))
            polys = [cam.side(X, a, a + 2.5, 0.2, floor_h * 0.8) for a in zs]
            cv.fill(polys, BUILDING, shop_color, tex=(0.03, 0.08, 0.08), even_odd=True)


def _wall(cv: _Canvas, rng: np.random.Generator, cam: _Camera, lay: _Layout, side: int, z0: float, z1: float):
    X = lay.prop(side)
    height = float(rng.uniform(0.8, 3.0))
    n = 8 if cam.curve else 2
    palette = ("stone", "facade", "pavement")[int(rng.integers(3))]
    color = cv.hazed(_color(rng, palette) * lay.light[side], z0)
    pattern = None
    if rng.random() < 0.4:
        rows = cam.f * 0.1 / max(z0, 1.0)
        pattern = ("bricks", max(rows, 2.0), max(rows * 2.5, 4.0))
    end = cam.px(np.array([X, X + side * 0.3, X + side * 0.3, X]), z0, np.array([0, 0, height, height]))
    cv.fill([end], WALL, color * 0.7, tex=(0.04, 0.06, 0.05))
    cv.fill([cam.side(X, z0, z1, 0.0, height, n)], WALL, color, tex=(0.04, 0.08, 0.06), pattern=pattern)
    cv.fill([cam.side(X, z0, z1, height - 0.15, height, n)], WALL, color * 1.15, tex=(0.02, 0.02, 0.02))


def _fence(
    cv: _Canvas, rng: np.random.Generator, cam: _Camera, lay: _Layout, side: int, z0: float, z1: float
):
    X = lay.prop(side) - side * 0.1
    height = float(rng.uniform(0.9, 2.2))
    n = 8 if cam.curve else 2
    palette = ("metal", "wood", "paint")[int(rng.integers(3))]
    color = cv.hazed(_color(rng, palette), z0)
    period = max(1.5, float(rng.uniform(1.5, 3.5)) * cv.w / 512)  # pixels
    angle = float(rng.uniform(-0.15, 0.15))
    cv.fill(
        [cam.side(X, z0, z1, 0.0, height, n)],
        FENCE,
        color,
        tex=(0.04, 0.06, 0.04),
        pattern=("stripes", period, angle),
        color2=color * 0.45,
    )
    spacing = float(rng.uniform(2.0, 3.5))
    posts = [cam.side(X, z, z + 0.12, 0.0, height + 0.1) for z in np.arange(z0, z1, spacing)]
    cv.fill(posts, FENCE, color * 0.8, tex=(0.02, 0.02, 0.02), even_odd=True)
    cv.fill([cam.side(X, z0, z1, height - 0.1, height + 0.02, n)], FENCE, color * 0.9, tex=(0.02, 0.02, 0.02))


def _hedge(
    cv: _Canvas, rng: np.random.Generator, cam: _Camera, lay: _Layout, side: int, z0: float, z1: float
):
    X = lay.prop(side)
    height = float(rng.uniform(0.8, 2.2))
    color = cv.hazed(_color(rng, "foliage"), z0)
    n = 8 if cam.curve else 2
    cv.fill([cam.side(X, z0, z1, 0.0, height, n)], VEGETATION, color, tex=(0.08, 0.2, 0.1), vgrad=0.3)


# ----------------------------------------------------------------------------- objects


def _tree(cv: _Canvas, rng: np.random.Generator, cam: _Camera, X: float, Z: float, scale: float = 1.0):
    trunk_h = float(rng.uniform(1.6, 3.0)) * scale
    trunk_w = float(rng.uniform(0.18, 0.4)) * scale
    crown = float(rng.uniform(1.2, 2.6)) * scale
    bark = cv.hazed(_color(rng, "bark"), Z)
    trunk = np.array(
        [
            [-trunk_w / 2, 0],
            [trunk_w / 2, 0],
            [trunk_w * 0.3, trunk_h + crown],
            [-trunk_w * 0.3, trunk_h + crown],
        ]
    )
    cv.fill([cam.upright(X, Z, trunk)], VEGETATION, bark, tex=(0.05, 0.1, 0.05))
    leaf = cv.hazed(_color(rng, "foliage"), Z)
    cy = trunk_h + crown
    if rng.random() < 0.2:  # conifer
        polys = []
        for k in range(3):
            base = trunk_h * 0.6 + k * crown * 0.6
            wdt = crown * (1.0 - 0.25 * k)
            polys.append(np.array([[-wdt, base], [wdt, base], [0, base + crown * 1.2]]))
        cv.fill(
            [cam.upright(X, Z, p) for p in polys], VEGETATION, leaf * 0.8, tex=(0.08, 0.15, 0.1), vgrad=0.3
        )
        return
    if cam.f * crown / Z < 4.0:  # far away: one blob
        blob = _ellipse(0.0, cy, crown, crown * 0.9, n=12)
        cv.fill([cam.upright(X, Z, blob)], VEGETATION, leaf, tex=(0.1, 0.2, 0.08), vgrad=0.3)
        return
    blobs = []
    for _ in range(int(rng.integers(4, 9))):
        r = crown * float(rng.uniform(0.45, 0.75))
        centre = (float(rng.uniform(-0.6, 0.6)) * crown, cy + float(rng.uniform(-0.5, 0.6)) * crown)
        blobs.append(
            cam.upright(X, Z, _ellipse(centre[0], centre[1], r, r * float(rng.uniform(0.8, 1.1)), n=14))
        )
    half = len(blobs) // 2
    cv.fill(blobs[:half], VEGETATION, leaf * 0.85, tex=(0.1, 0.2, 0.08), vgrad=0.3)
    cv.fill(blobs[half:], VEGETATION, leaf * 1.05, tex=(0.1, 0.2, 0.08), vgrad=0.3)


def _bush(cv: _Canvas, rng: np.random.Generator, cam: _Camera, X: float, Z: float):
    leaf = cv.hazed(_color(rng, "foliage"), Z)
    size = float(rng.uniform(0.5, 1.4))
    blobs = [
        _ellipse(float(rng.uniform(-0.6, 0.6)) * size, size * 0.5, size * 0.55, size * 0.5, n=12)
        for _ in range(int(rng.integers(2, 5)))
    ]
    blobs = [np.maximum(b, [-10, 0]) for b in blobs]
    cv.fill([cam.upright(X, Z, b) for b in blobs], VEGETATION, leaf, tex=(0.1, 0.2, 0.08), vgrad=0.3)


def _lamp(cv: _Canvas, rng: np.random.Generator, cam: _Camera, X: float, Z: float, side: int):
    height = float(rng.uniform(5, 9))
    wdt = float(rng.uniform(0.12, 0.25))
    color = cv.hazed(_color(rng, "metal"), Z)
    cv.fill(
        [cam.upright(X, Z, _rect(-wdt / 2, 0, wdt / 2, height))],
        POLE,
        color,
        tex=(0.03, 0.03, 0.03),
        vgrad=0.2,
    )
    if rng.random() < 0.8:
        arm = float(rng.uniform(0.8, 2.2))
        a = _rect(min(0, -side * arm), height - 0.12, max(0, -side * arm), height)
        cv.fill([cam.upright(X, Z, a)], POLE, color * 0.9, tex=(0.02, 0.02, 0.02))
        head = _rect(-side * arm - 0.3, height - 0.25, -side * arm + 0.3, height - 0.05)
        cv.fill([cam.upright(X, Z, head)], POLE, color * 0.7, tex=(0.02, 0.02, 0.02))


def _sign(cv: _Canvas, rng: np.random.Generator, cam: _Camera, X: float, Z: float, with_pole: bool = True):
    size = float(rng.uniform(0.55, 0.95))
    centre = float(rng.uniform(2.0, 2.8))
    metal = cv.hazed(_color(rng, "metal"), Z)
    if with_pole:
        pw = float(rng.uniform(0.06, 0.1))
        cv.fill(
            [cam.upright(X, Z, _rect(-pw, 0, pw, centre + size * 0.3))], POLE, metal, tex=(0.03, 0.03, 0.03)
        )
    shape = int(rng.integers(5))
    r = size / 2
    if shape == 0:
        local = _ellipse(0, centre, r, r, n=20)
    elif shape == 1:
        local = np.array([[-r, centre - r * 0.8], [r, centre - r * 0.8], [0, centre + r * 0.95]])
        if rng.random() < 0.4:
            local[:, 1] = 2 * centre - local[:, 1]
    elif shape == 2:
        hw = r * float(rng.uniform(0.7, 1.4))
        local = _rect(-hw, centre - r, hw, centre + r)
    elif shape == 3:
        local = np.array([[0, centre - r], [r, centre], [0, centre + r], [-r, centre]])
    else:
        local = _ellipse(0, centre, r, r, n=8, rot=math.pi / 8)
    if rng.random() < 0.2:  # back of a sign facing the other way
        cv.fill([cam.upright(X, Z, local)], TRAFFIC_SIGN, metal * 0.9, tex=(0.03, 0.03, 0.02))
        return
    outer = cv.hazed(_color(rng, "sign", 8), Z)
    inner = cv.hazed(_color(rng, "sign", 8), Z)
    cv.fill([cam.upright(X, Z, local)], TRAFFIC_SIGN, outer, tex=(0.03, 0.03, 0.02))
    inset = (local - [0, centre]) * 0.7 + [0, centre]
    cv.fill([cam.upright(X, Z, inset)], TRAFFIC_SIGN, inner, tex=(0.03, 0.03, 0.02), label=False)
    if rng.random() < 0.6:  # a symbol
        sym = (local - [0, centre]) * 0.3 + [0, centre]
        cv.fill([cam.upright(X, Z, sym)], TRAFFIC_SIGN, inner * 0.3, tex=(0.02, 0.02, 0.02), label=False)


def _pedestrian(cv: _Canvas, rng: np.random.Generator, cam: _Camera, X: float, Z: float):
    s = float(rng.uniform(1.5, 1.95)) / 1.75
    shirt = cv.hazed(_color(rng, "cloth"), Z)
    pants = cv.hazed(_color(rng, "cloth"), Z)
    skin = cv.hazed(_color(rng, "skin"), Z)
    hair = cv.hazed(_color(rng, "bark", 20) * 0.6, Z)
    profile = rng.random() < 0.4
    body_w = (0.13 if profile else 0.2) * s
    stride = float(rng.uniform(0.0, 0.4)) * s if profile else float(rng.uniform(0.0, 0.12)) * s
    hip, shoulder = 0.9 * s, 1.42 * s
    leg_w = 0.13 * s
    tex = (0.04, 0.08, 0.04)
    polys = []
    for sign in (-1, 1):
        top = sign * (0.0 if profile else 0.085 * s)
        foot = top + sign * stride / 2
        polys.append(
            np.array(
                [[top - leg_w / 2, hip], [top + leg_w / 2, hip], [foot + leg_w / 2, 0], [foot - leg_w / 2, 0]]
            )
        )
    cv.fill([cam.upright(X, Z, p) for p in polys], PEDESTRIAN, pants, tex=tex)
    torso = np.array(
        [
            [-body_w, shoulder],
            [body_w, shoulder],
            [body_w * 0.85, hip - 0.05 * s],
            [-body_w * 0.85, hip - 0.05 * s],
        ]
    )
    long_coat = rng.random() < 0.25
    if long_coat:
        torso[2:, 1] = hip - 0.35 * s
        torso[2, 0], torso[3, 0] = body_w * 1.05, -body_w * 1.05
    arms = []
    for sign in (-1, 1):
        sx = sign * (body_w + (0.0 if profile else 0.05 * s))
        swing = float(rng.uniform(-0.15, 0.15)) * s if profile else sign * 0.04 * s
        arms.append(
            np.array(
                [
                    [sx - 0.045 * s, shoulder],
                    [sx + 0.045 * s, shoulder],
                    [sx + swing + 0.04 * s, 0.82 * s],
                    [sx + swing - 0.04 * s, 0.82 * s],
                ]
            )
        )
    cv.fill(
        [cam.upright(X, Z, a) for a in arms] + [cam.upright(X, Z, torso)],
        PEDESTRIAN,
        shirt,
        tex=tex,
        vgrad=0.15,
    )
    if cam.f * s * 1.75 / Z < 10.0:  # a few pixels tall: a head is enough
        cv.fill(
            [cam.upright(X, Z, _ellipse(0.0, 1.62 * s, 0.1 * s, 0.13 * s, n=8))], PEDESTRIAN, skin, tex=tex
        )
        return
    hands = [cam.upright(X, Z, _ellipse(a[2:, 0].mean(), 0.8 * s, 0.045 * s, 0.05 * s, n=8)) for a in arms]
    cv.fill(hands, PEDESTRIAN, skin, tex=(0.02, 0.02, 0.02))
    neck = _rect(-0.05 * s, shoulder - 0.02, 0.05 * s, shoulder + 0.08 * s)
    head = _ellipse(0.0, 1.62 * s, 0.1 * s, 0.125 * s, n=14)
    cv.fill([cam.upright(X, Z, neck), cam.upright(X, Z, head)], PEDESTRIAN, skin, tex=(0.02, 0.03, 0.02))
    cap = _ellipse(0.0, 1.67 * s, 0.105 * s, 0.085 * s, n=12)
    cv.fill([cam.upright(X, Z, cap)], PEDESTRIAN, hair, tex=(0.03, 0.03, 0.02))
    if rng.random() < 0.3:  # bag
        bx = (1 if rng.random() < 0.5 else -1) * (body_w + 0.08 * s)
        bag = _rect(bx - 0.12 * s, 0.75 * s, bx + 0.12 * s, 1.05 * s)
        cv.fill([cam.upright(X, Z, bag)], PEDESTRIAN, cv.hazed(_color(rng, "cloth"), Z), tex=tex)


def _car(cv: _Canvas, rng: np.random.Generator, cam: _Camera, X: float, Z: float, front: bool):
    kind = rng.choice(3, p=[0.55, 0.3, 0.15])  # sedan, suv, van
    w = float(rng.uniform(1.65, 2.0)) + 0.15 * (kind == 2)
    L = float(rng.uniform(3.9, 4.9)) + (0.3 if kind == 1 else 0.0) + (1.0 if kind == 2 else 0.0)
    body_top = float(rng.uniform(0.85, 1.05)) + 0.15 * (kind > 0)
    total = (float(rng.uniform(1.38, 1.52)), float(rng.uniform(1.65, 1.85)), float(rng.uniform(1.9, 2.3)))[
        int(kind)
    ]
    paint = cv.hazed(_color(rng, "paint", 10), Z)
    glass = cv.hazed(_color(rng, "glass") * 0.6, Z)
    dark = cv.hazed(_color(rng, "rubber"), Z)
    tex = (0.02, 0.03, 0.03)
    g0, g1 = (0.12, 0.28) if kind < 2 else (0.02, 0.05)  # greenhouse start (bottom, top) as fraction of L
    g2, g3 = (0.72, 0.85) if kind < 2 else (0.8, 0.9)
    if front:  # windscreen on the near end: mirror the greenhouse
        g0, g1, g2, g3 = 1 - g3, 1 - g2, 1 - g1, 1 - g0
        if kind < 2:
            g0, g1, g2, g3 = 0.2, 0.36, 0.78, 0.9
    small = cam.f * w / Z < 8.0  # a few pixels wide: skip the details
    # Shadow on the ground (image only).
    shadow = cam.flat(X, Z, _rect(-w / 2 - 0.15, -0.2, w / 2 + 0.15, L + 0.2))
    cv.fill([shadow], ROAD, paint, multiply=0.45, label=False)
    # Visible side.
    if abs(X) > w / 2:
        sx = X - w / 2 if X > 0 else X + w / 2
        cv.fill([cam.side(sx, Z, Z + L, 0.22, body_top)], CAR, paint * 0.8, tex=tex, vgrad=0.3)
        for zc in () if small else (Z + 0.18 * L, Z + 0.8 * L):
            wheel = cam.px(
                sx,
                zc + 0.33 * np.cos(np.linspace(0, 2 * np.pi, 12)),
                0.33 + 0.33 * np.sin(np.linspace(0, 2 * np.pi, 12)),
            )
            cv.fill([wheel], CAR, dark, tex=tex)
        zs = np.array([Z + g0 * L, Z + g1 * L, Z + g2 * L, Z + g3 * L])
        ys = np.array([body_top, total, total, body_top])
        cv.fill([cam.px(sx + (0.08 if X > 0 else -0.08), zs, ys)], CAR, glass, tex=tex)
        if not small:
            pillar = cam.side(sx, Z + 0.5 * (g1 + g2) * L, Z + 0.5 * (g1 + g2) * L + 0.12, body_top, total)
            cv.fill([pillar], CAR, paint * 0.7, tex=tex, label=False)
    # Roof (seen from above when the camera is higher).
    roof = cam.px(
        np.array([X - 0.42 * w, X + 0.42 * w, X + 0.42 * w, X - 0.42 * w]),
        Z + np.array([g1, g1, g2, g2]) * L,
        total,
    )
    cv.fill([roof], CAR, paint * 1.05, tex=tex)
    # Near end: wheels, body, window, lights, plate, bumper.
    wheels = [
        cam.upright(X + sign * (w / 2 - 0.25), Z + 0.6, _rect(-0.13, 0.0, 0.13, 0.42)) for sign in (-1, 1)
    ]
    cv.fill(wheels, CAR, dark, tex=tex, even_odd=True)
    cv.fill([cam.upright(X, Z, _rect(-w / 2, 0.22, w / 2, body_top))], CAR, paint, tex=tex, vgrad=0.25)
    win = cam.px(
        X + np.array([-0.46, 0.46, 0.38, -0.38]) * w,
        Z + np.array([g0, g0, g1, g1]) * L,
        np.array([body_top, body_top, total, total]),
    )
    hood = cam.px(
        X + np.array([-0.5, 0.5, 0.46, -0.46]) * w,
        Z + np.array([0.0, 0.0, g0, g0]) * L,
        np.array([body_top, body_top, body_top, body_top]),
    )
    cv.fill([hood], CAR, paint * 1.1, tex=tex)
    cv.fill([win], CAR, glass, tex=(0.02, 0.06, 0.04))
    if small:
        return
    cv.fill([cam.upright(X, Z, _rect(-w / 2, 0.18, w / 2, 0.4))], CAR, dark * 1.3, tex=tex)
    lamp = np.array([245, 240, 220], np.float32) if front else np.array([200, 20, 20], np.float32)
    lamp = cv.hazed(lamp * float(rng.uniform(0.7, 1.0)), Z)
    ly = body_top - 0.22
    lights = [
        cam.upright(X, Z, _rect(sign * w / 2 - 0.3, ly - 0.12, sign * w / 2 - 0.05, ly)) for sign in (-1, 1)
    ]
    cv.fill(lights, CAR, lamp, tex=tex, label=False, even_odd=True)
    plate = cam.upright(X, Z, _rect(-0.26, 0.42, 0.26, 0.55))
    cv.fill([plate], CAR, cv.hazed(np.array([230, 230, 225], np.float32), Z), tex=tex, label=False)


def _other(cv: _Canvas, rng: np.random.Generator, cam: _Camera, X: float, Z: float, side: int):
    """Street furniture labelled 'other': bins, benches, boxes, bollards, hydrants, cabinets."""
    kind = int(rng.integers(6))
    tex = _TEXTURES[int(rng.integers(len(_TEXTURES)))]
    if kind == 0:  # bin
        color = cv.hazed(_color(rng, ("paint", "metal")[int(rng.integers(2))]), Z)
        w, h = float(rng.uniform(0.45, 0.7)), float(rng.uniform(0.8, 1.2))
        cv.fill([cam.upright(X, Z, _rect(-w / 2, 0, w / 2, h))], OTHER, color, tex=tex, vgrad=0.2)
        cv.fill([cam.upright(X, Z, _ellipse(0, h, w * 0.55, 0.08, n=12))], OTHER, color * 0.8, tex=tex)
    elif kind == 1:  # bench, side-on along the sidewalk
        color = cv.hazed(_color(rng, ("wood", "metal")[int(rng.integers(2))]), Z)
        length = float(rng.uniform(1.4, 2.2))
        Xs = X + side * 0.2
        legs = [cam.side(Xs, z, z + 0.08, 0.0, 0.45) for z in (Z + 0.1, Z + length - 0.2)]
        cv.fill(legs, OTHER, color * 0.6, tex=tex)
        seat = cam.px(
            np.array([X - 0.25, X + 0.25, X + 0.25, X - 0.25]), np.array([Z, Z, Z + length, Z + length]), 0.45
        )
        cv.fill([seat], OTHER, color, tex=tex)
        cv.fill(
            [cam.side(Xs, Z, Z + length, 0.5, 0.9)],
            OTHER,
            color * 0.9,
            tex=tex,
            pattern=("stripes", 2.0, 1.57),
        )
    elif kind == 2:  # stacked boxes / crates (plain, cube-like)
        color = cv.hazed(_color(rng, "wood"), Z)
        y = 0.0
        for _ in range(int(rng.integers(1, 4))):
            s = float(rng.uniform(0.4, 0.8))
            off = float(rng.uniform(-0.1, 0.1))
            top = cam.px(
                np.array([X + off - s / 2, X + off + s / 2, X + off + s / 2, X + off - s / 2]),
                np.array([Z, Z, Z + s, Z + s]),
                y + s,
            )
            cv.fill([top], OTHER, color * 1.15, tex=tex)
            cv.fill([cam.upright(X + off, Z, _rect(-s / 2, y, s / 2, y + s))], OTHER, color, tex=tex)
            y += s
    elif kind == 3:  # bollards along the curb
        color = cv.hazed(_color(rng, ("metal", "paint", "stone")[int(rng.integers(3))]), Z)
        h = float(rng.uniform(0.6, 1.0))
        polys = [
            cam.upright(X, Z + k * 1.5, _rect(-0.08, 0, 0.08, h)) for k in range(int(rng.integers(2, 6)))
        ]
        cv.fill(polys[::-1], OTHER, color, tex=tex)
    elif kind == 4:  # hydrant
        color = cv.hazed(_color(rng, ("paint", "sign")[int(rng.integers(2))]), Z)
        body = [_rect(-0.12, 0, 0.12, 0.6), _ellipse(0, 0.6, 0.13, 0.1, n=10), _rect(-0.2, 0.35, 0.2, 0.45)]
        cv.fill([cam.upright(X, Z, b) for b in body], OTHER, color, tex=tex, vgrad=0.2)
    else:  # electrical cabinet / mailbox
        color = cv.hazed(_color(rng, ("metal", "paint")[int(rng.integers(2))]), Z)
        w, h, d = float(rng.uniform(0.5, 1.2)), float(rng.uniform(0.9, 1.6)), float(rng.uniform(0.3, 0.6))
        sx = X - w / 2 if X > 0 else X + w / 2
        cv.fill([cam.side(sx, Z, Z + d, 0.0, h)], OTHER, color * 0.75, tex=tex)
        top = cam.px(
            np.array([X - w / 2, X + w / 2, X + w / 2, X - w / 2]), np.array([Z, Z, Z + d, Z + d]), h
        )
        cv.fill([top], OTHER, color * 1.1, tex=tex)
        cv.fill([cam.upright(X, Z, _rect(-w / 2, 0, w / 2, h))], OTHER, color, tex=tex, vgrad=0.2)


# ----------------------------------------------------------------------------- anomalies


def _anomaly_shape(rng: np.random.Generator, kind: str) -> tuple[list[tuple[list[np.ndarray], bool]], bool]:
    """Unit-size local polygons of an anomaly.

    Returns:
        (parts, lying): parts are (polygons, is_hole_group) lists painted in order, each polygon
        in local metres (u, v) for upright shapes or (u, depth) for shapes lying on the road.
    """
    if kind == "rock":
        n = 30
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        r = np.ones(n)
        for k in range(2, 6):
            r += float(rng.uniform(0.04, 0.18)) * np.cos(k * t + float(rng.uniform(0, 2 * np.pi)))
        r *= np.exp(rng.normal(0, 0.04, n))
        aspect = float(rng.uniform(0.5, 1.0))
        pts = np.stack([r * np.cos(t), aspect * r * np.sin(t)], 1)
        pts[:, 1] -= pts[:, 1].min() + 0.12 * aspect
        pts[:, 1] = np.maximum(pts[:, 1], 0.0)
        return [([pts], False)], False
    if kind == "debris":
        k = int(rng.integers(5, 12))
        t = np.linspace(0, 2 * np.pi, 2 * k, endpoint=False) + float(rng.uniform(0, np.pi))
        inner = float(rng.uniform(0.25, 0.6))
        r = np.where(np.arange(2 * k) % 2 == 0, 1.0, inner) * np.exp(rng.normal(0, 0.15, 2 * k))
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
        if rng.random() < 0.6:
            return [([pts], False)], True  # lying flat on the road
        pts[:, 1] -= pts[:, 1].min()
        return [([pts], False)], False
    if kind == "tyre":
        inner = float(rng.uniform(0.4, 0.65))
        if rng.random() < 0.5:  # standing
            outer = _ellipse(0, 1.0, 1.0, 1.0, n=28)
            hole = _ellipse(0, 1.0, inner, inner, n=20)
            return [([outer, hole], True)], False
        outer = _ellipse(0, 0, 1.0, 1.0, n=28)
        hole = _ellipse(0, 0, inner, inner, n=20)
        return [([outer, hole], True)], True
    if kind == "animal":
        body_h = float(rng.uniform(0.3, 0.55))
        leg = float(rng.uniform(0.5, 1.0))
        d = 1 if rng.random() < 0.5 else -1
        parts = []
        legs = []
        for u in (-0.75, -0.55, 0.55, 0.75):
            lu = u + float(rng.uniform(-0.08, 0.08))
            legs.append(
                np.array(
                    [
                        [lu - 0.07, leg + body_h * 0.3],
                        [lu + 0.07, leg + body_h * 0.3],
                        [lu + 0.05, 0],
                        [lu - 0.05, 0],
                    ]
                )
            )
        parts.append((legs, False))
        body = _ellipse(0, leg + body_h * 0.6, 1.0, body_h, n=24)
        neck_len = float(rng.uniform(0.3, 0.8))
        neck = np.array(
            [
                [d * 0.7, leg + body_h * 0.7],
                [d * 0.95, leg + body_h * 0.4],
                [d * 1.2, leg + body_h + neck_len],
                [d * 0.95, leg + body_h + neck_len + 0.1],
            ]
        )
        head = _ellipse(d * 1.25, leg + body_h + neck_len + 0.05, 0.3, 0.17, n=14, rot=-d * 0.3)
        tail = np.array(
            [
                [-d * 0.95, leg + body_h * 0.8],
                [-d * 0.98, leg + body_h * 0.65],
                [-d * 1.3, leg + body_h * 0.1],
                [-d * 1.25, leg + body_h * 0.05],
            ]
        )
        ear = np.array(
            [
                [d * 1.1, leg + body_h + neck_len + 0.15],
                [d * 1.0, leg + body_h + neck_len + 0.4],
                [d * 1.2, leg + body_h + neck_len + 0.18],
            ]
        )
        parts.append(([body, neck, head, tail, ear], False))
        return parts, False
    # crate: handled by the caller (faces need the camera), unit cube here
    return [], False


def _anomaly(
    cv: _Canvas, rng: np.random.Generator, cam: _Camera, lay: _Layout
) -> tuple[float, tuple[float, float], Callable[[], None]]:
    """Place one anomaly.

    Returns:
        (depth Z, horizontal pixel span, painter).
    """
    kind = ANOMALY_KINDS[int(rng.integers(len(ANOMALY_KINDS)))]
    on_road = rng.random() < 0.8
    target = math.exp(float(rng.uniform(math.log(0.001), math.log(0.05)))) * cv.h * cv.w
    if on_road:
        x_lo, x_hi = lay.road_l + 0.6, lay.road_r - 0.6
    else:
        side = -1 if rng.random() < 0.5 else 1
        x_lo, x_hi = sorted((lay.curb(side), lay.walk(side)))
        x_lo, x_hi = x_lo + 0.3, max(x_hi - 0.3, x_lo + 0.31)
    X = 0.5 * (x_lo + x_hi)  # provisional: the size is fixed first, then X is drawn in view
    z_lo, z_hi = lay.z_near * 1.15, min(45.0, lay.z_far * 0.5)
    Z = z_lo + (z_hi - z_lo) * float(rng.random()) ** 1.5  # nearer more often
    # Colours and textures from the same palettes and textures the known objects use.
    names = rng.choice(len(_ANOMALY_PALETTE_NAMES), size=3, p=_ANOMALY_PALETTE_P)
    colors = [_color(rng, _ANOMALY_PALETTE_NAMES[int(k)]) for k in names]
    tex = _TEXTURES[int(rng.integers(len(_TEXTURES)))]
    pat_kind = int(rng.choice(4, p=[0.4, 0.2, 0.2, 0.2]))
    period = max(2.0, float(rng.uniform(2.0, 6.0)) * cv.w / 512)  # pixels
    angle = float(rng.uniform(0, np.pi))
    pattern = [
        None,
        ("blotch", float(rng.uniform(0.0, 0.8))),
        ("stripes", period, angle),
        ("checker", period, angle),
    ][pat_kind]
    if kind == "crate":
        dims = rng.uniform(0.6, 1.6, 3)
        pattern = ("checker", period, angle) if rng.random() < 0.5 else ("stripes", period, angle)

        def build(scale: float, Zc: float) -> list[tuple[list[Poly], float, bool]]:
            w, h, d = dims * scale
            faces = []
            if abs(X) > w / 2:
                sx = X - w / 2 if X > 0 else X + w / 2
                faces.append(([cam.side(sx, Zc, Zc + d, 0.0, h)], 0.75, False))
            top = cam.px(
                np.array([X - w / 2, X + w / 2, X + w / 2, X - w / 2]), np.array([Zc, Zc, Zc + d, Zc + d]), h
            )
            faces.append(([top], 1.15, False))
            faces.append(([cam.upright(X, Zc, _rect(-w / 2, 0, w / 2, h))], 1.0, False))
            return faces
    else:
        parts, lying = _anomaly_shape(rng, kind)

        def build(scale: float, Zc: float) -> list[tuple[list[Poly], float, bool]]:
            out = []
            for k, (polys, holes) in enumerate(parts):
                proj = [
                    cam.flat(X, Zc, p * scale, 0.02) if lying else cam.upright(X, Zc, p * scale)
                    for p in polys
                ]
                out.append((proj, 1.0 - 0.15 * k, holes))
            return out

    def area(scale: float, Zc: float) -> float:
        total = 0.0
        for polys, _, _ in build(scale, Zc):
            if kind == "tyre":  # outer ring minus the hole
                total += _poly_area(polys[0]) - sum(_poly_area(p) for p in polys[1:])
            else:
                total += sum(_poly_area(p) for p in polys)
        return max(total, 1e-6)

    scale = math.sqrt(target / area(1.0, Z))
    lo, hi = 0.2, 2.0  # scale of the unit shape (about 2 units across), in metres
    if scale > hi or scale < lo:
        clipped = min(max(scale, lo), hi)
        Z = min(max(Z * clipped / scale, z_lo), z_hi)
        scale = math.sqrt(target / area(1.0, Z))
    scale *= math.sqrt(target / area(scale, Z))
    Zf = Z
    # Lateral position: inside the chosen surface and inside the middle 80 % of the view.
    bend = cam.curve * Zf * Zf
    v_lo, v_hi = ((np.array([0.1, 0.9]) * cv.w - cam.xv) * Zf / cam.f - bend).tolist()
    lo, hi = max(x_lo, v_lo), min(x_hi, v_hi)
    if lo >= hi:  # the surface is out of view at this depth: use the visible part of the road
        lo, hi = max(lay.road_l + 0.6, v_lo), min(lay.road_r - 0.6, v_hi)
    X = float(rng.uniform(lo, hi)) if lo < hi else 0.5 * (v_lo + v_hi)
    xs = np.concatenate([p[:, 0] for polys, _, _ in build(scale, Zf) for p in polys])
    x_span = (float(xs.min()), float(xs.max()))

    def paint() -> None:
        if kind != "crate" and rng.random() < 0.5:  # contact shadow
            shadow = cam.flat(X, Zf, _ellipse(0, 0, scale * 0.9, scale * 0.35, n=16))
            cv.fill([shadow], ROAD, colors[0], multiply=0.6, label=False)
        for k, (polys, shade, holes) in enumerate(build(scale, Zf)):
            color = cv.hazed(colors[min(k, len(colors) - 1)] * shade, Zf)
            c2 = cv.hazed(colors[(k + 1) % len(colors)], Zf)
            cv.fill(polys, ANOMALY, color, tex=tex, pattern=pattern, color2=c2, vgrad=0.2, even_odd=holes)

    return Zf, x_span, paint


# ----------------------------------------------------------------------------- the scene


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
    _check_split(split)
    _check_size(height, width)
    for name, value in (("seed", seed), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    rng = np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])
    h, w = int(height), int(width)
    curve = float(rng.normal(0, 0.0012)) if rng.random() < 0.6 else 0.0
    cam = _Camera(
        f=float(rng.uniform(0.55, 0.85)) * min(w, 2 * h),  # ~65..85 deg across a 2:1 frame
        yh=float(rng.uniform(0.34, 0.5)) * h,
        xv=float(rng.uniform(0.42, 0.58)) * w,
        hc=float(rng.uniform(1.3, 1.8)),
        curve=curve,
    )
    lay = _make_layout(rng, h, w, cam)
    haze_dist = float(rng.uniform(120, 500))
    cv = _Canvas(rng, h, w, np.zeros(3, np.float32), haze_dist)
    cv.haze_color = _draw_sky(cv, rng, cam)
    _draw_skyline(cv, rng, cam, lay)
    _draw_ground(cv, rng, cam, lay)
    _draw_lines(cv, rng, cam, lay)

    behind: list[tuple[float, Callable[[], None]]] = []  # beyond the property lines
    along: list[tuple[float, Callable[[], None]]] = []  # on the property lines
    objects: list[tuple[float, Callable[[], None]]] = []  # sidewalks and road

    def later(bucket: list, Z: float, fn: Callable, *args) -> None:
        bucket.append((Z, lambda: fn(cv, rng, cam, *args)))

    # Test scenes: anomalies first, so that nothing is put right in front of them.
    keep_out: list[tuple[float, float, float]] = []
    if split == "test":
        for _ in range(int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))):
            za, (xa0, xa1), paint = _anomaly(cv, rng, cam, lay)
            objects.append((za, paint))
            keep_out.append((za, xa0 - 2.0, xa1 + 2.0))

    def place(Z: float, X: float, half: float, depth: float, fn: Callable, *args) -> None:
        """Queue a road/sidewalk object (half width, depth in metres) unless it would hide an anomaly."""
        if keep_out:
            xs = cam.px(
                np.array([X - half, X + half, X - half, X + half]), np.array([Z, Z, Z + depth, Z + depth])
            )
            x0, x1 = float(xs[:, 0].min()), float(xs[:, 0].max())
            if any(Z < za and x0 < xa1 and x1 > xa0 for za, xa0, xa1 in keep_out):
                return
        later(objects, Z, fn, *args)

    z_max = lay.z_far * 0.8
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
            if seg == 0:
                later(along, z, _building, lay, side, z, z1)
            elif seg == 1:
                later(along, z, _wall, lay, side, z, z1)
            elif seg == 2:
                later(along, z, _fence, lay, side, z, z1)
            elif seg == 3:
                later(along, z, _hedge, lay, side, z, z1)
            if seg != 0 and rng.random() < 0.7:  # trees behind a gap
                for zt in np.arange(z + float(rng.uniform(0, 4)), min(z1, 90.0), float(rng.uniform(4, 10))):
                    Xt = lay.prop(side) + side * float(rng.uniform(1.5, 8))
                    later(behind, float(zt), _tree, Xt, float(zt), float(rng.uniform(1.0, 1.8)))
            z = z1 + (float(rng.uniform(0, 6)) if rng.random() < 0.3 else 0.0)

    for side in (-1, 1):
        curb, walk = lay.curb(side), lay.walk(side)
        if rng.random() < 0.75:  # street lamps
            spacing = float(rng.uniform(15, 35))
            for zl in np.arange(float(rng.uniform(2, spacing)), z_max * 0.6, spacing):
                place(float(zl), curb + side * 0.4, 0.2, 0.2, _lamp, curb + side * 0.4, float(zl), side)
        if rng.random() < 0.5 and abs(walk - curb) > 2.0:  # street trees
            spacing = float(rng.uniform(6, 15))
            for zt in np.arange(float(rng.uniform(2, spacing)), z_max * 0.6, spacing):
                place(float(zt), curb + side * 1.1, 2.5, 2.5, _tree, curb + side * 1.1, float(zt))
        elif rng.random() < 0.3:  # bushes / planters at the outer sidewalk edge
            for _ in range(int(rng.integers(1, 5))):
                zb = float(rng.uniform(lay.z_near, 50))
                place(zb, walk - side * 0.5, 1.2, 1.2, _bush, walk - side * 0.5, zb)
    if rng.random() < 0.9:
        for _ in range(int(rng.integers(1, 5))):
            side = -1 if rng.random() < 0.5 else 1
            zs = float(rng.uniform(lay.z_near * 1.1, 45))
            xs = lay.curb(side) + side * float(rng.uniform(0.3, 0.8))
            place(zs, xs, 0.5, 0.1, _sign, xs, zs)
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
        place(Zp, Xp, 0.35, 0.3, _pedestrian, Xp, Zp)
    for lane in range(lay.n_lanes):
        Xc = lay.road_l + (lane + 0.5) * lay.lane_w + float(rng.uniform(-0.3, 0.3))
        oncoming = lane < lay.n_oncoming
        zc = float(rng.uniform(lay.z_near + 2, 25)) + (4.0 if abs(Xc) < lay.lane_w / 2 else 0.0)
        for _ in range(int(rng.poisson(1.0))):
            if zc > 90:
                break
            place(zc, Xc, 1.1, 6.0, _car, Xc, zc, oncoming)
            zc += float(rng.uniform(8, 30))
    for side in (-1, 1):  # parked cars along the curbs
        if rng.random() < 0.45:
            zc = float(rng.uniform(lay.z_near * 0.8, 20))
            for _ in range(int(rng.integers(1, 5))):
                xp = lay.curb(side) - side * 1.1
                place(zc, xp, 1.1, 6.0, _car, xp, zc, rng.random() < 0.2)
                zc += float(rng.uniform(5.5, 12))
    for _ in range(int(rng.integers(0, 5))):
        side = -1 if rng.random() < 0.5 else 1
        a, b = sorted((lay.curb(side), lay.walk(side)))
        Xo = float(rng.uniform(a + 0.3, b - 0.3))
        Zo = float(rng.uniform(lay.z_near, 40))
        place(Zo, Xo, 1.0, 2.2, _other, Xo, Zo, side)

    for bucket in (behind, along, objects):
        for _, paint in sorted(bucket, key=lambda item: -item[0]):
            paint()

    return _finish(cv, rng), cv.label


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


# ----------------------------------------------------------------------------- dataset on disk


def _validate_counts(n_train: int, n_val: int, n_test: int, seed: int) -> None:
    for name, value, low in (("n_train", n_train, 1), ("n_val", n_val, 0), ("n_test", n_test, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")


def _params(n_train: int, n_val: int, n_test: int, height: int, width: int, seed: int) -> dict:
    return {
        "generator": "lib.synthetic",
        "version": GENERATOR_VERSION,
        "n_train": int(n_train),
        "n_val": int(n_val),
        "n_test": int(n_test),
        "height": int(height),
        "width": int(width),
        "seed": int(seed),
    }


def _read_marker(root: Path) -> dict | None:
    try:
        data = json.loads((root / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _records(split: str, n: int, height: int, width: int) -> list[dict]:
    where = STREETHAZARDS_SPLITS[split]
    image_dir, annotation_dir = where.town_image_dir, where.town_annotation_dir
    return [
        {
            "dbName": "StreetHazards",
            "width": int(width),
            "height": int(height),
            "fpath_img": f"{image_dir}/{i:06d}.png",
            "fpath_segm": f"{annotation_dir}/{i:06d}.png",
        }
        for i in range(n)
    ]


def dataset_is_complete(
    root: str | Path,
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    height: int | None = None,
    width: int | None = None,
    seed: int | None = None,
) -> bool:
    """Whether ``root`` holds a finished synthetic dataset with these parameters.

    Args:
        root: dataset folder.
        n_train: expected number of training images.
        n_val: expected number of validation images.
        n_test: expected number of test images.
        height: expected image height, or None to accept any.
        width: expected image width, or None to accept any.
        seed: expected generator seed, or None to accept any.

    Returns:
        True when ``synthetic.json`` records a finished run of this generator version with these
        parameters and every index file and PNG it lists exists.
    """
    root = Path(root)
    marker = _read_marker(root)
    if not marker or not marker.get("complete"):
        return False
    params = marker.get("params", {})
    expected = {
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "height": height,
        "width": width,
        "seed": seed,
    }
    if params.get("version") != GENERATOR_VERSION:
        return False
    if any(value is not None and params.get(key) != value for key, value in expected.items()):
        return False
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        try:
            records = json.loads((root / STREETHAZARDS_SPLITS[split].odgt).read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(records, list) or len(records) != n:
            return False
        for r in records:
            if not (root / r["fpath_img"]).is_file() or not (root / r["fpath_segm"]).is_file():
                return False
    return True


def _write_one(task: tuple[str, str, str, int, int, int, int]) -> str:
    """Render one scene and write its image and annotation PNGs (worker entry point).

    ``task`` is (image folder, annotation folder, split, index, seed, height, width): the parent
    resolves the folders.
    """
    image_dir, annotation_dir, split, index, seed, height, width = task
    image, label = render_scene(seed=seed, split=split, index=index, height=height, width=width)
    name = f"{index:06d}.png"
    for path, array in (
        (Path(image_dir) / name, np.ascontiguousarray(image[:, :, ::-1])),
        (Path(annotation_dir) / name, label + np.uint8(1)),
    ):
        if not cv2.imwrite(str(path), array):
            raise OSError(f"could not write {path}")
    return split


def _init_worker() -> None:
    cv2.setNumThreads(1)


class _Progress:
    """tqdm when importable, else a line every ~10 %."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled = total, 0, enabled and total > 0
        self.start = time.perf_counter()
        self.bar = None
        self.next_print = 0
        if self.enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc="synthetic data", unit="img")
            except ImportError:
                self.bar = None

    def update(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
        elif self.done >= self.next_print or self.done == self.total:
            elapsed = time.perf_counter() - self.start
            print(
                f"synthetic data: {self.done}/{self.total} images ({elapsed:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
            self.next_print = self.done + max(1, self.total // 10)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def generate_streethazards(
    root: str | Path,
    *,
    n_train: int = 200,
    n_val: int = 40,
    n_test: int = 60,
    height: int = 256,
    width: int = 512,
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write a synthetic dataset in the StreetHazards layout (skipped when already complete).

    Args:
        root: output folder (created if needed).
        n_train: training images (>= 1), written to ``train/images/training/t1-3``.
        n_val: validation images (>= 0), written to ``train/images/validation/t4``.
        n_test: test images with anomalies (>= 0), written to ``test/images/test/t5``.
        height: image height in pixels (>= 32).
        width: image width in pixels (>= 32).
        seed: generator seed; image i of a split depends only on (seed, split, i).
        workers: processes used to render; None = min(2, CPU count). Small datasets are
            rendered in this process.
        overwrite: regenerate even if ``root`` already holds a dataset (replaces its split
            folders and index files).
        progress: show a progress bar (tqdm when installed) on stderr.

    Returns:
        Summary dict: ``root``, ``counts`` (images per split), ``size`` ([height, width]),
        ``seed``, ``seconds`` and ``generated`` (False when an existing dataset was kept).

    Raises:
        ValueError: invalid arguments, or ``root`` holds a dataset made with other parameters
            (or not made by this generator) and ``overwrite`` is False.
    """
    _validate_counts(n_train, n_val, n_test, seed)
    _check_size(height, width)
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1 or None, got {workers!r}")
    root = Path(root)
    start = time.perf_counter()
    params = _params(n_train, n_val, n_test, height, width, seed)
    counts = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}

    def summary(generated: bool) -> dict:
        return {
            "root": str(root),
            "counts": counts,
            "size": [int(height), int(width)],
            "seed": int(seed),
            "seconds": round(time.perf_counter() - start, 3),
            "generated": generated,
        }

    splits = STREETHAZARDS_SPLITS
    written = [(s.town_image_dir, s.town_annotation_dir, s.odgt) for s in splits.values()]
    marker = _read_marker(root)
    if not overwrite:
        if marker is not None:
            old = marker.get("params", {})
            if old != params:
                diffs = ", ".join(
                    f"{k}={old.get(k)!r} (asked {v!r})" for k, v in params.items() if old.get(k) != v
                )
                raise ValueError(
                    f"{root} already holds a synthetic dataset generated with other parameters: {diffs}; "
                    "pass overwrite=True (CLI: --overwrite) to regenerate it there, or choose another root"
                )
            if dataset_is_complete(
                root, n_train=n_train, n_val=n_val, n_test=n_test, height=height, width=width, seed=seed
            ):
                return summary(False)
        elif any((root / p).exists() for paths in written for p in paths):
            raise ValueError(
                f"{root} already holds StreetHazards-layout files that this generator did not write "
                f"(no {MARKER_FILE}); pass overwrite=True (CLI: --overwrite) to replace them, or choose another root"
            )

    # Fresh start: remove only what this generator writes.
    for image_dir, annotation_dir, odgt in written:
        for d in (image_dir, annotation_dir):
            if (root / d).is_dir():
                shutil.rmtree(root / d)
            (root / d).mkdir(parents=True, exist_ok=True)
        if (root / odgt).exists():
            (root / odgt).unlink()
    root.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(root / MARKER_FILE, json.dumps({"params": params, "complete": False}, indent=2) + "\n")

    tasks = [
        (
            str(root / splits[split].town_image_dir),
            str(root / splits[split].town_annotation_dir),
            split,
            i,
            int(seed),
            int(height),
            int(width),
        )
        for split, n in counts.items()
        for i in range(n)
    ]
    bar = _Progress(len(tasks), progress)
    try:
        if workers > 1 and len(tasks) >= _MIN_IMAGES_FOR_POOL:
            # spawn: safe even when the parent has started threads (torch, OpenCV).
            with mp.get_context("spawn").Pool(int(workers), initializer=_init_worker) as pool:
                for _ in pool.imap_unordered(_write_one, tasks, chunksize=4):
                    bar.update()
        else:
            for task in tasks:
                _write_one(task)
                bar.update()
    finally:
        bar.close()

    for split, n in counts.items():
        odgt = root / splits[split].odgt
        _write_text_atomic(odgt, json.dumps(_records(split, n, height, width)) + "\n")
    _write_text_atomic(root / MARKER_FILE, json.dumps({"params": params, "complete": True}, indent=2) + "\n")
    return summary(True)


def label_to_color(label: np.ndarray) -> np.ndarray:
    """Colour-code a train-id label with ``STREETHAZARDS_PALETTE`` (RGB uint8; ids > 13 black)."""
    from lib.classes import STREETHAZARDS_PALETTE

    lut = np.zeros((256, 3), np.uint8)
    lut[: len(STREETHAZARDS_PALETTE)] = np.asarray(STREETHAZARDS_PALETTE, np.uint8)
    return lut[label]
