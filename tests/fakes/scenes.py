"""The one fake-scene generator: noisy asphalt with rows of rectangular stalls and their exact labels.

Stall rectangles have integer corners and the mask is painted with numpy slicing (corners included), so tests
check the polygon rasteriser instead of repeating it. The presets below are the scenes the tests draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FREE_GREEN, OCCUPIED_RED = (20, 220, 30), (220, 30, 20)


def lot(
    height: int,
    width: int | None = None,
    seed: int | np.random.Generator = 0,
    *,
    stall: tuple[int, int] = (8, 16),
    rows: Sequence[int] = (0,),
    left: int = 4,
    gap: int = 4,
    right: int | None = None,
    base: int = 90,
    spread: int = 16,
    style: str = "filled",
    colours: tuple[tuple[int, int, int], tuple[int, int, int]] = (FREE_GREEN, OCCUPIED_RED),
    phase: int = 0,
    free_share: float | None = None,
    mask_inset: int = 0,
    ignore_top: int = 0,
    ignore_right: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(rgb uint8 H x W x 3, mask uint8 H x W, stalls [{"rect": (x0, y0, x1, y1) inclusive, "status": ...}]).

    The image is ``base`` plus uniform noise below ``spread``; stalls of ``stall`` (w, h) px start at each of
    ``rows`` (top y) from x = ``left`` every w + ``gap`` px while x < width - ``right`` (default: w). A stall
    is occupied when (row + column + ``phase``) % 3 == 0, or, with ``free_share``, free with that chance.
    ``style``: "filled" paints the stall in its status colour, "painted" draws a white line on a free stall's
    left edge and an inset car in an occupied one, "none" leaves the image alone. The mask holds 1 / 2 inside
    each rectangle shrunk by ``mask_inset``, 255 on ``ignore_top`` rows and ``ignore_right`` columns."""
    h, w = height, width or height
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, spread, (h, w, 3), dtype=np.uint8)
    rgb = (base + noise.astype(np.int16)).clip(0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    sw, sh = stall
    stop = w - (sw if right is None else right)
    stalls = []
    for r, y0 in enumerate(rows):
        for c, x0 in enumerate(range(left, stop, sw + gap)):
            if free_share is not None:
                status = "free" if rng.random() < free_share else "occupied"
            else:
                status = "occupied" if (r + c + phase) % 3 == 0 else "free"
            x1, y1 = x0 + sw - 1, y0 + sh - 1
            if style == "filled":
                rgb[y0 : y1 + 1, x0 : x1 + 1] = colours[status == "occupied"]
            elif style == "painted" and status == "occupied":
                rgb[y0 + 2 : y1 - 1, x0 + 2 : x1 - 1] = (200, 30 + 10 * c, 40)
            elif style == "painted":
                rgb[y0 : y1 + 1, x0] = 230
            k = mask_inset
            mask[y0 + k : y1 + 1 - k, x0 + k : x1 + 1 - k] = 1 if status == "free" else 2
            stalls.append({"rect": (x0, y0, x1, y1), "status": status})
    mask[:ignore_top] = 255
    if ignore_right:
        mask[:, -ignore_right:] = 255
    return rgb, mask, stalls


def scene(size: int = 128, seed: int = 0, width: int | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """A landing image: one row of painted stalls a quarter down (what the data pipeline ingests)."""
    w = width or size
    return lot(
        size,
        w,
        seed,
        stall=(max(8, w // 8), max(16, size // 4)),
        rows=(size // 4,),
        base=82,
        style="painted",
        phase=seed,
    )


def lot_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Grey asphalt with green (free) and red (occupied) stalls, every 40 px down (what the colour net reads)."""
    rows = range(10, h - 30, 40)
    return lot(h, w, seed, stall=(14, 24), rows=rows, left=10, gap=16, right=20, base=110, spread=20)[0]


def training_tile(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """A processed tile: two rows of four light (free) or blue (occupied) stalls, labelled 1 px inside."""
    return lot(
        size,
        seed=rng,
        stall=(size // 6 + 1, size // 3 + 1),
        rows=(size // 8, size // 2 + size // 16),
        gap=5,
        base=80,
        spread=12,
        colours=((200, 200, 190), (40, 50, 150)),
        free_share=0.6,
        mask_inset=1,
    )


def stall_features(stalls: list[dict]) -> list[dict]:
    """GeoJSON features of the stalls' rectangles, in pixel coordinates."""
    features = []
    for s in stalls:
        x0, y0, x1, y1 = s["rect"]
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        features.append(
            {
                "type": "Feature",
                "properties": {"status": s["status"]},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    return features
