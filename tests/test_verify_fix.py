"""A fix is verified when the symptom it was applied for is gone: an alarmed metric still off the healthy
band on the side the fault pushed it to undoes the fix; off on the other side does not (`mid-s7-0147`: the
restored length cap's run was its healthy control to the digit, entropy +3.4 z on a band fitted
elsewhere, and was undone, then stopped at 9 % of the gain)."""

from __future__ import annotations

import pytest

from rftfm_agent.detect.api import load_detector
from rftfm_agent.detect.events import Event
from rftfm_agent.remediate.actions import SetCompletionLength
from rftfm_agent.remediate.planner import Candidate
from rftfm_agent.supervise.policy import Policy
from rftfm_agent.supervise.supervisor import Incident, Supervisor

TASK = "arith_b"
METRIC = "entropy"


def _rows(steps: range, z: float, supervisor: Supervisor) -> list[dict[str, float]]:
    """Rows whose entropy sits `z` robust spreads off the healthy band at each step."""
    band = supervisor.monitor.band
    assert band is not None
    rows = []
    for step in steps:
        b = min(step // band.bin_width, len(band.center[METRIC]) - 1)
        rows.append({"step": step, METRIC: band.center[METRIC][b] + z * band.scale[METRIC][b]})
    return rows


def _fixed(z_fault: float, z_after: float) -> str | None:
    """A fault that held entropy at `z_fault` for steps 1-5, a fix from the start, then 8 steps at
    `z_after`: what the verification says is left (None: nothing)."""
    detector = load_detector()
    supervisor = Supervisor(policy=Policy.load(mode="auto"), detector=detector, diagnoser=None, task=TASK)  # type: ignore[arg-type]
    supervisor.monitor = detector.monitor(TASK, "r")
    supervisor.timeline = _rows(range(1, 6), z_fault, supervisor)
    alarm = Event(step=3, metric=METRIC, source="band", check="shewhart", severity="critical", score=3.0)
    supervisor.incident = Incident(anchor_step=3, opened_step=3, events=[alarm])
    supervisor.checkpoints = {0: "start"}
    candidate = Candidate(
        id="pg_truncation#1", actions=[SetCompletionLength(max_completion_length=8)], why="w", reference="r"
    )
    supervisor._apply(5, candidate, 0, "start")
    assert supervisor.verifying is not None and supervisor.timeline == []  # rolled back to the start
    supervisor.timeline = _rows(range(1, 9), z_after, supervisor)
    return supervisor._symptoms_remaining(supervisor.verifying)


@pytest.mark.parametrize(
    ("z_fault", "z_after", "left"),
    [
        (-25.0, 3.5, False),  # collapsed, then a little above the band: the collapse is gone
        (-25.0, -3.5, True),  # still under the band: the symptom stays
        (-25.0, 1.0, False),  # back in the band
        (25.0, -3.5, False),  # the same, the other way round
        (25.0, 3.5, True),
        (1.0, 3.5, True),  # the fault's rows sat in the band (a rule's alarm): no side, either side counts
        (1.0, -3.5, True),
    ],
)
def test_a_metric_is_judged_on_the_side_of_the_band_the_fault_pushed_it_to(
    z_fault: float, z_after: float, left: bool
) -> None:
    remaining = _fixed(z_fault, z_after)
    assert (remaining is not None) is left
    if left:
        assert remaining is not None and remaining.startswith(f"{METRIC} is still out of the healthy band")
