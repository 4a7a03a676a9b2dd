"""Remediation actions: JSON round trip, the batch mechanisms on tensors, and each action's effect on a
healthy testbed run (a generic mechanism, not a switch for one fault injector)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback

from rftfm_agent.hooks import TrainerHook
from rftfm_agent.remediate.actions import (
    ACTION_KINDS,
    ActionHook,
    AdvantageGuard,
    FallbackReward,
    GradientGuard,
    ResetOptimizer,
    SetCompletionLength,
    SetKLCoefficient,
    SetLearningRate,
    SetSampling,
    SkipUpdates,
    ToolRetry,
    TrajectoryFilter,
    guard_of,
    parse_action,
)
from rftfm_agent.remediate.guards import broken_groups, group_advantages, mask_rows, repair_advantages

EVERY_ACTION = [
    SetLearningRate(value=1e-4),
    SetKLCoefficient(beta=0.1),
    SetSampling(temperature=0.7, top_p=0.9, clear_token_bias=True),
    SetCompletionLength(max_completion_length=6, mask_truncated=True),
    GradientGuard(max_grad_norm=0.5),
    SkipUpdates(steps=[2]),
    ResetOptimizer(warmup_steps=3),
    AdvantageGuard(),
    TrajectoryFilter(tool_errors=True, empty=True, degenerate=True, zero_variance_groups=True),
    ToolRetry(retries=2, backoff_s=0.0),
    FallbackReward(name="strict"),
]


def test_every_action_round_trips_through_json_and_says_what_it_changes() -> None:
    assert {a.kind for a in EVERY_ACTION} | {"escalate", "observe"} == set(ACTION_KINDS)
    for action in EVERY_ACTION:
        assert parse_action(action.model_dump_json()) == action
        assert parse_action(action.model_dump()) == action
        assert action.summary()
    assert SetLearningRate(value=1e-4).changes() == {"learning_rate": 1e-4}
    assert FallbackReward(name="x").category == "reward" and SkipUpdates(steps=[1]).category == "data"
    with pytest.raises(ValueError):
        parse_action({"kind": "delete_checkpoints"})


def test_a_fallback_must_be_registered() -> None:
    with pytest.raises(ValueError, match="no fallback reward named 'strict'"):
        ActionHook([FallbackReward(name="strict")], {})


def test_healthy_advantages_are_left_alone_broken_groups_recomputed() -> None:
    g = 4
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    healthy = group_advantages(rewards, g, scale=True)
    assert not broken_groups(healthy, rewards, g, 1e-3, group_scaled=True).any()

    class Trainer:
        scale_rewards = "group"

    assert torch.equal(repair_advantages(healthy, rewards, g, 1e-3, Trainer()), healthy)
    broken = healthy.clone()
    broken[:4] = -broken[:4]  # a flipped group: ordered against its rewards
    broken[4:8] = broken[4:8] + 3.0  # a shifted baseline: no longer sums to zero
    assert broken_groups(broken, rewards, g, 1e-3, group_scaled=True).tolist() == [True, True, False]
    assert torch.allclose(repair_advantages(broken, rewards, g, 1e-3, Trainer()), healthy)


def test_a_baseline_over_half_groups_is_caught_and_unscored_rows_are_not_read_as_zero() -> None:
    """With 0/1 rewards, halves of a group normalised apart sum to zero and keep the rewards' order, but give
    one reward two advantages (the testbed's `ca_baseline` hard, whose guard was undone, 2026-12-04)."""
    g = 8
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    healthy = group_advantages(rewards, g, scale=True)
    halves = torch.cat([group_advantages(rewards[i : i + 4], 4, scale=True) for i in range(0, 16, 4)])
    for group in range(2):  # GRPO's first invariants hold: each group sums to 0, the order is kept
        a, r = halves[group * g : (group + 1) * g], rewards[group * g : (group + 1) * g]
        assert abs(float(a.sum())) < 1e-5 and bool(a[r == 1].min() > a[r == 0].max())
    # One reward, two advantages (the first group: 1 gets 0.5 and 1.5) …
    assert broken_groups(halves, rewards, g, 1e-3, group_scaled=False).tolist() == [True, False]
    # … and halves alike (1, 0, 1, 0 | 1, 0, 1, 0): each reward keeps one advantage, divided by the halves'
    # std, a spread of 0.93 where GRPO's division by the group's std gives 1
    assert broken_groups(halves, rewards, g, 1e-3, group_scaled=True).tolist() == [True, True]

    class Trainer:
        scale_rewards = "group"

    assert torch.allclose(repair_advantages(halves, rewards, g, 1e-3, Trainer()), healthy)
    assert not broken_groups(healthy, rewards, g, 1e-3, group_scaled=True).any()

    # An unscored row (every reward function returned None): TRL leaves it out of the baseline and gives it
    # advantage 0. Read as a reward of 0, it was a second advantage for the reward 0 of its group.
    unscored = rewards.clone()
    unscored[0] = torch.nan
    trl = group_advantages(unscored, g, scale=True)
    assert trl[0] == 0 and torch.isfinite(trl).all()
    assert not broken_groups(trl, unscored, g, 1e-3, group_scaled=True).any()

    class PerFunction:  # TRL's normalize_then_sum: not the summed reward's order and ties, left alone
        scale_rewards = "group"
        multi_objective_aggregation = "normalize_then_sum"

    assert torch.equal(repair_advantages(halves, rewards, g, 1e-3, PerFunction()), halves)


def test_masking_takes_rows_out_of_the_loss() -> None:
    output = {"completion_mask": torch.ones(4, 3), "advantages": torch.tensor([1.0, -1.0, 0.5, -0.5])}
    mask_rows(output, torch.tensor([False, True, False, True]))
    assert output["completion_mask"].sum(dim=1).tolist() == [3.0, 0.0, 3.0, 0.0]
    assert output["advantages"].tolist() == [1.0, 0.0, 0.5, 0.0]


class _Probe(TrainerCallback):
    """Reads what the trainer really does at each step: its learning rate, β, sampler, clipping, weights."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.steps: list[dict[str, Any]] = []
        self.lr: float | None = None

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        optimizer = getattr(self.trainer.optimizer, "optimizer", self.trainer.optimizer)
        self.lr = optimizer.param_groups[0]["lr"]  # what the update used (before the scheduler steps)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        t = self.trainer
        gen = t.generation_config if hasattr(t, "generation_config") else None
        self.steps.append(
            {
                "lr": self.lr,
                "beta": t.beta,
                "temperature": getattr(gen, "temperature", getattr(t, "temperature", None)),
                "top_p": getattr(gen, "top_p", getattr(t, "top_p", None)),
                "max_new_tokens": getattr(gen, "max_new_tokens", None),
                "max_grad_norm": t.args.max_grad_norm,
                "weights": sum(float(p.detach().double().sum()) for p in t.model.parameters()),
            }
        )


def _train(tmp_path: Path, actions: list[Any], task: str = "arith_a", steps: int = 3) -> tuple[Any, _Probe]:
    from rftfm_agent.telemetry.store import Store
    from rftfm_agent.testbed.runner import RunSpec, build, correct

    spec = RunSpec(name="probe", task=task, steps=steps, batch_size=16, eval_every=100, warmup_steps=0)
    calls: list[int] = []

    def strict(*args: Any, **kwargs: Any) -> list[float]:
        scores = correct(*args, **kwargs)
        calls.append(len(scores))
        return scores

    hook = ActionHook(actions, {"strict": strict})
    trainer, recorder, _ = build(spec, Store(tmp_path / "store"), tmp_path / "work", hooks=[hook])
    probe = _Probe(trainer)
    trainer.add_callback(probe)
    trainer.train()
    recorder.flush(wait=True)
    trainer._strict_calls = calls
    return trainer, probe


@pytest.mark.slow
def test_knob_actions_hold_from_the_first_step_on_a_healthy_run(tmp_path: Path) -> None:
    actions = [
        SetLearningRate(value=1e-4),
        SetKLCoefficient(beta=0.1),
        SetSampling(temperature=0.7, top_p=0.9),
        SetCompletionLength(max_completion_length=6, mask_truncated=True),
        GradientGuard(max_grad_norm=0.5, spike_factor=None),
        SkipUpdates(steps=[2]),
        AdvantageGuard(),
        TrajectoryFilter(empty=True, degenerate=True, zero_variance_groups=True),
        FallbackReward(name="strict"),
    ]
    trainer, probe = _train(tmp_path, actions)
    assert [s["lr"] for s in probe.steps] == pytest.approx([1e-4] * 3)
    assert {s["beta"] for s in probe.steps} == {0.1}
    assert {(s["temperature"], s["top_p"], s["max_new_tokens"]) for s in probe.steps} == {(0.7, 0.9, 6)}
    assert {s["max_grad_norm"] for s in probe.steps} == {0.5}
    guard = guard_of(trainer)
    assert guard is not None and guard.skipped == [2]  # only the scheduled step: a healthy run never spikes
    weights = [s["weights"] for s in probe.steps]
    assert weights[1] == weights[0] and weights[2] != weights[1]  # step 2 made no update
    assert sum(trainer._rftfm_advantage_repairs) == 0  # healthy advantages are left alone
    assert len(trainer._strict_calls) == 3  # the registered fallback scored every batch


@pytest.mark.slow
def test_optimizer_reset_warms_up_and_tool_retry_leaves_a_healthy_tool_run_training(tmp_path: Path) -> None:
    trainer, probe = _train(tmp_path, [ResetOptimizer(warmup_steps=3), ToolRetry(retries=2)], task="tool")
    lrs = [s["lr"] for s in probe.steps]
    configured = trainer.args.learning_rate
    assert lrs == pytest.approx([configured * k / 4 for k in (1, 2, 3)])
    assert all(math.isfinite(s["weights"]) for s in probe.steps)


class _FlatRate(TrainerCallback):
    def __init__(self, trainer: Any, lr: float) -> None:
        self.trainer, self.lr = trainer, lr

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        from rftfm_agent.knobs import set_learning_rate

        set_learning_rate(self.trainer, self.lr)


class _FlatRateEveryStep(TrainerHook):
    """A bug that sets the optimizer's rate flat at every step's start (installed before the fix's pin)."""

    name = "bug"

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def install(self, trainer: Any, run: Any) -> None:
        trainer.add_callback(_FlatRate(trainer, self.lr))


@pytest.mark.slow
def test_a_restored_learning_rate_follows_the_warm_up_a_bug_flattened(tmp_path: Path) -> None:
    """The fix's rate × the schedule's own factor, not one read back from the rate the bug left (that
    reads 1 in the middle of the warm-up: the restored run skipped its warm-up and logged a flat rate)."""
    from rftfm_agent.telemetry.store import Store
    from rftfm_agent.testbed.runner import RunSpec, build

    spec = RunSpec(name="warm", task="arith_a", steps=4, batch_size=16, eval_every=100, warmup_steps=4)
    hooks = [
        _FlatRateEveryStep(100 * spec.learning_rate),
        ActionHook([SetLearningRate(value=spec.learning_rate)]),
    ]
    store = Store(tmp_path / "store")
    trainer, recorder, _ = build(spec, store, tmp_path / "work", hooks=hooks)
    probe = _Probe(trainer)
    trainer.add_callback(probe)
    trainer.train()
    recorder.flush(wait=True)
    expected = [spec.learning_rate * k / 4 for k in range(4)]
    assert [s["lr"] for s in probe.steps] == pytest.approx(expected)
    assert store.steps(recorder.run_id)["learning_rate"].tolist() == pytest.approx(expected)


def test_tool_retry_sets_the_environments_policy_which_retries_a_failed_call() -> None:
    from rftfm_agent.hooks import RunContext
    from rftfm_agent.testbed.environment import call_with_retry

    run = RunContext(task="tool", seed=0, num_generations=4)
    ToolRetry(retries=2).install(object(), run)
    assert run.tool_policy.retries == 2
    replies = iter([("error", True), ("error", True), ("4", False)])
    assert call_with_retry(lambda _e: next(replies), "2+2", run.tool_policy) == ("4", False)
    replies = iter([("error", True)] * 3)
    assert call_with_retry(lambda _e: next(replies), "2+2", run.tool_policy) == ("error", True)


def test_the_spike_guard_keeps_skipping_when_half_the_steps_spike_and_follows_a_new_level() -> None:
    """The `od_grad` fault makes half the steps' gradients random and 100× the true norm. The guard's
    reference was the median of every recent norm, spikes included: it filled with spikes and let about
    half of them through (10 of 21 here), after the fix had been "verified". Now the reference is the lower
    quartile of accepted updates; a norm that stays 20× higher for `SPIKE_HISTORY` steps is a new level."""
    import random

    from rftfm_agent.remediate.guards import SPIKE_HISTORY, UpdateGuard

    random.seed(0)
    guard = UpdateGuard(trainer=None, skip_nonfinite=True, spike_factor=10.0)
    through, true_skipped, spikes = 0, 0, 0
    for step in range(1, 61):
        spike = random.random() < 0.5
        guard.record((20.0 if spike else 0.2) * random.uniform(0.8, 1.2))
        skipped = guard.should_skip(step) is not None
        spikes += spike
        through += spike and not skipped
        true_skipped += skipped and not spike
    assert spikes == 21 and through <= 2 and true_skipped == 0
    level = UpdateGuard(trainer=None, skip_nonfinite=True, spike_factor=10.0)
    skipped_steps = []
    for step in range(1, 41):
        level.record(0.2 if step < 10 else 4.0)
        if level.should_skip(step) is not None:
            skipped_steps.append(step)
    assert skipped_steps == list(range(10, 10 + SPIKE_HISTORY - 1))


def test_masking_actions_absorb_the_advantage_statistics_they_move() -> None:
    """A masked sample gets no advantage, so its group's advantages no longer average 0: a kept
    mask_truncated fix raised a critical jump of traj/advantage_group_mean_abs (a new incident, diagnosed
    'unknown', escalated). Masking actions declare it; the supervisor leaves kept fixes' absorbed metrics
    out of later incidents."""
    from rftfm_agent.remediate.actions import MASKED_ADVANTAGES

    assert set(MASKED_ADVANTAGES) <= set(SetCompletionLength(mask_truncated=True).absorbs())
    assert not set(MASKED_ADVANTAGES) & set(SetCompletionLength(max_completion_length=16).absorbs())
    for masking in (
        TrajectoryFilter(tool_errors=True),
        TrajectoryFilter(empty=True),
        TrajectoryFilter(degenerate=True),
        TrajectoryFilter(zero_variance_groups=True),
    ):
        assert set(MASKED_ADVANTAGES) <= set(masking.absorbs())


def test_a_learning_rate_fix_absorbs_the_jump_it_makes() -> None:
    """Restoring a rate that was cut ×0.1 is itself a ×10 jump in the logged rate (when the checkpoint
    resumed from lies after the cut): the `lr_jump` rule fires on it, and the kept fix declares the metric,
    so the supervisor does not read its own fix as a new incident."""
    from rftfm_agent.detect.scale_free import ScaleFreeRules

    rules = ScaleFreeRules(whole_run=False)
    events = [
        e for step in range(1, 13) for e in rules.update(step, {"learning_rate": 3e-5 if step < 7 else 3e-4})
    ]
    (jump,) = [e for e in events if e.check == "lr_jump"]
    assert jump.metric in SetLearningRate(value=3e-4).absorbs()
