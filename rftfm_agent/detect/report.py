"""A detector verdict rendered for people and programs: JSON (`to_json`) and plain text (`to_text`).

One rendering shared by the CLI, the agent's tools and the agent, so they never disagree. NaN and ±Inf
follow `telemetry.io`'s policy (the strings "NaN", "Infinity", "-Infinity"), as the stored events do.
"""

from __future__ import annotations

from typing import Any

from rftfm_agent.detect.events import RunVerdict
from rftfm_agent.telemetry import io

EVENT_KEYS = ("step", "metric", "kind", "source", "check", "severity", "score", "evidence")
TEXT_EVENTS = 20  # events listed in the text form (the JSON form has all)


def to_json(verdict: RunVerdict) -> dict[str, Any]:
    """{"run", "verdict", "mode", "first_alarm_step", "missing", "events": [...]}, JSON-safe."""
    return io.json_safe(
        {
            "run": verdict.run,
            "verdict": verdict.verdict,
            "mode": verdict.mode,
            "first_alarm_step": verdict.first_alarm_step,
            "missing": verdict.missing,
            "events": [e.model_dump(include=set(EVENT_KEYS)) for e in verdict.events],
        }
    )


def to_text(verdict: RunVerdict, max_events: int = TEXT_EVENTS) -> str:
    """A few readable lines: the verdict, what was not logged, the first events."""
    lines = [f"{verdict.run}: {verdict.verdict} (mode: {verdict.mode})"]
    if verdict.first_alarm_step is not None:
        lines[0] += f", first alarm at step {verdict.first_alarm_step}"
    if verdict.missing:
        lines.append(f"  not logged: {', '.join(verdict.missing)}")
    for e in verdict.events[:max_events]:
        lines.append(f"  step {e.step:>5}  {e.severity:<8} {e.kind:<18} {e.metric:<32} score {e.score:.3g}")
    if len(verdict.events) > max_events:
        lines.append(f"  … {len(verdict.events) - max_events} more events (--json for all)")
    return "\n".join(lines)
