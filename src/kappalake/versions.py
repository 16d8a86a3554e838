"""Supported Spark lines and their pinned versions. One place, used by setup, the session builder,
``kappalake setup``/``status`` and the deploy files (their tests compare them with this module).

``KAPPALAKE_SPARK`` selects the line (``4.0``, ``4.1`` or ``4.2``; default ``4.2``). Each line pins
pyspark, delta-spark (the pip package and its JVM jar), Spark's Kafka connector and what comes with
them, and names the Databricks Runtime that ships the same Spark line:

* 4.2: Spark 4.2.0 + Delta 4.4.0, the default (Databricks Runtime 19).
* 4.1: Spark 4.1.1 + Delta 4.3.1 (Databricks Runtime 18 LTS runs Spark 4.1.0).
* 4.0: Spark 4.0.0 + Delta 4.0.0, the Databricks 17.3 LTS line.

From Delta 4.1 the jar's artifact id carries the Spark minor (``delta-spark_4.2_2.13``); before, it
was ``delta-spark_2.13``. :func:`delta_artifact` is the one place that knows.

Run as a module it prints a line's pins for shell scripts (``scripts/setup.sh``) and deploy commands::

    PYTHONPATH=src python3 -m kappalake.versions            # KEY=value lines of the selected line
    PYTHONPATH=src python3 -m kappalake.versions --get pip  # one value
    PYTHONPATH=src python3 -m kappalake.versions --table    # the supported-versions table (README)

The module imports nothing outside the standard library and :mod:`kappalake.errors`, so it runs
before the package's dependencies are installed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from kappalake.errors import ConfigError

SCALA_BINARY = "2.13"
KAFKA_BROKER_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
MAVEN_CENTRAL_URL = "https://repo1.maven.org/maven2"

#: The environment variable that selects the Spark line, and its default.
LINE_ENV = "KAPPALAKE_SPARK"
DEFAULT_LINE = "4.2"


def delta_artifact(delta_version: str, spark_version: str, scala: str = SCALA_BINARY) -> str:
    """The Maven artifact id of delta-spark ``delta_version`` built for ``spark_version``.

    Delta 4.0 is ``delta-spark_2.13``; from Delta 4.1 on the Spark minor is part of the name
    (``delta-spark_4.1_2.13``, ``delta-spark_4.2_2.13``), one artifact per Spark line.
    """
    major, minor = (int(part) for part in delta_version.split(".")[:2])
    if (major, minor) < (4, 1):
        return f"delta-spark_{scala}"
    spark_minor = ".".join(spark_version.split(".")[:2])
    return f"delta-spark_{spark_minor}_{scala}"


@dataclass(frozen=True)
class SparkLine:
    """One supported Spark line: what kappalake installs and resolves for it, and where it runs."""

    name: str
    spark: str
    delta: str
    kafka_clients: str
    hadoop: str
    databricks_runtime: str
    databricks_name: str

    @property
    def kafka_package(self) -> str:
        """Spark's Kafka source (``spark.jars.packages`` coordinate)."""
        return f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY}:{self.spark}"

    @property
    def delta_package(self) -> str:
        """delta-spark's JVM jar (``spark.jars.packages`` coordinate)."""
        return f"io.delta:{delta_artifact(self.delta, self.spark)}:{self.delta}"

    @property
    def avro_package(self) -> str:
        """Spark's Avro data source and ``from_avro`` (``spark.jars.packages`` coordinate)."""
        return f"org.apache.spark:spark-avro_{SCALA_BINARY}:{self.spark}"

    @property
    def packages(self) -> tuple[str, ...]:
        """What ``spark.jars.packages`` lists on targets that resolve jars themselves (local, k8s)."""
        return (self.kafka_package, self.delta_package, self.avro_package)

    @property
    def hadoop_aws_package(self) -> str:
        """hadoop-aws matching the Hadoop client pyspark bundles (for ``s3a://`` on k8s)."""
        return f"org.apache.hadoop:hadoop-aws:{self.hadoop}"

    @property
    def pip_requirements(self) -> tuple[str, ...]:
        """The exact Python packages of this line (pip constraints)."""
        return (f"pyspark=={self.spark}", f"delta-spark=={self.delta}")

    @property
    def spark_image(self) -> str:
        """The Apache Spark image the k8s Dockerfile builds on."""
        return f"apache/spark:{self.spark}-scala{SCALA_BINARY}-java17-python3-ubuntu"

    def shell(self) -> dict[str, str]:
        """The pins as KEY=value pairs for shell scripts."""
        return {
            "KAPPALAKE_SPARK": self.name,
            "SPARK_VERSION": self.spark,
            "DELTA_VERSION": self.delta,
            "PIP": " ".join(self.pip_requirements),
            "SPARK_PACKAGES": ",".join(self.packages),
            "KAFKA_CLIENTS": self.kafka_clients,
            "HADOOP": self.hadoop,
            "DATABRICKS_RUNTIME": self.databricks_runtime,
            "SPARK_IMAGE": self.spark_image,
            "DOCKER_BUILD_ARGS": f"--build-arg {LINE_ENV}={self.name} --build-arg SPARK_VERSION={self.spark}",
        }


#: The supported lines, oldest first. Versions measured on Maven Central/PyPI (see the README, *Versions*).
LINES: dict[str, SparkLine] = {
    line.name: line for line in (
        SparkLine("4.0", spark="4.0.0", delta="4.0.0", kafka_clients="3.9.0", hadoop="3.4.1",
                  databricks_runtime="17.3.x-scala2.13", databricks_name="17.3 LTS"),
        SparkLine("4.1", spark="4.1.1", delta="4.3.1", kafka_clients="3.9.1", hadoop="3.4.2",
                  databricks_runtime="18.x-scala2.13", databricks_name="18 LTS"),
        SparkLine("4.2", spark="4.2.0", delta="4.4.0", kafka_clients="3.9.2", hadoop="3.5.0",
                  databricks_runtime="19.x-scala2.13", databricks_name="19"),
    )
}


def line(name: str) -> SparkLine:
    """The line called ``name``; an unknown name fails naming the allowed values."""
    try:
        return LINES[name]
    except KeyError:
        raise ConfigError(f"{LINE_ENV}={name!r} is not a supported Spark line; use one of "
                          f"{', '.join(LINES)} (default {DEFAULT_LINE})") from None


def selected_line(env: Mapping[str, str] | None = None) -> SparkLine:
    """The line ``$KAPPALAKE_SPARK`` selects (default :data:`DEFAULT_LINE`)."""
    env = os.environ if env is None else env
    return line(env.get(LINE_ENV, "").strip() or DEFAULT_LINE)


def default_line() -> SparkLine:
    """The line the repository's deploy files and ``pyproject.toml`` defaults name."""
    return LINES[DEFAULT_LINE]


def line_of_spark(spark_version: str) -> SparkLine | None:
    """The supported line whose Spark minor ``spark_version`` belongs to (``4.1.0`` -> 4.1), if any."""
    return LINES.get(".".join(spark_version.split(".")[:2]))


#: The Apache Kafka server artifacts the local broker runs from (same jars as the distribution's libs/).
KAFKA_BROKER_ARTIFACTS: tuple[str, ...] = (
    f"org.apache.kafka:kafka_{SCALA_BINARY}:{KAFKA_BROKER_VERSION}",
    f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}",
)


#: Change data capture (``kappalake stack up --with cdc``): a Kafka Connect standalone worker of the broker's
#: Kafka version with the Debezium Postgres connector in its plugin path (measured on Maven Central).
DEBEZIUM_VERSION = "3.6.1.Final"
KAFKA_CONNECT_VERSION = KAFKA_BROKER_VERSION
SLF4J_VERSION = "2.0.17"
POSTGRES_MAJOR = "15"
KAFKA_CONNECT_ARTIFACTS: tuple[str, ...] = (
    f"org.apache.kafka:connect-runtime:{KAFKA_CONNECT_VERSION}",
    f"org.apache.kafka:connect-json:{KAFKA_CONNECT_VERSION}",
    f"org.apache.kafka:connect-file:{KAFKA_CONNECT_VERSION}",
    f"org.apache.logging.log4j:log4j-slf4j2-impl:{LOG4J_VERSION}",
    f"org.slf4j:slf4j-api:{SLF4J_VERSION}",  # connect-runtime's POM names 1.7.36; Debezium 3 logs through 2.x
)
DEBEZIUM_POSTGRES_ARTIFACTS: tuple[str, ...] = (f"io.debezium:debezium-connector-postgres:{DEBEZIUM_VERSION}",)


def markdown_table() -> str:
    """The supported-versions table (one row per line)."""
    rows = ["| `KAPPALAKE_SPARK` | Spark (pyspark) | Delta (pip `delta-spark` + jar) | Kafka connector "
            "(kafka-clients) | Hadoop | Databricks Runtime |",
            "| --- | --- | --- | --- | --- | --- |"]
    for item in reversed(LINES.values()):
        default = " (default)" if item.name == DEFAULT_LINE else ""
        rows.append(f"| `{item.name}`{default} | {item.spark} | {item.delta}, `{item.delta_package}` | "
                    f"`spark-sql-kafka-0-10_{SCALA_BINARY}:{item.spark}` ({item.kafka_clients}) | {item.hadoop} | "
                    f"{item.databricks_name} (`{item.databricks_runtime}`) |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Print the selected (or ``--line``) line's pins; exit 2 with a message for an unknown line."""
    parser = argparse.ArgumentParser(prog="python -m kappalake.versions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--line", help=f"a line ({', '.join(LINES)}); default ${LINE_ENV} or {DEFAULT_LINE}")
    parser.add_argument("--get", choices=sorted(k.lower() for k in default_line().shell()),
                        help="print one value only")
    parser.add_argument("--table", action="store_true", help="print the supported-versions table (Markdown)")
    args = parser.parse_args(argv)
    try:
        chosen = line(args.line) if args.line else selected_line()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.table:
        print(markdown_table())
    elif args.get:
        print(chosen.shell()[args.get.upper()])
    else:
        for key, value in chosen.shell().items():
            print(f"{key}='{value}'")
    return 0


def __getattr__(name: str) -> object:
    """The selected line's pins under their historic names (``versions.SPARK_VERSION`` ...), read when used,
    so an unknown ``KAPPALAKE_SPARK`` fails with :class:`ConfigError` where the CLI reports it."""
    getters = {
        "SPARK_VERSION": lambda current: current.spark,
        "DELTA_VERSION": lambda current: current.delta,
        "SPARK_KAFKA_PACKAGE": lambda current: current.kafka_package,
        "DELTA_PACKAGE": lambda current: current.delta_package,
        "SPARK_PACKAGES": lambda current: current.packages,
        "LINE": lambda current: current,
    }
    if name in getters:
        return getters[name](selected_line())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(main())
