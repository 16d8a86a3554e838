"""ClickHouse through clickhouse-connect: connection by DSN, gold table DDL and migration, the batch sink."""
