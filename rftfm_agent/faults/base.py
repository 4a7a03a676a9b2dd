"""What every injector shares: the fault's onset clock, its random stream, and the hooks it may use.

An injector is built from a `FaultSpec` (type, strength easy/hard, onset step, optional variant) and
touches training through at most three hooks, all called by the GRPO runner:

- `wrap_reward(fn)`: wrap the reward function before the trainer is built (RF, CA reward attachment);
- `install(trainer, runtime)`: after the trainer is built: wrap its advantage computation, add
  callbacks, register gradient hooks, reconfigure the calculator (PG, OD, CA, TE);
- `runtime`: the step clock and the per-sample labels of the newest batch.

Every hook is a no-op before the onset step: steps before it are healthy, so mid-run faults give a
detection delay to measure. Steps are 1-based optimizer steps; the batch generated for step k is
perturbed when k >= onset.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry.schema import FaultSpec

RewardFn = Callable[..., list[float]]


@dataclass
class FaultRuntime:
    """Shared state of one run's fault: which step is being generated or trained, and batch labels."""

    spec: FaultSpec | None
    seed: int = 0
    task: str = "arith_a"
    num_generations: int = 4
    trainer: Any = None
    calculator: Any = None  # the tool task's environment (TE faults reconfigure it)
    batch_labels: list[bool] | None = None  # per sample of the newest batch: was it perturbed
    step_injected: bool | None = None  # for faults that hit whole steps at random: this step or not
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        kind = self.spec.type if self.spec else "healthy"
        self.rng.seed(f"fault-{kind}-{self.seed}")

    @property
    def current_step(self) -> int:
        """The 1-based optimizer step being generated for or trained (global_step + 1)."""
        if self.trainer is None:
            return 1
        return int(self.trainer.state.global_step) + 1

    @property
    def active(self) -> bool:
        return self.spec is not None and self.current_step >= self.spec.onset_step

    def label_batch(self, n: int) -> dict[str, list]:
        """Label columns for the recorder's trajectory rows of the newest batch (labels, never features)."""
        active = self.active
        labels = self.batch_labels if self.batch_labels is not None and len(self.batch_labels) == n else None
        self.batch_labels = None
        whole_step = active if self.step_injected is None else (active and self.step_injected)
        injected = labels if labels is not None else [whole_step] * n
        kind = self.spec.type if (self.spec and active) else None
        strength = self.spec.strength if (self.spec and active) else None
        return {
            "fault_injected": [bool(x) for x in injected],
            "fault_injection_type": [kind] * n,
            "fault_injection_strength": [strength] * n,
        }


class OnsetCallback(TrainerCallback):
    """Calls `apply(trainer)` once, at the start of the onset step (before its batch is generated)."""

    def __init__(self, runtime: FaultRuntime, apply: Callable[[Any], None]) -> None:
        self.runtime = runtime
        self.apply = apply
        self.done = False

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self.done and self.runtime.active:
            self.apply(self.runtime.trainer)
            self.done = True


class Injector:
    """Base class: a fault type with its easy and hard settings. Subclasses override the hooks they use."""

    type: ClassVar[str] = ""
    family: ClassVar[str] = ""
    variants: ClassVar[tuple[str, ...]] = ("default",)
    tasks: ClassVar[tuple[str, ...] | None] = None  # None: any task; else the tasks it can run on
    description: ClassVar[str] = ""
    key_metrics: ClassVar[tuple[str, ...]] = ()  # what it is expected to move (for the effect table)

    def __init__(self, spec: FaultSpec) -> None:
        if spec.type != self.type:
            raise RftfmError(f"{type(self).__name__} injects {self.type}, not {spec.type}")
        self.spec = spec
        self.variant = getattr(spec, "variant", None) or self.variants[0]
        if self.variant not in self.variants:
            raise RftfmError(
                f"{self.type}: unknown variant {self.variant!r}; known: {', '.join(self.variants)}"
            )

    @property
    def easy(self) -> bool:
        return self.spec.strength == "easy"

    def check_task(self, task: str) -> None:
        if self.tasks is not None and task not in self.tasks:
            raise RftfmError(f"{self.type} needs one of the tasks {', '.join(self.tasks)}, not {task!r}")

    def wrap_reward(self, fn: RewardFn, runtime: FaultRuntime) -> RewardFn:
        return fn

    def install(self, trainer: Any, runtime: FaultRuntime) -> None:
        """Hook into the built trainer (callbacks, wrappers, gradient hooks)."""

    def settings(self) -> dict[str, Any]:
        """The injector's concrete parameters, saved in the run's manifest (config `fault/…`)."""
        return {}


registry: dict[str, type[Injector]] = {}


def register(cls: type[Injector]) -> type[Injector]:
    registry[cls.type] = cls
    return cls


def make_injector(spec: FaultSpec) -> Injector:
    from rftfm_agent.faults import credit, environment, generation, optimization, reward  # noqa: F401

    try:
        return registry[spec.type](spec)
    except KeyError:
        raise RftfmError(
            f"no injector for fault type {spec.type!r}; known: {', '.join(sorted(registry))}"
        ) from None
