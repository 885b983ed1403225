"""Large rasters through `parking-ml predict`: wall time, Mpx/s and peak RSS per raster size.

Run by hand (it makes its rasters from the synthetic generator in a work folder, reused between runs):

    nice -n 10 .venv/bin/python bench/bigraster.py --model-dir PKG [--sizes 4096 8192 16384 32768] [--whole]

Each raster is a mosaic of generated lots (0.12 m/px, UTM, tiled deflate GeoTIFF like an orthophoto), and each
`predict` runs in its own child process, whose peak RSS the kernel reports when it exits (wait4). The named
peer is the smallest size of the run: the table prints time and memory as ratios to it, so "time linear in
pixels, memory flat" reads as time ratio ~ pixel ratio and RSS ratio ~ 1. ``--whole`` adds the in-memory path
(read the whole raster, `parking_ml.inference.predict`, as `predict` did before streaming) for the sizes it
names, as a second peer. Timings are only comparable within one run; the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent
GSD = 0.12
SITE_PX = 1024

WHOLE = """
import sys, pathlib
from parking_ml.data.images import read_image
from parking_ml.inference import OnnxSegmenter, predict
seg = OnnxSegmenter.from_dir(sys.argv[2], threads=int(sys.argv[3]))
raster = read_image(pathlib.Path(sys.argv[1]).read_bytes(), max_pixels=2_000_000_000)
pred = predict(seg, raster.rgb, image_gsd=raster.gsd)
print(pred.free_count, pred.occupied_count)
"""


def make_raster(path: Path, side: int, seed: int = 7, sites: int = 6) -> None:
    """A side x side mosaic of ``sites`` generated lots (turned and mirrored at random), written strip by
    strip so that making a 32k raster needs no 3 GB array."""
    import rasterio
    from rasterio.transform import Affine

    from parking_ml.synth import SiteRenderer

    if path.exists():
        return
    tiles = [SiteRenderer(seed, i, SITE_PX, GSD, f"site-{i}").render(0).image for i in range(sites)]
    rng = np.random.default_rng(seed)
    tmp = path.with_name(f".{path.name}.tmp")
    profile = {
        "driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "crs": "EPSG:32633",
        "transform": Affine(GSD, 0, 500_000.0, 0, -GSD, 4_650_000.0), "tiled": True, "blockxsize": 512,
        "blockysize": 512, "compress": "deflate", "photometric": "RGB", "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    with rasterio.open(tmp, "w", **profile) as ds:
        for r in range(0, side, SITE_PX):
            h = min(SITE_PX, side - r)
            strip = np.empty((h, side, 3), dtype=np.uint8)
            for c in range(0, side, SITE_PX):
                w = min(SITE_PX, side - c)
                tile = np.rot90(tiles[rng.integers(len(tiles))], int(rng.integers(4)))
                if rng.integers(2):
                    tile = tile[:, ::-1]
                strip[:, c : c + w] = tile[:h, :w]
            ds.write(np.moveaxis(strip, 2, 0), window=rasterio.windows.Window(0, r, side, h))
    tmp.replace(path)


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MiB) of a child process; CPU time is what a shared machine disturbs least."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[:3]} failed:\n{out[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, required=True, help="model package (model.onnx + preprocess.json)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384, 32768])
    ap.add_argument("--whole", type=int, nargs="*", default=[], help="sizes to also run in memory (peer)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "parking-bigraster")
    args = ap.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARKING_", "MLFLOW_"))}
    env.update(PARKING_HOME=str(args.work / "var"), PARKING_THREADS=str(args.threads), PYTHONPATH=str(REPO))
    rows = []
    for side in args.sizes:
        raster = args.work / f"mosaic-{side}.tif"
        t0 = time.perf_counter()
        make_raster(raster, side)
        made = time.perf_counter() - t0
        print(f"{raster.name}: {raster.stat().st_size / 1e6:.0f} MB ({made:.0f} s to make)", flush=True)
        cmd = [str(VENV_BIN / "parking-ml"), "predict", str(raster), "--model-dir", str(args.model_dir)]
        wall, cpu, rss = run_child([*cmd, "--out", str(args.work / "out")], env)
        rows.append(("stream", side, wall, cpu, rss))
        print(
            f"  stream: {wall:.1f} s ({cpu:.1f} CPU s), peak RSS {rss:.0f} MiB, load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        if side in args.whole:
            whole_cmd = [sys.executable, "-c", WHOLE, str(raster), str(args.model_dir), str(args.threads)]
            wall, cpu, rss = run_child(whole_cmd, env)
            rows.append(("whole", side, wall, cpu, rss))
            print(f"  whole:  {wall:.1f} s ({cpu:.1f} CPU s), peak RSS {rss:.0f} MiB", flush=True)

    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; cores {os.cpu_count()}; threads {args.threads}")
    base = {mode: next(r for r in rows if r[0] == mode) for mode in {r[0] for r in rows}}
    head = ("path", "size", "Mpx", "wall s", "CPU s", "Mpx/s", "peak MiB", "px x", "time x", "CPU x", "RSS x")
    print("".join(f"{h:<8}" if i == 0 else f"{h:>9}" for i, h in enumerate(head)))
    for mode, side, wall, cpu, rss in rows:
        _, s0, w0, c0, r0 = base["stream"]
        mpx = side * side / 1e6
        print(
            f"{mode:<8}{side:>9}{mpx:>9.1f}{wall:>9.1f}{cpu:>9.1f}{mpx / wall:>9.2f}{rss:>9.0f}"
            f"{(side / s0) ** 2:>9.1f}{wall / w0:>9.2f}{cpu / c0:>9.2f}{rss / r0:>9.2f}"
        )


if __name__ == "__main__":
    main()
