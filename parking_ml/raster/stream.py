"""Streaming prediction over a raster's blocks: bounded memory whatever the raster's size."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from parking_ml.inference import Segmenter, postprocess
from parking_ml.raster.blocks import Block, BlockLayout, plan_blocks
from parking_ml.raster.source import Opener, RasterInfo, open_raster, raster_info, read_rgb

# mask value of pixels with no data in the input: the labels' "ignore"
NODATA_CLASS = 255

# MB of GDAL block cache: a block row of mask tiles across a 32k raster is 75 MB, the rest reads once
GDAL_CACHE_MB = 96

BlockProgress = Callable[[int, int], None]


@dataclass
class BlockResult:
    """One block's share: its core's class mask and the spaces whose centre lies in its core."""

    block: Block
    mask: np.ndarray  # uint8, the core's rows x cols
    status: list[str]
    confidence: list[float]
    area_px: list[int]
    rings: np.ndarray  # n x 5 x 2 (col, row) pixel-edge coordinates of the whole raster, closed rings
    conf_sum: float
    valid_px: int


@dataclass
class RasterSummary:
    name: str
    width: int
    height: int
    free: int = 0
    occupied: int = 0
    conf_sum: float = 0.0
    valid_px: int = 0
    free_px: int = 0
    # valid pixels of class 0 (no space): the answer's no_structure_share
    background_px: int = 0
    blocks: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def add(self, result: BlockResult) -> None:
        self.free += sum(1 for s in result.status if s == "free")
        self.occupied += sum(1 for s in result.status if s == "occupied")
        self.conf_sum += result.conf_sum
        self.valid_px += result.valid_px
        self.free_px += int(np.count_nonzero(result.mask == 1))
        self.background_px += int(np.count_nonzero(result.mask == 0))
        self.blocks += 1

    @property
    def occupancy_rate(self) -> float | None:
        total = self.free + self.occupied
        return round(self.occupied / total, 4) if total else None

    @property
    def mean_confidence(self) -> float:
        return self.conf_sum / max(1, self.valid_px)


def _owned(rings: np.ndarray, core: tuple[int, int, int, int]) -> np.ndarray:
    # a space belongs to the block whose core holds its centre: one owner for the same polygon seen twice
    r0, r1, c0, c1 = core
    centre = rings[:, :4].mean(axis=1)
    return (centre[:, 0] >= c0) & (centre[:, 0] < c1) & (centre[:, 1] >= r0) & (centre[:, 1] < r1)


def predict_block(segmenter: Segmenter, ds, block: Block, image_gsd: float | None) -> BlockResult:
    """Network and post-processing on the block's extended window; the core's share of the results."""
    er0, er1, ec0, ec1 = block.ext
    r0, r1, c0, c1 = block.core
    rgb, valid = read_rgb(ds, er0, er1, ec0, ec1)
    core = (slice(r0 - er0, r1 - er0), slice(c0 - ec0, c1 - ec0))
    if not valid.any():
        mask = np.full((r1 - r0, c1 - c0), NODATA_CLASS, dtype=np.uint8)
        return BlockResult(block, mask, [], [], [], np.zeros((0, 5, 2)), 0.0, 0)
    probs = segmenter.predict_probs(rgb, image_gsd=image_gsd)
    del rgb
    pred = postprocess(probs, segmenter.config, image_gsd=image_gsd)
    conf_sum = float(probs[:, core[0], core[1]].max(axis=0)[valid[core]].sum(dtype=np.float64))
    del probs
    pred.mask[~valid] = NODATA_CLASS
    spaces = pred.spaces
    rings = np.array([s.polygon for s in spaces], dtype=np.float64).reshape(-1, 5, 2)
    rings += (ec0, er0)
    keep = _owned(rings, block.core)
    if keep.any():
        # a space centred on nodata is an artefact of the black fill
        centre = rings[:, :4].mean(axis=1)
        rows = np.clip(centre[:, 1].astype(int) - er0, 0, valid.shape[0] - 1)
        cols = np.clip(centre[:, 0].astype(int) - ec0, 0, valid.shape[1] - 1)
        keep &= valid[rows, cols]
    idx = np.flatnonzero(keep)
    return BlockResult(
        block=block,
        mask=np.ascontiguousarray(pred.mask[core]),
        status=[spaces[i].status for i in idx],
        confidence=[spaces[i].confidence for i in idx],
        area_px=[spaces[i].area_px for i in idx],
        rings=rings[idx],
        conf_sum=conf_sum,
        valid_px=int(np.count_nonzero(valid[core])),
    )


def predict_blocks(
    segmenter: Segmenter,
    ds,
    layout: BlockLayout,
    image_gsd: float | None,
    rows: range | None = None,
    progress: BlockProgress | None = None,
) -> Iterator[BlockResult]:
    """Results block by block in row-major order (of ``rows`` of blocks only, when given)."""
    blocks = list(layout.blocks(rows))
    for i, block in enumerate(blocks):
        yield predict_block(segmenter, ds, block, image_gsd)
        if progress:
            progress(i + 1, len(blocks))


@dataclass(frozen=True)
class Outputs:
    """Where one raster's results go (local files; written under temporary names, renamed when whole)."""

    mask: Path | None
    spaces_parquet: Path | None
    spaces_geojson: Path | None
    spaces_geojson_image_crs: Path | None = None

    @classmethod
    def beside(cls, folder: Path, stem: str) -> Outputs:
        """The lake contract's names: <stem>.mask.tif, .spaces.parquet, .spaces.geojson (+ image CRS)."""
        return cls(
            folder / f"{stem}.mask.tif",
            folder / f"{stem}.spaces.parquet",
            folder / f"{stem}.spaces.geojson",
            folder / f"{stem}.spaces.image_crs.geojson",
        )


def predict_raster(
    segmenter: Segmenter,
    path: str | Path,
    outputs: Outputs,
    gsd: float | None = None,
    rows: range | None = None,
    core: int | None = None,
    opener: Opener | None = None,
    progress: BlockProgress | None = None,
) -> RasterSummary:
    """Predict a whole raster (or the block ``rows`` of it: one work unit) and stream the results to
    ``outputs``. ``gsd`` is used only when the raster carries none."""
    import rasterio

    from parking_ml.raster.writers import MaskWriter, SpacesWriter

    t0 = time.perf_counter()
    # GDAL's block cache defaults to 5 % of the machine's memory: bounded here so memory stays flat
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), open_raster(path, opener) as ds:
        info = raster_info(ds, Path(str(path)).name)
        image_gsd = info.gsd or gsd
        layout = plan_blocks(info.height, info.width, segmenter.config, image_gsd, core=core)
        rows = rows if rows is not None else range(layout.n_rows)
        row0, row1 = layout.row_span(rows)
        summary = RasterSummary(info.name, info.width, info.height)
        mask_out = MaskWriter(outputs.mask, info, row0, row1) if outputs.mask else None
        spaces_out = SpacesWriter(outputs, info) if outputs.spaces_parquet or outputs.spaces_geojson else None
        try:
            for result in predict_blocks(segmenter, ds, layout, image_gsd, rows, progress):
                summary.add(result)
                if mask_out:
                    mask_out.write(result.block.core, result.mask)
                if spaces_out:
                    spaces_out.add(result.status, result.confidence, result.area_px, result.rings)
            for writer in (mask_out, spaces_out):
                if writer:
                    summary.outputs.update(writer.close())
        finally:
            for writer in (mask_out, spaces_out):
                if writer:
                    writer.abort()
    summary.timings_ms["total_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    return summary


def raster_header(path: str | Path, opener: Opener | None = None) -> RasterInfo:
    with open_raster(path, opener) as ds:
        return raster_info(ds, Path(str(path)).name)
