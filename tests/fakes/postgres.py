"""Throwaway databases on the local PostgreSQL (127.0.0.1:5432, trust auth): created with a unique name,
dropped (connections forced closed) on exit, even when the test failed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


def pg_url(name: str, driver: str = "psycopg2") -> str:
    """SQLAlchemy URL of a database on the local server (driver '' gives a plain libpq URL)."""
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return f"{scheme}://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


@contextmanager
def fresh_database(prefix: str = "parking_test") -> Iterator[str]:
    """A new empty database; yields its name."""
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def query(name: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of one read-only query on database ``name``."""
    import psycopg2

    conn = psycopg2.connect(pg_url(name, driver=""))
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()
