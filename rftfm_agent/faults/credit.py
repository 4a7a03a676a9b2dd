"""CA — credit-assignment faults: the right rewards reach the wrong tokens.

`ca_advantage_sign` and `ca_baseline` edit the batch the loss is computed on (its `advantages`) through
`telemetry.trl_batch` (stage "edit", which runs before the recorder observes the batch), so the loss
trains on them and the recorder records them. `ca_group_misalign` wraps the reward function so each
reward lands on another completion, as a batch off-by-one or a shuffled group does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from rftfm_agent.errors import RftfmError
from rftfm_agent.faults.base import FaultRuntime, Injector
from rftfm_agent.hooks import RewardFn, RunContext
from rftfm_agent.telemetry.trl_batch import add_batch_handler


def _edit_batch(trainer: Any, runtime: FaultRuntime, change: Callable[[dict[str, Any]], None]) -> None:
    """From the onset, `change(output)` edits each training batch in place."""
    if getattr(getattr(trainer, "accelerator", None), "num_processes", 1) != 1:
        raise RftfmError("credit-assignment injectors run single-process (they edit the local batch)")

    def edit(_trainer: Any, output: dict[str, Any]) -> None:
        if runtime.active:
            change(output)

    add_batch_handler(trainer, "edit", edit, key=f"fault:{runtime.spec.type}")


class AdvantageSign(Injector):
    type, family = "ca_advantage_sign", "CA"
    description = "advantages negated for a fraction of groups (easy 70%, hard 20%)"
    key_metrics = ("traj/adv_reward_discord_frac", "reward", "heldout/accuracy")

    def rate(self) -> float:
        return 0.7 if self.easy else 0.2

    def settings(self) -> dict[str, Any]:
        return {"rate": self.rate()}

    def attach(self, trainer: Any, run: RunContext) -> None:
        runtime, g = self.runtime, run.num_generations

        def change(output: dict[str, Any]) -> None:
            adv: torch.Tensor = output["advantages"]
            groups = -(-adv.shape[0] // g)
            flip = torch.tensor([runtime.rng.random() < self.rate() for _ in range(groups)])
            rows = flip.repeat_interleave(g)[: adv.shape[0]]
            output["advantages"] = torch.where(rows.to(adv.device), -adv, adv)
            runtime.batch_labels = rows.tolist()

        _edit_batch(trainer, runtime, change)


class _RewardTap:
    """Keeps the newest batch's rewards (what the reward function returned, after any wrapper)."""

    def __init__(self) -> None:
        self.rewards: list[float] = []

    def wrap(self, fn: RewardFn) -> RewardFn:
        @functools.wraps(fn)
        def wrapped(completions: list[Any], **kwargs: Any) -> list[float]:
            rewards = list(fn(completions, **kwargs))
            self.rewards = [float("nan") if r is None else float(r) for r in rewards]
            return rewards

        return wrapped


class Baseline(Injector):
    type, family = "ca_baseline", "CA"
    description = (
        "broken group baseline: easy: the reward divided by the group std without subtracting the mean "
        "(std≈0 blow-up); hard: mean and std taken over half-groups (wrong group size)"
    )
    key_metrics = ("traj/advantage_abs_mean", "traj/advantage_group_std_mean", "loss", "grad_norm")

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.tap = _RewardTap()

    def wrap_reward(self, fn: RewardFn) -> RewardFn:
        return self.tap.wrap(fn)

    def attach(self, trainer: Any, run: RunContext) -> None:
        runtime, g = self.runtime, run.num_generations
        size = g if self.easy else max(1, g // 2)

        def change(output: dict[str, Any]) -> None:
            adv: torch.Tensor = output["advantages"]
            rewards = torch.tensor(self.tap.rewards, dtype=adv.dtype)
            if rewards.shape[0] != adv.shape[0] or rewards.shape[0] % size:
                runtime.batch_labels = [False] * adv.shape[0]  # could not apply: this batch is untouched
                return
            grouped = rewards.view(-1, size)
            std = grouped.std(dim=1, keepdim=True) if size > 1 else torch.zeros_like(grouped[:, :1])
            if self.easy:
                new = grouped / (std + 1e-4)
            else:
                new = (grouped - grouped.mean(dim=1, keepdim=True)) / (std + 1e-4)
            output["advantages"] = torch.nan_to_num(new.view(-1), nan=0.0).to(adv.device)
            runtime.batch_labels = [True] * adv.shape[0]

        _edit_batch(trainer, runtime, change)


class GroupMisalign(Injector):
    type, family = "ca_group_misalign", "CA"
    description = (
        "rewards attached to the wrong completions: easy: the whole batch off by one; hard: rotated "
        "within 30% of the groups"
    )
    key_metrics = ("traj/reward_mismatch_frac", "reward", "heldout/accuracy")

    def wrap_reward(self, fn: RewardFn) -> RewardFn:
        runtime = self.runtime

        @functools.wraps(fn)
        def wrapped(completions: list[Any], **kwargs: Any) -> list[float]:
            rewards = list(fn(completions, **kwargs))
            g = runtime.num_generations
            if not runtime.active or len(rewards) < 2:
                return rewards
            if self.easy:
                moved = rewards[-1:] + rewards[:-1]
            else:
                moved = list(rewards)
                for start in range(0, len(rewards) - g + 1, g):
                    if runtime.rng.random() < 0.3:
                        group = rewards[start : start + g]
                        moved[start : start + g] = group[-1:] + group[:-1]
            runtime.batch_labels = [a != b for a, b in zip(rewards, moved, strict=True)]
            return moved

        return wrapped
