"""Merge one micro-batch's partial window states into the stored states, then finalize the metrics.

Pure functions over pyarrow tables (no I/O), used by the gold sink between its ClickHouse read and
its writes. Each stored state row carries the run that last wrote it: ``_generation`` (fixed when the
writing query's checkpoint was created, so newer runs have higher values) and ``_batch`` (the batch
id). For a batch ``N`` of generation ``g`` and a stored window:

* ``_generation == g`` and ``_batch >= N``: this batch was applied before (a replay after a crash):
  the window is skipped, so nothing counts twice;
* ``_generation < g``: an older run wrote it and this run recomputes it (a backfill or a Kappa replay
  from a new checkpoint): the batch's state replaces it;
* otherwise (an earlier batch of this run, or a newer run such as a backfill that finished): merged.

Session views merge a batch's session fragments with stored sessions of the same key that overlap
them (touching sessions merge, as in Spark); stored sessions absorbed under another start are
written back as tombstones (``_deleted = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from kappalake.config.models import GoldViewConfig
from kappalake.transforms.gold import WINDOW_COLUMNS

GENERATION, BATCH, DELETED = "_generation", "_batch", "_deleted"
BOOKKEEPING = ((GENERATION, pa.uint64()), (BATCH, pa.int64()), (DELETED, pa.uint8()))


def window_keys(view: GoldViewConfig) -> list[str]:
    return [*view.group_by, *WINDOW_COLUMNS]


def _stamp(states: pa.Table, generation: int, batch_id: int, deleted: int = 0) -> pa.Table:
    n = states.num_rows
    for name, value, kind in ((GENERATION, generation, pa.uint64()), (BATCH, batch_id, pa.int64()),
                              (DELETED, deleted, pa.uint8())):
        states = states.append_column(name, pa.array([value] * n, kind))
    return states


def _fate(stored: pa.Table, generation: int, batch_id: int) -> tuple[pc.Expression, pc.Expression]:
    """(applied before, usable for merging) masks of stored rows."""
    gen, batch = pc.field(GENERATION), pc.field(BATCH)
    applied = (gen == generation) & (batch >= batch_id)
    usable = (gen > generation) | ((gen == generation) & (batch < batch_id))
    return applied, usable


def _merge_groups(rows: pa.Table, group: Sequence[str], view: GoldViewConfig, state_schema: pa.Schema) -> pa.Table:
    """Group ``rows`` (batch and stored states alike) by ``group`` and merge every metric's states."""
    rows = rows.append_column("_row", pa.array(range(rows.num_rows), pa.int64()))
    aggs: list[tuple[str, str]] = [("_row", "list")]
    for name, metric in view.metrics.items():
        fn = metric.merge if metric.fn == "custom" else metric.fn
        if fn in ("count", "sum", "min", "max"):
            aggs.append((name, "sum" if fn == "count" else fn))
        elif fn == "avg":
            aggs += [(f"{name}__n", "sum"), (f"{name}__sum", "sum")]
        elif fn == "stddev":
            n = pc.fill_null(rows[f"{name}__n"], 0.0)
            mean = pc.fill_null(rows[f"{name}__mean"], 0.0)
            rows = rows.append_column(f"{name}__nm", pc.multiply(n, mean))
            rows = rows.append_column(f"{name}__q", pc.add(pc.fill_null(rows[f"{name}__m2"], 0.0),
                                                           pc.multiply(n, pc.multiply(mean, mean))))
            aggs += [(f"{name}__n", "sum"), (f"{name}__nm", "sum"), (f"{name}__q", "sum")]
    grouped = rows.group_by(list(group), use_threads=False).aggregate(aggs)
    members = grouped["_row_list"].to_pylist()
    out: dict[str, Any] = {}
    for name, metric in view.metrics.items():
        fn = metric.merge if metric.fn == "custom" else metric.fn
        if fn in ("count", "sum", "min", "max"):
            out[name] = grouped[f"{name}_{'sum' if fn == 'count' else fn}"]
        elif fn == "avg":
            out[f"{name}__n"] = grouped[f"{name}__n_sum"]
            out[f"{name}__sum"] = grouped[f"{name}__sum_sum"]
        elif fn == "stddev":
            n = pc.fill_null(grouped[f"{name}__n_sum"], 0.0)
            empty = pc.equal(n, 0.0)
            safe_n = pc.if_else(empty, 1.0, n)
            mean = pc.divide(grouped[f"{name}__nm_sum"], safe_n)
            m2 = pc.max_element_wise(pc.subtract(grouped[f"{name}__q_sum"], pc.multiply(n, pc.multiply(mean, mean))),
                                     0.0)
            out[f"{name}__n"] = n
            out[f"{name}__mean"] = pc.if_else(empty, pa.scalar(None, pa.float64()), mean)
            out[f"{name}__m2"] = pc.if_else(empty, pa.scalar(None, pa.float64()), m2)
        elif fn == "approx_count_distinct":
            column = rows[f"{name}__hll"].to_pylist()
            out[f"{name}__hll"] = [_hll_union([column[i] for i in m]) for m in members]
        elif fn == "percentile":
            column = rows[f"{name}__values"].to_pylist()
            out[f"{name}__values"] = [[v for i in m for v in (column[i] or [])] for m in members]
    arrays = [grouped[c] for c in group]
    names = list(group)
    for field in state_schema:
        if field.name in out:
            value = out[field.name]
            array = pa.array(value, field.type) if isinstance(value, list) else value
            arrays.append(array.cast(field.type) if array.type != field.type else array)
            names.append(field.name)
    return pa.Table.from_arrays(arrays, names=names)


def _hll_union(sketches: list[bytes | None]) -> bytes | None:
    present = [s for s in sketches if s is not None]
    if len(present) <= 1:
        return present[0] if present else None
    import datasketches

    union = datasketches.hll_union(12)
    for sketch in present:
        union.update(datasketches.hll_sketch.deserialize(bytes(sketch)))
    return bytes(union.get_result().serialize_compact())


def state_fields(batch: pa.Table, view: GoldViewConfig) -> pa.Schema:
    """The state columns of a batch (everything but the window keys)."""
    keys = set(window_keys(view))
    return pa.schema([f for f in batch.schema if f.name not in keys])


def _nullable(table: pa.Table) -> pa.Table:
    """``table`` with every field nullable (Spark marks some non-null; stored rows never are)."""
    return table.cast(pa.schema([f.with_nullable(True) for f in table.schema]))


def _conform(stored: pa.Table, batch: pa.Table) -> pa.Table:
    """Stored rows (ClickHouse's Arrow types) in the batch's column types, plus bookkeeping."""
    columns = [stored[f.name].cast(f.type) for f in batch.schema]
    columns += [stored[name].cast(kind) for name, kind in BOOKKEEPING]
    return pa.Table.from_arrays(columns, names=[*batch.schema.names, *(n for n, _ in BOOKKEEPING)])


def merge_windows(batch: pa.Table, stored: pa.Table | None, view: GoldViewConfig, generation: int,
                  batch_id: int) -> pa.Table:
    """Tumbling and sliding windows: the state rows to write for ``batch`` (stamped with this run)."""
    keys = window_keys(view)
    batch = _nullable(batch)
    if stored is None or stored.num_rows == 0 or batch.num_rows == 0:
        return _stamp(batch, generation, batch_id)
    stored = _conform(stored, batch)
    applied, usable = _fate(stored, generation, batch_id)
    done = stored.filter(applied)
    fresh = _rows_matching(batch, done, keys, "left anti") if done.num_rows else batch
    prior = _rows_matching(stored.filter(usable).select(batch.schema.names), fresh, keys, "left semi")
    if prior.num_rows == 0:
        return _stamp(fresh, generation, batch_id)
    merged = _merge_groups(pa.concat_tables([fresh, prior]), keys, view, state_fields(batch, view))
    return _stamp(merged.select(batch.schema.names), generation, batch_id)


def _rows_matching(table: pa.Table, other: pa.Table, keys: list[str], how: str) -> pa.Table:
    """The rows of ``table`` whose keys are (``left semi``) or are not (``left anti``) in ``other``; joined on
    the keys alone, since Arrow joins cannot carry list columns."""
    index = table.select(keys).append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    rows = index.join(other.select(keys), keys=keys, join_type=how)["_row"]
    rows = rows.combine_chunks()
    return table.take(rows.take(pc.array_sort_indices(rows)))


def merge_sessions(batch: pa.Table, stored: pa.Table | None, view: GoldViewConfig, generation: int,
                   batch_id: int) -> pa.Table:
    """Session windows: merged sessions for the keys of ``batch`` plus tombstones for absorbed ones."""
    batch = _nullable(batch)
    if stored is None or stored.num_rows == 0 or batch.num_rows == 0:
        return _stamp(batch, generation, batch_id)
    import pandas as pd

    stored = _conform(stored, batch)
    group, names = list(view.group_by), batch.schema.names
    frags = batch.select([*group, *WINDOW_COLUMNS]).to_pandas().assign(_src="batch", _i=range(batch.num_rows))
    old = stored.select([*group, *WINDOW_COLUMNS, GENERATION, BATCH]).to_pandas().assign(
        _src="stored", _i=range(stored.num_rows))
    applied = old[(old[GENERATION] == generation) & (old[BATCH] >= batch_id)]
    usable = old[(old[GENERATION] > generation) | ((old[GENERATION] == generation) & (old[BATCH] < batch_id))]
    replaced = old[old[GENERATION] < generation]
    frags = frags[~frags["_i"].isin(_overlapping(frags, applied, group))]  # merged before: a replayed batch
    if frags.empty:
        return _stamp(batch.slice(0, 0), generation, batch_id)
    both = pd.concat([frags, usable], ignore_index=True).sort_values([*group, "window_start"], kind="stable")
    both = both.reset_index(drop=True)
    keyed = [both[g] for g in group]
    prior_reach = both.groupby(keyed, sort=False)["window_end"].cummax().groupby(keyed, sort=False).shift(1)
    both["_island"] = (prior_reach.isna() | (both["window_start"] > prior_reach)).cumsum()
    both = both[both["_island"].isin(set(both.loc[both["_src"] == "batch", "_island"]))]
    parts = {src: both[both["_src"] == src] for src in ("batch", "stored")}
    rows = pa.concat_tables([batch.take(pa.array(parts["batch"]["_i"].to_numpy(), pa.int64())),
                             stored.select(names).take(pa.array(parts["stored"]["_i"].to_numpy(), pa.int64()))])
    islands = pd.concat([parts["batch"]["_island"], parts["stored"]["_island"]]).to_numpy()
    bounds = both.groupby("_island").agg(start=("window_start", "min"), end=("window_end", "max")).loc[islands]
    for name, values in (("window_start", bounds["start"]), ("window_end", bounds["end"])):
        position = rows.column_names.index(name)
        rows = rows.set_column(position, name, pa.array(values.to_numpy(), rows.schema.field(name).type))
    merged = _merge_groups(rows, [*group, *WINDOW_COLUMNS], view, state_fields(batch, view)).select(names)
    new = merged.select([*group, *WINDOW_COLUMNS]).to_pandas()
    starts = set(map(tuple, new[[*group, "window_start"]].itertuples(index=False)))
    absorbed = pd.concat([parts["stored"], replaced[replaced["_i"].isin(_overlapping(replaced, new, group))]])
    absorbed = absorbed[[tuple(r) not in starts for r in absorbed[[*group, "window_start"]].itertuples(index=False)]]
    gone = stored.select(names).take(pa.array(absorbed["_i"].to_numpy(), pa.int64()))
    tombstones = pa.Table.from_arrays(
        [gone[c] if c in (*group, *WINDOW_COLUMNS) else pa.nulls(gone.num_rows, gone.schema.field(c).type)
         for c in names], names=names)
    return pa.concat_tables([_stamp(merged, generation, batch_id), _stamp(tombstones, generation, batch_id, 1)])


def _overlapping(left: Any, right: Any, group: list[str]) -> set[int]:
    """``_i`` of the ``left`` sessions that overlap or touch a ``right`` session of the same key."""
    if len(left) == 0 or len(right) == 0:
        return set()
    pairs = left.merge(right[[*group, *WINDOW_COLUMNS]], on=group, suffixes=("", "_r"))
    hit = pairs[(pairs.window_start <= pairs.window_end_r) & (pairs.window_start_r <= pairs.window_end)]
    return set(hit["_i"])


def finalize(states: pa.Table, view: GoldViewConfig, public: pa.Schema) -> pa.Table:
    """The public window rows of ``states``: group keys, window bounds, every metric's value."""
    columns: dict[str, Any] = {name: states[name] for name in window_keys(view)}
    for name, metric in view.metrics.items():
        fn = metric.fn
        if fn in ("count", "sum", "min", "max", "custom"):
            value: Any = states[name]
        elif fn == "avg":
            n = states[f"{name}__n"]
            value = pc.if_else(pc.greater(pc.fill_null(n, 0), 0),
                               pc.divide(states[f"{name}__sum"], pc.cast(pc.if_else(pc.equal(n, 0), 1, n), pa.float64())),
                               pa.scalar(None, pa.float64()))
        elif fn == "stddev":
            n = pc.fill_null(states[f"{name}__n"], 0.0)
            value = pc.if_else(pc.greater_equal(n, 2.0),
                               pc.sqrt(pc.divide(pc.fill_null(states[f"{name}__m2"], 0.0),
                                                 pc.max_element_wise(pc.subtract(n, 1.0), 1.0))),
                               pa.scalar(None, pa.float64()))
        elif fn == "approx_count_distinct":
            value = pa.array([_hll_estimate(s) for s in states[f"{name}__hll"].to_pylist()], pa.int64())
        else:  # percentile, Spark's percentile_approx on exact data: the smallest value with rank >= p * n
            p = metric.percentile or 0.5
            value = pa.array([_rank_value(v, p) for v in states[f"{name}__values"].to_pylist()], pa.float64())
        target = public.field(name).type
        columns[name] = value.cast(target, safe=False) if value.type != target else value
    names = [f.name for f in public if f.name in columns]
    return pa.Table.from_arrays([columns[n] for n in names], names=names)


def _hll_estimate(sketch: bytes | None) -> int:
    if sketch is None:
        return 0
    import datasketches

    return int(round(datasketches.hll_sketch.deserialize(bytes(sketch)).get_estimate()))


def _rank_value(values: list[float] | None, p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(p * len(ordered)) - 1, 0)]
