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
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry.aggregates import (
    AGGREGATES_VERSION,
    INPUT_COLUMNS,
    VERSION_KEY,
    aggregate_by_step,
)
from rftfm_agent.telemetry.importers.base import json_lines, looks_binary, numeric_items, sha256_of
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
    line = head.lstrip().split(b"\n", 1)[0]
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


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
def read_steps(path: Path) -> list[RawStep]:
    rows: dict[int, dict[str, float]] = {}
    for line_no, obj in json_lines(path):
        step = _step_of(obj)
        try:
            step_i = int(step)  # type: ignore[arg-type]
        except (TypeError, ValueError):
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


def read_trajectories(path: Path) -> pa.Table:
    """Trajectory rows as a table with the store's column names (run_id is filled by the store)."""
    try:
        if path.stat().st_size == 0:
            raise InputError(path, "file is empty")
        raw = pajson.read_json(path, parse_options=pajson.ParseOptions(newlines_in_values=False))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Let the line-by-line reader name the bad line; if it finds none, report Arrow's complaint.
        for _ in json_lines(path):
            pass
        raise InputError(path, "rows do not share one structure (mixed types in a field)") from None
    flat = raw.flatten()
    while any(pa.types.is_struct(f.type) for f in flat.schema):
        flat = flat.flatten()
    out: dict[str, pa.Array | pa.ChunkedArray] = {}
    step = _column(flat, "metadata.rollout_step", "rollout_step", "step")
    if step is None:
        raise InputError(path, "trajectory rows without metadata.rollout_step")
    out["step"] = step
    mapping = {
        "prompt_id": ("metadata.prompt_id", "prompt_id", "metadata.sample_id"),
        "group_id": ("metadata.group_id", "group_id"),
        "sample_index": ("metadata.sample_index", "sample_index"),
        "prompt": ("prompt", "metadata.prompt", "data.prompt"),
        "completion": ("response", "completion", "output", "data.response"),
        "reward": ("metrics.reward", "reward"),
        "advantage": ("metrics.advantage", "advantage"),
        "advantage_mean": ("metrics.advantage_mean",),
        "advantage_std": ("metrics.advantage_std",),
        "return": ("metrics.return", "return"),
        "response_length": ("metrics.response_length", "response_length"),
        "truncated": ("flags.truncated", "truncated"),
        "repetition_ratio": ("metrics.repetition_ratio",),
        "unique_token_ratio": ("metrics.unique_token_ratio",),
        "tool_call_count": ("metrics.tool_call_count",),
        "tool_error_count": ("metrics.tool_error_count",),
        "empty_response": ("flags.empty_response",),
        "short_response": ("flags.short_response",),
        "long_response": ("flags.long_response",),
        "fault_injected": ("metadata.fault_injection.injected", "metadata.fault_injected"),
        "fault_injection_type": ("metadata.fault_injection.fault_injection_type",),
        "fault_injection_strength": ("metadata.fault_injection.fault_injection_strength",),
    }
    for target, names in mapping.items():
        col = _column(flat, *names)
        if col is not None:
            out[target] = col
    reward_cols = [c for c in flat.column_names if c.startswith("metrics.rewards.")]
    if reward_cols:
        out["rewards"] = _rewards_map(flat, reward_cols)
    if "response_length" in out:
        out["response_length"] = pc.cast(pc.round(pc.cast(out["response_length"], pa.float64())), pa.int64())
    return pa.table(out)


def _rewards_map(flat: pa.Table, columns: list[str]) -> pa.MapArray:
    """The per-function rewards (`metrics.rewards.<fn>` columns) as one map column, built with arrays
    (not row by row): a function missing on a row (null) is left out of that row's map."""
    keys = np.array([c.removeprefix("metrics.rewards.") for c in columns], dtype=object)
    cast = [pc.cast(flat.column(c), pa.float64()) for c in columns]
    valid = np.column_stack([pc.is_valid(a).to_numpy(zero_copy_only=False) for a in cast])
    values = np.column_stack([pc.fill_null(a, 0.0).to_numpy(zero_copy_only=False) for a in cast])
    offsets = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int32)
    flat_valid = valid.ravel()
    return pa.MapArray.from_arrays(
        pa.array(offsets),
        pa.array(np.tile(keys, len(valid))[flat_valid], pa.string()),
        pa.array(values.ravel()[flat_valid], pa.float64()),
    )


def _fault_from_registry(row: dict[str, str]) -> tuple[str, FaultSpec | None, str | None]:
    kind = (row.get("control_or_fault") or "").strip().lower()
    label = "control" if kind.startswith("control") or kind in {"healthy", "normal", "baseline"} else "fault"
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
    onset = row.get("onset_step") or row.get("onset") or "1"
    if family is None or strength not in {"easy", "hard"}:
        return label, None, f"fault {ftype or '?'} / {family_raw or '?'} ({strength or 'strength unknown'})"
    variant = (row.get("variant") or "").strip() or None
    spec = FaultSpec(
        family=family, type=ftype, strength=strength, onset_step=int(float(onset)), variant=variant
    )
    return label, spec, None


def read_registries(root: Path) -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    reg_dir = root / "metadata" / "registries"
    for csv_path in sorted(reg_dir.glob("*.csv")) if reg_dir.is_dir() else []:
        with csv_path.open(newline="", errors="replace") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "experiment_id" not in reader.fieldnames:
                raise InputError(csv_path, "registry CSV without an 'experiment_id' column")
            for row in reader:
                row = {k: (v or "") for k, v in row.items() if k}
                row.setdefault("registry", csv_path.stem)
                rows[row["experiment_id"]] = row
    return rows


def _strength_from_path(path: Path) -> str | None:
    parts = {p.lower() for p in path.parts}
    return "easy" if "easy" in parts else "hard" if "hard" in parts else None


def read_run_folder(
    run_dir: Path, registry: dict[str, dict[str, str]], aggregate: bool = True
) -> ImportedRun:
    """One run folder; `aggregate=False` leaves the traj/ step aggregates to the caller (read_folder
    computes them for a whole export in one pass)."""
    step_path, traj_path = run_dir / STEP_FILE, run_dir / TRAJECTORY_FILE
    steps = read_steps(step_path) if step_path.is_file() else []
    traj = read_trajectories(traj_path) if traj_path.is_file() else None
    paths = [p for p in (step_path, traj_path) if p.is_file()]
    exp_id = run_dir.name
    row = registry.get(exp_id, {})
    notes: list[str] = []
    if row and not row.get("strength") and (s := _strength_from_path(run_dir)):
        row = {**row, "strength": s}
    label, fault, unparsed = _fault_from_registry(row) if row else ("unknown", None, None)
    if unparsed:
        notes.append(f"registry label kept as text: {unparsed}")
    if not row:
        notes.append("experiment not in any registry: label unknown")
    config: dict[str, Any] = {k: v for k, v in row.items() if k not in {"experiment_id"}}
    if aggregate and traj is not None:
        steps = _attach(steps, aggregate_by_step(traj))
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


def _attach(steps: list[RawStep], aggregates: pd.DataFrame) -> list[RawStep]:
    """Add per-step trajectory aggregates (traj/*) to the step rows, creating rows where none exist."""
    if aggregates.empty:
        return steps
    by_step = {s.step: s for s in steps}
    names = [c for c in aggregates.columns if c != "step"]
    for step, *values in aggregates[["step", *names]].itertuples(index=False):
        row = by_step.setdefault(int(step), RawStep(step=int(step), values={}))
        row.values.update({k: v for k, v in zip(names, values, strict=True) if not math.isnan(v)})
    return [by_step[s] for s in sorted(by_step)]


CHUNK = 32  # runs read, aggregated and handed on together: memory holds one chunk, not the export


def iter_folder(root: Path, chunk: int = CHUNK) -> Iterator[ImportedRun]:
    """The runs of an export, a chunk at a time (the traj/ step aggregates of a chunk in one pass)."""
    registry = read_registries(root)
    run_dirs = sorted({p.parent for name in (STEP_FILE, TRAJECTORY_FILE) for p in root.rglob(name)})
    if not run_dirs:
        raise InputError(root, "RFT-FaultBench layout without any run folder (no *_train_step.jsonl)")
    # Arrow's JSON reader releases the GIL: the run folders of a chunk are read on every core. Errors
    # surface in folder order (map yields in order), so the first bad file is the one reported.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for start in range(0, len(run_dirs), chunk):
            batch = run_dirs[start : start + chunk]
            runs = list(pool.map(lambda d: read_run_folder(d, registry, aggregate=False), batch))
            _aggregate_together(runs)
            yield from runs


def _aggregate_together(runs: list[ImportedRun]) -> None:
    """The traj/ step aggregates of several runs in one vectorised pass (per run it costs ~0.1 s)."""
    tables = [
        r.trajectories.select([c for c in INPUT_COLUMNS if c in r.trajectories.column_names]).append_column(
            "run", pa.array(np.full(r.trajectories.num_rows, i, dtype=np.int32))
        )
        for i, r in enumerate(runs)
        if r.trajectories is not None and r.trajectories.num_rows
    ]
    if tables:
        aggregates = aggregate_by_step(pa.concat_tables(tables, promote_options="permissive"), by="run")
        for i, group in aggregates.groupby("run", sort=False):
            runs[int(i)].steps = _attach(runs[int(i)].steps, group.drop(columns="run"))
            runs[int(i)].config[VERSION_KEY] = AGGREGATES_VERSION


def read_folder(root: Path) -> list[ImportedRun]:
    return list(iter_folder(root))


def read(path: Path) -> list[ImportedRun]:
    """A single JSONL file: a step file or a trajectory file, told apart by its first row."""
    with path.open("rb") as fh:
        first = _first_json(fh.read(65536))
    if first is not None and _is_trajectory_row(first):
        traj = read_trajectories(path)
        steps = _attach([], aggregate_by_step(traj))
        paths = [path]
    else:
        steps, traj, paths = read_steps(path), None, [path]
    return [
        ImportedRun(
            name=path.stem,
            source=SourceInfo(
                format=NAME, framework="openrlhf", paths=[str(p) for p in paths], sha256=sha256_of(paths)
            ),
            steps=steps,
            trajectories=traj,
        )
    ]
