"""A stand-in for the ground-resolution estimate's network pass: probes of an image whose whole stalls show at
0.1 m/px, in the image as given or only once it is balanced (dark imagery)."""

from __future__ import annotations

import numpy as np

from parking_ml.inference import PreprocessConfig
from parking_ml.inference.gsd import BAND, SPACE_SIZE_M, Probe

TRUE_GSD = 0.1


class FakeSegmenter:
    """Only the config the estimate reads (a model gsd to scale against)."""

    config = PreprocessConfig(gsd=0.2, grow_px=1.0)


def fake_measure(raw_stalls: bool, calls: list[bool]):
    """A measure() that records whether each pass saw the balanced image; inside the network's band of the true
    gsd it sees stall-shaped spaces of the expected size (in the image as given only when ``raw_stalls``)."""

    def measure(segmenter, rgb: np.ndarray, gsd: float, balanced: bool = False) -> Probe:
        calls.append(balanced)
        if (balanced or raw_stalls) and BAND[0] <= gsd / TRUE_GSD <= BAND[1]:
            return Probe(gsd, 8, SPACE_SIZE_M * gsd / TRUE_GSD, 2.1, balanced)
        return Probe(gsd, 0, float("nan"), float("nan"), balanced)

    return measure
