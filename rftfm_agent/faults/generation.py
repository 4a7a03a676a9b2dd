"""PG — policy-generation faults: the trainer's sampling settings are changed at the onset step.

`set_generation` changes them where TRL's sampler reads them; the tool task's rollout reads
`trainer.generation_config` too, so it is affected alike. They model a misconfigured *sampler* (an
inference engine launched with the wrong settings): TRL 1.16 fixes the temperature used for the
training log-probabilities when the trainer is built, so `pg_temperature` changes what is sampled, not
how the loss scores it.

These faults need TRL's HF generation path (`needs_hf_sampler`): with vLLM the sampling settings are fixed
when the engine starts, and the runner refuses them.
"""

from __future__ import annotations

from typing import Any

from rftfm_agent.errors import RftfmError
from rftfm_agent.faults.base import Injector, OnsetCallback
from rftfm_agent.hooks import RunContext
from rftfm_agent.knobs import set_generation
from rftfm_agent.testbed.tasks import TASKS, TOOL_CLOSE, TOOL_END


class Temperature(Injector):
    type, family = "pg_temperature", "PG"
    needs_hf_sampler = True
    variants = ("high", "low")
    description = "sampling temperature far too high (easy 2.5, hard 1.5) or too low (easy 0.1, hard 0.5)"
    key_metrics = ("traj/distinct_completion_frac", "frac_reward_zero_std", "reward")

    def temperature(self) -> float:
        if self.variant == "high":
            return 2.5 if self.easy else 1.5
        return 0.1 if self.easy else 0.5

    def settings(self) -> dict[str, Any]:
        return {"temperature": self.temperature()}

    def attach(self, trainer: Any, run: RunContext) -> None:
        value = self.temperature()
        trainer.add_callback(OnsetCallback(self.runtime, lambda t: set_generation(t, temperature=value)))


def typical_length(task: str) -> int:
    """The policy's own tokens in a right answer, EOS included (median over the task's held-out problems).

    The calculator's reply ("1702|") is the environment's text and does not count against the completion
    budget, so it is not counted here either.
    """
    lengths = []
    for p in TASKS[task].heldout():
        own = p.target
        if TOOL_CLOSE in own and TOOL_END in own:
            own = own[: own.index(TOOL_CLOSE) + 1] + own[own.index(TOOL_END) + 1 :]
        lengths.append(len(own) + 1)
    lengths.sort()
    return lengths[len(lengths) // 2]


class Truncation(Injector):
    type, family = "pg_truncation", "PG"
    needs_hf_sampler = True
    description = "max completion length too small: easy half a right answer, hard one token short"
    key_metrics = ("completions/clipped_ratio", "completion_length", "reward")

    def cap(self, task: str) -> int:
        typical = typical_length(task)
        return max(1, typical // 2) if self.easy else max(1, typical - 1)

    def attach(self, trainer: Any, run: RunContext) -> None:
        cap = self.cap(run.task)
        if cap >= trainer.max_completion_length:
            raise RftfmError(
                f"pg_truncation: cap {cap} is not below the run's {trainer.max_completion_length}"
            )
        trainer.add_callback(OnsetCallback(self.runtime, lambda t: set_generation(t, max_new_tokens=cap)))


class Degenerate(Injector):
    type, family = "pg_degenerate", "PG"
    needs_hf_sampler = True
    description = "end-of-sequence suppressed (easy: never sampled; hard: its logit lowered by 5)"
    key_metrics = ("completion_length", "completions/clipped_ratio", "traj/repetition_ratio_mean")

    def attach(self, trainer: Any, run: RunContext) -> None:
        eos = trainer.processing_class.eos_token_id

        def apply(t: Any) -> None:
            if self.easy:
                set_generation(t, suppress_tokens=[eos])
            else:
                set_generation(t, sequence_bias={(eos,): -5.0})

        trainer.add_callback(OnsetCallback(self.runtime, apply))
