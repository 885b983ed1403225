"""Cars seen from above: sampled sizes, colours and kinds, their footprints, shadows and bodies."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from parking_ml.synth.draw import sub_px


# part polygons in a unit car frame: x along the car (front at +0.5), y across
def _body() -> np.ndarray:
    q = [(0.5, -0.36), (0.48, -0.45), (0.42, -0.5), (-0.45, -0.5), (-0.49, -0.46), (-0.5, -0.38)]
    return np.array(q + [(x, -y) for x, y in reversed(q)], np.float64)


def _quad(x0: float, x1: float, w0: float, w1: float) -> np.ndarray:
    return np.array([[x0, -w0], [x0, w0], [x1, w1], [x1, -w1]], np.float64)


_CAR_PARTS: dict[str, dict[str, np.ndarray]] = {
    "sedan": {
        "windscreen": _quad(0.22, 0.05, 0.41, 0.36),
        "roof": _quad(0.05, -0.2, 0.37, 0.37),
        "rear": _quad(-0.2, -0.31, 0.37, 0.4),
    },
    "hatch": {
        "windscreen": _quad(0.24, 0.08, 0.41, 0.36),
        "roof": _quad(0.08, -0.36, 0.37, 0.37),
        "rear": _quad(-0.36, -0.44, 0.37, 0.4),
    },
    "suv": {
        "windscreen": _quad(0.26, 0.12, 0.42, 0.38),
        "roof": _quad(0.12, -0.4, 0.39, 0.39),
        "rear": _quad(-0.4, -0.46, 0.39, 0.41),
    },
    "van": {
        "windscreen": _quad(0.4, 0.3, 0.44, 0.41),
        "roof": _quad(0.3, -0.49, 0.42, 0.42),
    },
    "pickup": {
        "windscreen": _quad(0.3, 0.17, 0.42, 0.38),
        "roof": _quad(0.17, -0.04, 0.39, 0.39),
        "rear": _quad(-0.04, -0.08, 0.39, 0.4),
        "bed": _quad(-0.13, -0.47, 0.42, 0.42),
    },
    "truck": {  # box truck: short cab, long cargo box seen as a flat light roof
        "windscreen": _quad(0.5, 0.43, 0.44, 0.4),
        "roof": _quad(0.43, 0.3, 0.42, 0.42),
        "box": _quad(0.27, -0.5, 0.5, 0.5),
    },
}
_BODY = _body()

# (name, share, rgb) ~ global car colour popularity
_COLOURS = [
    ("white", 0.26, (228, 228, 226)),
    ("black", 0.21, (28, 29, 31)),
    ("grey", 0.18, (105, 107, 110)),
    ("silver", 0.14, (170, 172, 175)),
    ("blue", 0.08, (38, 62, 118)),
    ("red", 0.08, (150, 28, 30)),
    ("beige", 0.02, (170, 150, 118)),
    ("green", 0.015, (42, 78, 52)),
    ("yellow", 0.01, (210, 175, 40)),
    ("orange", 0.005, (200, 100, 35)),
]
_COLOUR_P = np.array([c[1] for c in _COLOURS]) / sum(c[1] for c in _COLOURS)
_TYPES = [
    ("sedan", 0.42, 4.4, 4.95, 1.74, 1.86, 1.45),
    ("hatch", 0.16, 3.8, 4.3, 1.68, 1.8, 1.5),
    ("suv", 0.28, 4.4, 4.95, 1.82, 1.98, 1.75),
    ("van", 0.06, 4.9, 5.9, 1.95, 2.05, 2.1),
    ("pickup", 0.08, 5.3, 5.9, 1.9, 2.05, 1.85),
    ("truck", 0.0, 7.0, 9.5, 2.35, 2.5, 3.4),  # only on roads and aisles (truck_share)
]
_TYPE_P = np.array([t[1] for t in _TYPES]) / sum(t[1] for t in _TYPES)


_KINDS = [t[0] for t in _TYPES]
_RIM = 0.13  # metres of curved body edge that shows darker from above


@dataclass
class Cars:
    """A batch of cars as arrays (N rows); geometry in pixels of the tile."""

    kind: np.ndarray  # int index into _KINDS
    centre: np.ndarray  # N x 2
    heading: np.ndarray  # N x 2 unit vectors to the front
    length: np.ndarray  # px
    width: np.ndarray  # px
    height_m: np.ndarray
    rgb: np.ndarray  # N x 3
    snow_roof: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.kind)

    @staticmethod
    def concat(parts: list[Cars]) -> Cars:
        parts = [p for p in parts if len(p)] or parts[:1]
        return Cars(*(np.concatenate([getattr(p, f) for p in parts]) for f in Cars.__dataclass_fields__))


def sample_cars(rng: np.random.Generator, n: int, gsd: float, truck_share: float = 0.0) -> Cars:
    """Types, sizes and paint of ``n`` cars (placement is the caller's)."""
    kind = rng.choice(len(_TYPES), size=n, p=_TYPE_P)
    kind[rng.random(n) < truck_share] = _KINDS.index("truck")
    spec = np.array([t[2:] for t in _TYPES], np.float64)[kind]
    colour = rng.choice(len(_COLOURS), size=n, p=_COLOUR_P)
    rgb = np.array([c[2] for c in _COLOURS], np.float64)[colour] * rng.uniform(0.85, 1.12, (n, 1))
    rgb += rng.normal(0, 5, (n, 3))
    white_van = (kind == _KINDS.index("van")) & (rng.random(n) < 0.7)
    rgb[white_van] = np.array([232, 232, 230.0]) * rng.uniform(0.9, 1.05, (int(white_van.sum()), 1))
    return Cars(
        kind=kind,
        centre=np.zeros((n, 2)),
        heading=np.tile([1.0, 0.0], (n, 1)),
        length=rng.uniform(spec[:, 0], spec[:, 1]) / gsd,
        width=rng.uniform(spec[:, 2], spec[:, 3]) / gsd,
        height_m=spec[:, 4],
        rgb=np.clip(rgb, 0, 255),
        snow_roof=np.zeros(n, bool),
    )


def _frame(cars: Cars, pts: np.ndarray) -> np.ndarray:
    """Unit-frame points (K x 2, or N x K x 2) -> N x K x 2 pixel points for every car."""
    side = np.stack([-cars.heading[:, 1], cars.heading[:, 0]], axis=1)
    px = pts[..., 0] * cars.length[:, None]
    py = pts[..., 1] * cars.width[:, None]
    return cars.centre[:, None, :] + px[..., None] * cars.heading[:, None, :] + py[..., None] * side[:, None, :]


def car_footprints(cars: Cars) -> np.ndarray:
    return _frame(cars, _BODY)


def draw_car_shadows(canvas: np.ndarray, cars: Cars, shadow: np.ndarray, gsd: float) -> None:
    if not len(cars):
        return
    fp = car_footprints(cars)
    off = shadow[None, :] * np.minimum(cars.height_m * 0.85, 12.0)[:, None] / gsd
    # the slightly enlarged footprint is the contact shadow under the body; the hull sweeps it to the ground
    contact = cars.centre[:, None, :] + (fp - cars.centre[:, None, :]) * 1.06
    both = sub_px(np.concatenate([contact, fp + off[:, None, :]], axis=1))
    for i in range(len(cars)):
        cv2.fillPoly(canvas, [cv2.convexHull(both[i])], 255, cv2.LINE_AA, 3)


_DARK_SIDE = np.array([[0.42, -0.5], [-0.45, -0.5], [-0.45, -0.28], [0.42, -0.28]])
_HIGHLIGHT = np.array([[0.03, 0.16], [-0.17, 0.16], [-0.17, 0.26], [0.03, 0.26]])
_SIDE_GLASS = np.array([[0.17, 0.37], [-0.3, 0.37], [-0.3, 0.44], [0.15, 0.45]])


def draw_cars(img: np.ndarray, cars: Cars, sun: np.ndarray, rng: np.random.Generator, gsd: float) -> None:
    """Cars on a uint8 RGB image; ``sun`` is the unit vector towards the sun in the image plane."""
    n = len(cars)
    if not n:
        return
    side = np.stack([-cars.heading[:, 1], cars.heading[:, 0]], axis=1)
    lit = np.where(side @ sun > 0, 1.0, -1.0)  # which long side faces the sun
    flip = np.stack([np.ones(n), lit], axis=1)[:, None, :]
    body = sub_px(_frame(cars, _BODY))
    inset = _BODY * (1 - 2 * _RIM / (np.stack([cars.length, cars.width], 1)[:, None, :] * gsd))
    rim = _RIM / gsd > 0.45  # below half a pixel the darker rim is lost in the blur anyway
    inner = sub_px(_frame(cars, inset))
    dark = sub_px(_frame(cars, _DARK_SIDE[None] * -flip))
    high = sub_px(_frame(cars, _HIGHLIGHT[None] * flip))
    lum = cars.rgb.mean(axis=1)
    sky_roof = (lum < 70) & (rng.random(n) < 0.5)
    roof_rgb = np.where(sky_roof[:, None], cars.rgb + 22, cars.rgb * 1.04 + 6)
    roof_rgb[cars.snow_roof] = (236.0, 238.0, 242.0)
    roof_rgb = np.clip(roof_rgb, 0, 255)
    rim_rgb = cars.rgb * 0.72
    shade_rgb = cars.rgb * 0.8
    high_rgb = np.clip(roof_rgb * 1.06 + 14, 0, 255)
    box_rgb = np.clip(rng.choice([228.0, 200.0, 170.0], size=(n, 1)) + rng.normal(0, 6, (n, 3)), 0, 255)
    glass: list[np.ndarray] = []
    sky_glass: list[np.ndarray] = []
    per_kind = {}
    for k, name in enumerate(_KINDS):
        sel = np.flatnonzero(cars.kind == k)
        if len(sel):
            sub = Cars(*(getattr(cars, f)[sel] for f in Cars.__dataclass_fields__))
            # per-pass jitter of the part outlines: models and years differ, not one template
            parts = {
                p: sub_px(_frame(sub, poly + rng.normal(0, 0.012, poly.shape))) for p, poly in _CAR_PARTS[name].items()
            }
            parts["glass_l"] = sub_px(_frame(sub, _SIDE_GLASS))
            parts["glass_r"] = sub_px(_frame(sub, _SIDE_GLASS * np.array([1.0, -1.0])))
            for j, i in enumerate(sel):
                per_kind[i] = {p: v[j] for p, v in parts.items()}
    sky = rng.random(n) < 0.25
    for i in range(n):
        parts = per_kind[i]
        if rim:
            cv2.fillPoly(img, [body[i]], tuple(rim_rgb[i]), cv2.LINE_AA, 3)
            cv2.fillPoly(img, [inner[i]], tuple(cars.rgb[i]), cv2.LINE_AA, 3)
        else:
            cv2.fillPoly(img, [body[i]], tuple(cars.rgb[i]), cv2.LINE_AA, 3)
        cv2.fillPoly(img, [dark[i]], tuple(shade_rgb[i]), cv2.LINE_AA, 3)
        cv2.fillPoly(img, [parts["roof"]], tuple(roof_rgb[i]), cv2.LINE_AA, 3)
        if "bed" in parts:
            cv2.fillPoly(img, [parts["bed"]], tuple(cars.rgb[i] * 0.45 + 15), cv2.LINE_AA, 3)
        if "box" in parts:
            cv2.fillPoly(img, [parts["box"]], tuple(box_rgb[i]), cv2.LINE_AA, 3)
        cv2.fillPoly(img, [high[i]], tuple(high_rgb[i]), cv2.LINE_AA, 3)
        target = sky_glass if sky[i] else glass
        target.append(parts["windscreen"])
        if "rear" in parts:
            target.append(parts["rear"])
        glass.append(parts["glass_l"])
        glass.append(parts["glass_r"])
    if glass:
        cv2.fillPoly(img, glass, (30, 33, 40), cv2.LINE_AA, 3)
    if sky_glass:
        cv2.fillPoly(img, sky_glass, (72, 82, 98), cv2.LINE_AA, 3)


# ------------------------------------------------------------------------------------- pass params
