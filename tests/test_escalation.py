"""Escalation: an alarm nothing explains stops a run only where its held-out accuracy fell, or was not
measured; a fault the playbook names but cannot mend stops it whatever the held-out score does."""

from __future__ import annotations

import pytest

from rftfm_agent.detect.api import load_detector
from rftfm_agent.diagnose.hypothesis import Diagnosis, Hypothesis
from rftfm_agent.remediate.planner import MAX_OBSERVE_STEPS, PlanContext, make_plan
from rftfm_agent.supervise.policy import Policy
from rftfm_agent.supervise.supervisor import HELDOUT, Incident, Stop, Supervisor


def _diagnosis(family: str, kind: str, probability: float) -> Diagnosis:
    return Diagnosis(
        run="r",
        anchor_step=1,
        mode="band",
        unknown=kind == "unknown",
        hypotheses=[Hypothesis(family=family, type=kind, probability=probability)],
    )


UNKNOWN = _diagnosis("unknown", "unknown", 1.0)
MISALIGNED = _diagnosis("CA", "ca_group_misalign", 0.9)


def _supervisor(heldout: dict[int, float], opened: int) -> Supervisor:
    """A supervisor whose run has reached step 20 with these held-out scores, in an incident opened at
    `opened` (the diagnoser is not consulted by an escalation)."""
    supervisor = Supervisor(policy=Policy.load(mode="auto"), detector=load_detector(), diagnoser=None)  # type: ignore[arg-type]
    supervisor.timeline = [
        {"step": s, "reward": 0.3, **({HELDOUT: heldout[s]} if s in heldout else {})} for s in range(1, 21)
    ]
    supervisor.incident = Incident(anchor_step=1, opened_step=opened, events=[])
    return supervisor


def _escalate(supervisor: Supervisor, diagnosis: Diagnosis) -> Stop | None:
    plan = make_plan(diagnosis, PlanContext(observed_steps=MAX_OBSERVE_STEPS))
    assert plan.decision == "escalate"
    return supervisor._escalate(20, plan.reason, plan)


@pytest.mark.parametrize(
    ("heldout", "stops"),
    [
        ({1: 0.225, 10: 0.270, 20: 0.307}, False),  # rising since before the alarm (`mid-s7-0044`)
        ({1: 0.225, 10: 0.300, 20: 0.280}, False),  # within the tolerance
        ({1: 0.225, 10: 0.320, 20: 0.250}, True),  # fell: stopping keeps what is left
        ({}, True),  # a run without a held-out score: as before
        ({20: 0.3}, True),  # nothing measured before the alarm to compare with: as before
    ],
)
def test_an_unexplained_alarm_stops_the_run_only_where_held_out_accuracy_fell(
    heldout: dict[int, float], stops: bool
) -> None:
    supervisor = _supervisor(heldout, opened=14)
    stop = _escalate(supervisor, UNKNOWN)
    assert (stop is not None and stop.kind == "escalate") is stops
    assert supervisor.incident is None and (supervisor.mode == "observe") is not stops
    (entry,) = [e for e in supervisor.pending_journal if e["decision"] == "escalated"]
    assert ("the run goes on" in entry["reason"]) is not stops


@pytest.mark.parametrize(("next_score", "stops"), [(0.31, False), (0.23, False), (0.20, True)])
def test_without_a_score_since_the_alarm_the_run_goes_on_to_its_next_evaluation(
    next_score: float, stops: bool
) -> None:
    """Nothing measured since the alarm (`mid-s7-0066`: alarm at step 22, evaluations every 10 steps): the
    run goes on watched, and the next evaluation decides: under the last score before the alarm less the
    tolerance (0.270 - 0.05), it stops there; else the watch ends and the run goes on."""
    supervisor = _supervisor({1: 0.225, 10: 0.270}, opened=14)
    assert _escalate(supervisor, UNKNOWN) is None and supervisor.mode == "observe"
    assert supervisor._check_heldout_floor({"step": 21, "reward": 0.3}) is None  # no evaluation: no news
    stop = supervisor._check_heldout_floor({"step": 30, "reward": 0.3, HELDOUT: next_score})
    assert (stop is not None and stop.kind == "escalate") is stops
    assert supervisor.heldout_floor is None  # decided once
    assert supervisor._check_heldout_floor({"step": 40, HELDOUT: 0.0}) is None
    assert supervisor.pending_journal[-1]["decision"] == ("escalated" if stops else "observe")


def test_a_fault_the_playbook_cannot_mend_stops_the_run_whatever_the_held_out_score() -> None:
    supervisor = _supervisor({1: 0.225, 10: 0.270, 20: 0.307}, opened=14)
    stop = _escalate(supervisor, MISALIGNED)
    assert stop is not None and stop.kind == "escalate"


def test_a_cause_named_after_the_run_went_on_stops_it() -> None:
    """Let go on after an unexplained alarm (and so in "observe"), the run still stops when a later incident
    is diagnosed as a fault the playbook cannot mend (`mid-s7-0010`: rewards on the wrong completions,
    named 11 steps later)."""
    supervisor = _supervisor({1: 0.225, 10: 0.270, 20: 0.307}, opened=14)
    assert _escalate(supervisor, UNKNOWN) is None and supervisor.mode == "observe"
    supervisor.incident = Incident(anchor_step=18, opened_step=20, events=[])
    stop = _escalate(supervisor, MISALIGNED)
    assert stop is not None and stop.kind == "escalate"
