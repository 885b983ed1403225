"""Ground-resolution estimate on generator images of known gsd (parking_ml.inference.gsd), with the shipped demo
network exported as a served package.

    nice -n 10 .venv/bin/python bench/gsd.py [--per-cell 4] [--size 512] [--tta none] [--seed 2027] [--weights FILE]

Prints the estimate's error (estimate / truth - 1) per style and gsd band, the share within 10 %, free IoU of the
model's answers with the true, the estimated and the package's default gsd (pooled over the images), and the
estimate's time per image beside a served prediction's (the named peer, same images, same run).
Record: docs/experiments/gsd-estimate.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BANDS = ((0.05, 0.08), (0.08, 0.12), (0.12, 0.18), (0.18, 0.24), (0.24, 0.30))
# the demo's training imagery (make demo: 0.08-0.15 m/px) has this median: the package's default
DEMO_DEFAULT_GSD = 0.11


SHIPPED_FP32 = Path(__file__).resolve().parent.parent / "parking_ml" / "weights" / "demo-synthetic-fp32.pt"


def demo_package(work: Path, tta: str, weights: Path = SHIPPED_FP32) -> Path:
    """A demo network (the shipped fp32 file, or another state dict with its JSON) as the demo profile serves it."""
    import torch

    from parking_ml.inference import PreprocessConfig
    from parking_ml.model.network import build_model
    from parking_ml.model.package import build_package
    from parking_ml.model.profiles import PROFILES

    recipe = json.loads(weights.with_suffix(".json").read_text())
    channels = tuple(recipe["decoder_channels"])
    net = build_model("unet", recipe["params"]["encoder"], decoder_channels=channels, encoder_depth=len(channels))
    net.load_state_dict(torch.load(weights, map_location="cpu"))
    demo = PROFILES["demo"]
    config = PreprocessConfig(
        tile_size=demo.tile_size,
        min_area_px=20,
        gsd=demo.model_gsd,
        resample=True,
        default_image_gsd=DEMO_DEFAULT_GSD,
        tta=tta,
        grow_px=demo.grow_px,
        grow_prob=demo.grow_prob,
    )
    return build_package(net.eval(), config, work / "pkg", tile_size=256, embedding=False).dir


def images(seed: int, per_cell: int, size: int):
    from parking_ml.synth import STYLES, SiteRenderer

    k = 0
    for style in STYLES:
        for band in BANDS:
            for _ in range(per_cell):
                tile = SiteRenderer(seed, k, size, band, f"gsd-{k:04d}").render(0, style)
                k += 1
                yield style, band, tile


def _pct(values: np.ndarray, q: float) -> str:
    return f"{np.percentile(values, q) * 100:+.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-cell", type=int, default=4, help="images per style and gsd band")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=2027, help="generator seed (not the demo network's lots)")
    parser.add_argument("--tta", default="none", help="test-time augmentation of the scored answers")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--weights", type=Path, default=SHIPPED_FP32, help="state dict with its JSON (default: the shipped fp32 file)"
    )
    args = parser.parse_args()

    from parking_ml.inference import OnnxSegmenter, predict
    from parking_ml.inference.gsd import estimate_gsd
    from parking_ml.model.metrics import evaluate

    seg = OnnxSegmenter.from_dir(
        demo_package(Path(tempfile.mkdtemp(prefix="bench-gsd-")), args.tta, args.weights), args.threads
    )
    rows = []
    masks: dict[str, list[np.ndarray]] = {"true": [], "estimated": [], "default": []}
    truths: list[np.ndarray] = []
    t_all = time.perf_counter()
    for style, band, tile in images(args.seed, args.per_cell, args.size):
        t0 = time.perf_counter()
        est = estimate_gsd(seg, tile.image)
        t_est = time.perf_counter() - t0
        t1 = time.perf_counter()
        masks["true"].append(predict(seg, tile.image, image_gsd=tile.gsd).mask)
        t_pred = time.perf_counter() - t1
        used = est.gsd if est.gsd is not None else DEMO_DEFAULT_GSD
        masks["estimated"].append(predict(seg, tile.image, image_gsd=used).mask)
        masks["default"].append(predict(seg, tile.image, image_gsd=DEMO_DEFAULT_GSD).mask)
        truths.append(tile.mask)
        err = (used / tile.gsd - 1) if est.gsd is not None else float("nan")
        second = any(p.balanced for p in est.probes)
        rows.append((style, band, tile.gsd, est.gsd, err, t_est, t_pred, second, est.balanced))
        print(f"{style:8s} {tile.gsd:.3f} -> {est.gsd} ({err:+.3f}) {t_est:.2f} s, predict {t_pred:.2f} s"
              f"{' balanced' if est.balanced else ' (balanced probed)' if second else ''}", flush=True)  # fmt: skip

    err = np.array([r[4] for r in rows])
    found = ~np.isnan(err)
    within = np.abs(np.nan_to_num(err, nan=1.0)) <= 0.10
    print(f"\n{len(rows)} generator images {args.size} px, seed {args.seed}, answers scored with tta={args.tta}; "
          f"load average {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    print("| style | gsd band (m/px) | n | median error | p10 / p90 | worst | within 10 % |")
    print("|---|---|---|---|---|---|---|")
    for style in dict.fromkeys(r[0] for r in rows):
        for band in BANDS:
            sel = np.array([r[0] == style and r[1] == band for r in rows])
            e = err[sel & found]
            if not len(e):
                print(f"| {style} | {band[0]:.2f}-{band[1]:.2f} | {sel.sum()} | - | - | - | 0/{sel.sum()} |")
                continue
            worst = e[np.argmax(np.abs(e))]
            spread = f"{_pct(e, 10)} / {_pct(e, 90)} %"
            print(f"| {style} | {band[0]:.2f}-{band[1]:.2f} | {sel.sum()} | {np.median(e) * 100:+.1f} % | {spread} | "
                  f"{worst * 100:+.1f} % | {within[sel].sum()}/{sel.sum()} |")  # fmt: skip
    abs_err = np.abs(err)
    print(f"\nwithin 10 %: {within.mean() * 100:.1f} % of {len(rows)} (goal 90 %); no estimate: {(~found).sum()}; "
          f"|error| median {np.nanmedian(abs_err):.1%}, p90 {np.nanpercentile(abs_err, 90):.1%}")  # fmt: skip
    for style in dict.fromkeys(r[0] for r in rows):
        sel = [r for r in rows if r[0] == style]
        print(f"{style}: balanced image probed on {sum(r[7] for r in sel)}/{len(sel)}, "
              f"answer from it on {sum(r[8] for r in sel)}")  # fmt: skip

    print("\n| gsd given to the model | free IoU | vs true |")
    print("|---|---|---|")
    iou = {k: evaluate(v, truths)["iou_free"] for k, v in masks.items()}
    for k, v in iou.items():
        print(f"| {k} | {v:.4f} | {v - iou['true']:+.4f} |")
    print("\n| style | free IoU true | estimated | default |")
    print("|---|---|---|---|")
    for style in dict.fromkeys(r[0] for r in rows):
        idx = [i for i, r in enumerate(rows) if r[0] == style]
        vals = [evaluate([masks[k][i] for i in idx], [truths[i] for i in idx])["iou_free"] for k in masks]
        print(f"| {style} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
    t_est = np.array([r[5] for r in rows])
    t_pred = np.array([r[6] for r in rows])
    print(f"\nestimate: median {np.median(t_est) * 1000:.0f} ms, p90 {np.percentile(t_est, 90) * 1000:.0f} ms; "
          f"one prediction at the true gsd (tta={args.tta}): median {np.median(t_pred) * 1000:.0f} ms; "
          f"ratio {np.median(t_est / t_pred):.2f}x; total {time.perf_counter() - t_all:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
