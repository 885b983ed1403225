"""Typer commands, one module per lifecycle verb group. Heavy imports stay inside command bodies so that
`parking-ml --help` answers fast."""
