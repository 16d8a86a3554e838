"""Change data capture end to end: PostgreSQL -> Debezium (Kafka Connect) -> Kafka -> silver (mode cdc).

    python bench/cdc.py [--changes 100000] [--rate 1000] [--trigger "1 second"]

In a fresh data dir: ``kappalake stack up --with cdc`` (broker, ClickHouse endpoint, Schema Registry,
PostgreSQL, Kafka Connect with the Debezium Postgres connector), a live ``kappalake run orders --layer
silver`` job, then ``kappalake produce cdc --rate R --changes N`` (the seeded mix: inserts, updates, rapid
updates of one key, multi-row transactions, deletes, delete then re-insert, one ADD COLUMN).

Measured from outside the job:
- **p95_ms**: latency from the Postgres commit (``source.ts_ms``, which silver keeps as ``cdc_ts``) to the row
  version being visible in the silver Delta table. A poller reads the table (delta-rs) every 250 ms; each
  (key, LSN) it sees for the first time counts once, at the poll that saw it (so the figure is rounded up by
  up to one poll). Versions overwritten between two polls are not sampled; deletes are not sampled.
- **mismatched_rows**: after the job caught up, silver against ``SELECT * FROM orders`` on Postgres, every
  column including the one added mid-run: keys missing on either side plus rows that differ.
- **apply_rate / apply_ratio**: the same topic applied again from the beginning into fresh tables with
  ``--available-now`` (changes/s, first batch start to last batch end), over the raw confluent-kafka consume
  rate of the topic (best of 3 reads).

Ends with: RESULT changes=<n> apply_rate=<changes/s> apply_ratio=<x> p95_ms=<ms> mismatched_rows=<n>
Goal: mismatched_rows=0 and p95_ms <= 3000 at 1k changes/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_home, raw_consume_limit, sustained_rate

TOPIC = "pg.public.orders"
GOAL_P95_MS = 3000


def kappalake(*args: str, log: Path) -> subprocess.Popen:
    """A kappalake CLI command as a child process in its own session, output to ``log``."""
    return subprocess.Popen([sys.executable, "-m", "kappalake.cli.app", *args], stdout=open(log, "ab"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, start_new_session=True)


def must(*args: str, log: Path) -> None:
    code = kappalake(*args, log=log).wait()
    if code != 0:
        raise SystemExit(f"kappalake {' '.join(args)} exited with {code}; see {log}")


class SilverPoller(threading.Thread):
    """Reads the silver table every ``every`` seconds; the first sighting of each (key, LSN) is a sample of
    commit-to-visible latency (``cdc_ts`` is the Postgres commit time)."""

    def __init__(self, path: str, since: float, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.path, self.since, self.every = path, since, every
        self.seen: dict[int, int] = {}
        self.latencies_ms: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        from deltalake import DeltaTable

        table = None
        while not self.halt.wait(self.every):
            try:
                if table is None:
                    table = DeltaTable(self.path)
                else:
                    table.update_incremental()
                data = table.to_pyarrow_table(columns=["order_id", "cdc_lsn", "cdc_ts"])
            except Exception:  # noqa: BLE001 - the table does not exist yet, or a commit is being written
                continue
            now = time.time()
            keys = data.column("order_id").to_pylist()
            lsns = data.column("cdc_lsn").to_pylist()
            stamps = data.column("cdc_ts").cast("int64").to_pylist()  # microseconds since the epoch
            for key, lsn, micros in zip(keys, lsns, stamps, strict=True):
                if self.seen.get(key) != lsn:
                    self.seen[key] = lsn
                    if micros is not None and micros / 1e6 >= self.since:
                        self.latencies_ms.append((now - micros / 1e6) * 1000)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def caught_up(bootstrap: str, home: Path) -> bool:
    """The live silver query committed every record the topic holds (its checkpoint against end offsets)."""
    from bench.soak_probes import committed_offsets
    from kappalake.io.kafka.admin import end_offsets

    produced = sum(high for _, high in end_offsets(bootstrap, TOPIC).values())
    return committed_offsets(home / "lake" / "_checkpoints" / "orders" / "silver" / "live") >= produced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="changes per second driven into Postgres")
    parser.add_argument("--trigger", default="1 second", help="micro-batch interval of the live silver job")
    parser.add_argument("--keep", help="copy the data dir's logs here at the end")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with bench_home() as home:
        from kappalake.config.loader import load_pipeline, load_target
        from kappalake.io.delta.stream import Trigger
        from kappalake.io.kafka.admin import end_offsets
        from kappalake.ops.cdc_check import compare_with_postgres
        from kappalake.pipelines.runner import run_pipeline
        from kappalake.runtime.context import RunContext
        from kappalake.runtime.paths import HomeLayout
        from kappalake.runtime.spark import build_spark
        from kappalake.runtime.stack import LocalStack, PostgresServer

        logs = home / "logs"
        logs.mkdir()
        layout = HomeLayout.from_env()
        job = None
        try:
            started = time.time()
            must("stack", "up", "--with", "cdc", log=logs / "stack.log")
            print(f"stack up --with cdc: {time.time() - started:.0f}s", flush=True)
            bootstrap = LocalStack(layout).bootstrap_servers()
            postgres = PostgresServer(layout).status().server
            assert postgres is not None
            target = load_target()
            ctx = RunContext(load_pipeline("orders", target=target.name), target, layout)
            silver_path = ctx.table_path("silver")

            job = kappalake("run", "orders", "--layer", "silver", "--trigger", args.trigger, log=logs / "job.log")
            time.sleep(25)  # JVM start and query planning before changes flow
            load_start = time.time()
            poller = SilverPoller(silver_path, since=load_start)
            poller.start()
            must("produce", "cdc", "--rate", str(args.rate), "--changes", str(args.changes), log=logs / "produce.log")
            load_seconds = time.time() - load_start
            print(f"produced {args.changes} changes in {load_seconds:.0f}s "
                  f"({args.changes / load_seconds:,.0f}/s)", flush=True)
            deadline = time.time() + 900
            while not caught_up(bootstrap, home) and time.time() < deadline:
                if job.poll() is not None:
                    raise SystemExit(f"the silver job exited with {job.returncode}; see {logs / 'job.log'}")
                time.sleep(2)
            time.sleep(1)
            poller.halt.set()
            poller.join()
            job.send_signal(signal.SIGTERM)
            print(f"silver job stopped with SIGTERM: exit {job.wait(timeout=300)}", flush=True)
            job = None
            check = compare_with_postgres(postgres.dsn, "orders", "order_id", silver_path)
            bad = check.mismatched
            print(f"compare: {check.source_rows} rows in Postgres, {check.silver_rows} in silver; missing "
                  f"{check.missing}, extra {check.extra}, different {check.different}", flush=True)
            for line in check.examples:
                print(f"  {line}")
            latencies = poller.latencies_ms
            p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
            print(f"commit -> visible in silver: {len(latencies)} samples, p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
                  f"max {max(latencies, default=float('nan')):.0f} ms", flush=True)

            total = sum(high - low for low, high in end_offsets(bootstrap, TOPIC).values())
            _, raw_rate, _ = raw_consume_limit(bootstrap, TOPIC, passes=3)
            scratch = target.model_copy(update={"storage": target.storage.model_copy(
                update={"root": f"{target.storage.root}-apply"})})
            spark = build_spark(scratch, "kappalake-bench-cdc", layout)
            result = run_pipeline(RunContext(ctx.pipeline, scratch, layout), ["silver"], Trigger(available_now=True),
                                  spark=spark)
            rows, apply_rate = sustained_rate(result.progress.get("orders.silver", []))
            spark.stop()
            print(f"apply from the beginning: {rows} changes (topic holds {total}) at {apply_rate:,.0f}/s; raw consume "
                  f"{raw_rate:,.0f} msgs/s", flush=True)
        finally:
            if job is not None and job.poll() is None:
                job.send_signal(signal.SIGTERM)
                job.wait(timeout=120)
            subprocess.run([sys.executable, "-m", "kappalake.cli.app", "stack", "down"], capture_output=True)
            if args.keep:
                shutil.copytree(logs, Path(args.keep), dirs_exist_ok=True)
    verdict = "met" if bad == 0 and p95 <= GOAL_P95_MS else "NOT met"
    print(f"goal mismatched_rows=0 and p95_ms <= {GOAL_P95_MS} at {args.rate:.0f} changes/s: {verdict}")
    print(f"RESULT changes={args.changes} apply_rate={apply_rate:.0f} apply_ratio={apply_rate / raw_rate:.3f} "
          f"p95_ms={p95:.0f} mismatched_rows={bad}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
