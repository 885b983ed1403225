"""One tuning process for the shared-study test: `python -m tests.fakes.optuna_worker STORAGE STUDY N OUT`.

Opens the study through the project's own open_study and tunes it with optimize_shared until the study (with
every other process's trials) holds N finished trials; a trivial objective, since the storage is under test.
Writes {"tag": ..., "ran": ...} to OUT.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(storage: str, name: str, n_trials: int, out: Path) -> None:
    from parking_ml.config import Settings
    from parking_ml.model.profiles import get_profile
    from parking_ml.model.study_store import optimize_shared, process_tag
    from parking_ml.model.tune import open_study

    settings = Settings(home=out.parent / "var", optuna_storage=storage)
    study = open_study(settings, name, get_profile("smoke"))

    def objective(trial) -> float:
        x = trial.suggest_float("x", -1.0, 1.0)
        time.sleep(0.2)  # long enough for the two processes' trials to interleave
        return -((x - 0.3) ** 2)

    ran = optimize_shared(study, objective, n_trials)
    out.write_text(json.dumps({"tag": process_tag(), "ran": ran}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
