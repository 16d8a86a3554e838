"""Kafka: client settings, admin (topics, readiness), producer, Spark source options."""
