"""The per-answer `quality` block: how the answer's scale was found and how sure the model was, so a client can
tell a confident answer from a guess on an image unlike the training data (defined in docs/design.md, API)."""

from __future__ import annotations

from typing import Any

import numpy as np

from parking_ml.inference.contract import Prediction
from parking_ml.inference.gsd import GsdChoice


def answer_quality(pred: Prediction, choice: GsdChoice) -> dict[str, Any]:
    """gsd and gsd_source as used; estimated_gsd whenever an estimate ran (also when it found nothing: null);
    no_structure_share: share of pixels in no space (class 0) of the answer's class map; mean_confidence: mean
    over all pixels of the top class probability; mean_space_confidence: mean of the spaces' confidences."""
    confidences = [s.confidence for s in pred.spaces]
    return {
        "gsd": choice.gsd,
        "gsd_source": choice.source,
        "estimated_gsd": choice.estimate.gsd if choice.estimate is not None else None,
        "estimate_spaces": choice.estimate.spaces if choice.estimate is not None else None,
        "no_structure_share": round(np.count_nonzero(pred.mask == 0) / pred.mask.size, 4) if pred.mask.size else 1.0,
        "mean_confidence": round(float(pred.mean_confidence), 4),
        "mean_space_confidence": round(sum(confidences) / len(confidences), 4) if confidences else None,
    }
