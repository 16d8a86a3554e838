"""Deterministic event generators for the reference pipelines (payments, iot), with fault injection."""

from kappalake.generator.records import EventStream, GeneratedRecord, GeneratorOptions, make_stream

__all__ = ["EventStream", "GeneratedRecord", "GeneratorOptions", "make_stream"]
