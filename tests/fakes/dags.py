"""DAG objects for in-process runs."""

from __future__ import annotations


def new_dag(dag_id: str):
    """A new DAG object from the DAG file's factory (dags/<dag_id>.py defines function <dag_id>). Airflow's
    in-process dag.test() writes a run's conf into the DAG's own Param objects (a worker parses the file afresh
    for each task), so a DAG object reused after a run with conf would start the next run with that run's values."""
    import importlib

    return getattr(importlib.import_module(dag_id), dag_id)()
