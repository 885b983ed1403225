"""The demo's drift stage: sample tiles of one style sent through the running API (the traffic a deployed
model sees), then `parking_drift` triggered on exactly that window and followed to its verdict."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

PASSES = 4  # passes per site, as in the training batch: rows of one lot are alike, as real traffic is
DRIFT_DAG = "parking_drift"


class DemoError(RuntimeError):
    """A demo stage cannot go on; the message says what was seen and where to look."""


@dataclass(frozen=True)
class Window:
    style: str
    start: datetime
    end: datetime
    sent: int


def style_tiles(style: str, n: int, seed: int, size: int, gsd: float = 0.1) -> list:
    """n RGB tiles of the generator's style, PASSES passes of each site."""
    from parking_ml.synth import SiteRenderer

    out: list = []
    site = 0
    while len(out) < n:
        renderer = SiteRenderer(seed, site, size, gsd, f"traffic-{site:04d}")
        out.extend(renderer.render(p, style).image for p in range(PASSES))
        site += 1
    return out[:n]


def send_traffic(api_url: str, style: str, n: int, seed: int, size: int, progress=None) -> Window:
    """POST n tiles of the style to /v1/predict, two at a time; the window spans the first to the last answer."""
    import httpx

    from parking_ml.data.images import encode_png

    tiles = style_tiles(style, n, seed, size)
    start = datetime.now(UTC)
    with httpx.Client(base_url=api_url, timeout=120) as client, ThreadPoolExecutor(2) as pool:

        def send(tile) -> int:
            resp = client.post("/v1/predict", params={"gsd": 0.1}, files={"file": ("tile.png", encode_png(tile))})
            if progress is not None:
                progress()
            return resp.status_code if resp.status_code == 200 else -resp.status_code

        codes = list(pool.map(send, tiles))
    bad = [c for c in codes if c != 200]
    if bad:
        raise DemoError(f"{len(bad)} of {n} {style} tiles were refused by the API (status {-bad[0]}); see api.log")
    # rows are stamped when the API answers: a moment's margin keeps the last one inside the window
    time.sleep(0.5)
    return Window(style, start, datetime.now(UTC), n)


def wait_live_rows(settings, window: Window, version: str, timeout_s: float) -> int:
    """Wait until the API's drift buffer has written the window's rows of this version to the lake."""
    from monitoring.run import select_version
    from monitoring.store import load_live_rows
    from parking_ml.lake import Lake

    lake = Lake.from_settings(settings)
    deadline = time.monotonic() + timeout_s
    found = 0
    while True:
        rows, _ = select_version(load_live_rows(lake, window.start, window.end), settings.model_name, version)
        found = len(rows)
        if found >= window.sent or time.monotonic() > deadline:
            return found
        time.sleep(1.0)


def run_drift_dag(api, settings, window: Window, timeout_s: float) -> dict:
    """Trigger parking_drift on the window (its since/until params), follow the run, return its report's row of
    the lake's index (verdict, drift share, drifted features, report id) with the run id."""
    import pandas as pd

    from monitoring.store import read_index
    from parking_ml.lake import Lake

    conf = {"since": window.start.isoformat(), "until": window.end.isoformat()}
    run_id = api.trigger(DRIFT_DAG, conf=conf)
    api.wait_run(DRIFT_DAG, run_id=run_id, timeout_s=timeout_s)
    index = read_index(Lake.from_settings(settings))  # newest first
    if not index.empty:
        starts = pd.to_datetime(index["window_start"], utc=True, format="ISO8601")
        ends = pd.to_datetime(index["window_end"], utc=True, format="ISO8601")
        mine = index[((starts == window.start) & (ends == window.end)).to_numpy()]
        if not mine.empty:
            return {**mine.iloc[0].to_dict(), "run_id": run_id}
    raise DemoError(f"{DRIFT_DAG} run {run_id} succeeded but no report for its window is in the lake's index")
