"""Benchmark: how long ingesting N trajectory records takes here (RFT-FaultBench JSONL → store).

Run with `rftfm bench ingest --records 1000000`. The input is generated first (not timed): runs of
40 steps × 64 trajectories in the paper's layout, with per-function rewards, flags and a registry.
The timed part is what `rftfm ingest DIR` does: read and validate the JSONL, compute per-step
trajectory aggregates, stage Parquet parts and commit them into a fresh store. DuckDB alone reading the
same files is timed in the same run as the anchor, and the process's peak memory is reported.

A second reference, not the target's anchor, says where the anchor's 2× sits on this machine: DuckDB
alone reading the same files with the columns ingest reads (every spelling the mapping knows, typed, not
sampled) and writing them to one Parquet file, with no validation, hashing, aggregates or manifests.
A third, the floor, adds the one other pass over the bytes that ingest cannot skip: their sha256 (what
makes re-ingesting the same bytes a no-op), computed on a thread beside that same DuckDB pass. What the
floor leaves out (validation, per-function rewards, step files, traj/ aggregates, one part per run,
manifests, the commit) is ingest's own work on top of it.

Each figure also has its CPU time (the process's, every thread's): on a machine with few cores, ingest's
wall time cannot fall below its CPU time over the cores, so the CPU ratio says how far the wall ratio is
bound by the work itself rather than by how it is spread over threads.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import random
import resource
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb

from rftfm_agent.telemetry.faultbench_export import step_row, trajectory_row, write_registry, write_run_folder
from rftfm_agent.telemetry.importers.base import sha256_of
from rftfm_agent.telemetry.importers.faultbench import duckdb_columns
from rftfm_agent.telemetry.ingest import ingest
from rftfm_agent.telemetry.store import Store

STEPS_PER_RUN = 40
TRAJ_PER_STEP = 64


def _run_rows(rng: random.Random, steps: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    step_rows, traj_rows = [], []
    for step in range(1, steps + 1):
        rewards = []
        for i in range(TRAJ_PER_STEP):
            r = float(rng.random() < 0.4)
            rewards.append(r)
            length = rng.randint(3, 64)
            traj_rows.append(
                trajectory_row(
                    step,
                    {
                        "reward": r,
                        "rewards": {"correct": r, "format": 0.0},
                        "response_length": length,
                        "advantage_mean": 0.0,
                        "advantage_std": 1.0,
                        "return": r,
                        "repetition_ratio": rng.random() * 0.2,
                        "unique_token_ratio": 0.5 + rng.random() * 0.5,
                        "tool_call_count": 0,
                        "tool_error_count": 0,
                    },
                    {"empty_response": False, "short_response": length < 4, "long_response": length > 60},
                    group_id=i // 8,
                    sample_index=i,
                    prompt="12+7=",
                    response="19",
                )
            )
        step_rows.append(
            step_row(
                step,
                {
                    "reward": sum(rewards) / len(rewards),
                    "kl": 0.01,
                    "entropy": 1.2,
                    "policy_loss": 0.1,
                    "response_length": 30.0,
                },
            )
        )
    return step_rows, traj_rows


def _cpu_s() -> float:
    """This process's CPU time so far, every thread's (DuckDB's and the pool's included), user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _generate(export: Path, records: int, seed: int) -> None:
    """Write `records` trajectory rows in the paper's layout (in a child process: its memory is its own)."""
    per_run = STEPS_PER_RUN * TRAJ_PER_STEP
    n_runs = max(1, -(-records // per_run))
    rng = random.Random(seed)
    remaining = records
    registry = []
    for r in range(n_runs):
        steps = min(STEPS_PER_RUN, -(-remaining // TRAJ_PER_STEP))
        step_rows, traj_rows = _run_rows(rng, steps)
        traj_rows = traj_rows[:remaining]
        remaining -= len(traj_rows)
        write_run_folder(export / "runs" / f"exp{r:05d}", step_rows, traj_rows)
        registry.append(
            {
                "experiment_id": f"exp{r:05d}",
                "control_or_fault": "control",
                "task_group": "arith_a",
                "seed": r,
            }
        )
    write_registry(export, "bench", registry)


def generate_export(export: Path, records: int, seed: int) -> None:
    """`_generate` in a spawned child process, so that the caller's peak memory stays its own."""
    child = multiprocessing.get_context("spawn").Process(target=_generate, args=(export, records, seed))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"generating the input failed (exit code {child.exitcode})")


def run_benchmark(records: int = 1_000_000, seed: int = 0) -> dict[str, Any]:
    """Generate `records` trajectory rows, ingest them into a fresh store, return measured figures.

    The input is generated in a child process, so that this process's peak memory is that of ingest
    (plus rftfm's imports), the figure the bounded-memory claim is about."""
    work = Path(tempfile.mkdtemp(prefix="rftfm-bench-ingest-"))
    try:
        export, store_dir = work / "export", work / "store"
        t0 = time.perf_counter()
        generate_export(export, records, seed)
        generate_s = time.perf_counter() - t0
        os.sync()  # the input's own write-back belongs to generating it, not to the ingest timed below
        input_mb = sum(p.stat().st_size for p in export.rglob("*") if p.is_file()) / 1e6

        rss_before = _peak_rss_mb()
        store = Store(store_dir)
        c0, t0 = _cpu_s(), time.perf_counter()
        result = ingest(store, [export])  # what `rftfm ingest DIR` does: read, stage, then commit
        total_s, total_cpu = time.perf_counter() - t0, _cpu_s() - c0
        if result.errors:
            raise RuntimeError(result.errors[0])
        rss_ingest = _peak_rss_mb()  # before DuckDB's read below, which takes memory of its own

        # Then the anchor: DuckDB alone reading the very same trajectory files and aggregating every row.
        files = sorted(str(p) for p in export.rglob("openrlhf_train_trajectory.jsonl"))
        c0, t0 = _cpu_s(), time.perf_counter()
        duckdb.sql(
            "SELECT count(*), avg(metrics.reward), count(DISTINCT metadata.rollout_step) "
            "FROM read_json($files, format = 'newline_delimited')",
            params={"files": files},
        ).fetchall()
        duckdb_s, duckdb_cpu = time.perf_counter() - t0, _cpu_s() - c0

        # The second reference: DuckDB's typed read of what the store keeps, written to one Parquet file.
        t0 = time.perf_counter()
        duckdb.sql(
            "COPY (SELECT * FROM read_json($files, format = 'newline_delimited', records = true, "
            f"columns = {duckdb_columns()})) TO '{work / 'reference.parquet'}' (FORMAT parquet)",
            params={"files": files},
        )
        duckdb_store_s = time.perf_counter() - t0

        # The floor: that same pass with the files' sha256 computed beside it (hashlib leaves the GIL).
        run_dirs = sorted({Path(f).parent for f in files})
        c0, t0 = _cpu_s(), time.perf_counter()
        with ThreadPoolExecutor(max_workers=1) as hasher:
            digests = hasher.submit(lambda: [sha256_of(d.glob("*.jsonl")) for d in run_dirs])
            duckdb.sql(
                "COPY (SELECT * FROM read_json($files, format = 'newline_delimited', records = true, "
                f"columns = {duckdb_columns()})) TO '{work / 'floor.parquet'}' (FORMAT parquet)",
                params={"files": files},
            )
            digests.result()
        floor_s, floor_cpu = time.perf_counter() - t0, _cpu_s() - c0

        stored = sum(m.n_trajectories for m in store.manifests())
        store_mb = sum(p.stat().st_size for p in store_dir.rglob("*") if p.is_file()) / 1e6
        return {
            "trajectory_records": stored,
            "runs": len(result.stored),
            "input_jsonl_MB": round(input_mb, 1),
            "store_parquet_MB": round(store_mb, 1),
            "generate_input_s (not timed)": round(generate_s, 1),
            "ingest_total_s": round(total_s, 2),
            "peak_rss_MB after ingest (process)": round(rss_ingest),
            "peak_rss_MB before ingest": round(rss_before),
            "records_per_s": round(stored / total_s),
            "duckdb_raw_read_s (same files)": round(duckdb_s, 2),
            "ratio_to_duckdb": round(total_s / duckdb_s, 2),
            "duckdb_typed_read_to_parquet_s (reference)": round(duckdb_store_s, 2),
            "reference_ratio_to_duckdb": round(duckdb_store_s / duckdb_s, 2),
            "floor_s (reference + sha256 of the same files beside it)": round(floor_s, 2),
            "floor_ratio_to_duckdb": round(floor_s / duckdb_s, 2),
            "ingest_cpu_s (all threads)": round(total_cpu, 2),
            "duckdb_raw_read_cpu_s": round(duckdb_cpu, 2),
            "cpu_ratio_to_duckdb": round(total_cpu / duckdb_cpu, 2) if duckdb_cpu > 0 else None,
            "floor_cpu_ratio_to_duckdb": round(floor_cpu / duckdb_cpu, 2) if duckdb_cpu > 0 else None,
            "cores": os.cpu_count(),
            "target": "ratio ≤ 2 at 1,000,000 records",
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


# A W&B run-history export's shape: W&B's own columns, the trainer's step, then the logged metrics.
_CSV_LEAD = ("_step", "_runtime", "_timestamp", "train/global_step")
_CSV_METRICS = ("train/reward", "train/kl", "train/loss", "train/entropy", "train/learning_rate")


def _write_history_csv(path: Path, rows: int, columns: int, seed: int) -> None:
    """A W&B run-history CSV: `rows` steps × `columns` columns, 10 % of metric cells empty (metrics logged
    at other cadences leave gaps in a history export)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    extra = max(0, columns - len(_CSV_LEAD) - len(_CSV_METRICS))
    names = [*_CSV_LEAD, *_CSV_METRICS, *(f"train/rewards/fn{i}/mean" for i in range(extra))]
    n_metrics = len(names) - len(_CSV_LEAD)
    steps = np.arange(rows)
    lead = np.column_stack([steps, steps * 1.5, 1.7e9 + steps * 1.5, steps]).astype(object)
    lead[:, 0] = lead[:, 3] = steps.tolist()  # steps as W&B writes them: integers, not "3.0"
    values = rng.random((rows, n_metrics)).astype(object)
    values[rng.random((rows, n_metrics)) < 0.1] = ""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        writer.writerows(np.hstack([lead, values]).tolist())


def run_csv_benchmark(rows: int = 20_000, columns: int = 60, seed: int = 0) -> dict[str, Any]:
    """Write a W&B run-history CSV, ingest it into a fresh store, and time DuckDB's `read_csv` of the
    same file (plus an aggregate) in the same run as the anchor."""
    work = Path(tempfile.mkdtemp(prefix="rftfm-bench-ingest-csv-"))
    try:
        path = work / "history.csv"
        _write_history_csv(path, rows, columns, seed)
        os.sync()
        store = Store(work / "store")
        t0 = time.perf_counter()
        result = ingest(store, [path])
        total_s = time.perf_counter() - t0
        if result.errors:
            raise RuntimeError(result.errors[0])
        t0 = time.perf_counter()
        duckdb.sql(
            'SELECT count(*), avg("train/reward") FROM read_csv($path)', params={"path": str(path)}
        ).fetchall()
        duckdb_s = time.perf_counter() - t0
        manifest = result.stored[0][0]
        return {
            "csv_rows": rows,
            "csv_columns": columns,
            "input_csv_MB": round(path.stat().st_size / 1e6, 1),
            "steps_stored": manifest.n_steps,
            "ingest_total_s": round(total_s, 2),
            "duckdb_read_csv_s (same file)": round(duckdb_s, 2),
            "ratio_to_duckdb": round(total_s / duckdb_s, 2),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    for key, value in run_benchmark().items():
        print(f"{key:>28}: {value}")
