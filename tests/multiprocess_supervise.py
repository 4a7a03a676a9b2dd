"""Run by tests/test_multiprocess.py under `accelerate launch --multi_gpu --num_processes 2` on CPU
(gloo): one supervised testbed run with an injected fault; each process writes what it did to
OUT/rank<i>.json so the test can check that every process stopped and resumed alike."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from accelerate import PartialState

from rftfm_agent.evals.closed_loop import supervised_testbed_run
from rftfm_agent.supervise.policy import Policy
from rftfm_agent.telemetry.store import Store
from rftfm_agent.testbed.runner import RunSpec, parse_fault


def main(out: Path) -> None:
    state = PartialState(cpu=True)
    spec = RunSpec(
        name="multiprocess",
        fault=parse_fault("od_lr:easy@10:high"),
        steps=24,
        batch_size=32,
        eval_every=8,
    )
    outcome = supervised_testbed_run(spec, Store(out / "store"), out / "work", Policy.load(mode="auto"))
    result = outcome.result
    record = {
        "rank": state.process_index,
        "world": state.num_processes,
        "final_step": outcome.final_step,
        "steps_trained": outcome.steps_trained,
        "segments": len(result.segments),
        "resumes": result.resumes,
        "stop": result.stop.model_dump(mode="json") if result.stop else None,
        "errors": result.errors,
    }
    (out / f"rank{state.process_index}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
