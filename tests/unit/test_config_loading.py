"""Loading the shipped ``conf/`` and the mechanics behind it: target overlays, ``${VAR}`` interpolation,
duration normalisation and duplicate-key rejection. Environment variables always come through ``env=``.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from kappalake.config.durations import parse_seconds, to_spark_interval
from kappalake.config.interpolate import InterpolationError, interpolate, literal_secrets
from kappalake.config.loader import (
    TARGETS,
    deep_merge,
    load_pipeline,
    load_pipeline_file,
    load_project,
    load_target,
)
from kappalake.config.yamlio import read_yaml
from kappalake.errors import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"
PROJECT_FILE = CONF / "kappalake.yml"

CLOUD_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "broker-1:9093,broker-2:9093",
    "KAFKA_SASL_JAAS_CONFIG": "org.apache.kafka.common.security.plain.PlainLoginModule required;",
    "KAPPALAKE_STORAGE_ROOT": "s3a://lake-bucket/kappalake",
    "CLICKHOUSE_DSN": "https://clickhouse.example.com:8443/analytics",
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    """Everything any shipped target needs."""
    return {"KAPPALAKE_HOME": str(home), **CLOUD_ENV}


def _line_after(path: Path, anchor: str, text: str) -> int:
    """1-based number of the first line containing ``text`` after the line equal to ``anchor``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = lines.index(anchor)
    return next(n for n, line in enumerate(lines[start:], start + 1) if text in line)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


ORDERS = """
    name: orders
    source:
      subscribe: [orders]
      options:
        startingOffsets: earliest
        maxOffsetsPerTrigger: 1000
    events:
      id: order_id
      time: created_at
      schema:
        order_id: string
        customer: {type: string, required: true}
        region: {type: string, required: true}
        amount: double
        created_at: timestamp
    gold:
      views:
        spend_1m:
          window: {kind: tumbling, size: 1 minute}
          group_by: [customer, region]
          metrics:
            spend: {fn: sum, column: amount}
          clickhouse: {table: orders_spend_1m}
"""


# --------------------------------------------------------------------------- the shipped conf/

@pytest.mark.parametrize("target", TARGETS)
def test_shipped_project_loads_for_every_target(target: str, env: dict[str, str]) -> None:
    project = load_project(CONF, target, env=env)
    assert project.conf_dir == CONF
    assert project.target.name == target
    topics = {"iot": ["iot"], "merchants": ["pg.public.merchants"], "orders": ["pg.public.orders"],
              "payments": ["payments"], "payments_avro": ["payments_avro"], "payments_enriched": ["payments"],
              "payments_protobuf": ["payments_protobuf"]}
    assert sorted(project.pipelines) == sorted(topics)
    for name, pipeline in project.pipelines.items():
        assert pipeline.name == name
        assert pipeline.source.topics == topics[name]
    assert project.target.spark.conf == {"spark.sql.streaming.metricsEnabled": "true"}  # from defaults:


def test_local_target(home: Path) -> None:
    target = load_target(CONF, "local", env={"KAPPALAKE_HOME": str(home)})
    assert target.kafka.bootstrap_servers == "local-stack"
    assert target.kafka.options == {}
    assert target.storage.root == f"{home}/lake"
    assert target.clickhouse.dsn == "local-stack"  # ${CLICKHOUSE_DSN:-local-stack}: the stack's HTTP endpoint
    assert target.spark.master == "local[*]"
    assert target.spark.jars == "resolve"
    assert target.spark.driver_memory == "2g"


def test_local_target_prefers_clickhouse_dsn_from_env(home: Path) -> None:
    target = load_target(CONF, "local", env={"KAPPALAKE_HOME": str(home), "CLICKHOUSE_DSN": "chdb:///data/ch"})
    assert target.clickhouse.dsn == "chdb:///data/ch"


def test_local_target_defaults_kappalake_home_to_dot_kappalake(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    target = load_target(CONF, "local", env={})
    assert target.storage.root == f"{tmp_path.resolve()}/.kappalake/lake"
    assert target.clickhouse.dsn == "local-stack"


def test_databricks_target(env: dict[str, str]) -> None:
    target = load_target(CONF, "databricks", env=env)
    assert target.kafka.bootstrap_servers == "broker-1:9093,broker-2:9093"
    assert target.kafka.options == {
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "PLAIN",
        "kafka.sasl.jaas.config": CLOUD_ENV["KAFKA_SASL_JAAS_CONFIG"],
    }
    assert target.storage.root == "s3a://lake-bucket/kappalake"
    assert target.clickhouse.dsn == "https://clickhouse.example.com:8443/analytics"
    assert target.spark.master is None
    assert target.spark.jars == "provided"


def test_databricks_target_env_overrides_defaults(env: dict[str, str]) -> None:
    env = {**env, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}
    options = load_target(CONF, "databricks", env=env).kafka.options
    assert options["kafka.security.protocol"] == "SASL_PLAINTEXT"
    assert options["kafka.sasl.mechanism"] == "SCRAM-SHA-512"


def test_k8s_target(env: dict[str, str]) -> None:
    target = load_target(CONF, "k8s", env=env)
    assert target.kafka.bootstrap_servers == "broker-1:9093,broker-2:9093"
    assert target.kafka.options == {"kafka.security.protocol": "PLAINTEXT",
                                    "kafka.sasl.jaas.config": env["KAFKA_SASL_JAAS_CONFIG"]}
    assert target.storage.root == "s3a://lake-bucket/kappalake"
    assert target.spark.jars == "provided"
    assert target.spark.master is None


def test_k8s_target_does_not_need_sasl(env: dict[str, str]) -> None:
    env.pop("KAFKA_SASL_JAAS_CONFIG")
    assert load_target(CONF, "k8s", env=env).kafka.options == {"kafka.security.protocol": "PLAINTEXT"}


def test_k8s_target_takes_the_cluster_targets_sasl_ssl_settings_from_the_environment(env: dict[str, str]) -> None:
    """deploy/k8s sets these like 'stack up --profile cluster' does (README "Cluster target"): unset ones are
    left out, set ones reach the Kafka client exactly."""
    jaas = ('org.apache.kafka.common.security.scram.ScramLoginModule required username="kappalake" '
            'password="from-the-secret";')
    env.update(KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
               KAFKA_SASL_JAAS_CONFIG=jaas, KAFKA_SSL_TRUSTSTORE_TYPE="PEM",
               KAFKA_SSL_TRUSTSTORE_LOCATION="/etc/kappalake/kafka-tls/ca.pem")
    cluster = load_target(CONF, "cluster", env={**env, "KAPPALAKE_KAFKA_PASSWORD": "x"}).kafka.options
    k8s = load_target(CONF, "k8s", env=env).kafka.options
    assert set(k8s) == set(cluster)
    assert {k: v for k, v in k8s.items() if k != "kafka.ssl.truststore.location"} == {
        "kafka.security.protocol": "SASL_SSL", "kafka.sasl.mechanism": "SCRAM-SHA-512",
        "kafka.sasl.jaas.config": jaas, "kafka.ssl.truststore.type": "PEM"}


@pytest.mark.parametrize(("target", "variable", "key", "snippet"), [
    ("databricks", "KAFKA_BOOTSTRAP_SERVERS", "targets.databricks.kafka.bootstrap_servers", "bootstrap_servers:"),
    ("databricks", "KAFKA_SASL_JAAS_CONFIG", "targets.databricks.kafka.options.kafka.sasl.jaas.config",
     "kafka.sasl.jaas.config:"),
    ("databricks", "KAPPALAKE_STORAGE_ROOT", "targets.databricks.storage.root", "root:"),
    ("databricks", "CLICKHOUSE_DSN", "targets.databricks.clickhouse.dsn", "dsn:"),
    ("k8s", "KAFKA_BOOTSTRAP_SERVERS", "targets.k8s.kafka.bootstrap_servers", "bootstrap_servers:"),
    ("k8s", "KAPPALAKE_STORAGE_ROOT", "targets.k8s.storage.root", "root:"),
    ("k8s", "CLICKHOUSE_DSN", "targets.k8s.clickhouse.dsn", "dsn:"),
])
def test_missing_env_var_names_file_line_key_and_variable(target: str, variable: str, key: str, snippet: str,
                                                          env: dict[str, str]) -> None:
    env.pop(variable)
    with pytest.raises(ConfigError) as info:
        load_project(CONF, target, env=env)
    line = _line_after(PROJECT_FILE, f"  {target}:", snippet)
    assert str(info.value) == (f"{PROJECT_FILE}:{line}: {key}: environment variable {variable} is not set "
                               f"(referenced as ${{{variable}}})")


def test_payments_pipeline(env: dict[str, str]) -> None:
    payments = load_pipeline("payments", CONF, "local", env=env)
    assert payments.generator == "payments"
    assert payments.source.subscribe == ["payments"]
    assert payments.source.partitions == 3
    assert payments.source.options == {  # values become the strings Spark expects
        "startingOffsets": "earliest",
        "failOnDataLoss": "true",
        "maxOffsetsPerTrigger": "1000000",
        "kafka.isolation.level": "read_committed",
    }
    events = payments.events
    assert (events.id, events.time, events.key) == ("event_id", "event_time", "card_id")
    assert events.schema_["amount"].type == "decimal(12,2)"
    assert (events.schema_["amount"].min, events.schema_["amount"].max) == (0, 1000000)
    assert events.schema_["currency"].allowed == ["USD", "EUR", "GBP", "JPY", "BRL", "INR"]
    assert events.schema_["event_time"].type == "timestamp"
    assert payments.silver.mode == "append"
    assert payments.silver.watermark == "600 seconds"
    assert payments.silver.pii.fields == ["card_id"]
    assert payments.dead_letter.kafka_topic is None

    views = payments.gold.views
    assert list(views) == ["card_velocity_1m", "card_velocity_5m_sliding"]
    tumbling, sliding = views["card_velocity_1m"], views["card_velocity_5m_sliding"]
    assert (tumbling.window.kind, tumbling.window.size, tumbling.window.slide) == ("tumbling", "60 seconds", None)
    assert tumbling.watermark == "120 seconds"
    assert tumbling.group_by == ["card_id"]
    assert {n: (m.fn, m.column) for n, m in tumbling.metrics.items()} == {
        "txn_count": ("count", None),
        "amount_sum": ("sum", "amount"),
        "amount_max": ("max", "amount"),
        "merchants": ("approx_count_distinct", "merchant_id"),
        "countries": ("approx_count_distinct", "country"),
    }
    assert tumbling.clickhouse.table == "payments_card_velocity_1m"
    assert (sliding.window.kind, sliding.window.size, sliding.window.slide) == ("sliding", "300 seconds", "60 seconds")


def test_iot_pipeline(env: dict[str, str]) -> None:
    iot = load_pipeline("iot", CONF, "local", env=env)
    assert iot.generator == "iot"
    assert iot.events.key == "device_id"
    assert iot.events.schema_["sensor"].allowed == ["temperature", "humidity", "pressure", "vibration"]
    assert iot.silver.watermark == "60 seconds"
    assert iot.silver.pii.fields == []
    five_s, stddev = iot.gold.views["sensor_5s"], iot.gold.views["sensor_stddev_1m"]
    assert (five_s.window.kind, five_s.window.size) == ("tumbling", "5 seconds")
    assert five_s.watermark == "30 seconds"
    assert five_s.group_by == ["device_id", "sensor"]
    assert (stddev.window.size, stddev.window.slide) == ("60 seconds", "5 seconds")
    assert stddev.metrics["value_stddev"].fn == "stddev"
    assert stddev.metrics["value_stddev"].column == "value"


# --------------------------------------------------------------------------- target overlays

@pytest.mark.parametrize(("target", "expected"), [("local", "1000000"), ("databricks", "2000000"), ("k8s", "1000000")])
def test_payments_databricks_overlay_raises_max_offsets(target: str, expected: str, env: dict[str, str]) -> None:
    options = load_pipeline("payments", CONF, target, env=env).source.options
    assert options["maxOffsetsPerTrigger"] == expected
    # deep merge: the overlay's other siblings survive
    assert options["startingOffsets"] == "earliest"
    assert options["failOnDataLoss"] == "true"
    assert options["kafka.isolation.level"] == "read_committed"


def test_payments_overlay_touches_nothing_else(env: dict[str, str]) -> None:
    local = load_pipeline("payments", CONF, "local", env=env).model_dump()
    databricks = load_pipeline("payments", CONF, "databricks", env=env).model_dump()
    assert local["source"]["options"].pop("maxOffsetsPerTrigger") == "1000000"
    assert databricks["source"]["options"].pop("maxOffsetsPerTrigger") == "2000000"
    assert local == databricks


def test_iot_has_no_overlay(env: dict[str, str]) -> None:
    assert (load_pipeline("iot", CONF, "local", env=env)
            == load_pipeline("iot", CONF, "databricks", env=env)
            == load_pipeline("iot", CONF, "k8s", env=env))


def test_overlay_merges_mappings_and_replaces_lists(tmp_path: Path, env: dict[str, str]) -> None:
    path = _write(tmp_path / "pipelines" / "orders.yml", ORDERS + """
    targets:
      k8s:
        source:
          subscribe: [orders-eu, orders-us]
          options: {maxOffsetsPerTrigger: 50}
        gold:
          views:
            spend_1m:
              group_by: [region]
              window: {size: 5 minutes}
      databricks:
        silver: {watermark: 1 hour}
    """)
    k8s = load_pipeline_file(path, "k8s", env=env)
    assert k8s.source.subscribe == ["orders-eu", "orders-us"]
    assert k8s.source.options == {"startingOffsets": "earliest", "maxOffsetsPerTrigger": "50"}
    view = k8s.gold.views["spend_1m"]
    assert view.group_by == ["region"]
    assert (view.window.kind, view.window.size) == ("tumbling", "300 seconds")
    assert k8s.silver.watermark == "10 seconds"  # the databricks overlay is not applied

    local = load_pipeline_file(path, "local", env=env)
    assert local.source.subscribe == ["orders"]
    assert local.gold.views["spend_1m"].group_by == ["customer", "region"]
    assert load_pipeline_file(path, "databricks", env=env).silver.watermark == "3600 seconds"


def test_overlay_for_a_custom_target_defined_by_the_project(tmp_path: Path, env: dict[str, str]) -> None:
    _write(tmp_path / "kappalake.yml", """
    targets:
      local:
        kafka: {bootstrap_servers: local-stack}
        storage: {root: /tmp/lake}
        clickhouse: {dsn: "chdb:///tmp/ch"}
      staging:
        kafka: {bootstrap_servers: "staging-broker:9092"}
        storage: {root: "s3a://staging/kappalake"}
        clickhouse: {dsn: "chdb:///tmp/ch"}
    """)
    _write(tmp_path / "pipelines" / "orders.yml", ORDERS + """
    targets:
      staging:
        source: {partitions: 6}
    """)
    project = load_project(tmp_path, "staging", env=env)
    assert project.target.kafka.bootstrap_servers == "staging-broker:9092"
    assert project.pipelines["orders"].source.partitions == 6
    assert load_project(tmp_path, "local", env=env).pipelines["orders"].source.partitions == 3


def test_overlay_error_points_into_the_overlay(tmp_path: Path, env: dict[str, str]) -> None:
    path = _write(tmp_path / "orders.yml", ORDERS + """
    targets:
      k8s:
        source:
          partitions: many
    """)
    with pytest.raises(ConfigError) as info:
        load_pipeline_file(path, "k8s", env=env)
    line = _line_after(path, "targets:", "partitions: many")
    assert f"{path}:{line}: source.partitions: Input should be a valid integer" in str(info.value)


def test_base_error_points_into_the_base_even_with_an_overlay(tmp_path: Path, env: dict[str, str]) -> None:
    text = ORDERS.replace("group_by: [customer, region]", "group_by: [customer, regoin]") + """
    targets:
      k8s:
        gold:
          views:
            spend_1m: {clickhouse: {table: orders_k8s}}
    """
    path = _write(tmp_path / "orders.yml", text)
    for target in TARGETS:
        with pytest.raises(ConfigError) as info:
            load_pipeline_file(path, target, env=env)
        line = _line_after(path, "name: orders", "group_by: [customer, regoin]")
        assert (f"{path}:{line}: gold.views.spend_1m.group_by: 'regoin' is not declared in events.schema"
                in str(info.value)), target


def test_deep_merge() -> None:
    base = {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "list": [1, 2], "keep": "x"}
    overlay = {"a": {"c": {"d": 20}, "new": True}, "list": [3]}
    assert deep_merge(base, overlay) == {
        "a": {"b": 1, "c": {"d": 20, "e": 3}, "new": True}, "list": [3], "keep": "x",
    }
    assert base == {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "list": [1, 2], "keep": "x"}  # not mutated
    assert deep_merge({"a": {"b": 1}}, {"a": "scalar"}) == {"a": "scalar"}
    assert deep_merge({"a": "scalar"}, {"a": {"b": 1}}) == {"a": {"b": 1}}


# --------------------------------------------------------------------------- interpolation

@pytest.mark.parametrize(("text", "env", "expected"), [
    ("${A}", {"A": "1"}, "1"),
    ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
    ("${A}/${B}", {"A": "x", "B": "y"}, "x/y"),
    ("${A:-fallback}", {}, "fallback"),
    ("${A:-fallback}", {"A": "set"}, "set"),
    ("${A:-fallback}", {"A": ""}, "fallback"),  # empty counts as unset, as in the shell
    ("${A:-}", {}, ""),
    ("${A:-${B}}", {"B": "b"}, "b"),
    ("${A:-${B}}", {"A": "a", "B": "b"}, "a"),
    ("${A:-${B:-c}}", {}, "c"),
    ("${A:-x-${B:-y}-z}/tail", {}, "x-y-z/tail"),
    ("chdb://${HOME_DIR:-/tmp}/ch", {"HOME_DIR": "/data"}, "chdb:///data/ch"),
    ("no references", {}, "no references"),
    ("$HOME and $ {A}", {}, "$HOME and $ {A}"),
])
def test_interpolate_strings(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected


def test_interpolate_walks_mappings_and_lists_and_keeps_other_types() -> None:
    data = {"a": ["${X}", 1, True, None], "b": {"c": "${Y:-2}", "d": 1.5}}
    assert interpolate(data, {"X": "x"}) == {"a": ["x", 1, True, None], "b": {"c": "2", "d": 1.5}}


@pytest.mark.parametrize(("text", "fragments"), [
    ("${MISSING}", ("environment variable MISSING is not set", "(referenced as ${MISSING})")),
    ("${A:-${MISSING}}", ("environment variable MISSING is not set",)),
    ("${1BAD}", ("malformed reference", "expected ${NAME} or ${NAME:-default}")),
    ("${A", ("malformed reference",)),
    ("${A:-x", ("unclosed reference",)),
])
def test_interpolate_errors_carry_the_key_path(text: str, fragments: tuple[str, ...]) -> None:
    with pytest.raises(InterpolationError) as info:
        interpolate({"outer": [{"inner": text}]}, {})
    assert info.value.key_path == ("outer", 0, "inner")
    for fragment in fragments:
        assert fragment in str(info.value)


def test_pipeline_values_are_interpolated(tmp_path: Path, env: dict[str, str]) -> None:
    text = (ORDERS.replace("subscribe: [orders]", "subscribe: ${ORDERS_TOPIC:-orders}")
            .replace("name: orders\n",
                     "name: orders\n    silver:\n      watermark: ${WATERMARK:-${DEFAULT_WATERMARK}}\n")
            .replace("maxOffsetsPerTrigger: 1000", "maxOffsetsPerTrigger: ${MAX_OFFSETS:-1000}")
            + "    bronze: {path: '${LAKE}/orders/bronze'}\n")
    path = _write(tmp_path / "orders.yml", text)
    config = load_pipeline_file(path, "local", env={**env, "DEFAULT_WATERMARK": "2 minutes", "LAKE": "/lake"})
    assert config.source.subscribe == ["orders"]
    assert config.source.options["maxOffsetsPerTrigger"] == "1000"
    assert config.silver.watermark == "120 seconds"
    assert config.bronze.path == "/lake/orders/bronze"

    config = load_pipeline_file(path, "local", env={**env, "ORDERS_TOPIC": "a, b", "WATERMARK": "45s",
                                                    "MAX_OFFSETS": "7", "LAKE": "s3a://x"})
    assert config.source.subscribe == ["a", "b"]
    assert config.source.options["maxOffsetsPerTrigger"] == "7"
    assert config.silver.watermark == "45 seconds"

    with pytest.raises(ConfigError) as info:
        load_pipeline_file(path, "local", env={**env, "LAKE": "/lake"})
    line = _line_after(path, "name: orders", "watermark:")
    assert str(info.value) == (f"{path}:{line}: silver.watermark: environment variable DEFAULT_WATERMARK is not set "
                               "(referenced as ${DEFAULT_WATERMARK})")


def test_missing_env_var_in_a_list_item(tmp_path: Path, env: dict[str, str]) -> None:
    path = _write(tmp_path / "orders.yml", ORDERS.replace("subscribe: [orders]", """subscribe:
        - orders
        - ${EXTRA_TOPIC}"""))
    with pytest.raises(ConfigError) as info:
        load_pipeline_file(path, "local", env=env)
    line = _line_after(path, "name: orders", "- ${EXTRA_TOPIC}")
    assert f"{path}:{line}: source.subscribe.1: environment variable EXTRA_TOPIC is not set" in str(info.value)


def test_missing_env_var_in_an_overlay(tmp_path: Path, env: dict[str, str]) -> None:
    path = _write(tmp_path / "orders.yml", ORDERS + """
    targets:
      k8s:
        source:
          subscribe: ${K8S_TOPIC}
    """)
    assert load_pipeline_file(path, "local", env=env).source.subscribe == ["orders"]
    with pytest.raises(ConfigError) as info:
        load_pipeline_file(path, "k8s", env=env)
    line = _line_after(path, "targets:", "subscribe: ${K8S_TOPIC}")
    assert f"{path}:{line}: source.subscribe: environment variable K8S_TOPIC is not set" in str(info.value)


def test_secret_may_come_from_a_nested_reference(tmp_path: Path, env: dict[str, str]) -> None:
    text = ORDERS.replace("startingOffsets: earliest",
                          "kafka.sasl.jaas.config: ${ORDERS_JAAS:-${KAFKA_SASL_JAAS_CONFIG}}")
    path = _write(tmp_path / "orders.yml", text)
    config = load_pipeline_file(path, "local", env=env)
    assert config.source.options["kafka.sasl.jaas.config"] == CLOUD_ENV["KAFKA_SASL_JAAS_CONFIG"]


@pytest.mark.parametrize(("data", "found"), [
    ({"kafka.sasl.jaas.config": "${JAAS}"}, []),
    ({"kafka.sasl.jaas.config": "${JAAS:-${OTHER_JAAS}}"}, []),
    ({"password": "${PASS:-${OTHER:-${THIRD}}}"}, []),
    ({"dsn": "https://user:${CH_PASSWORD}@host:8443/db"}, []),
    ({"dsn": "chdb:///tmp/ch", "token_count": 3.5}, [("token_count",)]),
    ({"kafka.sasl.jaas.config": "PlainLoginModule required password=\"x\";"}, [("kafka.sasl.jaas.config",)]),
    ({"kafka.sasl.jaas.config": "${A}${B}"}, [("kafka.sasl.jaas.config",)]),
    ({"kafka.sasl.jaas.config": "${A:-${B}}tail"}, [("kafka.sasl.jaas.config",)]),
    ({"outer": {"dsn": "https://user:pass@host/db"}}, [("outer", "dsn")]),
    ({"list": [{"api_key": "abc123"}]}, [("list", 0, "api_key")]),
])
def test_literal_secrets(data: dict, found: list[tuple]) -> None:
    assert literal_secrets(data) == found


# --------------------------------------------------------------------------- durations

@pytest.mark.parametrize(("text", "interval"), [
    ("1 minute", "60 seconds"),
    ("10 minutes", "600 seconds"),
    ("5s", "5 seconds"),
    ("5 sec", "5 seconds"),
    ("30 Seconds", "30 seconds"),
    ("  2 mins ", "120 seconds"),
    ("1 hour", "3600 seconds"),
    ("2h", "7200 seconds"),
    ("1 day", "86400 seconds"),
    ("500 ms", "500 milliseconds"),
    ("1.5 seconds", "1500 milliseconds"),
    ("2000 milliseconds", "2 seconds"),
])
def test_durations_normalise_to_spark_intervals(text: str, interval: str) -> None:
    assert to_spark_interval(text) == interval


@pytest.mark.parametrize(("text", "message"), [
    ("10", "expected a duration such as"),
    ("ten seconds", "expected a duration such as"),
    ("5 fortnights", "expected a duration such as"),
    ("-5 seconds", "expected a duration such as"),
    ("", "expected a duration such as"),
    ("0 seconds", "expected a positive duration"),
])
def test_bad_durations(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_seconds(text)


def test_parse_seconds() -> None:
    assert parse_seconds("1 minute") == 60
    assert parse_seconds("250 ms") == 0.25


def test_window_durations_are_normalised_and_compared(tmp_path: Path, env: dict[str, str]) -> None:
    ok = ORDERS.replace("{kind: tumbling, size: 1 minute}", "{kind: sliding, size: 2 minutes, slide: 30s}")
    view = load_pipeline_file(_write(tmp_path / "a" / "orders.yml", ok), "local", env=env).gold.views["spend_1m"]
    assert (view.window.size, view.window.slide) == ("120 seconds", "30 seconds")

    bad = ORDERS.replace("{kind: tumbling, size: 1 minute}", "{kind: sliding, size: 1 minute, slide: 2 minutes}")
    path = _write(tmp_path / "b" / "orders.yml", bad)
    with pytest.raises(ConfigError, match=r"slide \(120 seconds\) must not exceed size \(60 seconds\)"):
        load_pipeline_file(path, "local", env=env)


# --------------------------------------------------------------------------- duplicate keys

def test_duplicate_key_in_pipeline_is_rejected_with_both_lines(tmp_path: Path, env: dict[str, str]) -> None:
    path = _write(tmp_path / "orders.yml", ORDERS.replace("subscribe: [orders]\n",
                                                          "subscribe: [orders]\n      subscribe: [other]\n"))
    first = _line_after(path, "name: orders", "subscribe: [orders]")
    second = _line_after(path, "name: orders", "subscribe: [other]")
    with pytest.raises(ConfigError) as info:
        load_pipeline_file(path, "local", env=env)
    assert str(info.value) == f"{path}:{second}: invalid YAML: duplicate key 'subscribe' (first at line {first})"


def test_duplicate_top_level_key_is_rejected(tmp_path: Path, env: dict[str, str]) -> None:
    path = _write(tmp_path / "orders.yml", ORDERS + "    name: orders\n")
    last = len(path.read_text(encoding="utf-8").splitlines())
    with pytest.raises(ConfigError) as info:
        load_pipeline_file(path, "local", env=env)
    assert str(info.value) == f"{path}:{last}: invalid YAML: duplicate key 'name' (first at line 1)"


def test_duplicate_key_in_flow_mapping_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.yml", "a: 1\nb: {c: 1, c: 2}\n")
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert str(info.value) == f"{path}:2: invalid YAML: duplicate key 'c' (first at line 2)"


def test_duplicate_target_in_project_file_is_rejected(tmp_path: Path, env: dict[str, str]) -> None:
    shutil.copytree(CONF, tmp_path / "conf")
    project = tmp_path / "conf" / "kappalake.yml"
    project.write_text(project.read_text(encoding="utf-8") + "\n  local:\n    kafka: {bootstrap_servers: x}\n",
                       encoding="utf-8")
    first = _line_after(project, "targets:", "  local:")
    second = len(project.read_text(encoding="utf-8").splitlines()) - 1
    with pytest.raises(ConfigError) as info:
        load_project(tmp_path / "conf", "local", env=env)
    assert str(info.value) == f"{project}:{second}: invalid YAML: duplicate key 'local' (first at line {first})"


def test_same_key_in_different_mappings_is_fine(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.yml", "a: {name: 1}\nb: {name: 2}\nname: 3\n")
    assert read_yaml(path).data == {"a": {"name": 1}, "b": {"name": 2}, "name": 3}


# --------------------------------------------------------------------------- line lookups

def test_line_of_deepest_and_exact() -> None:
    doc = read_yaml(CONF / "pipelines" / "payments.yml")
    options_line = _line_after(doc.path, "source:", "options:")
    assert doc.line_of(("source", "options")) == options_line
    assert doc.line_of(("source", "options", "nope")) == options_line
    assert doc.line_of(("source", "options", "nope"), exact=True) is None
    assert doc.line_of(("gold", "views", "card_velocity_1m", "group_by", 0)) == _line_after(
        doc.path, "    card_velocity_1m:", "group_by:")
    assert doc.line_of(("nope",)) is None
