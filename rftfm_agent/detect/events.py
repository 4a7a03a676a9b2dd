"""Anomaly events and run verdicts: what every detector emits, the alarm policy, and how they are stored.

An `Event` says where (step, metric), which check fired (its `source` — a hard rule, the healthy band,
the run's own past, the run-level profile — and its `check` — shewhart / ewma / cusum / bocpd, or the
rule's name), how bad (severity, score) and the numbers behind it.

The alarm policy — which events make a run anomalous, and from which step — lives here, once
(`is_alarm`, `RunVerdict.alarms`, `RunVerdict.first_alarm_step`): the detector, the fingerprint's anchor
and the detection evaluation all read it from here.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, computed_field

from rftfm_agent.telemetry import io
from rftfm_agent.telemetry.store import EVENT_SCHEMA, VERDICT_SCHEMA, Store

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}

Mode = Literal["band", "self"]
"""'band': compared with healthy runs of the run's task; 'self': with the run's own past (no band)."""

EventSource = Literal["rule", "band", "self", "profile"]
StatCheck = Literal["shewhart", "ewma", "cusum", "bocpd"]
STAT_CHECKS: tuple[StatCheck, ...] = ("shewhart", "ewma", "cusum", "bocpd")

# The lowest severity that is an alarm, per mode. Band mode is calibrated on healthy runs of the same
# setup, so any warning is an alarm. Self mode is not (a run's own past is a weak reference; see
# detect.detector.RunMonitor._self_mode_severity): there only a critical event is an alarm.
ALARM_RANK: dict[Mode, int] = {"band": SEVERITY_RANK["warning"], "self": SEVERITY_RANK["critical"]}


class Event(BaseModel):
    """One anomaly: where (step, metric), which check fired, how bad, and the numbers behind it."""

    model_config = ConfigDict(frozen=True)

    run: str = ""
    step: int
    metric: str
    source: EventSource
    check: str = Field(description="shewhart / ewma / cusum / bocpd, 'profile', or the hard rule's name")
    severity: Severity
    score: float = Field(description="statistic relative to its alarm threshold (≥1: past it; rules: inf)")
    evidence: dict[str, Any] = Field(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def kind(self) -> str:
        """One label for display and JSON: the rule's name, 'band_cusum', 'self_shewhart' or 'profile'."""
        return self.check if self.source in ("rule", "profile") else f"{self.source}_{self.check}"


def is_alarm(event: Event, mode: Mode) -> bool:
    """Whether `event` counts as an alarm for a run judged in `mode` (see `ALARM_RANK`)."""
    return SEVERITY_RANK[event.severity] >= ALARM_RANK[mode]


class RunVerdict(BaseModel):
    """A detector's answer for one run: healthy or anomalous, every event, and from which step."""

    run: str
    verdict: Literal["healthy", "anomalous"]
    score: float = Field(description="largest event score relative to its alarm threshold (≥1: alarm)")
    events: list[Event] = Field(default_factory=list)
    mode: Mode
    missing: list[str] = Field(default_factory=list, description="metrics the detector wanted, not logged")

    @classmethod
    def judge(cls, run: str, mode: Mode, events: list[Event], score: float, missing: list[str]) -> RunVerdict:
        """The verdict the alarm policy gives these events (anomalous iff at least one is an alarm)."""
        anomalous = any(is_alarm(e, mode) for e in events)
        return cls(
            run=run,
            verdict="anomalous" if anomalous else "healthy",
            score=score,
            events=sorted(events, key=lambda e: (e.step, -SEVERITY_RANK[e.severity])),
            mode=mode,
            missing=missing,
        )

    @property
    def alarms(self) -> list[Event]:
        """The events that are alarms under this run's mode."""
        return [e for e in self.events if is_alarm(e, self.mode)]

    @property
    def first_alarm_step(self) -> int | None:
        """The earliest step an alarm fired at. The run-level profile has no step of its own (it is
        reported at the last step), so it never sets this; None when no step-level alarm fired."""
        steps = [e.step for e in self.alarms if e.source != "profile"]
        return min(steps) if steps else None


def save_verdict(store: Store, verdict: RunVerdict, last_step: int | None) -> None:
    """Store a verdict and its events beside the run (SQL views `verdicts` and `events`)."""
    verdict_row = {
        "run_id": [verdict.run],
        "verdict": [verdict.verdict],
        "mode": [verdict.mode],
        "score": [float(verdict.score)],
        "first_alarm_step": [verdict.first_alarm_step],
        "n_alarms": [len(verdict.alarms)],
        "missing": [list(verdict.missing)],
        "last_step": [last_step],
        "detected_at": [time.time()],
    }
    events = {
        "run_id": [verdict.run] * len(verdict.events),
        "step": [e.step for e in verdict.events],
        "metric": [e.metric for e in verdict.events],
        "source": [e.source for e in verdict.events],
        "check": [e.check for e in verdict.events],
        "severity": [e.severity for e in verdict.events],
        "score": [float(e.score) for e in verdict.events],
        "alarm": [is_alarm(e, verdict.mode) for e in verdict.events],
        "evidence": [io.dumps(e.evidence, indent=None) for e in verdict.events],
    }
    store.write_artifact(verdict.run, "verdicts", pa.table(verdict_row, schema=VERDICT_SCHEMA))
    store.write_artifact(verdict.run, "events", pa.table(events, schema=EVENT_SCHEMA))
