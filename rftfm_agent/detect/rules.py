"""Hard rules: states that are never healthy, whatever the run. They need no fitting and fire online.

- non_finite (critical): any metric is NaN or ±Inf at a step; a NaN loss that TRL averaged away shows
  as nan_frac/loss > 0.
- grad_norm_zero (critical): grad_norm exactly 0 for `patience` steps in a row.
- lr_zero (critical): learning_rate drops to exactly 0 after being positive, for `patience` steps in a
  row (a single 0 at the end of a decaying schedule is normal).
- lr_logged_zero (warning): learning_rate logged as 0 from the start for `patience` steps: frozen, or
  logged with too few digits.
- zero_std_groups (critical): frac_reward_zero_std ≥ 0.999 for `patience` steps (no group gives a
  learning signal).
- all_clipped (critical): completions/clipped_ratio ≥ 0.999 for `patience` steps (every completion hits
  the length cap).
- constant_reward (warning): the mean reward identical for `constant_steps` steps (a stuck verifier).
- advantage_baseline (critical): traj/advantage_group_mean_abs > 0.05: GRPO's group baseline is not
  subtracted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from rftfm_agent.detect.events import Event


class HardRules:
    """Streaming hard rules; `update(step, row)` returns the events that fire at this step."""

    def __init__(self, patience: int = 3, constant_steps: int = 6) -> None:
        self.patience = patience
        self.constant_steps = constant_steps
        self.reset()

    def reset(self) -> None:
        self._runs: dict[str, int] = {}
        self._fired: set[str] = set()
        self._rewards: list[float] = []
        self._lr_was_positive = False

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
            severity = "warning" if rule in ("constant_reward", "lr_logged_zero") else "critical"
            events.append(
                Event(
                    step=step,
                    metric=metric,
                    kind=rule,
                    severity=severity,
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
        if grad is not None and self._streak("grad_zero", grad == 0.0) >= self.patience:
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
        if zero_std is not None and self._streak("zero_std", zero_std >= 0.999) >= self.patience:
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
        if baseline is not None and math.isfinite(baseline) and baseline > 0.05:
            fire("advantage_baseline", "traj/advantage_group_mean_abs", baseline)
        return events
