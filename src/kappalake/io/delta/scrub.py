"""Remove erased subjects' pseudonyms from a Delta table's transaction log (local storage).

After a DELETE and VACUUM the data files are gone, but the log still describes every file ever added: each
``add``/``remove`` action may carry per-column statistics (min/max values, strings cut to 32 characters), and
a subject's pseudonym can be such a min or max. Statistics are optional in the Delta protocol (a file
without them is simply never skipped), so the scrub drops the ``stats`` of every action whose statistics name
a subject, and replaces the subject in any other string of the log (commit info) by ``[erased]``. It rewrites
JSON commits, ``.crc`` checksums and Parquet checkpoints (write to a temporary file, then rename).

Only local paths (or ``file://``) are rewritten; on object stores the log statistics age out with
``delta.logRetentionDuration``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Delta cuts string statistics to this many characters (``dataSkippingStringPrefixLength``).
STATS_PREFIX = 32
ERASED = "[erased]"


def tokens_of(pseudonyms: Iterable[str]) -> list[str]:
    """Strings to look for: each pseudonym and the prefix of it the statistics keep."""
    out: set[str] = set()
    for value in pseudonyms:
        if value:
            out.add(value)
            out.add(value[:STATS_PREFIX])
    return sorted(out, key=len, reverse=True)


def local_dir(path: str) -> Path | None:
    if path.startswith("file://"):
        return Path(path.removeprefix("file://"))
    if "://" in path or path.startswith("dbfs:"):
        return None
    return Path(path)


def _clean(value: Any, tokens: list[str], key: str | None = None) -> tuple[Any, bool]:
    """``value`` without the tokens; True when something changed. ``stats`` strings naming one go (None)."""
    if isinstance(value, str):
        if not any(t in value for t in tokens):
            return value, False
        if key == "stats":
            return None, True
        for token in tokens:
            value = value.replace(token, ERASED)
        return value, True
    if isinstance(value, dict):
        changed = False
        out = {}
        for k, v in value.items():
            new, hit = _clean(v, tokens, k)
            changed |= hit
            if not (hit and k == "stats"):  # statistics are optional: the action keeps its file, not its stats
                out[k] = new
        return out, changed
    if isinstance(value, list):
        changed = False
        items = []
        for item in value:
            new, hit = _clean(item, tokens, key)
            changed |= hit
            items.append(new)
        return items, changed
    return value, False


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.scrub.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _scrub_json_lines(path: Path, tokens: list[str]) -> bool:
    text = path.read_text()
    if not any(t in text for t in tokens):
        return False
    lines = []
    for line in text.splitlines():
        if line.strip() and any(t in line for t in tokens):
            line = json.dumps(_clean(json.loads(line), tokens)[0], separators=(",", ":"))
        lines.append(line)
    _replace(path, ("\n".join(lines) + ("\n" if text.endswith("\n") else "")).encode())
    return True


def _scrub_parquet(path: Path, tokens: list[str]) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = path.read_bytes()
    table = pq.read_table(path)
    rows = table.to_pylist()
    changed = False
    cleaned = []
    for row in rows:
        new, hit = _clean(row, tokens)
        changed |= hit
        cleaned.append(new)
    if not changed and not any(t.encode() in raw for t in tokens):
        return False
    out = pa.Table.from_pylist(cleaned, schema=table.schema)
    tmp = path.with_name(f".{path.name}.scrub.tmp")
    pq.write_table(out, tmp)
    os.replace(tmp, path)
    return True


def scrub_log(table_path: str, tokens: list[str]) -> str:
    """Scrub ``tokens`` from the log of the Delta table at ``table_path``; a short note of what was done."""
    if not tokens:
        return "nothing to scrub"
    root = local_dir(table_path)
    if root is None:
        return "not scrubbed (not local storage): log statistics age out with delta.logRetentionDuration"
    log_dir = root / "_delta_log"
    rewritten = 0
    for path in sorted(log_dir.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix == ".parquet":
            hit = _scrub_parquet(path, tokens)
        elif path.suffix in (".json", ".crc") or path.name == "_last_checkpoint":
            hit = _scrub_json_lines(path, tokens)
        else:
            continue
        if hit:
            rewritten += 1
            checksum = path.with_name(f".{path.name}.crc")  # Hadoop's checksum of the old bytes
            if checksum.exists():
                checksum.unlink()
    return f"{rewritten} log files rewritten" if rewritten else "clean"
