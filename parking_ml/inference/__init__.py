"""Inference core shared by the promotion gate, the API and `parking-ml predict`.

`contract` (preprocess.json, Space, Prediction), `segmenter` (windowed network runs with TTA), `spaces`
(post-processing into counted spaces, `predict`) and `geojson`. Only numpy, onnxruntime and OpenCV at import
time: the serving image carries no torch.
"""

from parking_ml.inference.contract import STATUS_BY_CLASS, TTA_VIEWS, Prediction, PreprocessConfig, Space
from parking_ml.inference.geojson import georeferenced_geojson, spaces_to_geojson
from parking_ml.inference.segmenter import (
    EMBEDDING_OUTPUT,
    OnnxSegmenter,
    ProgressFn,
    Segmenter,
    normalise,
    rescale,
    softmax,
    tta_logits,
)
from parking_ml.inference.spaces import (
    CORE_PROB,
    GROW_BLOCK_ROWS,
    MIN_SPACES_FOR_TYPICAL,
    OVERSIZE,
    SPLIT_LEVELS,
    grow_spaces,
    postprocess,
    predict,
    split_merged,
    split_oversized,
    typical_space_area,
)

__all__ = [
    "CORE_PROB",
    "EMBEDDING_OUTPUT",
    "GROW_BLOCK_ROWS",
    "MIN_SPACES_FOR_TYPICAL",
    "OVERSIZE",
    "SPLIT_LEVELS",
    "STATUS_BY_CLASS",
    "TTA_VIEWS",
    "OnnxSegmenter",
    "Prediction",
    "PreprocessConfig",
    "ProgressFn",
    "Segmenter",
    "Space",
    "georeferenced_geojson",
    "grow_spaces",
    "normalise",
    "postprocess",
    "predict",
    "rescale",
    "softmax",
    "spaces_to_geojson",
    "split_merged",
    "split_oversized",
    "tta_logits",
    "typical_space_area",
]
