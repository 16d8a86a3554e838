"""``kappalake setup``: check Java and resolve the pinned JVM jars into the data dir's cache."""

from __future__ import annotations

import typer

from kappalake import versions
from kappalake.cli.common import console
from kappalake.runtime.jars import resolve_broker_jars, resolve_spark_jars
from kappalake.runtime.java import check_java
from kappalake.runtime.paths import HomeLayout


def command(
    broker: bool = typer.Option(True, help="Resolve the Kafka broker jars (for the local stack)."),
    spark: bool = typer.Option(True, help="Resolve the Spark Kafka connector and Delta jars."),
) -> None:
    """Check Java 17+ and resolve the pinned jars from Maven Central (once; later runs need no network).

    The Spark line is ``$KAPPALAKE_SPARK`` (4.0, 4.1 or 4.2; default 4.2); this interpreter must have
    that line's pyspark and delta-spark (``scripts/setup.sh`` installs them)."""
    layout = HomeLayout.from_env()
    line = versions.selected_line()
    console.print(f"Spark line {line.name} ({versions.LINE_ENV}; supported: {', '.join(versions.LINES)}): "
                  f"Spark {line.spark}, Delta {line.delta}, Databricks Runtime {line.databricks_name}")
    java, major = check_java()
    console.print(f"Java {major} at {java}")
    if broker:
        jars = resolve_broker_jars(layout)
        console.print(f"Kafka broker {versions.KAFKA_BROKER_VERSION}: {len(jars)} jars in {layout.broker_jars}")
    if spark:
        jars = resolve_spark_jars(layout, line)
        console.print(f"Spark {line.spark} connectors ({', '.join(line.packages)}): "
                      f"{len(jars)} jars via spark.jars.packages, Ivy cache {layout.ivy}")
