"""Drift benchmark: verdicts per generator style and window size, and the time to build a report.

Run by hand (about 5 minutes on 2 busy cores):

    nice -n 10 .venv/bin/python bench/drift.py [--reference 200] [--sizes 100 300 1000] [--build 1000 10000 100000]

Reference: image features of `--reference` default-style tiles (256 px, 4 passes per site: the final fit keeps
200 training tiles). Windows: disjoint runs of tiles of each style (other seeds and sites); every default-style
window that says "drift" is a false alarm. Peer: Evidently's own defaults (DataDriftPreset() with its automatic
per-column tests, dataset drift at half the columns) on the same windows, in the same run.
Build time: one report (Evidently run + HTML + JSON) of N live rows (resampled from the generated rows, with
jitter) against the reference, ours and the peer's.

    nice -n 10 .venv/bin/python bench/drift.py --embedding [--windows 2]

instead judges 100-row windows of each style with the shipped demo network's embedding alone, beside the
image statistics alone (docs/experiments/embedding-drift.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STYLES = ("default", "winter", "dusk", "sensor")


def style_rows(style: str, n: int, seed: int, passes: int = 4) -> pd.DataFrame:
    from parking_ml.features import features_frame, tile_features
    from parking_ml.synth import SiteRenderer

    rows, site = [], 0
    while len(rows) < n:
        renderer = SiteRenderer(seed, site, 256, 0.1, f"site-{site:04d}", hard="none")
        rows.extend(tile_features(renderer.render(p, style).image) for p in range(passes))
        site += 1
    return features_frame(rows[:n])


def peer_report(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> tuple[float, str, float]:
    """Evidently's defaults: (share of drifted columns, verdict, seconds incl. HTML and JSON)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    t0 = time.perf_counter()
    definition = DataDefinition(numerical_columns=columns)
    snap = Report([DataDriftPreset(columns=columns), DataSummaryPreset(columns=columns)]).run(
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    share = next(
        float(m["value"]["share"]) for m in snap.dict()["metrics"] if "DriftedColumnsCount" in m["metric_name"]
    )
    snap.get_html_str(as_iframe=False)
    snap.json()
    return share, "drift" if share >= 0.5 else "ok", time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=int, default=200, help="reference rows (default-style tiles)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000], help="window sizes")
    parser.add_argument("--default-windows", type=int, default=4, help="default-style windows per size")
    parser.add_argument("--build", type=int, nargs="+", default=[1000, 10000, 100000], help="rows to time")
    parser.add_argument("--embedding", action="store_true", help="embedding vs image statistics, demo network")
    parser.add_argument("--windows", type=int, default=2, help="--embedding: 100-row windows per style")
    args = parser.parse_args()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    if args.embedding:
        embedding_only(args)
        return
    from monitoring.drift import DriftConfig, compare

    config = DriftConfig()
    t0 = time.perf_counter()
    reference = style_rows("default", args.reference, seed=1)
    need = {s: max(args.sizes) for s in STYLES}
    need["default"] = sum(args.sizes) * args.default_windows
    pool = {s: style_rows(s, n, seed=2) for s, n in need.items()}
    print(f"generated {args.reference} + {sum(need.values())} tiles in {time.perf_counter() - t0:.0f} s", flush=True)
    columns = [c for c in config.columns if reference[c].notna().any()]

    print(f"\nreference: {args.reference} default-style rows; load average {os.getloadavg()[0]:.2f}")
    print("| style | rows | windows | ours: drift share (median) | ours: verdicts | Evidently defaults: share | "
          "Evidently defaults: verdicts |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    alarms = {"ours": [0, 0], "peer": [0, 0]}
    offset = 0
    for style in STYLES:
        for n in args.sizes:
            k = args.default_windows if style == "default" else 1
            ours, peer = [], []
            for _ in range(k):
                start = offset if style == "default" else 0
                window = pool[style].iloc[start : start + n]
                offset += n if style == "default" else 0
                result = compare(reference, window, config)
                ours.append((result.drift_share, result.verdict))
                peer.append(peer_report(reference, window, columns)[:2])
            if style == "default":
                alarms["ours"][0] += sum(v == "drift" for _, v in ours)
                alarms["peer"][0] += sum(v == "drift" for _, v in peer)
                alarms["ours"][1] += k
                alarms["peer"][1] += k
            print(
                f"| {style} | {n} | {k} | {np.median([s for s, _ in ours]):.2f} | "
                f"{', '.join(v for _, v in ours)} | {np.median([s for s, _ in peer]):.2f} | "
                f"{', '.join(v for _, v in peer)} |",
                flush=True,
            )
    for who, (bad, total) in alarms.items():
        print(f"false alarms on default-style windows, {who}: {bad} of {total}")

    print("\n| live rows | ours: build s | Evidently defaults: build s | ours / defaults | ours: verdict |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    source = pd.concat([pool["default"], pool["dusk"]], ignore_index=True)
    for n in args.build:
        rows = source.sample(n, replace=True, random_state=int(rng.integers(1 << 31))).reset_index(drop=True)
        jitter = rng.normal(1.0, 0.01, (n, len(columns)))
        rows[columns] = rows[columns].to_numpy() * jitter
        t1 = time.perf_counter()
        result = compare(reference, rows, config)
        ours_s = time.perf_counter() - t1
        peer_s = peer_report(reference, rows, columns)[2]
        print(f"| {n:,} | {ours_s:.1f} | {peer_s:.1f} | {ours_s / peer_s:.2f}x | {result.verdict} |", flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}; total {time.perf_counter() - t0:.0f} s")


def demo_package(work: Path) -> Path:
    """The shipped demo network (parking_ml/weights/demo-synthetic-fp32.pt) exported with the embedding."""
    import json

    import torch

    from parking_ml.inference import PreprocessConfig
    from parking_ml.model.network import build_model
    from parking_ml.model.package import build_package

    weights = Path(__file__).resolve().parent.parent / "parking_ml" / "weights" / "demo-synthetic-fp32.pt"
    recipe = json.loads(weights.with_suffix(".json").read_text())
    channels = tuple(recipe["decoder_channels"])
    net = build_model("unet", recipe["params"]["encoder"], decoder_channels=channels, encoder_depth=len(channels))
    net.load_state_dict(torch.load(weights, map_location="cpu"))
    return build_package(net.eval(), PreprocessConfig(), work / "pkg", tile_size=256).dir


def embedding_only(args: argparse.Namespace) -> None:
    import tempfile

    from monitoring.drift import DriftConfig, compare
    from parking_ml.features import features_frame, tile_features
    from parking_ml.inference import OnnxSegmenter, predict
    from parking_ml.synth import SiteRenderer

    t0 = time.perf_counter()
    seg = OnnxSegmenter.from_dir(demo_package(Path(tempfile.mkdtemp(prefix="bench-drift-"))), threads=2)

    def rows(style: str, n: int, seed: int) -> pd.DataFrame:
        out, site = [], 0
        while len(out) < n:
            renderer = SiteRenderer(seed, site, 256, 0.1, f"site-{site:04d}", hard="none")
            for p in range(4):
                rgb = renderer.render(p, style).image
                out.append(tile_features(rgb, predict(seg, rgb)))
            site += 1
        return features_frame(out[:n])

    reference = rows("default", args.reference, seed=1)
    emb_only = DriftConfig(columns=())
    images_only = DriftConfig(columns=tuple(c for c in DriftConfig().columns if c not in ("mean_confidence",
                                                                                          "free_fraction",
                                                                                          "free_spaces")))  # fmt: skip
    print(f"demo network, reference {args.reference} default-style rows; load {os.getloadavg()[0]:.2f}")
    print("| style | window | embedding AUC (threshold) | embedding verdict | image statistics verdict | "
          "all features verdict |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for style in STYLES:
        pool = rows(style, 100 * args.windows, seed=2)
        for w in range(args.windows):
            window = pool.iloc[w * 100 : (w + 1) * 100]
            emb = compare(reference, window, emb_only)
            img = compare(reference, window, images_only)
            full = compare(reference, window)
            e = emb.features["embedding"]
            print(
                f"| {style} | {w + 1} | {e['score']:.3f} ({e['threshold']:.3f}) | {emb.verdict} | {img.verdict} | "
                f"{full.verdict} |",
                flush=True,
            )
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
