"""The painters of the known classes: sky, skyline, ground and lane markings; the buildings, walls,
fences and hedges along the property lines; trees, bushes, street lamps, traffic signs,
pedestrians, cars and street furniture ("other").

Each takes the canvas, the scene's random generator and the camera (and the street layout or a
position in metres) and paints image and label together. Lighting, colours, textures and layout
change per image; the colours come from the palettes of `lib.synthetic.canvas`.
"""

from __future__ import annotations

import math

import numpy as np

from lib.synthetic.canvas import (
    _PALETTES,
    _TEXTURES,
    BUILDING,
    CAR,
    FENCE,
    OTHER,
    PEDESTRIAN,
    POLE,
    ROAD,
    ROAD_LINE,
    SIDEWALK,
    TRAFFIC_SIGN,
    UNLABELED,
    VEGETATION,
    WALL,
    _Camera,
    _Canvas,
    _color,
    _ellipse,
    _Layout,
    _rect,
)

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
    base_cls, palette = [(cv.grass, "grass"), (SIDEWALK, "pavement"), (UNLABELED, "stone")][int(kind)]
    base_color = cv.hazed(_color(rng, palette), 25.0)
    ground = cam.below_horizon(cv.w, cv.h)
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
                cv.grass if green else SIDEWALK,
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


def _pedestrian(
    cv: _Canvas,
    rng: np.random.Generator,
    cam: _Camera,
    X: float,
    Z: float,
    *,
    label: int = PEDESTRIAN,
    lift: float = 0.0,
):
    """A person standing or walking; `label` and `lift` (metres above the ground) paint a rider."""

    def upright(X: float, Z: float, local: np.ndarray) -> np.ndarray:
        return cam.upright(X, Z, local + (0.0, lift) if lift else local)

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
    cv.fill([upright(X, Z, p) for p in polys], label, pants, tex=tex)
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
        [upright(X, Z, a) for a in arms] + [upright(X, Z, torso)],
        label,
        shirt,
        tex=tex,
        vgrad=0.15,
    )
    if cam.f * s * 1.75 / Z < 10.0:  # a few pixels tall: a head is enough
        cv.fill([upright(X, Z, _ellipse(0.0, 1.62 * s, 0.1 * s, 0.13 * s, n=8))], label, skin, tex=tex)
        return
    hands = [upright(X, Z, _ellipse(a[2:, 0].mean(), 0.8 * s, 0.045 * s, 0.05 * s, n=8)) for a in arms]
    cv.fill(hands, label, skin, tex=(0.02, 0.02, 0.02))
    neck = _rect(-0.05 * s, shoulder - 0.02, 0.05 * s, shoulder + 0.08 * s)
    head = _ellipse(0.0, 1.62 * s, 0.1 * s, 0.125 * s, n=14)
    cv.fill([upright(X, Z, neck), upright(X, Z, head)], label, skin, tex=(0.02, 0.03, 0.02))
    cap = _ellipse(0.0, 1.67 * s, 0.105 * s, 0.085 * s, n=12)
    cv.fill([upright(X, Z, cap)], label, hair, tex=(0.03, 0.03, 0.02))
    if rng.random() < 0.3:  # bag
        bx = (1 if rng.random() < 0.5 else -1) * (body_w + 0.08 * s)
        bag = _rect(bx - 0.12 * s, 0.75 * s, bx + 0.12 * s, 1.05 * s)
        cv.fill([upright(X, Z, bag)], label, cv.hazed(_color(rng, "cloth"), Z), tex=tex)


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
