"""Fakes shared by the tests: tiny scenes (`scenes`), landing batches (`landing`), model packages (`packages`) and
servers (`servers`). Built small inside the tests; nothing is downloaded."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
