"""Drawing primitives of the synthetic generator: value noise, sub-pixel polygons and lines, alpha blends."""

from __future__ import annotations

import math

import cv2
import numpy as np

SUB = 8  # sub-pixel precision of cv2 drawing (shift=3)


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


def sub_px(poly: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(poly) * SUB).astype(np.int32)


def fill_polys(img: np.ndarray, polys: list[np.ndarray], colour: object) -> None:
    if polys:
        cv2.fillPoly(img, [sub_px(p) for p in polys], colour, lineType=cv2.LINE_AA, shift=3)


def segment_quad(p0: np.ndarray, p1: np.ndarray, width: float) -> np.ndarray:
    d = p1 - p0
    n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9) * (width / 2)
    return np.stack([p0 + n, p1 + n, p1 - n, p0 - n])


def draw_segments(canvas: np.ndarray, segs: list[tuple[np.ndarray, np.ndarray]], width: float) -> None:
    """Thin painted lines: sub-pixel widths become proportionally fainter anti-aliased 1 px lines."""
    if not segs:
        return
    thick = max(1, round(width))
    value = round(255 * min(1.0, width / thick))
    ends = sub_px(np.array([(a, b) for a, b in segs], np.float64))
    cv2.polylines(canvas, list(ends), False, value, thick, cv2.LINE_AA, 3)


# ------------------------------------------------------------------------------------- static layers


def blend(ground: np.ndarray, coverage: np.ndarray, colour: object, scale: float | np.ndarray = 1.0) -> None:
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


def draw_segment(canvas: np.ndarray, a: np.ndarray, b: np.ndarray, width: float) -> None:
    draw_segments(canvas, [(a, b)], max(width, 1.0))
