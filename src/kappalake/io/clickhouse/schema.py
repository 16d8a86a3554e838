"""Gold tables kappalake owns: the layout derived from a view's result schema, creation and migration.

Two tables per view:

* the **public** table dashboards read: group keys, ``window_start``, ``window_end``, the metrics,
  ``version`` and ``updated_at``; ``ReplacingMergeTree(version)`` with ``non_replicated_deduplication_window``
  so a retried insert with the same deduplication token is dropped. Session views add ``_deleted`` (``ReplacingMergeTree(version, _deleted)``):
  a session absorbed into another one under an earlier start is deleted, and ``FINAL`` hides it;
* the **state** table ``<table>_state`` the sink merges each batch into: the same keys, the metrics'
  mergeable states (:mod:`kappalake.transforms.window_states`), the run that wrote the row
  (``_generation``, ``_batch``) and ``_deleted``.

Layout (both tables), chosen for a table that grows for months while every read is recent:

* ``PARTITION BY toDate(window_start)``: a day is closed once the watermark passed it, so
  ``kappalake maintain`` can merge it into one part (``OPTIMIZE ... FINAL``) and a ``FINAL`` read of it
  does no merge work; a TTL drops whole days;
* ``ORDER BY (toStartOfHour(window_start), <group keys>, window_start)``: the sink's per-batch read of the
  windows it touches and a dashboard's "last 15 minutes" read only the last hour's granules, whatever the
  table's size, and "one key in the last 15 minutes" is a binary search inside that hour. The row identity
  ReplacingMergeTree collapses on stays (group keys, window_start).
* an optional ``TTL toDateTime(window_start) + INTERVAL n SECOND`` (``clickhouse.ttl`` of the view).

Tables created by earlier versions (``PARTITION BY toYYYYMM(window_start) ORDER BY (<keys>, window_start)``)
keep working; a warning says how to move to this layout. A metric added in YAML adds its columns; anything
else that changed fails with :class:`SchemaConflict`.
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
    ttl_seconds: int | None = None  # rows go this long after window_start


    @classmethod
    def from_schema(cls, name: str, schema: StructType, keys: tuple[str, ...], deletes: bool = False,
                    ttl_seconds: int | None = None) -> GoldTable:
        """Keys and window bounds are never Nullable (they form the sorting key); metrics follow Spark."""
        system = (*SYSTEM_COLUMNS, DELETED) if deletes else SYSTEM_COLUMNS
        return cls(name, keys, _columns(schema, keys) + system, deletes, ttl_seconds)

    @classmethod
    def state_of(cls, public: str, schema: StructType, keys: tuple[str, ...],
                 ttl_seconds: int | None = None) -> GoldTable:
        """The state table of public table ``public`` for partial states of Spark schema ``schema``."""
        return cls(public + STATE_SUFFIX, keys, _columns(schema, keys) + STATE_COLUMNS, True, ttl_seconds)

    @property
    def sorting_key(self) -> tuple[str, ...]:
        """A row's identity (the columns ReplacingMergeTree collapses on); rows are written in this order."""
        return (*self.keys, "window_start")

    @property
    def order_by(self) -> str:
        """The ORDER BY expression: the hour first, so reads of recent windows skip the rest of the table."""
        return ", ".join(("toStartOfHour(window_start)", *(f"`{k}`" for k in self.sorting_key)))

    @property
    def legacy_order_by(self) -> str:
        """The ORDER BY of tables created before the hour-first layout."""
        return ", ".join(self.sorting_key)

    @property
    def ttl(self) -> str | None:
        """The TTL expression, or None."""
        return f"toDateTime(window_start) + toIntervalSecond({self.ttl_seconds})" if self.ttl_seconds else None

    @property
    def metrics(self) -> tuple[str, ...]:
        fixed = set(self.sorting_key) | {"window_end"} | {n for n, _ in (*SYSTEM_COLUMNS, *STATE_COLUMNS)}
        return tuple(n for n, _ in self.columns if n not in fixed)

    @property
    def engine_arguments(self) -> str:
        return "version, _deleted" if self.deletes else "version"

    def ddl(self) -> str:
        columns = ",\n  ".join(f"`{n}` {t}" for n, t in self.columns)
        ttl = f"TTL {self.ttl}\n" if self.ttl else ""
        return (f"CREATE TABLE IF NOT EXISTS `{self.name}` (\n  {columns}\n) "
                f"ENGINE = ReplacingMergeTree({self.engine_arguments})\n"
                f"PARTITION BY toDate(window_start) ORDER BY ({self.order_by})\n{ttl}"
                f"SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}")


def _ttl_statements(table: GoldTable, engine_full: str) -> list[str]:
    """The ALTERs that give an existing table the configured TTL (or remove one no longer configured)."""
    has_ttl = " TTL " in f" {engine_full} "
    if table.ttl is None:
        return [f"ALTER TABLE `{table.name}` REMOVE TTL"] if has_ttl else []
    if _normal(table.ttl) in _normal(engine_full):
        return []
    return [f"ALTER TABLE `{table.name}` MODIFY TTL {table.ttl}"]


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
    if _normal(sorting_key) == _normal(table.legacy_order_by):
        log.warning("gold table %s has the layout of kappalake < 0.9 (ORDER BY (%s), monthly partitions): reads of "
                    "recent windows scan more of it as it grows. To move to ORDER BY (%s) by day, create the new "
                    "table and INSERT INTO it SELECT * FROM the old one with the job stopped, then swap them "
                    "(RENAME/EXCHANGE TABLES).", table.name, sorting_key, table.order_by.replace("`", ""))
    elif _normal(sorting_key) != _normal(table.order_by.replace("`", "")):
        raise SchemaConflict(f"ClickHouse table `{table.name}` is ordered by ({sorting_key}) but the view's group "
                             f"keys need ({table.order_by.replace('`', '')}); the group_by changed: {advice}")
    statements = _ttl_statements(table, engine)
    for statement in statements:
        ch.command(statement)
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
