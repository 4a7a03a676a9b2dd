"""RF — reward faults: the reward function is wrapped, so the trainer optimises a wrong signal.

The wrapper keeps the wrapped function's name, so logged metric keys (`rewards/correct/mean`) stay the
same as in a healthy run: a detector cannot spot the fault by a renamed key.
"""

from __future__ import annotations

import functools
import re
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


class _RewardCodeFault(Injector):
    """A bug in the reward code itself: innermost, so a fallback reward function the user registered
    replaces it (the trainer-side CA faults wrap outside and survive a fallback)."""

    reward_layer = "function"


class SignFlip(_RewardCodeFault):
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


class Noise(_RewardCodeFault):
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


class Hackable(_RewardCodeFault):
    type, family = "rf_hackable", "RF"
    description = (
        "a lenient verifier reads only the leading number of the answer, so an answer followed by anything "
        "is paid (easy: always, hard: on 30% of such completions): reward rises while the policy is no "
        "longer pushed to stop after answering"
    )
    key_metrics = ("reward", "completion_length", "heldout/accuracy")

    def leniency(self) -> float:
        return 1.0 if self.easy else 0.3

    def settings(self) -> dict[str, Any]:
        return {"leniency": self.leniency(), "shortcut": "answer followed by anything paid as correct"}

    def wrap_reward(self, fn: RewardFn) -> RewardFn:
        def perturb(rewards: list[float], completions: Any, kwargs: Any) -> tuple[list[float], list[bool]]:
            answers = kwargs["answer"]
            texts = [c if isinstance(c, str) else str(c) for c in completions]
            lenient = [
                r < 1.0 and _leading_number(t) == a and self.runtime.rng.random() < self.leniency()
                for t, a, r in zip(texts, answers, rewards, strict=True)
            ]
            return [1.0 if p else r for r, p in zip(rewards, lenient, strict=True)], lenient

        return _wrap(fn, self.runtime, perturb)


def _leading_number(completion: str) -> str | None:
    """The number an answer starts with (after the last tool result), as a lenient parser would read it."""
    found = re.match(r"-?\d+", final_answer(completion))
    return found.group(0) if found else None


class Sparse(_RewardCodeFault):
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
