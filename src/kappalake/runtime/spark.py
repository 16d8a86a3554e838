"""Build the SparkSession every kappalake job runs in.

Local target: ``local[N]`` sized to the machine, the resolved connector jars on ``spark.jars``,
``PYSPARK_PYTHON`` set to this interpreter, quiet logs. Managed targets (Databricks, k8s): the
runtime or image provides the jars; kappalake adds only its SQL/state-store settings.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from kappalake import versions
from kappalake.config.models import TargetConfig
from kappalake.errors import DependencyError
from kappalake.runtime.jars import resolve_spark_jars
from kappalake.runtime.paths import HomeLayout

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"


def default_shuffle_partitions(cores: int) -> int:
    """Small-state streaming jobs on few cores do best with a few partitions per core."""
    return max(2, 2 * cores)


def session_conf(target: TargetConfig, layout: HomeLayout, cores: int | None = None) -> dict[str, str]:
    """Every Spark setting kappalake applies for ``target`` (pure: no JVM is started)."""
    cores = cores or os.cpu_count() or 2
    conf: dict[str, str] = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.streaming.stateStore.providerClass": ROCKSDB_PROVIDER,
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        "spark.sql.shuffle.partitions": str(target.spark.shuffle_partitions or default_shuffle_partitions(cores)),
        "spark.sql.session.timeZone": "UTC",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Parquet INT64 microseconds, not Spark's legacy INT96 (a Julian-day rebase per value): cheaper to write
        # and the type every other Parquet reader (delta-rs, ClickHouse) expects.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        # A 1-second trigger runs ~86,400 micro-batches a day, each a few SQL executions, jobs and stages: the
        # driver's status store keeps the last N of each (defaults 1,000 and 100,000 tasks), so its heap
        # stops growing within minutes instead of hours.
        "spark.sql.ui.retainedExecutions": "100",
        "spark.ui.retainedJobs": "200",
        "spark.ui.retainedStages": "200",
        "spark.ui.retainedTasks": "10000",
        "spark.sql.streaming.ui.retainedQueries": "20",
    }
    if target.spark.jars == "resolve":
        log4j = Path(str(resources.files("kappalake.runtime") / "resources" / "log4j2.properties"))
        conf.update({
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{log4j}",
            "spark.sql.warehouse.dir": str(layout.home / "spark-warehouse"),
            "spark.driver.memory": target.spark.driver_memory or "2g",
            # Delta rebuilds table state with a shuffle of this many partitions at every commit; the
            # default (50) costs ~2 s per micro-batch on a small machine, a few partitions ~0.3 s.
            "spark.databricks.delta.snapshotPartitions": str(default_shuffle_partitions(cores)),
        })
    elif target.spark.driver_memory:
        conf["spark.driver.memory"] = target.spark.driver_memory
    conf.update(target.spark.conf)
    return conf


def build_spark(target: TargetConfig, app_name: str = "kappalake", layout: HomeLayout | None = None) -> SparkSession:
    """Create (or reuse) the SparkSession for ``target``."""
    from pyspark.sql import SparkSession

    layout = layout or HomeLayout.from_env()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    # A standalone cluster (spark:// or the local one) and s3a:// storage: master, shipped package, S3A.
    from kappalake.runtime.cluster import cluster_conf, uses_s3a

    cluster, executor_python = cluster_conf(target, layout)
    if executor_python:  # executors run the Python the cluster provides (it lacks kappalake: the zip ships it)
        os.environ["PYSPARK_PYTHON"] = executor_python
    master = cluster.pop("spark.master", None) or target.spark.master
    if master:
        builder = builder.master(master)
    if target.spark.jars == "resolve":
        jars = resolve_spark_jars(layout)
        if uses_s3a(target):
            from kappalake.runtime.s3 import resolve_s3_jars

            jars = [*jars, *resolve_s3_jars(layout)]
        builder = builder.config("spark.jars", ",".join(jars))
    for key, value in {**session_conf(target, layout), **cluster}.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # py4j / JVM launch errors carry long Java traces
        raise DependencyError(f"Spark failed to start: {str(exc).splitlines()[0][:400]}") from None
    spark.sparkContext.setLogLevel("WARN")
    return spark


@dataclass(frozen=True)
class RuntimeVersions:
    """What the running session actually loaded."""

    spark: str
    delta: str
    kafka_connector: str
    kafka_clients: str
    connector_path: str = "jvm"

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def _jar_version(spark: SparkSession, class_name: str) -> str:
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    try:  # spark.jars live in the context class loader, not the system one
        klass = jvm.java.lang.Thread.currentThread().getContextClassLoader().loadClass(class_name)
    except Exception:
        return "missing"
    package = klass.getPackage()
    version = package.getImplementationVersion() if package is not None else None
    if version:
        return str(version)
    location = str(klass.getProtectionDomain().getCodeSource().getLocation().getPath())
    name = location.rsplit("/", 1)[-1].removesuffix(".jar")
    return name.rsplit("-", 1)[-1] if "-" in name else name or "unknown"


def runtime_versions(spark: SparkSession) -> RuntimeVersions:
    """Versions of Spark, Delta, the Kafka connector and kafka-clients loaded in ``spark``."""
    return RuntimeVersions(
        spark=spark.version,
        delta=_jar_version(spark, "io.delta.tables.DeltaTable"),
        kafka_connector=_jar_version(spark, "org.apache.spark.sql.kafka010.KafkaSourceProvider"),
        kafka_clients=_jar_version(spark, "org.apache.kafka.clients.consumer.KafkaConsumer"),
    )


def require_connectors(spark: SparkSession) -> RuntimeVersions:
    """Fail with a clear message when the session's Spark is not a supported line, or the Kafka
    connector or Delta is not on the classpath."""
    found = runtime_versions(spark)
    if versions.line_of_spark(found.spark) is None:
        raise DependencyError(
            f"Spark {found.spark} is not a supported line; kappalake runs on Spark "
            f"{', '.join(f'{ln.spark} ({ln.databricks_name})' for ln in versions.LINES.values())}")
    missing = [name for name, value in (("Delta Lake (delta-spark)", found.delta),
                                        ("Spark Kafka connector (spark-sql-kafka-0-10)", found.kafka_connector))
               if value == "missing"]
    if missing:
        line = versions.line_of_spark(found.spark) or versions.selected_line()
        raise DependencyError(
            f"{' and '.join(missing)} not on the Spark classpath of Spark {found.spark}; on Databricks use "
            f"Databricks Runtime {line.databricks_name} ({line.databricks_runtime}), on k8s list "
            f"{', '.join(line.packages)} in spark.jars.packages, locally run 'kappalake setup' "
            f"(with {versions.LINE_ENV}={line.name})"
        )
    return found
