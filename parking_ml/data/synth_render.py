"""Synthetic parking-lot rendering: ground textures, paint, cars, trees, shadows, light and sensor effects.

A site's static layers (ground, paint, roofs, tree canopies) are rendered once by :func:`render_static`
and reused for each pass; :func:`render_pass` adds what changes between passes: parked and moving cars,
one sun direction for every shadow, season, light, haze and the sensor's blur, noise and compression.
All drawing is vectorised numpy plus OpenCV primitives on the full tile, so a 512 px tile takes tens of
milliseconds on one core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from parking_ml.data.synth_layout import ASPHALT, CONCRETE, GRASS, ISLAND, ROAD, SOIL, Site

STYLES = ("default", "winter", "dusk", "sensor")
_SUB = 8  # sub-pixel precision of cv2 drawing (shift=3)


# --------------------------------------------------------------------------------------------- noise
def value_noise(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> np.ndarray:
    """Smooth noise with features of about ``cell`` pixels (several octaves), roughly zero mean, unit std."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    c = max(float(cell), 1.0)
    for _ in range(octaves):
        if c < 1.5:
            out += amp * rng.standard_normal((h, w), dtype=np.float32)
        else:
            gh, gw = math.ceil(h / c) + 4, math.ceil(w / c) + 4
            grid = rng.standard_normal((gh, gw), dtype=np.float32)
            ox, oy = rng.uniform(1, 2, 2)
            # sample the grid straight at the tile's pixels (a resize would build the whole padded grid)
            m = np.float32([[1 / c, 0, ox], [0, 1 / c, oy]])
            flags = (cv2.INTER_CUBIC if amp == 1.0 else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
            out += amp * cv2.warpAffine(grid, m, (w, h), flags=flags, borderMode=cv2.BORDER_REFLECT)
        total += amp * amp
        amp *= 0.5
        c /= 2.0
    return out / math.sqrt(total)


def _pts(poly: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(poly) * _SUB).astype(np.int32)


def _fill(img: np.ndarray, polys: list[np.ndarray], colour: object) -> None:
    if polys:
        cv2.fillPoly(img, [_pts(p) for p in polys], colour, lineType=cv2.LINE_AA, shift=3)


def _seg_quad(p0: np.ndarray, p1: np.ndarray, width: float) -> np.ndarray:
    d = p1 - p0
    n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9) * (width / 2)
    return np.stack([p0 + n, p1 + n, p1 - n, p0 - n])


def draw_segments(canvas: np.ndarray, segs: list[tuple[np.ndarray, np.ndarray]], width: float) -> None:
    """Thin painted lines: sub-pixel widths become proportionally fainter anti-aliased 1 px lines."""
    if not segs:
        return
    thick = max(1, round(width))
    value = round(255 * min(1.0, width / thick))
    ends = _pts(np.array([(a, b) for a, b in segs], np.float64))
    cv2.polylines(canvas, list(ends), False, value, thick, cv2.LINE_AA, 3)


# ------------------------------------------------------------------------------------- static layers
@dataclass
class Static:
    ground: np.ndarray  # HxWx3 float32 RGB
    material: np.ndarray  # HxW uint8
    roofs: np.ndarray  # HxW uint8 255 where a roof is
    canopy: np.ndarray  # HxW float32 alpha in 0..1
    veg: np.ndarray  # HxW float32 1 on grass and planted islands
    leafy: np.ndarray  # HxW float32 texture of light through crowns (tree shadows)
    canopy_idx: np.ndarray  # flat pixel indices under any canopy; the per-pixel arrays below follow it
    canopy_a: np.ndarray
    canopy_px_rgb: np.ndarray  # K x 3
    canopy_base: np.ndarray  # shading that does not depend on the sun
    slope_x: np.ndarray  # canopy surface slope terms, dotted with the sun direction per pass
    slope_y: np.ndarray
    conifer_px: np.ndarray
    noise: np.ndarray  # (H + 64) x (W + 64) x 3 standard normal; each pass reads a shifted window of it


_BASE = {
    GRASS: (92, 112, 62),
    SOIL: (150, 132, 108),
    CONCRETE: (178, 175, 168),
    ROAD: (98, 99, 101),
    ISLAND: (86, 102, 60),
}


def render_static(site: Site, rng: np.random.Generator) -> Static:
    h = w = site.size
    g = site.gsd
    material = np.full((h, w), site.ground_kind, np.uint8)
    for mat, poly in site.regions:
        cv2.fillPoly(material, [_pts(poly)], int(mat), shift=3)

    # colour tables with per-site jitter
    base = np.zeros((8, 3), np.float32)
    for mat, rgb in _BASE.items():
        base[mat] = np.array(rgb) * rng.uniform(0.85, 1.12) + rng.normal(0, 4, 3)
    if rng.random() < 0.3:  # dry grass / bark mulch on islands
        base[GRASS] = np.array([140, 132, 92]) * rng.uniform(0.85, 1.1)
    if rng.random() < 0.4:
        base[ISLAND] = np.array([112, 86, 66]) * rng.uniform(0.8, 1.1)
    t = site.pavement_tone
    asphalt = np.array([44, 46, 49]) * (1 - t) + np.array([128, 127, 123]) * t
    base[ASPHALT] = asphalt * rng.uniform(0.92, 1.08) + rng.normal(0, 3, 3)
    amp_mid = np.array([0.13, 0.1, 0.05, 0.07, 0.06, 0.14, 0, 0], np.float32)
    amp_fine = np.array([0.08, 0.06, 0.08, 0.05, 0.07, 0.1, 0, 0], np.float32)
    amp_large = np.array([0.1, 0.08, 0.06, 0.05, 0.05, 0.08, 0, 0], np.float32)

    n_large = value_noise(rng, h, w, max(8.0, 25.0 / g), 2)
    n_mid = value_noise(rng, h, w, max(3.0, 2.0 / g), 3)
    n_fine = value_noise(rng, h, w, 1.0, 1)
    n_fine = cv2.GaussianBlur(n_fine, (0, 0), 0.6) * 1.8
    factor = 1 + amp_large[material] * n_large + amp_mid[material] * n_mid + amp_fine[material] * n_fine
    ground = base[material] * factor[..., None]
    # grass is patchy in hue (clover, dry spots), not only in brightness
    veg_f = ((material == GRASS) | (material == ISLAND)).astype(np.float32)
    hue = value_noise(rng, h, w, max(4.0, 4.0 / g), 2) * veg_f
    ground += hue[..., None] * np.array([10, 4, -2], np.float32)

    # stains, cracks and patches belong to the lot and the roads, not to plazas or sidewalks around
    paved = (material == site.pavement) | (material == ROAD)
    _pavement_wear(site, rng, ground, paved, n_mid)
    _paint(site, rng, ground, material, n_mid)
    _curbs(site, rng, ground)
    roofs = _roofs(site, rng, ground)
    canopy, canopy_rgb, canopy_height, conifer = _canopies(site, rng)
    leafy = 0.8 + 0.2 * np.clip(value_noise(rng, h, w, max(2.0, 0.6 / g), 1), -1, 1)
    gx = cv2.Sobel(canopy_height, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(canopy_height, cv2.CV_32F, 0, 1, ksize=3)
    norm = np.sqrt(gx * gx + gy * gy) + 0.02
    k = np.minimum(norm * 6, 1.0) / norm
    idx = np.flatnonzero(canopy.ravel() > 0.002)
    return Static(
        ground=ground,
        material=material,
        roofs=roofs,
        canopy=canopy,
        veg=veg_f,
        leafy=leafy.astype(np.float32),
        canopy_idx=idx,
        canopy_a=canopy.ravel()[idx],
        canopy_px_rgb=canopy_rgb.reshape(-1, 3)[idx],
        canopy_base=(0.75 + 0.2 * canopy_height).ravel()[idx],
        slope_x=(gx * k).ravel()[idx],
        slope_y=(gy * k).ravel()[idx],
        conifer_px=conifer.ravel()[idx],
        # drawing Gaussian noise costs more than the rest of the finish; a per-site bank read at a random
        # offset (and sign) per pass keeps the sensor noise independent of the scene at a fraction of that
        noise=rng.standard_normal((h + 64, w + 64, 3), dtype=np.float32),
    )


def _pavement_wear(
    site: Site, rng: np.random.Generator, ground: np.ndarray, paved: np.ndarray, n_mid: np.ndarray
) -> None:
    h, w = paved.shape
    g = site.gsd
    dark = np.zeros((h, w), np.uint8)
    # oil drips in the middle of stalls, where engines stand
    if site.stalls:
        outlines = np.stack([s.outline for s in site.stalls])
        axes = np.stack([s.axis for s in site.stalls])
        lengths = np.array([s.length_px for s in site.stalls])
        n = len(outlines)
        pick = rng.random(n) < 0.55
        centres = outlines.mean(axis=1) + axes * (rng.normal(0.12, 0.08, n) * lengths)[:, None]
        r = rng.uniform(0.25, 0.7, n) / g
        r2 = r * rng.uniform(0.5, 1.0, n)
        ang = rng.uniform(0, 180, n)
        val = rng.integers(60, 170, n)
        inside = np.all((centres > -r[:, None]) & (centres < np.array([w, h]) + r[:, None]), axis=1)
        pc = _pts(centres)
        for i in np.flatnonzero(pick & inside):
            axes_i = (max(1, int(r[i] * _SUB)), max(1, int(r2[i] * _SUB)))
            cv2.ellipse(
                dark, (int(pc[i, 0]), int(pc[i, 1])), axes_i, float(ang[i]), 0, 360, int(val[i]), -1, cv2.LINE_AA, 3
            )
    # tyre wear along aisles and roads
    for a, b, width in site.aisles:
        for off in (-0.22, 0.22):
            d = b - a
            n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9) * off * width / g
            cv2.line(
                dark,
                tuple(_pts(a + n)),
                tuple(_pts(b + n)),
                int(rng.integers(20, 50)),
                max(1, int(0.9 / g)),
                cv2.LINE_AA,
                3,
            )
    # random stains
    for _ in range(int(rng.poisson(0.012 * h * w * g * g))):
        c = rng.uniform(0, [w, h])
        r = rng.uniform(0.2, 1.4) / g
        cv2.ellipse(
            dark,
            tuple(_pts(c)),
            (int(r * _SUB), int(r * rng.uniform(0.3, 1) * _SUB)),
            float(rng.uniform(0, 180)),
            0,
            360,
            int(rng.integers(15, 60)),
            -1,
            cv2.LINE_AA,
            3,
        )
    # cracks: random walks
    for _ in range(int(rng.poisson(6 * site.pavement_tone + 1))):
        p = rng.uniform(0, [w, h])
        ang = rng.uniform(0, 2 * math.pi)
        pts = [p]
        for _k in range(int(rng.integers(6, 30))):
            ang += rng.normal(0, 0.5)
            p = p + np.array([math.cos(ang), math.sin(ang)]) * rng.uniform(0.3, 1.2) / g
            pts.append(p)
        cv2.polylines(dark, [_pts(np.array(pts))], False, int(rng.integers(90, 160)), 1, cv2.LINE_AA, 3)
    if site.pavement == CONCRETE:  # expansion joints in a grid aligned with the lot
        step = rng.uniform(4.5, 6.5) / g
        c, s_ = math.cos(site.rotation), math.sin(site.rotation)
        ux, vy = np.array([c, s_]), np.array([-s_, c])
        span = 2 * max(h, w)
        centre = np.array([w / 2, h / 2])
        for k in range(-int(span / step), int(span / step) + 1):
            for e1, e2 in ((ux, vy), (vy, ux)):
                p0 = centre + e1 * k * step - e2 * span
                p1 = centre + e1 * k * step + e2 * span
                cv2.line(dark, tuple(_pts(p0)), tuple(_pts(p1)), 110, 1, cv2.LINE_AA, 3)
    darkf = cv2.GaussianBlur(dark, (0, 0), max(0.4, 0.08 / g)).astype(np.float32) / 255.0
    darkf *= paved
    ground *= (1 - 0.55 * darkf)[..., None]
    # repaved patches: crisp-edged rectangles of another tone
    for _ in range(int(rng.poisson(1.2))):
        c = rng.uniform(0, [w, h])
        sz = rng.uniform(1.5, 8.0, 2) / g
        ang = site.rotation + rng.normal(0, 0.05)
        poly = cv2.boxPoints(((float(c[0]), float(c[1])), (float(sz[0]), float(sz[1])), math.degrees(ang)))
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [_pts(poly)], 255, cv2.LINE_AA, 3)
        k = (m.astype(np.float32) / 255.0) * paved
        ground *= (1 + k * rng.uniform(-0.3, 0.25))[..., None]
    # sealcoat is never uniform: large soft blotches
    ground *= (1 + 0.04 * n_mid * paved)[..., None]


def _paint(site: Site, rng: np.random.Generator, ground: np.ndarray, material: np.ndarray, n_mid: np.ndarray) -> None:
    h, w = material.shape
    g = site.gsd
    canvas = np.zeros((h, w), np.uint8)
    draw_segments(canvas, site.lines, site.paint_width_px)
    for tail, tip in site.arrows:
        d = tip - tail
        n = np.array([-d[1], d[0]])
        head = tip - d * 0.35
        shaft = _seg_quad(tail, head, 0.25 / g)
        _fill(canvas, [shaft, np.stack([tip, head + n * 0.25, head - n * 0.25])], 255)
    hatch = np.zeros_like(canvas)
    for poly in site.hatches:
        region = np.zeros_like(canvas)
        _fill(region, [poly], 255)
        c = poly.mean(axis=0)
        diag = np.array([1.0, 1.0]) / math.sqrt(2)
        n = np.array([-diag[1], diag[0]])
        r = float(np.max(np.linalg.norm(poly - c, axis=1)))
        stripes = np.zeros_like(canvas)
        step = 0.6 / g
        for k in np.arange(-r, r, step):
            _draw_segments_one(stripes, c + n * k - diag * r, c + n * k + diag * r, site.paint_width_px)
        hatch = np.maximum(hatch, cv2.min(stripes, region))
    # worn paint: smooth fading plus speckles where tyres scraped it off
    fade = np.clip(0.75 + 0.5 * n_mid, 0.2, 1.0) * site.paint_opacity
    speck = rng.random((h, w), dtype=np.float32)
    fade *= np.where(speck < 0.12 * (1 - site.paint_opacity), 0.3, 1.0).astype(np.float32)
    paint = np.array(site.paint_rgb, np.float32) * rng.uniform(0.9, 1.03)
    if site.ghost is not None and site.lines:
        ghost = np.zeros_like(canvas)
        draw_segments(ghost, [(a + site.ghost, b + site.ghost) for a, b in site.lines], site.paint_width_px)
        _blend(ground, ghost, paint * 0.8, 0.22)
    _blend(ground, np.maximum(canvas, hatch), paint, fade)
    if site.accessible:
        blue = np.zeros_like(canvas)
        inner = [_shrink(p, 0.2 / g) for p in site.accessible]
        _fill(blue, inner, 255)
        _blend(ground, blue, (40, 90, 165), 0.7 * site.paint_opacity)
        sym = np.zeros_like(canvas)
        for p in site.accessible:
            c = p.mean(axis=0)
            cv2.circle(sym, tuple(_pts(c)), int(0.45 / g * _SUB), 255, max(1, int(0.12 / g)), cv2.LINE_AA, 3)
        _blend(ground, sym, (235, 235, 235), site.paint_opacity)
    road = np.zeros_like(canvas)
    for p0, p1, dashed in site.road_lines:
        d = p1 - p0
        n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9) * 0.12 / g
        if dashed:
            length = np.linalg.norm(d)
            u = d / length
            step = 9.0 / g
            segs = [(p0 + u * k, p0 + u * (k + 3.0 / g)) for k in np.arange(0, length, step)]
            draw_segments(road, segs, 0.12 / g)
        else:
            draw_segments(road, [(p0 + n, p1 + n), (p0 - n, p1 - n)], 0.12 / g)
    colour = (225, 190, 70) if rng.random() < 0.6 else (235, 235, 230)
    _blend(ground, road, colour, 0.85)


def _blend(ground: np.ndarray, coverage: np.ndarray, colour: object, scale: float | np.ndarray = 1.0) -> None:
    """ground = ground * (1 - a) + colour * a with a = coverage / 255 * scale, touching covered pixels only."""
    idx = np.flatnonzero(coverage)
    if not len(idx):
        return
    a = coverage.ravel()[idx].astype(np.float32) / 255.0
    a *= scale if np.isscalar(scale) else np.asarray(scale).ravel()[idx]
    a = a[:, None]
    flat = ground.reshape(-1, 3)
    col = np.asarray(colour, np.float32)
    if col.ndim == 3:
        col = col.reshape(-1, 3)[idx]
    flat[idx] = flat[idx] * (1 - a) + a * col


def _draw_segments_one(canvas: np.ndarray, a: np.ndarray, b: np.ndarray, width: float) -> None:
    draw_segments(canvas, [(a, b)], max(width, 1.0))


def _shrink(poly: np.ndarray, d: float) -> np.ndarray:
    from parking_ml.data.synth_layout import shrink_convex

    return shrink_convex(poly, d)


def _curbs(site: Site, rng: np.random.Generator, ground: np.ndarray) -> None:
    if not site.curbs:
        return
    canvas = np.zeros(ground.shape[:2], np.uint8)
    width = max(1, round(0.2 / site.gsd))
    cv2.polylines(canvas, [_pts(p) for p in site.curbs], True, 255, width, cv2.LINE_AA, 3)
    _blend(ground, canvas, (196, 194, 186), rng.uniform(0.5, 0.9))


def _roofs(site: Site, rng: np.random.Generator, ground: np.ndarray) -> np.ndarray:
    h, w = ground.shape[:2]
    roofs = np.zeros((h, w), np.uint8)
    g = site.gsd
    tex = None
    for bd in site.buildings:
        m = np.zeros((h, w), np.uint8)
        _fill(m, [bd.roof], 255)
        if not m.any():
            continue
        if tex is None:  # one membrane/gravel texture for all roofs of the site
            tex = 1 + 0.04 * value_noise(rng, h, w, max(2.0, 1.5 / g), 2)
        roofs = np.maximum(roofs, m)
        _blend(ground, m, np.array(bd.colour, np.float32) * tex[..., None])
        rim = np.zeros((h, w), np.uint8)
        cv2.polylines(rim, [_pts(bd.roof)], True, 255, max(1, int(0.4 / g)), cv2.LINE_AA, 3)
        _blend(ground, cv2.min(rim, m), np.array(bd.colour, np.float32) * 0.75)
        # rooftop units with their own small shadows
        c = bd.roof.mean(axis=0)
        e1 = (bd.roof[1] - bd.roof[0]) / 2
        e2 = (bd.roof[3] - bd.roof[0]) / 2
        u1 = e1 / (np.linalg.norm(e1) + 1e-9)
        u2 = e2 / (np.linalg.norm(e2) + 1e-9)
        boxes = []
        units = int(rng.integers(0, 8)) if abs(cv2.contourArea(bd.roof.astype(np.float32))) * g * g > 100 else 0
        for _ in range(units):
            p = c + e1 * rng.uniform(-0.8, 0.8) + e2 * rng.uniform(-0.8, 0.8)
            sz = rng.uniform(1.0, 3.5, 2) / g
            boxes.append(np.stack([p, p + u1 * sz[0], p + u1 * sz[0] + u2 * sz[1], p + u2 * sz[1]]))
        if boxes:
            shadow = np.zeros((h, w), np.uint8)
            _fill(shadow, [b + np.array([0.6, 0.6]) / g for b in boxes], 255)
            _blend(ground, cv2.min(shadow, m), (0, 0, 0), 0.4)
            box = np.zeros((h, w), np.uint8)
            _fill(box, boxes, 255)
            _blend(ground, box, np.array([200, 200, 198]) * rng.uniform(0.8, 1.1))
    return roofs


def _canopies(site: Site, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    h = w = site.size
    alpha = np.zeros((h, w), np.uint8)
    conifer = np.zeros((h, w), np.uint8)
    rgb = np.zeros((h, w, 3), np.uint8)
    trees = site.trees
    keep = (trees[:, 0] > -trees[:, 2] * 2) & (trees[:, 0] < w + trees[:, 2] * 2)
    keep &= (trees[:, 1] > -trees[:, 2] * 2) & (trees[:, 1] < h + trees[:, 2] * 2)
    for x, y, r, _height, is_conifer in trees[keep]:
        if is_conifer:
            colour = np.array([38, 58, 44]) * rng.uniform(0.8, 1.2)
            lobes = [(x, y, r * 0.7)]
        else:
            colour = np.array([rng.uniform(55, 95), rng.uniform(78, 112), rng.uniform(38, 62)])
            lobes = [(x, y, r * 0.72)]
            for _ in range(int(rng.integers(3, 7))):
                a = rng.uniform(0, 2 * math.pi)
                d = r * rng.uniform(0.25, 0.45)
                lobes.append((x + d * math.cos(a), y + d * math.sin(a), r * rng.uniform(0.45, 0.62)))
        for lx, ly, lr in lobes:
            centre = (int(lx * _SUB), int(ly * _SUB))
            cv2.circle(alpha, centre, int(lr * _SUB), 255, -1, cv2.LINE_AA, 3)
            cv2.circle(rgb, centre, int(lr * _SUB), tuple(float(v) for v in colour), -1, cv2.LINE_AA, 3)
            if is_conifer:
                cv2.circle(conifer, centre, int(lr * _SUB), 255, -1, cv2.LINE_AA, 3)
    out_a = np.zeros((h, w), np.float32)
    out_rgb = np.zeros((h, w, 3), np.float32)
    out_h = np.zeros((h, w), np.float32)
    out_c = conifer.astype(np.float32) / 255.0
    rows = np.flatnonzero(alpha.max(axis=1))
    if not len(rows):
        return out_a, out_rgb, out_h, out_c
    g = site.gsd
    # work inside the crowns' bounding box (plus the blur reach): most tiles hold a few trees only
    pad = int(3 * max(1.5, 1.2 / g)) + 2
    cols = np.flatnonzero(alpha.max(axis=0))
    r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, h)
    c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, w)
    al = alpha[r0:r1, c0:c1].astype(np.float32) / 255.0
    hh, ww = al.shape
    clumps = value_noise(rng, hh, ww, max(2.0, 0.9 / g), 2)
    fine = value_noise(rng, hh, ww, max(1.0, 0.3 / g), 1)
    # ragged leafy edge rather than a perfect disc
    edge = cv2.GaussianBlur(al, (0, 0), max(0.8, 0.35 / g))
    inside = edge > 0.05
    out_a[r0:r1, c0:c1] = np.clip((edge - 0.5 + 0.25 * clumps + 0.1 * fine) * 3.0 + 0.5, 0, 1) * inside
    height = cv2.GaussianBlur(al, (0, 0), max(1.5, 1.2 / g))
    out_h[r0:r1, c0:c1] = height + 0.12 * clumps * inside + 0.05 * fine
    rgbf = rgb[r0:r1, c0:c1].astype(np.float32) / np.maximum(al[..., None], 1e-3)
    out_rgb[r0:r1, c0:c1] = np.clip(rgbf, 0, 255) * (1 + 0.12 * fine)[..., None]
    return out_a, out_rgb, out_h, out_c


# --------------------------------------------------------------------------------------------- cars
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
    both = _pts(np.concatenate([contact, fp + off[:, None, :]], axis=1))
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
    body = _pts(_frame(cars, _BODY))
    inset = _BODY * (1 - 2 * _RIM / (np.stack([cars.length, cars.width], 1)[:, None, :] * gsd))
    rim = _RIM / gsd > 0.45  # below half a pixel the darker rim is lost in the blur anyway
    inner = _pts(_frame(cars, inset))
    dark = _pts(_frame(cars, _DARK_SIDE[None] * -flip))
    high = _pts(_frame(cars, _HIGHLIGHT[None] * flip))
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
                p: _pts(_frame(sub, poly + rng.normal(0, 0.012, poly.shape))) for p, poly in _CAR_PARTS[name].items()
            }
            parts["glass_l"] = _pts(_frame(sub, _SIDE_GLASS))
            parts["glass_r"] = _pts(_frame(sub, _SIDE_GLASS * np.array([1.0, -1.0])))
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
@dataclass
class PassParams:
    style: str
    sun_azimuth: float  # radians, direction towards the sun in the image plane
    sun_elevation: float  # radians
    shadow_strength: float
    gain: float
    gamma: float
    colour: np.ndarray  # 3x3 colour response
    saturation: float
    haze: float
    haze_rgb: np.ndarray
    blur: float
    sharpen: float
    noise: float
    jpeg: int  # 0 = none
    chroma_sub: int
    snow: float
    band_shift: float
    resample: float  # >1: the source was this much coarser and was upsampled to the delivered gsd
    seam: float  # != 1: a mosaic seam crosses the tile; the far side's gain is multiplied by this
    cloud: float  # opacity of a thin cloud veil (0 = clear)
    season: float  # -1 dry/autumn .. 1 lush


def sample_pass(rng: np.random.Generator, style: str) -> PassParams:
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    cast = np.diag(rng.normal(1.0, 0.035, 3))
    p = PassParams(
        style=style,
        sun_azimuth=float(rng.uniform(0, 2 * math.pi)),
        sun_elevation=math.radians(rng.uniform(32, 72)),
        shadow_strength=float(rng.uniform(0.45, 0.68)),
        gain=float(rng.uniform(0.85, 1.15)),
        gamma=float(rng.uniform(0.88, 1.12)),
        colour=cast,
        saturation=float(rng.uniform(0.7, 1.1)),
        haze=float(rng.uniform(0.0, 0.14)),
        haze_rgb=np.array([200, 206, 218], np.float32) * rng.uniform(0.9, 1.05),
        blur=float(rng.uniform(0.35, 1.0)),
        sharpen=float(rng.uniform(0.0, 0.6)) if rng.random() < 0.4 else 0.0,
        noise=float(rng.uniform(1.0, 4.0)),
        jpeg=int(rng.integers(55, 96)) if rng.random() < 0.65 else 0,
        chroma_sub=1,
        snow=0.0,
        band_shift=0.0,
        resample=float(rng.uniform(1.2, 2.0)) if rng.random() < 0.3 else 1.0,
        seam=float(rng.uniform(0.85, 1.15)) if rng.random() < 0.1 else 1.0,
        cloud=float(rng.uniform(0.15, 0.5)) if rng.random() < 0.06 else 0.0,
        season=float(rng.uniform(-1, 1)),
    )
    if style == "winter":
        p.sun_elevation = math.radians(rng.uniform(12, 28))
        p.shadow_strength = float(rng.uniform(0.25, 0.5))
        p.colour = np.diag([0.95, 1.0, 1.07]) @ cast
        p.saturation = float(rng.uniform(0.45, 0.75))
        p.haze = float(rng.uniform(0.08, 0.25))
        p.snow = float(rng.uniform(0.5, 1.0))
        p.season = -1.0
    elif style == "dusk":
        p.sun_elevation = math.radians(rng.uniform(4, 13))
        p.shadow_strength = float(rng.uniform(0.5, 0.72))
        p.gain = float(rng.uniform(0.45, 0.7))
        p.colour = np.diag([1.14, 0.98, 0.76]) @ cast
        p.noise = float(rng.uniform(3.0, 7.0))
        p.haze_rgb = np.array([190, 150, 120], np.float32)
    elif style == "sensor":
        mix = np.eye(3) + rng.normal(0, 0.07, (3, 3))
        p.colour = mix / mix.sum(axis=1, keepdims=True) * rng.uniform(0.92, 1.1, (3, 1))
        p.gamma = float(rng.uniform(0.75, 1.3))
        p.saturation = float(rng.uniform(0.9, 1.5))
        p.sharpen = float(rng.uniform(0.8, 1.8))
        p.noise = float(rng.uniform(3.0, 8.0))
        p.jpeg = int(rng.integers(35, 75))
        p.chroma_sub = int(rng.choice([2, 4]))
        p.band_shift = float(rng.uniform(0.4, 1.2))
        p.resample = float(rng.uniform(1.5, 2.5))
    return p


# ------------------------------------------------------------------------------------------- passes
def render_pass(site: Site, static: Static, cars: Cars, params: PassParams, rng: np.random.Generator) -> np.ndarray:
    """Compose one pass: ground + car shadows + cars + tall shadows + canopies, then light and sensor."""
    h = w = site.size
    g = site.gsd
    sun = np.array([math.cos(params.sun_azimuth), math.sin(params.sun_azimuth)])
    away = -sun / math.tan(params.sun_elevation)  # shadow offset per metre of height, in metres
    img = static.ground.copy()
    if params.season:
        tint = np.array([12, 2, -4], np.float32) * -params.season
        img += static.veg[..., None] * tint
    if params.snow > 0:
        _snow(site, static, img, params, rng)
    if params.style == "dusk" and len(site.poles) and rng.random() < 0.6:
        _lamp_glow(site, img)

    low = np.zeros((h, w), np.uint8)
    draw_car_shadows(low, cars, away, g)
    _shade(img, low, params.shadow_strength, max(0.5, 0.1 / g))
    u8 = _to_u8(img)
    if params.snow > 0:
        cars.snow_roof = rng.random(len(cars)) < 0.4 * params.snow
    draw_cars(u8, cars, sun, rng, g)
    img = u8.astype(np.float32)

    tall = np.zeros((h, w), np.uint8)
    _tall_shadows(site, tall, away)
    if static.roofs.any():
        tall = cv2.min(tall, 255 - static.roofs)
    _shade(img, tall, params.shadow_strength, max(0.7, 0.25 / g), static.leafy)
    _composite_canopy(static, img, sun, params)
    _poles(site, img)
    return _finish(img, params, rng, static.noise)


def _shade(img: np.ndarray, mask: np.ndarray, strength: float, blur: float, tex: np.ndarray | None = None) -> None:
    if not mask.any():
        return
    m = cv2.GaussianBlur(mask, (0, 0), blur).astype(np.float32)
    m *= strength / 255.0
    if tex is not None:
        m *= tex
    # skylight fills shadows, so they turn blue as well as dark
    factor = cv2.merge([1.0 - m, 1.0 - 0.95 * m, 1.0 - 0.82 * m])
    cv2.multiply(img, factor, dst=img)


def _to_u8(img: np.ndarray) -> np.ndarray:
    """Round and saturate float pixels to uint8 in one OpenCV pass."""
    return cv2.add(img, 0.5, dtype=cv2.CV_8U)


def _tall_shadows(site: Site, canvas: np.ndarray, away: np.ndarray) -> None:
    g = site.gsd
    elong = min(math.sqrt(1.0 + float(away @ away)), 2.5)  # a crown's shadow stretches by 1/sin(elev)
    ang = math.degrees(math.atan2(away[1], away[0]))
    for x, y, r, height, _conifer in site.trees:
        off = away * (height * 0.65) / g
        c = np.array([x, y]) + off
        if not (-3 * r - abs(off[0]) < c[0] < site.size + 3 * r + abs(off[0])):
            continue
        axes = (int(r * 0.9 * elong * _SUB), int(r * 0.9 * _SUB))
        cv2.ellipse(canvas, tuple(_pts(c)), axes, ang, 0, 360, 255, -1, cv2.LINE_AA, 3)
        cv2.line(canvas, tuple(_pts(np.array([x, y]))), tuple(_pts(c)), 255, max(1, int(0.35 / g)), cv2.LINE_AA, 3)
    for x, y, height in site.poles:
        p0 = np.array([x, y])
        p1 = p0 + away * height / g
        cv2.line(canvas, tuple(_pts(p0)), tuple(_pts(p1)), 255, max(1, round(0.25 / g)), cv2.LINE_AA, 3)
        cv2.circle(canvas, tuple(_pts(p1)), max(1, int(0.35 / g * _SUB)), 255, -1, cv2.LINE_AA, 3)
    polys = []
    for bd in site.buildings:
        off = away * bd.height_m / g
        polys.append(cv2.convexHull(np.concatenate([bd.roof, bd.roof + off]).astype(np.float32))[:, 0, :])
    _fill(canvas, polys, 255)


def _composite_canopy(static: Static, img: np.ndarray, sun: np.ndarray, params: PassParams) -> None:
    """Blend the crowns over the image, lit from ``sun``; only the pixels under a canopy are touched."""
    if not len(static.canopy_idx):
        return
    shade = static.canopy_base + 0.45 * (static.slope_x * float(sun[0]) + static.slope_y * float(sun[1]))
    shade = np.clip(shade, 0.5, 1.45)[:, None]
    rgb = static.canopy_px_rgb * shade
    a = static.canopy_a
    if params.snow > 0:  # leaves are gone: thin brown crowns that let the ground show through
        conifer = static.conifer_px[:, None]
        a = a * (1 - 0.55 * (1 - static.conifer_px))
        rgb = rgb * conifer + (1 - conifer) * np.array([92, 84, 76], np.float32) * shade
    elif params.season < -0.6:
        rgb = rgb * np.array([1.25, 1.0, 0.85], np.float32)
    flat = img.reshape(-1, 3)
    a = a[:, None]
    flat[static.canopy_idx] = flat[static.canopy_idx] * (1 - a) + a * rgb


def _poles(site: Site, img: np.ndarray) -> None:
    g = site.gsd
    for x, y, _h in site.poles:
        if -5 < x < site.size + 5 and -5 < y < site.size + 5:
            cv2.circle(
                img,
                (int(x * _SUB), int(y * _SUB)),
                max(2, int(0.2 / g * _SUB)),
                (150, 150, 150),
                -1,
                cv2.LINE_AA,
                3,
            )


def _lamp_glow(site: Site, img: np.ndarray) -> None:
    h = w = site.size
    glow = np.zeros((h, w), np.float32)
    for x, y, _h in site.poles:
        if -50 < x < w + 50 and -50 < y < h + 50:
            cv2.circle(glow, (int(x), int(y)), max(2, int(3.5 / site.gsd)), 1.0, -1)
    glow = cv2.GaussianBlur(glow, (0, 0), max(2.0, 3.0 / site.gsd))
    img *= 1 + glow[..., None] * np.array([1.6, 1.2, 0.6], np.float32)


def _snow(site: Site, static: Static, img: np.ndarray, params: PassParams, rng: np.random.Generator) -> None:
    h = w = site.size
    g = site.gsd
    n = value_noise(rng, h, w, max(3.0, 3.0 / g), 2)
    veg = ((static.material == GRASS) | (static.material == ISLAND) | (static.material == SOIL)).astype(np.float32)
    cover = np.clip(veg * (params.snow * 1.4 + 0.4 * n), 0, 1)
    # plowed piles along curbs and lot edges, slush on the pavement
    piles = np.zeros((h, w), np.uint8)
    if site.curbs:
        cv2.polylines(piles, [_pts(p) for p in site.curbs], True, 255, max(2, int(1.2 / g)), cv2.LINE_AA, 3)
    piles_f = cv2.GaussianBlur(piles, (0, 0), max(1.5, 0.8 / g)).astype(np.float32) / 255.0
    cover = np.maximum(cover, np.clip(piles_f * (1.6 + 0.8 * n) * params.snow, 0, 1))
    paved = 1 - veg
    slush = np.clip(0.22 * params.snow * paved * (n - 0.6), 0, 0.35)  # compacted snow where few drive
    cover = np.maximum(cover, slush)
    roof = static.roofs.astype(np.float32) / 255.0 * (params.snow > 0.6)
    cover = np.maximum(cover, roof * 0.9)
    keep = (1 - cover) * (1 - 0.12 * paved)  # wet pavement is darker
    img *= keep[..., None]
    img += (cover * (0.94 + 0.04 * n))[..., None] * np.array([232, 236, 242], np.float32)


def _finish(img: np.ndarray, p: PassParams, rng: np.random.Generator, bank: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    # gain, colour response, saturation and haze are one affine colour map
    sat = np.full((3, 3), (1 - p.saturation) / 3) + np.eye(3) * p.saturation
    m = (1 - p.haze) * (sat @ p.colour * p.gain)
    affine = np.concatenate([m, (p.haze * np.asarray(p.haze_rgb, np.float64))[:, None]], axis=1)
    img = cv2.transform(img, affine.astype(np.float32))
    if p.seam != 1.0:  # two acquisitions stitched together: a straight line with a brightness step
        ang = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        side = (xx - w / 2) * math.cos(ang) + (yy - h / 2) * math.sin(ang) - rng.uniform(-0.4, 0.4) * w
        gain = 1 + (p.seam - 1) * np.clip(side / 2 + 0.5, 0, 1)
        img *= gain[..., None]
    if p.cloud > 0:
        veil = np.clip(value_noise(rng, h, w, w / 3, 2) * 0.6 + 0.4, 0, 1) * p.cloud
        img = img * (1 - veil[..., None]) + veil[..., None] * np.float32(235)
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** p.gamma + 0.5, 0, 255).astype(np.uint8)
    img = cv2.LUT(_to_u8(img), lut)
    img = cv2.GaussianBlur(img, (0, 0), p.blur)
    if p.resample > 1.0:
        small = (max(8, round(w / p.resample)), max(8, round(h / p.resample)))
        img = cv2.resize(cv2.resize(img, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_CUBIC)
    if p.sharpen > 0:  # providers sharpen after pan-sharpening / upsampling
        soft = cv2.GaussianBlur(img, (0, 0), 1.2)
        img = cv2.addWeighted(img, 1 + p.sharpen, soft, -p.sharpen, 0)
    if p.band_shift:
        m = np.float32([[1, 0, p.band_shift], [0, 1, p.band_shift * 0.5]])
        img[..., 0] = cv2.warpAffine(np.ascontiguousarray(img[..., 0]), m, (w, h), borderMode=cv2.BORDER_REFLECT)
    oy, ox = (int(v) for v in rng.integers(0, bank.shape[0] - h + 1, 2))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    out = cv2.addWeighted(img, 1.0, bank[oy : oy + h, ox : ox + w], sign * p.noise, 0.5, dtype=cv2.CV_8U)
    if p.chroma_sub > 1:
        ycc = cv2.cvtColor(out, cv2.COLOR_RGB2YCrCb)
        small = cv2.resize(ycc[..., 1:], (w // p.chroma_sub, h // p.chroma_sub), interpolation=cv2.INTER_AREA)
        ycc[..., 1:] = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        out = cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)
    if p.jpeg:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, p.jpeg])
        if ok:
            out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out
