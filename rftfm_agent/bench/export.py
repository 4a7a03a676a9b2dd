"""Export a generated benchmark in the RFT-FaultBench release layout (the paper's Zenodo record 20044882).

    OUT/metadata/registries/<preset>.csv
    OUT/runs/<experiment_id>/openrlhf_train_train_step.jsonl
    OUT/runs/<experiment_id>/openrlhf_train_trajectory.jsonl

The folder loads through the same importer as the paper's release (`rftfm ingest OUT`), so detectors and
diagnosers see our data and theirs the same way. Files are written to temporary names and renamed, so an
interrupted export leaves no half-written file under a final name.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry.faultbench_export import step_row, trajectory_row, write_run_folder
from rftfm_agent.telemetry.store import LOGGED_NAN, Store

TRAJECTORY_METRICS = (
    "reward",
    "response_length",
    "advantage",
    "advantage_mean",
    "advantage_std",
    "return",
    "repetition_ratio",
    "unique_token_ratio",
    "tool_call_count",
    "tool_error_count",
)
TRAJECTORY_FLAGS = ("empty_response", "short_response", "long_response", "truncated")


def _clean(value: Any) -> Any:
    """JSON-safe scalar: NaN/Inf and missing values become None."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


def export_run(store: Store, run_id: str, folder: Path) -> tuple[int, int]:
    manifest = store.manifest(run_id)
    steps = store.steps(run_id)
    metric_cols = [
        c for c in steps.columns if c not in ("step", "wall_time") and not c.startswith(LOGGED_NAN)
    ]
    step_rows = (
        step_row(int(row["step"]), {c: _clean(row[c]) for c in metric_cols if _clean(row[c]) is not None})
        for row in steps.to_dict("records")
    )
    traj = store.trajectories(run_id)
    fault_type = manifest.fault.type if manifest.fault else None

    def trajectory_rows() -> Any:
        for row in traj.to_dict("records"):
            injected = bool(row.get("fault_injection_type")) and isinstance(
                row.get("fault_injection_type"), str
            )
            yield trajectory_row(
                int(row["step"]),
                {k: _clean(row.get(k)) for k in TRAJECTORY_METRICS},
                {k: _clean(row.get(k)) for k in TRAJECTORY_FLAGS},
                fault_type=fault_type if injected else None,
                fault_strength=_clean(row.get("fault_injection_strength")) if injected else None,
                injected=None if _clean(row.get("fault_injected")) is None else bool(row["fault_injected"]),
                group_id=_clean(row.get("group_id")),
                sample_index=_clean(row.get("sample_index")),
                prompt_id=_clean(row.get("prompt_id")),
                prompt=row.get("prompt"),
                response=row.get("completion"),
            )

    return write_run_folder(folder, step_rows, trajectory_rows())


def export_bench(bench: Path, out: Path) -> dict[str, Any]:
    """Write every finished run of a generated benchmark, and its registries, to `out`."""
    bench, out = Path(bench), Path(out)
    registries = bench / "metadata" / "registries"
    if not registries.is_dir() or not (bench / "store").is_dir():
        raise RftfmError(f"{bench}: not a benchmark folder (no metadata/registries or store)")
    store = Store(bench / "store")
    (out / "metadata" / "registries").mkdir(parents=True, exist_ok=True)
    for csv_file in registries.glob("*.csv"):
        shutil.copyfile(csv_file, out / "metadata" / "registries" / csv_file.name)
    runs = steps = trajectories = 0
    for manifest in store.manifests():
        if manifest.status != "finished":
            continue
        n_steps, n_traj = export_run(
            store, manifest.run_id, out / "runs" / (manifest.experiment_id or manifest.name)
        )
        runs, steps, trajectories = runs + 1, steps + n_steps, trajectories + n_traj
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {
        "out": str(out),
        "runs": runs,
        "step_records": steps,
        "trajectory_records": trajectories,
        "megabytes": round(size / 1e6, 1),
    }
