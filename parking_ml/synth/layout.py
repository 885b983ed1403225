"""Synthetic parking-lot geometry: one *site* (a lot and its surroundings) laid out in pixels of its tile.

The lot is designed in metres in a lot frame (u along the aisles, v across them), then rotated, scaled by
the site's ground sample distance and placed so that the tile may show the whole lot, a part of it cut by
the tile edge, or mostly its surroundings. Everything here is static for a site; what changes between
passes (cars, sun, light, weather) is decided in :mod:`parking_ml.synth.render`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# materials of the static ground map (index into the colour tables of synth.ground)
GRASS, SOIL, ASPHALT, CONCRETE, ROAD, ISLAND, ROOF = range(7)


@dataclass
class Stall:
    """One parking space: its full painted outline (4x2 px) and the unit vector pointing into it."""

    outline: np.ndarray
    axis: np.ndarray
    length_px: float
    kind: str = "lot"  # lot | kerb | accessible
    angle_deg: float = 90.0  # between the aisle and the stall's long side


@dataclass
class Building:
    roof: np.ndarray  # Nx2 px
    height_m: float
    colour: tuple[float, float, float]


@dataclass
class Site:
    """Everything about a lot that stays the same across passes."""

    site_id: str
    size: int
    gsd: float
    seed: int
    rotation: float  # radians, lot frame -> pixel frame
    ground_kind: int  # GRASS or SOIL or CONCRETE (what lies around the lot)
    pavement: int  # ASPHALT or CONCRETE
    pavement_tone: float  # 0 fresh black sealcoat .. 1 old grey asphalt
    paint_rgb: tuple[float, float, float]
    paint_opacity: float
    paint_width_px: float
    regions: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (material, polygon) in draw order
    curbs: list[np.ndarray] = field(default_factory=list)  # closed polygons outlined by a light curb
    stalls: list[Stall] = field(default_factory=list)
    lines: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # painted segments p0, p1
    hatches: list[np.ndarray] = field(default_factory=list)  # hatched no-parking polygons
    accessible: list[np.ndarray] = field(default_factory=list)  # blue painted stall outlines
    arrows: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (tail, tip)
    road_lines: list[tuple[np.ndarray, np.ndarray, bool]] = field(default_factory=list)  # p0, p1, dashed
    aisles: list[tuple[np.ndarray, np.ndarray, float]] = field(default_factory=list)  # centre p0, p1, width
    trees: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))  # x, y, radius px, height m, conifer
    poles: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # x, y, height m
    buildings: list[Building] = field(default_factory=list)
    lane_dirs: list[np.ndarray] = field(default_factory=list)  # unit vectors along drivable lanes
    ghost: np.ndarray | None = None  # px offset of the old, blacked-out markings of a restriped lot
    roads: list[tuple[np.ndarray, np.ndarray, float]] = field(default_factory=list)  # centre p0, p1, width m
    crosswalks: list[tuple[np.ndarray, np.ndarray, float]] = field(default_factory=list)  # centre, lane, width px
    hard: str | None = None  # the hard mode (synth.hard) this site was laid out for


def _rot(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def _rect(u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
    return np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]], dtype=np.float64)


def shrink_convex(poly: np.ndarray, d: float) -> np.ndarray:
    """Move every edge of a convex polygon inwards by ``d`` (vertices = intersections of the moved edges).

    Accepts one polygon (K x 2) or a batch (N x K x 2) and keeps that shape.
    """
    p = np.asarray(poly, dtype=np.float64)
    single = p.ndim == 2
    if single:
        p = p[None]
    nxt = np.roll(p, -1, axis=1)
    area2 = np.sum(p[..., 0] * nxt[..., 1] - nxt[..., 0] * p[..., 1], axis=1)
    sign = np.where(area2 > 0, 1.0, -1.0)[:, None, None]
    edges = nxt - p
    normals = sign * np.stack([-edges[..., 1], edges[..., 0]], axis=-1)  # inward for either orientation
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    c = np.sum(normals * p, axis=-1) + d  # edge i: normals[i] . x = c[i]
    nj, cj = np.roll(normals, 1, axis=1), np.roll(c, 1, axis=1)  # edge before each vertex
    det = nj[..., 0] * normals[..., 1] - nj[..., 1] * normals[..., 0]
    x = (cj * normals[..., 1] - c * nj[..., 1]) / det
    y = (nj[..., 0] * c - normals[..., 0] * cj) / det
    out = np.stack([x, y], axis=-1)
    return out[0] if single else out


def _uniform_log(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_gsd(rng: np.random.Generator, gsd: float | tuple[float, float]) -> float:
    if isinstance(gsd, tuple | list):
        lo, hi = float(gsd[0]), float(gsd[1])
        return lo if hi <= lo else round(_uniform_log(rng, lo, hi), 4)
    return float(gsd)


class _Builder:
    """Collects geometry in lot-frame metres and converts it to pixels on the way in."""

    def __init__(self, site: Site, centre_px: np.ndarray, lot_centre_m: np.ndarray) -> None:
        self.site = site
        self.m = _rot(site.rotation) / site.gsd
        self.c = centre_px
        self.o = lot_centre_m
        self.trees: list[tuple[float, float, float, float, float]] = []
        self.poles: list[tuple[float, float, float]] = []
        self.lines_m: list[tuple[np.ndarray, np.ndarray]] = []

    def px(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64)
        return (pts - self.o) @ self.m.T + self.c

    def vec(self, v: np.ndarray) -> np.ndarray:
        """A direction in the pixel frame, unit length."""
        out = np.asarray(v, dtype=np.float64) @ self.m.T
        return out / np.linalg.norm(out)

    def region(self, material: int, poly_m: np.ndarray, curb: bool = False) -> None:
        poly = self.px(poly_m)
        self.site.regions.append((material, poly))
        if curb:
            self.site.curbs.append(poly)

    def line(self, a_m: np.ndarray, b_m: np.ndarray) -> None:
        self.lines_m.append((a_m, b_m))

    def finish(self) -> None:
        """Convert the collected metre-space lines, trees and poles to pixels (one batch each)."""
        if self.lines_m:
            ends = self.px(np.array(self.lines_m, dtype=np.float64))
            self.site.lines = [(e[0], e[1]) for e in ends]
        self.site.trees = np.array(self.trees, dtype=np.float64).reshape(-1, 5)
        self.site.poles = np.array(self.poles, dtype=np.float64).reshape(-1, 3)

    def tree(self, rng: np.random.Generator, u: float, v: float, r_m: float | None = None) -> None:
        r = r_m if r_m is not None else rng.uniform(1.6, 4.2)
        p = self.px(np.array([u, v]))
        conifer = float(rng.random() < 0.15)
        height = r * rng.uniform(1.6, 2.6) + 1.5
        self.trees.append((p[0], p[1], r / self.site.gsd, height, conifer))

    def pole(self, rng: np.random.Generator, u: float, v: float) -> None:
        p = self.px(np.array([u, v]))
        self.poles.append((p[0], p[1], rng.uniform(6.0, 10.0)))


def build_site(
    rng: np.random.Generator,
    site_id: str,
    size: int,
    gsd: float,
    seed: int,
    min_stalls: int = 1,
    hard: str | None = None,
) -> Site:
    """Lay out one site; retries placement until at least ``min_stalls`` stalls fall well inside the tile.

    ``hard``: a mode of :mod:`parking_ml.synth.hard` whose layout is forced here (lot_edge, roadway_cars)."""
    site = None
    for _ in range(12):
        site = _build_once(rng, site_id, size, gsd, seed, hard)
        centres = np.stack([s.outline for s in site.stalls]).mean(axis=1) if site.stalls else np.zeros((0, 2))
        inside = int(np.sum(np.all((centres > 0) & (centres < size), axis=1)))
        if inside >= min_stalls:
            return site
    assert site is not None
    return site


# long: one site's random draws in their fixed order; split, the parts would pass a dozen locals (same seed, same lot)
def _build_once(rng: np.random.Generator, site_id: str, size: int, gsd: float, seed: int, hard: str | None) -> Site:
    tile_m = size * gsd
    if rng.random() < 0.4:  # many lots are aligned to the image grid (north-up cities)
        rotation = rng.integers(0, 4) * math.pi / 2 + math.radians(rng.normal(0, 2))
    else:
        rotation = rng.uniform(0, 2 * math.pi)
    paint_yellow = rng.random() < 0.25
    paint = (235.0, 200.0, 70.0) if paint_yellow else (238.0, 238.0, 232.0)
    pavement = ASPHALT if rng.random() < 0.8 else CONCRETE
    if hard == "dark_cars":
        pavement = ASPHALT
    ground = int(rng.choice([GRASS, SOIL, CONCRETE], p=[0.6, 0.12, 0.28]))
    site = Site(
        site_id=site_id,
        size=size,
        gsd=gsd,
        seed=seed,
        rotation=float(rotation),
        ground_kind=ground,
        pavement=pavement,
        pavement_tone=float(rng.beta(1.5, 1.5)),
        paint_rgb=paint,
        paint_opacity=float(rng.uniform(0.55, 1.0) if rng.random() < 0.8 else rng.uniform(0.25, 0.55)),
        paint_width_px=float(rng.uniform(0.10, 0.16) / gsd),
    )

    # --- stall geometry ---------------------------------------------------------------------------
    angle = int(rng.choice([90, 60, 45], p=[0.6, 0.22, 0.18]))
    sa, ca = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    w = rng.uniform(2.4, 2.7)
    length = rng.uniform(4.8, 5.5)
    depth = length * sa
    pitch = w / sa
    aisle = {90: rng.uniform(6.0, 7.5), 60: rng.uniform(4.6, 5.6), 45: rng.uniform(3.8, 4.6)}[angle]
    strip = rng.uniform(1.4, 3.5) if rng.random() < 0.45 else 0.0
    edge = hard == "lot_edge"
    if edge and not strip:
        strip = 2.5
    block = int(rng.integers(7, 22))
    end_island = rng.uniform(1.8, 3.0) if rng.random() < 0.6 else 0.0
    if edge and not end_island:
        end_island = 2.4
    line_style = rng.choice(["single", "double", "tee", "open"], p=[0.55, 0.15, 0.15, 0.15])
    back_line = rng.random() < 0.6

    extent_u = tile_m * rng.uniform(0.4, 2.2)
    extent_v = tile_m * rng.uniform(0.4, 2.0)
    n_stalls = max(3, int(extent_u / pitch))
    # when end islands are used, each block loses the island width
    n_modules = max(1, int(extent_v / (2 * depth + aisle + strip)))
    single_first = rng.random() < 0.25
    margin_aisle = aisle if angle == 90 else rng.uniform(5.5, 7.0)

    # --- where the lot sits relative to the tile -----------------------------------------------------
    u_len = n_stalls * pitch + (n_stalls // block) * end_island + 2 * length * ca
    v_len = n_modules * (2 * depth + aisle) + (n_modules - 1) * strip
    lot_centre = np.array([u_len / 2, v_len / 2])
    span = max(u_len, v_len) / gsd
    shift = rng.uniform(-0.5, 0.5, 2) * max(0.0, span - size * 0.6) * 0.6
    if rng.random() < 0.45 or edge:  # show the edge of the lot and its surroundings
        shift += rng.uniform(-1, 1, 2) * size * 0.5
    b = _Builder(site, np.array([size / 2, size / 2]) + shift, lot_centre)

    u0, u1 = -margin_aisle, u_len + margin_aisle
    v0, v1 = -margin_aisle * (rng.random() < 0.7), v_len + margin_aisle * (rng.random() < 0.7)
    if edge:  # the first row backs onto a building (a single row along its wall)
        v0 = 0.0
    site.hard = hard
    # surroundings first, lot on top
    _surroundings(rng, b, u0, u1, v0, v1, tile_m)
    if edge:
        _wall_row(rng, b, u0, u1, v0)
    b.region(pavement, _rect(u0, v0, u1, v1))

    su_by_aisle = 1.0
    v = 0.0
    rows: list[tuple[float, float, float]] = []  # (v_front, sv, su)
    for k in range(n_modules):
        su = su_by_aisle if angle != 90 else 1.0
        su_by_aisle = -su_by_aisle if rng.random() < 0.5 else su_by_aisle
        if not (k == 0 and single_first):
            rows.append((v + depth, -1.0, su))
        else:  # a single-loaded aisle: a sidewalk strip instead of the first row
            b.region(CONCRETE, _rect(0, v, u_len, v + depth * 0.35), curb=True)
        v += depth
        site.aisles.append((b.px(np.array([u0, v + aisle / 2])), b.px(np.array([u1, v + aisle / 2])), aisle))
        site.lane_dirs.append(b.vec(np.array([1.0, 0.0])))
        if rng.random() < 0.3:
            a_u = rng.uniform(0.2, 0.8) * u_len
            direction = su if angle != 90 else rng.choice([-1.0, 1.0])
            site.arrows.append(
                (b.px(np.array([a_u, v + aisle / 2])), b.px(np.array([a_u + direction * 3.0, v + aisle / 2])))
            )
        v += aisle
        rows.append((v, 1.0, su))
        v += depth
        if k < n_modules - 1 and strip > 0:
            b.region(ISLAND, _rect(0, v + 0.2, u_len, v + strip - 0.2), curb=True)
            n_tree = int(u_len / rng.uniform(6, 14))
            for t in range(n_tree):
                if rng.random() < 0.7:
                    b.tree(rng, (t + 0.5) * u_len / max(n_tree, 1), v + strip / 2, rng.uniform(1.5, 3.8))
            if rng.random() < 0.5:
                for t in range(int(u_len / 25)):
                    b.pole(rng, (t + 0.5) * 25 + rng.uniform(-2, 2), v + strip / 2)
            v += strip

    accessible_row = int(rng.integers(0, len(rows))) if rows and rng.random() < 0.35 else -1
    for ri, (v_front, sv, su) in enumerate(rows):
        _row(
            rng,
            b,
            site,
            v_front,
            sv,
            su,
            n_stalls,
            pitch,
            length,
            ca,
            sa,
            block,
            end_island,
            str(line_style),
            back_line,
            ri == accessible_row,
        )

    # perimeter landscaping with trees, and poles in the aisles' margins
    if rng.random() < 0.7:
        edge_w = rng.uniform(1.5, 4.0)
        for side_v in (v0 - edge_w, v1):
            if rng.random() < 0.7:
                b.region(ISLAND if ground != GRASS else GRASS, _rect(u0, side_v, u1, side_v + edge_w), curb=True)
                for t in range(int((u1 - u0) / rng.uniform(7, 15))):
                    if rng.random() < 0.65:
                        b.tree(rng, u0 + t * 9.0 + rng.uniform(0, 6), side_v + edge_w / 2)
    if rng.random() < 0.5:
        for t in range(int((u1 - u0) / 30) + 1):
            b.pole(rng, u0 + 2 + t * 30, v0 + 0.8 if v0 < 0 else -0.8)

    b.finish()
    if rng.random() < 0.15:  # restriped lot: the old lines still show, shifted along the rows
        site.ghost = b.vec(np.array([1.0, 0.0])) * rng.uniform(0.5, 1.5) / gsd
    return site


def _row(
    rng: np.random.Generator,
    b: _Builder,
    site: Site,
    v_front: float,
    sv: float,
    su: float,
    n: int,
    pitch: float,
    length: float,
    ca: float,
    sa: float,
    block: int,
    end_island: float,
    line_style: str,
    back_line: bool,
    accessible: bool,
) -> None:
    d = np.array([su * length * ca, sv * length * sa])
    axis_m = d / np.linalg.norm(d)
    axis = b.vec(axis_m)
    u = 0.0 if su > 0 else length * ca
    row_start = u
    acc_left = int(rng.integers(2, 5)) if accessible else 0
    outlines: list[np.ndarray] = []
    kinds: list[str] = []
    for i in range(n):
        if i > 0 and end_island > 0 and i % block == 0:
            island = np.array([[u, v_front], [u + end_island, v_front]])
            island = np.concatenate([island, island[::-1] + d])
            b.region(ISLAND, _inset(island, 0.25), curb=True)
            c = island.mean(axis=0)
            if rng.random() < 0.75:
                b.tree(rng, c[0], c[1], rng.uniform(1.5, 3.5))
            elif rng.random() < 0.5:
                b.pole(rng, c[0], c[1])
            if back_line and line_style != "open":
                b.line(np.array([row_start, v_front]) + d, np.array([u, v_front]) + d)
            u += end_island
            row_start = u
        p0 = np.array([u, v_front])
        p1 = np.array([u + pitch, v_front])
        outline_m = np.stack([p0, p1, p1 + d, p0 + d])
        _side_line(b, (p0, p0 + d), line_style, axis_m)
        if i == n - 1 or (end_island > 0 and (i + 1) % block == 0):
            _side_line(b, (p1, p1 + d), line_style, axis_m)
        u += pitch
        if acc_left and i >= n - 1 - 2 * acc_left:
            # last stalls of the row: accessible stalls alternate with hatched access aisles (no parking)
            if (n - 1 - i) % 2 == 1:
                site.hatches.append(b.px(outline_m))
                continue
            site.accessible.append(b.px(outline_m))
            kinds.append("accessible")
        else:
            kinds.append("lot")
        outlines.append(outline_m)
    if back_line and line_style != "open":
        b.line(np.array([row_start, v_front]) + d, np.array([u, v_front]) + d)
    if outlines:
        px = b.px(np.stack(outlines))
        length_px = length / site.gsd
        site.stalls.extend(
            Stall(outline=o, axis=axis, length_px=length_px, kind=k, angle_deg=math.degrees(math.asin(sa)))
            for o, k in zip(px, kinds, strict=True)
        )


def _side_line(b: _Builder, ends: tuple[np.ndarray, np.ndarray], style: str, axis_m: np.ndarray) -> None:
    a, c = ends
    if style == "open":  # only a short tick at the front (common in older lots)
        b.line(a, a + (c - a) * 0.25)
        return
    if style == "double":
        n = np.array([-axis_m[1], axis_m[0]]) * 0.22
        b.line(a + n, c + n)
        b.line(a - n, c - n)
        b.line(a + n, a - n)
        return
    b.line(a, c)
    if style == "tee":
        t = np.array([0.5, 0.0])
        b.line(a - t, a + t)


def _inset(poly: np.ndarray, d: float) -> np.ndarray:
    return shrink_convex(poly, d)


# long: one site's random draws in their fixed order; split, the parts would pass a dozen locals (same seed, same lot)
def _surroundings(
    rng: np.random.Generator, b: _Builder, u0: float, u1: float, v0: float, v1: float, tile_m: float
) -> None:
    """Roads with kerb-side parking, sidewalks, buildings and trees around the lot."""
    site = b.site
    big = tile_m * 4
    has_road = rng.random() < 0.6
    if site.hard in ("roadway_cars", "lot_edge"):
        has_road = site.hard == "roadway_cars"
    # a road along one long side of the lot (v < v0), with a sidewalk between
    if has_road:
        walk = rng.uniform(1.5, 3.0)
        road_w = rng.uniform(7.0, 13.0)
        r1 = v0 - walk
        r0 = r1 - road_w
        b.region(CONCRETE, _rect(-big, r1, big, v0), curb=True)
        b.region(ROAD, _rect(-big, r0, big, r1))
        mid = (r0 + r1) / 2
        site.road_lines.append((b.px(np.array([-big, mid])), b.px(np.array([big, mid])), bool(rng.random() < 0.6)))
        site.aisles.append((b.px(np.array([-big, mid])), b.px(np.array([big, mid])), road_w))
        site.lane_dirs.append(b.vec(np.array([1.0, 0.0])))
        site.roads.append((b.px(np.array([-big, mid])), b.px(np.array([big, mid])), road_w))
        kerb_parking = rng.random() < 0.55
        if site.hard == "roadway_cars":  # cars along the road stand at unmarked kerbs: background
            kerb_parking = False
        if kerb_parking:  # kerb-side parallel parking along the road edge next to the sidewalk
            slot = rng.uniform(5.6, 6.6)
            kw = rng.uniform(2.1, 2.5)
            start = rng.uniform(-slot, 0) + u0 - slot * rng.integers(0, 8)
            count = int((u1 - start + slot * rng.integers(0, 8)) / slot)
            axis = b.vec(np.array([1.0, 0.0]))
            for i in range(count):
                a = start + i * slot
                outline = _rect(a, r1 - kw, a + slot, r1)
                site.stalls.append(Stall(outline=b.px(outline), axis=axis, length_px=slot / site.gsd, kind="kerb"))
                b.line(np.array([a, r1 - kw]), np.array([a, r1 - kw * 0.6]))
            b.line(np.array([start, r1 - kw]), np.array([start + count * slot, r1 - kw]))
        for t in range(int((u1 - u0 + 2 * tile_m) / rng.uniform(8, 16))):
            if rng.random() < 0.45:
                b.tree(rng, u0 - tile_m + t * 12 + rng.uniform(-2, 2), v0 - walk / 2, rng.uniform(2.0, 4.0))
    # buildings beyond the far side, or beyond the ends
    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.25, 0.35, 0.25, 0.15]))):
        wid = rng.uniform(15, 60)
        dep = rng.uniform(12, 40)
        gap = rng.uniform(2, 10)
        if rng.random() < 0.6:
            a = rng.uniform(u0 - wid / 2, u1 - wid / 2)
            roof = _rect(a, v1 + gap, a + wid, v1 + gap + dep)
        else:
            side = rng.choice([-1, 1])
            a = u1 + gap if side > 0 else u0 - gap - dep
            c = rng.uniform(v0, v1)
            roof = _rect(a, c - wid / 2, a + dep, c + wid / 2)
        tone = rng.choice([0, 1, 2, 3], p=[0.35, 0.3, 0.2, 0.15])
        colour = [(205, 205, 200), (150, 150, 148), (95, 92, 90), (170, 140, 115)][int(tone)]
        jitter = rng.uniform(0.85, 1.1)
        site.buildings.append(
            Building(
                roof=b.px(roof),
                height_m=float(rng.uniform(4, 14)),
                colour=tuple(float(min(255, x * jitter)) for x in colour),
            )
        )
    # dumpsters, sheds and cart corrals at the lot's margin: small boxes that cast short shadows
    for _ in range(int(rng.poisson(0.8))):
        wid, dep = rng.uniform(1.5, 4.0), rng.uniform(1.2, 2.5)
        a = rng.uniform(u0, u1 - wid)
        side_v = v0 - dep - 0.3 if rng.random() < 0.5 else v1 + 0.3
        colour = [(52, 78, 62), (48, 62, 96), (150, 150, 146), (170, 120, 60)][int(rng.integers(0, 4))]
        site.buildings.append(
            Building(
                roof=b.px(_rect(a, side_v, a + wid, side_v + dep)),
                height_m=float(rng.uniform(1.2, 2.6)),
                colour=tuple(float(c) for c in colour),
            )
        )
    # loose trees in the surroundings (outside the paved rectangle)
    for _ in range(int(rng.integers(0, 10))):
        side = rng.integers(0, 4)
        if side == 0:
            uu, vv = rng.uniform(u0 - 20, u1 + 20), rng.uniform(v1 + 2, v1 + 20)
        elif side == 1 and not has_road:
            uu, vv = rng.uniform(u0 - 20, u1 + 20), rng.uniform(v0 - 20, v0 - 2)
        elif side == 2:
            uu, vv = rng.uniform(u0 - 20, u0 - 2), rng.uniform(v0, v1)
        elif side == 3:
            uu, vv = rng.uniform(u1 + 2, u1 + 20), rng.uniform(v0, v1)
        else:
            continue
        if not any(_inside(bd.roof, b.px(np.array([uu, vv]))) for bd in site.buildings):
            b.tree(rng, uu, vv)


def _inside(poly: np.ndarray, p: np.ndarray) -> bool:
    import cv2

    return cv2.pointPolygonTest(poly.astype(np.float32), (float(p[0]), float(p[1])), False) >= 0


def _wall_row(rng: np.random.Generator, b: _Builder, u0: float, u1: float, v0: float) -> None:
    """A building whose wall runs along the lot's first row, a narrow sidewalk between (hard mode lot_edge)."""
    walk = rng.uniform(0.6, 1.6)
    depth = rng.uniform(12, 30)
    b.region(CONCRETE, _rect(u0, v0 - walk, u1, v0), curb=True)
    colour = [(205, 205, 200), (150, 150, 148), (95, 92, 90), (170, 140, 115)][int(rng.integers(0, 4))]
    b.site.buildings.append(
        Building(
            roof=b.px(_rect(u0, v0 - walk - depth, u1, v0 - walk)),
            height_m=float(rng.uniform(4, 12)),
            colour=tuple(float(c) for c in colour),
        )
    )
