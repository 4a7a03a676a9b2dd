"""Parquet files: step metrics (one row per step, one column per metric: `wandb` history and pandas
`to_parquet` exports) or trajectory rows (one row per completion), read column-wise with Arrow.

A table is trajectory rows when it has a rollout step and per-completion columns (a completion text, a
group id, or the RFT-FaultBench `metadata`/`metrics`/`flags` structs); it then goes through the same
column mapping as RFT-FaultBench trajectory JSONL, and its per-step `traj/` aggregates are computed in
one vectorised pass. Otherwise the numeric columns are step metrics; the step comes from the first
step-like column, else from the row number (noted). A null is a value not logged at that row (pandas
writes NaN as null); a NaN written as such and ±Inf are kept; text columns of a step table are left out
(noted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry.aggregates import AGGREGATES_VERSION, VERSION_KEY, aggregate_by_step
from rftfm_agent.telemetry.importers import faultbench
from rftfm_agent.telemetry.importers.base import resumed_note, sha256_of
from rftfm_agent.telemetry.importers.jsonl_metrics import STEP_KEYS
from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo

NAME = "parquet"
MAGIC = b"PAR1"  # the first and last four bytes of every Parquet file (Parquet format specification)
_TRAJECTORY_MARKERS = ("completion", "response", "group_id", "metadata.group_id", "metrics.reward")
_WALL_COLUMNS = ("_timestamp", "wall_time", "timestamp")


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def sniff(path: Path, head: bytes) -> bool:
    return head.startswith(MAGIC)


def _read(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(path, f"unreadable Parquet file ({str(exc).splitlines()[0]})") from None


def read(path: Path) -> list[ImportedRun]:
    try:
        return _read_runs(path)
    except (ValueError, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:  # ArrowInvalid: a ValueError
        raise InputError(path, f"a column of an unexpected type ({str(exc).splitlines()[0]})") from None


def _read_runs(path: Path) -> list[ImportedRun]:
    flat = faultbench.flatten_structs(_read(path))
    if flat.num_rows == 0:
        raise InputError(path, "Parquet file without rows")
    digest = sha256_of([path])
    if any(c in flat.column_names for c in _TRAJECTORY_MARKERS) and faultbench.has_rollout_step(flat):
        traj = faultbench.whole_numbers(path, faultbench.store_columns(flat))
        steps = faultbench.attach([], aggregate_by_step(traj))
        return [
            ImportedRun(
                name=path.stem,
                source=SourceInfo(format=NAME, paths=[str(path)], sha256=digest, notes=["trajectory rows"]),
                steps=steps,
                trajectories=traj,
                config={VERSION_KEY: AGGREGATES_VERSION},
            )
        ]
    return [_step_run(path, flat, digest)]


def _step_run(path: Path, flat: pa.Table, digest: str) -> ImportedRun:
    notes: list[str] = []
    step_key = next((k for k in STEP_KEYS if k in flat.column_names), None)
    if step_key is not None and not _is_number(flat.column(step_key).type):
        raise InputError(path, f"column {step_key!r} is not a number ({flat.column(step_key).type})")
    wall_key = next(
        (k for k in _WALL_COLUMNS if k in flat.column_names and _is_number(flat.column(k).type)), None
    )
    numeric = [
        c for c in flat.column_names if c not in (step_key, wall_key) and _is_number(flat.column(c).type)
    ]
    text = [c for c in flat.column_names if c not in (step_key, wall_key) and c not in numeric]
    if not numeric:
        raise InputError(path, "Parquet file without a numeric metric column")
    if text:
        notes.append(f"non-numeric column(s) left out: {', '.join(text[:5])}{' …' if len(text) > 5 else ''}")
    if step_key is None:
        step = np.arange(1, flat.num_rows + 1)
        notes.append("steps are row numbers: no step column")
    else:
        column = pc.cast(flat.column(step_key), pa.float64()).to_numpy(zero_copy_only=False)
        if np.isnan(column).any() or (column != np.round(column)).any():
            raise InputError(path, f"column {step_key!r} holds a missing or fractional step")
        if not (np.abs(column) < 2.0**63).all():  # ±Inf or past int64: the cast would store garbage
            raise InputError(
                path, f"column {step_key!r} holds a step outside the 64-bit range the store keeps"
            )
        step = column.astype(np.int64)
    wall = pc.cast(flat.column(wall_key), pa.float64()).to_numpy(zero_copy_only=False) if wall_key else None
    values = np.column_stack(
        [
            pc.cast(flat.column(c), pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
            for c in numeric
        ]
    )
    # Null is "not logged at this row" and is left out (pandas writes its NaN as null); a NaN the writer
    # put there on purpose is a logged NaN and is kept (noted).
    logged = np.column_stack([pc.is_valid(flat.column(c)).to_numpy(zero_copy_only=False) for c in numeric])
    n_nan = int((np.isnan(values) & logged).sum())
    if n_nan:
        notes.append(f"{n_nan} NaN value(s) kept as logged")
    rows: dict[int, RawStep] = {}
    read: list[tuple[int, dict[str, float]]] = []  # each row's step and values, for `resumed_note`
    for i, (s, row, valid) in enumerate(zip(step.tolist(), values.tolist(), logged.tolist(), strict=True)):
        record = rows.get(s)
        if record is None:
            record = rows[s] = RawStep(step=s, values={}, wall_time=None)
        read.append((s, {k: v for k, v, ok in zip(numeric, row, valid, strict=True) if ok}))
        record.values.update(read[-1][1])  # a step logged again (after a resume): later values win
        if wall is not None and not np.isnan(wall[i]):
            record.wall_time = float(wall[i])
    notes.append(f"steps from the {step_key!r} column" if step_key else "")
    notes.append(resumed_note(read) or "")
    return ImportedRun(
        name=path.stem,
        source=SourceInfo(format=NAME, paths=[str(path)], sha256=digest, notes=[n for n in notes if n]),
        steps=[rows[s] for s in sorted(rows)],
    )
