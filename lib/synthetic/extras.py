"""The objects that only scenes of the Cityscapes vocabulary draw: traffic lights, riders on bicycles
and motorcycles, trucks, buses and trams (Cityscapes' "train"). With grass labelled terrain
(`lib.synthetic.canvas.EXTRA_CLASSES`), they give the Cityscapes and BDD100K stand-ins pixels of all
19 of those datasets' classes.

`queue_extras` decides, per scene, which of them appear and where; the painters below draw one each,
in image and label together, like those of `lib.synthetic.painters`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lib.synthetic.canvas import (
    BICYCLE,
    BUS,
    MOTORCYCLE,
    POLE,
    RIDER,
    TRAFFIC_LIGHT,
    TRAIN,
    TRUCK,
    _Camera,
    _Canvas,
    _color,
    _ellipse,
    _Layout,
    _rect,
)
from lib.synthetic.painters import _pedestrian

if TYPE_CHECKING:  # the queue lives in scene.py, which imports this module
    from lib.synthetic.scene import _Queue

#: Chance that a scene has at least one of each (a few per cent of images at the least, most far
#: more): every class is then in a good share of any split of a few dozen images.
CHANCES: dict[str, float] = {
    "traffic light": 0.55,
    "bicycle": 0.4,
    "motorcycle": 0.3,
    "truck": 0.35,
    "bus": 0.3,
    "train": 0.2,
}


def queue_extras(q: _Queue, rng: np.random.Generator, lay: _Layout) -> None:
    """Queue this scene's traffic lights, two-wheelers with riders and large vehicles."""
    if rng.random() < CHANCES["traffic light"]:
        for _ in range(int(rng.integers(1, 3))):
            side = -1 if rng.random() < 0.5 else 1
            Z = float(rng.uniform(lay.z_near * 1.5, 40))
            X = lay.curb(side) + side * float(rng.uniform(0.3, 0.7))
            q.place(Z, X, 0.4, 0.2, _traffic_light, X, Z, side)
    for name, motor in (("bicycle", False), ("motorcycle", True)):
        if rng.random() < CHANCES[name]:
            for _ in range(int(rng.integers(1, 3))):
                lane = int(rng.integers(lay.n_lanes))
                near_curb = rng.random() < 0.5 and not motor
                side = -1 if lane < lay.n_lanes / 2 else 1
                X = lay.curb(side) - side * 0.8 if near_curb else lay.road_l + (lane + 0.5) * lay.lane_w
                Z = float(rng.uniform(lay.z_near + 2, 35))
                q.place(Z, X, 0.4, 1.8, _two_wheeler, X, Z, motor)
    for name, label in (("truck", TRUCK), ("bus", BUS), ("train", TRAIN)):
        if rng.random() < CHANCES[name]:
            lane = int(rng.integers(lay.n_lanes))
            X = lay.road_l + (lane + 0.5) * lay.lane_w + float(rng.uniform(-0.2, 0.2))
            Z = float(rng.uniform(lay.z_near + 6, 45))
            q.place(Z, X, 1.3, 12.0, _large_vehicle, X, Z, label, lane < lay.n_oncoming)


def _traffic_light(cv: _Canvas, rng: np.random.Generator, cam: _Camera, X: float, Z: float, side: int):
    """A pole (pole) with a signal head of three lamps (traffic light), on a mast arm or on top."""
    metal = cv.hazed(_color(rng, "metal"), Z)
    height = float(rng.uniform(2.6, 5.5))
    pw = float(rng.uniform(0.06, 0.12))
    cv.fill([cam.upright(X, Z, _rect(-pw, 0, pw, height))], POLE, metal, tex=(0.03, 0.03, 0.03))
    reach = float(rng.uniform(1.0, 3.0)) if height > 4.0 else 0.0
    hx = -side * reach  # the arm reaches over the road
    if reach:
        arm = _rect(min(0.0, hx), height - 0.1, max(0.0, hx), height)
        cv.fill([cam.upright(X, Z, arm)], POLE, metal * 0.9, tex=(0.02, 0.02, 0.02))
    hw, hh = 0.17, float(rng.uniform(0.75, 0.95))
    top = height - 0.1 if reach else height + hh
    housing = cv.hazed(_color(rng, "rubber") if rng.random() < 0.7 else _color(rng, "sign", 8), Z)
    cv.fill(
        [cam.upright(X, Z, _rect(hx - hw, top - hh, hx + hw, top))],
        TRAFFIC_LIGHT,
        housing,
        tex=(0.02, 0.03, 0.02),
    )
    lit = int(rng.integers(3))
    for k, rgb in enumerate(((230, 40, 30), (240, 190, 30), (40, 210, 90))):
        on = np.asarray(rgb, np.float32) * (1.0 if k == lit else 0.3)
        cy = top - hh * (k + 0.5) / 3
        lamp = _ellipse(hx, cy, hw * 0.6, hh / 8, n=10)
        cv.fill([cam.upright(X, Z, lamp)], TRAFFIC_LIGHT, cv.hazed(on, Z), tex=(0.01, 0.01, 0.0), label=False)


def _two_wheeler(cv: _Canvas, rng: np.random.Generator, cam: _Camera, X: float, Z: float, motor: bool):
    """A bicycle or motorcycle seen from behind or in front, with its rider (rider) on top."""
    label = MOTORCYCLE if motor else BICYCLE
    dark = cv.hazed(_color(rng, "rubber"), Z)
    frame = cv.hazed(_color(rng, "paint" if motor else "metal"), Z)
    wheel_h = 0.65 if motor else 0.68
    tyre = 0.1 if motor else 0.04
    # Wheels end-on: thin upright ellipses, the far one a little higher in the image.
    for dz in (1.2, 0.0):
        cv.fill(
            [cam.upright(X, Z + dz, _ellipse(0.0, wheel_h / 2, tyre, wheel_h / 2, n=12))],
            label,
            dark,
            tex=(0.02, 0.02, 0.02),
        )
    if motor:  # body, tank and seat between the wheels
        body = np.array([[-0.3, 0.35], [0.3, 0.35], [0.25, 0.95], [-0.25, 0.95]])
        cv.fill([cam.upright(X, Z + 0.3, body)], label, frame, tex=(0.02, 0.03, 0.02), vgrad=0.2)
        lamp = np.array([230, 60, 40], np.float32)
        cv.fill(
            [cam.upright(X, Z, _rect(-0.1, 0.75, 0.1, 0.85))],
            label,
            cv.hazed(lamp, Z),
            tex=(0.01, 0.01, 0.01),
            label=False,
        )
    else:  # frame, seat post and handlebar
        tubes = [_rect(-0.025, 0.3, 0.025, 0.95), _rect(-0.3, 0.95, 0.3, 1.0)]
        cv.fill([cam.upright(X, Z + 0.6, t) for t in tubes], label, frame, tex=(0.02, 0.02, 0.02))
    _pedestrian(cv, rng, cam, X, Z + 0.5, label=RIDER, lift=0.45 if motor else 0.35)


def _large_vehicle(
    cv: _Canvas, rng: np.random.Generator, cam: _Camera, X: float, Z: float, label: int, front: bool
):
    """A truck, bus or tram (train) in a lane: a tall box with its visible side and near end."""
    if label == TRUCK:
        w, L, H = float(rng.uniform(2.3, 2.5)), float(rng.uniform(6.5, 10.0)), float(rng.uniform(3.0, 3.8))
    elif label == BUS:
        w, L, H = float(rng.uniform(2.45, 2.55)), float(rng.uniform(10.0, 13.0)), float(rng.uniform(2.9, 3.2))
    else:
        w, L, H = float(rng.uniform(2.3, 2.65)), float(rng.uniform(18.0, 30.0)), float(rng.uniform(3.3, 3.7))
    palette = "paint" if label != TRAIN else ("paint", "sign")[int(rng.integers(2))]
    body = cv.hazed(_color(rng, palette, 10), Z)
    glass = cv.hazed(_color(rng, "glass") * 0.6, Z)
    dark = cv.hazed(_color(rng, "rubber"), Z)
    tex = (0.02, 0.03, 0.03)
    floor = 0.35 if label != TRAIN else 0.5
    if abs(X) > w / 2:  # the side facing the camera, with a band of windows
        sx = X - w / 2 if X > 0 else X + w / 2
        cv.fill([cam.side(sx, Z, Z + L, floor, H)], label, body * 0.8, tex=tex, vgrad=0.2)
        if label != TRUCK:
            band = cam.side(sx + (0.02 if X > 0 else -0.02), Z + 0.5, Z + L - 0.5, H * 0.55, H * 0.85)
            cv.fill([band], label, glass, tex=tex, label=False)
        for zc in (Z + 0.15 * L, Z + 0.85 * L):
            cv.fill(
                [
                    cam.px(
                        sx,
                        zc + 0.5 * np.cos(np.linspace(0, 2 * np.pi, 12)),
                        0.5 + 0.5 * np.sin(np.linspace(0, 2 * np.pi, 12)),
                    )
                ],
                label,
                dark,
                tex=tex,
            )
    roof = cam.px(np.array([X - w / 2, X + w / 2, X + w / 2, X - w / 2]), Z + np.array([0, 0, L, L]), H)
    cv.fill([roof], label, body * 1.05, tex=tex)
    cv.fill([cam.upright(X, Z, _rect(-w / 2, floor, w / 2, H))], label, body, tex=tex, vgrad=0.2)
    window = _rect(-w * 0.42, H * (0.5 if label != TRUCK else 0.62), w * 0.42, H * 0.9)
    if front or label != TRUCK:
        cv.fill([cam.upright(X, Z, window)], label, glass, tex=(0.02, 0.05, 0.03), label=False)
    if label != TRAIN:
        wheels = [cam.upright(X + s * (w / 2 - 0.3), Z + 0.5, _rect(-0.18, 0.0, 0.18, 0.6)) for s in (-1, 1)]
        cv.fill(wheels, label, dark, tex=tex, even_odd=True)
