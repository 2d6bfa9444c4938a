"""What every benchmark shares: its own Postgres database, and the process helpers' waits."""

from __future__ import annotations

import psycopg

from devtools.procs import free_port, wait_for

__all__ = ["PG", "free_port", "recreate_database", "wait_for"]

PG = "postgres://postgres@127.0.0.1:5432"


def recreate_database(name: str) -> None:
    """Drop (closing its connections) and create the benchmark's own database."""
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
