"""How long does benchmark generation take here? Time a sample of the `full` preset's runs.

    rftfm bench speed [--runs 6] [--workers N]

Runs are taken evenly spaced from the full plan (so tasks, lengths, batch sizes and fault types are
mixed as in the real thing), generated with the same worker pool as `rftfm bench generate` into a
temporary folder, and timed. Printed: wall seconds for the sample, worker seconds per run and per
optimizer step, and the projected wall hours for the whole `full` preset with the same worker count
(sample wall time scaled by the preset's trajectory count, i.e. by its compute).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from rftfm_agent.bench.generator import run_in_pool
from rftfm_agent.bench.presets import plan, scale
from rftfm_agent.testbed.model import WarmupConfig, warm_model


def run_speed_benchmark(runs: int = 6, workers: int | None = None) -> dict[str, Any]:
    workers = workers or max(1, os.cpu_count() or 1)
    warm_model(WarmupConfig())
    full = plan("full")
    stride = max(1, len(full) // runs)
    sample = full[::stride][:runs]
    infos: list[dict[str, Any]] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rftfm-speed-") as tmp:
        cache = os.environ.get("RFTFM_CACHE")
        args = [
            (p.spec.model_dump_json(), str(Path(tmp) / "store"), str(Path(tmp) / "work"), cache)
            for p in sample
        ]
        started = time.perf_counter()
        run_in_pool(workers, args, infos.append, failed)
        wall = time.perf_counter() - started
    if failed:
        raise RuntimeError(f"speed benchmark runs failed: {failed}")
    sample_scale = scale(sample)
    full_scale = scale(full)
    worker_seconds = sum(i["seconds"] for i in infos)
    projected = wall * full_scale["trajectories"] / sample_scale["trajectories"]
    return {
        "sample runs": len(sample),
        "workers": workers,
        "sample wall seconds": round(wall, 1),
        "worker seconds per run": round(worker_seconds / len(infos), 2),
        "worker seconds per step": round(worker_seconds / sample_scale["steps"], 3),
        "full preset runs": full_scale["runs"],
        "full preset steps": full_scale["steps"],
        "full preset trajectories": full_scale["trajectories"],
        "projected full hours": round(projected / 3600, 2),
    }
