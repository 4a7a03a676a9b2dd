"""`rftfm bench supervisor`: the supervisor's overhead on a healthy run, as a ratio measured in one process.

    rftfm bench supervisor [--repeats 2] [--steps 30]

The same healthy testbed spec is trained plain (`runner.run`) and under the supervisor in `auto` mode
(`closed_loop.supervised_testbed_run`), alternately, `repeats` times each. Printed: seconds per step of
each (medians), their ratio, and the supervisor's own time per logged row (what it spends watching: the
recorder's row → the online detector) as a share of a plain step. Deciding (diagnosis, planning) happens
only on an incident and is reported apart. Checkpointing, which a supervised run needs for rollbacks, is
part of the plain-vs-supervised ratio, not of the supervisor's own share.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def run_supervisor_benchmark(repeats: int = 2, steps: int = 30) -> dict[str, Any]:
    from rftfm_agent.evals.closed_loop import shared_models, supervised_testbed_run
    from rftfm_agent.supervise.policy import Policy
    from rftfm_agent.telemetry.store import Store
    from rftfm_agent.testbed.model import WarmupConfig, warm_model
    from rftfm_agent.testbed.runner import RunSpec, run

    warm_model(WarmupConfig())
    shared_models()  # loaded once, as a long-lived job would
    root = Path(tempfile.mkdtemp(prefix="rftfm-bench-supervisor-"))
    plain: list[float] = []
    supervised: list[float] = []
    watch: list[float] = []
    decide: list[float] = []
    interventions = 0
    try:
        store = Store(root / "store")
        for i in range(repeats):
            spec = RunSpec(name=f"plain-{i}", steps=steps, eval_every=10)
            started = time.perf_counter()
            run(spec, store, root / f"plain-{i}")
            plain.append((time.perf_counter() - started) / steps)
            spec = spec.model_copy(update={"name": f"supervised-{i}"})
            started = time.perf_counter()
            outcome = supervised_testbed_run(spec, store, root / f"sup-{i}", Policy.load(mode="auto"))
            supervised.append((time.perf_counter() - started) / max(1, outcome.steps_trained))
            result = outcome.result
            watch.append(result.watch_seconds / max(1, result.rows))
            decide.append(result.supervisor_seconds - result.watch_seconds)
            interventions += len(result.resumes)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    plain_step = statistics.median(plain)
    return {
        "repeats": repeats,
        "steps": steps,
        "plain_seconds_per_step": round(plain_step, 4),
        "supervised_seconds_per_step": round(statistics.median(supervised), 4),
        "supervised_over_plain": round(statistics.median(supervised) / plain_step, 3),
        "watch_seconds_per_row": round(statistics.median(watch), 5),
        "watch_share_of_step": round(statistics.median(watch) / plain_step, 4),
        "decide_seconds_per_run": round(statistics.median(decide), 3),
        "interventions_on_healthy_runs": interventions,
    }
