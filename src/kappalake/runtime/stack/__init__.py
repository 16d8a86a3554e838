"""The embedded local stack: one module per service, each a child process on 127.0.0.1 with its state
under ``$KAPPALAKE_HOME/stack``.

- :mod:`.broker`: the Apache Kafka broker (KRaft), always.
- :mod:`.clickhouse`: the ClickHouse HTTP endpoint (:mod:`.clickhouse_http` over chDB) that owns the chDB
  data directory, so jobs, the CLI and notebooks all read and write gold at once; always.
- :mod:`.schema_registry`: a local Confluent-compatible Schema Registry (:mod:`.schema_registry_http`, schemas
  in ``$KAPPALAKE_HOME/schema-registry``) for Avro/Protobuf records in the Confluent wire format; always.
- :mod:`.prometheus`: a Prometheus server (the ``prometheus`` binary) with the shipped alert rules,
  scraping the jobs registered by :mod:`kappalake.ops.prometheus_targets`; optional.
- :mod:`.postgres` and :mod:`.kafka_connect`: change data capture (``--with cdc``), optional: a PostgreSQL 15
  server (``wal_level=logical``, sample ``merchants``/``orders`` schema) and a Kafka Connect standalone worker
  running Debezium's Postgres connector into ``pg.public.merchants`` / ``pg.public.orders``.
- ``--profile cluster`` (:mod:`.cluster_profile`): :mod:`.secure_broker` (the broker with SASL_SSL, SCRAM users
  and ACLs instead of PLAINTEXT), :mod:`.object_store` (an S3 endpoint, moto) and :mod:`.spark_cluster` (a Spark
  standalone master and two workers).

Every service follows one contract: ``up`` (start unless running, wait until ready) → ``status`` →
``down``, ports, pid and log file recorded in its state file.
"""

from kappalake.runtime.stack.broker import BrokerInfo, LocalStack, StackState, StackStatus
from kappalake.runtime.stack.clickhouse import ClickHouseEndpoint, ClickHouseInfo, ClickHouseStatus
from kappalake.runtime.stack.kafka_connect import ConnectInfo, ConnectStatus, ConnectWorker
from kappalake.runtime.stack.postgres import PostgresInfo, PostgresServer, PostgresStatus
from kappalake.runtime.stack.prometheus import PrometheusInfo, PrometheusServer, PrometheusStatus
from kappalake.runtime.stack.schema_registry import SchemaRegistryEndpoint, SchemaRegistryInfo, SchemaRegistryStatus

__all__ = ["BrokerInfo", "ClickHouseEndpoint", "ClickHouseInfo", "ClickHouseStatus", "ConnectInfo", "ConnectStatus",
           "ConnectWorker", "LocalStack", "PostgresInfo", "PostgresServer", "PostgresStatus", "PrometheusInfo", "PrometheusServer", "PrometheusStatus", "SchemaRegistryEndpoint", "SchemaRegistryInfo",
           "SchemaRegistryStatus", "StackState",
           "StackStatus"]
