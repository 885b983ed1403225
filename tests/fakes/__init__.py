"""Fakes shared by the tests: tiny scenes (`scenes`), landing batches (`landing`), model packages (`packages`) and
servers (`servers`). Built small inside the tests; nothing is downloaded."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# the venv's console scripts (airflow, mlflow, parking-ml) beside the interpreter running the tests
VENV_BIN = Path(sys.executable).parent
