"""Soak: a live job (bronze, silver, gold; 1-second trigger) at a steady rate for a long time, maintained.

    python bench/soak.py [--minutes 30] [--rate 5000] [--maintain-every 10] [--warmup 2]

Starts the local stack in a throw-away data dir, runs ``kappalake run payments --trigger "1 second"``
as its own process, produces ``--rate`` events/s (event time = now) with ``kappalake produce``, and runs
``kappalake maintain payments`` every ``--maintain-every`` minutes the way a scheduler would. Every
minute it samples, from outside the job (:mod:`bench.soak_probes`): batch duration p50/p95 (all
queries), the job's RSS, state rows and bytes, Delta active files / files on disk / log size, checkpoint
size, ClickHouse active parts, dashboard query p95 and Kafka lag. It prints the curve, the slope of each
figure over the second half, then stops producing, lets the job catch up, stops it with SIGTERM and
checks bronze, silver and gold against the produced events. The last line is

    RESULT minutes=.. batch_p95_ms_first=.. batch_p95_ms_last=.. batch_drift=.. rss_drift=.. files_max=..
           parts_max=.. query_p95_ms=.. lag_max=.. lost=.. doubled=..

``*_drift`` = median of the last ten sampled minutes over the first ten after warm-up. Goals (issue #24):
batch_drift <= 1.1, rss_drift <= 1.1, files and parts bounded, query_p95_ms <= 500, lost = 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import soak_probes as probes  # noqa: E402
from bench.common import REPO, bench_home, local_stack  # noqa: E402

VIEW_TABLE = "payments_card_velocity_1m"
GOLD_TABLES = [VIEW_TABLE, f"{VIEW_TABLE}_state", "payments_card_velocity_5m", "payments_card_velocity_5m_state"]
COLUMNS = ("min", "batches", "p50_ms", "p95_ms", "rss_mb", "state_rows", "state_mb", "files", "on_disk", "log_mb",
           "ckpt_mb", "parts", "query_p95", "lag")


def soak_conf(home: Path, args: argparse.Namespace) -> Path:
    """The project's conf with the soak's maintenance settings for payments (short VACUUM retention)."""
    conf = home / "conf"
    shutil.copytree(REPO / "conf", conf)
    with open(conf / "pipelines" / "payments.yml", "a") as handle:
        handle.write(f"\nmaintenance:\n  vacuum_retention: {args.vacuum_retention}\n"
                     f"  min_vacuum_retention: {args.min_vacuum_retention}\n")
    os.environ["KAPPALAKE_CONF"] = str(conf)
    return conf


def kappalake(*args: str, log: Path | None = None, nice: bool = False) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    command = [sys.executable, "-m", "kappalake.cli.app", *args]
    return subprocess.Popen(["nice", "-n", "19", *command] if nice else command, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


class Maintainer(threading.Thread):
    """Runs ``kappalake maintain payments`` every ``every`` seconds, at the lowest CPU priority (``nice``) as
    a cron job beside a live job on the same machine would; keeps (start, seconds, exit code)."""

    def __init__(self, every: float, log: Path) -> None:
        super().__init__(daemon=True)
        self.every, self.log, self.runs = every, log, []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.every):
            began = time.time()
            code = kappalake("maintain", "payments", log=self.log, nice=True).wait()
            self.runs.append((began, time.time() - began, code))
            print(f"  maintain at +{(began - START) / 60:.1f} min: {time.time() - began:.0f} s, exit {code}",
                  flush=True)


def produced(bootstrap: str) -> int:
    from kappalake.io.kafka.admin import end_offsets

    return sum(high for _, high in end_offsets(bootstrap, "payments").values())


def sample(ch, home: Path, job: subprocess.Popen, bootstrap: str, since: float,  # type: ignore[no-untyped-def]
           until: float) -> dict[str, float]:
    lake, runs = home / "lake", home / "runs" / "payments"
    lag = probes.lag(lake / "_checkpoints" / "payments", produced(bootstrap))
    tables = [f for f in (probes.delta_figures(lake / "payments" / t) for t in probes.DELTA_TABLES) if f]
    state_rows, state_bytes = probes.job_state(runs)
    parts = probes.active_parts(ch, GOLD_TABLES)
    queries = probes.query_times_ms(ch, VIEW_TABLE)
    return {"since": since, "until": until, "rss_mb": probes.tree_rss_bytes(job.pid) / 2**20,
            "state_rows": state_rows, "state_mb": state_bytes / 2**20,
            "files": max((t.active_files for t in tables), default=0),
            "on_disk": max((t.files_on_disk for t in tables), default=0),
            "log_mb": sum(t.log_bytes for t in tables) / 2**20,
            "ckpt_mb": probes.dir_bytes(lake / "_checkpoints" / "payments")[1] / 2**20,
            "parts": max(parts.values(), default=0), "query_p95": probes.quantile(queries, 0.95),
            "_queries": queries, "lag": lag}


def add_batch_durations(ch, curve: list[dict[str, float]]) -> None:  # type: ignore[no-untyped-def]
    """Batch count and duration p50/p95 of each sampled minute, read once the job has stopped: a batch's
    metrics row (stamped with its trigger time) is written when the batch ends, possibly minutes later."""
    for row in curve:
        durations = probes.batch_durations(ch, "payments", row["since"], row["until"])
        row.update(batches=len(durations), p50_ms=probes.quantile(durations, 0.5),
                   p95_ms=probes.quantile(durations, 0.95))


def print_curve(curve: list[dict[str, float]]) -> None:
    print(" ".join(f"{c:>10}" for c in COLUMNS))
    for row in curve:
        print(" ".join(f"{row[c]:>10.0f}" if c != "state_mb" else f"{row[c]:>10.1f}" for c in COLUMNS))
    half = curve[len(curve) // 2:]
    print("slope per hour over the second half: " + ", ".join(
        f"{c} {probes.slope_per_hour([r[c] for r in half]):+.1f}" for c in COLUMNS[1:]), flush=True)


def final_counts(ch, home: Path, bootstrap: str) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    """(produced, lost, doubled) over bronze, silver and gold (+ late pairs)."""
    from deltalake import DeltaTable

    from kappalake.ops.tables import delta_table_stats

    sent = produced(bootstrap)
    lake = home / "lake" / "payments"
    bronze = delta_table_stats(str(lake / "bronze")).rows  # type: ignore[union-attr]
    ids = DeltaTable(str(lake / "silver")).to_pyarrow_table(columns=["event_id"])["event_id"]
    silver_rows, silver_ids = len(ids), len(ids.unique())
    gold = int(ch.query(f"SELECT sum(txn_count) FROM `{VIEW_TABLE}` FINAL").result_rows[0][0] or 0)
    late_path = lake / "late_events"
    late = 0
    if delta_table_stats(str(late_path)) is not None:
        views = DeltaTable(str(late_path)).to_pyarrow_table(columns=["view"])["view"].to_pylist()
        late = views.count("card_velocity_1m")
    print(f"produced {sent:,}; bronze {bronze:,}; silver {silver_rows:,} rows ({silver_ids:,} ids); "
          f"gold 1m windows count {gold:,} + {late:,} late", flush=True)
    lost = max(0, sent - bronze) + max(0, sent - silver_ids) + max(0, sent - gold - late)
    doubled = max(0, bronze - sent) + (silver_rows - silver_ids) + max(0, gold + late - sent)
    return sent, lost, doubled


def main() -> None:
    global START
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="sampled minutes after warm-up")
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes before sampling counts")
    parser.add_argument("--rate", type=float, default=5000.0, help="events per second")
    parser.add_argument("--maintain-every", type=float, default=10.0, help="minutes between maintain runs")
    parser.add_argument("--vacuum-retention", default="20 minutes")
    parser.add_argument("--min-vacuum-retention", default="15 minutes")
    parser.add_argument("--keep", help="copy the data dir's logs here at the end")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the job, producer and stack on the way out
    import clickhouse_connect

    from kappalake.io.kafka.admin import TopicSpec
    from kappalake.runtime.stack import ClickHouseEndpoint

    with bench_home() as home, local_stack([TopicSpec("payments", 3)]) as stack:
        soak_conf(home, args)
        logs = home / "logs"
        logs.mkdir()
        total = (args.warmup + args.minutes) * 60
        job = kappalake("run", "payments", "--trigger", "1 second", log=logs / "job.log")
        time.sleep(20)  # the JVM starts and the queries are planned before events flow
        producer = kappalake("produce", "payments", "--rate", str(args.rate), "--duration", str(total),
                             log=logs / "produce.log")
        START = time.time()
        maintainer = Maintainer(args.maintain_every * 60, logs / "maintain.log")
        maintainer.start()
        ch = clickhouse_connect.get_client(dsn=ClickHouseEndpoint(stack.layout).dsn())
        curve = []
        try:
            for minute in range(1, int(args.warmup + args.minutes) + 1):
                time.sleep(max(0.0, START + minute * 60 - time.time()))
                if job.poll() is not None:
                    raise SystemExit(f"the job exited with {job.returncode}; see {logs / 'job.log'}")
                row = sample(ch, home, job, stack.bootstrap_servers(), START + (minute - 1) * 60, START + minute * 60)
                row["min"] = minute
                print(" ".join(f"{c}={row[c]:.0f}" for c in COLUMNS if c in row), flush=True)
                if minute > args.warmup:
                    curve.append(row)
            producer.wait()
            maintainer.halt.set()
            maintainer.join()
            deadline = time.time() + 600
            checkpoints = home / "lake" / "_checkpoints" / "payments"
            while probes.lag(checkpoints, produced(stack.bootstrap_servers())) > 0 and time.time() < deadline:
                time.sleep(5)
            job.send_signal(signal.SIGTERM)
            code = job.wait(timeout=300)
            print(f"job stopped with SIGTERM: exit {code}", flush=True)
            total_sent, lost, doubled = final_counts(ch, home, stack.bootstrap_servers())
            add_batch_durations(ch, curve)
        finally:
            for process in (producer, job):
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
            if args.keep:
                shutil.copytree(logs, args.keep, dirs_exist_ok=True)
    print_curve(curve)
    window = max(1, min(10, len(curve) // 2))
    first, last = curve[:window], curve[-window:]
    # a minute in which no batch started (one outlasted it) has no p95 of its own: the window's median skips it
    p95_first = statistics.median([r["p95_ms"] for r in first if r["batches"]] or [float("nan")])
    p95_last = statistics.median([r["p95_ms"] for r in last if r["batches"]] or [float("nan")])
    rss_first = statistics.median(r["rss_mb"] for r in first)
    rss_last = statistics.median(r["rss_mb"] for r in last)
    queries = [q for r in curve for q in r["_queries"]]
    failures = sum(1 for _, _, c in maintainer.runs if c != 0)
    print(f"maintain: {len(maintainer.runs)} runs, {failures} failed, "
          f"{statistics.fmean(s for _, s, _ in maintainer.runs) if maintainer.runs else 0:.0f} s each; "
          f"{total_sent:,} events produced")
    print(f"RESULT minutes={len(curve)} batch_p95_ms_first={p95_first:.0f} batch_p95_ms_last={p95_last:.0f} "
          f"batch_drift={p95_last / p95_first:.2f} rss_drift={rss_last / rss_first:.2f} "
          f"files_max={max(r['files'] for r in curve)} parts_max={max(r['parts'] for r in curve)} "
          f"query_p95_ms={probes.quantile(queries, 0.95):.0f} lag_max={max(r['lag'] for r in curve)} "
          f"lost={lost} doubled={doubled}", flush=True)


START = time.time()

if __name__ == "__main__":
    main()
