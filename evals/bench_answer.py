"""Benchmark: how fast stored runs are answered for (detect, diagnose), one run and many runs at once.

Run with `rftfm bench answer --runs 1000`. An export of RFT-FaultBench runs (40 steps × 64 trajectories,
`bench_ingest`'s generator) is generated and ingested first (not timed here; `rftfm bench ingest` times
that). Then, on the same store:

- one-shot CLI calls (`rftfm detect RUN --json`, `rftfm diagnose RUN --json`), timed from the shell's
  side, beside Python's own start and the import of rftfm's CLI: what a user in a chat waits for, and
  how much of it is imports. The very first diagnosis on a machine fits the fault-type forest and caches
  it (`RFTFM_CACHE`): that call is timed apart, with an empty cache of its own;
- the same work in a running process (a chat session, an agent): the first call (loading the detector,
  the fingerprint library and the cached forest) and later calls (median);
- `diagnose_runs` over every stored run in one call (after a warm-up call on two runs).

Targets (issue 15): detect and diagnose under 0.5 s of work beyond Python's start and imports; 1,000
stored runs diagnosed in one call in under 60 s.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rftfm_agent.evals.bench_ingest import STEPS_PER_RUN, TRAJ_PER_STEP, generate_export


def _wall(argv: list[str], env: dict[str, str]) -> float:
    """Seconds a child process takes from start to exit (it must succeed)."""
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _median_wall(argv: list[str], env: dict[str, str], repeats: int) -> float:
    return statistics.median(_wall(argv, env) for _ in range(repeats))


def _timed(call: Any) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def run_answer_benchmark(runs: int = 1000, repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """Generate and ingest `runs` runs into a fresh store, then time answering for them."""
    from rftfm_agent.detect.api import detect_runs
    from rftfm_agent.diagnose.api import diagnose_runs
    from rftfm_agent.telemetry.ingest import ingest
    from rftfm_agent.telemetry.store import Store

    if runs < 2:
        raise ValueError(f"runs must be at least 2, got {runs}")
    work = Path(tempfile.mkdtemp(prefix="rftfm-bench-answer-"))
    try:
        export = work / "export"
        generate_export(export, runs * STEPS_PER_RUN * TRAJ_PER_STEP, seed)
        store = Store(work / "store")
        result = ingest(store, [export])
        if result.errors:
            raise RuntimeError(result.errors[0])
        shutil.rmtree(export)
        ids = store.run_ids()
        one = ids[len(ids) // 2]

        # From a shell, as a user types it: a fresh process each time (`python -m rftfm_agent.cli`, what
        # the `rftfm` console script runs), with the user's cache; the very first call on a machine is
        # timed with an empty cache, where it fits the fault-type forest and caches it.
        env = {**os.environ, "RFTFM_STORE": str(store.root)}
        python = sys.executable
        rftfm = [python, "-m", "rftfm_agent.cli"]
        empty_cache = {**env, "RFTFM_CACHE": str(work / "empty-cache")}
        first_ever_s = _wall([*rftfm, "diagnose", one, "--json"], empty_cache)
        _wall([*rftfm, "diagnose", one, "--json"], env)  # the user's cache, warm from here on
        start_s = _median_wall([python, "-c", "pass"], env, repeats)
        import_s = _median_wall([python, "-c", "import rftfm_agent.cli"], env, repeats)
        detect_cli_s = _median_wall([*rftfm, "detect", one, "--json", "--no-save"], env, repeats)
        diagnose_cli_s = _median_wall([*rftfm, "diagnose", one, "--json"], env, repeats)

        # In a running process: the first call loads the models, later ones reuse what is cached.
        first_detect_s = _timed(lambda: detect_runs(store, [one], save=False))
        first_diagnose_s = _timed(lambda: diagnose_runs(store, [one]))
        detect_s = statistics.median(
            _timed(lambda: detect_runs(store, [one], save=False)) for _ in range(repeats)
        )
        diagnose_s = statistics.median(_timed(lambda: diagnose_runs(store, [one])) for _ in range(repeats))

        diagnose_runs(store, ids[:2])  # warm-up, as a long-lived process would have done
        many_s = _timed(lambda: diagnose_runs(store, ids))
        return {
            "runs stored": len(ids),
            "rftfm diagnose RUN, empty cache (s)": round(first_ever_s, 2),
            "python start (s)": round(start_s, 3),
            "import rftfm CLI (s)": round(import_s, 2),
            "rftfm detect RUN, shell (s)": round(detect_cli_s, 2),
            "rftfm diagnose RUN, shell (s)": round(diagnose_cli_s, 2),
            "detect beyond imports (s)": round(detect_cli_s - import_s, 2),
            "diagnose beyond imports (s)": round(diagnose_cli_s - import_s, 2),
            "detect in process, first (s)": round(first_detect_s, 3),
            "diagnose in process, first (s)": round(first_diagnose_s, 3),
            "detect in process, later (s)": round(detect_s, 3),
            "diagnose in process, later (s)": round(diagnose_s, 3),
            f"diagnose {len(ids)} runs, one call (s)": round(many_s, 1),
            "ms per run": round(1000 * many_s / len(ids), 1),
            "targets": "< 0.5 s beyond imports per answer; 1,000 runs < 60 s",
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    for key, value in run_answer_benchmark().items():
        print(f"{key:>34}: {value}")
