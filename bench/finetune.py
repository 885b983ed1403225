"""Bring your own labels, measured: fine-tune the shipped network on a few dozen tiles of an unseen style.

    nice -n 10 .venv/bin/python bench/finetune.py [--sites 8] [--passes 4] [--budget-s 240] [--style pavers]

The user's path, on a style no shipped network saw (parking_ml.synth HELD_OUT_STYLES: another country's
brick pavers): ``sites`` x ``passes`` 512-px JPEG tiles with GeoJSON stall polygons (status free/occupied)
dropped into landing/mylots/<lot>/ of a lake that already holds the demo's synthetic batch, ingested,
preprocessed with PARKING_DATA_BATCHES=mylots (the holdout is the user's own lots), then fitted twice with
the same parameters and the same wall-clock budget: from the shipped synthetic-pretrained network (the
default start) and from a new network. Each is registered and gated by the promotion step.

Scored on: other lots of the same style (``--eval-sites`` fresh sites of another seed), the user's own
holdout (what the gate sees), and fresh default-style lots (what fine-tuning may have forgotten). The peer
in the same run is the shipped network before fine-tuning, on the same tiles.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2

from parking_ml.ops.stack import start_local_mlflow, stop_pid

USER_BATCH = "mylots"


def user_batch(landing: Path, sites: int, passes: int, seed: int, style: str) -> int:
    """What a user drops: JPEG tiles + GeoJSON stall polygons, one folder per lot (the generator's PNG and
    mask are turned into that and removed). Returns the number of tiles."""
    from parking_ml.synth import generate_dataset

    paths = generate_dataset(landing, sites * passes, seed, 512, (0.08, 0.15), style, sites=sites, progress=False)
    for png in paths:
        image = cv2.imread(str(png), cv2.IMREAD_COLOR)
        cv2.imwrite(str(png.with_suffix(".jpg")), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        png.unlink()
        png.with_name(png.stem + ".mask.png").unlink()
    return len(paths)


def score_sets(segmenter_dir: Path, sets: dict[str, list[dict]], threads: int) -> dict[str, dict]:
    from parking_ml.inference import OnnxSegmenter
    from parking_ml.model.hardset import score_tiles

    segmenter = OnnxSegmenter.from_dir(segmenter_dir, threads)
    return {name: score_tiles(segmenter, tiles) for name, tiles in sets.items()}


def holdout_tiles(data) -> list[dict]:
    """The processed dataset's holdout tiles as score_tiles wants them (rgb, truth, gsd, stalls)."""
    from parking_ml.data.dataset import read_tile
    from parking_ml.data.processed import holdout_rows
    from parking_ml.model.evaluation import load_stalls

    out = []
    for row in holdout_rows(data.manifest).itertuples(index=False):
        rgb, truth = read_tile(data.root, str(row.tile_id))
        stalls = load_stalls(data.root, str(row.tile_id))
        gsd = float(row.gsd) if row.gsd is not None and row.gsd == row.gsd else None  # NaN: not known
        out.append({"rgb": rgb, "truth": truth, "gsd": gsd, "stalls": stalls or []})
    return out


def bench_profile(name: str, tta: str):
    """The profile with the given test-time augmentation (none: 8x cheaper scoring, the same for every model
    here). Its epochs stay as they are: the fit meets its budget by resizing epochs, at least a step each."""
    import dataclasses

    from parking_ml.model.profiles import get_profile

    return dataclasses.replace(get_profile(name), tta=tta)


def fit(settings, data, profile, init: str | None, name: str, budget_s: float) -> dict:
    """One final fit of the recipe on the user's training lots, ``budget_s`` of wall time, registered."""
    import mlflow

    from parking_ml.model.final_fit import final_fit

    fit_settings = settings.model_copy(update={"init_weights": init})
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(settings.model_name)
    with mlflow.start_run(run_name=name):
        out = final_fit(fit_settings, data, profile, dict(profile.seed_params), {}, name, False, time_budget_s=budget_s)
    return {"uri": out.model_uri, "version": out.model_version, "steps": out.final_fit_steps}


def _show(name: str, by_set: dict[str, dict]) -> None:
    """One model's scores as soon as they exist (a long run that fails later still leaves them)."""
    keys = ("iou_free", "free_count_mae", "stall_accuracy", "free_f1")
    print(name, json.dumps({s: {k: round(float(m[k]), 4) for k in keys} for s, m in by_set.items()}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=8, help="the user's lots")
    parser.add_argument("--passes", type=int, default=4, help="tiles per lot (512 px)")
    parser.add_argument("--style", default="pavers")
    parser.add_argument("--seed", type=int, default=4242, help="seed of the user's lots")
    parser.add_argument("--eval-seed", type=int, default=4343, help="seed of the other lots of the style")
    parser.add_argument("--eval-sites", type=int, default=12)
    parser.add_argument("--budget-s", type=float, default=240.0, help="wall-clock seconds of each fit")
    parser.add_argument("--tta", default="none", help="test-time augmentation of every model here")
    parser.add_argument("--keep", type=Path, default=None, help="keep PARKING_HOME here")
    args = parser.parse_args()

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from parking_ml.config import Settings
    from parking_ml.data.ingest import ingest
    from parking_ml.data.preprocess import TilingConfig, preprocess
    from parking_ml.data.processed import load_processed
    from parking_ml.lake import Lake
    from parking_ml.logs import configure_logging
    from parking_ml.model.hardset import format_table, shipped_package, style_tiles
    from parking_ml.model.package import download_package
    from parking_ml.model.promote import run_promotion
    from parking_ml.synth import generate_dataset

    configure_logging("WARNING", json_lines=False)
    home = args.keep or Path(tempfile.mkdtemp(prefix="parking-bench-finetune-"))
    home.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    server, uri = start_local_mlflow(home / "mlflow")
    try:
        settings = Settings(home=home, mlflow_tracking_uri=uri, profile="demo", data_batches=USER_BATCH)
        lake = Lake.from_settings(settings)
        # the demo's synthetic batch is in the lake too: the filter must keep it out of the user's dataset
        generate_dataset(lake.local_path("landing/demo-synth"), 16, 1, 256, (0.08, 0.15), progress=False)
        n = user_batch(lake.local_path(f"landing/{USER_BATCH}"), args.sites, args.passes, args.seed, args.style)
        ingest(lake, None, settings.max_pixels, progress=False)
        preprocess(lake, TilingConfig.from_settings(settings), progress=False)
        data = load_processed(settings)
        profile = bench_profile(settings.profile, args.tta)
        held = sorted(set(data.manifest.loc[data.manifest["split"] == "holdout", "site"]))
        sets = {
            f"{args.style} lots": style_tiles(args.style, args.eval_seed, args.eval_sites),
            "own holdout": holdout_tiles(data),
            "default lots": style_tiles("default", args.eval_seed, args.eval_sites),
        }
        scores: dict[str, dict] = {}
        steps: dict[str, int] = {}
        with tempfile.TemporaryDirectory(prefix="parking-ft-") as tmp:
            shipped = shipped_package(settings, Path(tmp) / "s", profile)
            scores["shipped (before)"] = score_sets(shipped, sets, settings.threads)
            _show("shipped (before)", scores["shipped (before)"])
            runs = {"fine-tuned": None, "own tiles only": "none"}
            decisions = {}
            for name, init in runs.items():
                t0 = time.perf_counter()
                out = fit(settings, data, profile, init, name, args.budget_s)
                steps[name] = out["steps"]
                pkg = download_package(out["uri"], Path(tmp) / name.replace(" ", "-"), uri)
                scores[name] = score_sets(pkg, sets, settings.threads)
                _show(name, scores[name])
                decisions[name] = run_promotion(settings)["reason"]
                print(f"{name}: {out['steps']} steps, {time.perf_counter() - t0:.0f} s with scoring", flush=True)
    finally:
        stop_pid(server.pid, timeout_s=15)
    print(
        f"\nfine-tune bench: {n} user tiles of style {args.style} ({args.sites} lots x {args.passes}), "
        f"holdout lots {held}, {args.budget_s:.0f} s per fit, TTA {args.tta}; load average {load_before:.2f} -> "
        f"{os.getloadavg()[0]:.2f}; steps {steps}"
    )
    print("\n" + format_table(scores, ("iou_free", "free_count_mae", "stall_accuracy", "free_f1")))
    print("\npromotion gate (on the user's holdout):")
    for name, reason in decisions.items():
        print(f"  {name}: {reason}")
    if args.keep is None:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
