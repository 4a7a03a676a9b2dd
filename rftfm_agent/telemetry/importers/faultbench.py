"""The RFT-FaultBench release layout (paper, Zenodo 20044882), which our own bench export also writes.

    ROOT/metadata/registries/*.csv        experiment_id, control_or_fault, fault_type, fault_family,
                                          task_group (+ onset_step, strength, seed in ours)
    ROOT/**/<experiment_id>/openrlhf_train_train_step.jsonl     one row per train step
    ROOT/**/<experiment_id>/openrlhf_train_trajectory.jsonl     one row per completion

Step rows may be flat (`{"step": 3, "reward": …}`) or nested (`{"metadata": {"rollout_step": 3},
"metrics": {…}}`); trajectory rows carry `metadata.rollout_step`, `metadata.fault_injection.*`,
`metrics.*` and `flags.*`. Single JSONL files are recognised by content. Trajectory rows are read with
pyarrow's JSON reader (millions of rows in seconds); a bad line is then located with the standard
library so the error names it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry.aggregates import (
    AGGREGATES_VERSION,
    VERSION_KEY,
    aggregate_blocks,
    aggregate_by_step,
)
from rftfm_agent.telemetry.importers.base import (
    bad_rows_note,
    json_lines,
    looks_binary,
    numeric_items,
    read_head,
    sha256_of,
    to_float,
    whole_step,
)
from rftfm_agent.telemetry.schema import FAULT_TYPES, FaultSpec, ImportedRun, RawStep, SourceInfo

NAME = "rft_faultbench"
STEP_FILE = "openrlhf_train_train_step.jsonl"
TRAJECTORY_FILE = "openrlhf_train_trajectory.jsonl"
_STEP_KEYS = ("step", "global_step", "rollout_step", "train_step")
_FAMILY_WORDS = {
    "rf": "RF",
    "reward": "RF",
    "pg": "PG",
    "policy": "PG",
    "generation": "PG",
    "od": "OD",
    "optim": "OD",
    "optimization": "OD",
    "ca": "CA",
    "credit": "CA",
    "te": "TE",
    "tool": "TE",
    "environment": "TE",
}


# ---------------------------------------------------------------------------------------------- sniffing
def _first_json(head: bytes) -> dict | None:
    """The first of the first five lines that parses as JSON, if it is an object (a corrupt first line
    is then the reader's to name, or to leave out with --skip-bad)."""
    for line in head.split(b"\n")[:5]:
        if line.strip():
            try:
                obj = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                continue
            return obj if isinstance(obj, dict) else None
    return None


def _is_trajectory_row(obj: dict) -> bool:
    meta, metrics = obj.get("metadata"), obj.get("metrics")
    return isinstance(meta, dict) and "rollout_step" in meta and (isinstance(metrics, dict) or "flags" in obj)


def _step_of(obj: dict) -> Any:
    for key in _STEP_KEYS:
        if key in obj:
            return obj[key]
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for key in _STEP_KEYS:
            if key in meta:
                return meta[key]
    return None


def _is_step_row(obj: dict) -> bool:
    if _step_of(obj) is None:
        return False
    flat = obj.get("metrics") if isinstance(obj.get("metrics"), dict) else obj
    return len(numeric_items(flat)) >= 2


def sniff(path: Path, head: bytes) -> bool:
    if looks_binary(head):
        return False
    obj = _first_json(head)
    return obj is not None and (_is_trajectory_row(obj) or _is_step_row(obj))


def is_export_folder(folder: Path) -> bool:
    """A folder in the release layout: registries, or run folders holding the two JSONL files."""
    if (folder / "metadata" / "registries").is_dir():
        return True
    return any(next(folder.rglob(name), None) is not None for name in (STEP_FILE, TRAJECTORY_FILE))


# ---------------------------------------------------------------------------------------------- reading
def read_steps(path: Path, bad: list[str] | None = None, notes: list[str] | None = None) -> list[RawStep]:
    """Step rows; with `bad` (`--skip-bad`), malformed lines are left out and described there. With
    `notes`, a last line cut short (a job killed mid-write) is left out and noted there."""
    rows: dict[int, dict[str, float]] = {}
    for line_no, obj in json_lines(path, skipped=notes, bad=bad):
        step_i = whole_step(_step_of(obj))
        if step_i is None:
            if bad is not None:
                bad.append(f"line {line_no}: no valid step number")
                continue
            raise InputError(path, f"line {line_no}: no valid step number") from None
        flat = dict(obj.get("metrics")) if isinstance(obj.get("metrics"), dict) else dict(obj)
        values = numeric_items(flat, skip=lambda k: k in _STEP_KEYS)
        rows.setdefault(step_i, {}).update(values)
    return [RawStep(step=s, values=v) for s, v in sorted(rows.items())]


def _column(table: pa.Table, *names: str) -> pa.ChunkedArray | None:
    for name in names:
        if name in table.column_names:
            return table.column(name)
    return None


# Where each store column is found in a trajectory row, in order of preference (the first one a file has).
_TRAJECTORY_COLUMNS: dict[str, tuple[str, ...]] = {
    "step": ("metadata.rollout_step", "rollout_step", "step"),
    "prompt_id": ("metadata.prompt_id", "prompt_id", "metadata.sample_id"),
    "group_id": ("metadata.group_id", "group_id"),
    "sample_index": ("metadata.sample_index", "sample_index"),
    "prompt": ("prompt", "metadata.prompt", "data.prompt"),
    "completion": ("response", "completion", "output", "data.response"),
    "reward": ("metrics.reward", "reward"),
    "advantage": ("metrics.advantage", "advantage"),
    "advantage_mean": ("metrics.advantage_mean", "advantage_mean"),
    "advantage_std": ("metrics.advantage_std", "advantage_std"),
    "return": ("metrics.return", "return"),
    "response_length": ("metrics.response_length", "response_length"),
    "truncated": ("flags.truncated", "truncated"),
    "repetition_ratio": ("metrics.repetition_ratio", "repetition_ratio"),
    "unique_token_ratio": ("metrics.unique_token_ratio", "unique_token_ratio"),
    "tool_call_count": ("metrics.tool_call_count", "tool_call_count"),
    "tool_error_count": ("metrics.tool_error_count", "tool_error_count"),
    "empty_response": ("flags.empty_response", "empty_response"),
    "short_response": ("flags.short_response", "short_response"),
    "long_response": ("flags.long_response", "long_response"),
    "fault_injected": ("metadata.fault_injection.injected", "metadata.fault_injected", "fault_injected"),
    "fault_injection_type": ("metadata.fault_injection.fault_injection_type", "fault_injection_type"),
    "fault_injection_strength": (
        "metadata.fault_injection.fault_injection_strength",
        "fault_injection_strength",
    ),
}


# A line after the first that is not blank and does not open a JSON object (`null`, `[…]`, a number).
# pyarrow's reader reads a `null` row as a row of nulls, and a file whose first row is `null` crashes the
# process (pyarrow 26, seen here): such files are read line by line instead, which names the line. (The
# pattern starts at a newline so that `re` scans for it at memchr speed: ~2.5 GB/s here, against ~0.26
# GB/s for a multi-line `^`.)
_NOT_AN_OBJECT = re.compile(rb"\n[ \t\r]*[^{\s]")


def _a_row_is_not_an_object(data: bytes) -> bool:
    return not data.lstrip().startswith(b"{") or _NOT_AN_OBJECT.search(data) is not None


# Store columns kept as whole numbers; an importer's table may hold them as doubles (`3.0`).
_INTEGER_COLUMNS = ("group_id", "sample_index", "tool_call_count", "tool_error_count")
# Store columns kept as numbers and as true/false (as the store's TRAJECTORY_SCHEMA types them).
_NUMBER_COLUMNS = (
    "reward",
    "advantage",
    "advantage_mean",
    "advantage_std",
    "return",
    "repetition_ratio",
    "unique_token_ratio",
)
_FLAG_COLUMNS = ("truncated", "empty_response", "short_response", "long_response", "fault_injected")
# How a message names a store column: as the release layout spells it.
_SOURCE_NAME = {"step": "rollout_step", **{n: n for n in _INTEGER_COLUMNS}}


def read_trajectories(path: Path, bad: list[str] | None = None, notes: list[str] | None = None) -> pa.Table:
    """Trajectory rows as a table with the store's column names (run_id is filled by the store).

    With `bad` (`--skip-bad`), malformed lines are left out and described there; the rest is read. With
    `notes`, a last line cut short (a job killed mid-write: no newline, not a whole JSON record) is left
    out and noted there, as the other JSON-lines importers do."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    if not data.strip():
        raise InputError(path, "file is empty")
    if notes is not None and bad is None:
        data = _without_cut_line(data, notes)
    lines: list[int] | None = None  # each row's line, where the line-by-line reader left rows out
    raw = None if _a_row_is_not_an_object(data) else _read_json(data)
    if raw is None:  # the line-by-line reader names the bad line (or, with `bad`, leaves bad lines out)
        data, lines = _rows_alike(path, bad, notes)
        raw = _read_json(data)
    if raw is None:
        raise InputError(path, "rows do not share one structure (mixed types in a field)")
    flat = flatten_structs(raw)
    if not has_rollout_step(flat):
        raise InputError(path, "trajectory rows without metadata.rollout_step")
    try:
        table = store_columns(flat)
    except ValueError as exc:  # a per-function reward that is not a number (pa.ArrowInvalid is one too)
        raise InputError(path, str(exc).splitlines()[0]) from None
    return whole_numbers(path, table, bad, lambda: lines or [n for n, _ in json_lines(path, bad=[])])


def _without_cut_line(data: bytes, notes: list[str]) -> bytes:
    """The file's bytes without a last line cut short: one after the last newline that does not parse
    as JSON (noted in `notes`, in the words `json_lines` uses). A file of that one line is left whole:
    the reader then says it is truncated."""
    end = data.rstrip(b" \t\r").rfind(b"\n") + 1
    tail = data[end:]
    if not end or not tail.strip() or not data[:end].strip():
        return data
    try:
        json.loads(tail)
    except ValueError:  # json's error (JSONDecodeError) or bytes that are not UTF-8
        line = data.count(b"\n", 0, end) + 1
        notes.append(f"truncated: the last line ({line}) is an incomplete JSON record and was skipped")
        return data[:end]
    return data


def _read_json(data: bytes) -> pa.Table | None:
    """JSON lines as a table by pyarrow's reader; None where it refuses them (a malformed line, a field
    whose type changes between rows). A file that pyarrow's 1 MB blocks cannot split (a row of a few
    MB, a long multi-turn trajectory: "straddling object") is read again with blocks that hold its
    longest row; it was reported as rows of mixed types."""
    options = pajson.ParseOptions(newlines_in_values=False)
    try:
        return pajson.read_json(pa.BufferReader(data), parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        if "straddling" not in str(exc):
            return None
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    longest = int(np.diff(ends, prepend=-1, append=len(data)).max())
    try:
        return pajson.read_json(
            pa.BufferReader(data),
            read_options=pajson.ReadOptions(block_size=max(longest + 1, 1 << 20)),
            parse_options=options,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _kind(value: Any) -> str | None:
    """A JSON value's kind as pyarrow's reader tells kinds apart (an int and a float are both numbers)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "a list" if isinstance(value, list) else "an object"


def _fields(obj: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every field of a row, nested ones by their dotted name (list items as `name[]`, at any depth)."""
    for key, value in obj.items():
        name = f"{prefix}{key}"
        yield name, value
        yield from _inside(name, value)


def _inside(name: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        yield from _fields(value, f"{name}.")
    elif isinstance(value, list):
        for item in value:
            yield f"{name}[]", item
            yield from _inside(f"{name}[]", item)


def _rows_alike(path: Path, bad: list[str] | None, notes: list[str] | None = None) -> tuple[bytes, list[int]]:
    """The file's rows read line by line and written back as JSON lines, each field of one kind, with
    the line number of each row kept: the first malformed line (not JSON, not an object, a field of
    another kind than most rows give it) is an error naming it, or with `bad` (`--skip-bad`) every one
    is left out and described there. With `notes`, a bad last line is left out and noted there (once:
    `_without_cut_line` may have noted it already)."""
    skipped: list[str] | None = [] if notes is not None else None
    rows = [(n, obj, _kinds(obj)) for n, obj in json_lines(path, skipped=skipped, bad=bad)]
    if notes is not None and skipped:
        notes.extend(n for n in skipped if n not in notes)
    counts: dict[str, Counter[str]] = {}
    for _, _, kinds in rows:
        for name, kind in kinds.items():
            counts.setdefault(name, Counter())[kind] += 1
    usual = {name: c.most_common(1)[0][0] for name, c in counts.items()}  # a tie: the kind seen first
    good: list[str] = []
    kept: list[int] = []
    for line_no, obj, kinds in rows:
        odd = next((name for name, kind in kinds.items() if kind == _MIXED or kind != usual[name]), None)
        if odd is None:
            good.append(json.dumps(obj))
            kept.append(line_no)
            continue
        said = (
            f"line {line_no}: {odd} holds items of mixed kinds"
            if kinds[odd] == _MIXED
            else f"line {line_no}: {odd} is {kinds[odd]} where other rows have {usual[odd]}"
        )
        if bad is None:
            raise InputError(path, said)
        bad.append(said)
    if not good:
        if skipped and not bad:  # one line, cut short
            raise InputError(path, "truncated: the only line is an incomplete JSON record")
        first = f" (first: {bad[0]})" if bad else ""
        raise InputError(path, f"no readable row ({len(bad or [])} malformed{first})")
    return "\n".join(good).encode(), kept


_MIXED = "mixed"  # the kind of a list field whose items differ in kind


def _kinds(obj: dict) -> dict[str, str]:
    """The kind of each of a row's fields (`_MIXED` for a list whose items differ in kind)."""
    kinds: dict[str, str] = {}
    for name, value in _fields(obj):
        if (kind := _kind(value)) is not None and kinds.setdefault(name, kind) != kind:
            kinds[name] = _MIXED
    return kinds


def whole_numbers(
    path: Path,
    table: pa.Table,
    bad: list[str] | None = None,
    line_numbers: Callable[[], list[int]] | None = None,
) -> pa.Table:
    """The rows whose step and ids and counts (`_INTEGER_COLUMNS`) are whole numbers, typed int64 as the
    store keeps them: a row without a step, or with a fraction in one of them, is an error naming its
    line (`line_numbers`: the line of each of the table's rows, asked for only then) or row, or
    with `bad` (`--skip-bad`) it is left out and described there. Number and true/false columns are
    typed as the store keeps them too (`_typed`)."""
    checks = [
        name
        for name in ("step", *_INTEGER_COLUMNS)
        if name in table.column_names
        and not (
            pa.types.is_integer(table.column(name).type) and (name != "step" or not table["step"].null_count)
        )
    ]
    if not checks:
        return _typed(path, table)
    reasons: dict[int, str] = {}  # first reason per row
    for name in checks:
        column = table.column(name)
        try:  # an integer column only for the nulls and the message: past 2**53 a double is near enough
            number = pc.cast(column, pa.float64(), safe=not pa.types.is_integer(column.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InputError(path, f"{_SOURCE_NAME[name]} holds values that are not numbers") from None
        whole = pc.and_(pc.is_finite(number), pc.equal(pc.floor(number), number))
        if name != "step":
            whole = pc.or_kleene(whole, pc.is_null(number))  # an id or count may be absent
        values = number.to_numpy(zero_copy_only=False)
        absent = pc.is_null(number).to_numpy(zero_copy_only=False)  # only a step can be absent here
        for i in np.flatnonzero(~pc.fill_null(whole, False).to_numpy(zero_copy_only=False)):
            reasons.setdefault(
                int(i),
                "no rollout_step"
                if absent[i]
                else f"{_SOURCE_NAME[name]} {float(values[i])!r} is not a whole number",
            )
    if reasons:
        lines = line_numbers() if line_numbers is not None else []
        rows = sorted(reasons)
        said = [f"{f'line {lines[i]}' if i < len(lines) else f'row {i + 1}'}: {reasons[i]}" for i in rows]
        if bad is None:
            raise InputError(path, said[0])
        bad.extend(said)
        if len(rows) == table.num_rows:
            raise InputError(path, f"no readable row ({len(bad)} malformed, first: {bad[0]})")
        keep = np.ones(table.num_rows, dtype=bool)
        keep[rows] = False
        table = table.filter(pa.array(keep))
    for name in checks:
        column = table.column(name)
        try:  # integers as they are; anything else from the numbers checked above ("3.0" as text is 3)
            whole = pc.cast(
                column if pa.types.is_integer(column.type) else pc.cast(column, pa.float64()), pa.int64()
            )
        except pa.ArrowInvalid:
            raise InputError(path, f"{_SOURCE_NAME[name]} out of the range of a 64-bit integer") from None
        table = table.set_column(table.schema.get_field_index(name), name, whole)
    return _typed(path, table)


def _typed(path: Path, table: pa.Table) -> pa.Table:
    """Number and true/false columns cast to the store's types (a number written as text, 0/1 for a
    flag), so that a column that cannot be is an error naming it here rather than a failure later."""
    for names, kind, what in (
        (_NUMBER_COLUMNS, pa.float64(), "numbers"),
        (_FLAG_COLUMNS, pa.bool_(), "true/false"),
    ):
        for name in names:
            if name not in table.column_names or table.column(name).type == kind:
                continue
            try:
                cast = pc.cast(table.column(name), kind)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                got = table.column(name).type
                raise InputError(
                    path, f"{_TRAJECTORY_COLUMNS[name][0]} holds {got} values, not {what}"
                ) from None
            table = table.set_column(table.schema.get_field_index(name), name, cast)
    return table


def flatten_structs(raw: pa.Table) -> pa.Table:
    """Nested struct columns as flat dotted ones (`metadata.rollout_step`)."""
    flat = raw.flatten()
    while any(pa.types.is_struct(f.type) for f in flat.schema):
        flat = flat.flatten()
    return flat


def has_rollout_step(flat: pa.Table) -> bool:
    """Whether a flattened table has a column the trajectory mapping reads the step from."""
    return _column(flat, *_TRAJECTORY_COLUMNS["step"]) is not None


def store_columns(flat: pa.Table) -> pa.Table:
    """A flattened trajectory table's columns under the store's names (per-function rewards as a map).

    Where a file holds several spellings of one column (`response` and `completion`; nested and flat
    rows), a row takes the first one it has a value for; numbers of different types (`3` in flat rows,
    `0.5` in nested ones) are coalesced as doubles, as DuckDB's typed read gives them."""
    out: dict[str, pa.Array | pa.ChunkedArray] = {}
    for target, names in _TRAJECTORY_COLUMNS.items():
        present = [flat.column(n) for n in names if n in flat.column_names]
        mixed = len({c.type for c in present}) > 1
        if mixed and all(_is_number(c.type) for c in present):
            present = [pc.cast(c, pa.float64()) for c in present]
        if len(present) > 1 and all(c.type == present[0].type for c in present):
            out[target] = pc.coalesce(*present)
        elif present:
            out[target] = present[0]
    maps = [
        c
        for c in ("metrics.rewards", "rewards")
        if c in flat.column_names and pa.types.is_map(flat.column(c).type)
    ]
    if maps:  # as DuckDB reads a JSON object, or as the store writes it
        out["rewards"] = _valid_entries(flat.column(maps[0]).combine_chunks())
    elif reward_cols := [c for c in flat.column_names if c.startswith("metrics.rewards.")]:
        out["rewards"] = _rewards_map(flat, reward_cols)
    if "response_length" in out:
        out["response_length"] = pc.cast(pc.round(pc.cast(out["response_length"], pa.float64())), pa.int64())
    return pa.table(out)


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)


def _rewards_map(flat: pa.Table, columns: list[str]) -> pa.MapArray:
    """The per-function rewards (`metrics.rewards.<fn>` columns) as one map column, built with arrays
    (not row by row): a function missing on a row (null) is left out of that row's map, a row with none
    is null, and the functions are in name order."""
    keys = np.array([c.removeprefix("metrics.rewards.") for c in columns], dtype=object)
    cast = []
    for c in columns:
        try:
            cast.append(pc.cast(flat.column(c), pa.float64()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise ValueError(f"per-function reward {c} holds values that are not numbers") from None
    valid = np.column_stack([pc.is_valid(a).to_numpy(zero_copy_only=False) for a in cast])
    values = np.column_stack([pc.fill_null(a, 0.0).to_numpy(zero_copy_only=False) for a in cast])
    # Keys in name order: pyarrow's order of columns depends on how it splits a file into blocks, which
    # differs between a whole file and its rewards read alone (DuckDB's read of a chunk).
    order = np.argsort(keys, kind="stable")
    keys, valid, values = keys[order], valid[:, order], values[:, order]
    offsets = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int32)
    flat_valid = valid.ravel()
    which = np.tile(np.arange(len(keys)), len(valid))[flat_valid]  # each entry's function, by position
    return pa.MapArray.from_arrays(
        pa.array(offsets),
        pa.array(keys, pa.string()).take(pa.array(which)),  # not one Python string per entry
        pa.array(values.ravel()[flat_valid], pa.float64()),
        mask=pa.array(~valid.any(axis=1)),
    )


def _valid_entries(maps: pa.MapArray) -> pa.MapArray:
    """A map column (as DuckDB reads a JSON object) under the same rule: null values are left out, and a
    row without any value is null."""
    maps = pc.cast(maps, pa.map_(pa.string(), pa.float64()))
    bounds = maps.offsets.to_numpy()
    start, total = int(bounds[0]), int(bounds[-1] - bounds[0])
    keys, items = maps.keys.slice(start, total), maps.items.slice(start, total)
    row = np.repeat(np.arange(len(maps)), np.diff(bounds))
    row_valid = maps.is_valid().to_numpy(zero_copy_only=False)
    keep = pc.is_valid(items).to_numpy(zero_copy_only=False) & row_valid[row]
    counts = np.bincount(row[keep], minlength=len(maps))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    mask = pa.array(keep)
    return pa.MapArray.from_arrays(
        pa.array(offsets), keys.filter(mask), items.filter(mask), mask=pa.array(counts == 0)
    )


def _fault_from_registry(row: dict[str, str]) -> tuple[str, FaultSpec | None, str | None]:
    label = "control" if _is_control(row) else "fault"
    if label == "control":
        return label, None, None
    ftype = (row.get("fault_type") or "").strip()
    family_raw = (row.get("fault_family") or "").strip()
    family = (
        FAULT_TYPES.get(ftype)
        or _FAMILY_WORDS.get(family_raw.lower())
        or _FAMILY_WORDS.get(family_raw.lower().split("_")[0])
    )
    strength = (row.get("strength") or row.get("fault_strength") or "").strip().lower()
    onset = _onset(row)
    if onset is None:  # `read_registries` names the line first
        raise ValueError(f"experiment {row.get('experiment_id')!r}: onset_step is not a step")
    if family is None or strength not in {"easy", "hard"}:
        return label, None, f"fault {ftype or '?'} / {family_raw or '?'} ({strength or 'strength unknown'})"
    variant = (row.get("variant") or "").strip() or None
    spec = FaultSpec(family=family, type=ftype, strength=strength, onset_step=onset, variant=variant)
    return label, spec, None


def _is_control(row: dict[str, str]) -> bool:
    kind = (row.get("control_or_fault") or "").strip().lower()
    return kind.startswith("control") or kind in {"healthy", "normal", "baseline"}


def _onset(row: dict[str, str]) -> int | None:
    """A registry row's fault onset step (1 when not given); None when it is not a step."""
    onset = whole_step(to_float(row.get("onset_step") or row.get("onset") or "1"))
    return onset if onset is not None and onset >= 0 else None


# The registry fields that make a run's label: two rows of one experiment must not disagree on them.
_LABEL_FIELDS = ("control_or_fault", "fault_type", "fault_family", "strength", "fault_strength", "onset_step")


def read_registries(root: Path) -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    reg_dir = root / "metadata" / "registries"
    for csv_path in sorted(reg_dir.glob("*.csv")) if reg_dir.is_dir() else []:
        with csv_path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "experiment_id" not in reader.fieldnames:
                raise InputError(csv_path, "registry CSV without an 'experiment_id' column")
            for line, row in enumerate(reader, 2):
                row = {k: (v or "") for k, v in row.items() if k}
                row.setdefault("registry", csv_path.stem)
                if not _is_control(row) and _onset(row) is None:  # a control's onset is not read
                    onset = row.get("onset_step") or row.get("onset")
                    raise InputError(
                        csv_path, f"line {line}: onset_step {onset!r} is not a step (a whole number)"
                    )
                earlier = rows.get(row["experiment_id"]) or {}
                clash = [f for f in _LABEL_FIELDS if earlier.get(f) and row.get(f) and earlier[f] != row[f]]
                if clash:  # which label is true cannot be told
                    exp = row["experiment_id"]
                    raise InputError(
                        csv_path, f"line {line}: {exp!r} is listed again with another {clash[0]}"
                    )
                rows[row["experiment_id"]] = row
    return rows


def _strength_from_path(path: Path) -> str | None:
    parts = {p.lower() for p in path.parts}
    return "easy" if "easy" in parts else "hard" if "hard" in parts else None


def read_run_folder(
    run_dir: Path, registry: dict[str, dict[str, str]], aggregate: bool = True, skip_bad: bool = False
) -> ImportedRun:
    """One run folder; `aggregate=False` leaves the traj/ step aggregates to the caller (read_folder
    computes them for a whole export in one pass); `skip_bad` leaves malformed rows out (noted)."""
    traj_path = run_dir / TRAJECTORY_FILE
    bad: list[str] | None = [] if skip_bad else None
    notes: list[str] = []
    traj = read_trajectories(traj_path, bad, notes) if traj_path.is_file() else None
    run = _run_of_folder(run_dir, registry, traj, aggregate, skip_bad)
    run.source.notes.extend(notes)
    if bad:
        run.source.notes.append(bad_rows_note(traj_path, bad))
    return run


def _trajectory_file(
    run_dir: Path, skip_bad: bool
) -> tuple[pa.Table | BaseException | None, list[str] | None, list[str]]:
    """A run folder's trajectory table (None without a file), its malformed rows with `skip_bad` and its
    notes (a cut last line); an error is handed back, not raised, so that the caller raises the first
    in folder order."""
    path = run_dir / TRAJECTORY_FILE
    bad: list[str] | None = [] if skip_bad else None
    notes: list[str] = []
    try:
        return (read_trajectories(path, bad, notes) if path.is_file() else None), bad, notes
    except Exception as exc:  # any error: raised by the caller, in folder order
        return exc, None, []


def _run_of_folder(
    run_dir: Path,
    registry: dict[str, dict[str, str]],
    traj: pa.Table | None,
    aggregate: bool,
    skip_bad: bool = False,
) -> ImportedRun:
    """A run folder's run around its trajectory table (already read): step rows, registry label, hash."""
    step_path, traj_path = run_dir / STEP_FILE, run_dir / TRAJECTORY_FILE
    bad: list[str] | None = [] if skip_bad else None
    notes: list[str] = []
    steps = read_steps(step_path, bad, notes) if step_path.is_file() else []
    paths = [p for p in (step_path, traj_path) if p.is_file()]
    exp_id = run_dir.name
    row = registry.get(exp_id, {})
    if bad:
        notes.append(bad_rows_note(step_path, bad))
    if row and not row.get("strength") and (s := _strength_from_path(run_dir)):
        row = {**row, "strength": s}
    label, fault, unparsed = _fault_from_registry(row) if row else ("unknown", None, None)
    if unparsed:
        notes.append(f"registry label kept as text: {unparsed}")
    if not row:
        notes.append("experiment not in any registry: label unknown")
    config: dict[str, Any] = {k: v for k, v in row.items() if k not in {"experiment_id"}}
    if aggregate and traj is not None:
        steps = attach(steps, aggregate_by_step(traj))
        config[VERSION_KEY] = AGGREGATES_VERSION
    return ImportedRun(
        name=exp_id,
        source=SourceInfo(
            format=NAME,
            framework="openrlhf",
            paths=[str(p) for p in paths],
            sha256=sha256_of(paths),
            notes=notes,
        ),
        steps=steps,
        trajectories=traj,
        task=row.get("task_group") or None,
        seed=int(row["seed"]) if row.get("seed", "").isdigit() else None,
        config=config,
        label=label,
        fault=fault,
        experiment_id=exp_id,
    )


def attach(steps: list[RawStep], aggregates: pd.DataFrame) -> list[RawStep]:
    """Add per-step trajectory aggregates (traj/*) to the step rows, creating rows where none exist."""
    if aggregates.empty:
        return steps
    names = [c for c in aggregates.columns if c != "step"]
    return attach_values(steps, aggregates["step"].to_numpy(), names, aggregates[names].to_numpy(np.float64))


def attach_values(
    steps: list[RawStep], step_numbers: np.ndarray, names: list[str], values: np.ndarray
) -> list[RawStep]:
    """`attach` for aggregates given as arrays: `values` is steps × names, NaN where a step has none."""
    by_step = {s.step: s for s in steps}
    for step, row in zip(step_numbers.tolist(), values.tolist(), strict=True):
        target = by_step.get(step)
        if target is None:
            target = by_step[step] = RawStep(step=int(step), values={})
        target.values.update({k: v for k, v in zip(names, row, strict=True) if v == v})  # v == v: not NaN
    return [by_step[s] for s in sorted(by_step)]


# Runs read, aggregated and handed on together: memory holds two chunks (one read ahead), not the
# export. DuckDB reads a chunk's files in one parallel pass, and a query has a fixed cost: on the
# 1M-record ingest benchmark here, chunks of 32 runs read ~40 % slower than chunks of 128 (2.2 s for
# 391 runs); with the read-ahead, 32 / 64 / 96 / 128 runs a chunk took 5.15 / 4.62 / 4.49 / 4.42 s.
CHUNK = 128
CHUNK_BYTES = 128 << 20  # of trajectory JSON per chunk: bounds the memory a chunk's tables take


def _chunks(run_dirs: list[Path], runs: int, max_bytes: int) -> Iterator[list[Path]]:
    batch: list[Path] = []
    size = 0
    for d in run_dirs:
        traj = d / TRAJECTORY_FILE
        n = traj.stat().st_size if traj.is_file() else 0
        if batch and (len(batch) >= runs or size + n > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(d)
        size += n
    if batch:
        yield batch


def iter_folder(root: Path, chunk: int = CHUNK, skip_bad: bool = False) -> Iterator[ImportedRun]:
    """The runs of an export, a chunk at a time (the traj/ step aggregates of a chunk in one pass);
    `skip_bad` leaves malformed rows out, counted in each run's notes.

    The next chunk is read while the caller stores this one (one chunk ahead, so memory holds two): most
    of that read is DuckDB's and the hashing the C library's, which leave the interpreter to the caller.
    When the caller stops early (an error, Ctrl-C), the chunk being read ahead is dropped at its next
    phase; the call waits for the phase under way (at most one DuckDB read of a chunk)."""
    registry = read_registries(root)
    run_dirs = sorted({p.parent for name in (STEP_FILE, TRAJECTORY_FILE) for p in root.rglob(name)})
    if not run_dirs:
        raise InputError(root, "RFT-FaultBench layout without any run folder (no *_train_step.jsonl)")
    con = duckdb.connect()
    stop = threading.Event()  # set when the caller stops reading: a chunk read ahead is dropped

    def load(batch: list[Path]) -> list[ImportedRun]:
        """Read and aggregate a chunk (on `ahead`). Errors surface in folder order: a folder's trajectory
        file, then its step file. (Aggregating on the pool instead, beside the next chunk's read, was
        slower: 3.9-4.1 s against 3.6-3.8 s on the 1M-record benchmark, as DuckDB's threads then compete.)"""
        # Step files and hashes are read on the pool while DuckDB reads the trajectories.
        folders = [pool.submit(_run_of_folder, d, registry, None, False, skip_bad) for d in batch]
        tables = _read_together(con, batch)  # `con` is used by this one worker only
        if stop.is_set():
            return []
        if tables is None:  # each file read on its own (pyarrow's parser leaves the GIL), a bad one named
            read = list(pool.map(lambda d: _trajectory_file(d, skip_bad), batch))
        else:
            read = [(t, None, []) for t in tables]
        runs = []
        for d, folder, (traj, bad, notes) in zip(batch, folders, read, strict=True):
            if isinstance(traj, BaseException):
                raise traj
            run = folder.result()
            run.trajectories = traj
            run.source.notes.extend(notes)
            if bad:
                run.source.notes.append(bad_rows_note(d / TRAJECTORY_FILE, bad))
            runs.append(run)
        if stop.is_set():
            return []
        _aggregate_together(runs)
        return runs

    try:
        # `ahead` is shut down (waiting for its read) before `pool`, which that read uses.
        with (
            ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool,
            ThreadPoolExecutor(max_workers=1) as ahead,
        ):
            try:
                pending = None
                for batch in _chunks(run_dirs, chunk, CHUNK_BYTES):
                    future = ahead.submit(load, batch)
                    if pending is not None:
                        yield from pending.result()
                    pending = future
                if pending is not None:
                    yield from pending.result()
            finally:
                stop.set()
    finally:
        con.close()


# The trajectory fields the store keeps, as DuckDB reads them in one typed pass. Typed, not sampled: a
# sampled schema misses a key that first appears late in a file (DuckDB then drops it without a word).
# Numbers are read as DOUBLE and given the store's types as the per-file reader's are; every spelling
# that `_TRAJECTORY_COLUMNS` knows is here, and keys the store does not keep are not read.
# Steps are read as DOUBLE so that a fraction is seen (DuckDB rounds 1.5 into a BIGINT without a word).
# The per-function rewards are read as JSON text and given to pyarrow's reader (`_rewards_of_rows`),
# which infers them as the per-file reader does: a MAP built by DuckDB's reader cost a quarter of the
# read (0.47 s against 0.36 s for 128 files of the 1M-record benchmark, measured here).
_DUCKDB_COLUMNS = {
    "metadata": "STRUCT(rollout_step DOUBLE, prompt_id VARCHAR, sample_id VARCHAR, group_id DOUBLE, "
    "sample_index DOUBLE, prompt VARCHAR, fault_injected BOOLEAN, fault_injection STRUCT(injected BOOLEAN, "
    "fault_injection_type VARCHAR, fault_injection_strength VARCHAR))",
    "metrics": "STRUCT(reward DOUBLE, rewards JSON, advantage DOUBLE, advantage_mean DOUBLE, "
    'advantage_std DOUBLE, "return" DOUBLE, response_length DOUBLE, repetition_ratio DOUBLE, '
    "unique_token_ratio DOUBLE, tool_call_count DOUBLE, tool_error_count DOUBLE)",
    "flags": "STRUCT(truncated BOOLEAN, empty_response BOOLEAN, short_response BOOLEAN, "
    "long_response BOOLEAN)",
    "data": "STRUCT(prompt VARCHAR, response VARCHAR)",
    "prompt": "VARCHAR",
    "response": "VARCHAR",
    "completion": "VARCHAR",
    "output": "VARCHAR",
    "rollout_step": "DOUBLE",
    "step": "DOUBLE",
    "prompt_id": "VARCHAR",
    "group_id": "DOUBLE",
    "sample_index": "DOUBLE",
    "reward": "DOUBLE",
    "advantage": "DOUBLE",
    "return": "DOUBLE",
    "response_length": "DOUBLE",
    "truncated": "BOOLEAN",
    "advantage_mean": "DOUBLE",
    "advantage_std": "DOUBLE",
    "repetition_ratio": "DOUBLE",
    "unique_token_ratio": "DOUBLE",
    "tool_call_count": "DOUBLE",
    "tool_error_count": "DOUBLE",
    "empty_response": "BOOLEAN",
    "short_response": "BOOLEAN",
    "long_response": "BOOLEAN",
    "fault_injected": "BOOLEAN",
    "fault_injection_type": "VARCHAR",
    "fault_injection_strength": "VARCHAR",
}
_FILE_COLUMN = "__rftfm_file"


def duckdb_columns() -> str:
    """The `columns` argument of DuckDB's `read_json` that reads trajectory rows as ingest does."""
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in _DUCKDB_COLUMNS.items()) + "}"


def _read_together(con: duckdb.DuckDBPyConnection, run_dirs: list[Path]) -> list[pa.Table | None] | None:
    """The trajectory tables of several run folders from one typed DuckDB read (both cores, one pass over
    the bytes), or None when the per-file reader must read them: anything DuckDB refuses (a corrupt or
    truncated line, a value of another type), which the per-file reader then names or reads as it always
    has, a row without a step, or a fraction where the store keeps whole numbers."""
    paths = [d / TRAJECTORY_FILE for d in run_dirs]
    present = [i for i, p in enumerate(paths) if p.is_file()]
    tables: list[pa.Table | None] = [None] * len(run_dirs)
    if not present:
        return tables
    files = [str(paths[i]) for i in present]
    if any(os.path.getsize(f) == 0 for f in files):
        return None
    try:
        raw = con.sql(
            "SELECT * FROM read_json($files, format = 'newline_delimited', records = true, "
            f"filename = '{_FILE_COLUMN}', columns = {duckdb_columns()})",
            params={"files": files},
        ).to_arrow_table()
    except duckdb.Error:
        return None
    index = pc.index_in(raw.column(_FILE_COLUMN), value_set=pa.array(files)).to_numpy(zero_copy_only=False)
    counts = np.bincount(index, minlength=len(files))
    if (counts == 0).any() or (np.diff(index) < 0).any():  # a file of blank lines; rows out of file order
        return None
    flat = flatten_structs(raw.drop_columns([_FILE_COLUMN]))
    flat = flat.drop_columns([c for c in flat.column_names if flat.column(c).null_count == flat.num_rows])
    text = flat.column("metrics.rewards") if "metrics.rewards" in flat.column_names else None
    try:
        table = store_columns(flat.drop_columns(["metrics.rewards"]) if text is not None else flat)
    except ValueError:  # a column of another type: the per-file reader names the file
        return None
    if text is not None:
        rewards = _rewards_of_rows(text)
        if rewards is None:
            return None
        table = table.append_column("rewards", rewards)
    if "step" not in table.column_names or table.column("step").null_count:
        return None
    for name in ("step", *_INTEGER_COLUMNS):  # typed as the per-file reader types whole numbers
        if name in table.column_names:
            column = table.column(name)
            if pc.any(pc.greater_equal(pc.abs(column), 2.0**53)).as_py():  # a double is not exact there:
                return None  # the per-file reader reads the digits
            whole = pc.cast(column, pa.int64(), safe=False)
            if pc.any(pc.not_equal(pc.cast(whole, pa.float64()), column)).as_py():
                return None
            table = table.set_column(table.schema.get_field_index(name), name, whole)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    for k, i in enumerate(present):
        tables[i] = table.slice(int(offsets[k]), int(counts[k]))
    return tables


_REWARDS_TYPE = pa.map_(pa.string(), pa.float64())


def _rewards_of_rows(text: pa.ChunkedArray) -> pa.MapArray | None:
    """The per-function rewards map of a chunk's rows, from `metrics.rewards` as DuckDB reads it (JSON
    text), parsed in one pass by pyarrow's reader, the per-file reader's inference. The map lists its
    functions in name order, so each file's rows get the map the per-file reader gives them whatever the
    chunk's other files hold. None where pyarrow refuses them (a value that is not an object, kinds that
    clash, here or between files; a reward that is not a number): the per-file reader then reads the
    files and says what is wrong."""
    rows = pc.fill_null(text, "{}").combine_chunks().cast(pa.large_string())  # absent: no reward
    one = pa.LargeListArray.from_arrays(pa.array([0, len(rows)], pa.int64()), rows)
    data = pc.binary_join(one, pa.scalar("\n", pa.large_string()))[0].as_buffer()  # DuckDB: one line each
    raw = _read_json(data)
    if raw is None:
        return None
    try:
        parsed = flatten_structs(raw)
        if not parsed.num_columns:  # no row logs a reward (pyarrow then counts no rows either)
            return pa.nulls(len(rows), _REWARDS_TYPE)
        if parsed.num_rows != len(rows):
            return None
        columns = [f"metrics.rewards.{c}" for c in parsed.column_names]
        return _rewards_map(parsed.rename_columns(columns), columns)
    except ValueError:  # a reward that is not a number
        return None


def _aggregate_together(runs: list[ImportedRun]) -> None:
    """The traj/ step aggregates of several runs in one vectorised pass (per run it costs ~0.1 s)."""
    names, blocks = aggregate_blocks([r.trajectories for r in runs])
    for i, (step, values) in blocks.items():
        runs[i].steps = attach_values(runs[i].steps, step, names, values)
        runs[i].config[VERSION_KEY] = AGGREGATES_VERSION


def read_folder(root: Path, skip_bad: bool = False) -> list[ImportedRun]:
    return list(iter_folder(root, skip_bad=skip_bad))


def read(path: Path, skip_bad: bool = False) -> list[ImportedRun]:
    """A single JSONL file: a step file or a trajectory file, told apart by its first row."""
    first = _first_json(read_head(path))  # the whole first line, however long its completion
    bad: list[str] | None = [] if skip_bad else None
    notes: list[str] = []
    if first is not None and _is_trajectory_row(first):
        traj = read_trajectories(path, bad, notes)
        steps = attach([], aggregate_by_step(traj))
        paths = [path]
    else:
        steps, traj, paths = read_steps(path, bad, notes), None, [path]
    return [
        ImportedRun(
            name=path.stem,
            source=SourceInfo(
                format=NAME,
                framework="openrlhf",
                paths=[str(p) for p in paths],
                sha256=sha256_of(paths),
                notes=notes + ([bad_rows_note(path, bad)] if bad else []),
            ),
            steps=steps,
            trajectories=traj,
        )
    ]
