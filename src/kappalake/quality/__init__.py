"""Data quality on every micro-batch: expectations declared per table in the pipeline YAML.

* :mod:`kappalake.quality.config` -- the YAML models (``QualityConfig``, ``ExpectationConfig``).
* :mod:`kappalake.quality.rows` -- row-level rules as Spark column expressions: split a batch into
  valid and quarantined rows (pure, no I/O).
* :mod:`kappalake.quality.batch` -- batch-level validation with Great Expectations, ``QualityStop``.
* :mod:`kappalake.quality.results` -- validation results to and from a Delta table.

Nothing is imported here: the CLI reads results without loading Spark or Great Expectations.
"""
