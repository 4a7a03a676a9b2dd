"""The supervisor around a GRPOTrainer the user builds (no testbed runner, no fault injector): the user's
reward function breaks mid-run (it starts paying wrong answers), the supervisor notices, switches to the
fallback verifier the user registered, resumes from a checkpoint, and the run learns again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def test_supervisor_run_with_a_plain_grpo_trainer_and_a_reward_bug(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rftfm_agent.evals.closed_loop import shared_models
    from rftfm_agent.supervise.policy import Policy
    from rftfm_agent.supervise.supervisor import Supervisor
    from rftfm_agent.telemetry.store import Store
    from rftfm_agent.testbed.model import WarmupConfig, warm_model
    from rftfm_agent.testbed.runner import RunSpec, correct, training_prompts

    steps, bug_from = 24, 8
    folder = warm_model(WarmupConfig())
    dataset = training_prompts(RunSpec(name="data", steps=steps))  # the user's prompts (arith_a)

    def my_reward(completions: list[Any], answer: list[str], **kw: Any) -> list[float]:
        """The user's verifier, with a bug shipped at step 8: it pays wrong answers instead of right ones."""
        scores = correct(completions, answer)
        trainer = holder.get("trainer")
        if trainer is not None and trainer.state.global_step >= bug_from:
            return [1.0 - s for s in scores]
        return scores

    holder: dict[str, Any] = {}

    def make_trainer(segment: Any) -> Any:
        trainer = GRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(folder),
            reward_funcs=[segment.wrap_reward(my_reward)],
            args=GRPOConfig(
                output_dir=str(segment.output_dir),
                max_steps=steps,
                per_device_train_batch_size=64,
                num_generations=4,
                max_completion_length=8,
                learning_rate=2e-4,
                lr_scheduler_type="constant_with_warmup",
                warmup_steps=5,
                beta=0.04,
                logging_steps=1,
                save_strategy="steps",
                save_steps=3,
                report_to=[],
                bf16=False,
                gradient_checkpointing=False,
                use_cpu=True,
                seed=0,
                data_seed=0,
                disable_tqdm=True,
            ),
            train_dataset=dataset,
            processing_class=AutoTokenizer.from_pretrained(folder),
        )
        holder["trainer"] = trainer
        return trainer

    detector, diagnoser = shared_models()
    store = Store(tmp_path / "store")
    supervisor = Supervisor(
        policy=Policy.load(mode="auto", allow_reward_changes=True),
        detector=detector,
        diagnoser=diagnoser,
        store=store,
        task="arith_a",
        fallback_rewards={"strict": correct},
        run_name="my-run",
    )
    result = supervisor.run(make_trainer, tmp_path / "work")
    journal = store.journal(result.run_id)
    decisions = journal["decision"].tolist()
    assert "applied" in decisions, journal[["step", "decision", "reason"]].to_string()
    applied = journal[journal.decision == "applied"]["actions"].tolist()
    assert any("fallback_reward" in a for a in applied), applied
    assert int(holder["trainer"].state.global_step) == steps
    kept = store.steps(result.segments[-1])
    assert kept["reward"].tail(3).mean() > 0.3  # the fallback pays right answers: the run learns again
