"""Pipelines: wire I/O and transformations into jobs (produce, bronze, silver, gold)."""
