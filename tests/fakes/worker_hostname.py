"""Airflow's [core] hostname_callable for test workers: every Celery worker here runs on one machine, so each
gets the name a separate machine would report (env PARKING_TEST_HOSTNAME), and task instances record it."""

import os
import socket


def hostname() -> str:
    return os.environ.get("PARKING_TEST_HOSTNAME") or socket.getfqdn()
