"""Silver micro-batch time with and without data-quality expectations, in one run (Spark only, no broker).

    python bench/quality.py [--batches 20] [--rows 10000] [--warmup 2]

Generates payment records (1% malformed) with the project's generator as Kafka-shaped DataFrames,
persisted before timing. Each batch goes through the real silver ``foreachBatch`` writer
(``SilverBatchWriter``: parse, validate, expectations, pseudonymise, idempotent Delta appends of
silver and dead letters, results) in three variants, interleaved batch by batch (rotating order) on
the same input, each on its own storage root:

* ``plain``: no expectations;
* ``quality``: the expectations below, default ``profile`` engine: one Spark aggregate (which is also
  the writer's valid/rejected count), GX verdicts over the metrics profile, the on_fail: stop gate,
  the row split (quarantine to the dead-letter table, in the same dead-letter commit), results
  appended with delta-rs (local path);
* ``gx_spark``: as ``quality`` but batch-level expectations run by GX's Spark datasource on the
  micro-batch DataFrame.

Expectations: 5 row-level (not_null, in_set, between, regex, sql; ~0.1% of rows quarantined) and
3 batch-level (unique, row_count, freshness with on_fail: stop). Uncounted warm-up batches first.
An overhead is the median over batches of (variant time / plain time of the same batch) - 1: robust
to the load swings of a shared machine (ratios of medians and of means are printed too).
Ends with: RESULT overhead=<quality/plain - 1> gx_spark_overhead=<...> plain_s=<...> quality_s=<...>
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
    """The real silver ``foreachBatch`` writer (``SilverBatchWriter``) on pre-built Kafka-shaped batches."""

    def __init__(self, ctx, key: bytes) -> None:
        from kappalake.pipelines.silver import SilverBatchWriter

        self.writer = SilverBatchWriter(ctx, key)
        self.writer.bind("bench")
        self.pipeline = ctx.pipeline

    def __call__(self, records, batch_id: int) -> None:
        from kappalake.transforms.parse import parse_events

        self.writer(parse_events(records, self.pipeline.events), batch_id)


def variant(pipeline, target, layout, root: str, quality):
    """A RunContext on its own storage root whose silver declares ``quality``."""
    from kappalake.runtime.context import RunContext

    silver = pipeline.silver.model_copy(update={"expectations": quality})
    storage = target.storage.model_copy(update={"root": root})
    return RunContext(pipeline.model_copy(update={"silver": silver}), target.model_copy(update={"storage": storage}),
                      layout)


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
        spark.sparkContext.setLogLevel("ERROR")
        started = time.perf_counter()
        batches = make_batches(spark, args.warmup + args.batches, args.rows)
        print(f"generated {len(batches)} batches of {args.rows} records in {time.perf_counter() - started:.1f}s")
        quality = QualityConfig.model_validate(EXPECTATIONS)
        layout = HomeLayout.from_env()
        started = time.perf_counter()
        configs = {"plain": QualityConfig(), "quality": quality,
                   "gx_spark": quality.model_copy(update={"engine": "gx_spark"})}
        writers = {name: SilverBatch(variant(pipeline, target, layout, f"{home}/{name}", config), b"bench-key")
                   for name, config in configs.items()}
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
    # The variants of one batch run back to back on the same input, so the median of their per-batch
    # ratios cancels the load swings of a shared machine; medians and means are printed beside it.
    paired = {name: statistics.median(x / p for x, p in zip(times[name], times["plain"])) - 1 for name in names}
    for name in names[1:]:
        print(f"{name} overhead: {paired[name]:.3f} (median of per-batch ratios), "
              f"{median[name] / median['plain'] - 1:.3f} (ratio of medians), "
              f"{mean[name] / mean['plain'] - 1:.3f} (ratio of means)")
    print(f"RESULT overhead={paired['quality']:.3f} gx_spark_overhead={paired['gx_spark']:.3f} "
          f"plain_s={median['plain']:.3f} quality_s={median['quality']:.3f}")


if __name__ == "__main__":
    main()
