"""Anomaly events and run verdicts: what every detector emits, and how they are stored beside a run."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


class Event(BaseModel):
    """One anomaly: where (step, metric), what kind of check fired, how bad, and the numbers behind it."""

    run: str = ""
    step: int
    metric: str
    kind: str = Field(description="rule name, 'band_cusum', 'self_cusum' or 'profile'")
    severity: Severity
    score: float
    evidence: dict[str, Any] = Field(default_factory=dict)


class RunVerdict(BaseModel):
    run: str
    verdict: Literal["healthy", "anomalous"]
    score: float = Field(description="largest event score relative to its alarm threshold (≥1: alarm)")
    events: list[Event] = Field(default_factory=list)
    mode: str = Field(default="", description="'profile' (compared with healthy runs) or 'self' (own start)")
    missing: list[str] = Field(default_factory=list, description="metrics the detector wanted, not logged")


def json_number(x: float) -> float | None:
    return x if isinstance(x, int | float) and math.isfinite(x) else None


def write_events(run_dir: Path, verdict: RunVerdict) -> Path:
    """Save a verdict as `events.json` beside the run's manifest (atomic: temp file, then rename)."""
    path = run_dir / "events.json"
    tmp = path.with_name(f".events.json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_clean(verdict.model_dump()), indent=2, allow_nan=False))
    os.replace(tmp, path)
    return path


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value
