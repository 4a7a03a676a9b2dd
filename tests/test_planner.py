"""The playbook and planner: never a blind fix, practitioners' lessons as data, every value resolvable."""

from __future__ import annotations

import pytest

from rftfm_agent.diagnose.hypothesis import Diagnosis, Hypothesis
from rftfm_agent.remediate.actions import (
    FallbackReward,
    GradientGuard,
    SetLearningRate,
    SetSampling,
    TrajectoryFilter,
)
from rftfm_agent.remediate.planner import MAX_OBSERVE_STEPS, PlanContext, candidates_for, make_plan
from rftfm_agent.remediate.playbook import PLAYBOOK, PLAYS
from rftfm_agent.remediate.symptoms import symptoms
from rftfm_agent.telemetry.schema import FAULT_TYPES

SETTINGS = {
    "learning_rate": 2e-4,
    "beta": 0.04,
    "temperature": 1.0,
    "top_p": 1.0,
    "max_completion_length": 8,
    "max_grad_norm": 1.0,
    "suppress_tokens": None,
    "sequence_bias": None,
}


def _diagnosis(kind: str, p: float = 0.8, unknown: bool = False) -> Diagnosis:
    family = FAULT_TYPES.get(kind, "unknown")
    return Diagnosis(
        run="r",
        anchor_step=5,
        mode="band",
        unknown=unknown,
        hypotheses=[Hypothesis(family=family, type=kind, probability=p)],
    )


def _context(**kw: object) -> PlanContext:
    base: dict[str, object] = {"configured": dict(SETTINGS), "current": dict(SETTINGS)}
    base.update(kw)
    return PlanContext(**base)  # type: ignore[arg-type]


def test_every_fault_type_has_a_play_and_every_candidate_a_reason_and_a_reference() -> None:
    assert set(FAULT_TYPES) <= set(PLAYBOOK)
    assert len(PLAYBOOK) == len(PLAYS)  # no play shadows another
    for play in PLAYS:
        assert play.candidates and play.candidates[-1].actions[0]["kind"] == "escalate", play.applies_to
        for template in play.candidates:
            assert template.why.strip() and template.reference.strip()


@pytest.mark.parametrize("play", PLAYS, ids=lambda p: p.applies_to)
def test_every_candidate_resolves_against_a_run_that_has_every_value(play: object) -> None:
    everything = _context(
        fallbacks=["strict"],
        uses_tools=True,
        offending_steps=[7],
        current={
            **SETTINGS,
            "learning_rate": 3e-3,
            "beta": -0.04,
            "temperature": 0.3,
            "max_completion_length": 4,
            "suppress_tokens": [2],
        },
    )
    unchanged = _context(fallbacks=["strict"], uses_tools=True, offending_steps=[7])
    resolved = candidates_for(play, everything) + candidates_for(play, unchanged)  # type: ignore[arg-type]
    wanted = {f"{play.applies_to}#{i}" for i in range(len(play.candidates))}  # type: ignore[attr-defined]
    assert {c.id for c in resolved} == wanted  # each candidate applies in one of the two runs


def test_unknown_or_unsure_diagnoses_are_observed_then_escalated_never_fixed() -> None:
    for diagnosis in (_diagnosis("od_lr", unknown=True), _diagnosis("od_lr", p=0.2)):
        young = make_plan(diagnosis, _context(observed_steps=1))
        assert young.decision == "observe" and young.first_fix() is None
        old = make_plan(diagnosis, _context(observed_steps=MAX_OBSERVE_STEPS))
        assert old.decision == "escalate" and old.first_fix() is None and old.unexplained
    # A play's own escalation names its cause (no automatic fix mends it): not an unexplained one.
    misaligned = make_plan(_diagnosis("ca_group_misalign"), _context())
    assert misaligned.decision == "escalate" and not misaligned.unexplained


def test_a_type_the_playbook_does_not_know_is_escalated_at_once() -> None:
    plan = make_plan(_diagnosis("xx_cosmic_ray"), _context())
    assert plan.decision == "escalate" and "no entry" in plan.reason


def test_reward_hacking_is_never_answered_with_a_learning_rate_change() -> None:
    for context in (
        _context(),
        _context(fallbacks=["strict"]),
        _context(current={**SETTINGS, "learning_rate": 1e-3}),
    ):
        plan = make_plan(_diagnosis("rf_hackable"), context)
        actions = [a for c in plan.candidates for a in c.actions]
        assert not any(isinstance(a, SetLearningRate) for a in actions)
    with_fallback = make_plan(_diagnosis("rf_hackable"), _context(fallbacks=["strict"]))
    assert with_fallback.first_fix() is not None
    assert with_fallback.first_fix().actions == [FallbackReward(name="strict")]  # type: ignore[union-attr]
    without = make_plan(_diagnosis("rf_hackable"), _context())
    assert without.decision == "escalate" and "verifier" in without.reason


def test_a_changed_knob_is_restored_an_unchanged_one_adjusted() -> None:
    changed = make_plan(_diagnosis("od_lr"), _context(current={**SETTINGS, "learning_rate": 4e-3}))
    assert changed.first_fix().actions == [SetLearningRate(value=2e-4)]  # type: ignore[union-attr]
    unchanged = make_plan(_diagnosis("od_lr"), _context())
    assert unchanged.first_fix().actions == [SetLearningRate(value=1e-4)]  # type: ignore[union-attr]
    tried = make_plan(_diagnosis("od_lr"), _context(exclude=["od_lr#1"]))
    assert tried.decision == "escalate"  # the only fix was tried: nothing blind after it


def test_an_incident_diagnosed_healthy_is_inconclusive_and_a_changed_setting_is_restored_first() -> None:
    """An optimizer rebuilt at 10× the learning rate ran KL to 1,000× its start; the fault types read the
    run as healthy (p=0.44) and the planner escalated it as a type without a play, stopping a run whose
    fix was in the log: the learning rate differed from the configured one."""
    healthy = _diagnosis("healthy", p=0.44)
    young = make_plan(healthy, _context(observed_steps=1))
    assert young.decision == "observe" and "healthy" in young.reason
    assert make_plan(healthy, _context(observed_steps=MAX_OBSERVE_STEPS)).decision == "escalate"
    lr_changed = _context(current={**SETTINGS, "learning_rate": 2e-3})
    for diagnosis in (healthy, _diagnosis("od_kl", p=0.2), _diagnosis("od_lr", unknown=True)):
        plan = make_plan(diagnosis, lr_changed)
        assert plan.decision == "fix" and "configured" in plan.reason, plan
        assert plan.first_fix().actions == [SetLearningRate(value=2e-4)]  # type: ignore[union-attr]
    tried = _context(current={**SETTINGS, "learning_rate": 2e-3}, exclude=["symptom:settings_changed#0"])
    assert make_plan(healthy, tried).decision == "observe"  # restored once: no blind second guess


def _rows(n: int, **columns: list[float]) -> list[dict[str, float]]:
    return [{"step": float(i + 1), **{k: v[i] for k, v in columns.items()}} for i in range(n)]


def test_zero_variance_groups_have_opposite_fixes_for_easy_and_hard_data() -> None:
    easy = _rows(
        6, reward=[0.2, 0.4, 0.6, 0.9, 1.0, 1.0], frac_reward_zero_std=[0.2, 0.3, 0.5, 0.8, 0.9, 0.9]
    )
    hard = _rows(
        6, reward=[0.4, 0.3, 0.1, 0.0, 0.0, 0.0], frac_reward_zero_std=[0.2, 0.3, 0.5, 0.8, 0.9, 0.9]
    )
    assert symptoms(easy) == ["no_signal_too_easy"] and symptoms(hard) == ["no_signal_too_hard"]
    unsure = _diagnosis("od_lr", p=0.1)
    easy_plan = make_plan(unsure, _context(symptoms=symptoms(easy)))
    assert easy_plan.first_fix().actions == [TrajectoryFilter(zero_variance_groups=True)]  # type: ignore[union-attr]
    hard_plan = make_plan(unsure, _context(symptoms=symptoms(hard)))  # nothing to filter: no blind fix
    assert hard_plan.decision == "observe" and "too hard" in hard_plan.reason
    late = make_plan(unsure, _context(symptoms=symptoms(hard), observed_steps=MAX_OBSERVE_STEPS))
    assert late.decision == "escalate" and "too hard" in late.reason
    learning = _rows(6, reward=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], frac_reward_zero_std=[0.3] * 6)
    assert symptoms(learning) == []


def test_entropy_collapse_with_kl_explosion_fixes_entropy_first() -> None:
    rows = _rows(6, entropy=[2.0, 2.0, 1.9, 0.3, 0.1, 0.1], kl=[0.01, 0.01, 0.02, 1.0, 2.5, 3.0])
    assert symptoms(rows) == ["entropy_collapse_kl_explosion"]
    learning = _rows(6, entropy=[2.0, 2.0, 1.9, 0.8, 0.6, 0.4], kl=[0.01, 0.01, 0.02, 0.3, 0.5, 1.1])
    assert symptoms(learning) == []  # healthy runs shrink entropy and grow KL as they learn

    class Band:  # a healthy band: entropy ~2, KL ~0.02 at every step
        def z(self, metric: str, step: int, value: float) -> float:
            return (value - {"entropy": 2.0, "kl": 0.02}[metric]) / 0.1

    assert symptoms(learning, Band()) == ["entropy_collapse_kl_explosion"]
    current = {**SETTINGS, "beta": 0.0, "temperature": 0.3}  # the sampler was cooled mid-run
    plan = make_plan(_diagnosis("od_kl"), _context(current=current, symptoms=symptoms(rows)))
    kinds = [c.actions[0].kind for c in plan.candidates if not c.escalates]
    assert kinds[0] == "set_sampling" and "set_kl_coefficient" in kinds[1:]
    assert plan.first_fix().actions == [SetSampling(temperature=1.0)]  # type: ignore[union-attr]
    unchanged = make_plan(_diagnosis("od_kl"), _context(symptoms=symptoms(rows)))
    assert unchanged.first_fix().actions[0].kind == "set_kl_coefficient"  # type: ignore[union-attr]
    alone = _rows(6, entropy=[2.0] * 6, kl=[0.01, 0.01, 0.02, 1.0, 2.5, 3.0])
    assert symptoms(alone) == [] and symptoms(alone, Band()) == []


def test_a_reward_on_a_0_1_scale_is_judged_easy_or_hard_by_its_level_not_its_range() -> None:
    """All-equal groups at a 0.05 reward that happens to be its run's best are failed groups (was "too
    easy": filter them), at a 0.8 reward that is its run's lowest solved ones (was "too hard"). A reward off
    the [0, 1] scale is still read by its place in the run's own range."""
    frac = [0.5, 0.6, 0.7, 0.8, 0.9, 0.9]
    low_at_best = _rows(6, reward=[0.03, 0.03, 0.04, 0.04, 0.05, 0.05], frac_reward_zero_std=frac)
    high_at_low = _rows(6, reward=[0.85, 0.84, 0.83, 0.81, 0.80, 0.80], frac_reward_zero_std=frac)
    assert symptoms(low_at_best) == ["no_signal_too_hard"]
    assert symptoms(high_at_low) == ["no_signal_too_easy"]
    points = _rows(6, reward=[-3.0, -2.0, 0.0, 2.0, 3.0, 3.0], frac_reward_zero_std=frac)
    assert symptoms(points) == ["no_signal_too_easy"]


def test_repeated_gradient_spikes_get_the_gradient_guard_when_the_diagnosis_is_unsure() -> None:
    """`mid-s7-0055` (corrupted gradients from step 1, 2026-12-04): the diagnosis stayed under the bar (a
    KL fault p=0.32, then a tool fault p=0.35) and the run was escalated with nothing tried, ending at
    held-out 0.068. Its logged gradient norms: one spike by step 5 (a hard batch, not yet a pattern), two
    in the newest six rows by step 9."""
    logged = [0.406, 0.550, 35.5, 0.301, 0.434, 0.414, 0.336, 38.9, 39.4]
    assert symptoms(_rows(5, grad_norm=logged[:5])) == []
    spiking = symptoms(_rows(9, grad_norm=logged))
    assert spiking == ["gradient_spikes"]
    unsure = _diagnosis("od_kl", p=0.32)
    plan = make_plan(unsure, _context(symptoms=spiking))
    assert plan.decision == "fix" and "gradient_spikes" in plan.reason
    guard = plan.first_fix().actions  # type: ignore[union-attr]
    assert guard == [GradientGuard(max_grad_norm=1.0, skip_nonfinite=True, spike_factor=10)]
    sure = make_plan(_diagnosis("od_kl", p=0.8), _context(symptoms=spiking))
    assert sure.first_fix().actions[0].kind == "set_kl_coefficient"  # type: ignore[union-attr]
    # Healthy shapes stay quiet: norms that rise as a run learns (14× at most on `mid`'s 48 healthy runs),
    # isolated spikes far apart, a run whose gradient is exactly 0 (no signal), NaN (the non-finite rule's).
    rising = [0.3, 0.4, 0.5, 0.8, 1.2, 2.0, 3.5, 4.2, 4.0]
    assert symptoms(_rows(9, grad_norm=rising)) == []
    isolated = [0.5, 0.6, 40.0, 0.5, 0.6, 0.5, 0.4, 0.6, 45.0]
    assert symptoms(_rows(9, grad_norm=isolated)) == []
    assert symptoms(_rows(9, grad_norm=[0.0] * 7 + [1.0, 1.0])) == []
    assert symptoms(_rows(9, grad_norm=[0.4] * 7 + [float("nan")] * 2)) == []


def test_a_completion_paid_two_ways_gets_the_fallback_verifier_when_the_diagnosis_is_unsure() -> None:
    """`mid-s7-0090` (a verifier that pays 30 % of answers followed by anything, from step 1, 2026-12-05):
    identical completions of a group got different rewards at steps 10, 15 and 20 (0.083 of the groups),
    the diagnosis stayed under the bar (a credit-assignment fault, p=0.23) and the escalation stopped the
    run 0.14 below doing nothing. Its shares by step 12, when it was diagnosed: one such row in six."""
    logged = [0.0] * 9 + [1 / 12, 0.0, 0.0]
    rows = _rows(12, **{"traj/reward_mismatch_frac": logged})
    assert symptoms(rows) == ["reward_inconsistent"]
    assert symptoms(rows[:9]) == []  # never paid two ways: quiet
    assert symptoms(_rows(12, **{"traj/reward_mismatch_frac": [1 / 12] + [0.0] * 11})) == []  # long ago
    unsure = _diagnosis("ca_baseline", p=0.23)
    plan = make_plan(unsure, _context(symptoms=symptoms(rows), fallbacks=["strict"]))
    assert plan.decision == "fix" and "reward_inconsistent" in plan.reason
    assert plan.first_fix().actions == [FallbackReward(name="strict")]  # type: ignore[union-attr]
    # No fallback registered: nothing to try, so the usual observe-then-escalate, the symptom named.
    bare = make_plan(unsure, _context(symptoms=symptoms(rows), observed_steps=MAX_OBSERVE_STEPS))
    assert bare.decision == "escalate" and "paid differently" in bare.reason
    # A confident misalignment keeps its own play: the fallback verifier first (a noisy verifier reads as
    # misaligned batching and is cured by it: mini seed 61's rf_noise runs, escalated before), then the
    # escalation (misaligned batching survives the swap). No fallback registered: escalated at once.
    misaligned = _diagnosis("ca_group_misalign", p=0.8)
    sure = make_plan(misaligned, _context(symptoms=symptoms(rows), fallbacks=["strict"]))
    assert sure.decision == "fix" and sure.first_fix().actions == [FallbackReward(name="strict")]  # type: ignore[union-attr]
    assert sure.candidates[-1].escalates
    assert make_plan(misaligned, _context(symptoms=symptoms(rows))).decision == "escalate"

    class Band:  # a task judged by a sampled LLM judge: healthy runs pay one completion two ways ~10 %
        def z(self, metric: str, step: int, value: float) -> float:
            return (value - 0.1) / 0.05

    assert symptoms(rows, Band()) == []
    assert symptoms(_rows(3, **{"traj/reward_mismatch_frac": [0.1, 0.1, 0.5]}), Band()) == [
        "reward_inconsistent"
    ]


def test_the_agent_eval_judges_a_fix_by_its_actions_not_by_the_play_that_proposed_it() -> None:
    """A symptom's play can propose exactly a fault type's fix (the gradient guard, a restored rate): it
    fits that type. The same kind of action with other literal settings does not."""
    from rftfm_agent.evals.eval_agent import _same_fix

    spiking = make_plan(_diagnosis("od_kl", p=0.32), _context(symptoms=["gradient_spikes"])).first_fix()
    restored = make_plan(
        _diagnosis("od_kl", p=0.1), _context(current={**SETTINGS, "learning_rate": 2e-3})
    ).first_fix()
    assert spiking is not None and restored is not None
    assert not spiking.id.startswith("od_grad#") and not restored.id.startswith("od_lr#")

    def fits(candidate: object, fault: str) -> bool:
        actions = [a.model_dump(mode="json") for a in candidate.actions]  # type: ignore[attr-defined]
        return any(_same_fix(actions, t.actions) for t in PLAYBOOK[fault].candidates)

    assert fits(spiking, "od_grad") and not fits(spiking, "od_kl")
    assert fits(restored, "od_lr") and not fits(restored, "pg_temperature")
    zero_variance = candidates_for(PLAYBOOK["symptom:no_signal_too_easy"], _context())[0]
    assert not fits(zero_variance, "pg_degenerate")  # a trajectory filter, but of other samples


def test_a_rate_the_alarm_measured_off_its_configuration_is_restored_before_the_diagnosis_is_acted_on() -> (
    None
):
    """`mini-s43-0056`: the rate ×0.1 from step 1 (`lr_off_schedule`), read as a sparse reward at p=0.44."""
    slow = {**SETTINGS, "learning_rate": 2e-5}
    sparse = _diagnosis("rf_sparse", p=0.44)
    plain = make_plan(sparse, _context(current=slow, fallbacks=["exact_verifier"]))
    assert isinstance(plain.candidates[0].actions[0], FallbackReward)  # no measurement: the diagnosis's fix
    measured = _context(current=slow, fallbacks=["exact_verifier"], measured=["learning_rate"])
    plan = make_plan(sparse, measured)
    assert plan.decision == "fix" and plan.fault_type == "rf_sparse"
    assert plan.candidates[0].actions == [SetLearningRate(value=2e-4)]
    assert [c.id for c in plan.candidates[1:]] == [c.id for c in plain.candidates]  # then the diagnosis's
    # tried and undone: the diagnosis's plan as it was
    again = make_plan(sparse, measured.model_copy(update={"exclude": [plan.candidates[0].id]}))
    assert [c.id for c in again.candidates] == [c.id for c in plain.candidates]
    # a diagnosis whose own fix restores the rate keeps its plan; a rate at its configured value is no case
    assert make_plan(_diagnosis("od_lr"), measured) == make_plan(
        _diagnosis("od_lr"), _context(current=slow, fallbacks=["exact_verifier"])
    )
    at_config = _context(fallbacks=["exact_verifier"], measured=["learning_rate"])
    assert make_plan(sparse, at_config) == make_plan(sparse, _context(fallbacks=["exact_verifier"]))
    # an unsure diagnosis: the settings-changed play, the restore first, as before
    unsure = make_plan(_diagnosis("rf_sparse", p=0.2), measured)
    assert unsure.decision == "fix" and unsure.candidates[0].actions == [SetLearningRate(value=2e-4)]
