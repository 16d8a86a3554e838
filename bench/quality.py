"""Silver micro-batch time with and without data-quality expectations, in one run (Spark only, no broker).

    python bench/quality.py [--batches 20] [--rows 10000] [--warmup 2]

Generates payment records (1% malformed) with the project's generator as Kafka-shaped DataFrames,
persisted before timing. Each batch goes through the silver ``foreachBatch`` path (parse,
validate, pseudonymise, idempotent Delta appends of silver and dead letters) in four variants,
interleaved batch by batch (rotating order) on the same input, each into its own tables:

* ``plain``: no expectations (today's silver writer);
* ``quality``: + expectations, default ``profile`` engine: one Spark aggregate, GX verdicts over
  the metrics profile, the on_fail: stop gate, the row split (quarantine to the dead-letter table,
  in the same dead-letter commit), results appended with delta-rs (``record_results``, local path);
* ``spark_results``: as ``quality`` but results appended with Spark (what a cloud results path costs);
* ``gx_spark``: as ``quality`` but batch-level expectations run by GX's Spark datasource on the
  micro-batch DataFrame.

Expectations: 5 row-level (not_null, in_set, between, regex, sql; ~0.1% of rows quarantined) and
3 batch-level (unique, row_count, freshness with on_fail: stop). Uncounted warm-up batches first;
figures are medians of the per-batch wall time.
Ends with: RESULT overhead=<quality/plain - 1> spark_results_overhead=<...> gx_spark_overhead=<...> ...
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_home

EXPECTATIONS = [
    {"name": "event_id_present", "kind": "not_null", "column": "event_id"},
    {"name": "known_currency", "kind": "in_set", "column": "currency", "values": ["USD", "EUR", "GBP", "JPY", "BRL",
                                                                                   "INR"]},
    {"name": "amount_range", "kind": "between", "column": "amount", "min": 0, "max": 50000},
    {"name": "country_code", "kind": "regex", "column": "country", "pattern": "^[A-Z]{2}$"},
    {"name": "under_review_limit", "kind": "sql", "expression": "amount < 500"},
    {"name": "event_id_unique", "kind": "unique", "column": "event_id"},
    {"name": "batch_size", "kind": "row_count", "min": 1, "max": 1000000},
    {"name": "fresh", "kind": "freshness", "column": "event_time", "max_lag": "1 hour", "on_fail": "stop"},
]
RECORD_SCHEMA = "key binary, value binary, topic string, partition int, offset long, kafka_timestamp timestamp"


def make_batches(spark, count: int, rows: int) -> list:
    """``count`` persisted DataFrames of ``rows`` Kafka-shaped payment records, event times near now."""
    from kappalake.generator import GeneratorOptions, make_stream

    stream = make_stream("payments", GeneratorOptions(seed=8, malformed_fraction=0.01))
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    batches, offset = [], 0
    for b in range(count):
        records = []
        for i in range(rows):
            moment = start + timedelta(milliseconds=(b * rows + i) * 10)
            record = stream.next(moment)
            records.append((record.key, record.value, "payments", offset % 3, offset, moment + timedelta(seconds=1)))
            offset += 1
        df = spark.createDataFrame(records, RECORD_SCHEMA).persist()
        df.count()
        batches.append(df)
    return batches


class SilverBatch:
    """The silver writer's append path, with the quality wiring of kappalake.quality when ``quality`` is set."""

    def __init__(self, pipeline, root: str, key: bytes, quality=None, spark_results: bool = False) -> None:
        from kappalake.quality.batch import BatchValidator

        self.pipeline, self.root, self.key, self.quality = pipeline, root, key, quality
        self.spark_results = spark_results
        self.validator = BatchValidator(quality, f"{pipeline.name}.silver") if quality else None
        self.app_id = f"kappalake:{pipeline.name}:silver:bench"

    def __call__(self, records, batch_id: int) -> None:
        from pyspark.sql import functions as F

        from kappalake.io.delta.batch import append_idempotent, table_exists
        from kappalake.quality.batch import QualityStop, enforce
        from kappalake.quality.results import record_results, results_frame, write_results
        from kappalake.quality.rows import CARRIED, quarantine_dead_letters, silver_view, split_rows
        from kappalake.transforms.dead_letter import to_dead_letter
        from kappalake.transforms.parse import parse_events
        from kappalake.transforms.pii import pseudonymise
        from kappalake.transforms.silver import to_silver

        pipeline, app_id = self.pipeline, self.app_id
        batch = parse_events(records, pipeline.events).persist()
        try:
            counts = batch.agg(F.count_if(F.size("_errors") == 0).alias("valid"),
                               F.count_if(F.size("_errors") > 0).alias("rejected")).first()
            dead_count = int(counts["rejected"])
            valid = batch.where(F.size("_errors") == 0)
            rejected = batch.where(F.size("_errors") > 0)
            outcome = quarantined = None
            results_path = f"{self.root}/quality_results"
            if self.validator is None:
                rows = to_silver(valid, pipeline.events)
            else:
                view = silver_view(valid, pipeline.events)  # silver columns + the record for dead letters
                outcome = self.validator.run(view, batch_id)
                try:
                    enforce(outcome.results, self.quality)
                except QualityStop:
                    record_results(batch.sparkSession, outcome.results, results_path, pipeline.name, "silver",
                                   f"{app_id}:stop", batch_id)
                    raise
                rows, quarantined = split_rows(view, self.quality)
                rows = rows.drop(*CARRIED)
            rows = pseudonymise(rows, pipeline.silver.pii.fields, self.key)
            append_idempotent(rows, f"{self.root}/silver", app_id, batch_id)
            dead = to_dead_letter(rejected, pipeline.name, pipeline.version)
            if outcome is not None and outcome.profile.quarantined:
                dead = dead.unionByName(quarantine_dead_letters(quarantined, self.quality, pipeline.name,
                                                                pipeline.version))
                dead_count += outcome.profile.quarantined
            dlq_path = f"{self.root}/dead_letter"
            if dead_count or not table_exists(batch.sparkSession, dlq_path):
                append_idempotent(dead, dlq_path, app_id, batch_id)
            if outcome is not None and self.spark_results:  # what a cloud results path costs
                write_results(results_frame(batch.sparkSession, outcome.results, pipeline.name, "silver"),
                              results_path, app_id, batch_id)
            elif outcome is not None:
                record_results(batch.sparkSession, outcome.results, results_path, pipeline.name, "silver", app_id,
                               batch_id)
        finally:
            batch.unpersist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    with bench_home() as home:
        from kappalake.config.loader import load_pipeline, load_target
        from kappalake.quality.config import QualityConfig
        from kappalake.runtime.paths import HomeLayout
        from kappalake.runtime.spark import build_spark

        target = load_target()
        pipeline = load_pipeline("payments", target=target.name)
        spark = build_spark(target, "kappalake-bench-quality", HomeLayout.from_env())
        started = time.perf_counter()
        batches = make_batches(spark, args.warmup + args.batches, args.rows)
        print(f"generated {len(batches)} batches of {args.rows} records in {time.perf_counter() - started:.1f}s")
        quality = QualityConfig.model_validate(EXPECTATIONS)
        started = time.perf_counter()
        writers = {
            "plain": SilverBatch(pipeline, f"{home}/plain", b"bench-key"),
            "quality": SilverBatch(pipeline, f"{home}/quality", b"bench-key", quality),
            "spark_results": SilverBatch(pipeline, f"{home}/spark_results", b"bench-key", quality,
                                         spark_results=True),
            "gx_spark": SilverBatch(pipeline, f"{home}/gx_spark", b"bench-key",
                                    quality.model_copy(update={"engine": "gx_spark"})),
        }
        print(f"validators built (GX import, contexts, suites) in {time.perf_counter() - started:.1f}s, once per job")
        names = list(writers)
        times: dict[str, list[float]] = {name: [] for name in names}
        for batch_id, records in enumerate(batches):
            order = names[batch_id % len(names):] + names[:batch_id % len(names)]
            line = []
            for name in order:
                started = time.perf_counter()
                writers[name](records, batch_id)
                elapsed = time.perf_counter() - started
                line.append(f"{name} {elapsed:.2f}s")
                if batch_id >= args.warmup:
                    times[name].append(elapsed)
            print(f"batch {batch_id}{' (warm-up)' if batch_id < args.warmup else ''}: {', '.join(line)}")
        spark.stop()
    median = {name: statistics.median(values) for name, values in times.items()}
    mean = {name: statistics.mean(values) for name, values in times.items()}
    for name in names:
        print(f"{name}: median {median[name]:.3f}s mean {mean[name]:.3f}s per {args.rows}-row batch "
              f"over {len(times[name])} batches")
    over = {name: median[name] / median["plain"] - 1 for name in names}
    print(f"RESULT overhead={over['quality']:.3f} spark_results_overhead={over['spark_results']:.3f} "
          f"gx_spark_overhead={over['gx_spark']:.3f} plain_s={median['plain']:.3f} quality_s={median['quality']:.3f}")


if __name__ == "__main__":
    main()
