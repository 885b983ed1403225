"""parking-ml: find free parking spaces in satellite and aerial image tiles."""

__version__ = "0.1.0"
