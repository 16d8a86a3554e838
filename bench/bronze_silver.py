"""Bronze and silver throughput against the raw consume rate of the same broker, in one run.

    python bench/bronze_silver.py [--events 1000000] [--partitions N]

Produces N payment events (2% duplicates, 1% malformed) to a fresh local broker, into a topic of
--partitions partitions (default: one per core, Spark's guidance for Kafka sources: a task per
partition, as many tasks as cores; with 3 partitions on 2 cores one core idles for a third of each
batch and bronze is ~25% slower; the ratio is printed for the count used), measures the raw
confluent-kafka consume rate of that topic (the fastest of --raw-passes full reads, default 4: the
first read after producing meets a cold broker and is the slowest; Spark later reads a warm one),
then runs bronze and silver (each alone, availableNow, batches of --batch records, the pipeline's
shipped maxOffsetsPerTrigger by default) --repeats times each (default 3, each run into fresh
tables; one run varies by ±10-15%) and reports the median of their sustained events/s: the steady
state of a warm JVM, as a long-running job has it. Warm-up
passes into scratch tables run right before each layer's measured run and are not counted:
--warmup-passes of bronze (default 4: the JIT compiler still takes a core's worth of CPU for the
first few million records; the script prints the JIT compile time spent inside each measured run)
and one of silver. The measured runs report from the start of their first batch to the end of their
last (with --no-warmup, from the second batch on, leaving out the cold one).
Ends with: RESULT raw_rate=<msgs/s> bronze_rate=<events/s> silver_rate=<events/s> bronze_ratio=<x> silver_ratio=<x>
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_home, raw_consume_limit, sustained_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=None, help="maxOffsetsPerTrigger (default: the pipeline's)")
    parser.add_argument("--no-warmup", action="store_true", help="Measure a cold JVM.")
    parser.add_argument("--warmup-passes", type=int, default=4, help="bronze passes before measuring (default 4)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="measured runs per layer, each into fresh tables; the median is reported (default 3)")
    parser.add_argument("--raw-passes", type=int, default=4,
                        help="full confluent-kafka reads of the topic; the fastest is the raw limit (default 4)")
    parser.add_argument("--partitions", type=int, default=os.cpu_count() or 1,
                        help="partitions of the topic (default: the number of cores)")
    args = parser.parse_args()

    with bench_home():
        from kappalake.config.loader import load_pipeline, load_target
        from kappalake.generator import GeneratorOptions
        from kappalake.io.delta.stream import Trigger
        from kappalake.io.kafka.admin import TopicSpec
        from kappalake.pipelines.produce import produce
        from kappalake.pipelines.runner import run_pipeline
        from kappalake.runtime.context import RunContext
        from kappalake.runtime.paths import HomeLayout
        from kappalake.runtime.spark import build_spark
        from kappalake.runtime.stack import ClickHouseEndpoint, LocalStack

        layout = HomeLayout.from_env()
        stack = LocalStack(layout)
        stack.up([TopicSpec("payments", args.partitions)])
        endpoint = ClickHouseEndpoint(layout)  # the local target's ClickHouse (metrics table, gold)
        endpoint.up()
        print(f"topic payments: {args.partitions} partitions, {os.cpu_count()} cores")
        try:
            target = load_target()
            pipeline = load_pipeline("payments", target=target.name)
            batch = str(args.batch or pipeline.source.options.get("maxOffsetsPerTrigger", 500_000))
            source = pipeline.source.model_copy(update={"options": {**pipeline.source.options,
                                                                    "maxOffsetsPerTrigger": batch}})
            ctx = RunContext(pipeline.model_copy(update={"source": source}), target, layout)

            def scratch(name: str) -> RunContext:
                root = f"{target.storage.root}-{name}"
                return RunContext(ctx.pipeline, target.model_copy(update={"storage": target.storage.model_copy(
                    update={"root": root})}), layout)
            started = time.perf_counter()
            summary = produce(ctx, events=args.events, start_time=datetime(2026, 11, 1, tzinfo=timezone.utc),
                              options=GeneratorOptions(seed=1, duplicate_fraction=0.02, malformed_fraction=0.01))
            print(f"produced {summary.sent} events in {time.perf_counter() - started:.1f}s")
            raw_messages, raw_rate, raw_rates = raw_consume_limit(stack.bootstrap_servers(), "payments",
                                                                  args.raw_passes)
            print(f"raw consume (confluent-kafka): {raw_messages} msgs, best of {len(raw_rates)} passes "
                  f"{raw_rate:,.0f} msgs/s (passes: {', '.join(f'{r:,.0f}' for r in raw_rates)})")

            spark = build_spark(target, "kappalake-bench", layout)
            jit = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getCompilationMXBean()
            rates = {}
            for layer in ("bronze", "silver"):
                if not args.no_warmup:  # each layer right after its own warm-up, as a running job has it
                    started = time.perf_counter()
                    passes = max(1, args.warmup_passes) if layer == "bronze" else 1
                    for n in range(passes):
                        run_pipeline(scratch(f"warmup{n}"), [layer], Trigger(available_now=True), spark=spark)
                    print(f"{layer} warm-up, {passes} pass(es) (not counted): {time.perf_counter() - started:.0f}s")
                runs = []
                for n in range(max(1, args.repeats)):  # each into fresh tables, re-reading the whole topic
                    compiled_ms = jit.getTotalCompilationTime()
                    result = run_pipeline(ctx if n == 0 else scratch(f"measure{n}"), [layer],
                                          Trigger(available_now=True), spark=spark)
                    compiled_ms = jit.getTotalCompilationTime() - compiled_ms
                    progress = result.progress.get(f"{ctx.pipeline.name}.{layer}", [])
                    rows, rate = sustained_rate(progress, skip_first=args.no_warmup)
                    runs.append(rate)
                    print(f"{layer} run {n + 1}: {rows} events at {rate:,.0f} events/s over {len(progress)} batches "
                          f"(JIT compiling during the run: {compiled_ms / 1000:.1f}s)")
                    for p in progress:
                        print(f"  batch {p['batchId']}: {p['numInputRows']} rows, addBatch {p['durationMs']['addBatch']} ms")
                rates[layer] = statistics.median(runs)
                print(f"{layer}: median of {len(runs)} runs {rates[layer]:,.0f} events/s")
            spark.stop()
        finally:
            endpoint.down()
            stack.down()
    print(f"RESULT raw_rate={raw_rate:.0f} bronze_rate={rates['bronze']:.0f} silver_rate={rates['silver']:.0f} "
          f"bronze_ratio={rates['bronze'] / raw_rate:.3f} silver_ratio={rates['silver'] / raw_rate:.3f}")


if __name__ == "__main__":
    main()
