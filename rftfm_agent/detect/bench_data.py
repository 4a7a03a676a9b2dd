"""Load a generated benchmark for detection: every finished run as `RunData`, with its registry labels.

Frames (step metrics + trajectory aggregates recomputed from the stored trajectories) take a while to
build for a full benchmark, so they are cached in `BENCH/cache/detect_frames.parquet`, keyed by the
store's run list; the cache is rebuilt when runs are added.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from rftfm_agent.detect.detector import RunData
from rftfm_agent.detect.features import run_frame
from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry.importers.faultbench import read_registries
from rftfm_agent.telemetry.io import atomic_write_with
from rftfm_agent.telemetry.store import Store

# Bump when the frames `run_frame` builds change: 2: a cell logged only as NaN is marked (`nan_frac/`).
FRAMES_VERSION = 2


def load_bench(bench: Path) -> list[RunData]:
    bench = Path(bench)
    if not (bench / "store").is_dir():
        raise RftfmError(f"{bench}: not a benchmark folder (no store)")
    store = Store(bench / "store")
    finished = {m.experiment_id or m.name: m for m in store.manifests() if m.status == "finished"}
    # The registry CSVs label every run (the paper's layout); read with the importer's reader, since
    # detection never imports the benchmark generator.
    rows = [r for r in read_registries(bench).values() if r["experiment_id"] in finished]
    if not rows:
        raise RftfmError(f"{bench}: no finished runs")
    key = hashlib.sha1(
        ",".join(sorted(finished[r["experiment_id"]].run_id for r in rows)).encode()
    ).hexdigest()[:12]
    cache = bench / "cache" / f"detect_frames-{FRAMES_VERSION}-{key}.parquet"
    if cache.is_file():
        frames = pd.read_parquet(cache)
    else:
        parts = []
        for r in rows:
            frame = run_frame(store, finished[r["experiment_id"]].run_id)
            frame.insert(0, "experiment_id", r["experiment_id"])
            parts.append(frame)
        frames = pd.concat(parts, ignore_index=True)
        cache.parent.mkdir(exist_ok=True)
        atomic_write_with(cache, frames.to_parquet)
    by_id = {
        k: g.drop(columns="experiment_id").reset_index(drop=True) for k, g in frames.groupby("experiment_id")
    }
    return [
        RunData(
            r["experiment_id"],
            r["task_group"],
            by_id[r["experiment_id"]],
            meta=dict(r),
            config=dict(finished[r["experiment_id"]].config),
        )
        for r in rows
    ]
