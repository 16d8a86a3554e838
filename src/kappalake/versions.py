"""Pinned versions of the JVM side. One place, used by setup, the session builder and deploy files.

Spark 4.0.0 is chosen because it is the newest Spark whose Kafka connector resolves completely
from Maven Central (``spark-token-provider-kafka-0-10_2.13`` is published there for 4.0.0 but not
for 4.0.1 .. 4.2.0), and ``delta-spark_2.13:4.0.0`` is built for it. Databricks Runtime 17.x
runs Spark 4.0 with Delta 4.0, so the same code runs there unchanged.
"""

from __future__ import annotations

SCALA_BINARY = "2.13"
SPARK_VERSION = "4.0.0"
DELTA_VERSION = "4.0.0"
KAFKA_BROKER_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"

SPARK_KAFKA_PACKAGE = f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY}:{SPARK_VERSION}"
DELTA_PACKAGE = f"io.delta:delta-spark_{SCALA_BINARY}:{DELTA_VERSION}"

#: What ``spark.jars.packages`` lists on targets that resolve jars themselves (local, k8s).
SPARK_PACKAGES: tuple[str, ...] = (SPARK_KAFKA_PACKAGE, DELTA_PACKAGE)

#: The Apache Kafka server artifacts the local broker runs from (same jars as the distribution's libs/).
KAFKA_BROKER_ARTIFACTS: tuple[str, ...] = (
    f"org.apache.kafka:kafka_{SCALA_BINARY}:{KAFKA_BROKER_VERSION}",
    f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}",
)

MAVEN_CENTRAL_URL = "https://repo1.maven.org/maven2"
