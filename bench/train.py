"""Benchmark: the demo training profile end to end on synthetic data, timed per stage.

    nice -n 10 .venv/bin/python bench/train.py [--n 40] [--gsd 0.1] [--profile demo] [--keep DIR]

Stages: synth (generator) -> ingest -> preprocess -> train (Optuna CV + final fit + register) -> promote.
A throwaway MLflow server runs on a free loopback port; everything lives in a temporary PARKING_HOME.
Prints wall time per stage, the machine load around the run, and the holdout metrics of the registered
challenger against the goal (free-space IoU >= 0.85, free-count error <= 1 per 256-px tile).
Timings are only comparable on a quiet machine: the load average is printed so a reader can judge.
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

from parking_ml.stack import start_local_mlflow, stop_pid

GOALS = {"iou_free": (">=", 0.85), "free_count_mae": ("<=", 1.0)}


def parse_gsd(text: str) -> float | tuple[float, float]:
    parts = [float(p) for p in text.split("-")]
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40, help="synthetic 512-px images (each gives four 256-px tiles)")
    parser.add_argument("--gsd", default="0.1", help="metres per pixel, or a range like 0.08-0.15")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", default="demo", choices=["smoke", "demo", "full"])
    parser.add_argument("--keep", type=Path, default=None, help="keep PARKING_HOME here instead of a temp dir")
    args = parser.parse_args()

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from parking_ml.config import Settings
    from parking_ml.logs import configure_logging

    configure_logging("WARNING", json_lines=False)
    home = args.keep or Path(tempfile.mkdtemp(prefix="parking-bench-train-"))
    home.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    server, uri = start_local_mlflow(home / "mlflow")
    stages: list[tuple[str, float, str]] = []
    try:
        settings = Settings(home=home, mlflow_tracking_uri=uri, profile=args.profile, seed=args.seed)
        from parking_ml.lake import Lake

        lake = Lake.from_settings(settings)

        t0 = time.perf_counter()
        from parking_ml.data.synthetic import generate_dataset

        paths = generate_dataset(
            lake.local_path(f"landing/bench-{args.seed}"), args.n, args.seed, 512, parse_gsd(args.gsd), progress=False
        )
        stages.append(("synth", time.perf_counter() - t0, f"{len(paths)} images of 512 px"))

        t0 = time.perf_counter()
        from parking_ml.data.ingest import ingest

        summary = ingest(lake, None, settings.max_pixels, progress=False)
        stages.append(("ingest", time.perf_counter() - t0, json.dumps(summary, default=str)[:80]))

        t0 = time.perf_counter()
        from parking_ml.data.preprocess import PreprocessConfig, preprocess

        summary = preprocess(lake, PreprocessConfig.from_settings(settings), progress=False)
        stages.append(("preprocess", time.perf_counter() - t0, json.dumps(summary, default=str)[:80]))

        t0 = time.perf_counter()
        from parking_ml.model.tune import run_training

        outcome = run_training(settings)
        train_s = time.perf_counter() - t0
        stages.append(
            (
                "train",
                train_s,
                f"tuning {outcome['timings_s'].get('tuning', 0):.0f} s ({outcome['trials_run']} trials), "
                f"final fit {outcome['timings_s'].get('final_fit', 0):.0f} s, v{outcome['model_version']}",
            )
        )

        t0 = time.perf_counter()
        from parking_ml.model.promote import run_promotion

        decision = run_promotion(settings)
        stages.append(("promote", time.perf_counter() - t0, "promoted" if decision["promoted"] else "rejected"))
    finally:
        stop_pid(server.pid, timeout_s=15)
    load_after = os.getloadavg()

    print(f"\nparking-ml training benchmark: profile {args.profile}, {args.n} synthetic images, gsd {args.gsd}")
    print(f"threads {settings.threads}, load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"\n{'stage':<12}{'wall s':>9}  note")
    for name, secs, note in stages:
        print(f"{name:<12}{secs:>9.1f}  {note}")
    print(f"{'total':<12}{sum(s for _, s, _ in stages):>9.1f}")
    hold = outcome["holdout_metrics"]
    print(f"\nholdout ({int(hold.get('n_tiles', 0))} tiles, via parking_ml.inference):")
    for key in ("iou_free", "free_f1", "iou_occupied", "miou", "space_f1", "free_count_mae", "stall_accuracy"):
        if key in hold:
            goal = GOALS.get(key)
            verdict = ""
            if goal:
                ok = hold[key] >= goal[1] if goal[0] == ">=" else hold[key] <= goal[1]
                verdict = f"  goal {goal[0]} {goal[1]}: {'met' if ok else 'NOT met'}"
            print(f"  {key:<16}{hold[key]:>8.4f}{verdict}")
    print(f"\npromotion: {decision['reason']}")
    if args.keep is None:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
