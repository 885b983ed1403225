"""`parking-ml demo`: the whole loop on the embedded default, driven the way a user drives it.

Drops a synthetic landing batch into the lake, starts the local stack, triggers `parking_ingest` through
Airflow's REST API and follows the asset chain (preprocess -> train -> promote), asks the inference API for free
spaces on a tile none of the models trained on, sends default and shifted (winter) tiles through the API and runs
`parking_drift` on each window, then prints a summary with the URLs to open.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial

import typer

PIPELINE = ["parking_ingest", "parking_preprocess", "parking_train", "parking_promote"]
DRIFT_DAG = "parking_drift"
SHIFTED_STYLE = "winter"  # a shift the drift report must see (docs/monitoring.md)


def _upload_batch(settings, batch: str, n: int, seed: int, size: int, gsd: tuple[float, float], passes: int = 1) -> int:
    """Generate a synthetic batch and put it under landing/<batch>/ (local folder or S3 alike)."""
    import tempfile
    from pathlib import Path

    from parking_ml.lake import Lake
    from parking_ml.synth import generate_dataset

    lake = Lake.from_settings(settings)
    with tempfile.TemporaryDirectory(prefix="parking-demo-") as tmp:
        sites = max(1, n // max(1, passes))
        generate_dataset(Path(tmp), n=n, seed=seed, size=size, gsd=gsd, sites=sites, progress=True)
        files = sorted(p for p in Path(tmp).rglob("*") if p.is_file())
        for path in files:
            lake.write_bytes(f"landing/{batch}/{path.relative_to(tmp).as_posix()}", path.read_bytes())
    return len(files)


def _wait_serving(url: str, version: str, timeout_s: float) -> bool:
    """Wait until the API serves this registry version (it polls the alias; a re-run may find an older one)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(f"{url}/v1/model", timeout=3)
            if resp.status_code == 200 and str(resp.json().get("version")) == version:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(2)
    return False


def _champion_version(settings) -> str | None:
    from parking_ml.model.registry import get_alias_version

    found = get_alias_version(settings, settings.model_alias)
    return str(found.version) if found is not None else None


def _has_champion(settings) -> bool:
    return _champion_version(settings) is not None


def _follow_chain(api, console, settings, batch: str, timeout: float, timings: dict[str, float]) -> None:
    """Trigger ingest, then follow the asset chain.

    Any upstream run since the start may have emitted the asset (the hourly ingest can take the batch before
    our manual run does), so each next DAG is followed by its runs created since then. Where none appears
    (nothing new landed: a re-run of the same batch), stop if a champion already serves, else trigger the next
    DAG by hand."""
    since = datetime.now(UTC)
    t = time.monotonic()
    run_id = api.trigger(PIPELINE[0], conf={"batch": batch})
    with console.status(f"{PIPELINE[0]} running ..."):
        api.wait_run(PIPELINE[0], run_id=run_id, timeout_s=timeout)
    timings[PIPELINE[0]] = time.monotonic() - t
    console.print(f"[green]{PIPELINE[0]}[/] finished in {timings[PIPELINE[0]]:.0f}s")
    for dag_id in PIPELINE[1:]:
        t = time.monotonic()
        with console.status(f"{dag_id} running ..."):
            runs = api.wait_runs_since(dag_id, since, appear_within_s=30, timeout_s=timeout)
            if not runs:
                if _has_champion(settings):
                    console.print(f"nothing new reached {dag_id}; the current champion keeps serving")
                    return
                console.print(f"nothing new reached {dag_id}, and there is no champion yet: triggering it by hand")
                api.wait_run(dag_id, run_id=api.trigger(dag_id), timeout_s=timeout)
        timings[dag_id] = time.monotonic() - t
        console.print(f"[green]{dag_id}[/] finished in {timings[dag_id]:.0f}s")


def _gather_summary(settings, timings: dict[str, float], answer: dict | None, drift: list[dict]):
    """Dataset, champion (version and the scores it was registered with), the API answer and drift verdicts."""
    from parking_ml.cli.demo_summary import Summary
    from parking_ml.data.processed import dataset_info, latest_version
    from parking_ml.lake import Lake

    summary = Summary(model_name=settings.model_name, answer=answer, drift=drift, timings=timings)
    lake = Lake.from_settings(settings)
    try:
        summary.dataset_version = latest_version(lake)
        info = dataset_info(lake, summary.dataset_version)
        summary.n_images, summary.n_tiles = int(info["n_images"]), int(info["n_tiles"])
    except (FileNotFoundError, KeyError, ValueError):
        pass
    from parking_ml.model.registry import get_alias_version

    found = get_alias_version(settings, settings.model_alias)
    if found is not None:
        summary.champion, summary.champion_tags = str(found.version), dict(found.tags or {})
    return summary


def _print_summary(settings, summary, api_url: str) -> None:
    from parking_ml.cli.demo_summary import link_lines, summary_lines
    from parking_ml.ops import stack

    # plain echo: rich would re-wrap lines to its idea of the terminal's width
    for line in summary_lines(summary):
        typer.echo(line)
    typer.echo("")
    links = link_lines(
        settings.host,
        settings.airflow_port,
        stack.airflow_admin_password(settings),
        settings.mlflow_tracking_uri,
        api_url,
    )
    for line in links:
        typer.echo(line)


def _fail(stage: str, exc: BaseException, settings) -> typer.Exit:
    """Name the stage and say what failed (a DAG run's message carries its failed task and log tail)."""
    logging.getLogger("parking_ml.demo").error("demo stage failed", extra={"stage": stage, "error": str(exc)})
    typer.secho(f"\nstage '{stage}' failed:", fg="red", err=True, bold=True)
    typer.echo(str(exc), err=True)
    # a failed `stack up` stops what it started; later stages leave the stack up to look around
    left = "what had started was stopped" if stage == "local stack" else "the stack is left running; `make down`"
    typer.echo(
        f"Airflow UI: http://{settings.host}:{settings.airflow_port}  logs: {settings.logs_dir}/  ({left})",
        err=True,
    )
    return typer.Exit(1)


def _start_stack(settings, console, timings: dict[str, float]):
    """Stack up; an Airflow client once the DAGs are parsed, all of them unpaused."""
    from parking_ml.ops import stack
    from parking_ml.ops.airflow_api import AirflowApi

    t0 = time.monotonic()
    with console.status("starting MLflow, Airflow and the API ..."):
        stack.up(settings)
    timings["stack up"] = time.monotonic() - t0
    console.print(f"stack up in {timings['stack up']:.0f}s")
    api = AirflowApi(
        f"http://{settings.host}:{settings.airflow_port}",
        "admin",
        stack.airflow_admin_password(settings) or "",
    )
    api.wait_for_dags([*PIPELINE, DRIFT_DAG])
    for dag_id in [*PIPELINE, DRIFT_DAG]:
        api.unpause(dag_id)
    return api


def _predict_unseen_tile(console, api_url: str, seed: int, size: int) -> dict:
    """Ask the API about a lot no model has seen; print its answer beside the generator's truth and return it."""
    import cv2
    import httpx

    from parking_ml.cli.demo_drift import DemoError
    from parking_ml.synth import generate_tile

    # a seed far from the batch's: a lot no model has seen
    tile = generate_tile(seed + 10_000, size=size)
    ok, png = cv2.imencode(".png", cv2.cvtColor(tile.image, cv2.COLOR_RGB2BGR))
    assert ok
    # a PNG carries no resolution: say it, as a client with a plain image would
    t = time.monotonic()
    resp = httpx.post(
        f"{api_url}/v1/predict",
        params={"gsd": tile.gsd},
        files={"file": ("tile.png", png.tobytes(), "image/png")},
        timeout=60,
    )
    ms = (time.monotonic() - t) * 1000
    body = resp.json()
    if resp.status_code != 200:
        raise DemoError(f"POST {api_url}/v1/predict answered {resp.status_code}: {body}")
    answer = {
        "version": str(body["model"]["version"]),
        "free": body["free_spaces"],
        "occupied": body["occupied_spaces"],
        "truth_free": tile.free_count,
        "ms": ms,
    }
    console.print(
        f"model {body['model']['name']} v{answer['version']}: {answer['free']} free, {answer['occupied']} occupied "
        f"spaces (generator truth: {tile.free_count} free), {ms:.0f} ms"
    )
    return answer


def _drift_stage(console, api, settings, api_url: str, champion: str, tiles: int, seed: int, timeout: float):
    """Default-style then shifted tiles through the API, one parking_drift run per window; the verdicts."""
    from rich.progress import Progress

    from parking_ml.cli.demo_drift import DemoError, run_drift_dag, send_traffic, wait_live_rows

    reports = []
    for style in ("default", SHIFTED_STYLE):
        with Progress(console=console, transient=True) as progress:
            bar = progress.add_task(f"{style} tiles -> API", total=tiles)
            window = send_traffic(
                api_url, style, tiles, seed + 20_000, settings.tile_size, partial(progress.advance, bar)
            )
        # the API's drift buffer writes its rows every PARKING_DRIFT_FLUSH_INTERVAL_S
        found = wait_live_rows(settings, window, champion, settings.drift_flush_interval_s + 60)
        if found < window.sent:
            raise DemoError(
                f"the API wrote {found} of {window.sent} feature rows of v{champion} to the lake "
                f"(monitoring/inference/); see {settings.logs_dir}/api.log"
            )
        console.print(f"{tiles} {style} tiles answered; parking_drift on their window ...")
        with console.status(f"parking_drift ({style} window) running ..."):
            report = run_drift_dag(api, settings, window, timeout)
        report["style"] = style
        reports.append(report)
        console.print(
            f"[green]parking_drift[/] run {report['run_id']}: {style} window -> [bold]{report['verdict']}[/] "
            f"(report {report['report_id']})"
        )
    return reports


@contextmanager
def _stage(name: str, settings):
    """Run one stage; a failure that a person can act on ends the demo naming the stage (no traceback)."""
    import httpx

    from parking_ml.cli.demo_drift import DemoError
    from parking_ml.ops.airflow_api import AirflowApiError
    from parking_ml.ops.stack import StackError

    try:
        yield
    except (AirflowApiError, StackError, DemoError, httpx.HTTPError) as exc:
        raise _fail(name, exc, settings) from None


# most of its lines declare the typer options; the stages are the helpers above
def demo(
    n: int = typer.Option(384, help="synthetic images in the landing batch"),
    passes: int = typer.Option(
        1,
        min=1,
        help="images per site (passes over the same lot); fewer passes, more sites: the model meets more lots",
    ),
    seed: int = typer.Option(7, help="generator seed (same seed, same batch: a re-run ingests nothing new)"),
    size: int = typer.Option(512, help="image size in pixels"),
    gsd: str = typer.Option(
        "0.08-0.15",
        help="ground resolution range in m/px; the default matches the ~0.1 m/px imagery the model is meant for",
    ),
    batch: str = typer.Option("", help="landing batch name; default demo-<seed>"),
    drift_tiles: int = typer.Option(
        None,
        min=1,
        help="tiles of each style sent through the API before each drift run (default PARKING_DRIFT_MIN_ROWS, "
        "the fewest a report judges)",
    ),
    timeout: float = typer.Option(3600.0, help="seconds to wait for the whole pipeline"),
) -> None:
    """Run the whole loop on the embedded default: synthetic batch, stack up, ingest -> preprocess -> train ->
    promote in Airflow, a prediction from the API serving the champion, default and shifted (winter) tiles
    through the API with a parking_drift report on each window, then a summary with the URLs to open."""
    from rich.console import Console

    from parking_ml.config import load_settings
    from parking_ml.logs import configure_cli_logging

    settings = load_settings()
    # the console is for stage headers, progress and short results; every log record goes to var/logs/demo.log
    log_file = configure_cli_logging(settings, "demo", console_level="WARNING")
    console = Console(highlight=False, soft_wrap=True)  # the terminal wraps, not rich at 80 columns
    batch = batch or f"demo-{seed}"
    drift_tiles = drift_tiles or settings.drift_min_rows
    timings: dict[str, float] = {}
    try:
        lo, _, hi = gsd.partition("-")
        gsd_range = (float(lo), float(hi or lo))
    except ValueError:
        raise typer.BadParameter(f"--gsd must be a number or a range like 0.08-0.15, got {gsd!r}") from None
    t_all = time.monotonic()
    console.print(f"parking-ml demo: logs in {log_file}")
    # the batch lands before the stack starts: the scheduler runs the hourly ingest as soon as the DAG appears,
    # and a run that started during the upload quarantined a site's annotations whose image had not landed yet
    console.rule(f"1/6 synthetic landing batch landing/{batch}/ ({n} images)")
    t = time.monotonic()
    files = _upload_batch(settings, batch, n, seed, size, gsd_range, passes)
    timings["synth + upload"] = time.monotonic() - t
    console.print(f"{files} files written to {settings.lake_url}/landing/{batch}/")

    console.rule("2/6 local stack: MLflow, Airflow, inference API")
    with _stage("local stack", settings):
        api = _start_stack(settings, console, timings)
    try:
        console.rule("3/6 pipeline in Airflow: ingest -> preprocess -> train -> promote")
        with _stage("pipeline", settings):
            _follow_chain(api, console, settings, batch, timeout, timings)

        console.rule("4/6 inference API")
        api_url = f"http://{settings.host}:{settings.api_port}"
        champion = _champion_version(settings)
        answer, drift = None, []
        if champion is None:
            # the loop worked; the gate refused a model below the bar, which is its job: say why, leave it there
            console.print(
                "[yellow]The promotion gate refused the challenger (first model below "
                "PARKING_PROMOTION_MIN_QUALITY), so no champion is served yet.[/] Its metrics and the gate's reason "
                f"are tags on the model version in MLflow ({settings.mlflow_tracking_uri}); more data, more epochs "
                "(PARKING_PROFILE=full on a GPU) or local pretrained weights (PARKING_ENCODER_WEIGHTS) raise it."
            )
        else:
            with _stage("inference API", settings):
                t = time.monotonic()
                if not _wait_serving(api_url, champion, settings.reload_interval_s + 60):
                    from parking_ml.cli.demo_drift import DemoError

                    raise DemoError(f"the API at {api_url} does not serve v{champion}; see {settings.logs_dir}/api.log")
                answer = _predict_unseen_tile(console, api_url, seed, size)
                timings["api"] = time.monotonic() - t

            console.rule(f"5/6 drift: {drift_tiles} default, then {drift_tiles} {SHIFTED_STYLE} tiles through the API")
            with _stage("drift", settings):
                t = time.monotonic()
                drift = _drift_stage(console, api, settings, api_url, champion, drift_tiles, seed, 900.0)
                timings["drift"] = time.monotonic() - t
        timings["total"] = time.monotonic() - t_all
        logging.getLogger("parking_ml.demo").info(
            "demo done", extra={"seconds": {k: round(v, 1) for k, v in timings.items()}, "champion": champion}
        )
        console.rule("6/6 summary")
        with _stage("summary", settings):
            summary = _gather_summary(settings, timings, answer, drift)
        _print_summary(settings, summary, api_url)
    finally:
        api.close()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("demo")(demo)
