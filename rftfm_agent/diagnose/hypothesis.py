"""What diagnosis hands to the stages after it: a `Diagnosis` of ranked `Hypothesis`es, each with typed
`Evidence` (the features, the metric windows and the nearest labelled runs behind it, and why in one line).

The CLI, the agent's tools and the agent render these types (see `diagnose/report.py`); none of them
reads dictionary keys. The JSON form keeps the keys `rftfm diagnose --json` has always printed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from rftfm_agent.detect.events import Mode
from rftfm_agent.diagnose.findings import Finding


class DrivingFeature(BaseModel):
    """A fingerprint feature the forest relies on, where the run deviates like the hypothesised fault."""

    model_config = ConfigDict(frozen=True)

    feature: str
    value: float | None = Field(description="the run's value")
    healthy: float | None = Field(description="median of healthy library runs")
    typical: float | None = Field(description="median of library runs of the hypothesised type")
    meaning: str


class MetricWindow(BaseModel):
    """A logged metric's raw mean before and after the anchor (and what healthy runs log there)."""

    model_config = ConfigDict(frozen=True)

    metric: str
    before: float | None
    after: float | None
    healthy: float | None = Field(default=None, description="healthy band's expectation (band mode only)")


class NearestRun(BaseModel):
    """A labelled library run of the hypothesised type, near this run's fingerprint."""

    model_config = ConfigDict(frozen=True)

    run: str
    strength: str
    task: str
    distance: float


class Evidence(BaseModel):
    """Why a hypothesis is on the list. For `unknown`, the novelty numbers instead of features."""

    model_config = ConfigDict(frozen=True)

    why: str = Field(default="", description="one line a person can read")
    features: list[DrivingFeature] = Field(default_factory=list)
    metrics: list[MetricWindow] = Field(default_factory=list)
    nearest_runs: list[NearestRun] = Field(default_factory=list)
    nearest_distance: float | None = Field(default=None, description="unknown: distance to the nearest run")
    limit: float | None = Field(default=None, description="unknown: the novelty limit it exceeded")
    unseen_rules: list[str] = Field(default_factory=list, description="unknown: rules no library run set")


class Hypothesis(BaseModel):
    family: str
    type: str
    probability: float
    evidence: Evidence = Field(default_factory=Evidence)


class Diagnosis(BaseModel):
    run: str
    anchor_step: int = Field(description="logged step where the anomaly starts (the detector's first alarm)")
    mode: Mode = Field(description="'band': against healthy runs of its task; 'self': against its own past")
    unknown: bool = Field(description="the run is far from every labelled fingerprint")
    hypotheses: list[Hypothesis]
    missing: list[str] = Field(default_factory=list, description="watched metrics the run did not log")
    novelty: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list, description="caveats about how the answer was reached")
    symptom: str = Field(default="", description="the problem in one plain line (see diagnose/findings.py)")
    findings: list[Finding] = Field(
        default_factory=list, description="plain-language problems with causes and checks, worst first"
    )
