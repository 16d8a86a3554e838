"""Replay throughput: the silver layer over 1M payment events in live mode and as a backfill, same run.

* live mode: the live query as it runs in production, micro-batches capped at the live batch size
  (``--live-batch``, default 50k: about 5 s of a 10k events/s stream, the latency a live job is tuned for);
* backfill: ``kappalake backfill payments --layer silver --from-earliest`` with its large batches
  (``--backfill-batch``, default the command's 2M), its own checkpoint and the insert-only MERGE.

Both read the same topic into separate tables after an uncounted warm-up pass; rates are records from
the first batch start to the last batch end (start-up excluded). Ends with
``RESULT live_rate=<events/s> backfill_rate=<events/s> ratio=<backfill/live>``.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone

from common import bench_home, sustained_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--live-batch", type=int, default=50_000)
    parser.add_argument("--backfill-batch", type=int, default=2_000_000)
    args = parser.parse_args()

    with bench_home():
        import os

        from kappalake.config.loader import load_pipeline, load_target
        from kappalake.generator import GeneratorOptions
        from kappalake.io.delta.stream import Trigger
        from kappalake.io.kafka.admin import TopicSpec
        from kappalake.pipelines.backfill import plan_backfill, run_backfill
        from kappalake.pipelines.produce import produce
        from kappalake.pipelines.runner import run_pipeline
        from kappalake.runtime.context import RunContext
        from kappalake.runtime.paths import HomeLayout
        from kappalake.runtime.spark import build_spark
        from kappalake.runtime.stack import ClickHouseEndpoint, LocalStack

        os.environ.setdefault("KAPPALAKE_PII_KEY", "bench-key")
        layout = HomeLayout.from_env()
        stack = LocalStack(layout)
        stack.up([TopicSpec("payments", 3)])
        endpoint = ClickHouseEndpoint(layout)  # the local target's ClickHouse (metrics table, gold)
        endpoint.up()
        try:
            target = load_target()
            pipeline = load_pipeline("payments", target=target.name)
            source = pipeline.source.model_copy(update={"options": {
                **pipeline.source.options, "maxOffsetsPerTrigger": str(args.live_batch)}})
            live = RunContext(pipeline.model_copy(update={"source": source}), target, layout)

            def rooted(suffix: str) -> RunContext:
                storage = target.storage.model_copy(update={"root": target.storage.root + suffix})
                return RunContext(live.pipeline, target.model_copy(update={"storage": storage}), layout)

            started = time.perf_counter()
            produce(live, events=args.events, start_time=datetime(2026, 11, 1, tzinfo=timezone.utc),
                    options=GeneratorOptions(seed=1, duplicate_fraction=0.02, malformed_fraction=0.01))
            print(f"produced {args.events} events in {time.perf_counter() - started:.1f}s")
            spark = build_spark(target, "kappalake-bench-backfill", layout)
            warm = rooted("-warmup")
            run_backfill(warm, plan_backfill(warm, "silver", from_earliest=True, max_offsets_per_trigger=250_000),
                         spark=spark)
            print("warm-up pass done (not counted)")

            result = run_pipeline(live, ["silver"], Trigger(available_now=True), spark=spark)
            rows, live_rate = sustained_rate(result.progress["payments.silver"])
            print(f"live mode: {rows} events at {live_rate:,.0f} events/s "
                  f"({len(result.progress['payments.silver'])} batches of <= {args.live_batch})")

            replay = rooted("-backfill")
            plan = plan_backfill(replay, "silver", from_earliest=True, max_offsets_per_trigger=args.backfill_batch)
            summary = run_backfill(replay, plan, spark=spark)
            progress = summary.result.progress["payments.silver"]
            rows, backfill_rate = sustained_rate(progress)
            print(f"backfill: {rows} events at {backfill_rate:,.0f} events/s ({len(progress)} batches of <= "
                  f"{args.backfill_batch}); rows written {summary.rows_written}")
            spark.stop()
        finally:
            endpoint.down()
            stack.down()
    print(f"RESULT live_rate={live_rate:.0f} backfill_rate={backfill_rate:.0f} ratio={backfill_rate / live_rate:.2f}")


if __name__ == "__main__":
    main()
