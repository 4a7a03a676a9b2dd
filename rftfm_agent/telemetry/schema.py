"""The records every stage of rftfm speaks: step records, trajectory records and run manifests.

One schema serves our own testbed runs, live TRL runs and logs imported from other frameworks, so that
detectors and diagnosers never care where a run came from. Field names follow the paper's released
RFT-FaultBench release layout (Zenodo record 20044882) so both datasets load the same way.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    import pyarrow as pa

FAULT_FAMILIES: dict[str, str] = {
    "RF": "reward faults",
    "PG": "policy-generation faults",
    "OD": "optimization-dynamics faults",
    "CA": "credit-assignment faults",
    "TE": "tool/environment faults",
}

FAULT_TYPES: dict[str, str] = {
    "rf_sign_flip": "RF",
    "rf_noise": "RF",
    "rf_hackable": "RF",
    "rf_sparse": "RF",
    "pg_temperature": "PG",
    "pg_truncation": "PG",
    "pg_degenerate": "PG",
    "od_lr": "OD",
    "od_kl": "OD",
    "od_grad": "OD",
    "od_optimizer_reset": "OD",
    "ca_advantage_sign": "CA",
    "ca_group_misalign": "CA",
    "ca_baseline": "CA",
    "te_tool_error": "TE",
    "te_tool_corrupt": "TE",
}


class MetricValue(BaseModel):
    """One logged number, with the name the framework used beside the canonical one."""

    model_config = ConfigDict(frozen=True)

    metric: str = Field(description="canonical name from rftfm's metric vocabulary")
    source_key: str = Field(description="the key exactly as the framework logged it")
    value: float = Field(description="float; NaN and ±Inf are kept as logged, never dropped")


class StepRecord(BaseModel):
    """One optimizer step (or one logged row, when a framework logs every k steps)."""

    run_id: str
    step: int = Field(ge=0)
    wall_time: float | None = Field(default=None, description="unix seconds when the row was logged")
    metrics: list[MetricValue] = Field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        """Canonical name → value for this step."""
        return {m.metric: m.value for m in self.metrics}


class TrajectoryRecord(BaseModel):
    """One sampled completion with its reward, advantage and shape statistics.

    The injected-fault fields are labels for evaluation only; detectors and diagnosers must never
    read them as features.
    """

    run_id: str
    step: int = Field(ge=0)
    prompt_id: str | None = None
    group_id: int | None = None
    sample_index: int | None = None
    prompt: str | None = None
    completion: str | None = None
    reward: float | None = None
    rewards: dict[str, float] = Field(default_factory=dict, description="reward per reward function")
    advantage: float | None = None
    advantage_mean: float | None = None
    advantage_std: float | None = None
    return_: float | None = Field(default=None, alias="return")
    response_length: int | None = None
    truncated: bool | None = None
    repetition_ratio: float | None = None
    unique_token_ratio: float | None = None
    tool_call_count: int | None = None
    tool_error_count: int | None = None
    empty_response: bool | None = None
    short_response: bool | None = None
    long_response: bool | None = None
    fault_injected: bool | None = Field(default=None, description="label only: was this sample perturbed")
    fault_injection_type: str | None = Field(default=None, description="label only")
    fault_injection_strength: str | None = Field(default=None, description="label only")

    model_config = ConfigDict(populate_by_name=True)


class FaultSpec(BaseModel):
    """The fault injected into a run (a label for evaluation; never an input to detection)."""

    family: Literal["RF", "PG", "OD", "CA", "TE"]
    type: str
    strength: Literal["easy", "hard"]
    onset_step: int = Field(default=1, ge=0)
    variant: str | None = Field(
        default=None, description="which form of the type, e.g. 'high' or 'low' temperature (None: default)"
    )

    @model_validator(mode="after")
    def _family_matches_type(self) -> FaultSpec:
        # The paper's own type names are not public, so imported labels may use other names; only for
        # our names do we insist that the type sits in the family it belongs to.
        expected = FAULT_TYPES.get(self.type)
        if expected is not None and expected != self.family:
            raise ValueError(f"fault type {self.type!r} belongs to family {expected}, not {self.family}")
        return self


class SourceInfo(BaseModel):
    """Where an imported run came from."""

    format: str = Field(description="importer that read it, e.g. 'trl_trainer_state', 'verl_console'")
    framework: str | None = Field(default=None, description="'trl', 'verl', 'openrlhf', 'unsloth' …")
    paths: list[str] = Field(default_factory=list)
    sha256: str | None = Field(default=None, description="hash of the source bytes, for idempotent ingest")
    notes: list[str] = Field(default_factory=list, description="how steps were inferred, what was skipped")


class RunManifest(BaseModel):
    """Everything known about a run apart from its records."""

    run_id: str
    name: str
    created_at: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    source: SourceInfo
    task: str | None = None
    model: str | None = None
    seed: int | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    label: Literal["control", "fault", "unknown"] = "unknown"
    fault: FaultSpec | None = None
    experiment_id: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    provenance: str | None = Field(default=None, description="free text shipped beside the log")
    status: Literal["live", "finished", "imported"] = "imported"
    n_steps: int = 0
    n_trajectories: int = 0
    first_step: int | None = None
    last_step: int | None = None
    metrics: list[str] = Field(default_factory=list, description="canonical metric names present")
    metric_sources: dict[str, str] = Field(
        default_factory=dict, description="canonical metric → the key the framework logged it under"
    )
    # Files of this run that are committed. Parts not listed here are leftovers of an interrupted write
    # and are ignored by readers: this list is what makes appends atomic.
    step_parts: list[str] = Field(default_factory=list)
    trajectory_parts: list[str] = Field(default_factory=list)


@dataclass
class RawStep:
    """One logged row as the framework wrote it: step, optional wall time, key → float."""

    step: int
    values: dict[str, float]
    wall_time: float | None = None


@dataclass
class ImportedRun:
    """A run read from a source, before it is written to the store."""

    name: str
    source: SourceInfo
    steps: list[RawStep] = field(default_factory=list)
    trajectories: pa.Table | None = None
    task: str | None = None
    model: str | None = None
    seed: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    label: str = "unknown"
    fault: FaultSpec | None = None
    experiment_id: str | None = None
    provenance: str | None = None


def is_finite(value: float | None) -> bool:
    """True for a real, finite number (False for None, NaN and ±Inf)."""
    return value is not None and math.isfinite(value)
