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

from parking_ml.synth.cars import Cars, draw_car_shadows, draw_cars
from parking_ml.synth.draw import SUB, fill_polys, sub_px, value_noise
from parking_ml.synth.ground import Static
from parking_ml.synth.layout import GRASS, ISLAND, SOIL, Site

STYLES = ("default", "winter", "dusk", "sensor")
# why: styles no shipped network was trained on, for measuring fine-tuning on "your own" imagery (bench/finetune.py)
HELD_OUT_STYLES = ("pavers",)
ALL_STYLES = STYLES + HELD_OUT_STYLES


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
    if style not in ALL_STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {', '.join(ALL_STYLES)}")
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
    if params.style == "pavers":
        _pavers(site, static, img, rng)
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
        axes = (int(r * 0.9 * elong * SUB), int(r * 0.9 * SUB))
        cv2.ellipse(canvas, tuple(sub_px(c)), axes, ang, 0, 360, 255, -1, cv2.LINE_AA, 3)
        cv2.line(canvas, tuple(sub_px(np.array([x, y]))), tuple(sub_px(c)), 255, max(1, int(0.35 / g)), cv2.LINE_AA, 3)
    for x, y, height in site.poles:
        p0 = np.array([x, y])
        p1 = p0 + away * height / g
        cv2.line(canvas, tuple(sub_px(p0)), tuple(sub_px(p1)), 255, max(1, round(0.25 / g)), cv2.LINE_AA, 3)
        cv2.circle(canvas, tuple(sub_px(p1)), max(1, int(0.35 / g * SUB)), 255, -1, cv2.LINE_AA, 3)
    polys = []
    for bd in site.buildings:
        off = away * bd.height_m / g
        polys.append(cv2.convexHull(np.concatenate([bd.roof, bd.roof + off]).astype(np.float32))[:, 0, :])
    fill_polys(canvas, polys, 255)


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
                (int(x * SUB), int(y * SUB)),
                max(2, int(0.2 / g * SUB)),
                (150, 150, 150),
                -1,
                cv2.LINE_AA,
                3,
            )


def _pavers(site: Site, static: Static, img: np.ndarray, rng: np.random.Generator) -> None:
    """Another country's lots: terracotta or sand-coloured brick pavers with a fine laying pattern, the markings
    kept as bright as they were above their pavement (a palette and texture the shipped networks never saw)."""
    h = w = site.size
    g = site.gsd
    paved = (static.material == site.pavement).astype(np.float32)
    if not paved.any():
        return
    luma = img @ np.array([0.299, 0.587, 0.114], np.float32)
    sel = paved > 0
    base_luma = float(np.median(luma[sel]))
    colour = np.array([(168, 92, 70), (184, 150, 112), (140, 88, 84)][int(rng.integers(0, 3))], np.float32)
    colour *= rng.uniform(0.9, 1.1)
    # bricks of 0.2 x 0.1 m in a running bond along the lot: their joints show as a fine grid at high resolution
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c, s_ = math.cos(site.rotation), math.sin(site.rotation)
    u = (xx * c + yy * s_) * g / 0.2
    v = (-xx * s_ + yy * c) * g / 0.1
    joints = np.maximum(np.abs(np.sin(math.pi * v)), np.abs(np.sin(math.pi * (u + 0.5 * np.floor(v)))))
    tex = 1 - 0.18 * np.clip(1 - joints, 0, 1) * min(1.0, 0.1 / g)
    tex *= 1 + 0.08 * value_noise(rng, h, w, max(2.0, 0.4 / g), 2)
    pav = colour[None, None, :] * tex[..., None] + (luma - base_luma)[..., None]
    img *= (1 - paved)[..., None]
    img += pav * paved[..., None]


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
        cv2.polylines(piles, [sub_px(p) for p in site.curbs], True, 255, max(2, int(1.2 / g)), cv2.LINE_AA, 3)
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
