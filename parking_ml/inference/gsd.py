"""Ground resolution (m/px) of an image that does not say it, from the sizes of the stalls the served network
finds: a cheap pass (no test-time augmentation) at each of a ladder of candidate resolutions; each pass's spaces
imply a gsd (a stall's known size / their measured size), and the gsd that most passes agree on wins.

Why it works (docs/experiments/gsd-estimate.md): seen within ~0.75-1.2x of its own scale, the network outlines
the stalls, so the size of its spaces in metres grows in proportion to the resolution assumed and every such pass
implies the same gsd; further out it breaks stalls into pieces or merges them into blobs, and the passes disagree.
When few passes agree (dark dusk imagery above all) the ladder runs again on the image balanced to daylight
imagery's brightness, and the better-supported answer wins. Only numpy and OpenCV here: the serving image carries
no torch.
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
# why: fewer agreeing passes than this and the balanced image is probed too; each channel is scaled so its median
# is BALANCE_MEDIAN, about daylight generator imagery's (docs/experiments/gsd-estimate.md)
STRONG_SUPPORT = 4
BALANCE_MEDIAN = 100.0
# a balance this close to identity would repeat the first ladder: skipped
BALANCE_MIN_CHANGE = 0.1


@dataclass(frozen=True)
class Probe:
    """One pass at an assumed gsd: spaces measured, the square root of their median area (m) and their median
    long / short side ratio (NaN when fewer than MIN_SPACES)."""

    gsd: float
    spaces: int
    size_m: float
    aspect: float
    balanced: bool = False

    def implied(self, size_m: float) -> float | None:
        """The gsd this probe's spaces imply (None: too few, or not stall-shaped)."""
        if self.spaces < MIN_SPACES or not self.aspect >= MIN_ASPECT:
            return None
        return self.gsd * size_m / self.size_m


@dataclass(frozen=True)
class GsdEstimate:
    """gsd None: no candidate found stall-like spaces (the caller falls back to the default); balanced: the answer
    came from the image balanced to daylight's brightness."""

    gsd: float | None
    spaces: int
    probes: tuple[Probe, ...]
    elapsed_ms: float
    balanced: bool = False


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


def measure(segmenter: Segmenter, rgb: np.ndarray, gsd: float, balanced: bool = False) -> Probe:
    """One pass at an assumed gsd: a centred crop resampled to the network's grid, the served post-processing's
    spaces there, those clear of the crop's border measured (network px x the model's gsd = metres). ``balanced``
    only labels the probe (the caller passes the balanced image)."""
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
        return Probe(gsd, len(sizes), math.nan, math.nan, balanced)
    return Probe(gsd, len(sizes), float(np.median(sizes)), float(np.median(aspects)), balanced)


@dataclass(frozen=True)
class Cluster:
    """The passes that agree on one gsd: their median implied gsd, the most spaces one of them measured, how many
    passes agree and the spaces all of them measured."""

    gsd: float
    spaces: int
    support: int
    total_spaces: int

    @property
    def strength(self) -> tuple[int, int]:
        return (self.support, self.total_spaces)


def choose(probes: list[Probe], size_m: float, tol: float) -> Cluster | None:
    """The implied gsd that most probes agree with (within ``tol`` in log), counting only probes that lie inside
    BAND of it (where the network's sizes are proportional). Ties go to more spaces measured. None when no probe
    found stall-shaped spaces."""
    implied = [(p, g) for p in probes if (g := p.implied(size_m)) is not None]
    best: tuple[tuple[int, int], Cluster] | None = None
    for p, g in implied:
        support = [(q, h) for q, h in implied if abs(math.log(h / g)) < tol and BAND[0] <= q.gsd / g <= BAND[1]]
        if not support:
            continue
        key = (len(support), p.spaces)
        if best is None or key > best[0]:
            spaces = [q.spaces for q, _ in support]
            best = (key, Cluster(float(np.median([h for _, h in support])), max(spaces), len(support), sum(spaces)))
    return None if best is None else best[1]


def balance(rgb: np.ndarray) -> np.ndarray | None:
    """The image with each channel scaled so its median is BALANCE_MEDIAN (a gain per channel, no stretch: dark,
    colour-cast dusk imagery brought to daylight's level); None when that changes no channel by
    BALANCE_MIN_CHANGE or more. Medians from a subsample, so the cost does not grow with the image."""
    h, w = rgb.shape[:2]
    step = max(1, round(math.sqrt(h * w / 65536)))
    medians = np.median(rgb[::step, ::step].reshape(-1, 3), axis=0).astype(np.float64)
    gains = BALANCE_MEDIAN / np.maximum(medians, 1.0)
    if np.all(np.abs(gains - 1.0) < BALANCE_MIN_CHANGE):
        return None
    out = rgb.astype(np.float32) * gains.astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def _ladder(segmenter: Segmenter, rgb: np.ndarray, size_m: float, balanced: bool) -> tuple[Cluster | None, list[Probe]]:
    """The coarse candidates, then the in-between ones inside the band of the first answer (more agreeing
    probes, a tighter median)."""
    probes = [measure(segmenter, rgb, g, balanced) for g in COARSE]
    found = choose(probes, size_m, tol=0.08)
    if found is not None:
        probes += [measure(segmenter, rgb, g, balanced) for g in FINE if BAND[0] <= g / found.gsd <= BAND[1]]
        found = choose(probes, size_m, tol=0.05) or found
    return found, probes


def estimate_gsd(segmenter: Segmenter, rgb: np.ndarray) -> GsdEstimate:
    """Estimate the image's gsd (m/px) with the served network; gsd None when the model has no gsd of its own
    (nothing to scale against) or found nothing stall-like at any candidate."""
    t0 = time.perf_counter()
    if not segmenter.config.gsd:
        return GsdEstimate(None, 0, (), 0.0)
    probe_seg = _probe_segmenter(segmenter)
    size_m = expected_size_m(segmenter.config)
    found, probes = _ladder(probe_seg, rgb, size_m, balanced=False)
    balanced = False
    if found is None or found.support < STRONG_SUPPORT:
        bright = balance(rgb)
        if bright is not None:
            again, more = _ladder(probe_seg, bright, size_m, balanced=True)
            probes += more
            if again is not None and (found is None or again.strength > found.strength):
                found, balanced = again, True
    elapsed = (time.perf_counter() - t0) * 1000
    if found is None:
        return GsdEstimate(None, 0, tuple(probes), elapsed)
    return GsdEstimate(round(found.gsd, 4), found.spaces, tuple(probes), elapsed, balanced)


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
