"""Kafka data-loss failures translated into plain messages; lost-offset gaps found in batch progress."""

from __future__ import annotations

import pytest

from kappalake.ops.dataloss import batch_gaps
from kappalake.ops.failures import explain_query_failure

# Captured from Spark 4.0.0 (spark-sql-kafka-0-10_2.13 4.0.0, failOnDataLoss=true, Kafka 4.1.1): a restarted
# bronze query had committed offset 20 of partition 0; DeleteRecords then moved the log start to 70.
SPARK_40_COULD_NOT_READ = """\
[STREAM_FAILED] Query [id = 7d4cac17-6d7d-4ac9-b321-ff486f8fe002, runId = ec5c60fe-2a24-4e0c-8443-323644b889f8] \
terminated with exception: Some data may have been lost because they are not available in Kafka any more;
either the data was aged out by Kafka or the topic may have been deleted before all the data in the
topic was processed.
If you don't want your streaming query to fail on such cases, set the source option failOnDataLoss to false.
Reason: Could not read records in offset [20, 100) for topic partition payments-t-abc-0
with consumer group spark-kafka-source-ada0c3da-f075-4261-b37e-7da0bfe4e3c2--2048040777-executor. SQLSTATE: XXKST
=== Streaming Query ===
Identifier: payments.bronze [id = 7d4cac17-6d7d-4ac9-b321-ff486f8fe002, runId = ec5c60fe-2a24-4e0c-8443-323644b889f8]
Current Committed Offsets: {KafkaV2[Subscribe[payments-t-abc]]: {"payments-t-abc":{"0":20}}}
Current Available Offsets: {KafkaV2[Subscribe[payments-t-abc]]: {"payments-t-abc":{"0":100}}}

Current State: ACTIVE
Thread State: RUNNABLE
"""

# The same loss as Spark logs it with failOnDataLoss=false (KafkaDataConsumer warning).
SPARK_40_CANNOT_FETCH = """\
Cannot fetch offset 20(GroupId: spark-kafka-source-1b279241-db5d-45d0-a9c6-59308b422aec-2138140723-executor, \
TopicPartition: payments-t-abc-0).
Some data may have been lost because they are not available in Kafka any more; either the
 data was aged out by Kafka or the topic may have been deleted before all the data in the
 topic was processed."""

REASON = ("[STREAM_FAILED] Query [id = 1, runId = 2] terminated with exception: Some data may have been lost because "
          "they are not available in Kafka any more;\neither the data was aged out by Kafka or the topic may have "
          "been deleted before all the data in the\ntopic was processed.\nIf you don't want your streaming query to "
          "fail on such cases, set the source option failOnDataLoss to false.\nReason: {reason} SQLSTATE: XXKST\n"
          "=== Streaming Query ===\n")


def _log_start(value: int | None):
    calls: list[tuple[str, int]] = []

    def lookup(topic: str, partition: int) -> int | None:
        calls.append((topic, partition))
        return value

    return lookup, calls


def test_could_not_read_names_the_lost_range_from_the_log_start() -> None:
    lookup, calls = _log_start(70)
    message = explain_query_failure(SPARK_40_COULD_NOT_READ, lookup)
    assert calls == [("payments-t-abc", 0)]
    assert message is not None
    assert message.startswith("payments-t-abc partition 0: offsets 20-69 are no longer in Kafka "
                              "(retention or DeleteRecords)")
    assert "failOnDataLoss: false" in message
    assert "STREAM_FAILED" not in message and "spark-kafka-source" not in message and "\n" not in message


def test_lost_range_runs_to_the_log_start_even_beyond_the_failed_range() -> None:
    # The failed range may be one task's split of the batch (minPartitions): the loss is everything
    # between the committed position and the partition's current log start.
    message = explain_query_failure(SPARK_40_COULD_NOT_READ, _log_start(150)[0])
    assert message is not None and "partition 0: offsets 20-149 are no longer in Kafka" in message


def test_lost_range_starts_at_the_committed_offset_when_a_later_split_failed() -> None:
    split = SPARK_40_COULD_NOT_READ.replace("offset [20, 100)", "offset [46, 73)")
    message = explain_query_failure(split, _log_start(70)[0])
    assert message is not None and "partition 0: offsets 20-69 are no longer in Kafka" in message


@pytest.mark.parametrize("log_start", [None, 20, "boom"])
def test_without_a_usable_log_start_the_message_says_from_where(log_start) -> None:
    if log_start == "boom":
        def lookup(topic: str, partition: int) -> int:
            raise RuntimeError("broker down")
    else:
        lookup = _log_start(log_start)[0]
    message = explain_query_failure(SPARK_40_COULD_NOT_READ, lookup)
    assert message is not None
    assert message.startswith("payments-t-abc partition 0: offsets from 20 could not be read: they are no longer "
                              "in Kafka (retention or DeleteRecords) (the batch covered offsets up to 99)")
    assert explain_query_failure(SPARK_40_COULD_NOT_READ) == message


def test_cannot_fetch_warning_text() -> None:
    message = explain_query_failure(SPARK_40_CANNOT_FETCH, _log_start(70)[0])
    assert message is not None
    assert message.startswith("payments-t-abc partition 0: offsets 20-69 are no longer in Kafka")


@pytest.mark.parametrize(("reason", "expected"), [
    ("Starting offset for payments-3 was 5 but consumer reset to 12.",
     "payments partition 3: offsets 5-11 are no longer in Kafka (retention or DeleteRecords)"),
    ("Added partition my-topic-2 starts from 40 instead of 0.",
     "my-topic partition 2: the partition was added while the query ran and its offsets 0-39 are no longer"),
    ("Partition orders-1 offset was changed from 500 to 30.",
     "orders partition 1: the partition's offsets went back from 500 to 30"),
    ("Partitions Set(t-x-0, t-x-1) have been deleted.",
     "Kafka partitions t-x partition 0, t-x partition 1 were deleted"),
    ("Cannot find initial offsets for partitions Set(t-y-4). They may have been deleted.",
     "no starting offsets for Kafka partitions t-y partition 4"),
    ("Something new in a later Spark.", "Kafka records are no longer available (retention or DeleteRecords): "
                                        "Something new in a later Spark."),
])
def test_other_data_loss_reasons(reason: str, expected: str) -> None:
    message = explain_query_failure(REASON.format(reason=reason))
    assert message is not None and message.startswith(expected), message


@pytest.mark.parametrize("text", [
    "",
    "[STREAM_FAILED] Query [id = 1] terminated with exception: Job aborted due to stage failure: OOM",
    "pipeline 'payments': topic 'x' does not exist on 127.0.0.1:9092",
])
def test_other_failures_are_not_data_loss(text: str) -> None:
    assert explain_query_failure(text, _log_start(70)[0]) is None


# ---------------------------------------------------------------------------------------------- batch gaps

def _progress(start, end, rows, batch=1):
    return {"name": "payments.bronze", "runId": "r", "batchId": batch,
            "sources": [{"description": "KafkaV2[Subscribe[t]]", "startOffset": start, "endOffset": end,
                         "numInputRows": rows}]}


def test_skipped_offsets_below_the_log_start_are_a_gap() -> None:
    # captured shape: batch 1 of a restarted query, offsets 20-69 deleted, 70-99 read
    gaps = batch_gaps(_progress({"t": {"0": 20}}, {"t": {"0": 100}}, 30), lambda topic: {0: 70})
    assert [(g.topic, g.partition, g.first, g.last, g.count) for g in gaps] == [("t", 0, 20, 69, 50)]


def test_a_fully_read_batch_asks_nobody() -> None:
    def never(topic: str):
        raise AssertionError("no lookup expected")

    assert batch_gaps(_progress({"t": {"0": 0, "1": 5}}, {"t": {"0": 10, "1": 7}}, 12), never) == []
    assert batch_gaps(_progress(None, {"t": {"0": 10}}, 10, batch=0), never) == []  # first batch: no start
    delta = _progress({"sourceVersion": 1, "reservoirVersion": 3, "index": -1}, {"sourceVersion": 1}, 0)
    assert batch_gaps(delta, never) == []  # not a Kafka source


def test_transaction_markers_are_not_loss() -> None:
    # 10 offsets, 7 rows: one aborted record and two markers; the log still starts at 0
    assert batch_gaps(_progress('{"t":{"0":5}}', '{"t":{"0":15}}', 7), lambda topic: {0: 0}) == []


def test_records_read_before_they_aged_out_are_not_counted_beyond_the_skipped_offsets() -> None:
    # 2 of 100 offsets skipped (markers), but retention has since moved past the whole batch
    gaps = batch_gaps(_progress({"t": {"0": 0, "1": 0}}, {"t": {"0": 50, "1": 50}}, 98), lambda topic: {0: 60, 1: 60})
    assert sum(g.count for g in gaps) == 2


# A ClickHouseUnavailable raised by the gold sink inside foreachBatch, as the query's failure carries it
# (Spark 4.2, py4j): the Python traceback is wrapped in STREAM_FAILED / FOREACH_BATCH_USER_FUNCTION_ERROR.
SPARK_42_FOREACH_BATCH_ERROR = """\
[STREAM_FAILED] Query [id = 022ce9c0-94c2-484e-a291-13fe53ec7cab, runId = 6157b277-9120-419c-b2ad-96ea694be7e6] \
terminated with exception: [FOREACH_BATCH_USER_FUNCTION_ERROR] An error occurred in the user provided function \
in foreach batch sink. Reason: An exception was raised by the Python Proxy. Return Message: Traceback (most recent \
call last):
  File "/venv/lib/python3.11/site-packages/py4j/clientserver.py", line 644, in _call_proxy
    return_value = getattr(self.pool[obj_id], method)(*params)
  File "/repo/src/kappalake/io/clickhouse/sink.py", line 127, in _insert
    raise ClickHouseUnavailable(
kappalake.errors.ClickHouseUnavailable: insert into ClickHouse table `payments_card_velocity_5m` (chdb:///x/ch) \
failed 6 times, last: Error HTTPConnectionPool(host='127.0.0.1', port=8123): Max retries exceeded; the query \
stops and the batch is replayed from the checkpoint on restart

	at py4j.Protocol.getReturnValue(Protocol.java:476)
	at py4j.reflection.PythonProxyHandler.invoke(PythonProxyHandler.java:108)
"""


def test_a_kappalake_error_raised_in_foreach_batch_keeps_its_class_and_message() -> None:
    from kappalake.errors import ClickHouseUnavailable
    from kappalake.ops.failures import raised_kappalake_error

    raised = raised_kappalake_error(SPARK_42_FOREACH_BATCH_ERROR)
    assert isinstance(raised, ClickHouseUnavailable) and raised.exit_code == 6
    assert str(raised).startswith("insert into ClickHouse table `payments_card_velocity_5m`")
    assert str(raised).endswith("replayed from the checkpoint on restart")
    assert explain_query_failure(SPARK_42_FOREACH_BATCH_ERROR) == str(raised)
    # Only kappalake's own errors: anything else raised in foreachBatch is left to the generic message.
    other = SPARK_42_FOREACH_BATCH_ERROR.replace("kappalake.errors.ClickHouseUnavailable", "ValueError")
    assert raised_kappalake_error(other) is None and explain_query_failure(other) is None
    assert raised_kappalake_error(SPARK_42_FOREACH_BATCH_ERROR.replace("ClickHouseUnavailable", "NoSuchError")) is None


# ---------------------------------------------------------------------------------------------- storage

# The read-only-root crash test's failure (abridged): silver's state store could not write its changelog,
# reported through foreachBatch with a Python traceback in front of the Java cause.
READ_ONLY_STATE_STORE = """[STREAM_FAILED] Query [id = c85d, runId = b318] terminated with exception: \
[FOREACH_BATCH_USER_FUNCTION_ERROR] An error occurred in the user provided function in foreach batch sink. \
Reason: An exception was raised by the Python Proxy. Return Message: Traceback (most recent call last):
  File "/x/pyspark/sql/classic/dataframe.py", line 443, in collect
py4j.protocol.Py4JJavaError: An error occurred while calling o2330.collectToPython.
: org.apache.spark.SparkException: [CANNOT_LOAD_STATE_STORE.UNCATEGORIZED] An error occurred during loading state.
Caused by: java.io.FileNotFoundException: /lake/_checkpoints/payments/silver/live/state/0/0/.11.changelog.ba95.TID7.tmp \
(Permission denied)
	... 34 more
"""


@pytest.mark.parametrize(("text", "path", "reason"), [
    (READ_ONLY_STATE_STORE, "/lake/_checkpoints/payments/silver/live/state/0/0/.11.changelog.ba95.TID7.tmp",
     "permission denied"),
    ("[STREAM_FAILED] ... java.nio.file.AccessDeniedException: /lake/_checkpoints/payments/bronze/live/offsets/.1.tmp",
     "/lake/_checkpoints/payments/bronze/live/offsets/.1.tmp", "permission denied"),
    ("java.nio.file.FileSystemException: /mnt/lake/bronze/part-0.parquet: Read-only file system",
     "/mnt/lake/bronze/part-0.parquet", "read-only file system"),
    ("OSError: [Errno 28] No space left on device: '/data/lake/quality_results/x.parquet'",
     "/data/lake/quality_results/x.parquet", "no space left on device"),
    ("PermissionError: [Errno 13] Permission denied: '/data/runs/bronze.json'", "/data/runs/bronze.json",
     "permission denied"),
    ("org.apache.hadoop.security.AccessControlException: Permission denied: user=spark, access=WRITE, "
     "inode=\"/warehouse/lake/silver\":hdfs:supergroup:drwxr-xr-x", "/warehouse/lake/silver", "permission denied"),
    ("java.io.IOException: Mkdirs failed to create file:/lake/silver/_delta_log (exists=false, cwd=file:/w)",
     "file:/lake/silver/_delta_log", "cannot create the directory"),
])
def test_a_refused_write_names_the_path_and_the_reason(text: str, path: str, reason: str) -> None:
    from kappalake.ops.failures import explain_storage_failure

    message = explain_storage_failure(text)
    assert message is not None and message.startswith(f"cannot write {path}: {reason}. "), message
    assert "replayed" in message and "Traceback" not in message
    assert explain_query_failure(text) == message


def test_a_full_disk_without_a_path_is_still_named() -> None:
    from kappalake.ops.failures import explain_storage_failure

    message = explain_storage_failure("Caused by: java.io.IOException: No space left on device\n\tat x")
    assert message is not None and message.startswith("a write failed: no space left on device")


def test_other_failures_are_not_storage_failures() -> None:
    from kappalake.ops.failures import explain_storage_failure

    assert explain_storage_failure("[STREAM_FAILED] Query [id = 1] terminated with exception: OOM") is None
    assert explain_storage_failure(SPARK_42_FOREACH_BATCH_ERROR) is None
