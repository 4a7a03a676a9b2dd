"""The mechanisms remediation actions share: a guard around the optimizer step, the batch's rewards, and
edits of the training batch (masking samples, repairing advantages).

They work on any TRL `GRPOTrainer` (1.x): the optimizer step and gradient clipping go through
`accelerate`, the batch's rewards are in `trainer._logs["rewards"]` (what TRL logs per reward function),
and the batch the loss trains on is the dict `_generate_and_score_completions` returns.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import torch

SPREAD_TOL = 0.01  # a group-scaled group's advantages have std std(r) / (std(r) + 1e-4) to float precision
# (TRL divides by the group's std + 1e-4); 0.01 leaves room for float32 and flags a baseline off by 1 %
SPIKE_HISTORY = 10  # pre-clipping gradient norms of accepted updates kept for the spike guard's reference


@dataclass
class UpdateGuard:
    """Skips optimizer updates: at chosen steps, when the gradient is not finite, or when its norm before
    clipping is a spike (more than `spike_factor` × the lower quartile of the norms of the last accepted
    updates). A skipped update leaves the weights and the optimizer's moments as they were.

    The reference holds accepted updates only, and is their lower quartile, so that spikes do not raise
    it: with every norm in the history and its median, a fault corrupting half the steps (the `od_grad`
    testbed fault: random gradients 100× the true norm) filled it with spikes and let about half of them
    through. When `SPIKE_HISTORY` updates in a row are spikes, the norm's level itself has changed: the
    guard takes it as its new reference rather than skip every update from then on."""

    trainer: Any
    skip_steps: set[int] = field(default_factory=set)
    skip_nonfinite: bool = False
    spike_factor: float | None = None
    norms: list[float] = field(default_factory=list)
    last_norm: float | None = None
    skipped: list[int] = field(default_factory=list)
    spikes_in_a_row: int = 0

    def should_skip(self, step: int) -> str | None:
        if step in self.skip_steps:
            return "scheduled"
        norm = self.last_norm
        if norm is None:
            return None
        if self.skip_nonfinite and not math.isfinite(norm):
            return "non-finite gradient"
        if not math.isfinite(norm):
            return None
        if (
            self.spike_factor
            and len(self.norms) >= 3
            and norm > self.spike_factor * sorted(self.norms)[len(self.norms) // 4]
        ):
            self.spikes_in_a_row += 1
            if self.spikes_in_a_row < SPIKE_HISTORY:
                return "gradient spike"
            self.norms = []  # a new level, not a spike: start the reference again from it
        self.spikes_in_a_row = 0
        self.norms = [*self.norms, norm][-SPIKE_HISTORY:]
        return None

    def record(self, norm: float) -> None:
        self.last_norm = norm


def update_guard(trainer: Any) -> UpdateGuard:
    """The trainer's guard, created (and wrapped around clipping and the optimizer step) on first use.

    The optimizer exists only once training starts, so the step is wrapped by a callback at train begin.
    """
    guard: UpdateGuard | None = getattr(trainer, "_rftfm_update_guard", None)
    if guard is not None:
        return guard
    guard = UpdateGuard(trainer)
    trainer._rftfm_update_guard = guard
    accelerator = trainer.accelerator
    clip = accelerator.clip_grad_norm_

    @functools.wraps(clip)
    def clip_and_record(parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> Any:
        parameters = list(parameters)
        norm = clip(parameters, max_norm, *args, **kwargs)
        guard.record(float(norm))
        return norm

    accelerator.clip_grad_norm_ = clip_and_record
    from transformers import TrainerCallback

    class _WrapStep(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
            if getattr(optimizer, "_rftfm_guarded", False):
                return
            step = optimizer.step

            @functools.wraps(step)
            def guarded_step(*args: Any, **kwargs: Any) -> Any:
                current = int(trainer.state.global_step) + 1
                if guard.last_norm is None:  # clipping is off: measure the norm here
                    grads = [
                        p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None
                    ]
                    if grads:
                        guard.record(float(torch.linalg.vector_norm(torch.stack([x.norm() for x in grads]))))
                reason = guard.should_skip(current)
                guard.last_norm = None
                if reason is not None:
                    guard.skipped.append(current)
                    return None
                return step(*args, **kwargs)

            optimizer.step = guarded_step
            optimizer._rftfm_guarded = True

    trainer.add_callback(_WrapStep())
    return guard


def batch_rewards(trainer: Any, n: int) -> torch.Tensor | None:
    """This process's `n` rewards of the newest batch (weighted sum over reward functions), or None.

    TRL gathers every process's rewards into `_logs["rewards"][name]`; this process's rows are its slice.
    """
    names = list(getattr(trainer, "reward_func_names", []) or [])
    logs = (getattr(trainer, "_logs", None) or {}).get("rewards") or {}
    columns = []
    for name in names:
        values = list(logs.get(name) or [])
        columns.append(values)
    if not columns or any(len(c) < n for c in columns):
        return None
    procs = int(getattr(trainer.accelerator, "num_processes", 1))
    index = int(getattr(trainer.accelerator, "process_index", 0))
    total = n * procs
    if any(len(c) < total for c in columns):
        total, index = n, 0
    matrix = torch.tensor([c[-total:] for c in columns], dtype=torch.float32).T  # total × functions
    matrix = matrix[index * n : (index + 1) * n]
    weights = getattr(trainer, "reward_weights", None)
    w = torch.ones(len(names)) if weights is None else torch.as_tensor(weights, dtype=torch.float32).cpu()
    rewards = torch.nan_to_num(matrix, nan=0.0) @ w
    # A row every reward function left unscored (None → NaN) has no reward: TRL leaves it out of its group's
    # baseline and gives it advantage 0. NaN here, so that no invariant reads it as a reward of 0.
    return torch.where(torch.isnan(matrix).all(dim=1), torch.nan, rewards)


def mask_rows(output: dict[str, Any], drop: torch.Tensor) -> None:
    """Leave the `drop` rows out of the loss: no loss tokens, no advantage."""
    if not bool(drop.any()):
        return
    keep = (~drop).to(output["completion_mask"].device)
    output["completion_mask"] = output["completion_mask"] * keep.unsqueeze(1).to(
        output["completion_mask"].dtype
    )
    adv = output["advantages"]
    output["advantages"] = adv * keep.to(adv.device).to(adv.dtype).view(-1, *([1] * (adv.dim() - 1)))


def group_advantages(rewards: torch.Tensor, g: int, scale: bool, batch_std: bool = False) -> torch.Tensor:
    """GRPO's advantages as TRL computes them: reward minus its group's mean, divided by the group's std
    (the batch's with `batch_std`: `scale_rewards="batch"`) + 1e-4; an unscored row (NaN) is left out of
    the mean and std and gets advantage 0."""
    grouped = rewards.view(-1, g)
    centred = grouped - torch.nanmean(grouped, dim=1, keepdim=True)
    if scale:
        std = _nanstd(rewards.view(1, -1)) if batch_std else _nanstd(grouped)
        centred = centred / (std + 1e-4)
    return torch.nan_to_num(centred.reshape(-1), nan=0.0)


def _nanstd(rows: torch.Tensor) -> torch.Tensor:
    """Each row's sample standard deviation (Bessel-corrected, as torch.std), NaNs left out; a row with
    fewer than two values has none (NaN)."""
    count = (~torch.isnan(rows)).sum(dim=1, keepdim=True)
    centred = rows - torch.nanmean(rows, dim=1, keepdim=True)
    variance = torch.nansum(centred**2, dim=1, keepdim=True) / (count - 1).clamp(min=1)
    return torch.where(count > 1, variance.sqrt(), torch.nan)


def broken_groups(
    adv: torch.Tensor,
    rewards: torch.Tensor,
    g: int,
    tol: float,
    group_scaled: bool,
) -> torch.Tensor:
    """Per group: do its advantages break GRPO's invariants (finite, summing to ~0, ordered like the
    rewards, equal for equal rewards, and, when scaled by the group's std (`group_scaled`: TRL's
    `scale_rewards="group"`), bounded by √g with the spread that division gives: std(r) / (std(r) + 1e-4))?

    Equal for equal rewards holds for every baseline taken over the group (GRPO's mean and std, RLOO's
    leave-one-out, Dr. GRPO's unscaled one), and it is what catches a baseline taken over part of the group:
    with 0/1 rewards, halves normalised apart keep the order and sum to zero, but give one reward two
    advantages (the testbed's `ca_baseline` hard, whose guard was undone on `mid`, 2026-12-04). The spread
    catches what is left of such a baseline (halves alike, so each reward keeps one advantage, but divided
    by the halves' std: a spread of 0.82 for 1.0 in groups of 4). Rows without a reward (NaN: unscored) are
    left out of the comparisons."""
    a = adv.reshape(-1, g).float().cpu()
    r = rewards.reshape(-1, g).float().cpu()
    bad = ~torch.isfinite(a).all(dim=1)
    a = torch.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    scale = a.abs().amax(dim=1).clamp(min=1.0)
    bad |= a.mean(dim=1).abs() > tol * scale * 10 + tol
    scored = ~torch.isnan(r)
    if group_scaled:
        bad |= a.abs().amax(dim=1) > math.sqrt(g) + 1e-3
        spread = _nanstd(torch.where(scored, a, torch.nan))
        reward_std = _nanstd(r)
        expected = reward_std / (reward_std + 1e-4)
        bad |= ((spread - expected).abs() > SPREAD_TOL).squeeze(1) & (scored.sum(dim=1) > 1)
    both = scored.unsqueeze(2) & scored.unsqueeze(1)
    dr = torch.nan_to_num(r.unsqueeze(2) - r.unsqueeze(1), nan=0.0)
    da = a.unsqueeze(2) - a.unsqueeze(1)
    bad |= (both & ((torch.sign(dr) * torch.sign(da)) < 0)).any(dim=2).any(dim=1)
    twins = both & (dr == 0)
    bad |= (twins & (da.abs() > tol * scale.view(-1, 1, 1))).any(dim=2).any(dim=1)
    return bad


def repair_advantages(
    adv: torch.Tensor, rewards: torch.Tensor, g: int, tol: float, trainer: Any
) -> torch.Tensor:
    """`adv` with every broken group's advantages recomputed from its rewards. Left as they are where TRL
    normalises each reward function within the group before summing (`normalize_then_sum`): the summed
    reward's order and ties, which the invariants read, are not what those advantages follow."""
    if adv.dim() != 1 or adv.shape[0] % g or rewards.shape[0] != adv.shape[0]:
        return adv
    if getattr(trainer, "multi_objective_aggregation", None) == "normalize_then_sum":
        return adv
    scale_rewards = getattr(trainer, "scale_rewards", "group")
    bad = broken_groups(adv, rewards, g, tol, group_scaled=scale_rewards in ("group", True))
    guard = getattr(trainer, "_rftfm_advantage_repairs", None)
    if guard is None:
        trainer._rftfm_advantage_repairs = guard = []
    guard.append(int(bad.sum()))
    if not bool(bad.any()):
        return adv
    scale = scale_rewards not in ("none", False, None)
    batch = scale_rewards == "batch"
    fixed = group_advantages(rewards.float(), g, scale, batch_std=batch).to(adv.device).to(adv.dtype)
    rows = bad.repeat_interleave(g).to(adv.device)
    return torch.where(rows, fixed, adv)
