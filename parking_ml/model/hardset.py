"""The hard set: the generator's hard modes (parking_ml.synth.hard), a fixed seed each, scored like the holdout.

Each mode's tiles are pass 0 of the first ``sites`` sites of its seed that show the mode (a road with cars in
view, a hatched zone or crossing in view, ...) and hold a few labelled stalls, each 512-px tile cut into four
256-px tiles by preprocessing's rule. The same tiles for every model and change, so each mode has a number
that moves: free IoU, free-count error per tile and stall accuracy (majority class inside each labelled stall).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parking_ml.synth import HARD_MODES, HARD_SET_SEEDS, SiteRenderer

HARD_SET_SITES = 8  # x 4 tiles of 256 px: 32 tiles a mode
HARD_SET_GSD = (0.08, 0.15)  # the demo's training range, and the real tiles' ~0.094 inside it
HARD_SET_METRICS = ("iou_free", "free_count_mae", "stall_accuracy", "free_f1", "iou_occupied")
_MIN_LABELLED = 3


def shows_mode(tile, site, mode: str) -> bool:
    """Whether a rendered tile shows its mode's hard case (and has a few labelled stalls to score)."""
    labelled = sum(1 for v in tile.labels if v != 255)
    if labelled < _MIN_LABELLED:
        return False
    size = site.size

    def inside(points) -> bool:
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        return bool(len(pts)) and bool(np.any(np.all((pts >= 0) & (pts < size), axis=1)))

    if mode == "roadway_cars":
        return inside(tile.extras["roadway_car_centres"])
    if mode == "hatched_zones":
        centres = [h.mean(axis=0) for h in site.hatches] + [c for c, _, _ in site.crosswalks]
        return inside(centres)
    if mode == "dark_cars":
        return sum(1 for v in tile.labels if v == 2) >= _MIN_LABELLED
    if mode == "lot_edge":
        return inside([b.roof.mean(axis=0) for b in site.buildings]) or inside(list(site.curbs))
    if mode == "long_shadows":
        return len(site.poles) + len(site.trees) > 0
    return True  # faint_paint: its truth is the faint rule, whichever way it falls


def cut_quarters(rendered, tile: int = 256) -> list[dict]:
    """A rendered SyntheticTile cut into tile x tile pieces by preprocessing's rule, with their labelled stalls."""
    from parking_ml.data.annotations import Stall
    from parking_ml.data.preprocess import _tile_stalls, cut_tile, space_labels

    spaces = space_labels(rendered.mask)
    pairs = zip(rendered.stalls, rendered.labels, strict=True)
    stalls = [Stall(poly, status, label == 255) for (poly, status), label in pairs]
    out = []
    size = rendered.mask.shape[0]
    for y in range(0, size - tile + 1, tile):
        for x in range(0, size - tile + 1, tile):
            kept = [s for s in _tile_stalls(stalls, x, y, tile) if not s.ignore]
            out.append(
                {
                    "rgb": rendered.image[y : y + tile, x : x + tile],
                    "truth": cut_tile(rendered.mask, spaces, x, y, tile),
                    "gsd": rendered.gsd,
                    "stalls": [{"polygon": s.polygon.tolist(), "status": s.status} for s in kept],
                }
            )
    return out


def hard_set_tiles(
    mode: str, sites: int = HARD_SET_SITES, seed: int | None = None, gsd=HARD_SET_GSD, tile: int = 256
) -> list[dict]:
    """[{rgb, truth, gsd, stalls}] of one mode: 256-px tiles of the first ``sites`` sites that show it."""
    if mode not in HARD_MODES:
        raise ValueError(f"unknown hard mode {mode!r}; choose one of {', '.join(HARD_MODES)}")
    seed = HARD_SET_SEEDS[mode] if seed is None else seed
    out: list[dict] = []
    found = index = 0
    while found < sites and index < 20 * sites:
        sr = SiteRenderer(seed, index, 2 * tile, gsd, f"hard-{mode}-{index:04d}", hard=mode)
        index += 1
        rendered = sr.render(0)
        if not shows_mode(rendered, sr.site, mode):
            continue
        found += 1
        out.extend(cut_quarters(rendered, tile))
    return out


def style_tiles(style: str, seed: int, sites: int, gsd=HARD_SET_GSD, hard: str | None = "none") -> list[dict]:
    """Pass 0 of ``sites`` fresh lots of one style (no hard modes by default), as 256-px tiles with stalls."""
    out: list[dict] = []
    for index in range(sites):
        rendered = SiteRenderer(seed, index, 512, gsd, f"s{seed}-site-{index:04d}", hard=hard).render(0, style)
        out.extend(cut_quarters(rendered))
    return out


def score_tiles(segmenter, tiles: Sequence[dict]) -> dict:
    """A segmenter (parking_ml.inference) on tiles from hard_set_tiles, through the serving code, scored."""
    from parking_ml.inference import predict
    from parking_ml.model.metrics import evaluate

    preds = [predict(segmenter, t["rgb"], image_gsd=t["gsd"]).mask for t in tiles]
    return evaluate(preds, [t["truth"] for t in tiles], stalls=[t["stalls"] for t in tiles])


def score_package(package_dir: str | Path, modes: Sequence[str] = HARD_MODES, threads: int = 2, **kw) -> dict:
    """{mode: metrics} of a model package (a folder with model.onnx + preprocess.json) on the hard set."""
    from parking_ml.inference import OnnxSegmenter

    segmenter = OnnxSegmenter.from_dir(Path(package_dir), threads)
    return {mode: score_tiles(segmenter, hard_set_tiles(mode, **kw)) for mode in modes}


def score_model_uri(
    model_uri: str, tracking_uri: str, threads: int = 2, modes: Sequence[str] = HARD_MODES, **kw
) -> dict:
    """score_package of a registered model (any MLflow model URI)."""
    from parking_ml.model.package import download_package

    with tempfile.TemporaryDirectory(prefix="parking-hardset-") as tmp:
        return score_package(download_package(model_uri, Path(tmp) / "pkg", tracking_uri), modes, threads, **kw)


def format_table(scores: dict[str, dict[str, dict]], metrics: Sequence[str] = HARD_SET_METRICS[:3]) -> str:
    """Markdown table: one row per (mode, model); ``scores`` is {model name: {mode: metrics}}."""
    head = "| mode | model | tiles | " + " | ".join(metrics) + " |"
    lines = [head, "|" + " --- |" * (3 + len(metrics))]
    modes = list(next(iter(scores.values()))) if scores else []
    for mode in modes:
        for name, by_mode in scores.items():
            m = by_mode[mode]
            cells = " | ".join(f"{float(m.get(k, float('nan'))):.3f}" for k in metrics)
            lines.append(f"| {mode} | {name} | {int(m['n_tiles'])} | {cells} |")
    return "\n".join(lines)


# why: a labelled stall interior is ~1.95 m x 4.55 m; the trainer keeps a tenth of the median space (recipe.py)
_STALL_INTERIOR_M2 = 8.9


def shipped_package(settings, out_dir: str | Path, profile="demo", weights: str | None = None) -> Path:
    """The profile's shipped pretrained network (parking_ml/weights, or ``weights``) as a model package, no
    training: the serving contract is the one the trainer would write for tiles of HARD_SET_GSD. ``profile``: a
    profile's name or a TrainProfile."""
    from parking_ml.data.augment import NORMALIZE_MEAN, NORMALIZE_STD
    from parking_ml.inference import PreprocessConfig
    from parking_ml.model.package import build_package
    from parking_ml.model.profiles import get_profile
    from parking_ml.model.recipe import model_gsd, new_model

    if weights is not None:
        settings = settings.model_copy(update={"init_weights": str(weights)})
    profile = get_profile(profile) if isinstance(profile, str) else profile
    model = new_model(dict(profile.seed_params), profile, settings)
    gsd = model_gsd(profile, settings)
    native = float(np.sqrt(HARD_SET_GSD[0] * HARD_SET_GSD[1]))
    scale = gsd or native
    serving = PreprocessConfig(
        mean=tuple(NORMALIZE_MEAN),
        std=tuple(NORMALIZE_STD),
        tile_size=profile.tile_size,
        overlap=min(settings.tile_overlap, profile.tile_size // 4),
        pad_multiple=32,
        min_area_px=max(4, int(0.1 * _STALL_INTERIOR_M2 / scale**2)),
        gsd=scale,
        resample=gsd is not None,
        default_image_gsd=native,
        tta=profile.tta,
        grow_px=profile.grow_px,
        **({"grow_prob": profile.grow_prob} if profile.grow_prob is not None else {}),
    )
    return build_package(model.eval(), serving, Path(out_dir), None, profile.tile_size).dir
