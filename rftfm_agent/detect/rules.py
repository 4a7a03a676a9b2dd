"""Hard rules: states that are never healthy, whatever the run. They need no fitting and fire online.

The rules are data: `RULES` names each one with its severity, what it means and where the knowledge comes
from (a paper, a framework's documentation, an issue thread), in the manner of declarative monitoring
rules. `HardRules` evaluates them on a stream of step rows; the fingerprint reads the same registry for
its rule flags.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from rftfm_agent.detect.events import Event, Severity


@dataclass(frozen=True, kw_only=True)
class Rule:
    """A hard rule: its name, how bad it is when it fires, what it means, and its source."""

    name: str
    severity: Severity
    description: str
    reference: str


PATIENCE = 3  # steps a condition must hold before its rule fires: one odd logged value is not an incident
CONSTANT_STEPS = 6  # identical mean rewards in a row that make a reward "constant"
BASELINE_LIMIT = 0.05  # mean |group mean of advantages| above which GRPO's baseline is not subtracted
ZERO_STD = 0.999  # frac_reward_zero_std at or above this: every group's rewards equal


def no_signal_state(check: str, value: float) -> bool:
    """Whether a logged value is in the state of a no-signal streak rule (`grad_norm_zero`: a gradient
    of exactly 0; `zero_std_groups`: every group's rewards equal). A run may start in these states and
    leave them (models often earn nothing on their first steps; with β = 0 the gradient is then 0)."""
    return value == 0.0 if check == "grad_norm_zero" else value >= ZERO_STD


NO_SIGNAL_STREAKS = {"grad_norm_zero": "grad_norm", "zero_std_groups": "frac_reward_zero_std"}

RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule(
            name="non_finite",
            severity="critical",
            description="a metric was NaN or infinite (or a NaN hidden inside an average: "
            "nan_frac/<metric> > 0)",
            reference="transformers TrainingArguments.logging_nan_inf_filter (NaN/Inf losses are left out "
            "of the logged average): https://huggingface.co/docs/transformers/main_classes/trainer",
        ),
        Rule(
            name="grad_norm_zero",
            severity="critical",
            description=f"gradient norm exactly 0 for {PATIENCE} steps in a row: nothing is learned",
            reference="huggingface/trl#3857 and modelscope/ms-swift#4547 (GRPO loss and grad_norm 0 when "
            "every group's rewards are equal)",
        ),
        Rule(
            name="lr_zero",
            severity="critical",
            description=f"learning rate fell to exactly 0 after being positive, for {PATIENCE} steps "
            "(a single 0 at the end of a decaying schedule is normal)",
            reference="transformers optimizer schedules (linear/cosine decay reach 0 only at the last "
            "step): https://huggingface.co/docs/transformers/main_classes/optimizer_schedules",
        ),
        Rule(
            name="lr_logged_zero",
            severity="warning",
            description=f"learning rate logged as 0 from the start for {PATIENCE} steps: frozen, or "
            "printed with too few digits",
            reference="transformers optimizer schedules (warm-up leaves 0 after the first step); console "
            "loggers that round small values print a positive lr as 0.000",
        ),
        Rule(
            name="zero_std_groups",
            severity="critical",
            description=f"frac_reward_zero_std ≥ 0.999 for {PATIENCE} steps: no group gives a learning "
            "signal",
            reference="DAPO (Yu et al., 2025, arXiv:2503.14476) §3.2: groups whose rewards are all equal "
            "have zero advantage; TRL logs their share as frac_reward_zero_std "
            "(https://huggingface.co/docs/trl/logging)",
        ),
        Rule(
            name="all_clipped",
            severity="critical",
            description=f"completions/clipped_ratio ≥ 0.999 for {PATIENCE} steps: every completion hits "
            "the length cap",
            reference="TRL logging docs (completions/clipped_ratio: share of completions truncated at "
            "max_completion_length, https://huggingface.co/docs/trl/logging); DAPO §3.4 overlong samples",
        ),
        Rule(
            name="constant_reward",
            severity="warning",
            description=f"the mean reward identical for {CONSTANT_STEPS} steps: a stuck verifier",
            reference="huggingface/trl#3452 (GRPO reward=0 and loss=0: the reward function never pays)",
        ),
        Rule(
            name="advantage_baseline",
            severity="critical",
            description=f"traj/advantage_group_mean_abs > {BASELINE_LIMIT}: advantages lost their group "
            "baseline",
            reference="DeepSeekMath (Shao et al., 2024, arXiv:2402.03300) §4.1: GRPO's advantage is the "
            "reward minus its group's mean, divided by the group's std",
        ),
    )
}


class HardRules:
    """Streaming hard rules; `update(step, row)` returns the events that fire at this step."""

    def __init__(self, patience: int = PATIENCE, constant_steps: int = CONSTANT_STEPS) -> None:
        self.patience = patience
        self.constant_steps = constant_steps
        self.reset()

    def reset(self) -> None:
        self._runs: dict[str, int] = {}
        self._fired: set[str] = set()
        self._rewards: list[float] = []
        self._lr_was_positive = False

    def rearm(self, rule: str, metric: str) -> None:
        """Let a rule that fired on `metric` fire again (a rule fires once per metric): the detector
        re-arms a no-signal streak a run started in and left, so that losing the signal later still
        fires."""
        self._fired.discard(f"{rule}:{metric}")

    def _streak(self, name: str, condition: bool) -> int:
        self._runs[name] = self._runs.get(name, 0) + 1 if condition else 0
        return self._runs[name]

    def update(self, step: int, row: Mapping[str, float]) -> list[Event]:
        events: list[Event] = []

        def fire(rule: str, metric: str, value: float, **evidence: float) -> None:
            key = f"{rule}:{metric}"
            if key in self._fired:
                return
            self._fired.add(key)
            events.append(
                Event(
                    step=step,
                    metric=metric,
                    source="rule",
                    check=rule,
                    severity=RULES[rule].severity,
                    score=math.inf,
                    evidence={"value": value, **evidence},
                )
            )

        for metric, value in row.items():
            if metric in ("step", "wall_time", "step_time") or value is None:
                continue
            if isinstance(value, float) and not math.isfinite(value):
                fire("non_finite", metric, value)
            elif metric.startswith("nan_frac/") and value > 0:
                fire("non_finite", metric.removeprefix("nan_frac/"), value, nan_fraction=value)
        grad = row.get("grad_norm")
        if (
            grad is not None
            and self._streak("grad_zero", no_signal_state("grad_norm_zero", grad)) >= self.patience
        ):
            fire("grad_norm_zero", "grad_norm", grad, steps=self.patience)
        lr = row.get("learning_rate")
        if lr is not None:
            self._lr_was_positive = self._lr_was_positive or lr > 0
            if self._streak("lr_zero", lr == 0.0) >= self.patience:
                if self._lr_was_positive:
                    fire("lr_zero", "learning_rate", lr, steps=self.patience)
                else:
                    fire("lr_logged_zero", "learning_rate", lr, steps=self.patience)
        zero_std = row.get("frac_reward_zero_std")
        if zero_std is not None and self._streak(
            "zero_std", no_signal_state("zero_std_groups", zero_std)
        ) >= (self.patience):
            fire("zero_std_groups", "frac_reward_zero_std", zero_std, steps=self.patience)
        clipped = row.get("completions/clipped_ratio")
        if clipped is not None and self._streak("clipped", clipped >= 0.999) >= self.patience:
            fire("all_clipped", "completions/clipped_ratio", clipped, steps=self.patience)
        reward = row.get("reward")
        if reward is not None and math.isfinite(reward):
            self._rewards.append(reward)
            recent = self._rewards[-self.constant_steps :]
            if len(recent) == self.constant_steps and max(recent) - min(recent) == 0.0:
                fire("constant_reward", "reward", reward, steps=self.constant_steps)
        baseline = row.get("traj/advantage_group_mean_abs")
        if baseline is not None and math.isfinite(baseline) and baseline > BASELINE_LIMIT:
            fire("advantage_baseline", "traj/advantage_group_mean_abs", baseline)
        return events
