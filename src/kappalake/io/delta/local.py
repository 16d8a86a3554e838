"""Read and update Delta tables without Spark (delta-rs), for CLI commands that must start fast."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from kappalake.errors import KappalakeError


def open_table(path: str, what: str) -> Any:
    """The delta-rs table at ``path``; a clear error when there is none yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(path)
    except TableNotFoundError:
        raise KappalakeError(f"the {what} table does not exist yet at {path} (run the pipeline first)") from None


def query(path: str, what: str, sql: str, name: str = "t") -> pa.Table:
    """Run ``sql`` (DataFusion SQL; the table is called ``name``) over the Delta table at ``path``."""
    from deltalake import QueryBuilder

    table = open_table(path, what)
    try:
        reader = QueryBuilder().register(name, table).execute(sql)
    except Exception as exc:  # DataFusion reports bad SQL as a generic exception
        raise KappalakeError(f"query over the {what} table failed: {str(exc).splitlines()[0]}") from None
    return pa.table(reader.read_all())
