"""Reliability: SIGKILL the running bronze/silver/gold job at chosen moments and restart it, then feed
hostile payloads through the real parse; count what was lost, duplicated or left unaccounted.

    python bench/reliability.py [--kills 20] [--events 2000] [--bad-inputs 2000] [--seed 6]

Crash part (real local broker, Spark, Delta, chDB; the job is ``tests/integration/crash_job.py`` in its
own process group with its own chDB directory, the harness of tests/integration/test_crash_recovery.py):
produce --events payment events (5% duplicates, 3% malformed; more rounds whenever fewer than three
micro-batches wait), start the live job (bronze, silver and gold in one Spark application, 1-second
trigger, 200 records per micro-batch) and SIGKILL its process group --kills times, each at a kill point
of a seeded schedule (start-up; a Delta data file written but not committed; Delta committed but the
checkpoint commit not; silver committed but not its dead letters; in a gold batch before, during and
after a view's ClickHouse writes (public table written, state table not); between batches) and restart
it; then drain with an availableNow run. Bronze must hold every record once, silver every unique valid
event once, the dead-letter table every malformed record once, and both ClickHouse views (FINAL) must
equal an independent pandas computation (a gold batch merged twice would double counts and sums).

Hostile part (Spark only): --bad-inputs generated payloads (random bytes, invalid UTF-8, deep nesting,
huge strings, out-of-range numbers, NaN/Infinity, wrong types, missing/extra/null fields, null keys,
duplicate JSON keys, far timestamps, oversized, not-quite-JSON text) parsed as one DataFrame; each must
end valid or dead-lettered with a reason.

Ends with: RESULT kill_points=<n> restarts=<n> produced=<n> lost=<n> duplicated=<n> bad_inputs=<n> unaccounted=<n>
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_home

UTC = timezone.utc
TOPIC = "payments-reliability"
BATCH = 200  # records per micro-batch (maxOffsetsPerTrigger): small, so a kill soon after start lands in one


# --------------------------------------------------------------------------- crash part

def crash_scenario(args: argparse.Namespace, home: Path) -> dict:
    from kappalake.config.loader import load_target
    from kappalake.runtime.context import RunContext
    from kappalake.runtime.paths import HomeLayout
    from kappalake.runtime.stack import LocalStack
    from tests.integration.crash_job import (
        Feed, JobSpec, committed_records, crash_loop, dump_gold_tables, expected_events, gold_differences,
        lake_accounting, phase_summary, pipeline_for, records_by_round, run_to_end,
    )

    layout = HomeLayout.from_env()
    work = home / "crash"
    work.mkdir()
    spec = JobSpec(pipeline="payments", topic=TOPIC, lake=str(work / "lake"), dsn=f"chdb://{work / 'ch'}",
                   stack_home=str(layout.home), job_home=str(work / "job-home"), max_offsets=BATCH)
    spec_path = spec.write(work / "spec.json")
    feed = Feed(RunContext(pipeline_for(spec), load_target(), layout), seed=args.seed)
    feed.round(args.events)
    print(f"produced {feed.produced} records to {TOPIC}")

    def refill(layer: str | None) -> None:  # keep three batches or more waiting for the query to be killed
        committed = committed_records(spec)
        if feed.produced - (committed[layer] if layer else min(committed.values())) < 3 * BATCH:
            feed.round(600)

    started = time.monotonic()
    kills = crash_loop(spec_path, spec, args.kills, args.seed, work / "logs", refill=refill)
    crash_seconds = time.monotonic() - started
    code, drained = run_to_end(spec_path, spec, work / "drain.log", "--available-now", "--max-offsets", "5000",
                               timeout=1800)
    if code != 0:
        raise SystemExit(f"the drain run after the last kill failed (exit {code}):\n{drained.stderr_tail()}")

    records, rounds = records_by_round(LocalStack(layout).bootstrap_servers(), TOPIC, feed.ends)
    events = expected_events(spec, rounds)
    accounting = lake_accounting(spec, records, set(events.event_id))
    gold = dump_gold_tables(spec_path, spec, work / "gold")
    return {"kills": kills, "phases": phase_summary(kills), "seconds": crash_seconds, "produced": len(records),
            "rounds": len(rounds), "accounting": accounting,
            "gold_differences": gold_differences(spec, gold, events),
            "gold_rows": {name: len(frame) for name, (frame, _) in gold.items()},
            "gold_raw_rows": {name: raw for name, (_, raw) in gold.items()}}


# --------------------------------------------------------------------------- hostile part

REQUIRED = ("event_id", "card_id", "merchant_id", "amount", "currency", "country", "event_time")
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "BRL", "INR")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hostile_payloads(count: int, seed: int, arrival: datetime) -> list[tuple[str, bytes | None, bytes | None, str]]:
    """(family, key, value, expected: accept|reject|any) for ``count`` generated records, seeded."""
    rng = random.Random(seed)

    def text(n: int) -> str:
        return "".join(rng.choice("abcxyz-_é€ 0123456789\u0000\u2028\"\\/") for _ in range(rng.randint(1, n)))

    def event() -> dict:
        return {"event_id": text(20), "card_id": text(12), "merchant_id": text(12),
                "amount": rng.randint(0, 100_000_000) / 100, "currency": rng.choice(CURRENCIES), "country": text(4),
                "event_time": iso(arrival - timedelta(milliseconds=rng.randint(-3_599_000, 10 * 365 * 86_400_000)))}

    def raw(payload: dict, field: str, token: str) -> bytes:
        marker = "\u0000MARK\u0000"
        return json.dumps({**payload, field: marker}).encode().replace(json.dumps(marker).encode(), token.encode())

    def junk_value():
        return rng.choice([None, True, 1, -1.5, "x", [1, [2, {"a": None}]], {"k": {"k": [1]}}, "", 10 ** 40])

    families = {
        "valid": lambda e: (json.dumps(e).encode(), "accept"),
        "extra_fields": lambda e: (json.dumps({**{text(8): junk_value() for _ in range(rng.randint(1, 4))},
                                               "_corrupt_record": "x", **e}).encode(), "accept"),
        "random_bytes": lambda e: (bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 400))), "any"),
        "invalid_utf8": lambda e: ((lambda t, at: t[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"])
                                    + t[at:])(json.dumps(e).encode(), rng.randint(0, 60)), "reject"),
        "not_an_object": lambda e: (json.dumps(rng.choice([[e], "text", 42, None, True])).encode(), "reject"),
        "not_quite_json": lambda e: (rng.choice([json.dumps(e).replace('"', "'"), json.dumps(e) + " trailing",
                                                 "/*c*/" + json.dumps(e), json.dumps(e)[:-1] + ",}"]).encode(),
                                     "reject"),
        # Spark's parser alone reads only the first value of '{..}{..}'; parse_events dead-letters the record.
        "two_objects": lambda e: (rng.choice([json.dumps(e) + json.dumps({**e, "amount": -1}),
                                              json.dumps(e) + " " + json.dumps(e), json.dumps(e) + "{}",
                                              json.dumps(e) + "\n" + json.dumps(e)]).encode(), "reject"),
        "truncated": lambda e: ((lambda t: t[:rng.randint(0, len(t) - 1)])(json.dumps(e).encode()), "reject"),
        "missing_required": lambda e: (lambda gone: (json.dumps({k: v for k, v in e.items() if k != gone}).encode(),
                                                     "reject"))(rng.choice(REQUIRED)),
        "null_required": lambda e: (json.dumps({**e, rng.choice(REQUIRED): None}).encode(), "reject"),
        "wrong_type": lambda e: (raw(e, rng.choice(["amount", "event_time"]),
                                     rng.choice(['"free"', "true", "[1]", '{"v": 1}', '"yesterday"'])), "reject"),
        "out_of_range": lambda e: (raw(e, "amount", rng.choice(["-0.01", "1000000.01", "1e400", "-1e400", "12.345",
                                                                "123456789012345678901234567890"])), "reject"),
        "nan_infinity": lambda e: (raw(e, "amount", rng.choice(["NaN", "Infinity", "-Infinity", '"NaN"'])), "reject"),
        "duplicate_keys": lambda e: (json.dumps(e).encode()[:-1] + b', "amount": ' +
                                     json.dumps(junk_value()).encode() + b"}", "any"),
        "future_time": lambda e: (json.dumps({**e, "event_time": iso(rng.choice([
            arrival + timedelta(hours=1, seconds=1), arrival + timedelta(days=365),
            datetime(9999, 12, 31, tzinfo=UTC)]))}).encode(), "reject"),
        "past_time": lambda e: (json.dumps({**e, "event_time": rng.choice(["0001-01-01T00:00:00Z",
                                                                           "1900-02-28T00:00:00Z",
                                                                           "1969-12-31T23:59:59.999Z"])}).encode(),
                                "accept"),
        "garbage_time": lambda e: (json.dumps({**e, "event_time": rng.choice(["+294248-01-01T00:00:00Z", "2026-02-30",
                                                                              "soon", "", "0000-00-00"])}).encode(),
                                   "any"),
        "deep_nesting": lambda e: (raw(e, rng.choice(["nested", "event_id", "amount"]),
                                       (lambda d: "[" * d + "]" * d)(rng.choice([10, 500, 1500, 5000]))), "any"),
        "huge_string": lambda e: (json.dumps({**e, "note": "x" * rng.choice([1000, 100_000, 999_000, 1_100_000])})
                                  .encode(), "any"),
        "tombstone": lambda e: (None, "reject"),
    }
    out = []
    names = list(families)
    for i in range(count):
        family = names[i % len(names)] if i < len(names) else rng.choice(names)
        value, expected = families[family](event())
        if family == "huge_string" and value is not None:
            expected = "reject" if len(value) > 1_000_000 else "accept"
        key = rng.choice([None, b"", b"card-1", bytes(rng.getrandbits(8) for _ in range(8))])
        out.append((family, key, value, expected))
    return out


def hostile_scenario(args: argparse.Namespace) -> dict:
    from pyspark.sql import functions as F

    from kappalake.config.loader import load_pipeline, load_target
    from kappalake.runtime.spark import build_spark
    from kappalake.transforms.dead_letter import to_dead_letter
    from kappalake.transforms.parse import parse_events

    arrival = datetime.now(UTC).replace(microsecond=0)
    cases = hostile_payloads(args.bad_inputs, args.seed, arrival)
    spark = build_spark(load_target(), app_name="kappalake-bench-reliability")
    events = load_pipeline("payments").events
    records = spark.createDataFrame([(key, value, "hostile", i % 3, i, arrival) for i, (_, key, value, _) in
                                     enumerate(cases)],
                                    "key binary, value binary, topic string, partition int, offset long, "
                                    "kafka_timestamp timestamp")
    started = time.monotonic()
    parsed = parse_events(records, events).cache()
    rows = {r["offset"]: r for r in parsed.select("offset", F.size("_errors").alias("n"), "_errors").collect()}
    dead = {r["source_offset"]: r for r in to_dead_letter(parsed.where(F.size("_errors") > 0), "bench", "1")
            .select("source_offset", "error_class", "error_message").collect()}
    seconds = time.monotonic() - started
    parsed.unpersist()
    spark.stop()

    ended: dict[str, Counter[str]] = defaultdict(Counter)
    unaccounted = misjudged = 0
    examples: list[str] = []
    for i, (family, _, value, expected) in enumerate(cases):
        row = rows.get(i)
        if row is None:
            ended[family]["missing"] += 1
            unaccounted += 1
            continue
        if row["n"] == 0:
            outcome = "silver"
        else:
            letter = dead.get(i)
            reasons_ok = letter is not None and letter["error_message"] and all(
                e["rule"] and e["message"] for e in row["_errors"])
            if not reasons_ok:
                ended[family]["no reason"] += 1
                unaccounted += 1
                continue
            outcome = f"dead-letter:{letter['error_class']}"
        ended[family][outcome] += 1
        if (expected == "accept" and outcome != "silver") or (expected == "reject" and outcome == "silver"):
            misjudged += 1
            if len(examples) < 5:
                examples.append(f"{family} ({expected}) -> {outcome}: {(value or b'')[:100]!r}")
    return {"count": len(cases), "ended": ended, "unaccounted": unaccounted, "misjudged": misjudged,
            "examples": examples, "seconds": seconds}


# --------------------------------------------------------------------------- report

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--bad-inputs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    # A SIGTERM unwinds like Ctrl-C: the running job is killed, the broker stopped, the data dir removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with bench_home() as home:
        from kappalake.io.kafka.admin import TopicSpec
        from kappalake.runtime.paths import HomeLayout
        from kappalake.runtime.stack import LocalStack

        stack = LocalStack(HomeLayout.from_env())
        stack.up([TopicSpec(TOPIC, 3)])
        try:
            crash = crash_scenario(args, home)
        finally:
            stack.down()
        hostile = hostile_scenario(args)

    acc = crash["accounting"]
    lost = acc["bronze_lost"] + acc["silver_lost"] + acc["dead_lost"]
    duplicated = acc["bronze_duplicated"] + acc["silver_duplicated"] + acc["dead_duplicated"]
    kills = crash["kills"]
    from tests.integration.crash_job import window_hit

    print()
    print(f"crash recovery: {len(kills)} SIGKILLs of the running bronze+silver+gold job in {crash['seconds']:.0f}s "
          f"(each followed by a restart), then one availableNow drain; {crash['produced']} records in "
          f"{crash['rounds']} produce rounds")
    print(f"  {'kill point':<17} {'kills':>5} {'at point':>8} {'in window':>9} {'alive s':>8} {'CPU s':>6}")
    for point in dict.fromkeys(k.point for k in sorted(kills, key=lambda k: k.point)):
        chosen = [k for k in kills if k.point == point]
        print(f"  {point:<17} {len(chosen):>5} {sum(k.fired for k in chosen):>8} "
              f"{sum(window_hit(k) for k in chosen):>9} {sum(k.seconds_alive for k in chosen) / len(chosen):>8.1f} "
              f"{sum(k.cpu_seconds for k in chosen) / len(chosen):>6.1f}")
    print("  where the kills found each query (a kill counts once per query state it interrupted):")
    for label, count in sorted(crash["phases"].items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"    {count:>3}  {label}")
    print(f"  {'layer':<14} {'expected':>9} {'rows':>9} {'lost':>6} {'duplicated':>10} {'foreign':>8}")
    for layer, expected, prefix in (("bronze", crash["produced"], "bronze"),
                                    ("silver", acc["silver_expected"], "silver"),
                                    ("dead-letter", acc["dead_expected"], "dead")):
        print(f"  {layer:<14} {expected:>9} {acc[f'{prefix}_rows']:>9} {acc[f'{prefix}_lost']:>6} "
              f"{acc[f'{prefix}_duplicated']:>10} {acc[f'{prefix}_foreign']:>8}")
    for view, problems in crash["gold_differences"].items():
        verdict = "equal to the independent reference" if not problems else "; ".join(problems)
        print(f"  ClickHouse {view} (FINAL {crash['gold_rows'][view]} windows, {crash['gold_raw_rows'][view]} raw "
              f"rows): {verdict}")
    print(f"  dead-letter classes: {acc['dead_classes']}")
    print()
    print(f"hostile inputs: {hostile['count']} payloads parsed in {hostile['seconds']:.1f}s; unaccounted (neither "
          f"valid nor dead-lettered with a reason): {hostile['unaccounted']}; outcome against the documented rules: "
          f"{hostile['misjudged']}")
    print(f"  {'family':<18} {'n':>5} {'silver':>7}   dead-letter classes")
    for family, counts in sorted(hostile["ended"].items()):
        classes = ", ".join(f"{k.split(':', 1)[1]}={v}" for k, v in sorted(counts.items()) if k.startswith("dead"))
        other = ", ".join(f"{k}={v}" for k, v in counts.items() if k != "silver" and not k.startswith("dead"))
        print(f"  {family:<18} {sum(counts.values()):>5} {counts.get('silver', 0):>7}   {classes}"
              + (f"  UNACCOUNTED: {other}" if other else ""))
    for line in hostile["examples"]:
        print(f"  misjudged: {line}")
    wrong_views = sum(1 for problems in crash["gold_differences"].values() if problems)
    at_point = sum(k.fired for k in kills)
    print(f"RESULT kill_points={at_point} restarts={len(kills)} produced={crash['produced']} lost={lost} "
          f"duplicated={duplicated} wrong_views={wrong_views} bad_inputs={hostile['count']} unaccounted={hostile['unaccounted']}")
    if lost or duplicated or wrong_views or hostile["unaccounted"] or at_point < len(kills):
        sys.exit(1)


if __name__ == "__main__":
    main()
