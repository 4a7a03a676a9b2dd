"""What every injector shares: the fault's onset clock, its random stream, and the hooks it may use.

An injector is built from a `FaultSpec` (type, strength easy/hard, onset step, optional variant) and is a
`TrainerHook` (`rftfm_agent/testbed/hooks.py`): the runner calls it, knowing nothing of faults.

- `wrap_reward(fn)`: wrap the reward function before the trainer is built (RF, CA reward attachment);
- `install(trainer, run)`: bind the fault's clock to the built trainer, then `attach`: edit its training
  batch (through `telemetry.trl_batch`), add callbacks, register gradient hooks, reconfigure the
  calculator (PG, OD, CA, TE);
- `label_columns(n)`: the per-sample labels of the newest batch (`fault_injected`, type, strength).

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
from rftfm_agent.hooks import RunContext, TrainerHook
from rftfm_agent.telemetry.schema import FaultSpec


@dataclass
class FaultRuntime:
    """One fault's state in its run: which step is being generated or trained, its random stream, and
    the labels of the newest batch. Made with the injector; `bind` ties it to the run at install, so the
    reward wrappers made before that read it only when called, i.e. during training."""

    spec: FaultSpec
    trainer: Any = None
    num_generations: int = 0
    batch_labels: list[bool] | None = None  # per sample of the newest batch: was it perturbed
    step_injected: bool | None = None  # for faults that hit whole steps at random: this step or not
    rng: random.Random = field(default_factory=random.Random)

    def bind(self, trainer: Any, run: RunContext) -> None:
        self.trainer = trainer
        self.num_generations = run.num_generations
        self.rng.seed(f"fault-{self.spec.type}-{run.seed}")

    @property
    def current_step(self) -> int:
        """The 1-based optimizer step being generated for or trained (global_step + 1)."""
        if self.trainer is None:
            return 1
        return int(self.trainer.state.global_step) + 1

    @property
    def active(self) -> bool:
        return self.current_step >= self.spec.onset_step


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


class Injector(TrainerHook):
    """Base class: a fault type with its easy and hard settings. Subclasses override the hooks they use
    (`wrap_reward`, `attach`, `settings`)."""

    name = "fault"
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
        self.runtime = FaultRuntime(spec)

    @property
    def easy(self) -> bool:
        return self.spec.strength == "easy"

    def check_task(self, task: str) -> None:
        if self.tasks is not None and task not in self.tasks:
            raise RftfmError(f"{self.type} needs one of the tasks {', '.join(self.tasks)}, not {task!r}")

    def install(self, trainer: Any, run: RunContext) -> None:
        """Check the task, bind the fault's clock to the trainer, then `attach`."""
        self.check_task(run.task)
        self.runtime.bind(trainer, run)
        self.attach(trainer, run)

    def attach(self, trainer: Any, run: RunContext) -> None:
        """The fault's own hooks into the built trainer (callbacks, batch edits, gradient hooks)."""

    def label_columns(self, n: int) -> dict[str, list]:
        runtime = self.runtime
        active = runtime.active
        injected, runtime.batch_labels = runtime.batch_labels, None  # per sample, from the perturbing hook
        if injected is None or len(injected) != n:
            whole_step = active if runtime.step_injected is None else (active and runtime.step_injected)
            injected = [whole_step] * n
        return {
            "fault_injected": [bool(x) for x in injected],
            "fault_injection_type": [self.spec.type if active else None] * n,
            "fault_injection_strength": [self.spec.strength if active else None] * n,
        }
