"""A throwaway local PostgreSQL for the CDC tests: the stack's own :class:`PostgresServer` in a data dir of
its own (not the session's KAPPALAKE_HOME, so other tests' ``stack up/down`` cannot stop it).

``pg_server`` (session) is the running server (role and database ``kappalake`` with the CDC schema);
``cdc_dsn`` gives each test its own fresh database holding the CDC schema.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kappalake.runtime.paths import HomeLayout
from kappalake.runtime.stack.postgres import PostgresServer, schema_sql


def database_dsn(server: PostgresServer, database: str) -> str:
    """The running server's DSN with another database."""
    return server.dsn().rsplit("/", 1)[0] + "/" + database


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """Fails (StackError naming where it looked) when PostgreSQL 15 is missing: scripts/setup.sh installs it."""
    root = Path(tempfile.mkdtemp(prefix="kappalake-pg-"))  # short and under /tmp: the postgres user reaches it
    server = PostgresServer(HomeLayout(home=root, cache=root / "cache"))
    try:
        server.up()
        yield server
    finally:
        server.down()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cdc_dsn(pg_server: PostgresServer) -> str:
    """A fresh database with the CDC schema (orders, merchants), owned by ``kappalake``."""
    import psycopg

    name = f"cdc_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(database_dsn(pg_server, name), autocommit=True) as conn:
        conn.execute(schema_sql())
    return database_dsn(pg_server, name)
