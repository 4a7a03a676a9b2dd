"""The learning rate a run's configuration says it should log at each step.

A learning rate far from its configured schedule is a fault no statistic of the run itself can see when it
starts with the run: a rate ten times too low from step 1 is steady, smooth and in no way odd to a
detector that only reads the logged values. The configuration can see it. Real causes: a DeepSpeed or
optimizer config whose own `lr` wins over the trainer's; a resume that restores the scheduler (and its rate)
from the checkpoint while the command line asked for another rate; a callback or wrapper that sets the
optimizer's rate; a scheduler rebuilt with the wrong base.

`LrSchedule.from_config` reads a run manifest's config (the keys `telemetry.run_config` records from TRL's
`GRPOConfig`/`TrainingArguments`) and `factor(step)` reproduces transformers' schedules
(`transformers.optimization`, 5.x; a test compares them with the library's own schedulers). The rate logged
at optimizer step s is the base rate × the schedule's factor at s − 1 (transformers 5 logs the rate the step
used) or at s (4.x read `get_last_lr()` after the scheduler stepped); `bounds` allows either, and s + 1.

Pure Python on purpose: detection answers in a chat in well under a second and must not import torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Shapes reproduced exactly (with transformers' default scheduler arguments). The `CAPPED` ones — a plateau
# scheduler, WSD or min-lr cosine (which need `lr_scheduler_kwargs`) — are judged only where every one of
# them is: never above the configured base rate. Any other (greedy, which may raise the rate; a name
# transformers does not know) is not judged at all.
EXACT = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
)
CAPPED = ("reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay")
POLY_LR_END = 1e-7  # get_polynomial_decay_schedule_with_warmup's default lr_end (power 1.0)
INVERSE_SQRT_TIMESCALE = 10_000  # get_inverse_sqrt_schedule's timescale when there is no warm-up


@dataclass(frozen=True, kw_only=True)
class LrSchedule:
    """A run's configured learning-rate schedule: base rate, transformers scheduler type, warm-up and total
    optimizer steps (None where the config does not say)."""

    learning_rate: float
    scheduler: str
    warmup_steps: int | None
    total_steps: int | None
    exact: bool  # False: only "never above the base rate" can be judged

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> LrSchedule | None:
        """The schedule a manifest's config describes; None when it names no positive learning rate or a
        scheduler whose rate may legitimately exceed its base (greedy)."""
        if not config:
            return None
        base = _number(config.get("learning_rate"))
        if base is None or base <= 0:
            return None
        kind = config.get("lr_scheduler_type") or "linear"  # the Trainer's default
        scheduler = str(getattr(kind, "value", kind))  # transformers' SchedulerType is a str enum
        if scheduler not in EXACT and scheduler not in CAPPED:
            return None
        total = _number(config.get("total_steps"))
        if total is None or total <= 0:
            total = _number(config.get("max_steps"))
        total_steps = int(total) if total is not None and total > 0 else None
        warmup_steps = _warmup_steps(config, total_steps)
        exact = (
            scheduler in EXACT
            and not config.get("lr_scheduler_kwargs")  # num_cycles, lr_end, power … change the shape
            and warmup_steps is not None
            and (total_steps is not None or scheduler in ("constant", "constant_with_warmup", "inverse_sqrt"))
        )
        return cls(
            learning_rate=base,
            scheduler=scheduler,
            warmup_steps=warmup_steps,
            total_steps=total_steps,
            exact=exact,
        )

    def factor(self, step: int) -> float | None:
        """The schedule's multiplier of the base rate after `step` optimizer steps (None if not exact)."""
        if not self.exact:
            return None
        w = self.warmup_steps or 0
        t = self.total_steps or 0
        s = max(step, 0)
        if self.scheduler == "constant":
            return 1.0
        if s < w:
            return s / max(1, w)
        if self.scheduler == "constant_with_warmup":
            return 1.0
        if self.scheduler == "inverse_sqrt":
            timescale = w or INVERSE_SQRT_TIMESCALE
            return 1.0 / math.sqrt((s + timescale - w) / timescale)
        progress = (s - w) / max(1, t - w)
        if self.scheduler == "linear":
            return max(0.0, (t - s) / max(1, t - w))
        if self.scheduler == "cosine":
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        if self.scheduler == "cosine_with_restarts":
            return 0.0 if progress >= 1.0 else max(0.0, 0.5 * (1.0 + math.cos(math.pi * (progress % 1.0))))
        # polynomial, power 1
        end = POLY_LR_END / self.learning_rate
        if s > t:
            return end
        return (1.0 - end) * (1.0 - (s - w) / max(1, t - w)) + end

    def bounds(self, step: int) -> tuple[float | None, float]:
        """The range the logged rate at `step` may take: the schedule's rate one step either side (loggers
        differ on whether the step's rate is logged before or after the scheduler steps). The lower bound is
        None where only the cap can be judged."""
        factors = [self.factor(s) for s in (step - 1, step, step + 1)]
        if any(f is None for f in factors):
            return None, self.learning_rate
        known = [f for f in factors if f is not None]
        return self.learning_rate * min(known), self.learning_rate * max(known)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _warmup_steps(config: Mapping[str, Any], total_steps: int | None) -> int | None:
    """transformers' `TrainingArguments.get_warmup_steps`: `warmup_steps` ≥ 1 is a count, a value under 1 a
    share of the total (4.x's `warmup_ratio` is one too, used when `warmup_steps` is 0)."""
    steps = _number(config.get("warmup_steps")) or 0.0
    ratio = _number(config.get("warmup_ratio")) or 0.0
    if steps >= 1:
        return int(steps)
    share = steps if steps > 0 else ratio
    if share <= 0:
        return 0
    return math.ceil(total_steps * share) if total_steps is not None else None


__all__ = ["CAPPED", "EXACT", "LrSchedule"]
