"""The supervisor in a 2-process job (accelerate, CPU, gloo): the main process decides, every process
stops and resumes alike, from the same checkpoint with the same fixes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rftfm_agent.telemetry.store import Store

SCRIPT = Path(__file__).with_name("multiprocess_supervise.py")


@pytest.mark.slow
def test_two_processes_stop_and_resume_on_one_decision(tmp_path: Path) -> None:
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [
        str(accelerate),
        "launch",
        "--multi_gpu",  # with no GPU and use_cpu: accelerate's MULTI_CPU, torch.distributed over gloo
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(SCRIPT),
        str(tmp_path),
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    main, other = ranks
    assert main["resumes"], "the supervisor made no decision to resume"
    for key in ("final_step", "segments", "resumes", "stop", "steps_trained"):
        assert main[key] == other[key], key
    assert main["final_step"] == 24 and not main["errors"] and not other["errors"]
    journal = Store(tmp_path / "store").journal()
    decisions = journal["decision"].tolist()
    assert 1 <= decisions.count("applied") <= len(main["resumes"])  # one journal, by the main process
    assert journal["seq"].is_unique
