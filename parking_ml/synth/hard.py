"""Hard cases of the generator: the failure modes seen on real imagery, each with its exact truth.

A site is given at most one *hard mode*. The default mix gives each mode to a few sites in a hundred
(``HARD_RATE``); ``SiteRenderer(..., hard=<mode>)`` forces one, ``hard="none"`` turns them off. Every
decision here draws from its own random stream (seeded with ``HARD_STREAM``), so a site without a mode
is drawn exactly as before the modes existed.

Modes and their truth (the label rules of :mod:`parking_ml.synth.dataset` are unchanged):
  * ``dark_cars``: black, navy and dark grey cars on mid-grey asphalt in a cool cast with a low sun;
    the stalls they stand in are occupied.
  * ``long_shadows``: palms, trees and light poles behind the rows under a low sun, their long hard
    shadows lying across the stalls; stalls keep their labels (canopy over half a stall still ignores it).
  * ``faint_paint``: worn, thin markings; a site whose paint does not show is ignored (the ``faint`` rule).
  * ``lot_edge``: the lot's edge in view, a row backing onto a building, end islands and planted strips
    with kerbs.
  * ``roadway_cars``: a road beside the lot with moving traffic and cars parked along unmarked kerbs:
    background.
  * ``hatched_zones``: hatched no-parking areas among the stalls and zebra crossings over the aisles:
    background.
"""

from __future__ import annotations

import math

import numpy as np

HARD_MODES = ("dark_cars", "long_shadows", "faint_paint", "lot_edge", "roadway_cars", "hatched_zones")
# why: per mode and site of the default mix, ~1 site in 6 gets one mode; modest so the easy cases still dominate
HARD_RATE = 0.03
HARD_STREAM = 0x4A52
# the hard set: a fixed generator seed per mode (bench/train.py, bench/hardset.py)
HARD_SET_SEEDS = {mode: 3801 + i for i, mode in enumerate(HARD_MODES)}
_DARK_RGB = np.array([(24, 25, 28), (30, 38, 72), (58, 60, 64), (40, 44, 52)], np.float64)


def pick_mode(seed: int, index: int, hard: str | None, rate: float | None = None) -> str | None:
    """The hard mode of site ``index`` of a batch: ``None`` mixes modes in at ``rate`` per mode (default
    ``HARD_RATE``), ``"none"`` never, a mode's name always."""
    if hard == "none":
        return None
    if hard is None or hard == "mix":
        rate = HARD_RATE if rate is None else float(rate)
        if not 0 < rate <= 1 / len(HARD_MODES):
            raise ValueError(f"hard rate must be in (0, {1 / len(HARD_MODES):.4f}] per mode (got {rate!r})")
        # one draw at any rate: a site without a mode at a higher rate has none at a lower one either
        u = float(np.random.default_rng([seed, index, HARD_STREAM]).random())
        k = int(u / rate)
        return HARD_MODES[k] if k < len(HARD_MODES) else None
    if hard not in HARD_MODES:
        raise ValueError(f"unknown hard mode {hard!r}; choose one of {', '.join(HARD_MODES)}, none or mix")
    return hard


def site_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, HARD_STREAM, 1])


def pass_rng(seed: int, index: int, pass_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, HARD_STREAM, 2, pass_index])


# ------------------------------------------------------------------------------------------ site level
def adjust_site(site, mode: str | None, rng: np.random.Generator) -> None:
    """Changes to a laid-out site before its static layers are rendered (layout-time changes are in layout)."""
    if mode == "dark_cars":  # (layout made the lot asphalt)
        site.pavement_tone = float(rng.uniform(0.45, 0.8))  # mid-grey, where dark cars blend in
    elif mode == "long_shadows":
        _tall_things(site, rng)
    elif mode == "faint_paint":
        site.paint_opacity = float(rng.uniform(0.15, 0.45))
        site.paint_width_px *= float(rng.uniform(0.6, 0.85))
    elif mode == "hatched_zones":
        _hatch_stalls(site, rng)
        _crosswalks(site, rng)


def _tall_things(site, rng: np.random.Generator) -> None:
    """Palms, trees and light poles just behind the rows' back lines, a few stalls apart."""
    if not site.stalls:
        return
    g = site.gsd
    trees, poles = [site.trees], [site.poles]
    step = int(rng.integers(2, 5))
    start = int(rng.integers(0, step))
    for stall in site.stalls[start::step]:
        o = stall.outline
        back = (o[2] + o[3]) / 2
        kind = rng.choice(3, p=[0.45, 0.2, 0.35])
        if kind == 0:  # palm: small crown, tall trunk
            r = rng.uniform(1.0, 1.8)
            p = back + stall.axis * (0.6 + r * 0.3) / g
            trees.append(np.array([[p[0], p[1], r / g, rng.uniform(9.0, 16.0), 0.0]]))
        elif kind == 1:
            r = rng.uniform(2.2, 3.5)
            p = back + stall.axis * (0.8 + r * 0.8) / g
            trees.append(np.array([[p[0], p[1], r / g, rng.uniform(9.0, 14.0), 0.0]]))
        else:
            p = back + stall.axis * 0.5 / g
            poles.append(np.array([[p[0], p[1], rng.uniform(9.0, 13.0)]]))
    site.trees = np.concatenate(trees).reshape(-1, 5)
    site.poles = np.concatenate(poles).reshape(-1, 3)


def _hatch_stalls(site, rng: np.random.Generator) -> None:
    """Some painted slots become hatched no-parking areas: no stall, no car, background in the truth."""
    lot = [i for i, s in enumerate(site.stalls) if s.kind == "lot"]
    if not lot:
        return
    take = {int(i) for i in rng.choice(lot, size=max(1, int(len(lot) * rng.uniform(0.08, 0.2))), replace=False)}
    site.hatches.extend(site.stalls[i].outline for i in sorted(take))
    site.stalls = [s for i, s in enumerate(site.stalls) if i not in take]


def _crosswalks(site, rng: np.random.Generator) -> None:
    """Zebra crossings over the lot's aisles where they cross the tile: (centre, lane unit, width px). Not on
    roads, whose kerb-side stalls a crossing would paint over."""
    size = site.size
    roads = {(tuple(np.round(p0, 3)), tuple(np.round(p1, 3))) for p0, p1, _ in site.roads}
    for (p0, p1, width), lane in zip(site.aisles, site.lane_dirs, strict=True):
        if (tuple(np.round(p0, 3)), tuple(np.round(p1, 3))) in roads:
            continue
        d = p1 - p0
        length = float(np.linalg.norm(d))
        if length < 1:
            continue
        # the part of the centre line inside the tile
        ts = np.linspace(0, 1, 200)
        pts = p0 + d * ts[:, None]
        inside = ts[np.all((pts > 0.1 * size) & (pts < 0.9 * size), axis=1)]
        if not len(inside):
            continue
        for _ in range(int(rng.integers(1, 3))):
            t = float(rng.choice(inside))
            site.crosswalks.append((p0 + d * t, lane.copy(), width / site.gsd))


# ------------------------------------------------------------------------------------------ pass level
def adjust_pass(params, mode: str | None, rng: np.random.Generator) -> None:
    """Light for the mode: a low sun and hard shadows; for dark cars also a cool, bluish cast."""
    if mode == "dark_cars":
        params.sun_elevation = math.radians(rng.uniform(12, 30))
        params.shadow_strength = float(rng.uniform(0.55, 0.75))
        params.colour = np.diag([0.9, 0.98, 1.12]) @ params.colour
        params.saturation = min(params.saturation, 0.85)
        params.gain = float(rng.uniform(0.75, 0.95))
    elif mode == "long_shadows":
        params.sun_elevation = math.radians(rng.uniform(10, 24))
        params.shadow_strength = float(rng.uniform(0.6, 0.8))


def darken_cars(cars, rng: np.random.Generator, share: float = 0.75) -> None:
    """Most cars black, navy or dark grey (in place)."""
    n = len(cars)
    if not n:
        return
    pick = rng.random(n) < share
    rgb = _DARK_RGB[rng.integers(0, len(_DARK_RGB), n)] * rng.uniform(0.85, 1.15, (n, 1)) + rng.normal(0, 3, (n, 3))
    cars.rgb = np.where(pick[:, None], np.clip(rgb, 0, 255), cars.rgb)


def roadway_cars(site, rng: np.random.Generator):
    """Traffic on the road beside the lot and cars parked along its unmarked kerbs (never labelled)."""
    from parking_ml.synth.cars import Cars, sample_cars

    g = site.gsd
    parts = []
    for p0, p1, width in site.roads:
        d = p1 - p0
        lane = d / (np.linalg.norm(d) + 1e-9)
        normal = np.array([-lane[1], lane[0]])
        for offset_m, rate, parked in ((0.22, 0.12, False), (-0.22, 0.12, False), (0.5, 0.2, True), (-0.5, 0.2, True)):
            k = int(rng.poisson(rate * np.linalg.norm(d) * g / 6.0))
            if not k:
                continue
            pos = p0 + d * rng.random((k, 1))
            off = (width / 2 - 1.3) / g if parked else abs(offset_m) * width / g
            pos = pos + normal[None, :] * math.copysign(off, offset_m)
            inside = np.all((pos >= 0) & (pos < site.size), axis=1)
            if not inside.any():
                continue
            pos = pos[inside]
            cars = sample_cars(rng, len(pos), g, truck_share=0.0 if parked else 0.15)
            sign = math.copysign(1.0, offset_m)
            cars.heading = np.tile(lane * sign, (len(pos), 1))
            cars.centre = pos
            parts.append(cars)
    return Cars.concat(parts) if parts else sample_cars(rng, 0, g)
