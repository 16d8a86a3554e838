"""One gold view inside the gold query's ``foreachBatch``: its partial states to ClickHouse, its checks.

Per micro-batch: the batch's partial states (Arrow, one row per touched window) are merged into the
view's windows by its :class:`~kappalake.io.clickhouse.windows.WindowStore`. The merged window rows pass
the view's ``having`` filter and its expectations (checked before anything of the batch is written; a
failed ``on_fail: stop`` stops the query) on their way to the public table; results are recorded after
the write.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from kappalake.config.models import GoldViewConfig
from kappalake.io.clickhouse.windows import WindowStore
from kappalake.ops import batch_metrics
from kappalake.pipelines.quality_gate import check_expressions, effective, enforce_or_record, results_path
from kappalake.quality.batch import BatchOutcome, BatchValidator, metric_counts
from kappalake.quality.results import record_results
from kappalake.runtime.binding import QueryBinding
from kappalake.runtime.context import RunContext

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


class ViewWriter(QueryBinding):
    """Writes one view's windows for each batch of the gold query."""

    def __init__(self, ctx: RunContext, name: str, view: GoldViewConfig, store: WindowStore, shape: DataFrame) -> None:
        super().__init__()
        self.ctx = ctx
        self.name = name
        self.view = view
        self.store = store
        self.table = f"gold.{name}"
        self.metrics_name = f"{ctx.pipeline.name}.gold.{name}"
        self.quality = effective(view.expectations, ctx)
        self.validator = BatchValidator(self.quality, f"{ctx.pipeline.name}.{self.table}") \
            if self.quality.expectations else None
        if self.validator is not None:
            check_expressions(shape, self.quality, f"{ctx.pipeline.name} gold.views.{name}.expectations")

    def bind(self, query_id: str) -> None:
        super().bind(query_id)
        self.store.bind(query_id)

    def write(self, partials: DataFrame, batch_id: int, generation: int) -> int:
        """Merge one batch's partial states of this view into ClickHouse; return the window rows written."""
        spark = partials.sparkSession
        app_id = f"kappalake:{self.ctx.pipeline.name}:{self.table}:{self.query_id}"
        outcomes: list[BatchOutcome] = []

        def prepare(rows: pa.Table) -> pa.Table:
            if not self.view.having and self.validator is None:
                return rows
            frame = spark.createDataFrame(rows)
            if self.view.having:
                frame = frame.where(F.expr(self.view.having))
            if self.validator is not None:
                outcome = self.validator.run(frame, batch_id)
                enforce_or_record(outcome.results, self.quality, self.ctx, self.table, app_id, batch_id, spark)
                outcomes.append(outcome)
            return frame.toArrow().cast(rows.schema) if self.view.having else rows

        began = time.perf_counter()
        arrow = partials.toArrow()
        log.debug("%s batch %d: partial states %d rows in %.0f ms", self.metrics_name, batch_id, arrow.num_rows,
                  (time.perf_counter() - began) * 1000)
        written = self.store.write(arrow, batch_id, generation, prepare)
        batch_metrics.add(f"{self.ctx.pipeline.name}.gold", clickhouse_rows=written)
        batch_metrics.add(self.metrics_name, clickhouse_rows=written)
        for outcome in outcomes:
            record_results(spark, outcome.results, results_path(self.quality, self.ctx), self.ctx.pipeline.name,
                           self.table, app_id, batch_id)
            batch_metrics.add(f"{self.ctx.pipeline.name}.gold", **metric_counts(outcome))
        return written
