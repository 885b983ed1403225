"""Ground resolution (m/px) of an image that does not say it, from the sizes of the stalls the served network
finds: a cheap pass (no test-time augmentation) at each of a ladder of candidate resolutions, the candidate whose
spaces look most like real stalls chosen, and its stall length turned into the estimate.

Why it works (docs/experiments/gsd-estimate.md): seen near its own scale, the network outlines stalls, so the
long side of its spaces in metres grows in proportion to the resolution assumed; far from it, it finds blobs of
the size it learnt, short and squat. Only numpy and OpenCV here: the serving image carries no torch.
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

# why: a stall's mean length (4.8-5.5 m), calibrated so that the served demo network's spaces at the true gsd
# measure what expected_length_m says (docs/experiments/gsd-estimate.md)
STALL_LENGTH_M = 5.1
# long / short side of the network's spaces at the true gsd (median over generator images)
STALL_ASPECT = 2.2
# candidate resolutions: 0.04 .. 0.40 m/px, 1.2x apart (the network's proportional range is ~1.4x wide)
CANDIDATES = tuple(round(0.04 * 1.2**k, 4) for k in range(13))
# each pass looks at a centred crop that is at most this side on the network's grid (64 m at 0.2 m/px): one
# window per pass, so the estimate's cost does not grow with the image or the candidate
NETWORK_SIDE = 320
# spaces less sure than this are not measured
MIN_CONFIDENCE = 0.5
MIN_SPACES = 2
# score weights: the aspect term rejects squat blobs, the slope term the far side of the proportional range
_ASPECT_WEIGHT = 1.0
_SLOPE_WEIGHT = 0.05


@dataclass(frozen=True)
class Probe:
    """What one pass at an assumed gsd measured: spaces counted, their median long side (m) and aspect."""

    gsd: float
    spaces: int
    length_m: float
    aspect: float


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


def expected_length_m(config: PreprocessConfig) -> float:
    """Long side (m) the network's spaces have at the true gsd: the stall less the label's inward shrink of
    max(0.3 m, 2 px) per end (at the model's gsd), plus the served growth and the whole-pixel outline."""
    g = config.gsd or 0.2
    return STALL_LENGTH_M - 2 * max(0.3, 2 * g) + (2 * config.grow_px + 1) * g


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
    longs, aspects = [], []
    for space in pred.spaces:
        if space.confidence < MIN_CONFIDENCE:
            continue
        ring = np.asarray(space.polygon[:4], dtype=np.float64)
        if ring[:, 0].min() <= 1 or ring[:, 1].min() <= 1 or ring[:, 0].max() >= w - 1 or ring[:, 1].max() >= h - 1:
            continue  # cut by the border: its length is not a stall's
        a, b = np.linalg.norm(ring[1] - ring[0]), np.linalg.norm(ring[2] - ring[1])
        short, long = min(a, b), max(a, b)
        if short <= 0:
            continue
        longs.append(long * model_gsd)
        aspects.append(long / short)
    if len(longs) < MIN_SPACES:
        return Probe(gsd, len(longs), math.nan, math.nan)
    return Probe(gsd, len(longs), float(np.median(longs)), float(np.median(aspects)))


def choose(probes: list[Probe], length_m: float) -> tuple[Probe, float] | None:
    """The probe whose spaces look most like stalls at their assumed scale, and the gsd it implies.

    Score (lower is better): how far the measured length is from a stall's, how far the aspect is from a
    stall's, and how far the length's growth to the next candidate is from proportional (past the
    proportional range it shrinks: the network breaks stalls it sees too large into pieces)."""
    best: tuple[float, Probe] | None = None
    for i, p in enumerate(probes):
        if p.spaces < MIN_SPACES:
            continue
        nxt = probes[i + 1] if i + 1 < len(probes) else None
        slope = 0.0
        if nxt is not None and nxt.spaces >= MIN_SPACES:
            slope = math.log(nxt.length_m / p.length_m) / math.log(nxt.gsd / p.gsd)
        score = (
            abs(math.log(length_m / p.length_m))
            + _ASPECT_WEIGHT * abs(math.log(p.aspect / STALL_ASPECT))
            + _SLOPE_WEIGHT * abs(slope - 1.0)
        )
        if best is None or score < best[0]:
            best = (score, p)
    if best is None:
        return None
    p = best[1]
    return p, p.gsd * length_m / p.length_m


def estimate_gsd(
    segmenter: Segmenter, rgb: np.ndarray, candidates: tuple[float, ...] = CANDIDATES
) -> GsdEstimate:
    """Estimate the image's gsd (m/px) with the served network; gsd None when the model has no gsd of its own
    (nothing to scale against) or found nothing stall-like at any candidate."""
    t0 = time.perf_counter()
    if not segmenter.config.gsd:
        return GsdEstimate(None, 0, (), 0.0)
    probe_seg = _probe_segmenter(segmenter)
    length_m = expected_length_m(segmenter.config)
    probes = [measure(probe_seg, rgb, g) for g in candidates]
    chosen = choose(probes, length_m)
    if chosen is None:
        return GsdEstimate(None, 0, tuple(probes), (time.perf_counter() - t0) * 1000)
    picked, gsd = chosen
    spaces = picked.spaces
    # one pass at the estimate itself: inside the proportional range it agrees; when the chosen candidate sat
    # at the range's edge it moves the estimate to where the stalls measure a stall's length
    check = measure(probe_seg, rgb, gsd)
    if check.spaces >= MIN_SPACES:
        refined = gsd * length_m / check.length_m
        if abs(math.log(refined / gsd)) < 0.15:
            gsd, spaces = refined, check.spaces
        probes.append(check)
    return GsdEstimate(round(float(gsd), 4), spaces, tuple(probes), (time.perf_counter() - t0) * 1000)


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
