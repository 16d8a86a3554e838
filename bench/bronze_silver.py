"""Bronze and silver throughput against the raw consume rate of the same broker, in one run.

    python bench/bronze_silver.py [--events 1000000]

Produces N payment events (2% duplicates, 1% malformed) to a fresh local broker, measures the raw
confluent-kafka consume rate of that topic, then runs bronze and silver (each alone, availableNow,
batches of --batch records) and reports their sustained events/s: the steady state from the start of
the second batch to the end of the last (the first batch pays JIT warm-up and table creation; the
rate over all batches is printed too).
Ends with: RESULT raw_rate=<msgs/s> bronze_rate=<events/s> silver_rate=<events/s> bronze_ratio=<x> silver_ratio=<x>
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_home, raw_consume_rate, sustained_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=250_000, help="maxOffsetsPerTrigger")
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
        from kappalake.runtime.stack import LocalStack

        layout = HomeLayout.from_env()
        stack = LocalStack(layout)
        stack.up([TopicSpec("payments", 3)])
        try:
            target = load_target()
            pipeline = load_pipeline("payments", target=target.name)
            source = pipeline.source.model_copy(update={"options": {**pipeline.source.options,
                                                                    "maxOffsetsPerTrigger": str(args.batch)}})
            ctx = RunContext(pipeline.model_copy(update={"source": source}), target, layout)
            started = time.perf_counter()
            summary = produce(ctx, events=args.events, start_time=datetime(2026, 11, 1, tzinfo=timezone.utc),
                              options=GeneratorOptions(seed=1, duplicate_fraction=0.02, malformed_fraction=0.01))
            print(f"produced {summary.sent} events in {time.perf_counter() - started:.1f}s")
            raw_messages, raw_rate = raw_consume_rate(stack.bootstrap_servers(), "payments")
            print(f"raw consume (confluent-kafka): {raw_messages} msgs at {raw_rate:,.0f} msgs/s")

            spark = build_spark(target, "kappalake-bench", layout)
            rates = {}
            for layer in ("bronze", "silver"):
                result = run_pipeline(ctx, [layer], Trigger(available_now=True), spark=spark)
                progress = result.progress.get(f"{ctx.pipeline.name}.{layer}", [])
                rows, overall = sustained_rate(progress)
                steady_rows, rate = sustained_rate(progress, skip_first=True)
                rates[layer] = rate
                print(f"{layer}: {rows} events, {overall:,.0f} events/s over all {len(progress)} batches, "
                      f"{rate:,.0f} events/s sustained (after the first batch)")
                for p in progress:
                    print(f"  batch {p['batchId']}: {p['numInputRows']} rows, {p['durationMs']}")
            spark.stop()
        finally:
            stack.down()
    print(f"RESULT raw_rate={raw_rate:.0f} bronze_rate={rates['bronze']:.0f} silver_rate={rates['silver']:.0f} "
          f"bronze_ratio={rates['bronze'] / raw_rate:.3f} silver_ratio={rates['silver'] / raw_rate:.3f}")


if __name__ == "__main__":
    main()
