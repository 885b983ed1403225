"""A site's static layers, rendered once and reused by every pass: ground materials and wear, paint, curbs,
roofs and tree canopies."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from parking_ml.synth.draw import (
    SUB,
    blend,
    draw_segment,
    draw_segments,
    fill_polys,
    segment_quad,
    sub_px,
    value_noise,
)
from parking_ml.synth.layout import ASPHALT, CONCRETE, GRASS, ISLAND, ROAD, SOIL, Site, shrink_convex


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
        cv2.fillPoly(material, [sub_px(poly)], int(mat), shift=3)

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


# long: one site's random draws in their fixed order; split, the parts would pass a dozen locals (same seed, same lot)
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
        pc = sub_px(centres)
        for i in np.flatnonzero(pick & inside):
            axes_i = (max(1, int(r[i] * SUB)), max(1, int(r2[i] * SUB)))
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
                tuple(sub_px(a + n)),
                tuple(sub_px(b + n)),
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
            tuple(sub_px(c)),
            (int(r * SUB), int(r * rng.uniform(0.3, 1) * SUB)),
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
        cv2.polylines(dark, [sub_px(np.array(pts))], False, int(rng.integers(90, 160)), 1, cv2.LINE_AA, 3)
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
                cv2.line(dark, tuple(sub_px(p0)), tuple(sub_px(p1)), 110, 1, cv2.LINE_AA, 3)
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
        cv2.fillPoly(m, [sub_px(poly)], 255, cv2.LINE_AA, 3)
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
        shaft = segment_quad(tail, head, 0.25 / g)
        fill_polys(canvas, [shaft, np.stack([tip, head + n * 0.25, head - n * 0.25])], 255)
    hatch = np.zeros_like(canvas)
    for poly in site.hatches:
        region = np.zeros_like(canvas)
        fill_polys(region, [poly], 255)
        c = poly.mean(axis=0)
        diag = np.array([1.0, 1.0]) / math.sqrt(2)
        n = np.array([-diag[1], diag[0]])
        r = float(np.max(np.linalg.norm(poly - c, axis=1)))
        stripes = np.zeros_like(canvas)
        step = 0.6 / g
        for k in np.arange(-r, r, step):
            draw_segment(stripes, c + n * k - diag * r, c + n * k + diag * r, site.paint_width_px)
        hatch = np.maximum(hatch, cv2.min(stripes, region))
    if site.crosswalks:
        hatch = np.maximum(hatch, _zebra(site, canvas.shape))
    # worn paint: smooth fading plus speckles where tyres scraped it off
    fade = np.clip(0.75 + 0.5 * n_mid, 0.2, 1.0) * site.paint_opacity
    speck = rng.random((h, w), dtype=np.float32)
    fade *= np.where(speck < 0.12 * (1 - site.paint_opacity), 0.3, 1.0).astype(np.float32)
    paint = np.array(site.paint_rgb, np.float32) * rng.uniform(0.9, 1.03)
    if site.ghost is not None and site.lines:
        ghost = np.zeros_like(canvas)
        draw_segments(ghost, [(a + site.ghost, b + site.ghost) for a, b in site.lines], site.paint_width_px)
        blend(ground, ghost, paint * 0.8, 0.22)
    blend(ground, np.maximum(canvas, hatch), paint, fade)
    if site.accessible:
        blue = np.zeros_like(canvas)
        inner = [shrink_convex(p, 0.2 / g) for p in site.accessible]
        fill_polys(blue, inner, 255)
        blend(ground, blue, (40, 90, 165), 0.7 * site.paint_opacity)
        sym = np.zeros_like(canvas)
        for p in site.accessible:
            c = p.mean(axis=0)
            cv2.circle(sym, tuple(sub_px(c)), int(0.45 / g * SUB), 255, max(1, int(0.12 / g)), cv2.LINE_AA, 3)
        blend(ground, sym, (235, 235, 235), site.paint_opacity)
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
    blend(ground, road, colour, 0.85)


def _zebra(site: Site, shape: tuple[int, ...]) -> np.ndarray:
    """Zebra crossings: bars along the lane, 0.5 m wide and 1 m apart, across the whole aisle or road."""
    g = site.gsd
    out = np.zeros(shape, np.uint8)
    bars = []
    for centre, lane, width_px in site.crosswalks:
        n = np.array([-lane[1], lane[0]])
        half_len = 1.5 / g
        for k in np.arange(-width_px / 2 + 0.6 / g, width_px / 2 - 0.4 / g, 1.0 / g):
            c = centre + n * k
            bars.append(segment_quad(c - lane * half_len, c + lane * half_len, 0.5 / g))
    fill_polys(out, bars, 255)
    return out


def _curbs(site: Site, rng: np.random.Generator, ground: np.ndarray) -> None:
    if not site.curbs:
        return
    canvas = np.zeros(ground.shape[:2], np.uint8)
    width = max(1, round(0.2 / site.gsd))
    cv2.polylines(canvas, [sub_px(p) for p in site.curbs], True, 255, width, cv2.LINE_AA, 3)
    blend(ground, canvas, (196, 194, 186), rng.uniform(0.5, 0.9))


def _roofs(site: Site, rng: np.random.Generator, ground: np.ndarray) -> np.ndarray:
    h, w = ground.shape[:2]
    roofs = np.zeros((h, w), np.uint8)
    g = site.gsd
    tex = None
    for bd in site.buildings:
        m = np.zeros((h, w), np.uint8)
        fill_polys(m, [bd.roof], 255)
        if not m.any():
            continue
        if tex is None:  # one membrane/gravel texture for all roofs of the site
            tex = 1 + 0.04 * value_noise(rng, h, w, max(2.0, 1.5 / g), 2)
        roofs = np.maximum(roofs, m)
        blend(ground, m, np.array(bd.colour, np.float32) * tex[..., None])
        rim = np.zeros((h, w), np.uint8)
        cv2.polylines(rim, [sub_px(bd.roof)], True, 255, max(1, int(0.4 / g)), cv2.LINE_AA, 3)
        blend(ground, cv2.min(rim, m), np.array(bd.colour, np.float32) * 0.75)
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
            fill_polys(shadow, [b + np.array([0.6, 0.6]) / g for b in boxes], 255)
            blend(ground, cv2.min(shadow, m), (0, 0, 0), 0.4)
            box = np.zeros((h, w), np.uint8)
            fill_polys(box, boxes, 255)
            blend(ground, box, np.array([200, 200, 198]) * rng.uniform(0.8, 1.1))
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
            centre = (int(lx * SUB), int(ly * SUB))
            cv2.circle(alpha, centre, int(lr * SUB), 255, -1, cv2.LINE_AA, 3)
            cv2.circle(rgb, centre, int(lr * SUB), tuple(float(v) for v in colour), -1, cv2.LINE_AA, 3)
            if is_conifer:
                cv2.circle(conifer, centre, int(lr * SUB), 255, -1, cv2.LINE_AA, 3)
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
