"""I/O: Kafka (admin, producer, Spark reader options), Delta writers, ClickHouse."""
