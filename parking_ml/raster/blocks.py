"""How a raster is cut into blocks: a core each block owns, and a halo of context read around it.

The network sees every block with ``halo`` pixels of real neighbours on each inner side, and post-processing
runs on core + halo, so a space near a core edge is seen whole by both blocks; the block whose core holds the
space's centre keeps it. Block sizes are chosen so the core + halo fills the network's sliding windows (few
wasted window passes) and stays under a pixel budget (memory does not grow with the raster).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from parking_ml.inference import PreprocessConfig

# core sides are multiples of this: the mask GeoTIFF's tile side, so each block writes whole tiles
TILE = 256
# context around a core, at the network's gsd: more than a stall's length (~45 px at 0.2 m/px), so a space
# whose centre lies in a core is whole in that block's view
HALO_NET_PX = 64
# pixels of one block with its halo, in the image's grid: bounds the block's probabilities and labels
MAX_BLOCK_PIXELS = 7_000_000


@dataclass(frozen=True)
class Block:
    """One block: the core rows/cols it owns and the extended rows/cols (core + halo, clipped) it reads."""

    row: int
    col: int
    core: tuple[int, int, int, int]  # row0, row1, col0, col1
    ext: tuple[int, int, int, int]


@dataclass(frozen=True)
class BlockLayout:
    height: int
    width: int
    core: int
    halo: int

    @property
    def n_rows(self) -> int:
        return math.ceil(self.height / self.core)

    @property
    def n_cols(self) -> int:
        return math.ceil(self.width / self.core)

    def block(self, row: int, col: int) -> Block:
        r0, c0 = row * self.core, col * self.core
        r1, c1 = min(self.height, r0 + self.core), min(self.width, c0 + self.core)
        h, w, halo = self.height, self.width, self.halo
        ext = (max(0, r0 - halo), min(h, r1 + halo), max(0, c0 - halo), min(w, c1 + halo))
        return Block(row, col, (r0, r1, c0, c1), ext)

    def blocks(self, rows: range | None = None) -> Iterator[Block]:
        """Blocks in row-major order (of the given block rows only, when ``rows`` is given)."""
        for r in rows if rows is not None else range(self.n_rows):
            for c in range(self.n_cols):
                yield self.block(r, c)

    def row_span(self, rows: range) -> tuple[int, int]:
        """The raster rows the cores of these block rows cover."""
        return rows.start * self.core, min(self.height, rows.stop * self.core)


def _windows_along(length: int, window: int, stride: int) -> int:
    return 1 if length <= window else math.ceil((length - window) / stride) + 1


def plan_blocks(
    height: int,
    width: int,
    config: PreprocessConfig,
    image_gsd: float | None = None,
    core: int | None = None,
    max_block_pixels: int = MAX_BLOCK_PIXELS,
) -> BlockLayout:
    """The block layout for a raster: ``core`` when given (tests, work units), else the multiple of TILE
    under the pixel budget that wastes the fewest network windows per owned pixel."""
    scale = config.input_scale(image_gsd)
    halo = math.ceil(HALO_NET_PX / scale)
    if core is not None:
        if core < 1:
            raise ValueError(f"block core {core} must be >= 1 px")
        return BlockLayout(height, width, core, halo)
    window, stride = config.infer_window, config.infer_window - config.overlap
    best, best_cost = TILE, math.inf
    side = TILE
    while (side + 2 * halo) ** 2 <= max_block_pixels or side == TILE:
        ext_net = round((side + 2 * halo) * scale)
        # windows the network runs per core pixel: lower is less recomputation of the halos
        cost = _windows_along(ext_net, window, stride) ** 2 / side**2
        if cost < best_cost * 0.98:
            best, best_cost = side, cost
        side += TILE
    # a raster smaller than the block: one block, no halo needed
    best = min(best, math.ceil(max(height, width) / TILE) * TILE)
    return BlockLayout(height, width, best, halo)
