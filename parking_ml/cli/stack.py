"""`parking-ml stack up|down|status`: the local stack (MLflow, Airflow, inference API) on 127.0.0.1."""

from __future__ import annotations

import typer

stack_app = typer.Typer(help="Start, check and stop the local stack (MLflow, Airflow, API) on 127.0.0.1.")


def _print_status(settings) -> bool:
    from rich.console import Console
    from rich.table import Table

    from parking_ml.ops import stack

    rows = stack.status(settings)
    table = Table(title=f"parking-ml stack ({settings.home})")
    for col in ("component", "pid", "running", "healthy", "url"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            row.name,
            str(row.pid or "-"),
            "yes" if row.running else "no",
            "[green]yes[/]" if row.healthy else "[red]no[/]",
            row.url or "",
        )
    console = Console()
    console.print(table)
    password = stack.airflow_admin_password(settings)
    if any(r.running for r in rows):
        console.print(f"Airflow UI   http://{settings.host}:{settings.airflow_port}  user admin, password {password}")
        console.print(f"MLflow UI    {settings.mlflow_tracking_uri}")
        console.print(f"API docs     http://{settings.host}:{settings.api_port}/docs")
        console.print(f"Logs         {settings.logs_dir}")
    return all(r.healthy for r in rows)


@stack_app.command("up")
def up_cmd(
    only: list[str] = typer.Option(
        None, "--only", help="start only these components (mlflow, airflow, api); repeatable"
    ),
) -> None:
    """Start MLflow, Airflow (api-server, scheduler, dag-processor, triggerer) and the API; wait until healthy.

    Idempotent: running components are left alone. On a failed start the log tail is printed and whatever this
    call started is stopped again.
    """
    from parking_ml.config import load_settings
    from parking_ml.logs import configure_cli_logging
    from parking_ml.ops import stack

    settings = load_settings()
    configure_cli_logging(settings, "stack")
    try:
        stack.up(settings, only=only or None)
    except stack.StackError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from None
    _print_status(settings)


@stack_app.command("down")
def down_cmd(
    timeout: float = typer.Option(20.0, help="seconds to wait after SIGTERM before SIGKILL"),
) -> None:
    """Stop every stack component by PID (SIGTERM, then SIGKILL after --timeout); leaves no process behind."""
    from parking_ml.config import load_settings
    from parking_ml.logs import configure_cli_logging
    from parking_ml.ops import stack

    settings = load_settings()
    configure_cli_logging(settings, "stack")
    stack.down(settings, timeout_s=timeout)
    typer.echo("stack stopped")


@stack_app.command("status")
def status_cmd() -> None:
    """Show each component's PID, health and URL, and the Airflow admin password. Exit 1 unless all healthy."""
    from parking_ml.config import load_settings

    if not _print_status(load_settings()):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(stack_app, name="stack")
