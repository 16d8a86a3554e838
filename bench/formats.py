"""Silver throughput of the same payment events as JSON, Avro and Protobuf, against the raw consume rate
of the same broker, in one run.

    python bench/formats.py [--events 1000000] [--repeats 2] [--partitions N]

Starts a fresh local stack (Kafka broker, ClickHouse endpoint, Schema Registry endpoint), produces the same
N payment events (seed 1, 2% duplicates, 1% malformed) to the topics of ``payments`` (JSON),
``payments_avro`` and ``payments_protobuf`` (both in the Confluent wire format, written by confluent-kafka's
serializers, schemas registered in the registry endpoint), measures the raw confluent-kafka consume rate
of the JSON topic (fastest of --raw-passes reads), then runs silver ``--available-now`` for each format:
one warm-up pass into scratch tables (not counted), then --repeats measured passes into fresh tables, the
median of their sustained events/s (first batch start to last batch end). Avro is decoded in the JVM by
Spark's from_avro; Protobuf in Python (mapInArrow), since spark-protobuf is not served here.
Ends with: RESULT json_rate=<events/s> avro_rate=<events/s> protobuf_rate=<events/s> avro_vs_json=<x>
raw_consume_rate=<msgs/s>
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

PIPELINES = {"json": "payments", "avro": "payments_avro", "protobuf": "payments_protobuf"}
GOAL_AVRO_VS_JSON = 1.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2, help="measured passes per format (default 2)")
    parser.add_argument("--raw-passes", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=os.cpu_count() or 1)
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
        from kappalake.runtime.stack import ClickHouseEndpoint, LocalStack, SchemaRegistryEndpoint

        layout = HomeLayout.from_env()
        stack, endpoint, registry = LocalStack(layout), ClickHouseEndpoint(layout), SchemaRegistryEndpoint(layout)
        stack.up([TopicSpec(topic, args.partitions) for topic in PIPELINES.values()])
        endpoint.up()
        registry.up()
        print(f"topics {', '.join(PIPELINES.values())}: {args.partitions} partitions each, {os.cpu_count()} cores")
        try:
            target = load_target()
            contexts = {fmt: RunContext(load_pipeline(name, target=target.name), target, layout)
                        for fmt, name in PIPELINES.items()}
            for fmt, ctx in contexts.items():
                started = time.perf_counter()
                summary = produce(ctx, events=args.events, start_time=datetime(2026, 11, 1, tzinfo=timezone.utc),
                                  options=GeneratorOptions(seed=1, duplicate_fraction=0.02, malformed_fraction=0.01))
                print(f"{fmt}: produced {summary.sent} events to {summary.topic} in "
                      f"{time.perf_counter() - started:.1f}s")
            raw_messages, raw_rate, raw_rates = raw_consume_limit(stack.bootstrap_servers(), "payments",
                                                                  args.raw_passes)
            print(f"raw consume of payments (confluent-kafka): {raw_messages} msgs, best of {len(raw_rates)} passes "
                  f"{raw_rate:,.0f} msgs/s")

            spark = build_spark(target, "kappalake-bench-formats", layout)

            def scratch(ctx: RunContext, name: str) -> RunContext:
                storage = target.storage.model_copy(update={"root": f"{target.storage.root}-{name}"})
                return RunContext(ctx.pipeline, target.model_copy(update={"storage": storage}), layout)

            rates: dict[str, float] = {}
            for fmt, ctx in contexts.items():
                started = time.perf_counter()
                run_pipeline(scratch(ctx, f"{fmt}-warmup"), ["silver"], Trigger(available_now=True), spark=spark)
                print(f"{fmt} silver warm-up (not counted): {time.perf_counter() - started:.0f}s")
                runs = []
                for n in range(max(1, args.repeats)):
                    result = run_pipeline(scratch(ctx, f"{fmt}-run{n}"), ["silver"], Trigger(available_now=True),
                                          spark=spark)
                    progress = result.progress.get(f"{ctx.pipeline.name}.silver", [])
                    rows, rate = sustained_rate(progress)
                    runs.append(rate)
                    print(f"{fmt} silver run {n + 1}: {rows} records at {rate:,.0f} events/s over "
                          f"{len(progress)} batches")
                rates[fmt] = statistics.median(runs)
                print(f"{fmt}: median {rates[fmt]:,.0f} events/s ({rates[fmt] / raw_rate:.3f} of raw consume)")
            spark.stop()
        finally:
            registry.down()
            endpoint.down()
            stack.down()
    ratio = rates["avro"] / rates["json"]
    print(f"avro_vs_json {ratio:.2f} (goal >= {GOAL_AVRO_VS_JSON}: {'met' if ratio >= GOAL_AVRO_VS_JSON else 'NOT met'}); "
          f"protobuf_vs_json {rates['protobuf'] / rates['json']:.2f}")
    print(f"RESULT json_rate={rates['json']:.0f} avro_rate={rates['avro']:.0f} protobuf_rate={rates['protobuf']:.0f} "
          f"avro_vs_json={ratio:.2f} raw_consume_rate={raw_rate:.0f}")


if __name__ == "__main__":
    main()
