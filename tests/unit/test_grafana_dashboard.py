"""Grafana provisioning (``deploy/grafana``): the dashboard JSON is well formed and every query targets the
provisioned ClickHouse data source; the provisioning files parse and hold no secrets; and every panel query
(and the variable query), with the plugin's macros expanded as the plugin expands them, runs on the
session's real ClickHouse over ``kappalake_metrics`` rows and gold tables written the way kappalake writes
them (Spark view result schema -> GoldTable -> GoldSink), in a database of its own.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from kappalake.io.clickhouse.client import ClickHouse
from kappalake.io.clickhouse.schema import ensure_table
from kappalake.io.clickhouse.sink import GoldSink
from kappalake.ops.metrics_table import TABLE as METRICS_TABLE
from kappalake.ops.metrics_table import ensure_metrics_table, metrics_row, write_metrics
from kappalake.ops.monitor import layer_of

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "kappalake.json"
DATASOURCES_FILE = GRAFANA / "provisioning" / "datasources" / "clickhouse.yml"
PROVIDERS_FILE = GRAFANA / "provisioning" / "dashboards" / "kappalake.yml"
README = GRAFANA / "README.md"

PLUGIN = "grafana-clickhouse-datasource"
#: The plugin's macros (pkg/macros/macros.go, plus the frontend's $__conditionalAll).
PLUGIN_MACROS = {"fromTime", "toTime", "fromTime_ms", "toTime_ms", "timeFilter", "timeFilter_ms", "dateFilter",
                 "dateTimeFilter", "dt", "timeInterval", "timeInterval_ms", "interval_s", "conditionalAll"}
#: Tables the dashboard reads: kappalake_metrics and the gold tables of the shipped views.
GOLD_TABLES = {"payments_card_velocity_1m", "payments_card_velocity_5m", "iot_sensor_5s", "iot_sensor_stddev_1m"}
ENV_REF = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}|\$__env\{([A-Z][A-Z0-9_]*)\}")
SECRET_KEY = re.compile(r"password|secret|token|credential|private|tlsclientkey|apikey", re.IGNORECASE)

#: The time range, interval and variable values the test expands the queries with.
FROM = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
TO = datetime(2025, 3, 1, 11, 0, tzinfo=timezone.utc)
INTERVAL_S = 60
#: Multi-value variables reach the SQL as the plugin formats arrays: 'a','b' (one value: 'a').
VARIABLES = {"pipeline": "'payments'"}
START = datetime(2025, 3, 1, 10, 0, tzinfo=timezone.utc)  # the test data spans START .. START + 7 min


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """All panels, including those nested in collapsed rows."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def _targets() -> list[tuple[str, dict[str, Any]]]:
    return [(panel["title"], target) for panel in _panels(_dashboard()) for target in panel.get("targets", [])]


def _datasource() -> dict[str, Any]:
    sources = yaml.safe_load(DATASOURCES_FILE.read_text())["datasources"]
    assert len(sources) == 1
    return sources[0]


# --------------------------------------------------------------------------- macros

def expand(sql: str) -> str:
    """``sql`` as ClickHouse receives it: Grafana replaces the template variables in the browser, then the
    plugin's backend expands its macros (the same text as its pkg/macros/macros.go)."""

    def variable(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in VARIABLES:
            raise AssertionError(f"template variable ${name} has no test value")
        return VARIABLES[name]

    sql = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(?!__)([A-Za-z]\w*)", variable, sql)
    start, end = int(FROM.timestamp()), int(TO.timestamp())
    start_ms, end_ms = start * 1000, end * 1000
    sql = re.sub(r"\$__timeFilter\(\s*([^()]+?)\s*\)",
                 lambda m: f"{m[1]} >= toDateTime({start}) AND {m[1]} <= toDateTime({end})", sql)
    sql = re.sub(r"\$__timeFilter_ms\(\s*([^()]+?)\s*\)",
                 lambda m: f"{m[1]} >= fromUnixTimestamp64Milli({start_ms}) AND "
                           f"{m[1]} <= fromUnixTimestamp64Milli({end_ms})", sql)
    sql = re.sub(r"\$__timeInterval\(\s*([^()]+?)\s*\)",
                 lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL {INTERVAL_S} second)", sql)
    sql = re.sub(r"\$__fromTime\b", f"toDateTime({start})", sql)
    sql = re.sub(r"\$__toTime\b", f"toDateTime({end})", sql)
    sql = re.sub(r"\$__fromTime_ms\b", f"fromUnixTimestamp64Milli({start_ms})", sql)
    sql = re.sub(r"\$__toTime_ms\b", f"fromUnixTimestamp64Milli({end_ms})", sql)
    sql = re.sub(r"\$__interval_s\b", str(INTERVAL_S), sql)
    assert "$" not in sql, f"a macro or variable was not expanded:\n{sql}"
    return sql


def test_expand_writes_what_the_plugin_writes() -> None:
    start, end = int(FROM.timestamp()), int(TO.timestamp())
    assert expand("WHERE $__timeFilter(ts) AND pipeline IN (${pipeline}) AND p = $pipeline") == (
        f"WHERE ts >= toDateTime({start}) AND ts <= toDateTime({end}) AND pipeline IN ('payments') "
        "AND p = 'payments'")
    assert expand("$__timeInterval(ts), INTERVAL $__interval_s second, $__fromTime, $__toTime_ms") == (
        f"toStartOfInterval(toDateTime(ts), INTERVAL {INTERVAL_S} second), INTERVAL {INTERVAL_S} second, "
        f"toDateTime({start}), fromUnixTimestamp64Milli({end * 1000})")


# --------------------------------------------------------------------------- dashboard structure

def test_dashboard_identity_and_layout() -> None:
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 39
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["title"] and dashboard.get("id") is None  # provisioned: Grafana assigns the id
    panels = _panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    boxes = []
    for panel in panels:
        pos = panel.get("gridPos")
        assert pos, f"panel {panel['title']!r} has no gridPos"
        assert all(isinstance(pos.get(k), int) for k in ("x", "y", "w", "h")), panel["title"]
        assert 0 <= pos["x"] and pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        boxes.append((panel["title"], pos))
    for i, (title, a) in enumerate(boxes):
        for other, b in boxes[i + 1:]:
            overlap = (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                       and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])
            assert not overlap, f"panels {title!r} and {other!r} overlap"


def test_every_query_targets_the_provisioned_datasource_with_raw_sql() -> None:
    uid = _datasource()["uid"]
    expected = {"type": PLUGIN, "uid": uid}
    queried = [panel for panel in _panels(_dashboard()) if panel["type"] != "row"]
    assert queried
    for panel in queried:
        assert panel.get("datasource") == expected, panel["title"]
        targets = panel.get("targets") or []
        assert targets, f"panel {panel['title']!r} has no query"
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for target in targets:
            assert target["datasource"] == expected, panel["title"]
            assert target["editorType"] == "sql", panel["title"]
            assert target["rawSql"].strip(), panel["title"]
            # the plugin's formats: 0 time series, 1 table
            assert (target["format"], target["queryType"]) in {(0, "timeseries"), (1, "table")}, panel["title"]
            if target["format"] == 0:
                assert panel["type"] == "timeseries", panel["title"]


def test_variables_are_defined_and_macros_are_the_plugins() -> None:
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    pipeline = variables["pipeline"]
    assert pipeline["type"] == "query"
    assert pipeline["datasource"] == {"type": PLUGIN, "uid": _datasource()["uid"]}
    assert pipeline["query"] == "SELECT DISTINCT pipeline FROM kappalake_metrics"
    assert pipeline["multi"] and pipeline["includeAll"]  # IN (${pipeline}) takes the plugin's 'a','b' list
    used: set[str] = set()
    for title, target in _targets():
        sql = target["rawSql"]
        refs = {a or b for a, b in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(?!__)([A-Za-z]\w*)", sql)}
        assert refs <= set(variables), f"{title!r} uses undefined variables {refs - set(variables)}"
        used |= refs
        macros = set(re.findall(r"\$__(\w+)", sql))
        assert macros <= PLUGIN_MACROS, f"{title!r} uses unknown macros {macros - PLUGIN_MACROS}"
    assert used == set(variables), "every variable filters at least one panel"


def test_the_dashboard_covers_metrics_and_every_reference_gold_view() -> None:
    sqls = [target["rawSql"] for _, target in _targets()]
    metrics_sql = "\n".join(s for s in sqls if METRICS_TABLE in s)
    for column in ("input_rows_per_second", "processed_rows_per_second", "batch_duration_ms", "consumer_lag",
                   "latency_p95_s", "latency_max_s", "dead_letter_rows", "late_rows", "state_rows"):
        assert column in metrics_sql, column
    for table in GOLD_TABLES:
        reads = [s for s in sqls if re.search(rf"\b{table}\b", s)]
        assert reads, f"no panel reads {table}"
        assert all(re.search(rf"FROM {table} FINAL", s) for s in reads), f"{table} is read without FINAL"


# --------------------------------------------------------------------------- provisioning files

def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")
    else:
        yield path, node


def test_datasource_takes_every_connection_setting_from_the_environment() -> None:
    source = _datasource()
    assert source["type"] == PLUGIN
    assert source["uid"] == "kappalake-clickhouse"
    settings = {**source["jsonData"], **{f"secure:{k}": v for k, v in source["secureJsonData"].items()}}
    for key in ("host", "port", "protocol", "secure", "username", "defaultDatabase", "secure:password"):
        value = settings.get(key)
        assert isinstance(value, str) and ENV_REF.fullmatch(value), f"{key} is {value!r}, not ${{VAR}}"
    for path, value in _walk(source):
        if SECRET_KEY.search(path) or path.startswith("secureJsonData"):
            assert isinstance(value, str) and ENV_REF.fullmatch(value), f"{path} holds a literal value"
    names = {a or b for a, b in ENV_REF.findall(DATASOURCES_FILE.read_text())}
    readme = README.read_text()
    assert {n for n in names if n not in readme} == set(), "every environment variable is documented"


def test_no_provisioning_file_holds_a_literal_secret() -> None:
    for path in (DATASOURCES_FILE, PROVIDERS_FILE):
        for key, value in _walk(yaml.safe_load(path.read_text())):
            if SECRET_KEY.search(key):
                assert isinstance(value, str) and ENV_REF.fullmatch(value), f"{path.name}: {key} = {value!r}"
        assert not re.search(r"(?i)://[^/\s:@]+:[^@\s$]+@", path.read_text()), f"{path.name}: URL with password"


def test_dashboard_provider_loads_the_dashboards_folder() -> None:
    providers = yaml.safe_load(PROVIDERS_FILE.read_text())["providers"]
    assert len(providers) == 1
    provider = providers[0]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert path.startswith("/")
    # the README mounts the repository's dashboards folder (and provisioning) where the files point
    readme = README.read_text()
    assert f"deploy/grafana/dashboards:{path}" in readme
    assert "deploy/grafana/provisioning:/etc/grafana/provisioning" in readme


# --------------------------------------------------------------------------- queries on ClickHouse

def _progress(name: str, batch: int, at: datetime, rows: int, *, kafka: bool, state_rows: int) -> dict[str, Any]:
    """A StreamingQueryProgress as ``json.loads(query.lastProgress.json())`` gives it."""
    stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if kafka:
        end = {"0": 1000 * (batch + 1), "1": 900 * (batch + 1)}
        source = {"description": "KafkaV2[Subscribe[topic]]", "startOffset": json.dumps({"topic": {"0": 0, "1": 0}}),
                  "endOffset": json.dumps({"topic": end}),
                  "latestOffset": json.dumps({"topic": {p: o + 50 * (3 - batch) for p, o in end.items()}}),
                  "numInputRows": rows}
    else:
        source = {"description": "DeltaSource[bronze]", "startOffset": None,
                  "endOffset": {"sourceVersion": 1, "reservoirVersion": batch + 1, "index": -1},
                  "latestOffset": None, "numInputRows": rows}
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, name)), "runId": "run-1", "name": name, "timestamp": stamp,
        "batchId": batch, "batchDuration": 800 + 100 * batch, "numInputRows": rows,
        "inputRowsPerSecond": rows / 30, "processedRowsPerSecond": rows / 0.8,
        "durationMs": {"triggerExecution": 800 + 100 * batch},
        "eventTime": {"watermark": (at - timedelta(minutes=2)).isoformat().replace("+00:00", "Z")},
        "stateOperators": [{"numRowsTotal": state_rows, "memoryUsedBytes": 4096 * state_rows,
                            "numRowsDroppedByWatermark": batch}] if state_rows else [],
        "sources": [source],
    }


def metric_rows(pipeline: str, views: list[str]) -> list[dict[str, Any]]:
    """Three batches of each query of ``pipeline`` as RunMonitor records them."""
    queries = [f"{pipeline}.bronze", f"{pipeline}.silver", f"{pipeline}.gold", *(f"{pipeline}.gold.{v}" for v in views)]
    rows = []
    for q, name in enumerate(queries):
        layer = layer_of(name)
        for batch in range(3):
            at = START + timedelta(seconds=30 * batch + q)
            counts = {"silver": {"dead_letter_rows": batch + 1}, "gold": {"late_rows": 2 * batch}}.get(layer, {})
            if name != f"{pipeline}.gold":
                counts = {k: v for k, v in counts.items() if k != "late_rows"}
            latency = {} if layer == "bronze" else {"p50": 1.5 + batch, "p95": 4.0 + batch, "max": 9.0 + batch}
            progress = _progress(name, batch, at, 1000 + 10 * batch, kafka=name.count(".") == 1,
                                 state_rows=0 if layer == "bronze" else 500 + batch)
            rows.append(metrics_row(pipeline, layer, progress, counts, latency))
    return rows


def payments_events() -> list[dict[str, Any]]:
    """Seven minutes of card payments; card c-001 is the busiest in every minute."""
    events = []
    for minute in range(7):
        for k, card in enumerate(("c-001", "c-002", "c-003", "c-004")):
            for j in range(4 - k):
                events.append({"event_id": f"p-{minute}-{k}-{j}", "card_id": card,
                               "merchant_id": f"m-{(minute + j) % 3}", "amount": round(10 + 7.25 * j + k, 2),
                               "currency": "EUR", "country": ("GB", "DE", "FR")[j % 3],
                               "event_time": START + timedelta(minutes=minute, seconds=10 * j + k)})
    return events


def iot_events() -> list[dict[str, Any]]:
    """Two minutes of readings, every 2 seconds, of two devices with four sensors each."""
    events = []
    for step in range(60):
        for device in ("d-1", "d-2"):
            for s, sensor in enumerate(("temperature", "humidity", "pressure", "vibration")):
                events.append({"event_id": f"i-{step}-{device}-{sensor}", "device_id": device, "sensor": sensor,
                               "value": round(20 * (s + 1) + math.sin(step / 3 + s), 4),
                               "event_time": START + timedelta(seconds=2 * step)})
    return events


def write_gold_views(spark, ch: ClickHouse, ctx, events: list[dict[str, Any]]) -> None:
    """Kafka-shaped records -> parse -> silver rows -> each view's aggregate -> its table, as the gold job
    does (one batch; nothing is late on a first batch)."""
    from pyspark.sql import functions as F

    from kappalake.pipelines.gold import gold_tables, intake_rows, stamp
    from kappalake.transforms.parse import parse_events

    def record(offset: int, event: dict[str, Any]) -> tuple:
        payload = {k: (v.isoformat().replace("+00:00", "Z") if isinstance(v, datetime) else v)
                   for k, v in event.items()}
        key = str(event[ctx.pipeline.events.key]).encode()
        return (key, json.dumps(payload).encode(), ctx.pipeline.name, offset % 3, offset,
                event[ctx.pipeline.events.time] + timedelta(seconds=1))

    records = spark.createDataFrame(
        [record(i, e) for i, e in enumerate(events)],
        "key binary, value binary, topic string, partition int, offset long, kafka_timestamp timestamp")
    parsed = parse_events(records, ctx.pipeline.events)
    invalid = parsed.where(F.size("_errors") > 0).select("_errors").limit(3).collect()
    assert not invalid, f"test events are invalid: {invalid}"
    events_df = stamp(intake_rows(parsed, ctx, None), ctx, {})
    for name, view in ctx.pipeline.gold.views.items():
        table, _, frame = gold_tables(events_df, ctx, view)  # the public layout start_gold creates
        ensure_table(ch, table)
        sink = GoldSink(ch, table)
        sink.bind(f"grafana-test-{name}")
        sink(frame, 0)


@pytest.fixture(scope="module")
def grafana_db(clickhouse, spark, local_target, test_home) -> Iterator[ClickHouse]:
    """A database of its own on the session's ClickHouse holding kappalake_metrics and the four gold tables
    under their real names; queried through a second client whose default database it is (on chDB: a second
    handle on the same directory)."""
    import clickhouse_connect

    from kappalake.config.loader import load_pipeline
    from kappalake.runtime.context import RunContext

    database = f"kl_grafana_test_{uuid.uuid4().hex[:8]}"
    clickhouse.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    client = clickhouse_connect.get_client(dsn=clickhouse.dsn, database=database)
    ch = ClickHouse(client, clickhouse.dsn)
    try:
        assert ch.rows("SELECT currentDatabase()") == [(database,)]
        ensure_metrics_table(ch)
        for name, events in (("payments", payments_events()), ("iot", iot_events())):
            pipeline = load_pipeline(name, CONF)
            write_metrics(ch, metric_rows(name, list(pipeline.gold.views)))
            write_gold_views(spark, ch, RunContext(pipeline, local_target, test_home), events)
        tables = {r[0] for r in ch.rows("SELECT name FROM system.tables WHERE database = currentDatabase()")}
        assert tables == GOLD_TABLES | {METRICS_TABLE}
        yield ch
    finally:
        client.close()
        clickhouse.command(f"DROP DATABASE IF EXISTS `{database}`")


def run(ch: ClickHouse, sql: str) -> tuple[list[str], list[str], list[tuple[Any, ...]]]:
    with ch.lock:
        result = ch.client.query(sql)
    return list(result.column_names), [t.name for t in result.column_types], list(result.result_rows)


@pytest.mark.parametrize(("title", "target"), _targets(), ids=[f"{t}/{q['refId']}" for t, q in _targets()])
def test_panel_query_runs_on_clickhouse(grafana_db: ClickHouse, title: str, target: dict[str, Any]) -> None:
    names, types, rows = run(grafana_db, expand(target["rawSql"]))
    assert rows, f"{title!r} returned no rows"
    if target["format"] == 0:  # time series: a leading time column, ascending (the plugin pivots long frames)
        assert names[0] == "time" and types[0].startswith("DateTime"), (title, names, types)
        times = [row[0] for row in rows]
        assert times == sorted(times), title
        assert len(names) >= 2, title


def test_variable_query_lists_the_pipelines(grafana_db: ClickHouse) -> None:
    query = next(v for v in _dashboard()["templating"]["list"] if v["name"] == "pipeline")["query"]
    _, _, rows = run(grafana_db, expand(query))
    assert sorted(r[0] for r in rows) == ["iot", "payments"]


def _panel_rows(ch: ClickHouse, title: str) -> list[dict[str, Any]]:
    target = next(t for name, t in _targets() if name == title)
    names, _, rows = run(ch, expand(target["rawSql"]))
    return [dict(zip(names, row, strict=True)) for row in rows]


def _utc(value: datetime) -> datetime:
    """clickhouse-connect returns the UTC columns' values as naive UTC datetimes."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def test_panels_show_what_the_data_holds(grafana_db: ClickHouse) -> None:
    top = _panel_rows(grafana_db, "Top cards, latest 1-minute window")
    assert [(r["card_id"], r["txn_count"]) for r in top] == [("c-001", 4), ("c-002", 3), ("c-003", 2), ("c-004", 1)]
    assert {_utc(r["window_start"]) for r in top} == {START + timedelta(minutes=6)}
    sliding = _panel_rows(grafana_db, "Top cards, latest 5-minute sliding window")
    # the latest 5-minute window ending by 11:00 starts at 10:06 and holds the last minute of events
    assert [(r["card_id"], r["txn_count"]) for r in sliding][:1] == [("c-001", 4)]
    assert {_utc(r["window_start"]) for r in sliding} == {START + timedelta(minutes=6)}
    dead = _panel_rows(grafana_db, "Dead letters per interval")
    assert sum(r["dead_letters"] for r in dead) == 1 + 2 + 3  # payments.silver only
    sensors = _panel_rows(grafana_db, "Average value by sensor")
    assert {r["sensor"] for r in sensors} == {"temperature", "humidity", "pressure", "vibration"}
    lag = _panel_rows(grafana_db, "Consumer lag by query")
    assert {r["query"] for r in lag} == {"payments.bronze", "payments.silver", "payments.gold"}
