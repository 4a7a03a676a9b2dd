"""The intervention seam: every way something outside the runner may change a GRPO training run.

A fault injector today, a remediation action tomorrow: each is a `TrainerHook`, and the runner knows
nothing else about it. It hands the runner's reward function to `wrap_reward` before the trainer is
built, calls `install` on the built trainer (before the held-out evaluation and the recorder), saves
`settings()` in the run manifest under `<name>/…`, merges `label_columns(n)` into the recorder's
trajectory rows of every batch, and refuses vLLM generation for a hook that `needs_hf_sampler`.

    hooks = hooks_for(spec.fault)          # rftfm_agent.faults.registry: a fault as hooks
    run(spec, store, workdir, hooks=hooks)

A hook that edits the training batch does so through `rftfm_agent.telemetry.trl_batch` (stage "edit"),
the one place that wraps TRL's private batch method, so the recorder observes what the loss trains on.
It lives at the package root and imports nothing else of rftfm, so that every stage that may change
a run (the testbed, the faults, remediation, the supervisor) can depend on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

RewardFn = Callable[..., list[float]]

# Where a hook's `wrap_reward` sits around the reward function, innermost first. "function": a change to
# the reward code itself (a bug in the user's verifier); "selection": which reward function is used (a
# fallback the user registered replaces everything inside it); "pipeline": what the trainer does with the
# rewards afterwards (attaching them to completions). A fallback reward therefore removes a bug in the
# reward code but not one in the trainer's batching, as it would in a real job.
RewardLayer = Literal["function", "selection", "pipeline"]
REWARD_LAYERS: tuple[RewardLayer, ...] = ("function", "selection", "pipeline")


@dataclass
class ToolCallPolicy:
    """How an environment calls its tools: a failed call is retried `retries` times, waiting
    `backoff_s * 2**attempt` seconds before each retry. Environments that honour it read it at every call,
    so a change made while the run trains applies to the next call."""

    retries: int = 0
    backoff_s: float = 0.0


@dataclass
class RunContext:
    """What a hook is told about the run it is installed in, beside the trainer itself."""

    task: str
    seed: int
    num_generations: int
    calculator: Any = None  # the tool task's environment (`testbed.environment.Calculator`), else None
    # Per sample of the newest batch (tool task only): tool_call_count, tool_error_count, tool_fault.
    tool_stats: dict[str, list] = field(default_factory=dict)
    tool_policy: ToolCallPolicy = field(default_factory=ToolCallPolicy)


@runtime_checkable
class TrainerHook(Protocol):
    """Something that changes a training run. Subclass it to inherit the no-op defaults."""

    name: str  # what it is ("fault"); its settings go into the run manifest as `<name>/<key>`
    needs_hf_sampler: bool = False  # changes TRL's HF sampler at run time, so vLLM generation cannot run it
    reward_layer: RewardLayer = "pipeline"  # where `wrap_reward` wraps (see REWARD_LAYERS)

    def wrap_reward(self, fn: RewardFn) -> RewardFn:
        """The reward function the trainer is built with; called once, before the trainer exists, in the
        order of `reward_layer` (then of the hooks' order)."""
        return fn

    def install(self, trainer: Any, run: RunContext) -> None:
        """Hook into the built trainer: callbacks, gradient hooks, batch edits, environment settings."""

    def settings(self) -> dict[str, Any]:
        """Concrete parameters, saved in the run manifest so a run says exactly what was done to it."""
        return {}

    def label_columns(self, n: int) -> dict[str, list]:
        """Trajectory columns for the newest batch of `n` samples (labels, never features); called once
        per batch. Keys the recorder's trajectory schema does not know are dropped."""
        return {}
