"""Write runs in the RFT-FaultBench release layout, the one `importers.faultbench` reads.

The bench generator exports our datasets with it, so our runs and the paper's load through the same
importer; tests and the ingest benchmark use it to build inputs of any size.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rftfm_agent.telemetry.importers.faultbench import STEP_FILE, TRAJECTORY_FILE
from rftfm_agent.telemetry.io import atomic_write_with

REGISTRY_COLUMNS = (
    "experiment_id",
    "control_or_fault",
    "fault_type",
    "fault_family",
    "task_group",
    "onset_step",
    "strength",
    "seed",
)


def step_row(step: int, metrics: dict[str, float]) -> dict[str, Any]:
    """One line of openrlhf_train_train_step.jsonl."""
    return {"metadata": {"rollout_step": step}, "metrics": metrics}


def trajectory_row(
    step: int,
    metrics: dict[str, float | int],
    flags: dict[str, bool],
    fault_type: str | None = None,
    fault_strength: str | None = None,
    injected: bool | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One line of openrlhf_train_trajectory.jsonl (extra keys, e.g. prompt/response, go top-level)."""
    fault: dict[str, Any] = {"fault_injection_type": fault_type, "fault_injection_strength": fault_strength}
    if injected is not None:
        fault["injected"] = injected
    meta: dict[str, Any] = {"rollout_step": step, "fault_injection": fault}
    for key in ("group_id", "sample_index", "prompt_id"):
        if key in extra:
            meta[key] = extra.pop(key)
    return {"metadata": meta, "metrics": metrics, "flags": flags, **extra}


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0

    def write(tmp: Path) -> None:
        nonlocal n
        with tmp.open("w") as fh:
            for row in rows:
                fh.write(json.dumps(row))
                fh.write("\n")
                n += 1

    atomic_write_with(path, write)
    return n


def write_run_folder(
    folder: Path, steps: Iterable[dict[str, Any]], trajectories: Iterable[dict[str, Any]]
) -> tuple[int, int]:
    """Write one run's two JSONL files; returns (step rows, trajectory rows)."""
    folder.mkdir(parents=True, exist_ok=True)
    return _write_jsonl(folder / STEP_FILE, steps), _write_jsonl(folder / TRAJECTORY_FILE, trajectories)


def write_registry(root: Path, name: str, rows: Iterable[dict[str, Any]]) -> Path:
    """Write metadata/registries/<name>.csv: the paper's columns plus onset, strength and seed first,
    then any further keys the rows carry (e.g. the bench generator's onset style and control cell).

    Written to a temporary name and renamed, so a reader never sees half a registry."""
    reg = root / "metadata" / "registries"
    reg.mkdir(parents=True, exist_ok=True)
    path = reg / f"{name}.csv"
    rows = list(rows)
    extra = [k for k in (rows[0] if rows else {}) if k not in REGISTRY_COLUMNS]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=[*REGISTRY_COLUMNS, *extra], extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow(row)

    atomic_write_with(path, write)
    return path
