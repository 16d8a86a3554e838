"""kappalake: Spark Structured Streaming lakehouse pipelines (Kafka -> Delta -> ClickHouse)."""

__version__ = "0.1.0"
