"""The training time budget: what the work after the final fit will cost (timed on this machine, before and
halfway through the fit), the fit's share of the profile's budget, and the tuning study's stop before it
overruns its own."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from parking_ml.data.processed import evenly_spaced
from parking_ml.model.profiles import TrainProfile, final_fit_budget

logger = logging.getLogger(__name__)

# why: a trained model's maps hold more spaces to trace than the untrained probe's, and scoring, figures and
# registration cost a fixed time whatever the tiles (docs/experiments/fit-time-budget.md)
TRAINED_PACE_FACTOR = 2.0
AFTER_FIT_FIXED_S = 30.0
# why: halfway through, the model's maps are nearly a trained one's: a small margin, and more tiles as their pace
# varies with their gsd (docs/experiments/fit-time-budget.md)
MID_FIT_PACE_FACTOR = 1.2
MID_FIT_PROBES = 10


def after_fit_estimate_s(
    model: Any,
    serving: Any,
    root: Path,
    rows: pd.DataFrame,
    n_tiles: int,
    threads: int,
    probes: int = 2,
    pace_factor: float = TRAINED_PACE_FACTOR,
) -> float:
    """Wall seconds the work after the final fit will take: the ONNX export and parity check, timed on this
    network, and ``n_tiles`` tiles of served inference (its test-time augmentation included) at the pace of
    ``probes`` tiles of ``rows`` after a warm-up one, times ``pace_factor`` (an untrained model's maps take
    less post-processing than a trained one's: TRAINED_PACE_FACTOR), plus AFTER_FIT_FIXED_S. The network's
    cost is known before it is trained, so a machine too slow for the planned fit gives the fit less time
    instead of overrunning the budget; halfway through the fit the estimate is taken again on the model as it
    is then (docs/experiments/fit-time-budget.md)."""
    from parking_ml.data.dataset import read_tile
    from parking_ml.inference import OnnxSegmenter, predict
    from parking_ml.model.package import build_package

    with tempfile.TemporaryDirectory(prefix="parking-probe-") as tmp:
        t0 = time.perf_counter()
        build_package(model, serving, Path(tmp), None, serving.tile_size)
        segmenter = OnnxSegmenter.from_dir(Path(tmp), threads=threads)
        export_s = time.perf_counter() - t0
        # spread over the rows, not their head: one site's tiles share a gsd, and so a size on the model's grid
        sample = evenly_spaced(rows, probes + 1)
        paces = []
        for row in sample.itertuples(index=False):
            rgb, _ = read_tile(root, str(row.tile_id))
            gsd = getattr(row, "gsd", None)
            t1 = time.perf_counter()
            predict(segmenter, rgb, image_gsd=float(gsd) if gsd is not None and pd.notna(gsd) else None)
            paces.append(time.perf_counter() - t1)
    # the mean, not the median: the work after the fit is the sum over its tiles
    per_tile = float(np.mean(paces[1:])) if len(paces) > 1 else (paces[0] if paces else 0.0)
    return export_s + per_tile * pace_factor * n_tiles + AFTER_FIT_FIXED_S


def stop_before_overrun(budget_s: float | None, clock: Callable[[], float] = time.perf_counter) -> Callable:
    """An Optuna callback that stops the study when one more trial, at the mean pace of the trials this call
    ran, would end past ``budget_s`` of tuning. Optuna's own timeout only refuses to start a trial after the
    budget, and the overrun is time the final fit then lacks (docs/experiments/tuning-budget.md)."""
    start = clock()
    ran = 0

    def callback(study: Any, trial: Any) -> None:
        nonlocal ran
        ran += 1
        if budget_s is None:
            return
        elapsed = clock() - start
        pace = elapsed / ran
        if elapsed + pace > budget_s:
            logger.info(
                "tuning: the next trial would end past the tuning budget; stopping",
                extra={"elapsed_s": round(elapsed, 1), "trial_s": round(pace, 1), "budget_s": budget_s},
            )
            study.stop()

    return callback


@dataclass
class FitPlan:
    """The final fit's wall-clock budget (None: unbounded), the estimate of the work after it that the budget
    leaves room for, and the callback that takes the estimate again halfway through (see train.fit)."""

    fit_s: float | None
    after_fit_s: float = 0.0
    rebudget: Callable[[Any], float | None] | None = None
    # what the estimate halfway through the fit came to (after_fit_estimate_mid_s), once it has run
    mid_fit: dict[str, float] = field(default_factory=dict)


def plan_final_fit(
    profile: TrainProfile,
    model: Any,
    serving: Any,
    root: Path,
    probe_rows: pd.DataFrame,
    n_after: int,
    threads: int,
    tuning_s: float = 0.0,
    time_budget_s: float | None = None,
) -> FitPlan:
    """``time_budget_s`` when given (nothing is estimated); else what the profile's train_budget_s leaves after
    ``tuning_s`` and the work after the fit: ``n_after`` served tiles at the pace of ``probe_rows``."""
    if time_budget_s is not None:
        return FitPlan(time_budget_s)
    if profile.train_budget_s is None:
        return FitPlan(final_fit_budget(profile, tuning_s, 0.0))
    after_s = after_fit_estimate_s(model, serving, root, probe_rows, n_after, threads)
    plan = FitPlan(final_fit_budget(profile, tuning_s, after_s), after_s)

    def rebudget(part_trained: Any) -> float | None:
        plan.mid_fit["after_fit_estimate_mid_s"] = after_fit_estimate_s(
            part_trained,
            serving,
            root,
            probe_rows,
            n_after,
            threads,
            probes=MID_FIT_PROBES,
            pace_factor=MID_FIT_PACE_FACTOR,
        )
        return final_fit_budget(profile, tuning_s, plan.mid_fit["after_fit_estimate_mid_s"])

    plan.rebudget = rebudget
    return plan
