"""What the notebooks in this folder share: where the data dir and config are, the PII key, a RunContext,
the SparkSession, the topic's size and a gold view's current rows.

Jupyter starts a notebook's kernel in ``notebooks/``, so relative locations are taken from the repository
root here, as the CLI takes them when run from there:

* ``KAPPALAKE_CONF`` defaults to ``<repo>/conf``;
* ``KAPPALAKE_HOME`` defaults to ``<repo>/.kappalake`` (the demo's data dir); a relative value is read
  from the repository root. ``KAPPALAKE_CACHE`` (the jar cache) is left as given.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

from kappalake.config.loader import default_conf_dir, default_target, load_pipeline, load_target
from kappalake.io.kafka.admin import end_offsets
from kappalake.runtime.context import RunContext
from kappalake.runtime.paths import HomeLayout

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

    from kappalake.io.clickhouse.client import ClickHouse

REPO = Path(__file__).resolve().parents[1]


def _from_repo(value: str) -> str:
    path = Path(value).expanduser()
    return str((path if path.is_absolute() else REPO / path).resolve())


def configure() -> HomeLayout:
    """Set ``KAPPALAKE_CONF`` and ``KAPPALAKE_HOME`` (absolute) for this kernel; return the data dir layout."""
    os.environ["KAPPALAKE_CONF"] = _from_repo(os.environ.get("KAPPALAKE_CONF") or "conf")
    os.environ["KAPPALAKE_HOME"] = _from_repo(os.environ.get("KAPPALAKE_HOME") or ".kappalake")
    if os.environ.get("KAPPALAKE_CACHE"):
        os.environ["KAPPALAKE_CACHE"] = _from_repo(os.environ["KAPPALAKE_CACHE"])
    return HomeLayout.from_env()


def context(pipeline: str) -> RunContext:
    """The pipeline on the selected target (``KAPPALAKE_TARGET``, default local), as the CLI builds it."""
    conf = default_conf_dir()
    target = load_target(conf, default_target())
    return RunContext(load_pipeline(pipeline, conf, target.name), target, HomeLayout.from_env())


def ensure_pii_key(ctx: RunContext) -> str:
    """Make the pipeline's PII HMAC key available to this kernel; say where it came from.

    Order: the environment variable (``silver.pii.key_env``, default ``KAPPALAKE_PII_KEY``), then
    ``$KAPPALAKE_HOME/pii.key`` (what ``scripts/setup.sh`` creates for the local demo). When neither
    exists, a new random key is written to ``$KAPPALAKE_HOME/pii.key`` exactly as ``scripts/setup.sh``
    would, so later notebook runs and the CLI (``source scripts/setup.sh``) pseudonymise with the same key.
    """
    pii = ctx.pipeline.silver.pii
    if not pii.fields:
        return f"not needed: pipeline {ctx.pipeline.name!r} pseudonymises no fields"
    if os.environ.get(pii.key_env):
        return f"from the environment ({pii.key_env})"
    path = ctx.layout.home / "pii.key"
    key = path.read_text().strip() if path.is_file() else ""
    if key:
        os.environ[pii.key_env] = key
        return f"from {path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = os.umask(0o077)
    try:
        path.write_text(secrets.token_hex(32) + "\n")
    finally:
        os.umask(previous)
    os.environ[pii.key_env] = path.read_text().strip()
    return f"none found: created a new local key in {path} (as scripts/setup.sh does)"


def topic_records(ctx: RunContext, timeout: float = 30.0) -> int:
    """Records currently held by the pipeline's topics (high watermark minus log start, all partitions).

    Retried for ``timeout`` seconds: right after a topic is created the broker may answer offset requests
    with NOT_LEADER_FOR_PARTITION for a moment, although the metadata names a leader already."""
    from confluent_kafka import KafkaException

    servers = ctx.bootstrap_servers()
    deadline = time.monotonic() + timeout
    while True:
        try:
            return sum(high - low for topic in ctx.pipeline.source.topics
                       for low, high in end_offsets(servers, topic, ctx.kafka_options).values())
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def spark_session(ctx: RunContext) -> SparkSession:
    """The kernel's SparkSession for ``ctx``'s target (created once, then reused)."""
    from kappalake.runtime.spark import build_spark

    return build_spark(ctx.target, app_name=f"kappalake-notebook-{ctx.pipeline.name}", layout=ctx.layout)


def delta_count(spark: SparkSession, path: str) -> int:
    """Rows of the Delta table at ``path`` (0 when it does not exist yet)."""
    from kappalake.io.delta.batch import table_exists

    return int(spark.read.format("delta").load(path).count()) if table_exists(spark, path) else 0


def gold_final(ch: ClickHouse, table: str, order_by: list[str] | None = None) -> pd.DataFrame:
    """The current rows of a gold table, read with ``FINAL`` (with ``version`` and ``updated_at``)."""
    import pandas as pd

    exists = ch.rows("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
                     {"t": table})[0][0]
    if not exists:
        return pd.DataFrame()
    order = ", ".join(f"`{c}`" for c in (order_by or ["window_start"]))
    return ch.query_arrow(f"SELECT * FROM `{table}` FINAL ORDER BY {order}").to_pandas()
