"""Serving benchmark: our API vs `mlflow models serve` on the same registered model, plus the raw floor.

Run by hand (it starts its own MLflow server, on free loopback ports, in a temporary folder):

    nice -n 10 .venv/bin/python bench/serving.py [--requests 24] [--tile 512] [--concurrency 1 4]

Both servers serve one registered version of the same network (smp Unet resnet18 with a light decoder,
untrained, seeded by --seed: the network's time does not depend on its weights, the post-processing's does, through
the class map they give). Ours receives each tile as a multipart PNG, the way a
client sends an image; mlflow's pyfunc receives the normalised float array as JSON ({"inputs": ...}), which is
what a client must send it. "raw floor" is one in-process onnxruntime session.run on the same tiles, with
the same thread count: the cost of the network alone.
Targets: throughput >= 3x mlflow serve at concurrency 4; our p50 <= 1.15x the raw floor at concurrency 1.
A last row runs the same registered model through `parking-ml predict` on a generated raster (``--raster``).
At concurrency 1 our requests alternate with floor runs, so both see the same load on a shared machine, with a
50-ms pause between them (the API's drift row, computed after each answer, never overlaps a floor run).
Timings are only comparable within one run; the load average is printed with the table.

    nice -n 10 .venv/bin/python bench/serving.py --embedding-cost [--requests 40] [--tile 512]

measures instead what the drift embedding (the export's second output) costs: two of our servers, one serving
the package with the embedding and one the same network exported without it, requests alternating between
them at concurrency 1 (docs/experiments/embedding-drift.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from parking_ml.ops.stack import free_port, start_local_mlflow, stop_pid, wait_http

VENV_BIN = Path(sys.executable).parent
# pause between a floor run and a request at concurrency 1, so that neither side's leftover work runs into the other
SETTLE_S = 0.05
REPO = Path(__file__).resolve().parent.parent


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def make_tiles(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Aerial-looking tiles: textured asphalt, painted stall rows, some cars."""
    rng = np.random.default_rng(seed)
    tiles = []
    for _ in range(n):
        img = rng.normal(105, 12, (size, size, 3)).clip(0, 255).astype(np.uint8)
        stall_w, stall_h = int(rng.integers(22, 30)), int(rng.integers(45, 55))
        for y in range(20, size - stall_h - 10, stall_h + 30):
            for x in range(10, size - stall_w, stall_w + 4):
                img[y : y + stall_h, x : x + 2] = 235
                if rng.random() < 0.5:
                    colour = rng.integers(20, 230, 3).astype(np.uint8)
                    img[y + 5 : y + stall_h - 5, x + 4 : x + stall_w - 2] = colour
        tiles.append(img)
    return tiles


@dataclass
class Result:
    name: str
    concurrency: int
    latencies_s: list[float]
    wall_s: float
    errors: int

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.wall_s if self.wall_s else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")


def drive(name: str, concurrency: int, n_requests: int, send) -> Result:
    """Send n_requests (cycling over the tiles) with `concurrency` clients in flight."""
    latencies: list[float] = []
    errors = 0

    def one(i: int) -> tuple[float, bool]:
        t0 = time.perf_counter()
        ok = send(i)
        return time.perf_counter() - t0, ok

    send(0)  # warm-up, not counted
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for latency, ok in pool.map(one, range(n_requests)):
            if ok:
                latencies.append(latency)
            else:
                errors += 1
    return Result(name, concurrency, latencies, time.perf_counter() - t0, errors)


def large_raster_row(side: int, work: Path, tracking: str, env: dict[str, str]) -> None:
    """The registered champion on a side x side generated raster through `parking-ml predict` (streamed in
    blocks; no MLFLOW_TRACKING_URI in its environment: the settings' URI is the registry too)."""
    sys.path.insert(0, str(REPO / "bench"))
    from bigraster import make_raster, run_child

    raster = work / f"mosaic-{side}.tif"
    make_raster(raster, side)
    port = tracking.rsplit(":", 1)[1]
    env = {**env, "PARKING_HOME": str(work / "predict-var"), "PARKING_MLFLOW_PORT": port}
    env["PARKING_MODEL_NAME"] = "bench-spaces"
    cmd = [str(VENV_BIN / "parking-ml"), "predict", str(raster), "--out", str(work / "predict-out")]
    wall, cpu, rss = run_child(cmd, env)
    mpx = side * side / 1e6
    print(f"| predict, {side} x {side} raster | {mpx / wall:.2f} Mpx/s | {wall:.1f} s ({cpu:.1f} CPU s) |", end="")
    print(f" peak {rss:.0f} MiB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=24, help="requests per server and concurrency level")
    parser.add_argument("--tiles", type=int, default=8, help="distinct tiles cycled through")
    parser.add_argument("--tile", type=int, default=512, help="tile side in pixels")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (ours and the floor)")
    parser.add_argument(
        "--raster", type=int, default=4096, help="side of a generated raster run through `parking-ml predict` (0: none)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the untrained network's initialisation: its class map, so the post-processing's work, depends on it",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--embedding-cost", action="store_true", help="with vs without the embedding output")
    args = parser.parse_args()
    if args.embedding_cost:
        embedding_cost(args)
        return

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import torch

    from parking_ml.config import Settings
    from parking_ml.data.images import encode_png
    from parking_ml.inference import OnnxSegmenter, PreprocessConfig, normalise
    from parking_ml.model.network import build_model
    from parking_ml.model.package import build_package
    from parking_ml.model.registry import log_and_register

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    procs: list[subprocess.Popen] = []
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PARKING_", "MLFLOW_"))}
    try:
        # --- registry with one version ------------------------------------------------------------
        mlflow_proc, tracking = start_local_mlflow(work / "mlflow")
        procs.append(mlflow_proc)
        settings = Settings(home=work / "var", mlflow_tracking_uri=tracking, model_name="bench-spaces")
        torch.manual_seed(args.seed)
        net = build_model("unet", "resnet18", encoder_weights=None, decoder_channels=(128, 64, 32, 16, 8))
        # trained on 256 px tiles; the 512 px inference window runs a 512 px upload in one pass
        config = PreprocessConfig(tile_size=256, window=max(512, args.tile), overlap=64)
        pkg = build_package(net, config, work / "package", tile_size=256)
        version = log_and_register(pkg.dir, settings, tags={"bench": "serving"}, alias="champion")
        print(f"registered {version.name} v{version.version} ({version.model_uri})", flush=True)

        # --- both servers, side by side ---------------------------------------------------------------
        ours_port, theirs_port = free_port(), free_port()
        ours_env = {
            **base_env,
            "MLFLOW_TRACKING_URI": tracking,
            "PARKING_HOME": str(work / "var"),
            "PARKING_MODEL_NAME": "bench-spaces",
            "PARKING_THREADS": str(args.threads),
            # the request path at the package's scale, as the peers run it; the gsd estimate is bench/gsd.py's
            "PARKING_GSD_ESTIMATE": "false",
        }
        ours_log = work / "ours.log"
        procs.append(
            start(
                [str(VENV_BIN / "parking-ml"), "serve", "--port", str(ours_port), "--log-level", "warning"],
                ours_env,
                ours_log,
            )
        )
        # mlflow models serve execs `uvicorn` from PATH
        path = f"{VENV_BIN}{os.pathsep}{base_env.get('PATH', '')}"
        # the registry that resolves models:/ is the tracking server too (never a stray ./mlflow.db)
        theirs_env = {**base_env, "MLFLOW_TRACKING_URI": tracking, "MLFLOW_REGISTRY_URI": tracking, "PATH": path}
        theirs_log = work / "mlflow-serve.log"
        procs.append(
            start(
                [
                    str(VENV_BIN / "mlflow"), "models", "serve", "-m", "models:/bench-spaces@champion",
                    "--env-manager", "local", "-h", "127.0.0.1", "-p", str(theirs_port),
                ],
                theirs_env,
                theirs_log,
            )
        )  # fmt: skip
        wait_http(f"http://127.0.0.1:{ours_port}/readyz", 180, procs[1], ours_log)
        wait_http(f"http://127.0.0.1:{theirs_port}/ping", 180, procs[2], theirs_log)

        tiles = make_tiles(args.tiles, args.tile)
        pngs = [encode_png(t) for t in tiles]
        normalised = [normalise(t, config) for t in tiles]
        payloads = [json.dumps({"inputs": x[None].tolist()}).encode() for x in normalised]
        print(
            f"payload per request: ours {np.mean([len(p) for p in pngs]) / 1e3:.0f} kB PNG, "
            f"mlflow {np.mean([len(p) for p in payloads]) / 1e6:.1f} MB JSON",
            flush=True,
        )
        client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=16))

        def send_ours(i: int) -> bool:
            r = client.post(f"http://127.0.0.1:{ours_port}/v1/predict", files={"file": ("t.png", pngs[i % len(pngs)])})
            return r.status_code == 200

        def send_theirs(i: int) -> bool:
            r = client.post(
                f"http://127.0.0.1:{theirs_port}/invocations",
                content=payloads[i % len(payloads)],
                headers={"content-type": "application/json"},
            )
            return r.status_code == 200

        # --- raw floor, interleaved with our sequential requests --------------------------------------------
        # on a shared box the load drifts; alternating floor run and API request exposes both to the same load
        seg = OnnxSegmenter(pkg.onnx_path, config, threads=args.threads)
        for x in normalised[:2]:
            seg.run_logits(x[None])
        send_ours(0)
        load_before = os.getloadavg()
        floor, ours_seq = [], []
        t_ours = 0.0
        for i in range(args.requests):
            x = normalised[i % len(normalised)][None]
            t0 = time.perf_counter()
            seg.run_logits(x)
            floor.append(time.perf_counter() - t0)
            time.sleep(SETTLE_S)
            t0 = time.perf_counter()
            ok = send_ours(i)
            ours_seq.append(time.perf_counter() - t0)
            t_ours += ours_seq[-1]
            if not ok:
                raise RuntimeError("our API failed a benchmark request")
            # the API computes its drift row once the answer has gone: the next floor run does not share the cores
            time.sleep(SETTLE_S)
        del seg
        floor_result = Result("raw onnxruntime", 1, floor, sum(floor), 0)
        results = [floor_result]
        print(f"  floor c=1: {floor_result.rps:.2f} req/s", flush=True)
        for c in args.concurrency:
            if c == 1:
                results.append(Result("ours (parking-ml serve)", 1, ours_seq, t_ours, 0))
            else:
                results.append(drive("ours (parking-ml serve)", c, args.requests, send_ours))
            print(f"  ours  c={c}: {results[-1].rps:.2f} req/s", flush=True)
            results.append(drive("mlflow models serve", c, args.requests, send_theirs))
            print(f"  mlflow c={c}: {results[-1].rps:.2f} req/s", flush=True)
        load_after = os.getloadavg()
        client.close()

        # --- table ----------------------------------------------------------------------------------------
        print()
        print(f"tile {args.tile}x{args.tile}, {args.requests} requests per row, {os.cpu_count()} CPUs, "
              f"onnxruntime threads {args.threads}")  # fmt: skip
        print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
        header = f"| {'server':<26} | conc | req/s | p50 ms | p95 ms | p99 ms | errors |"
        print(header)
        print("|" + "|".join("-" * (len(p)) for p in header.split("|")[1:-1]) + "|")
        for r in results:
            print(
                f"| {r.name:<26} | {r.concurrency:>4} | {r.rps:5.2f} | {r.pct(50):6.0f} | {r.pct(95):6.0f} "
                f"| {r.pct(99):6.0f} | {r.errors:>6} |"
            )
        print()
        floor_p50 = floor_result.pct(50)
        for c in args.concurrency:
            ours = next(r for r in results if r.name.startswith("ours") and r.concurrency == c)
            theirs = next(r for r in results if r.name.startswith("mlflow") and r.concurrency == c)
            ratio = ours.rps / theirs.rps if theirs.rps else float("inf")
            print(
                f"concurrency {c}: throughput ours/mlflow = {ratio:.2f}x; "
                f"p50 ours/mlflow = {ours.pct(50) / theirs.pct(50):.2f}; "
                f"p50 ours/raw floor = {ours.pct(50) / floor_p50:.2f}x"
            )
        c4 = max(args.concurrency)
        ours4 = next(r for r in results if r.name.startswith("ours") and r.concurrency == c4)
        theirs4 = next(r for r in results if r.name.startswith("mlflow") and r.concurrency == c4)
        ours1 = next(r for r in results if r.name.startswith("ours") and r.concurrency == min(args.concurrency))
        print(
            f"targets: throughput >= 3x mlflow at c={c4}: {ours4.rps / max(theirs4.rps, 1e-9):.2f}x "
            f"({'met' if ours4.rps >= 3 * theirs4.rps else 'NOT met'}); "
            f"p50 <= 1.15x floor: {ours1.pct(50) / floor_p50:.2f}x "
            f"({'met' if ours1.pct(50) <= 1.15 * floor_p50 else 'NOT met'})"
        )
        print(f"raw floor p50 {statistics.median(floor) * 1000:.0f} ms")
        if args.raster:
            large_raster_row(args.raster, work, tracking, {**base_env, "PARKING_THREADS": str(args.threads)})
    finally:
        for proc in reversed(procs):
            stop_pid(proc.pid)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def embedding_cost(args: argparse.Namespace) -> None:
    """p50/p95 of our API serving one network with and without the embedding output, alternating requests."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import torch

    from parking_ml.data.images import encode_png
    from parking_ml.inference import PreprocessConfig
    from parking_ml.model.network import build_model
    from parking_ml.model.package import build_package

    work = Path(tempfile.mkdtemp(prefix="bench-embedding-"))
    procs: list[subprocess.Popen] = []
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PARKING_", "MLFLOW_"))}
    try:
        torch.manual_seed(args.seed)
        net = build_model("unet", "resnet18", encoder_weights=None, decoder_channels=(128, 64, 32, 16, 8))
        config = PreprocessConfig(tile_size=256, window=max(512, args.tile), overlap=64)
        urls = {}
        for name, with_emb in (("without embedding", False), ("with embedding", True)):
            pkg = build_package(net, config, work / name.replace(" ", "-"), tile_size=256, embedding=with_emb)
            port = free_port()
            env = {**base_env, "PARKING_HOME": str(work / "var"), "PARKING_THREADS": str(args.threads)}
            log = work / f"{port}.log"
            cmd = [str(VENV_BIN / "parking-ml"), "serve", "--port", str(port), "--model-dir", str(pkg.dir)]
            procs.append(start([*cmd, "--log-level", "warning"], env, log))
            wait_http(f"http://127.0.0.1:{port}/readyz", 180, procs[-1], log)
            urls[name] = f"http://127.0.0.1:{port}/v1/predict"
        pngs = [encode_png(t) for t in make_tiles(args.tiles, args.tile)]
        lat: dict[str, list[float]] = {name: [] for name in urls}
        with httpx.Client(timeout=600) as client:
            for url in urls.values():  # warm-up
                client.post(url, files={"file": ("t.png", pngs[0])})
            load_before = os.getloadavg()
            for i in range(args.requests):
                # alternate the order too, so neither server always runs right after the other
                order = list(urls.items()) if i % 2 == 0 else list(urls.items())[::-1]
                for name, url in order:
                    t0 = time.perf_counter()
                    r = client.post(url, files={"file": ("t.png", pngs[i % len(pngs)])})
                    lat[name].append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        raise RuntimeError(f"{name}: {r.status_code} {r.text[:200]}")
            load_after = os.getloadavg()
        print(f"tile {args.tile}x{args.tile}, {args.requests} requests each, concurrency 1, threads {args.threads}")
        print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
        print("| package | p50 ms | p95 ms | mean ms |")
        print("|---|---|---|---|")
        for name, values in lat.items():
            ms = np.array(values) * 1000
            print(f"| {name} | {np.percentile(ms, 50):.1f} | {np.percentile(ms, 95):.1f} | {ms.mean():.1f} |")
        p50 = {name: np.percentile(values, 50) for name, values in lat.items()}
        print(f"p50 with/without = {p50['with embedding'] / p50['without embedding']:.3f}x")
    finally:
        for proc in reversed(procs):
            stop_pid(proc.pid)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
