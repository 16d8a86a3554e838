"""Gold in real time: live latency, live capacity, catch-up rate against Flink, silver against raw, in one run.

    python bench/gold.py [--live-rate 10000] [--live-seconds 60] [--steps 20000,30000,50000,75000]
                         [--step-seconds 30] [--events 1000000] [--flink-repeat 3] [--skip-flink]

All on one machine, one fresh local stack (the real Kafka broker; ClickHouse is ``CLICKHOUSE_DSN`` when
set, else the embedded chDB engine under the bench home):

1. Flink peer first (``../shared/peers/flink_peer.py`` in its own venv, ``bench/flink.py``), on the
   same broker: it recreates the topics ``payments`` and ``payments-empty``; ours have other names.
2. Live: a gold job (``payments``, 1-second trigger) in its own process; this script produces payment
   events at --live-rate for --live-seconds (event time = send time, taken by the producer) and a
   reader polls the 1-minute view the way a dashboard does (FINAL, a ClickHouse client of its own) every
   0.2 s. Per event: the moment its window's count first included it, minus its send time. Every
   window's final values are checked against the produced events. The reader runs in this process
   against a server; with chDB (one process per data directory) it runs as a thread of the job's
   process, with its own chDB connection, and streams what it sees to a file this script follows.
3. Live capacity: the same job, rates stepped up (--steps, --step-seconds each); the highest rate whose
   p95 stays under 5 s with every event of the step visible within 10 s of the step's end.
4. Catch-up: --events payment events already in Kafka, gold ``--available-now``: end to end (job call to
   return) and net of start-up (first batch start to last batch end).
5. Silver over the raw confluent-kafka consume rate of the catch-up topic (fastest of 4 reads), silver
   measured after one warm-up pass.

Ends with ``RESULT p50_ms=.. p95_ms=.. p99_ms=.. windows=.. mismatched=.. live_capacity=.. gold_rate=..
flink_window_rate=.. flink_ratio=.. silver_ratio=..`` (rates net of start-up; flink_ratio = gold_rate /
flink_window_rate; 0 with the reason printed when the Flink peer cannot run).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.common import bench_home, local_stack, raw_consume_limit, sustained_rate  # noqa: E402
from bench.gold_live import Poller, Sent, latencies, load_reached, mismatched, produce_paced, quantile  # noqa: E402

LIVE_TOPIC, CATCHUP_TOPIC = "gold_live", "gold_catchup"
PARTITIONS = os.cpu_count() or 2


def context(topic: str):  # type: ignore[no-untyped-def]
    """The payments pipeline on ``topic``, its gold tables suffixed with the topic."""
    from kappalake.config.loader import load_pipeline, load_target
    from kappalake.runtime.context import RunContext
    from kappalake.runtime.paths import HomeLayout

    target = load_target()
    pipeline = load_pipeline("payments", target=target.name)
    views = {name: view.model_copy(update={"clickhouse": view.clickhouse.model_copy(
        update={"table": f"{view.clickhouse.table}_{topic}"})}) for name, view in pipeline.gold.views.items()}
    pipeline = pipeline.model_copy(update={
        "source": pipeline.source.model_copy(update={"subscribe": [topic], "partitions": PARTITIONS}),
        "gold": pipeline.gold.model_copy(update={"views": views})})
    storage = target.storage.model_copy(update={"root": f"{target.storage.root}-{topic}"})  # own checkpoints
    return RunContext(pipeline, target.model_copy(update={"storage": storage}), HomeLayout.from_env())


def live_child(topic: str, reached: str | None) -> None:
    """The live gold job (run in its own process by ``--child``): 1-second trigger until SIGTERM. With
    ``reached`` (chDB), the dashboard reader runs here too, on its own connection, writing to that file."""
    from kappalake.io.delta.stream import Trigger
    from kappalake.pipelines.runner import run_pipeline

    import logging

    logging.basicConfig(format="%(asctime)s %(name)s %(message)s")
    for name in ("kappalake.pipelines.gold", "kappalake.io.clickhouse.windows"):
        logging.getLogger(name).setLevel(logging.DEBUG)  # per-batch stage timings into the job's log
    ctx = context(topic)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    ready: list[Poller] = []

    def until(tracker) -> bool:  # type: ignore[no-untyped-def]
        if not ready and tracker.history.get("payments.gold"):
            poller = Poller(ctx.target.clickhouse.dsn, view_table(topic), out=Path(reached)) if reached else None
            if poller is not None:
                poller.start()
            ready.append(poller)  # type: ignore[arg-type]
            print("READY", flush=True)
        return bool(stop)

    try:
        run_pipeline(ctx, ["gold"], Trigger(interval="1 second"), until=until)
    finally:
        if ready and ready[0] is not None:
            ready[0].stop()


def view_table(topic: str) -> str:
    return context(topic).pipeline.gold.views["card_velocity_1m"].clickhouse.table


def start_live_job(topic: str, reached: Path | None, log: Path) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "--child", topic] + (["--reached", str(reached)] if reached else [])
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    assert job.stdout is not None
    for line in job.stdout:
        if line.startswith("READY"):
            return job
    raise RuntimeError(f"the live gold job ended before its first batch (exit {job.wait()}); see {log}")


def stop_job(job: subprocess.Popen[str]) -> None:
    job.send_signal(signal.SIGTERM)
    try:
        job.wait(timeout=120)
    except subprocess.TimeoutExpired:
        job.kill()
        job.wait()


def run_live(args: argparse.Namespace, bootstrap: str, dsn: str, key: bytes, work: Path) -> dict[str, float]:
    table = view_table(LIVE_TOPIC)
    in_job = dsn.startswith("chdb:")
    reached = work / "reached.jsonl" if in_job else None
    job = start_live_job(LIVE_TOPIC, reached, Path(args.job_log))
    poller = None if in_job else Poller(dsn, table)
    if poller is not None:
        poller.start()

    def seen():  # type: ignore[no-untyped-def]
        return load_reached(reached) if reached is not None else poller

    try:
        sent = Sent()
        since = datetime.now(timezone.utc)
        began = time.time()
        achieved = produce_paced(bootstrap, LIVE_TOPIC, args.live_rate, args.live_seconds, sent, key, seed=11)
        ended = time.time()
        time.sleep(15)
        view = seen()
        values, missing = latencies(sent, view, began, ended)
        p50, p95, p99 = (quantile(values, q) * 1000 for q in (0.5, 0.95, 0.99))
        print(f"live {args.live_rate:.0f}/s for {args.live_seconds:.0f}s (achieved {achieved:,.0f}/s): "
              f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms; {missing} events never seen; "
              f"poll p95 {quantile(view.polls, 0.95) * 1000:.0f} ms", flush=True)
        capacity = 0.0
        for rate in [float(r) for r in args.steps.split(",") if r]:
            began = time.time()  # one Sent for all phases: an event's rank counts its window's earlier events
            achieved = produce_paced(bootstrap, LIVE_TOPIC, rate, args.step_seconds, sent, key, seed=int(rate))
            ended = time.time()
            time.sleep(10)
            step_values, step_missing = latencies(sent, seen(), began, ended)
            step_p95 = quantile(step_values, 0.95)
            ok = step_p95 < 5.0 and step_missing == 0 and achieved >= 0.95 * rate
            print(f"step {rate:,.0f}/s (achieved {achieved:,.0f}/s): p95 {step_p95 * 1000:.0f} ms, "
                  f"{step_missing} not visible 10 s after the step -> {'keeps up' if ok else 'falls behind'}",
                  flush=True)
            if not ok:
                break
            capacity = rate
        time.sleep(5)
    finally:
        if poller is not None:
            poller.stop()
        stop_job(job)
    windows, bad = mismatched(dsn, table, sent.events, since)
    print(f"final check: {windows} windows, {bad} mismatched against the produced events", flush=True)
    return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "windows": windows, "mismatched": bad,
            "live_capacity": capacity}


def run_catchup(args: argparse.Namespace, bootstrap: str) -> dict[str, float]:
    from kappalake.generator import GeneratorOptions
    from kappalake.io.delta.stream import Trigger
    from kappalake.pipelines.produce import produce
    from kappalake.pipelines.runner import run_pipeline
    from kappalake.runtime.spark import build_spark

    ctx = context(CATCHUP_TOPIC)
    produce(ctx, events=args.events, start_time=datetime(2026, 11, 1, tzinfo=timezone.utc),
            options=GeneratorOptions(seed=1, duplicate_fraction=0.02, malformed_fraction=0.01))
    spark = build_spark(ctx.target, "kappalake-bench-gold", ctx.layout)
    started = time.perf_counter()
    result = run_pipeline(ctx, ["gold"], Trigger(available_now=True), spark=spark)
    e2e = time.perf_counter() - started
    rows, net = sustained_rate(result.progress.get("payments.gold", []))
    print(f"catch-up: {rows} records, end to end {e2e:.1f}s ({rows / e2e:,.0f}/s incl. JVM/query start-up), "
          f"net of start-up {net:,.0f}/s")
    for p in result.progress.get("payments.gold", []):
        print(f"  batch {p['batchId']}: {p['numInputRows']} rows, {p['durationMs'].get('addBatch', 0)} ms in foreachBatch")
    _, raw, passes = raw_consume_limit(bootstrap, CATCHUP_TOPIC)
    silver_rates = []
    for n in range(2):  # the first is a warm-up
        root = f"{ctx.target.storage.root}-silver{n}"
        silver_ctx = type(ctx)(ctx.pipeline, ctx.target.model_copy(update={"storage": ctx.target.storage.model_copy(
            update={"root": root})}), ctx.layout)
        progress = run_pipeline(silver_ctx, ["silver"], Trigger(available_now=True), spark=spark).progress
        silver_rates.append(sustained_rate(progress.get("payments.silver", []))[1])
    print(f"raw consume {raw:,.0f} msgs/s (passes {', '.join(f'{r:,.0f}' for r in passes)}); silver "
          f"{silver_rates[-1]:,.0f}/s after a warm-up pass ({silver_rates[0]:,.0f}/s)")
    spark.stop()
    return {"gold_rate": net, "gold_rate_e2e": rows / e2e, "silver_ratio": silver_rates[-1] / raw}


def run_flink(args: argparse.Namespace, bootstrap: str) -> tuple[float, str]:
    if args.skip_flink:
        return 0.0, "--skip-flink"
    from flink import PeerUnavailable, run_peer

    try:
        return run_peer(bootstrap, events=args.events, repeat=args.flink_repeat)["flink_window_rate"], ""
    except PeerUnavailable as exc:
        return 0.0, str(getattr(exc, "reason", exc))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live-rate", type=float, default=10_000)
    parser.add_argument("--live-seconds", type=float, default=60)
    parser.add_argument("--steps", default="20000,30000,50000,75000")
    parser.add_argument("--step-seconds", type=float, default=30)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--flink-repeat", type=int, default=3)
    parser.add_argument("--skip-flink", action="store_true")
    parser.add_argument("--skip-catchup", action="store_true", help="live phases only (profiling); no RESULT line")
    parser.add_argument("--job-log", default="/tmp/kappalake-bench-gold-live.log",
                        help="the live job's log (per-batch stage timings at debug level)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--reached", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        live_child(args.child, args.reached)
        return
    with bench_home() as home:
        from kappalake.io.clickhouse.client import resolve
        from kappalake.io.kafka.admin import TopicSpec

        with local_stack([TopicSpec(LIVE_TOPIC, PARTITIONS), TopicSpec(CATCHUP_TOPIC, PARTITIONS)]) as stack:
            bootstrap = stack.bootstrap_servers()
            dsn = resolve(context(LIVE_TOPIC).target.clickhouse.dsn)  # the endpoint: read from outside the job
            flink_rate, why = run_flink(args, bootstrap)
            print(f"flink window rate (net of start-up): {flink_rate:,.0f}/s" + (f" ({why})" if why else ""))
            live = run_live(args, bootstrap, dsn, os.environ["KAPPALAKE_PII_KEY"].encode(), home)
            if args.skip_catchup:
                return
            catchup = run_catchup(args, bootstrap)
    ratio = catchup["gold_rate"] / flink_rate if flink_rate else 0.0
    print(f"RESULT p50_ms={live['p50_ms']:.0f} p95_ms={live['p95_ms']:.0f} p99_ms={live['p99_ms']:.0f} "
          f"windows={live['windows']} mismatched={live['mismatched']} live_capacity={live['live_capacity']:.0f} "
          f"gold_rate={catchup['gold_rate']:.0f} flink_window_rate={flink_rate:.0f} flink_ratio={ratio:.2f} "
          f"silver_ratio={catchup['silver_ratio']:.3f}")


if __name__ == "__main__":
    main()
