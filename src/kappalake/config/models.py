"""Typed configuration models: the project's targets and each pipeline's declaration.

Models forbid unknown keys so a typo fails loudly instead of being ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from kappalake.config.base import Duration, Identifier, StrictModel
from kappalake.config.cdc import CDC_FIELDS, with_cdc_fields
from kappalake.config.durations import parse_seconds
from kappalake.config.enrichment import EnrichConfig, check_enrichment
from kappalake.config.erasure import ErasureConfig, check_erasure
from kappalake.config.formats import AvroFormat, ProtobufFormat, SchemaRegistryConfig, SubjectStrategy
from kappalake.quality.config import QualityConfig

_SIMPLE_TYPES = {"string", "int", "long", "double", "float", "boolean", "timestamp", "date"}
_DECIMAL = re.compile(r"^decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)$")


# --------------------------------------------------------------------------- payload schema

def _field_type(value: str) -> str:
    text = value.strip().lower()
    if text in _SIMPLE_TYPES or _DECIMAL.match(text):
        return text
    raise ValueError(
        f"unknown type {value!r}; expected one of {sorted(_SIMPLE_TYPES)} or decimal(p,s)"
    )


class FieldSpec(StrictModel):
    """One payload field: its type and the row-level rules silver validates."""

    type: Annotated[str, AfterValidator(_field_type)]
    required: bool = False
    min: float | None = None
    max: float | None = None
    allowed: list[str | int | float] | None = None

    @model_validator(mode="after")
    def _check_rules(self) -> FieldSpec:
        numeric = self.type in {"int", "long", "double", "float"} or self.type.startswith("decimal")
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"min/max apply to numeric fields only, not to type {self.type!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


def _field_shorthand(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


class EventsConfig(StrictModel):
    """The payload carried in each Kafka record value."""

    format: Literal["json", "avro", "protobuf", "debezium"] = "json"
    avro: AvroFormat | None = Field(default=None, description="format: avro: the reader schema and wire format.")
    protobuf: ProtobufFormat | None = Field(default=None, description="format: protobuf: descriptor and message.")
    subject_strategy: SubjectStrategy = Field(
        default="topic_name", description="Registry subject of the values: <topic>-value, the record's full name, "
                                          "or <topic>-<record name>.")
    id: Identifier = Field(description="Field holding the unique event id (dedupe key).")
    time: Identifier = Field(description="Field holding the event time.")
    key: Identifier | None = Field(default=None, description="Field the producer keys records by.")
    max_future: Duration | None = Field(
        default="1 hour", description="Dead-letter events whose time is this far after their Kafka timestamp.")
    max_age: Duration | None = Field(
        default=None, description="Dead-letter events whose time is this far before their Kafka timestamp.")
    max_bytes: int = Field(default=1_000_000, ge=1, description="Dead-letter payloads larger than this.")
    schema_: dict[Identifier, Annotated[FieldSpec, BeforeValidator(_field_shorthand)]] = Field(
        alias="schema", min_length=1
    )

    @model_validator(mode="before")
    @classmethod
    def _add_cdc_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("format") == "debezium" and isinstance(data.get("schema"), dict):
            data = {**data, "schema": with_cdc_fields(data["schema"])}
        return data

    @model_validator(mode="after")
    def _check_format(self) -> EventsConfig:
        for name in ("avro", "protobuf"):
            if self.format == name and getattr(self, name) is None:
                raise ValueError(f"format: {name} needs an events.{name} section "
                                 + ("(schema: the reader .avsc)" if name == "avro" else "(descriptor, message)"))
            if self.format != name and getattr(self, name) is not None:
                raise ValueError(f"{name}: set, but format is {self.format!r}")
        return self

    @property
    def wire(self) -> str:
        """``confluent`` (schema id header, needs a registry), ``plain``, or ``json``."""
        binary = self.avro or self.protobuf
        return binary.wire if binary is not None else "json"

    @model_validator(mode="after")
    def _check_columns(self) -> EventsConfig:
        for role in ("id", "time", "key"):
            column = getattr(self, role)
            if column is not None and column not in self.schema_:
                raise ValueError(f"{role}: field {column!r} is not declared in schema")
        if self.schema_[self.time].type != "timestamp":
            raise ValueError(f"time: field {self.time!r} must have type timestamp, not {self.schema_[self.time].type!r}")
        return self


# --------------------------------------------------------------------------- Kafka source

_SPARK_KAFKA_OPTIONS = {
    "startingOffsets", "startingTimestamp", "startingOffsetsByTimestamp", "startingOffsetsByTimestampStrategy",
    "endingOffsets", "endingTimestamp", "endingOffsetsByTimestamp",
    "maxOffsetsPerTrigger", "minOffsetsPerTrigger", "maxTriggerDelay", "minPartitions", "maxRecordsPerPartition",
    "failOnDataLoss", "includeHeaders", "groupIdPrefix", "fetchOffset.numRetries", "fetchOffset.retryIntervalMs",
    "kafkaConsumer.pollTimeoutMs",
}
_FORBIDDEN_KAFKA_OPTIONS = {
    "subscribe", "subscribePattern", "assign",  # declared by source.subscribe / subscribePattern / assign
    "kafka.bootstrap.servers",  # comes from the target
}


def _check_kafka_options(options: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = {}
    for name, value in options.items():
        if name in _FORBIDDEN_KAFKA_OPTIONS:
            raise ValueError(f"option {name!r} is not set here (topics come from source.subscribe/"
                             "subscribePattern/assign, brokers from the target's kafka.bootstrap_servers)")
        if name not in _SPARK_KAFKA_OPTIONS and not name.startswith("kafka."):
            raise ValueError(
                f"unknown Kafka source option {name!r}; expected one of Spark's Kafka source options "
                f"({', '.join(sorted(_SPARK_KAFKA_OPTIONS))}) or a 'kafka.*' client setting"
            )
        if value is None or value == "":  # an optional setting left unset (``${VAR:-}``): not passed at all
            continue
        result[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return result


KafkaOptions = Annotated[dict[str, Any], AfterValidator(_check_kafka_options)]


class SourceConfig(StrictModel):
    """Which Kafka topics a pipeline reads, with Spark's Kafka source options."""

    subscribe: list[str] | None = None
    subscribe_pattern: str | None = Field(default=None, alias="subscribePattern")
    assign: dict[str, list[int]] | None = None
    partitions: int = Field(default=3, ge=1, description="Partitions when kappalake creates the topic.")
    options: KafkaOptions = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split_subscribe(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("subscribe"), str):
            data = {**data, "subscribe": [t.strip() for t in data["subscribe"].split(",") if t.strip()]}
        return data

    @model_validator(mode="after")
    def _exactly_one_subscription(self) -> SourceConfig:
        chosen = [{"subscribe_pattern": "subscribePattern"}.get(n, n)
                  for n in ("subscribe", "subscribe_pattern", "assign") if getattr(self, n)]
        if len(chosen) != 1:
            raise ValueError("set exactly one of subscribe, subscribePattern, assign"
                             + (f" (got {', '.join(chosen)})" if chosen else ""))
        return self

    @property
    def topics(self) -> list[str]:
        """Topics kappalake knows by name (to create on the local stack, to produce to)."""
        if self.subscribe:
            return list(self.subscribe)
        if self.assign:
            return list(self.assign)
        return []


# --------------------------------------------------------------------------- tables

class TableConfig(StrictModel):
    """Where a Delta table lives; the default path is derived from the target's storage root."""

    path: str | None = None


class PiiConfig(StrictModel):
    fields: list[Identifier] = Field(default_factory=list)
    key_env: str = Field(default="KAPPALAKE_PII_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$")


class SilverConfig(TableConfig):
    mode: Literal["append", "upsert", "cdc"] = Field(
        default="append", description="append: dedupe and append; upsert: MERGE the latest row per merge_key by "
                                      "sequence_column; cdc: apply Debezium changes by merge_key in LSN order.")
    source: Literal["kafka", "bronze"] = "kafka"
    watermark: Duration = "10 seconds"
    dedupe_time: Literal["kafka_timestamp", "event_time"] = Field(
        default="kafka_timestamp",
        description="Time column of the dedupe watermark. kafka_timestamp (arrival) never drops events that are "
                    "late in event time; event_time bounds state by event time instead.")
    merge_key: list[Identifier] | None = None
    sequence_column: Identifier | None = None
    deletes: Literal["delete", "mark"] = Field(
        default="delete", description="mode cdc: a delete removes the row (delete) or keeps it with "
                                      "cdc_deleted = true (mark).")
    history: bool = Field(default=False, description="mode cdc: also keep an SCD type 2 history table "
                                                     "(valid_from, valid_to, is_current) at <silver>_history.")
    pii: PiiConfig = Field(default_factory=PiiConfig)
    expectations: QualityConfig = Field(
        default_factory=QualityConfig,
        description="Data-quality expectations on every silver micro-batch (see kappalake.quality.config).")

    @model_validator(mode="after")
    def _check_mode(self) -> SilverConfig:
        if self.mode == "upsert" and (not self.merge_key or not self.sequence_column):
            raise ValueError("mode 'upsert' needs merge_key and sequence_column")
        if self.mode == "cdc" and (not self.merge_key or self.sequence_column):
            raise ValueError("mode 'cdc' needs merge_key (the table's primary key) and no sequence_column "
                             "(changes are ordered by cdc_lsn)")
        if self.mode == "append" and (self.merge_key or self.sequence_column):
            raise ValueError("merge_key/sequence_column apply to modes 'upsert' and 'cdc' only")
        if self.mode != "cdc" and (self.history or self.deletes != "delete"):
            raise ValueError("deletes/history apply to mode 'cdc' only")
        return self


class DeadLetterConfig(TableConfig):
    kafka_topic: str | None = None


# --------------------------------------------------------------------------- gold views

class WindowConfig(StrictModel):
    kind: Literal["tumbling", "sliding", "session"]
    size: Duration | None = None
    slide: Duration | None = None
    gap: Duration | None = None

    @model_validator(mode="after")
    def _check_kind(self) -> WindowConfig:
        if self.kind in ("tumbling", "sliding") and self.size is None:
            raise ValueError(f"a {self.kind} window needs size")
        if self.kind == "sliding":
            if self.slide is None:
                raise ValueError("a sliding window needs slide")
            if parse_seconds(self.slide) > parse_seconds(self.size or "0s"):
                raise ValueError(f"slide ({self.slide}) must not exceed size ({self.size})")
        elif self.slide is not None:
            raise ValueError(f"slide applies to sliding windows only, not {self.kind}")
        if self.kind == "session":
            if self.gap is None:
                raise ValueError("a session window needs gap")
            if self.size is not None:
                raise ValueError("a session window takes gap, not size")
        elif self.gap is not None:
            raise ValueError(f"gap applies to session windows only, not {self.kind}")
        return self


MetricFn = Literal["count", "sum", "avg", "min", "max", "stddev", "approx_count_distinct", "percentile", "custom"]


class MetricConfig(StrictModel):
    fn: MetricFn
    column: Identifier | None = None
    percentile: float | None = Field(default=None, gt=0, lt=1)
    hook: str | None = Field(default=None, pattern=r"^[\w.]+:[\w]+$",
                             description="module:function returning a Column, for fn 'custom'")
    merge: Literal["sum", "min", "max"] | None = Field(
        default=None, description="How two micro-batches' values of a custom metric combine (fn 'custom' only): "
                                  "gold aggregates each batch and merges it into the stored window.")

    @model_validator(mode="after")
    def _check_args(self) -> MetricConfig:
        if self.fn not in ("count", "custom") and self.column is None:
            raise ValueError(f"metric fn {self.fn!r} needs column")
        if (self.fn == "percentile") != (self.percentile is not None):
            raise ValueError("percentile is required for fn 'percentile' and only for it")
        if (self.fn == "custom") != (self.hook is not None):
            raise ValueError("hook is required for fn 'custom' and only for it")
        if (self.fn == "custom") != (self.merge is not None):
            raise ValueError("merge (sum, min or max: how the hook's per-batch values combine into the window) is "
                             "required for fn 'custom' and only for it")
        return self


class ClickHouseTarget(StrictModel):
    table: Identifier
    ttl: Duration | None = Field(
        default=None, description="Drop windows (and their merge states) this long after window_start; none: keep.")


_RESERVED_GOLD_COLUMNS = {"window_start", "window_end", "version", "updated_at", "_deleted"}


class GoldViewConfig(StrictModel):
    """One windowed aggregate: window, event-time column, watermark, group keys, metrics, ClickHouse table."""

    window: WindowConfig
    time_column: Identifier | None = Field(default=None, description="Event-time field; default events.time.")
    watermark: Duration | None = Field(default=None, description="Watermark delay; default silver.watermark.")
    enrich: list[EnrichConfig] = Field(
        default_factory=list, description="Dimension columns joined onto the events before aggregation "
                                          "(see kappalake.config.enrichment); group_by and metrics may name them.")
    group_by: list[Identifier] = Field(min_length=1)
    metrics: dict[Identifier, MetricConfig] = Field(min_length=1)
    having: str | None = Field(default=None, description="Spark SQL filter over the metrics of a window.")
    clickhouse: ClickHouseTarget
    expectations: QualityConfig = Field(
        default_factory=QualityConfig,
        description="Data-quality expectations on the changed windows of every micro-batch, checked before the "
                    "ClickHouse write. Windows are aggregates of validated events, so failing rows are recorded "
                    "(on_fail: record), not quarantined; batch-level checks record or stop.")

    @model_validator(mode="after")
    def _check_names(self) -> GoldViewConfig:
        clashes = (_RESERVED_GOLD_COLUMNS | set(self.group_by)) & set(self.metrics)
        reserved = _RESERVED_GOLD_COLUMNS & set(self.group_by)
        if clashes or reserved:
            raise ValueError(f"column name {sorted(clashes | reserved)[0]!r} is used twice or reserved "
                             f"(reserved: {', '.join(sorted(_RESERVED_GOLD_COLUMNS))})")
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError("group_by lists a field twice")
        for expectation in self.expectations.expectations:
            if expectation.on_fail == "quarantine":
                raise ValueError(
                    f"expectations: {expectation.name!r} would quarantine window rows; a gold window is an aggregate "
                    "of already validated events and has no source record for the dead-letter table. Use "
                    "'on_fail: record' (row-level: counted and reported) or 'level: batch' with 'on_fail: stop', "
                    "or quarantine the events in silver.expectations")
        return self

    def columns(self) -> list[str]:
        """The columns of the view's rows: group keys, window bounds (not for session windows: those have
        their own bounds too) and metrics."""
        return [*self.group_by, "window_start", "window_end", *self.metrics]


class GoldConfig(StrictModel):
    source: Literal["kafka", "bronze"] = Field(
        default="kafka", description="Where the gold intake reads records: Kafka (Kappa) or the bronze table.")
    views: dict[Identifier, GoldViewConfig] = Field(default_factory=dict)


# --------------------------------------------------------------------------- maintenance

class ClickHouseMaintenance(StrictModel):
    """How ``kappalake maintain`` keeps a gold table's data parts in check."""

    max_parts: int = Field(default=50, ge=2, description="Active parts per partition above which a merge is "
                                                        "asked for (OPTIMIZE without FINAL).")
    final_closed_partitions: bool = Field(
        default=True, description="Merge each closed day (no more on-time windows) into one part (OPTIMIZE FINAL), "
                                  "so FINAL reads of it do no merge work.")


class MaintenanceConfig(StrictModel):
    """Table maintenance for long-running jobs (``kappalake maintain``)."""

    compact_below_mb: int = Field(default=32, ge=1, description="Delta files smaller than this are compacted.")
    compact_min_files: int = Field(default=8, ge=2, description="A table (partition) with fewer small files is "
                                                               "left alone.")
    vacuum_retention: Duration = Field(default="7 days", validate_default=True, description="VACUUM removes files unreferenced this long.")
    min_vacuum_retention: Duration = Field(
        default="1 day", validate_default=True, description="Safety margin: a vacuum_retention below it is refused. It must exceed the "
                                     "longest a reader of the table (a lagging stream, a query, a backfill) may run "
                                     "on an older version, and the longest micro-batch (VACUUM also deletes files "
                                     "a running batch wrote and has not committed yet).")
    log_retention: Duration = Field(default="7 days", validate_default=True, description="delta.logRetentionDuration of new tables: commit "
                                                                 "files and time travel older than this go.")
    clickhouse: ClickHouseMaintenance = Field(default_factory=ClickHouseMaintenance)

    @model_validator(mode="after")
    def _check_retention(self) -> MaintenanceConfig:
        if parse_seconds(self.vacuum_retention) < parse_seconds(self.min_vacuum_retention):
            raise ValueError(f"vacuum_retention ({self.vacuum_retention}) is shorter than min_vacuum_retention "
                             f"({self.min_vacuum_retention}), the safety margin: a VACUUM that short could delete "
                             "files a lagging stream or a running query still reads")
        return self


# --------------------------------------------------------------------------- pipeline

#: Columns silver adds after the declared fields (expectations may check them too).
SILVER_LINEAGE = ("kafka_timestamp", "source_topic", "source_partition", "source_offset")


def _check_expectation_columns(config: QualityConfig, columns: list[str], where: str) -> None:
    """Every column an expectation names must exist in the table it checks."""
    for name, column in config.referenced_columns():
        if column not in columns:
            raise ValueError(f"{where}: expectation {name!r} checks column {column!r}, which the table does not "
                             f"have; its columns: {', '.join(columns)}")


class PipelineConfig(StrictModel):
    """One pipeline: a Kafka source, its payload, and the bronze/silver/dead-letter/gold outputs."""

    name: Identifier
    version: str = "1"
    description: str = ""
    generator: Literal["payments", "iot"] | None = None
    source: SourceConfig
    events: EventsConfig
    bronze: TableConfig = Field(default_factory=TableConfig)
    silver: SilverConfig = Field(default_factory=SilverConfig)
    dead_letter: DeadLetterConfig = Field(default_factory=DeadLetterConfig)
    gold: GoldConfig = Field(default_factory=GoldConfig)
    maintenance: MaintenanceConfig = Field(default_factory=MaintenanceConfig)
    erasure: ErasureConfig = Field(default_factory=ErasureConfig)

    def view_time(self, view: GoldViewConfig) -> str:
        """The event-time field a gold view windows on."""
        return view.time_column or self.events.time

    def view_watermark(self, view: GoldViewConfig) -> str:
        """The watermark delay of a gold view (its own, else silver's)."""
        return view.watermark or self.silver.watermark

    @model_validator(mode="after")
    def _check_references(self) -> PipelineConfig:
        fields = self.events.schema_
        for name in self.silver.pii.fields:
            if name not in fields:
                raise ValueError(f"silver.pii.fields: {name!r} is not declared in events.schema")
        for role in ("merge_key", "sequence_column"):
            value = getattr(self.silver, role)
            for name in ([value] if isinstance(value, str) else value or []):
                if name not in fields:
                    raise ValueError(f"silver.{role}: {name!r} is not declared in events.schema")
        if (self.silver.mode == "cdc") != (self.events.format == "debezium"):
            raise ValueError("silver.mode: 'cdc' reads Debezium change events and events.format 'debezium' needs "
                             f"it (mode is {self.silver.mode!r}, format {self.events.format!r})")
        if self.silver.mode == "cdc" and set(self.silver.merge_key or ()) & set(CDC_FIELDS):
            raise ValueError("silver.merge_key: name the table's primary key columns, not change metadata")
        _check_expectation_columns(self.silver.expectations, [*fields, *SILVER_LINEAGE], "silver.expectations")
        check_erasure(self)
        for view_name, view in self.gold.views.items():
            where = f"gold.views.{view_name}"
            added = check_enrichment(where, view.enrich, fields)
            for name in view.group_by:
                if name in added:
                    continue
                if name not in fields:
                    raise ValueError(f"{where}.group_by: {name!r} is not declared in events.schema")
                if not fields[name].required:
                    raise ValueError(f"{where}.group_by: {name!r} must be a required field (required: true) "
                                     "so every window row has its key")
            _check_expectation_columns(view.expectations, view.columns(), f"{where}.expectations")
            for metric_name, metric in view.metrics.items():
                if metric.column is not None and metric.column not in fields and metric.column not in added:
                    raise ValueError(f"{where}.metrics.{metric_name}.column: {metric.column!r} "
                                     "is not declared in events.schema")
            if view.time_column is not None:
                if view.time_column not in fields:
                    raise ValueError(f"{where}.time_column: {view.time_column!r} is not declared in events.schema")
                if fields[view.time_column].type != "timestamp":
                    raise ValueError(f"{where}.time_column: {view.time_column!r} must have type timestamp")
        tables = [view.clickhouse.table for view in self.gold.views.values()]
        for table in tables:
            if tables.count(table) > 1:
                raise ValueError(f"gold.views: ClickHouse table {table!r} is used by more than one view")
        return self


# --------------------------------------------------------------------------- targets

class KafkaTargetConfig(StrictModel):
    bootstrap_servers: str = Field(
        description="host:port list, or 'local-stack' for the embedded broker started by 'kappalake stack up'."
    )
    options: KafkaOptions = Field(default_factory=dict, description="kafka.* client settings (SASL/SSL).")


class StorageConfig(StrictModel):
    root: str = Field(description="Root for Delta tables and checkpoints (local path, s3a://, abfss://, dbfs:/).")


class ClickHouseConfig(StrictModel):
    dsn: str = Field(description="clickhouse-connect DSN: 'local-stack' (the endpoint of 'kappalake stack up'), "
                                 "https://user:pass@host:8443/db, or chdb:///abs/path (in-process, one process)")


class SparkConfig(StrictModel):
    master: str | None = Field(default=None, description="Spark master; None on managed runtimes.")
    jars: Literal["resolve", "provided"] = "provided"
    driver_memory: str | None = None
    shuffle_partitions: int | None = Field(default=None, ge=1)
    conf: dict[str, str] = Field(default_factory=dict)


class MonitoringConfig(StrictModel):
    port: int | None = Field(default=None, ge=0, le=65535,
                             description="Prometheus /metrics port of a running job; 0 picks a free one; none: off.")
    host: str = Field(default="127.0.0.1", description="Address the metrics endpoint binds (0.0.0.0 in containers).")
    clickhouse_table: bool = Field(default=True, description="Also write per-batch rows to kappalake_metrics.")


class TargetConfig(StrictModel):
    """Where a pipeline runs: brokers, storage, ClickHouse and Spark settings for one environment."""

    name: str
    kafka: KafkaTargetConfig
    storage: StorageConfig
    clickhouse: ClickHouseConfig
    spark: SparkConfig = Field(default_factory=SparkConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    schema_registry: SchemaRegistryConfig | None = Field(
        default=None, description="Schema Registry of Avro/Protobuf topics in the Confluent wire format.")
