#!/usr/bin/env bash
# Build .venv from the repo's own files: exact torch wheels first (they lie on this machine's disk), then the
# package with every dependency held to requirements/lock.txt. A stamp holding the hash of the inputs makes a
# second run a no-op (well under a second).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PY_BIN=${PYTHON:-$(command -v python3.11 || command -v python3)}
STAMP="$VENV/.parking-setup"
want=$(cat pyproject.toml requirements/lock.txt requirements/checkov-lock.txt scripts/setup.sh | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/parking-ml" ] && [ -x .venv-checkov/bin/checkov ]; then
  echo "setup: .venv is up to date"
  exit 0
fi

"$PY_BIN" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"parking-ml needs Python 3.11, found {sys.version.split()[0]}: set PYTHON=/path/to/python3.11"'

start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY_BIN" -m venv "$VENV"
# the pip bundled with Python 3.11 is too old for this lock's resolver behaviour
"$VENV/bin/python" -m pip install --quiet --upgrade "pip==26.3"
"$VENV/bin/pip" install --quiet --progress-bar off -c requirements/lock.txt "torch==2.14.1" "torchvision==0.29.1"
"$VENV/bin/pip" install --quiet --progress-bar off -c requirements/lock.txt -e ".[dev]"
"$VENV/bin/pip" check
# checkov (make check-deploy) pins packages the project's lock cannot hold: it gets a venv of its own
[ -x .venv-checkov/bin/python ] || "$PY_BIN" -m venv .venv-checkov
.venv-checkov/bin/pip install --quiet --progress-bar off -r requirements/checkov-lock.txt
.venv-checkov/bin/pip check
echo "$want" > "$STAMP"
echo "setup: done in $(( $(date +%s) - start ))s"
