"""Gold tables kappalake owns: the layout derived from a view's result schema, creation and migration.

Two tables per view:

* the **public** table dashboards read: group keys, ``window_start``, ``window_end``, the metrics,
  ``version`` and ``updated_at``; ``ReplacingMergeTree(version)`` ordered by (group keys, window_start),
  partitioned by month, with ``non_replicated_deduplication_window`` so a retried insert with the same
  deduplication token is dropped. Session views add ``_deleted`` (``ReplacingMergeTree(version, _deleted)``):
  a session absorbed into another one under an earlier start is deleted, and ``FINAL`` hides it;
* the **state** table ``<table>_state`` the sink merges each batch into: the same keys, the metrics'
  mergeable states (:mod:`kappalake.transforms.window_states`), the run that wrote the row
  (``_generation``, ``_batch``) and ``_deleted``.

A metric added in YAML adds its columns; anything else that changed fails with :class:`SchemaConflict`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kappalake.errors import SchemaConflict

if TYPE_CHECKING:
    from pyspark.sql.types import DataType, StructType

    from kappalake.io.clickhouse.client import ClickHouse

log = logging.getLogger(__name__)

DEDUP_WINDOW = 10_000
WINDOW_COLUMNS = ("window_start", "window_end")
SYSTEM_COLUMNS = (("version", "UInt64"), ("updated_at", "DateTime64(3, 'UTC')"))
DELETED = ("_deleted", "UInt8")
STATE_COLUMNS = (("_generation", "UInt64"), ("_batch", "Int64"), DELETED, ("version", "UInt64"))
STATE_SUFFIX = "_state"


def clickhouse_type(data_type: DataType, nullable: bool) -> str:
    """The ClickHouse column type for a Spark type."""
    from pyspark.sql import types as T

    simple = {T.StringType: "String", T.LongType: "Int64", T.IntegerType: "Int32", T.ShortType: "Int16",
              T.ByteType: "Int8", T.DoubleType: "Float64", T.FloatType: "Float32", T.BooleanType: "Bool",
              T.DateType: "Date32", T.TimestampType: "DateTime64(6, 'UTC')",
              T.TimestampNTZType: "DateTime64(6, 'UTC')"}
    if isinstance(data_type, T.DecimalType):
        name = f"Decimal({data_type.precision}, {data_type.scale})"
    elif isinstance(data_type, T.BinaryType):
        name = "String"
    elif isinstance(data_type, T.ArrayType):
        return f"Array({clickhouse_type(data_type.elementType, data_type.containsNull)})"
    elif type(data_type) in simple:
        name = simple[type(data_type)]
    else:
        raise SchemaConflict(f"a gold column of Spark type {data_type.simpleString()} has no ClickHouse mapping")
    return f"Nullable({name})" if nullable else name


def _normal(type_name: str) -> str:
    return type_name.replace(" ", "")


@dataclass(frozen=True)
class GoldTable:
    """A gold table's expected layout."""

    name: str
    keys: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]  # (name, ClickHouse type) in table order
    deletes: bool = False  # ReplacingMergeTree(version, _deleted)

    @classmethod
    def from_schema(cls, name: str, schema: StructType, keys: tuple[str, ...], deletes: bool = False) -> GoldTable:
        """Keys and window bounds are never Nullable (they form the sorting key); metrics follow Spark."""
        system = (*SYSTEM_COLUMNS, DELETED) if deletes else SYSTEM_COLUMNS
        return cls(name, keys, _columns(schema, keys) + system, deletes)

    @classmethod
    def state_of(cls, public: str, schema: StructType, keys: tuple[str, ...]) -> GoldTable:
        """The state table of public table ``public`` for partial states of Spark schema ``schema``."""
        return cls(public + STATE_SUFFIX, keys, _columns(schema, keys) + STATE_COLUMNS, True)

    @property
    def sorting_key(self) -> tuple[str, ...]:
        return (*self.keys, "window_start")

    @property
    def metrics(self) -> tuple[str, ...]:
        fixed = set(self.sorting_key) | {"window_end"} | {n for n, _ in (*SYSTEM_COLUMNS, *STATE_COLUMNS)}
        return tuple(n for n, _ in self.columns if n not in fixed)

    @property
    def engine_arguments(self) -> str:
        return "version, _deleted" if self.deletes else "version"

    def ddl(self) -> str:
        columns = ",\n  ".join(f"`{n}` {t}" for n, t in self.columns)
        order = ", ".join(f"`{k}`" for k in self.sorting_key)
        return (f"CREATE TABLE IF NOT EXISTS `{self.name}` (\n  {columns}\n) "
                f"ENGINE = ReplacingMergeTree({self.engine_arguments})\n"
                f"PARTITION BY toYYYYMM(window_start) ORDER BY ({order})\n"
                f"SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}")


def _columns(schema: StructType, keys: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    fixed = set(keys) | set(WINDOW_COLUMNS)
    return tuple((f.name, clickhouse_type(f.dataType, f.nullable and f.name not in fixed)) for f in schema.fields)


def ensure_table(ch: ClickHouse, table: GoldTable) -> list[str]:
    """Create ``table`` or migrate it (add new metric columns); return the statements run.

    Raises SchemaConflict naming the column or setting when the existing table cannot hold the view.
    """
    existing = dict(ch.rows("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                            "AND table = {t:String} ORDER BY position", {"t": table.name}))
    if not existing:
        ch.command(table.ddl())
        return [table.ddl()]
    engine, sorting_key = ch.rows("SELECT engine_full, sorting_key FROM system.tables WHERE database = "
                                  "currentDatabase() AND name = {t:String}", {"t": table.name})[0]
    advice = (f"keep the old results under their table and give the view a new clickhouse.table, or drop "
              f"`{table.name}` and backfill")
    engine = str(engine)
    replicated = engine.startswith(("ReplicatedReplacingMergeTree(", "SharedReplacingMergeTree("))
    wanted = table.engine_arguments.replace(" ", "")
    versioned = engine.split(")")[0].replace(" ", "").endswith((
        f"ReplacingMergeTree({wanted}", f",{wanted}"))  # ClickHouse Cloud and Replicated databases add arguments
    if not (engine.startswith(("ReplacingMergeTree(", "ReplicatedReplacingMergeTree(", "SharedReplacingMergeTree("))
            and versioned):
        raise SchemaConflict(f"ClickHouse table `{table.name}` exists with engine {engine!r}, not "
                             f"ReplacingMergeTree({table.engine_arguments}); {advice}")
    if _normal(sorting_key) != _normal(", ".join(table.sorting_key)):
        raise SchemaConflict(f"ClickHouse table `{table.name}` is ordered by ({sorting_key}) but the view's group "
                             f"keys need ({', '.join(table.sorting_key)}); the group_by changed: {advice}")
    statements = []
    if not replicated and "non_replicated_deduplication_window" not in engine:
        # Without it, insert_deduplication_token does nothing and a replayed batch would insert twice.
        statement = (f"ALTER TABLE `{table.name}` MODIFY SETTING "
                     f"non_replicated_deduplication_window = {DEDUP_WINDOW}")
        ch.command(statement)
        statements.append(statement)
    for name, type_name in table.columns:
        if name in existing:
            if _normal(existing[name]) != _normal(type_name):
                raise SchemaConflict(f"ClickHouse table `{table.name}` column `{name}` is {existing[name]} but the "
                                     f"view now produces {type_name}; {advice}")
            continue
        if name not in table.metrics:
            raise SchemaConflict(f"ClickHouse table `{table.name}` has no column `{name}`; {advice}")
        statement = f"ALTER TABLE `{table.name}` ADD COLUMN IF NOT EXISTS `{name}` {type_name}"
        ch.command(statement)
        statements.append(statement)
        log.warning("gold table %s: added metric column %s %s (older windows hold its default until "
                    "they are rewritten by a backfill)", table.name, name, type_name)
    dropped = [n for n in existing if n not in dict(table.columns)]
    if dropped:
        log.warning("gold table %s keeps columns no longer configured: %s", table.name, ", ".join(dropped))
    return statements
