"""Synthetic satellite tiles of parking lots with exact stall labels (the platform's training data source).

A *site* is one lot with its surroundings (layout, paint, trees, buildings, ground sample distance), drawn
by :mod:`parking_ml.synth.layout` and rendered by :mod:`parking_ml.synth.render`. Each site is
seen on several *passes*: other parked cars, sun direction, season and sensor effects, same geometry.

Output layout of :func:`generate_dataset` (what ``ingest`` reads)::

    DIR/<site_id>/<stem>.png | <stem>.tif      RGB 8-bit (GeoTIFF: projected UTM CRS, affine at the gsd)
    DIR/<site_id>/<stem>.mask.png              uint8: 0 background, 1 free, 2 occupied, 255 ignore
    DIR/<site_id>/<stem>.geojson               stall polygons with {"status": "free"|"occupied", ...}

Site ids are ``s<seed>-site-0007`` (seed and index in the batch: batches of other seeds are other lots, so
their sites must never merge in the CV grouping), stems ``s<seed>-site-0007_p02`` (pass 2).

Label rule (exact, so a reader can reproduce the mask from the GeoJSON):
  * every stall's painted outline is shrunk by ``max(0.3 m, 2 px)`` on each side (all four edges moved
    inwards) and the vertices are rounded to integer pixel coordinates; a stall that leaves the tile is
    then clipped to the pixel grid ``[0, size - 1]`` (Sutherland-Hodgman) and rounded again. That integer
    polygon is the *interior*; it is what the GeoJSON holds, and neighbouring interiors never touch
    (not even diagonally), so 8-connected components of class 1 count free stalls.
  * the mask is ``cv2.fillPoly(mask, [interior.astype(np.int32)], value)`` (default 8-connected line type,
    no shift), one call per stall, on an image-sized canvas; pixel coordinates are (x=col, y=row).
  * ``value`` is 1 (free) or 2 (occupied), or 255 (ignore) when less than 30 % of the interior's area
    lies inside the tile or when tree canopy hides more than 50 % of the interior's pixels (the whole
    stall is then ignored; a stall hidden less than that keeps its full label), and for every stall of a
    site whose paint does not show against its pavement (``paint_visibility`` under ``FAINT_VISIBILITY``:
    white paint on light concrete, worn paint): nobody can tell its stalls from the image, so no label
    should claim them.
  * GeoJSON features carry ``status`` (true state, also for ignored stalls), ``label`` (the mask value)
    and ``ignore`` (true when label is 255). Rasterising features in file order with ``label`` reproduces
    the mask exactly; readers that use only ``status`` must skip features with ``ignore`` true.
  * pixel GeoJSON (PNG): top-level ``"coordinate_space": "pixel"``; coordinates are the integer (x=col,
    y=row) above. GeoTIFF GeoJSON: ``"coordinate_space": "map"`` and a named ``crs``; coordinates are
    ``transform @ (x, y)`` with the GeoTIFF's affine transform, so ``~transform @ (X, Y)`` gives back the
    integer pixel coordinates (round to absorb float error). Both also carry top-level ``gsd`` (m/px)
    and ``site``. The GeoTIFF's CRS is a northern UTM zone (EPSG:326xx) with a per-site origin.

Everything is deterministic per seed: numpy Generators seeded with (seed, site) for the layout and
(seed, site, pass) for each pass; no global random state.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from parking_ml.data.annotations import MIN_INSIDE
from parking_ml.synth import hard as hard_modes
from parking_ml.synth.cars import Cars, sample_cars
from parking_ml.synth.draw import draw_segments
from parking_ml.synth.ground import Static, render_static
from parking_ml.synth.layout import Site, build_site, sample_gsd, shrink_convex
from parking_ml.synth.render import ALL_STYLES, STYLES, render_pass, sample_pass

logger = logging.getLogger(__name__)

FREE, OCCUPIED, IGNORE = 1, 2, 255
MAX_CANOPY = 0.50
SHRINK_M = 0.30
SHRINK_MIN_PX = 2.0
# why: below this paint_visibility a lot's markings do not show, so its stalls are ignored ("faint")
# (docs/experiments/label-ignore-rules.md)
FAINT_VISIBILITY = 2.0
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass
class SyntheticTile:
    image: np.ndarray  # HxWx3 uint8 RGB
    mask: np.ndarray  # HxW uint8 {0, 1, 2, 255}
    stalls: list[tuple[np.ndarray, str]]  # (interior polygon Nx2 float pixel coords, "free"|"occupied")
    labels: list[int]  # mask value per stall: 1, 2 or 255
    gsd: float
    site_id: str
    pass_index: int = 0
    style: str = "default"
    sun_azimuth_deg: float = 0.0
    sun_elevation_deg: float = 0.0
    occupancy: float = 0.0  # occupied share of all stalls of the site in this pass
    # per stall: ignore_reason ("", "edge", "canopy", "faint"), inside_share; per tile: paint_visibility, cars
    extras: dict = field(default_factory=dict)

    @property
    def free_count(self) -> int:
        return sum(1 for v in self.labels if v == FREE)

    @property
    def occupied_count(self) -> int:
        return sum(1 for v in self.labels if v == OCCUPIED)


# ------------------------------------------------------------------------------------------ geometry
def stall_interior(outline: np.ndarray, gsd: float) -> np.ndarray:
    """The labelled interior of a stall: outline shrunk by max(0.3 m, 2 px) per side, integer vertices."""
    d = max(SHRINK_M / gsd, SHRINK_MIN_PX)
    return np.round(shrink_convex(outline, d)).astype(np.float64)


def clip_to_tile(poly: np.ndarray, size: int) -> np.ndarray:
    """Clip a convex polygon to the pixel grid [0, size - 1]^2 and round the vertices to integers.

    OpenCV clips polygons that leave the canvas in its own way (a stall past the right edge can come
    back as a full-height column on the last pixel), so every polygon is clipped here first: then what
    is written and what ``fillPoly`` draws on an image-sized canvas are the same pixels.
    """
    pts = [tuple(p) for p in np.asarray(poly, np.float64)]
    hi = float(size - 1)
    for axis, bound, keep_ge in ((0, 0.0, True), (0, hi, False), (1, 0.0, True), (1, hi, False)):
        out = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            cur_in = cur[axis] >= bound if keep_ge else cur[axis] <= bound
            prev_in = prev[axis] >= bound if keep_ge else prev[axis] <= bound
            if cur_in != prev_in:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append(tuple(prev[k] + t * (cur[k] - prev[k]) for k in range(2)))
            if cur_in:
                out.append(cur)
        pts = out
        if not pts:
            return np.zeros((0, 2))
    ring = np.round(np.array(pts, np.float64))
    keep = np.any(ring != np.roll(ring, 1, axis=0), axis=1)
    return ring[keep] if keep.any() else ring[:1]


def _area_inside(poly: np.ndarray, size: int) -> float:
    """Share of a convex polygon's area inside the tile (pixel centres span -0.5 .. size - 0.5)."""
    total = abs(cv2.contourArea(poly.astype(np.float32)))
    if total <= 0:
        return 0.0
    tile = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [size - 0.5, size - 0.5], [-0.5, size - 0.5]], np.float32)
    inter, _ = cv2.intersectConvexConvex(poly.astype(np.float32), tile)
    return float(inter) / total


def rasterise(size: int, interiors: Sequence[np.ndarray], labels: Sequence[int]) -> np.ndarray:
    """The documented mask rule: fillPoly of each integer interior polygon with its label value."""
    mask = np.zeros((size, size), np.uint8)
    for poly, value in zip(interiors, labels, strict=True):
        cv2.fillPoly(mask, [np.asarray(poly).astype(np.int32)], int(value))
    return mask


def paint_visibility(site: Site, static: Static) -> float:
    """How well the site's stall markings stand out from the pavement around them: the colour distance
    between the median painted pixel and the median unpainted pavement pixel next to the lines, in units
    of that pavement's own brightness spread (1.4826 x median absolute deviation of luminance: its stains,
    joints and texture). Measured on the static ground (no cars, shade or sensor), 0.0 without lines."""
    if not site.lines:
        return 0.0
    canvas = np.zeros((site.size, site.size), np.uint8)
    draw_segments(canvas, site.lines, site.paint_width_px)
    paved = static.material == site.pavement
    line = (canvas >= max(1, int(canvas.max()) // 2)) & paved
    ring = cv2.dilate(canvas, np.ones((7, 7), np.uint8)) > 0
    near = ring & (cv2.dilate(canvas, np.ones((3, 3), np.uint8)) == 0) & paved
    if line.sum() < 10 or near.sum() < 10:
        return 0.0
    paint, ground = static.ground[line], static.ground[near]
    contrast = float(np.linalg.norm(np.median(paint, axis=0) - np.median(ground, axis=0)))
    luma = ground @ _LUMA
    spread = 1.4826 * float(np.median(np.abs(luma - np.median(luma))))
    return contrast / max(spread, 1.0)


def _site_labels(site: Site, static: Static) -> tuple[list[int], list[np.ndarray], list[str], list[float], float]:
    """Stalls that touch the tile: indices, interiors, why each is ignored ("", "edge", "canopy" or
    "faint") and its share inside the tile; then the site's paint visibility."""
    canopy = static.canopy
    size = site.size
    index, interiors, ignore, shares = [], [], [], []
    ids = np.zeros((size, size), np.int32)
    if not site.stalls:
        return index, interiors, ignore, shares, 0.0
    polys = stall_interior(np.stack([s.outline for s in site.stalls]), site.gsd)
    lo, hi = polys.min(axis=1), polys.max(axis=1)
    fully = np.all(lo >= 0, axis=1) & np.all(hi <= size - 1, axis=1)
    touching = np.all(hi >= -0.5, axis=1) & np.all(lo <= size - 0.5, axis=1)
    for k in np.flatnonzero(touching):
        poly = polys[k]
        inside = 1.0 if fully[k] else _area_inside(poly, size)
        if inside <= 0:
            continue
        clipped = poly if fully[k] else clip_to_tile(poly, size)
        if len(clipped) == 0:
            continue
        index.append(k)
        interiors.append(clipped)
        ignore.append("edge" if inside < MIN_INSIDE else "")
        shares.append(inside)
        cv2.fillPoly(ids, [clipped.astype(np.int32)], len(interiors))
    if interiors and canopy.any():
        n = len(interiors) + 1
        total = np.bincount(ids.ravel(), minlength=n)
        hidden = np.bincount(ids[canopy > 0.5], minlength=n)
        for i in range(len(interiors)):
            if total[i + 1] and hidden[i + 1] > MAX_CANOPY * total[i + 1]:
                ignore[i] = ignore[i] or "canopy"
    visibility = paint_visibility(site, static)
    if visibility < FAINT_VISIBILITY:
        ignore = [reason or "faint" for reason in ignore]
    return index, interiors, ignore, shares, visibility


# --------------------------------------------------------------------------------------------- passes
def _occupancy_rate(rng: np.random.Generator) -> float:
    u = rng.random()
    if u < 0.15:
        return float(rng.uniform(0.0, 0.08))
    if u < 0.3:
        return float(rng.uniform(0.9, 1.0))
    return float(rng.uniform(0.05, 0.95))


def _cars_for_pass(site: Site, rng: np.random.Generator, rate: float) -> tuple[Cars, np.ndarray]:
    """Parked cars for the occupied stalls plus a few moving ones; returns (cars, occupied per stall)."""
    g = site.gsd
    n = len(site.stalls)
    parts = [sample_cars(rng, 0, g)]
    occupied = np.zeros(n, bool)
    if n:
        centres = np.stack([s.outline for s in site.stalls]).mean(axis=1)
        axes = np.array([s.axis for s in site.stalls])
        # occupancy clusters (near entrances, in shade): a gradient and per-stall noise around the rate
        d = rng.normal(size=2)
        d /= np.linalg.norm(d) + 1e-9
        proj = (centres - centres.mean(axis=0)) @ d / max(1.0, float(np.ptp(centres @ d)))
        logit = math.log((rate + 1e-3) / (1 - rate + 1e-3)) + rng.uniform(0, 3) * proj + rng.normal(0, 0.6, n)
        occupied = rng.random(n) < 1 / (1 + np.exp(-logit))
        if rate < 0.02:
            occupied[:] = False
        sel = np.flatnonzero(occupied)
        cars = sample_cars(rng, len(sel), g)
        sloppy = rng.uniform(0.5, 2.5)  # some lots and days are parked neatly, others not
        ang = np.radians(rng.normal(0, 2.0 * sloppy, len(sel)))
        ax = axes[sel]
        ca, sa = np.cos(ang), np.sin(ang)
        axis = np.stack([ax[:, 0] * ca - ax[:, 1] * sa, ax[:, 0] * sa + ax[:, 1] * ca], axis=1)
        kerb = np.array([site.stalls[i].kind == "kerb" for i in sel], bool)
        back_in = (rng.random(len(sel)) < rng.uniform(0.0, 0.25)) & ~kerb
        cars.heading = np.where(back_in[:, None], -axis, axis)
        stall_len = np.array([site.stalls[i].length_px for i in sel])
        # parked cars sit towards the back of the stall; kerb-side cars anywhere along their slot
        # in angled stalls the slanted back line leaves less room for a rectangle's corner
        slant = 1 / np.tan(np.radians([site.stalls[i].angle_deg for i in sel]))
        room = stall_len / 2 - cars.length / 2 - cars.width / 2 * slant
        push = np.maximum(room - rng.uniform(0.15, 0.8, len(sel)) / g, -0.3 / g)
        push = np.where(kerb, rng.normal(0, 0.4, len(sel)) / g, push)
        side = np.stack([-ax[:, 1], ax[:, 0]], axis=1)
        lateral = np.where(kerb, 0.0, rng.normal(0, 0.1 * sloppy, len(sel)) / g)
        cars.centre = centres[sel] + ax * push[:, None] + side * lateral[:, None]
        parts.append(cars)
    # cars driving or stopped in aisles and on roads (never labelled)
    for (p0, p1, width), lane in zip(site.aisles, site.lane_dirs, strict=True):
        k = int(rng.poisson(0.5))
        if not k:
            continue
        pos = p0 + (p1 - p0) * rng.random((k, 1))
        inside = np.all((pos >= 0) & (pos < site.size), axis=1)
        if not inside.any():
            continue
        pos = pos[inside]
        movers = sample_cars(rng, len(pos), g, truck_share=0.15)
        sign = np.where(rng.random(len(pos)) < 0.5, 1.0, -1.0)[:, None]
        normal = np.array([-lane[1], lane[0]])
        offset = max(0.0, min(0.22 * width, width / 2 - 3.6)) / g
        movers.heading = lane[None, :] * sign
        movers.centre = pos + normal[None, :] * sign * offset
        parts.append(movers)
    return Cars.concat(parts), occupied


def _render_site_pass(
    site: Site,
    static: Static,
    labelled: tuple[list[int], list[np.ndarray], list[str], list[float], float],
    rng: np.random.Generator,
    style: str,
    pass_index: int,
    hard_rng: np.random.Generator | None = None,
) -> SyntheticTile:
    index, interiors, ignore, shares, visibility = labelled
    params = sample_pass(rng, style)
    rate = _occupancy_rate(rng)
    cars, occupied = _cars_for_pass(site, rng, rate)
    road_cars = None
    if site.hard and hard_rng is not None:
        hard_modes.adjust_pass(params, site.hard, hard_rng)
        if site.hard == "dark_cars":
            hard_modes.darken_cars(cars, hard_rng)
        elif site.hard == "roadway_cars":
            road_cars = hard_modes.roadway_cars(site, hard_rng)
            cars = Cars.concat([cars, road_cars])
    image = render_pass(site, static, cars, params, rng)
    statuses = ["occupied" if occupied[k] else "free" for k in index]
    labels = [
        IGNORE if ig else (OCCUPIED if st == "occupied" else FREE) for st, ig in zip(statuses, ignore, strict=True)
    ]
    mask = rasterise(site.size, interiors, labels)
    return SyntheticTile(
        image=image,
        mask=mask,
        stalls=[(p.copy(), st) for p, st in zip(interiors, statuses, strict=True)],
        labels=labels,
        gsd=site.gsd,
        site_id=site.site_id,
        pass_index=pass_index,
        style=style,
        sun_azimuth_deg=math.degrees(params.sun_azimuth) % 360,
        sun_elevation_deg=math.degrees(params.sun_elevation),
        occupancy=float(np.mean(occupied)) if len(occupied) else 0.0,
        extras={
            "ignore_reason": list(ignore),
            "inside_share": list(shares),
            "cars": len(cars),
            "paint_visibility": round(visibility, 3),
            "hard": site.hard or "",
            # pixel centres of cars on the road beside the lot (background in the truth)
            "roadway_car_centres": [] if road_cars is None else road_cars.centre.tolist(),
        },
    )


class SiteRenderer:
    """One site laid out and its static layers rendered once; each :meth:`render` call is a new pass.

    ``hard``: None mixes the hard modes of :mod:`parking_ml.synth.hard` in at their modest rate, "none"
    turns them off, a mode's name (``HARD_MODES``) forces it on this site; ``hard_rate`` (per mode) replaces
    ``HARD_RATE`` in the mix.
    """

    def __init__(
        self,
        seed: int,
        index: int,
        size: int,
        gsd: float | tuple[float, float],
        site_id: str,
        hard: str | None = None,
        hard_rate: float | None = None,
    ) -> None:
        mode = hard_modes.pick_mode(seed, index, hard, hard_rate)
        rng = np.random.default_rng([seed, index])
        self.site = build_site(rng, site_id, size, sample_gsd(rng, gsd), seed, hard=mode)
        if mode:
            hard_modes.adjust_site(self.site, mode, hard_modes.site_rng(seed, index))
        self.static = render_static(self.site, rng)
        self.labelled = _site_labels(self.site, self.static)
        self.seed, self.index = seed, index

    def render(self, pass_index: int, style: str = "default") -> SyntheticTile:
        rng = np.random.default_rng([self.seed, self.index, pass_index + 1])
        hard_rng = hard_modes.pass_rng(self.seed, self.index, pass_index) if self.site.hard else None
        return _render_site_pass(self.site, self.static, self.labelled, rng, style, pass_index, hard_rng)


def generate_tile(
    rng_or_seed: np.random.Generator | int,
    size: int = 512,
    gsd: float | tuple[float, float] = 0.1,
    style: str = "default",
    hard: str | None = None,
) -> SyntheticTile:
    """One tile of a fresh site (pass 0). A Generator is consumed for the seed; an int is the seed."""
    if style not in ALL_STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {', '.join(ALL_STYLES)}")
    if isinstance(rng_or_seed, np.random.Generator):
        seed = int(rng_or_seed.integers(0, 2**31 - 1))
    else:
        seed = int(rng_or_seed)
    return SiteRenderer(seed, 0, int(size), gsd, "site-0000", hard=hard).render(0, style)


# ------------------------------------------------------------------------------------------ writing
def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def png_bytes(array: np.ndarray) -> bytes:
    img = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


@dataclass(frozen=True)
class GeoRef:
    epsg: int
    x0: float
    y0: float
    gsd: float

    def transform(self):  # rasterio.Affine
        from rasterio.transform import Affine

        return Affine(self.gsd, 0.0, self.x0, 0.0, -self.gsd, self.y0)


def _georef(seed: int, index: int, gsd: float) -> GeoRef:
    rng = np.random.default_rng([seed, index, 0xC0FFEE])
    zone = int(rng.integers(10, 57))
    return GeoRef(
        32600 + zone,
        round(float(rng.uniform(300_000, 700_000)), 2),
        round(float(rng.uniform(3_000_000, 6_500_000)), 2),
        gsd,
    )


def _geotiff(image: np.ndarray, geo: GeoRef) -> bytes:
    import rasterio
    from rasterio.io import MemoryFile

    h, w = image.shape[:2]
    with MemoryFile() as mem:
        with mem.open(
            driver="GTiff",
            width=w,
            height=h,
            count=3,
            dtype="uint8",
            crs=rasterio.CRS.from_epsg(geo.epsg),
            transform=geo.transform(),
            compress="deflate",
            photometric="RGB",
        ) as ds:
            ds.write(np.moveaxis(image, 2, 0))
        return mem.read()


def tile_geojson(tile: SyntheticTile, geo: GeoRef | None = None) -> dict:
    """FeatureCollection of stall interiors (pixel coordinates, or map coordinates with ``geo``)."""
    features = []
    t = geo.transform() if geo else None
    for i, ((poly, status), label) in enumerate(zip(tile.stalls, tile.labels, strict=True)):
        ring = [[float(x), float(y)] for x, y in poly]
        if t is not None:
            ring = [list(t @ (x, y)) for x, y in ring]
        ring.append(ring[0])
        features.append(
            {
                "type": "Feature",
                "id": i,
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"status": status, "label": int(label), "ignore": label == IGNORE},
            }
        )
    out: dict = {"type": "FeatureCollection"}
    if geo:
        out["crs"] = {"type": "name", "properties": {"name": f"EPSG:{geo.epsg}"}}
        out["coordinate_space"] = "map"
    else:
        out["coordinate_space"] = "pixel"
    out["gsd"] = tile.gsd
    out["site"] = tile.site_id
    out["features"] = features
    return out


# why: a site's style draws from its own stream, so a single-style batch is written byte for byte as before
STYLE_STREAM = 0x5354


def pick_style(seed: int, index: int, styles: Sequence[str]) -> str:
    """The style of site ``index``: the only one given, or one of ``styles`` drawn uniformly (repeats weight)."""
    if len(styles) == 1:
        return styles[0]
    return styles[int(np.random.default_rng([seed, index, STYLE_STREAM]).integers(len(styles)))]


def _split_passes(n: int, sites: int) -> list[int]:
    return [n // sites + (1 if i < n % sites else 0) for i in range(sites)]


def generate_dataset(
    out_dir: Path,
    n: int,
    seed: int,
    size: int = 512,
    gsd: float | tuple[float, float] = (0.08, 0.3),
    style: str | Sequence[str] = "default",
    sites: int | None = None,
    geotiff: bool = False,
    progress: bool = True,
    hard: str | None = None,
    hard_rate: float | None = None,
) -> list[Path]:
    """Write ``n`` tiles grouped into sites (default ~4 passes each) under ``out_dir``; returns image paths.

    ``style``: one style, or several: each site draws one of them (repeat a name to weight it, see pick_style).
    ``hard``, ``hard_rate``: as :class:`SiteRenderer` (None: the default mix of hard modes; "none"; or one mode
    forced)."""
    if n < 1:
        raise ValueError(f"n must be >= 1 (got {n})")
    styles = (style,) if isinstance(style, str) else tuple(style)
    if not styles or any(s not in ALL_STYLES for s in styles):
        raise ValueError(f"unknown style {style!r}; choose one of {', '.join(ALL_STYLES)}")
    hard_modes.pick_mode(seed, 0, hard, hard_rate)  # a bad mode or rate fails before anything is written
    if size < 32:
        raise ValueError(f"size must be >= 32 px (got {size})")
    gsd_values = gsd if isinstance(gsd, tuple | list) else (gsd,)
    if len(gsd_values) not in (1, 2) or not all(0 < float(v) <= 5 for v in gsd_values):
        raise ValueError(f"gsd must be metres per pixel in (0, 5], one value or a (low, high) pair (got {gsd!r})")
    sites = max(1, min(n, sites if sites else math.ceil(n / 4)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="synth", unit="tile")
    for index, passes in enumerate(_split_passes(n, sites)):
        site_id = f"s{seed}-site-{index:04d}"
        sr = SiteRenderer(seed, index, size, gsd, site_id, hard=hard, hard_rate=hard_rate)
        site_style = pick_style(seed, index, styles)
        site_dir = out_dir / site_id
        site_dir.mkdir(exist_ok=True)
        geo = _georef(seed, index, sr.site.gsd) if geotiff else None
        for p in range(passes):
            tile = sr.render(p, site_style)
            stem = f"{site_id}_p{p:02d}"
            img_path = site_dir / (f"{stem}.tif" if geotiff else f"{stem}.png")
            atomic_write(img_path, _geotiff(tile.image, geo) if geo else png_bytes(tile.image))
            atomic_write(site_dir / f"{stem}.mask.png", png_bytes(tile.mask))
            text = json.dumps(tile_geojson(tile, geo), separators=(",", ":"))
            atomic_write(site_dir / f"{stem}.geojson", text.encode())
            paths.append(img_path)
            if bar is not None:
                bar.update(1)
        logger.info(
            "synth site written", extra={"site": site_id, "passes": passes, "gsd": sr.site.gsd, "hard": sr.site.hard}
        )
    if bar is not None:
        bar.close()
    return paths


__all__ = [
    "ALL_STYLES",
    "STYLES",
    "SiteRenderer",
    "SyntheticTile",
    "generate_dataset",
    "generate_tile",
    "stall_interior",
    "tile_geojson",
]
