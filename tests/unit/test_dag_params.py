"""The DAGs' Params: every knob is typed, titled and described, defaults validate, and the run's values turn
into the arguments the tasks pass on."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def dags():
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"), safe_mode=False).dags


EXPECTED = {
    "parking_ingest": {"batch"},
    "parking_preprocess": {"tile_size", "tile_overlap", "folds"},
    "parking_train": {"profile", "n_trials", "init_weights"},
    "parking_promote": {"margin", "force_version", "reason"},
}


def test_each_dag_has_its_knobs_typed_titled_and_described(dags):
    for dag_id, names in EXPECTED.items():
        params = dags[dag_id].params
        assert set(params.keys()) == names, dag_id
        for name in names:
            param = params.get_param(name)
            assert param.schema.get("type"), (dag_id, name)
            assert param.schema.get("title") and param.description, (dag_id, name)
        params.validate()  # the defaults pass their own schema


def test_values_outside_the_schema_are_refused(dags):
    from airflow.sdk.exceptions import ParamValidationError

    bad = [
        ("parking_ingest", "batch", "../raw"),
        ("parking_ingest", "batch", "a/b"),
        ("parking_preprocess", "tile_size", 16),
        ("parking_train", "profile", "huge"),
        ("parking_train", "n_trials", 0),
        ("parking_train", "n_trials", "3"),
        ("parking_promote", "margin", -0.1),
        ("parking_promote", "force_version", 0),
    ]
    for dag_id, name, value in bad:
        with pytest.raises(ParamValidationError):
            dags[dag_id].params.get_param(name).resolve(value)
    assert dags["parking_train"].params.get_param("profile").resolve("smoke") == "smoke"
    assert dags["parking_ingest"].params.get_param("batch").resolve("demo-7") == "demo-7"


def test_overrides_keep_only_set_values():
    from parking_params import overrides

    fields = {"profile": "profile", "init_weights": "init_weights"}
    assert overrides({"profile": None, "init_weights": "none", "n_trials": 3}, fields) == {"init_weights": "none"}
    assert overrides({}, fields) == {}


def test_a_forced_promotion_needs_both_a_version_and_a_reason():
    from parking_params import forced_promotion

    assert forced_promotion({"force_version": None, "reason": ""}) is None
    assert forced_promotion({"force_version": 3, "reason": " hotfix verified "}) == (3, "hotfix verified")
    with pytest.raises(ValueError, match="forcing v3 to champion needs a 'reason'"):
        forced_promotion({"force_version": 3, "reason": "  "})
    with pytest.raises(ValueError, match="'reason' is only used with 'force_version'"):
        forced_promotion({"force_version": None, "reason": "why not"})
