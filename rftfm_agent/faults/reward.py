"""RF — reward faults: the reward function is wrapped, so the trainer optimises a wrong signal.

The wrapper keeps the wrapped function's name, so logged metric keys (`rewards/correct/mean`) stay the
same as in a healthy run: a detector cannot spot the fault by a renamed key.
"""

from __future__ import annotations

import functools
from typing import Any

from rftfm_agent.faults.base import FaultRuntime, Injector
from rftfm_agent.hooks import RewardFn
from rftfm_agent.testbed.tasks import final_answer


def _wrap(fn: RewardFn, runtime: FaultRuntime, perturb: Any) -> RewardFn:
    """A reward function that calls `fn`, then (from the onset) `perturb(rewards, completions, kwargs)`."""

    @functools.wraps(fn)
    def wrapped(completions: list[Any], **kwargs: Any) -> list[float]:
        rewards = list(fn(completions, **kwargs))
        if runtime.active:
            rewards, labels = perturb(rewards, completions, kwargs)
            runtime.batch_labels = labels
        return rewards

    return wrapped


class SignFlip(Injector):
    type, family = "rf_sign_flip", "RF"
    description = "reward negated for a fraction of samples (easy 70%, hard 20%)"
    key_metrics = ("reward", "heldout/accuracy")

    def rate(self) -> float:
        return 0.7 if self.easy else 0.2

    def settings(self) -> dict[str, Any]:
        return {"rate": self.rate()}

    def wrap_reward(self, fn: RewardFn) -> RewardFn:
        def perturb(rewards: list[float], completions: Any, kwargs: Any) -> tuple[list[float], list[bool]]:
            flips = [self.runtime.rng.random() < self.rate() for _ in rewards]
            return [-r if f else r for r, f in zip(rewards, flips, strict=True)], flips

        return _wrap(fn, self.runtime, perturb)


class Noise(Injector):
    type, family = "rf_noise", "RF"
    description = "the verifier's verdict flipped at random (easy 50%: pure noise, hard 15%)"
    key_metrics = ("traj/reward_mismatch_frac", "reward_std", "heldout/accuracy")

    def rate(self) -> float:
        return 0.5 if self.easy else 0.15

    def settings(self) -> dict[str, Any]:
        return {"rate": self.rate()}

    def wrap_reward(self, fn: RewardFn) -> RewardFn:
        def perturb(rewards: list[float], completions: Any, kwargs: Any) -> tuple[list[float], list[bool]]:
            flips = [self.runtime.rng.random() < self.rate() for _ in rewards]
            return [1.0 - r if f else r for r, f in zip(rewards, flips, strict=True)], flips

        return _wrap(fn, self.runtime, perturb)


class Hackable(Injector):
    type, family = "rf_hackable", "RF"
    description = (
        "the verifier also pays near misses (|answer − truth| ≤ 10 easy, ≤ 2 hard): reward rises while the "
        "policy is no longer pushed to be exact"
    )
    key_metrics = ("reward", "reward_std", "heldout/accuracy")

    def tolerance(self) -> int:
        return 10 if self.easy else 2

    def settings(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance(), "shortcut": "numeric near miss paid as correct"}

    def wrap_reward(self, fn: RewardFn) -> RewardFn:
        def perturb(rewards: list[float], completions: Any, kwargs: Any) -> tuple[list[float], list[bool]]:
            answers = kwargs["answer"]
            texts = [c if isinstance(c, str) else str(c) for c in completions]
            paid = [_near_miss(t, a, self.tolerance()) for t, a in zip(texts, answers, strict=True)]
            out = [max(r, 1.0) if p else r for r, p in zip(rewards, paid, strict=True)]
            return out, [p and r < 1.0 for r, p in zip(rewards, paid, strict=True)]

        return _wrap(fn, self.runtime, perturb)


def _near_miss(completion: str, answer: str, tolerance: int) -> bool:
    """The completion's answer is a number within `tolerance` of the truth (but not the truth itself)."""
    got = final_answer(completion)
    if not got.lstrip("-").isdigit() or got == answer:
        return False
    return abs(int(got) - int(answer)) <= tolerance


class Sparse(Injector):
    type, family = "rf_sparse", "RF"
    description = "reward withheld (zeroed) for a fraction of groups (easy 80%, hard 30%)"
    key_metrics = ("reward", "frac_reward_zero_std")

    def rate(self) -> float:
        return 0.8 if self.easy else 0.3

    def settings(self) -> dict[str, Any]:
        return {"rate": self.rate()}

    def wrap_reward(self, fn: RewardFn) -> RewardFn:
        def perturb(rewards: list[float], completions: Any, kwargs: Any) -> tuple[list[float], list[bool]]:
            g = self.runtime.num_generations
            groups = -(-len(rewards) // g)
            dropped = [self.runtime.rng.random() < self.rate() for _ in range(groups)]
            labels = [dropped[i // g] for i in range(len(rewards))]
            return [0.0 if d else r for r, d in zip(rewards, labels, strict=True)], labels

        return _wrap(fn, self.runtime, perturb)
