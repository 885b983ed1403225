"""Ground resolution (m/px) of an image that does not say it, from the sizes of the stalls the served network
finds: a cheap pass (no test-time augmentation) at each of a ladder of candidate resolutions; each pass's spaces
imply a gsd (a stall's known size / their measured size), and the gsd that most passes agree on wins.

Why it works (docs/experiments/gsd-estimate.md): seen within ~0.75-1.2x of its own scale, the network outlines
the stalls, so the size of its spaces in metres grows in proportion to the resolution assumed and every such pass
implies the same gsd; further out it breaks stalls into pieces or merges them into blobs, and the passes disagree.
Only numpy and OpenCV here: the serving image carries no torch.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from parking_ml.inference.contract import PreprocessConfig
from parking_ml.inference.segmenter import Segmenter

GsdSource = Literal["georeference", "request", "estimated", "default"]

# why: the square root of the served demo network's median space area (m) at the true gsd over generator images;
# area, unlike length, does not change with the stalls' angle (docs/experiments/gsd-estimate.md)
SPACE_SIZE_M = 2.95
# the stall the generator and real lots have (2.4-2.7 x 4.8-5.5 m): scales SPACE_SIZE_M to other packages' labels
STALL_M = (2.55, 5.15)
# candidates: 0.04 .. 0.39 m/px, 1.21x apart; then the 1.1x steps between them near the first answer
COARSE = tuple(round(0.04 * 1.1 ** (2 * k), 4) for k in range(13))
FINE = tuple(round(0.04 * 1.1 ** (2 * k + 1), 4) for k in range(12))
# seen within this band of its scale the network's spaces grow in proportion (their implied gsd stays put);
# further out they collapse into pieces or swell into blobs
BAND = (0.75, 1.2)
# each pass looks at a centred crop that is at most this side on the network's grid (64 m at 0.2 m/px): one
# window per pass, so the estimate's cost does not grow with the image
NETWORK_SIDE = 320
# spaces less sure than this are not measured; squarer than MIN_ASPECT the spaces are blobs, not stalls
MIN_CONFIDENCE = 0.5
MIN_SPACES = 2
MIN_ASPECT = 1.6


@dataclass(frozen=True)
class Probe:
    """One pass at an assumed gsd: spaces measured, the square root of their median area (m) and their median
    long / short side ratio (NaN when fewer than MIN_SPACES)."""

    gsd: float
    spaces: int
    size_m: float
    aspect: float

    def implied(self, size_m: float) -> float | None:
        """The gsd this probe's spaces imply (None: too few, or not stall-shaped)."""
        if self.spaces < MIN_SPACES or not self.aspect >= MIN_ASPECT:
            return None
        return self.gsd * size_m / self.size_m


@dataclass(frozen=True)
class GsdEstimate:
    """gsd None: no candidate found stall-like spaces (the caller falls back to the default)."""

    gsd: float | None
    spaces: int
    probes: tuple[Probe, ...]
    elapsed_ms: float


@dataclass(frozen=True)
class GsdChoice:
    """The gsd an answer used and where it came from; ``estimate`` when one was run."""

    gsd: float | None
    source: GsdSource
    estimate: GsdEstimate | None = None


def _space_side(config: PreprocessConfig, w: float, length: float) -> float:
    g = config.gsd or 0.2
    shrink = 2 * max(0.3, 2 * g)
    grow = (2 * config.grow_px + 1) * g
    return math.sqrt(max(w - shrink + grow, 0.1) * max(length - shrink + grow, 0.1))


def expected_size_m(config: PreprocessConfig) -> float:
    """Square root of a space's area (m) at the true gsd for this package: SPACE_SIZE_M (the demo profile's,
    model gsd 0.2 m/px, grow_px 1), scaled by how the package's label shrink and growth change a stall's interior."""
    demo = PreprocessConfig(gsd=0.2, grow_px=1.0)
    return SPACE_SIZE_M * _space_side(config, *STALL_M) / _space_side(demo, *STALL_M)


def centre_crop(rgb: np.ndarray, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return rgb[y0 : y0 + side, x0 : x0 + side]


def _probe_segmenter(segmenter: Segmenter) -> Segmenter:
    """The same network without test-time augmentation (shares the session)."""
    probe = copy.copy(segmenter)
    probe.config = replace(segmenter.config, tta="none")
    return probe


def measure(segmenter: Segmenter, rgb: np.ndarray, gsd: float) -> Probe:
    """One pass at an assumed gsd: a centred crop resampled to the network's grid, the served post-processing's
    spaces there, those clear of the crop's border measured (network px x the model's gsd = metres)."""
    from parking_ml.inference.segmenter import rescale
    from parking_ml.inference.spaces import postprocess

    model_gsd = float(segmenter.config.gsd or 0.2)
    scale = gsd / model_gsd
    work = centre_crop(rgb, max(8, round(NETWORK_SIDE / scale)))
    if abs(scale - 1.0) >= 0.02:
        work = rescale(work, scale)
    probs = segmenter.predict_probs(work, image_gsd=model_gsd)
    pred = postprocess(probs, segmenter.config, image_gsd=model_gsd)
    h, w = work.shape[:2]
    sizes, aspects = [], []
    for space in pred.spaces:
        if space.confidence < MIN_CONFIDENCE:
            continue
        ring = np.asarray(space.polygon[:4], dtype=np.float64)
        if ring[:, 0].min() <= 1 or ring[:, 1].min() <= 1 or ring[:, 0].max() >= w - 1 or ring[:, 1].max() >= h - 1:
            continue  # cut by the border: not a whole stall
        a, b = np.linalg.norm(ring[1] - ring[0]), np.linalg.norm(ring[2] - ring[1])
        if min(a, b) <= 0:
            continue
        sizes.append(math.sqrt(space.area_px) * model_gsd)
        aspects.append(max(a, b) / min(a, b))
    if len(sizes) < MIN_SPACES:
        return Probe(gsd, len(sizes), math.nan, math.nan)
    return Probe(gsd, len(sizes), float(np.median(sizes)), float(np.median(aspects)))


def choose(probes: list[Probe], size_m: float, tol: float) -> tuple[float, int] | None:
    """(gsd, spaces) with the most support: the implied gsd that most probes agree with (within ``tol`` in log),
    counting only probes that lie inside BAND of it (where the network's sizes are proportional). Ties go to
    more spaces measured. None when no probe found stall-shaped spaces."""
    implied = [(p, g) for p in probes if (g := p.implied(size_m)) is not None]
    best: tuple[tuple[int, int], float, int] | None = None
    for p, g in implied:
        support = [(q, h) for q, h in implied if abs(math.log(h / g)) < tol and BAND[0] <= q.gsd / g <= BAND[1]]
        if not support:
            continue
        key = (len(support), p.spaces)
        if best is None or key > best[0]:
            best = (key, float(np.median([h for _, h in support])), max(q.spaces for q, _ in support))
    return None if best is None else (best[1], best[2])


def estimate_gsd(segmenter: Segmenter, rgb: np.ndarray) -> GsdEstimate:
    """Estimate the image's gsd (m/px) with the served network; gsd None when the model has no gsd of its own
    (nothing to scale against) or found nothing stall-like at any candidate."""
    t0 = time.perf_counter()
    if not segmenter.config.gsd:
        return GsdEstimate(None, 0, (), 0.0)
    probe_seg = _probe_segmenter(segmenter)
    size_m = expected_size_m(segmenter.config)
    probes = [measure(probe_seg, rgb, g) for g in COARSE]
    found = choose(probes, size_m, tol=0.08)
    if found is not None:
        # the in-between candidates inside the band of the first answer: more agreeing probes, a tighter median
        probes += [measure(probe_seg, rgb, g) for g in FINE if BAND[0] <= g / found[0] <= BAND[1]]
        found = choose(probes, size_m, tol=0.05) or found
    elapsed = (time.perf_counter() - t0) * 1000
    if found is None:
        return GsdEstimate(None, 0, tuple(probes), elapsed)
    return GsdEstimate(round(found[0], 4), found[1], tuple(probes), elapsed)


def resolve_gsd(
    segmenter: Segmenter,
    rgb: np.ndarray,
    georeference: float | None = None,
    request: float | None = None,
    estimate: bool = True,
) -> GsdChoice:
    """The gsd an answer uses, in order: the image's georeference, the request's, the estimate (when allowed and
    it finds stalls), the model package's default (the training imagery's median; None when it has none)."""
    if georeference:
        return GsdChoice(float(georeference), "georeference")
    if request:
        return GsdChoice(float(request), "request")
    found = estimate_gsd(segmenter, rgb) if estimate else None
    if found is not None and found.gsd is not None:
        return GsdChoice(found.gsd, "estimated", found)
    return GsdChoice(segmenter.config.default_image_gsd, "default", found)
