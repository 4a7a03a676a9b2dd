"""Regenerate the bundled example run: a real GRPO run of TRL on the tiny model, saved as trainer_state.json.

`python -m rftfm_agent.evals.make_example` trains the tiny character-level Llama from `bench_recorder`
(randomly initialised, not warmed up) with TRL's GRPOTrainer on CPU (seconds here) and writes TRL's
own `trainer_state.json` to rftfm_agent/data/examples/, which `rftfm demo` ingests.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rftfm_agent.evals.bench_recorder import tiny_grpo_trainer

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "rftfm_agent" / "data" / "examples"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        trainer = tiny_grpo_trainer(work, max_steps=args.steps, seed=0, learning_rate=3e-4)
        trainer.train()
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / "tiny_grpo_trainer_state.json"
        trainer.state.save_to_json(str(target))
    print(f"wrote {target} ({args.steps} steps)")


if __name__ == "__main__":
    main()
