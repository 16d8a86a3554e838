"""Turn a streaming query's failure text into a message a person can act on.

Spark's Kafka source reports data loss (``failOnDataLoss=true``) as a long ``KAFKA_DATA_LOSS``
error wrapped in ``STREAM_FAILED`` and a query description. Spark 4.0 says, for records removed
by retention or DeleteRecords before the query read them::

    Some data may have been lost because they are not available in Kafka any more; ...
    Reason: Could not read records in offset [20, 100) for topic partition payments-0
    with consumer group spark-kafka-source-...-executor. SQLSTATE: XXKST

The range there is the micro-batch's, not the lost one: the lost offsets end where the partition's
log now starts (its low watermark), which only the broker knows; pass ``log_start`` to look it up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from kappalake.errors import KappalakeError

# (topic, partition) -> the partition's log start offset (low watermark) now, or None if unknown.
LogStartLookup = Callable[[str, int], "int | None"]

_WS = r"\s+"
_TP = r"(?P<tp>[^\s,()]+-\d+)"
_COULD_NOT_READ = re.compile(
    r"Could not read records in offset \[(?P<start>\d+),\s*(?P<end>\d+)\)" + _WS + r"for topic partition" + _WS + _TP)
_CANNOT_FETCH = re.compile(r"Cannot fetch offset (?P<start>\d+)\s*\(GroupId:[^,]*,\s*TopicPartition:\s*" + _TP + r"\)")
_OFFSET_CHANGED = re.compile(
    r"Partition " + _TP + r" offset was changed from (?P<old>\d+) to (?P<new>\d+)")
_START_RESET = re.compile(
    r"Starting offset for " + _TP + r" was (?P<start>\d+) but consumer reset to (?P<reset>\d+)")
_ADDED_PARTITION = re.compile(r"Added partition " + _TP + r" starts from (?P<start>\d+) instead of 0")
_DELETED = re.compile(r"Partitions (?P<parts>Set\([^)]*\)|\S+) have been deleted")
_INITIAL_NOT_FOUND = re.compile(r"Cannot find initial offsets for partitions (?P<parts>Set\([^)]*\)|\S+)")
_COMMITTED = re.compile(r"Current Committed Offsets:(?P<body>[^\n]*)")
_TOPIC_OFFSETS = re.compile(r'"(?P<topic>[^"]+)":\{(?P<parts>[^{}]*)\}')
_GENERIC = re.compile(r"Some data may have been lost because they are not available in Kafka any more")

_NEXT_STEP = ("; the query stopped instead of skipping them. Re-publish them if they matter, or set the source "
              "option failOnDataLoss: false to continue past the gap (kappalake then logs it and counts it as "
              "lost_offsets in the run record)")


@dataclass(frozen=True)
class TopicPartition:
    topic: str
    partition: int

    @classmethod
    def parse(cls, text: str) -> TopicPartition:
        """``payments-t-abc-0`` -> (``payments-t-abc``, 0): Kafka's ``topic-partition`` form."""
        topic, _, partition = text.rpartition("-")
        return cls(topic, int(partition))

    def __str__(self) -> str:
        return f"{self.topic} partition {self.partition}"


# A KappalakeError raised inside a foreachBatch function reaches the driver as text: the Python traceback
# inside Spark's STREAM_FAILED / FOREACH_BATCH_USER_FUNCTION_ERROR, ending "kappalake.<module>.<Class>: msg".
_RAISED = re.compile(r"^(?P<module>kappalake(?:\.\w+)+)\.(?P<cls>[A-Z]\w*): (?P<message>.+)$", re.MULTILINE)


def raised_kappalake_error(text: str) -> KappalakeError | None:
    """The KappalakeError (its own class and message) a foreachBatch function raised, found in the text of
    the query's failure; None when the failure came from elsewhere. The last one wins (the traceback's own
    exception, after any it was raised while handling)."""
    import importlib

    for match in reversed(list(_RAISED.finditer(text))):
        try:
            cls = getattr(importlib.import_module(match["module"]), match["cls"])
        except (ImportError, AttributeError):
            continue
        if isinstance(cls, type) and issubclass(cls, KappalakeError):
            error = cls.__new__(cls)
            Exception.__init__(error, match["message"].strip())
            return error
    return None


# Storage that refuses a write, as the JVM (java.io / java.nio / Hadoop) and Python (OSError) word it.
_PATH = r"(?P<path>(?:[a-z][a-z0-9+.-]*:)?/[^\s'\"(),]+)"
_STORAGE = [
    (re.compile(r"java\.nio\.file\.AccessDeniedException: " + _PATH), "permission denied"),
    (re.compile(_PATH + r" \(Permission denied\)"), "permission denied"),
    (re.compile(_PATH + r": Read-only file system"), "read-only file system"),
    (re.compile(_PATH + r" \(Read-only file system\)"), "read-only file system"),
    (re.compile(r"\[Errno 13\] Permission denied: '" + _PATH), "permission denied"),
    (re.compile(r"\[Errno 30\] Read-only file system: '" + _PATH), "read-only file system"),
    (re.compile(r"\[Errno 28\] No space left on device: '" + _PATH), "no space left on device"),
    (re.compile(_PATH + r" \(No space left on device\)"), "no space left on device"),
    (re.compile(r"AccessControlException: Permission denied: .*?inode=\"" + _PATH), "permission denied"),
    (re.compile(r"Mkdirs failed to create " + _PATH), "cannot create the directory"),
]
_NO_SPACE = re.compile(r"No space left on device")


def explain_storage_failure(text: str) -> str | None:
    """A clear message when ``text`` (a query's failure) says the storage refused a write: permission
    denied, a read-only file system, a full disk. Names the path; None for other failures."""
    for pattern, reason in _STORAGE:
        if match := pattern.search(text):
            return f"cannot write {match['path']}: {reason}" + _STORAGE_NEXT_STEP
    if _NO_SPACE.search(text):
        return "a write failed: no space left on device" + _STORAGE_NEXT_STEP
    return None


_STORAGE_NEXT_STEP = (". The job must be able to write its storage root (tables and checkpoints); the failed "
                      "micro-batch was not committed to the checkpoint and is replayed when the job is restarted "
                      "after the fix (Delta tables and checkpoints stay readable)")


def explain_query_failure(text: str, log_start: LogStartLookup | None = None) -> str | None:
    """A clear message when ``text`` (a query's failure) reports Kafka data loss, a write the storage
    refused, or carries a KappalakeError raised inside a foreachBatch function (its own message), else None.

    ``log_start`` gives a partition's current log start offset; with it the exact lost range is
    named even when Spark only names the range of the batch it could not read.
    """
    if (raised := raised_kappalake_error(text)) is not None:
        return str(raised)
    if (storage := explain_storage_failure(text)) is not None:
        return storage
    if (match := _COULD_NOT_READ.search(text)) or (match := _CANNOT_FETCH.search(text)):
        tp = TopicPartition.parse(match["tp"])
        start = int(match["start"])
        end = int(match["end"]) if "end" in match.groupdict() else None
        committed = _committed_offset(text, tp)
        if committed is not None and committed < start:
            # The batch's range may be split across tasks (minPartitions); the first failing task's range
            # can start after the committed position, where the loss really begins.
            start, end = committed, None
        low = _lookup(log_start, tp)
        if low is not None and low > start:
            last = low - 1  # everything below the log start is gone, whatever range this task covered
            return (f"{tp}: offsets {start}-{last} are no longer in Kafka (retention or DeleteRecords) and were "
                    f"never read; the partition's log now starts at offset {low}" + _NEXT_STEP)
        upto = f" (the batch covered offsets up to {end - 1})" if end is not None else ""
        return (f"{tp}: offsets from {start} could not be read: they are no longer in Kafka (retention or "
                f"DeleteRecords){upto}" + _NEXT_STEP)
    if match := _START_RESET.search(text):
        tp = TopicPartition.parse(match["tp"])
        start, reset = int(match["start"]), int(match["reset"])
        return (f"{tp}: offsets {start}-{reset - 1} are no longer in Kafka (retention or DeleteRecords): the "
                f"consumer was reset from offset {start} to {reset}" + _NEXT_STEP)
    if match := _ADDED_PARTITION.search(text):
        tp = TopicPartition.parse(match["tp"])
        start = int(match["start"])
        return (f"{tp}: the partition was added while the query ran and its offsets 0-{start - 1} are no longer "
                f"in Kafka (retention or DeleteRecords)" + _NEXT_STEP)
    if match := _OFFSET_CHANGED.search(text):
        tp = TopicPartition.parse(match["tp"])
        old, new = int(match["old"]), int(match["new"])
        return (f"{tp}: the partition's offsets went back from {old} to {new}: the topic was deleted and "
                f"re-created (or its log truncated), so records the query had not read yet may be lost"
                + _NEXT_STEP)
    if match := _DELETED.search(text):
        return (f"Kafka partitions {_partition_list(match['parts'])} were deleted while the query still had "
                f"records to read from them" + _NEXT_STEP)
    if match := _INITIAL_NOT_FOUND.search(text):
        return (f"no starting offsets for Kafka partitions {_partition_list(match['parts'])}: they may have been "
                f"deleted" + _NEXT_STEP)
    if _GENERIC.search(text):
        reason = re.search(r"Reason:\s*(.+?)(?:\s+SQLSTATE|\n\S|$)", text, re.DOTALL)
        detail = " ".join(reason.group(1).split()) if reason else "no detail given"
        return f"Kafka records are no longer available (retention or DeleteRecords): {detail[:300]}" + _NEXT_STEP
    return None


def _committed_offset(text: str, tp: TopicPartition) -> int | None:
    """The query's committed offset of ``tp`` from the "Current Committed Offsets" part of a failure."""
    section = _COMMITTED.search(text)
    if not section:
        return None
    for match in _TOPIC_OFFSETS.finditer(section["body"]):
        if match["topic"] == tp.topic:
            offsets = re.search(rf'"{tp.partition}":(\d+)', match["parts"])
            return int(offsets.group(1)) if offsets else None
    return None


def _lookup(log_start: LogStartLookup | None, tp: TopicPartition) -> int | None:
    if log_start is None:
        return None
    try:
        return log_start(tp.topic, tp.partition)
    except Exception:  # noqa: BLE001 - explaining a failure must not fail; fall back to what Spark said
        return None


def _partition_list(raw: str) -> str:
    inner = raw[4:-1] if raw.startswith("Set(") and raw.endswith(")") else raw
    parts = [TopicPartition.parse(p.strip()) for p in inner.split(",") if re.fullmatch(r"\s*\S+-\d+\s*", p)]
    return ", ".join(str(p) for p in parts) if parts else raw
