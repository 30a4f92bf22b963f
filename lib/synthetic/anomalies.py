"""The anomalies of the test split: rocks, debris stars, tyres, animal silhouettes and patterned
crates, 0.1 % .. 5 % of the image, mostly on the road.

Their colours and textures come from the same palettes the known objects use (weighted by how much
of a scene each covers), so colour alone does not give them away.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from lib.synthetic.canvas import (
    _ANOMALY_PALETTE_NAMES,
    _ANOMALY_PALETTE_P,
    _TEXTURES,
    ANOMALY,
    ROAD,
    Poly,
    _Camera,
    _Canvas,
    _color,
    _ellipse,
    _Layout,
    _poly_area,
    _rect,
)

#: Anomaly kinds drawn in the test split.
ANOMALY_KINDS: tuple[str, ...] = ("rock", "debris", "tyre", "animal", "crate")


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
