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
    """Check Java 17+ and resolve the pinned jars from Maven Central (once; later runs need no network)."""
    layout = HomeLayout.from_env()
    java, major = check_java()
    console.print(f"Java {major} at {java}")
    if broker:
        jars = resolve_broker_jars(layout)
        console.print(f"Kafka broker {versions.KAFKA_BROKER_VERSION}: {len(jars)} jars in {layout.broker_jars}")
    if spark:
        jars = resolve_spark_jars(layout)
        console.print(f"Spark {versions.SPARK_VERSION} connectors ({', '.join(versions.SPARK_PACKAGES)}): "
                      f"{len(jars)} jars via spark.jars.packages, Ivy cache {layout.ivy}")
