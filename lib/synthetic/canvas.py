"""What every painter shares: class ids, colour palettes, the pinhole camera, the canvas that paints
image and label with one mask, and the street layout (lanes, curbs, sidewalks, property lines).

A pinhole camera on a car looks down a (possibly curving) road. Every object is a set of polygons
projected through that camera and painted into the image *and* (with the same mask) into the
label, so the two agree pixel for pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from lib.classes import ANOMALY_ID, class_id

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
#: Classes that Cityscapes (and BDD100K) have and StreetHazards has not; the scenes of the Cityscapes
#: vocabulary (``render_layers(classes="cityscapes")``) draw them too, labelled with the ids after
#: the anomaly's (14..21). Grass is terrain there (vegetation keeps trees, bushes and hedges).
EXTRA_CLASSES: tuple[str, ...] = (
    "traffic light", "terrain", "rider", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
TRAFFIC_LIGHT, TERRAIN, RIDER, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(
    ANOMALY_ID + 1, ANOMALY_ID + 1 + len(EXTRA_CLASSES)
)

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

    def below_horizon(self, w: int, h: int) -> Poly:
        """The whole (w, h) frame below the horizon, a little past its edges: the base ground."""
        return np.array([[-1, self.yh + 0.5], [w + 1, self.yh + 0.5], [w + 1, h + 1], [-1, h + 1]])

    def upright(self, X: float, Z: float, local: np.ndarray) -> Poly:
        """Flat shape facing the camera at depth Z; local (u lateral, v height) in metres."""
        return self.px(X + local[:, 0], Z, local[:, 1])

    def flat(self, X: float, Z: float, local: np.ndarray, height: float = 0.0) -> Poly:
        """Shape lying on the ground; local (u lateral, d depth offset) in metres."""
        return self.px(X + local[:, 0], Z + local[:, 1], height)


class _Canvas:
    """Float RGB image + train-id label painted with the same polygon masks."""

    def __init__(
        self,
        rng: np.random.Generator,
        h: int,
        w: int,
        haze: np.ndarray,
        haze_dist: float,
        *,
        grass: int = VEGETATION,
    ):
        self.rng, self.h, self.w = rng, h, w
        self.grass = grass  # the label of grass: vegetation (StreetHazards) or terrain (Cityscapes)
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

    def mask(
        self, polys: Sequence[Poly], *, even_odd: bool = False
    ) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
        """Rasterise polygons (their union, or even-odd) inside the canvas.

        Args:
            polys: (N, 2) float pixel polygons; those with fewer than 3 points are skipped.
            even_odd: one even-odd pass (inner rings become holes) instead of the union.

        Returns:
            (mask, (x0, y0, x1, y1)): a bool mask of the clipped bounding box [y0:y1, x0:x1],
            or None when nothing of the polygons falls inside the canvas.
        """
        polys = [p for p in polys if len(p) >= 3]
        if not polys:
            return None
        allp = np.concatenate(polys) if len(polys) > 1 else polys[0]
        lo, hi = allp.min(axis=0), allp.max(axis=0)
        x0, y0 = max(int(math.floor(lo[0])), 0), max(int(math.floor(lo[1])), 0)
        x1, y1 = min(int(math.ceil(hi[0])) + 1, self.w), min(int(math.ceil(hi[1])) + 1, self.h)
        if x0 >= x1 or y0 >= y1:
            return None
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
        return mask.view(bool), (x0, y0, x1, y1)

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
        box = self.mask(polys, even_odd=even_odd)
        if box is None:
            return
        m, (x0, y0, x1, y1) = box
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
