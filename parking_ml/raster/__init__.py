"""Large rasters: bounded-memory streaming prediction, stitched spaces, streamed outputs, per-lot occupancy.

A raster of any size is read in blocks (rasterio windows with a halo of context), each block runs through the
same Segmenter and postprocess as the API, spaces are kept by the block that owns their centre (so a space cut
by a block edge is one space, counted once, its polygon whole), and outputs are written block by block.
"""

from parking_ml.raster.blocks import Block, BlockLayout, plan_blocks
from parking_ml.raster.source import RasterInfo, open_raster, raster_info
from parking_ml.raster.stream import RasterSummary, predict_blocks, predict_raster

__all__ = [
    "Block",
    "BlockLayout",
    "RasterInfo",
    "RasterSummary",
    "open_raster",
    "plan_blocks",
    "predict_blocks",
    "predict_raster",
    "raster_info",
]
