"""Every file in dags/ must import with no DagBag errors, and the DAG ids of docs/design.md must be there."""

from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS), safe_mode=False)


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}, "\n".join(f"{k}: {v}" for k, v in dagbag.import_errors.items())


def test_design_dag_ids_are_present(dagbag):
    assert {"parking_ingest", "parking_preprocess", "parking_train", "parking_promote"} <= set(dagbag.dag_ids)


def test_asset_chain_links_the_pipeline(dagbag):
    """ingest -> preprocess -> train -> promote through the assets of docs/design.md."""
    from parking_assets import PARKING_CHALLENGER, PARKING_PROCESSED, PARKING_RAW

    def outlets(dag_id):
        return {o.name for t in dagbag.dags[dag_id].tasks for o in t.outlets}

    def schedule_assets(dag_id):
        condition = dagbag.dags[dag_id].timetable.asset_condition  # AssetAll of the schedule list
        return {a.name for a in condition.objects}

    assert PARKING_RAW.name in outlets("parking_ingest")
    assert schedule_assets("parking_preprocess") == {PARKING_RAW.name}
    assert PARKING_PROCESSED.name in outlets("parking_preprocess")
    assert schedule_assets("parking_train") == {PARKING_PROCESSED.name}
    assert PARKING_CHALLENGER.name in outlets("parking_train")
    assert schedule_assets("parking_promote") == {PARKING_CHALLENGER.name}


def test_every_dag_file_defines_or_supports_dags(dagbag):
    files = {p.name for p in DAGS.glob("*.py")}
    with_dags = {Path(d.fileloc).name for d in dagbag.dags.values()}
    # parking_assets.py (Asset definitions) and parking_params.py (Params) are shared and define no DAG on purpose
    assert files - with_dags <= {"parking_assets.py", "parking_params.py"}


def test_known_dags_have_owners_tags_and_no_cycles(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag_id.startswith("parking_"), dag_id
        assert dag.tags, f"{dag_id} has no tags"
        dag.check_cycle()  # raises on a cycle
