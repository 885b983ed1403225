"""`parking-ml`: the platform's command line, one module per verb group. Heavy imports stay inside command
bodies so that `parking-ml --help` answers fast."""

from __future__ import annotations

import typer

from parking_ml.cli import data, demo, drift, serve, stack, synth, train

app = typer.Typer(
    name="parking-ml",
    help="Find free parking spaces in satellite/aerial tiles: data, training, registry, serving, drift.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (stack, demo, synth, data, train, serve, drift):
    module.register(app)


def main() -> None:
    """Console entry point: settings errors are a user's to fix, so they get a message, not a traceback."""
    from parking_ml.config import SettingsError

    try:
        app()
    except SettingsError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
