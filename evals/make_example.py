"""Regenerate the bundled example run: a real GRPO run of the warmed-up testbed, as TRL's trainer_state.json.

`python -m rftfm_agent.evals.make_example` trains the testbed's tiny Llama (warmed up on arithmetic, see
`rftfm testbed warmup`) with TRL's GRPOTrainer on CPU: a healthy run with the testbed's default settings
(30 steps, learning rate 2e-4) of two-digit minus one-digit subtraction (seconds here), and copies
TRL's own `trainer_state.json` from the final checkpoint to
rftfm_agent/data/examples/, which `rftfm demo` ingests.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from rftfm_agent.telemetry.store import Store
from rftfm_agent.testbed.runner import RunSpec, run

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "rftfm_agent" / "data" / "examples"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=RunSpec.model_fields["steps"].default)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    spec = RunSpec(name="example", task="arith_b", steps=args.steps, save_steps=args.steps)
    with tempfile.TemporaryDirectory() as work:
        run(spec, Store(Path(work) / "store"), Path(work) / "run")
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / "tiny_grpo_trainer_state.json"
        shutil.copyfile(Path(work) / "run" / f"checkpoint-{args.steps}" / "trainer_state.json", target)
    print(f"wrote {target} ({args.steps} steps)")


if __name__ == "__main__":
    main()
