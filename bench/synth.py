"""Synthetic generator throughput, single process, one OpenCV thread: tiles/s per style and size.

Run by hand: ``nice -n 10 .venv/bin/python bench/synth.py [--tiles 16] [--sizes 256,512]``.
Each row renders whole sites (4 passes per site, as ``generate_dataset`` does, so the site's static layers
are amortised) and, as the named peer in the same run, times ``cv2.imencode('.png')`` of the same tiles:
the floor any writer pays. ``gen/png`` is how many PNG encodes one generated tile costs. Wall-clock timings
are noisy when other jobs share the cores (the table prints the 1-minute load average for that reason);
``tiles/cpu-s`` divides by this process's CPU time, which a busy machine disturbs much less.
"""

from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np

from parking_ml.synth import STYLES, SiteRenderer


def bench(style: str, size: int, tiles: int, gsd: tuple[float, float], seed: int) -> tuple[float, float, float, float]:
    images = []
    passes = 4
    c0 = time.process_time()
    t0 = time.perf_counter()
    site = 0
    while len(images) < tiles:
        sr = SiteRenderer(seed, site, size, gsd, f"site-{site:04d}")
        for p in range(min(passes, tiles - len(images))):
            images.append(sr.render(p, style).image)
        site += 1
    gen = time.perf_counter() - t0
    cpu = time.process_time() - c0
    t0 = time.perf_counter()
    for img in images:
        cv2.imencode(".png", img[..., ::-1])
    png = time.perf_counter() - t0
    t0 = time.perf_counter()
    SiteRenderer(seed, 999, size, gsd, "site-0999").render(0, style)
    single = time.perf_counter() - t0
    return tiles / gen, tiles / cpu, tiles / png, single


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=16)
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--gsd", default="0.08,0.3")
    ap.add_argument("--styles", default=",".join(STYLES))
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    lo, hi = (float(x) for x in args.gsd.split(","))
    print(
        f"load average (1 min) {os.getloadavg()[0]:.2f}; cores {os.cpu_count()}; cv2 threads 1; numpy {np.__version__}"
    )
    print(
        f"{'style':<9}{'size':>6}{'gen tiles/s':>13}{'gen tiles/cpu-s':>17}{'png tiles/s':>13}{'gen/png':>9}"
        f"{'1st tile s':>12}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        for style in args.styles.split(","):
            gen, cpu, png, single = bench(style, size, args.tiles, (lo, hi), args.seed)
            print(f"{style:<9}{size:>6}{gen:>13.1f}{cpu:>17.1f}{png:>13.1f}{png / gen:>9.1f}{single:>12.3f}")


if __name__ == "__main__":
    main()
