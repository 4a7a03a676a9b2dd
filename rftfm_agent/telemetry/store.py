"""The embedded run store: Parquet files per run, a JSON manifest that commits them, DuckDB to query.

Layout (no server needed):

    ROOT/runs/<run_id>/manifest.json          what the run is, and which part files are committed
    ROOT/runs/<run_id>/steps/part-*.parquet   long format: run_id, step, wall_time, metric, source_key, value
    ROOT/runs/<run_id>/trajectories/part-*.parquet
    ROOT/runs/<run_id>/verdicts.parquet, events.parquet   derived: the detector's latest verdict and events

Atomicity: a part file is written under a temporary name and renamed; it only becomes visible when a
new manifest that lists it replaces the old one with `os.replace`. A crash at any point therefore
leaves the last committed state readable, and leftovers of an interrupted write are simply ignored
(and removed by the next write to the run). A new run is built in a staging folder and renamed into
place in one step.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rftfm_agent.errors import InputError, StoreError
from rftfm_agent.telemetry import io, vocabulary
from rftfm_agent.telemetry.io import atomic_write_bytes, atomic_write_with, fsync_dir, fsync_tree
from rftfm_agent.telemetry.schema import ImportedRun, RawStep, RunManifest, SourceInfo, TrajectoryRecord

STEP_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("step", pa.int64()),
        ("wall_time", pa.float64()),
        ("metric", pa.string()),
        ("source_key", pa.string()),
        ("value", pa.float64()),
    ]
)

TRAJECTORY_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("step", pa.int64()),
        ("prompt_id", pa.string()),
        ("group_id", pa.int64()),
        ("sample_index", pa.int64()),
        ("prompt", pa.string()),
        ("completion", pa.string()),
        ("reward", pa.float64()),
        ("rewards", pa.map_(pa.string(), pa.float64())),
        ("advantage", pa.float64()),
        ("advantage_mean", pa.float64()),
        ("advantage_std", pa.float64()),
        ("return", pa.float64()),
        ("response_length", pa.int64()),
        ("truncated", pa.bool_()),
        ("repetition_ratio", pa.float64()),
        ("unique_token_ratio", pa.float64()),
        ("tool_call_count", pa.int64()),
        ("tool_error_count", pa.int64()),
        ("empty_response", pa.bool_()),
        ("short_response", pa.bool_()),
        ("long_response", pa.bool_()),
        ("fault_injected", pa.bool_()),
        ("fault_injection_type", pa.string()),
        ("fault_injection_strength", pa.string()),
    ]
)

# Tables derived from a run and stored beside it, one Parquet file each (`runs/<id>/<name>.parquet`),
# replaced whole when recomputed and queryable by SQL as views of the same name. Their writers own the
# content: detection writes `verdicts` (one row per run) and `events` (one row per event).
VERDICT_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("verdict", pa.string()),  # healthy | anomalous
        ("mode", pa.string()),  # band | self
        ("score", pa.float64()),
        ("first_alarm_step", pa.int64()),
        ("n_alarms", pa.int64()),
        ("missing", pa.list_(pa.string())),
        ("last_step", pa.int64()),  # the newest step the verdict saw (a live run may have more by now)
        ("detected_at", pa.float64()),  # unix time
    ]
)
EVENT_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("step", pa.int64()),
        ("metric", pa.string()),
        ("source", pa.string()),  # rule | band | self | profile
        ("check", pa.string()),  # shewhart | ewma | cusum | bocpd | profile | the rule's name
        ("severity", pa.string()),
        ("score", pa.float64()),
        ("alarm", pa.bool_()),
        ("evidence", pa.string()),  # JSON (telemetry.io policy: NaN/Inf as strings)
    ]
)
ARTIFACTS: dict[str, pa.Schema] = {"verdicts": VERDICT_SCHEMA, "events": EVENT_SCHEMA}

# The supervisor's audit journal: one JSON object per line in `runs/<run>/journal.jsonl`, appended (never
# rewritten), so an entry written is never lost; the SQL view `journal` holds every run's entries.
JOURNAL_FILE = "journal.jsonl"
JOURNAL_COLUMNS: tuple[str, ...] = (
    "run_id",  # the supervised run the journal belongs to (its first segment)
    "seq",
    "time",
    "segment_run",  # the store run (segment) the entry was made in
    "step",
    # incident | diagnosed | observe | proposed | allowed | refused | asked | approved | rejected | applied |
    # verified | undone | unverified | escalated | error
    "decision",
    "rule",
    "reason",
    "actions",  # JSON list of actions
    "detail",  # JSON object: evidence, numbers
)

# Readers may hold many small parts from a live run; past this many, appends merge them into one.
COMPACT_AFTER_PARTS = 64

_SELECT_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def default_store_path() -> Path:
    """$RFTFM_STORE, else ~/.rftfm/store."""
    env = os.environ.get("RFTFM_STORE")
    return Path(env).expanduser() if env else Path.home() / ".rftfm" / "store"


def slugify(name: str) -> str:
    """A run id from a human name: lower case, [a-z0-9._-], at most 80 characters."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.")
    return slug[:80] or "run"


# Parquet compression of a part, by kind. Step parts are small numeric tables (~1,000 rows a run), where
# zstd's per-column set-up costs more than it saves: 0.35 ms instead of 0.65 ms per part for 9 % more
# bytes (128 step parts of the 1M-record ingest benchmark, written here). In trajectory parts only the
# text columns get zstd, which keeps prompts and completions small; the ~20 short numeric columns get
# snappy, as step parts do: 1.6 ms instead of 2.4 ms per part of 2,560 rows, for 9 % more bytes
# (64 parts of the 1M-record benchmark, written here).
_COMPRESSION = {"steps": "snappy", "trajectories": "zstd"}
_TEXT_COLUMNS = frozenset({"prompt", "completion"})


def _compression(kind: str, leaves: list[str]) -> str | dict[str, str]:
    """A part's codec: one for the whole file, or per leaf column for trajectory parts (zstd for text;
    a codec is given per Parquet leaf, `rewards.key_value.value`, and a leaf left out is written
    uncompressed)."""
    if kind != "trajectories":
        return _COMPRESSION.get(kind, "zstd")
    return {path: "zstd" if path in _TEXT_COLUMNS else "snappy" for path in leaves}


# Parquet encodings of a part. Dictionaries only for text columns (run ids, metric names, prompt ids,
# fault types: few distinct values), and min/max statistics only for run_id and step, the columns
# queries filter parts on: on the 1M-record ingest benchmark's trajectory parts (64 of 2,560 rows,
# written here) this took 1.25 ms a part against 1.85 ms with both for every column, for 14 % more bytes.
_STATISTICS = ["run_id", "step"]


def _write_options(kind: str, table: pa.Table) -> dict[str, Any]:
    leaves = _leaf_types(table.schema)
    return {
        "compression": _compression(kind, [path for path, _ in leaves]),
        "use_dictionary": [path for path, typ in leaves if pa.types.is_string(typ)],
        "write_statistics": [c for c in _STATISTICS if c in table.column_names],
    }


def _leaf_types(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    """Each leaf column's Parquet name (`rewards.key_value.key`) and type."""

    def leaves(name: str, typ: pa.DataType) -> list[tuple[str, pa.DataType]]:
        if pa.types.is_map(typ):
            return leaves(f"{name}.key_value.key", typ.key_type) + leaves(
                f"{name}.key_value.value", typ.item_type
            )
        if pa.types.is_struct(typ):
            return [
                p
                for i in range(typ.num_fields)
                for p in leaves(f"{name}.{typ.field(i).name}", typ.field(i).type)
            ]
        if pa.types.is_list(typ) or pa.types.is_large_list(typ):
            return leaves(f"{name}.list.element", typ.value_type)
        return [(name, typ)]

    return [p for f in schema for p in leaves(f.name, f.type)]


def _write_part(folder: Path, table: pa.Table, durable: bool = True) -> str:
    """Write a Parquet part atomically (temporary name, then rename); returns its name.

    `durable=False` is for a staging folder, which no reader sees: the file is written in place and not
    flushed, because the batch commit flushes all its staged files together (`Store.commit_all`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = f"part-{uuid.uuid4().hex[:16]}.parquet"
    options = _write_options(folder.name, table)
    if durable:
        atomic_write_with(folder / name, lambda tmp: pq.write_table(table, tmp, **options))
    else:
        pq.write_table(table, folder / name, **options)
    return name


def step_table(run_id: str, steps: Iterable[RawStep]) -> pa.Table:
    """Map raw rows through the vocabulary into the long step table (one row per step × metric).

    Rows that log the same keys share one mapping plan (`vocabulary.map_keys`), applied to all their
    values at once; the rows come out in the order of `map_row` applied row by row."""
    rows = list(steps)
    union = tuple(dict.fromkeys(k for r in rows for k in r.values))
    if len({vocabulary.resolve(k)[0] for k in union}) == len(union):  # no two keys share a name
        return _step_table_without_clashes(run_id, rows, union, vocabulary.map_keys(union))
    by_keys: dict[tuple[str, ...], list[int]] = {}
    for i, raw in enumerate(rows):
        by_keys.setdefault(tuple(raw.values), []).append(i)
    row_of, order, metric, source, value = [], [], [], [], []
    for keys, members in by_keys.items():
        plan = vocabulary.map_keys(keys)
        if not plan:
            continue
        logged = np.array([list(rows[i].values.values()) for i in members], dtype=np.float64)
        positions = np.array([p[0] for p in plan])
        scales = np.array([p[3] for p in plan], dtype=np.float64)
        n, m = len(members), len(plan)
        value.append((logged.reshape(n, len(keys))[:, positions] * scales).ravel())
        row_of.append(np.repeat(np.array(members), m))
        order.append(np.tile(np.arange(m), n))
        metric.append(np.tile(np.array([p[1] for p in plan], dtype=object), n))
        source.append(np.tile(np.array([p[2] for p in plan], dtype=object), n))
    if not value:
        return STEP_SCHEMA.empty_table()
    row_all, order_all = np.concatenate(row_of), np.concatenate(order)
    sort = np.lexsort((order_all, row_all))
    row_all = row_all[sort]
    step = np.array([r.step for r in rows], dtype=np.int64)[row_all]
    wall = pa.array([r.wall_time for r in rows], pa.float64()).take(pa.array(row_all))
    return pa.table(
        {
            "run_id": pa.repeat(pa.scalar(run_id, pa.string()), len(row_all)),
            "step": pa.array(step, pa.int64()),
            "wall_time": wall,
            "metric": pa.array(np.concatenate(metric)[sort], pa.string()),
            "source_key": pa.array(np.concatenate(source)[sort], pa.string()),
            "value": pa.array(np.concatenate(value)[sort], pa.float64()),
        },
        schema=STEP_SCHEMA,
    )


def _step_table_without_clashes(
    run_id: str, rows: list[RawStep], union: tuple[str, ...], plan: tuple[tuple[int, str, str, float], ...]
) -> pa.Table:
    """`step_table` when no two of the log's keys map to one canonical name: each key then has one
    mapping whatever else its row holds, and `map_row` keeps a row's keys in their order, so the long
    table is the rows' values flattened in order (a sparse log, say a W&B export with gaps, has nearly
    as many key sets as rows: planning per key set cost ~70 µs a row there)."""
    column = {key: i for i, key in enumerate(union)}
    assert len(plan) == len(union)  # without clashes every key is mapped once
    metrics, scales = np.empty(len(union), dtype=object), np.empty(len(union))
    for position, metric, _key, scale in plan:  # position: the key's place in `union`
        metrics[position], scales[position] = metric, scale
    keys = np.array(union, dtype=object)
    col = np.fromiter((column[k] for r in rows for k in r.values), dtype=np.int64)
    if not len(col):
        return STEP_SCHEMA.empty_table()
    value = np.fromiter((v for r in rows for v in r.values.values()), dtype=np.float64, count=len(col))
    row = np.repeat(np.arange(len(rows)), [len(r.values) for r in rows])
    return pa.table(
        {
            "run_id": pa.repeat(pa.scalar(run_id, pa.string()), len(col)),
            "step": pa.array(np.array([r.step for r in rows], dtype=np.int64)[row], pa.int64()),
            "wall_time": pa.array([r.wall_time for r in rows], pa.float64()).take(pa.array(row)),
            "metric": pa.array(metrics[col], pa.string()),
            "source_key": pa.array(keys[col], pa.string()),
            "value": pa.array(value * scales[col], pa.float64()),
        },
        schema=STEP_SCHEMA,
    )


def wide_steps(long: pd.DataFrame) -> pd.DataFrame:
    """The long step table as one row per step and one column per metric, sorted by step and by name.

    A (step, metric) logged twice keeps its last non-NaN value, and the step's wall time is its latest
    one: pandas' `pivot_table(aggfunc="last", dropna=False)`, which a test holds this equal to, built
    with arrays (the pivot was a third of the work of examining a run). A cell logged only as NaN is
    flagged (`LOGGED_NAN`), as NaN alone does not tell it from a metric the step did not log.
    """
    if long.empty:
        return pd.DataFrame({"step": pd.Series(dtype="int64")})
    steps, row = np.unique(long["step"].to_numpy(), return_inverse=True)
    metrics, col = np.unique(long["metric"].to_numpy().astype(str), return_inverse=True)
    value = long["value"].to_numpy(dtype=np.float64)
    logged = np.flatnonzero(~np.isnan(value))[::-1]  # newest first: np.unique keeps the first it meets
    _, newest = np.unique(row[logged] * len(metrics) + col[logged], return_index=True)
    keep = logged[newest]
    grid = np.full((len(steps), len(metrics)), np.nan)
    grid[row[keep], col[keep]] = value[keep]
    wall = np.full(len(steps), np.nan)
    np.fmax.at(wall, row, long["wall_time"].to_numpy(dtype=np.float64, na_value=np.nan))
    nan_cell = np.zeros(grid.shape, dtype=bool)  # logged, and only as NaN
    nan_logged = np.isnan(value)
    nan_cell[row[nan_logged], col[nan_logged]] = True
    nan_cell &= np.isnan(grid)
    names = metrics.tolist()
    columns = dict(zip(names, grid.T, strict=True))
    columns |= {
        LOGGED_NAN + names[j]: nan_cell[:, j].astype(np.float64) for j in np.flatnonzero(nan_cell.any(0))
    }
    frame = pd.DataFrame({k: columns[k] for k in sorted(columns)})
    frame.insert(0, "wall_time", wall)
    frame.insert(0, "step", steps.astype(np.int64))
    return frame


# A wide step table has one NaN for a metric a step did not log and for one it logged as NaN. The second
# is news (a numerical failure), the first is not (a validation-only row, metrics logged at different
# rates): a metric logged only as NaN at some step gets a flag column `nan/<metric>`, 1.0 at those steps
# and 0.0 elsewhere.
LOGGED_NAN = "nan/"


def mark_nan(row: dict[str, Any]) -> dict[str, Any]:
    """A logged row with its NaN values flagged as `wide_steps` flags them (`nan/<metric>` = 1.0), so that
    a frame built from rows keeps them apart from the metrics a row did not log."""
    flags = {LOGGED_NAN + k: 1.0 for k, v in row.items() if isinstance(v, float) and math.isnan(v)}
    return row | flags if flags else row


def trajectory_table(run_id: str, records: Sequence[TrajectoryRecord]) -> pa.Table:
    """Trajectory records (pydantic) as an Arrow table in the store's schema."""
    rows = []
    for r in records:
        d = r.model_dump(by_alias=True)
        d["run_id"] = run_id
        d["rewards"] = list(d["rewards"].items())
        rows.append(d)
    return pa.Table.from_pylist(rows, schema=TRAJECTORY_SCHEMA)


def conform_trajectories(run_id: str, table: pa.Table) -> pa.Table:
    """Give an importer's trajectory table the store's exact schema (missing columns become nulls); a
    column that cannot take its type (a word where the store keeps a number) is a ValueError naming it."""
    n = table.num_rows
    arrays = []
    for fld in TRAJECTORY_SCHEMA:
        if fld.name == "run_id":
            arrays.append(pa.repeat(pa.scalar(run_id, pa.string()), n))
        elif fld.name in table.column_names:
            try:
                arrays.append(table.column(fld.name).cast(fld.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                got = table.column(fld.name).type
                raise ValueError(
                    f"trajectory column {fld.name!r} holds {got} values, not {fld.type}"
                ) from None
        else:
            arrays.append(pa.nulls(n, fld.type))
    return pa.Table.from_arrays(arrays, schema=TRAJECTORY_SCHEMA)


class Store:
    """Many runs in one folder; safe to read while a live run appends to it."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_store_path()
        self.runs_dir = self.root / "runs"

    # ------------------------------------------------------------------ reading
    def run_ids(self) -> list[str]:
        """Ids of committed runs (a folder without a manifest is an interrupted write: ignored)."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(
            p.name
            for p in self.runs_dir.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").is_file()
        )

    def manifest(self, run_id: str) -> RunManifest:
        path = self.runs_dir / run_id / "manifest.json"
        try:
            return RunManifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise StoreError(f"{self.root}: no run {run_id!r} in the store") from None

    def manifests(self) -> list[RunManifest]:
        return [self.manifest(r) for r in self.run_ids()]

    def resolve(self, ref: str) -> str:
        """A run id from an id, a name, or an unambiguous id prefix."""
        if "/" not in ref and not ref.startswith(".") and (self.runs_dir / ref / "manifest.json").is_file():
            return ref  # an id: no need to list the store (diagnosing 1,000 runs resolves 1,000 refs)
        ids = self.run_ids()
        if ref in ids:
            return ref
        by_name = [m.run_id for m in self.manifests() if m.name == ref]
        if len(by_name) == 1:
            return by_name[0]
        prefixed = [i for i in ids if i.startswith(ref)]
        if len(prefixed) == 1:
            return prefixed[0]
        if len(prefixed) > 1 or len(by_name) > 1:
            raise StoreError(f"{self.root}: {ref!r} is ambiguous: {', '.join((by_name or prefixed)[:5])}")
        raise StoreError(f"{self.root}: no run {ref!r} in the store (see `rftfm runs`)")

    def _parts(self, run_id: str, kind: str, manifest: RunManifest | None = None) -> list[Path]:
        m = manifest or self.manifest(run_id)
        names = m.step_parts if kind == "steps" else m.trajectory_parts
        return [self.runs_dir / run_id / kind / n for n in names]

    def steps(self, run_id: str, wide: bool = True) -> pd.DataFrame:
        """Step metrics of a run: wide (one column per canonical metric) or long (as stored)."""
        parts = self._parts(run_id, "steps")
        table = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else STEP_SCHEMA.empty_table()
        df = table.to_pandas()
        if not wide:
            return df
        return wide_steps(df)

    def trajectories(self, run_id: str, columns: list[str] | None = None) -> pd.DataFrame:
        return self.trajectory_table(run_id, columns).to_pandas()

    def trajectory_table(
        self, run_id: str, columns: list[str] | None = None, manifest: RunManifest | None = None
    ) -> pa.Table:
        """A run's trajectory rows as Arrow (no pandas copy): for vectorised passes over many runs."""
        parts = self._parts(run_id, "trajectories", manifest)
        if not parts:
            empty = TRAJECTORY_SCHEMA.empty_table()
            return empty.select(columns) if columns else empty
        return pa.concat_tables([pq.read_table(p, columns=columns) for p in parts])

    def _artifact_path(self, run_id: str, name: str) -> Path:
        if name not in ARTIFACTS:
            raise StoreError(f"unknown run artifact {name!r}; known: {', '.join(ARTIFACTS)}")
        return self.runs_dir / run_id / f"{name}.parquet"

    def artifact(self, run_id: str, name: str) -> pd.DataFrame:
        """A derived table stored beside a run (see `ARTIFACTS`); empty when none was written."""
        path = self._artifact_path(run_id, name)
        table = pq.read_table(path) if path.is_file() else ARTIFACTS[name].empty_table()
        return table.to_pandas()

    def append_journal(self, run_id: str, entry: dict[str, Any]) -> None:
        """Append one entry to a run's audit journal and make it durable (fsync) before returning."""
        path = self.runs_dir / run_id / JOURNAL_FILE
        if not path.parent.is_dir():
            raise StoreError(f"{self.root}: no run {run_id!r} to journal for")
        line = io.dumps({k: entry.get(k) for k in JOURNAL_COLUMNS}, indent=None) + "\n"
        with self._locked(run_id), open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def journal(self, run_id: str | None = None) -> pd.DataFrame:
        """Journal entries of one run (or of all), in order; a torn line (a crash mid-write) is skipped."""
        ids = [run_id] if run_id is not None else self.run_ids()
        rows = []
        for rid in ids:
            path = self.runs_dir / rid / JOURNAL_FILE
            if not path.is_file():
                continue
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        frame = pd.DataFrame(rows, columns=list(JOURNAL_COLUMNS))
        if frame.empty:
            return frame
        frame = frame.astype({"seq": "int64", "step": "Int64"})
        text = [c for c in JOURNAL_COLUMNS if c not in ("seq", "step", "time")]
        frame[text] = frame[text].astype(object).where(frame[text].notna(), None)
        return frame

    def write_artifact(self, run_id: str, name: str, table: pa.Table) -> Path:
        """Store (or replace) a derived table beside a committed run, atomically."""
        path = self._artifact_path(run_id, name)
        self.manifest(run_id)  # the run must exist
        try:
            table = table.select(ARTIFACTS[name].names).cast(ARTIFACTS[name])
        except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise StoreError(f"run {run_id}: {name} table does not fit its schema ({exc})") from None
        with self._locked(run_id):
            atomic_write_with(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
        return path

    def sql(self, query: str, labels: bool = True) -> pd.DataFrame:
        """Run one read-only SQL query over the views `runs`, `steps`, `trajectories`, `verdicts`, `events`,
        `journal`.

        This is the entry point the agent's tools use, so it refuses anything but SELECT / EXPLAIN and
        cannot reach files outside the store. With `labels=False` (the agent's tool) the views carry no
        benchmark label (`runs.label`, `runs.fault_*`, `trajectories.fault_injected*`): a model triaging a
        testbed run cannot read the answer.
        """
        con = duckdb.connect(":memory:")
        try:
            statements = con.extract_statements(query)
        except duckdb.Error as exc:
            raise StoreError(f"SQL does not parse: {str(exc).splitlines()[0]}") from None
        if len(statements) != 1 or statements[0].type not in _SELECT_ONLY:
            raise StoreError("only one read-only SELECT statement is allowed")
        self._create_views(con, labels)
        con.execute(f"SET allowed_directories = ['{self.runs_dir.resolve()}/']")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        try:
            return con.execute(query).df()
        except duckdb.Error as exc:
            raise StoreError(f"SQL failed: {str(exc).splitlines()[0]}") from None
        finally:
            con.close()

    def _create_views(self, con: duckdb.DuckDBPyConnection, labels: bool = True) -> None:
        manifests = self.manifests()
        runs = pd.DataFrame(
            [
                {
                    "run_id": m.run_id,
                    "name": m.name,
                    "format": m.source.format,
                    "framework": m.source.framework,
                    "task": m.task,
                    "model": m.model,
                    "label": m.label,
                    "fault_family": m.fault.family if m.fault else None,
                    "fault_type": m.fault.type if m.fault else None,
                    "fault_strength": m.fault.strength if m.fault else None,
                    "fault_onset": m.fault.onset_step if m.fault else None,
                    "n_steps": m.n_steps,
                    "n_trajectories": m.n_trajectories,
                    "status": m.status,
                }
                for m in manifests
            ],
            columns=[
                "run_id",
                "name",
                "format",
                "framework",
                "task",
                "model",
                "label",
                "fault_family",
                "fault_type",
                "fault_strength",
                "fault_onset",
                "n_steps",
                "n_trajectories",
                "status",
            ],
        )
        if not labels:
            runs = runs.drop(columns=[c for c in runs.columns if c == "label" or c.startswith("fault_")])
        con.register("runs_df", runs)
        con.execute("CREATE VIEW runs AS SELECT * FROM runs_df")
        journal = self.journal()
        if journal.empty:
            journal = pd.DataFrame(
                {c: pd.Series(dtype="int64" if c in ("seq", "step") else "object") for c in JOURNAL_COLUMNS}
            )
        con.register("journal_df", journal)
        con.execute("CREATE VIEW journal AS SELECT * FROM journal_df")
        sources = {
            "steps": (STEP_SCHEMA, [p for m in manifests for p in self._parts(m.run_id, "steps", m)]),
            "trajectories": (
                TRAJECTORY_SCHEMA,
                [p for m in manifests for p in self._parts(m.run_id, "trajectories", m)],
            ),
            **{
                name: (schema, [p for m in manifests if (p := self._artifact_path(m.run_id, name)).is_file()])
                for name, schema in ARTIFACTS.items()
            },
        }
        for kind, (schema, paths) in sources.items():
            files = [str(p) for p in paths]
            hidden = [n for n in schema.names if n.startswith("fault_")] if not labels else []
            columns = f"* EXCLUDE ({', '.join(hidden)})" if hidden else "*"
            if files:
                listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                source = f"read_parquet([{listing}], union_by_name=true)"
                con.execute(f"CREATE VIEW {kind} AS SELECT {columns} FROM {source}")
            else:
                con.register(f"{kind}_empty", schema.empty_table())
                con.execute(f"CREATE VIEW {kind} AS SELECT {columns} FROM {kind}_empty")

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _locked(self, run_id: str) -> Iterator[None]:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.runs_dir / f".{run_id}.lock"
        with lock_path.open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _commit_manifest(self, run_dir: Path, manifest: RunManifest, durable: bool = True) -> None:
        data = manifest.model_dump_json(indent=2).encode()
        if durable:
            atomic_write_bytes(run_dir / "manifest.json", data)
        else:  # in a staging folder (see `_write_part`)
            (run_dir / "manifest.json").write_bytes(data)

    @staticmethod
    def _summarise(manifest: RunManifest, steps: pa.Table | None, n_traj: int) -> None:
        """Counts and names in the manifest from the step table's step, metric and source_key columns."""
        if steps is not None and steps.num_rows:
            step = steps.column("step")
            low, high = pc.min_max(step).values()
            manifest.n_steps = pc.count_distinct(step).as_py()
            manifest.first_step, manifest.last_step = low.as_py(), high.as_py()
            metric = steps.column("metric")
            names = pc.unique(metric)  # in order of first appearance
            first = pc.index_in(names, value_set=metric)  # the row where each first appears
            manifest.metrics = sorted(names.to_pylist())
            manifest.metric_sources = dict(
                zip(names.to_pylist(), steps.column("source_key").take(first).to_pylist(), strict=True)
            )
        manifest.n_trajectories = n_traj

    def write_run(self, run: ImportedRun, replace: bool = False) -> tuple[RunManifest, str]:
        """Store an imported run; returns (manifest, 'new' | 'unchanged' | 'replaced').

        Ingesting the same bytes twice is a no-op. A different run under a taken name gets a suffix,
        unless `replace` is set, in which case the new content replaces the old one atomically.
        """
        staged = self.stage_run(run, replace=replace)
        return self.commit_staged(staged), staged.outcome

    def stage_run(
        self, run: ImportedRun, replace: bool = False, reserved: set[str] | None = None, durable: bool = True
    ) -> StagedRun:
        """Write a run's parts into a hidden staging folder: nothing is visible until `commit_staged`.

        Ingest stages every run of its inputs first and commits them only when all were read, so that a
        bad input leaves the store unchanged while memory holds one run at a time. `reserved` holds the
        ids of runs staged before this one in the same batch (so that two of them never take one id).
        With `durable=False` the staged files are not flushed one by one: `commit_all` flushes a batch's
        files together before the first of them becomes visible.
        """
        reserved = reserved if reserved is not None else set()
        base = slugify(run.name)
        run_id = base
        outcome = "new"
        for n in range(2, 10_000):
            if run_id not in reserved and not (self.runs_dir / run_id / "manifest.json").is_file():
                break
            if run_id not in reserved:
                existing = self.manifest(run_id)
                if run.source.sha256 and existing.source.sha256 == run.source.sha256:
                    return StagedRun(run_id=run_id, outcome="unchanged", manifest=existing, staging=None)
                if replace and existing.name == run.name:
                    outcome = "replaced"
                    break
            run_id = f"{base}-{n}"
        steps = step_table(run_id, run.steps)
        try:
            traj = conform_trajectories(run_id, run.trajectories) if run.trajectories is not None else None
        except ValueError as exc:  # the input's fault: one line naming it, and nothing is stored
            where = os.path.commonpath(run.source.paths) if run.source.paths else run.name  # a run's folder
            raise InputError(where, str(exc)) from None
        manifest = RunManifest(
            run_id=run_id,
            name=run.name,
            source=run.source,
            task=run.task,
            model=run.model,
            seed=run.seed,
            config=run.config,
            label=run.label,  # type: ignore[arg-type]
            fault=run.fault,
            experiment_id=run.experiment_id,
            provenance=run.provenance,
            status="imported",
        )
        self._summarise(manifest, steps, traj.num_rows if traj else 0)
        staging = self._stage(manifest, steps, traj, durable=durable)
        reserved.add(run_id)
        return StagedRun(run_id=run_id, outcome=outcome, manifest=manifest, staging=staging, durable=durable)

    def commit_all(self, staged: Sequence[StagedRun]) -> list[RunManifest]:
        """Make staged runs visible, in order. Files staged without a flush of their own are flushed to
        disk first, all of them together (`io.fsync_tree`); the folder's entry list is flushed once at
        the end."""
        fsync_tree([s.staging for s in staged if s.staging is not None and not s.durable])
        out = [self._commit(s) for s in staged]
        if any(s.staging is not None for s in staged):
            fsync_dir(self.runs_dir)
        return out

    def commit_staged(self, staged: StagedRun) -> RunManifest:
        """Make one staged run visible (see `_commit`)."""
        return self.commit_all([staged])[0]

    def _commit(self, staged: StagedRun) -> RunManifest:
        """Make a staged run visible: a new run by renaming its folder into place, a replacement by
        moving its parts into the run's folder and committing the new manifest (the journal stays). The
        caller (`commit_all`) flushes the runs folder's entry list once for the batch."""
        if staged.staging is None:
            return staged.manifest
        run_id, manifest, staging = staged.run_id, staged.manifest, staged.staging
        with self._locked(run_id):
            try:
                if staged.outcome == "replaced":
                    run_dir = self.runs_dir / run_id
                    for kind in ("steps", "trajectories"):
                        if (staging / kind).is_dir():
                            if not (run_dir / kind).is_dir():
                                (run_dir / kind).mkdir(parents=True)
                                fsync_dir(run_dir)  # the new folder's entry
                            for part in (staging / kind).iterdir():
                                os.replace(part, run_dir / kind / part.name)
                            fsync_dir(run_dir / kind)  # the parts' new entries, before a manifest lists them
                    self._commit_manifest(run_dir, manifest)
                    self._collect_garbage(run_dir, manifest)
                    for name in ARTIFACTS:  # derived from the old content: no longer true of the new one
                        (run_dir / f"{name}.parquet").unlink(missing_ok=True)
                else:
                    self._rename_into_place(staging, run_id, sync_dir=False)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        return manifest

    def discard_staged(self, staged: StagedRun) -> None:
        """Drop a staged run that will not be committed (another input of its batch was bad)."""
        if staged.staging is not None:
            shutil.rmtree(staged.staging, ignore_errors=True)

    def _stage(
        self, manifest: RunManifest, steps: pa.Table, traj: pa.Table | None, durable: bool = True
    ) -> Path:
        """A hidden folder holding the run's parts and its manifest (removed again on failure)."""
        staging = self.runs_dir / f".staging-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            manifest.step_parts = [_write_part(staging / "steps", steps, durable)]
            if traj is not None and traj.num_rows:
                manifest.trajectory_parts = [_write_part(staging / "trajectories", traj, durable)]
            self._commit_manifest(staging, manifest, durable)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def _rename_into_place(self, staging: Path, run_id: str, sync_dir: bool = True) -> None:
        """Make a staged run visible under its id (the caller holds the run's lock)."""
        target = self.runs_dir / run_id
        if (target / "manifest.json").is_file():
            raise StoreError(f"run {run_id} was created by another writer meanwhile: ingest again")
        if target.exists():  # a folder left without a manifest by a crash: not a committed run
            shutil.rmtree(target)
        os.rename(staging, target)
        if sync_dir:
            fsync_dir(self.runs_dir)

    def _create(self, run_id: str, manifest: RunManifest, steps: pa.Table, traj: pa.Table | None) -> None:
        staging = self._stage(manifest, steps, traj)
        try:
            self._rename_into_place(staging, run_id)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _collect_garbage(run_dir: Path, manifest: RunManifest) -> None:
        """Remove part files no manifest lists (replaced content, interrupted writes)."""
        for kind, keep in (("steps", manifest.step_parts), ("trajectories", manifest.trajectory_parts)):
            folder = run_dir / kind
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.name not in keep:
                        p.unlink(missing_ok=True)

    def discard_run(self, run_id: str) -> None:
        """Remove a run that its writer abandoned (e.g. a bench run interrupted mid-training).

        The folder is first renamed to a hidden name (readers stop seeing the run at once, atomically),
        then deleted. Only the bench generator calls this, on its own unfinished runs.
        """
        folder = self.runs_dir / run_id
        if not folder.is_dir():
            return
        with self._locked(run_id):
            hidden = self.runs_dir / f".discarded-{run_id}-{os.getpid()}-{time.time_ns()}"
            os.replace(folder, hidden)
        shutil.rmtree(hidden, ignore_errors=True)

    # ------------------------------------------------------------------ live runs
    def create_live_run(self, manifest: RunManifest) -> RunManifest:
        """Register a run that a recorder will append to; the id is made unique if taken."""
        base = slugify(manifest.run_id or manifest.name)
        run_id = base
        n = 2
        while (self.runs_dir / run_id).exists():
            run_id, n = f"{base}-{n}", n + 1
        manifest = manifest.model_copy(update={"run_id": run_id, "status": "live"})
        with self._locked(run_id):
            self._create(run_id, manifest, STEP_SCHEMA.empty_table(), None)
        return self.manifest(run_id)

    def append(
        self,
        run_id: str,
        steps: Sequence[RawStep] = (),
        trajectories: pa.Table | None = None,
        status: str | None = None,
        config_updates: dict[str, Any] | None = None,
    ) -> RunManifest:
        """Append step rows and/or trajectory rows to a run, atomically; compacts many small parts.

        `config_updates` are merged into the manifest's config in the same commit (e.g. a live run's
        end-of-training summary).
        """
        with self._locked(run_id):
            manifest = self.manifest(run_id)
            run_dir = self.runs_dir / run_id
            if steps:
                manifest.step_parts.append(_write_part(run_dir / "steps", step_table(run_id, steps)))
            if trajectories is not None and trajectories.num_rows:
                table = conform_trajectories(run_id, trajectories)
                manifest.trajectory_parts.append(_write_part(run_dir / "trajectories", table))
            for kind in ("steps", "trajectories"):
                parts = manifest.step_parts if kind == "steps" else manifest.trajectory_parts
                if len(parts) > COMPACT_AFTER_PARTS:
                    merged = pa.concat_tables([pq.read_table(run_dir / kind / p) for p in parts])
                    parts[:] = [_write_part(run_dir / kind, merged)]
            if status is not None:
                manifest.status = status  # type: ignore[assignment]
            if config_updates:
                manifest.config.update(config_updates)
            self._refresh_counts(run_dir, manifest)
            self._commit_manifest(run_dir, manifest)
            self._collect_garbage(run_dir, manifest)
            return manifest

    @staticmethod
    def _refresh_counts(run_dir: Path, manifest: RunManifest) -> None:
        step_files = [run_dir / "steps" / p for p in manifest.step_parts]
        steps = (
            pa.concat_tables([pq.read_table(p, columns=["step", "metric", "source_key"]) for p in step_files])
            if step_files
            else None
        )
        n_traj = sum(
            pq.ParquetFile(run_dir / "trajectories" / p).metadata.num_rows for p in manifest.trajectory_parts
        )
        Store._summarise(manifest, steps, n_traj)


@dataclass(frozen=True)
class StagedRun:
    """A run written to a hidden staging folder, not yet visible (see `Store.stage_run`)."""

    run_id: str
    outcome: str  # 'new' | 'replaced' | 'unchanged' (nothing staged)
    manifest: RunManifest
    staging: Path | None
    durable: bool = True  # its files were flushed when written (else `commit_all` flushes them)


def finite_or_none(x: float | None) -> float | None:
    """JSON-safe float: NaN/Inf become None (for --json output only; the store keeps them)."""
    return x if x is not None and math.isfinite(x) else None


__all__ = [
    "STEP_SCHEMA",
    "TRAJECTORY_SCHEMA",
    "SourceInfo",
    "Store",
    "default_store_path",
    "finite_or_none",
    "slugify",
    "step_table",
    "trajectory_table",
]
