"""A diagnosis rendered for people and programs: JSON (`to_json`) and plain text (`to_text`).

One rendering shared by the CLI, the agent's tools and the agent. The JSON keeps the keys
`rftfm diagnose --json` has always printed; NaN and ±Inf follow `telemetry.io`'s policy.
"""

from __future__ import annotations

from typing import Any

from rftfm_agent.detect.events import RunVerdict
from rftfm_agent.diagnose.hypothesis import Diagnosis, Hypothesis
from rftfm_agent.telemetry import io

LOW_CONFIDENCE = 0.4  # below this top probability the readable answer warns that nothing stands out


def to_json(diagnosis: Diagnosis, verdict: RunVerdict) -> dict[str, Any]:
    """{"run", "verdict", "anchor_step", "mode", "unknown", "hypotheses", "missing", "notes", "symptom",
    "findings"}, JSON-safe."""
    return io.json_safe(
        {
            "run": diagnosis.run,
            "verdict": verdict.verdict,
            "anchor_step": diagnosis.anchor_step,
            "mode": diagnosis.mode,
            "unknown": diagnosis.unknown,
            "hypotheses": [h.model_dump() for h in diagnosis.hypotheses],
            "missing": diagnosis.missing,
            "notes": diagnosis.notes,
            "symptom": diagnosis.symptom,
            "findings": [f.model_dump() for f in diagnosis.findings],
        }
    )


def to_text(diagnosis: Diagnosis, verdict: RunVerdict) -> str:
    """Readable lines: the verdict, caveats, then each hypothesis with its evidence.

    A run the detector calls healthy gets only its closest matches, without evidence: there is no
    incident to explain, and evidence would read like one.
    """
    d = diagnosis
    lines = [f"{d.run}: detector {verdict.verdict}; fingerprint at step {d.anchor_step} (mode: {d.mode})"]
    brief = verdict.verdict == "healthy"
    if brief:
        lines.append(
            "  nothing was detected: the types below are only the closest matches of the run's most "
            "unusual stretch, not an incident (--json for their evidence)"
        )
    if d.symptom:
        lines.append(f"  symptom: {d.symptom}")
    for f in d.findings:
        lines.append(f"  - {f.symptom}  [{f.severity}, {f.confidence} confidence]")
        lines += [f"      evidence: {e}" for e in f.evidence[1:4]]
        lines += [f"      likely cause {i}: {c}" for i, c in enumerate(f.causes[:3], 1)]
        lines += [f"      check first: {c}" for c in f.checks[:2]]
        if f.play:
            lines.append(f"      fixes: playbook play {f.play} (rftfm triage proposes them, policy-checked)")
    lines += [f"  note: {note}" for note in d.notes]
    if d.missing:
        lines.append(f"  not logged, diagnosed without: {', '.join(d.missing)}")
    known = [h for h in d.hypotheses if h.type != "unknown"]
    if known and known[0].probability < LOW_CONFIDENCE:
        lines.append(f"  low confidence: no known type reaches p={LOW_CONFIDENCE}")
    for rank, h in enumerate(d.hypotheses, 1):
        lines.append(f"  {rank}. {h.family}/{h.type}  p={h.probability:.2f}")
        if not brief:
            lines += _evidence_lines(h)
    return "\n".join(lines)


def _evidence_lines(h: Hypothesis) -> list[str]:
    ev = h.evidence
    if h.type == "unknown":
        return [f"     {ev.why}"]
    lines = [
        f"     {f.feature:<44} {_fmt(f.value):>10}  (healthy {_fmt(f.healthy)}, typical {_fmt(f.typical)})"
        for f in ev.features
    ]
    for m in ev.metrics:
        healthy = f" (healthy runs: {_fmt(m.healthy)})" if m.healthy is not None else ""
        lines.append(f"     {m.metric:<44} {_fmt(m.before)} before → {_fmt(m.after)} after{healthy}")
    if ev.nearest_runs:
        near = ", ".join(f"{n.run} ({n.strength}, {n.task})" for n in ev.nearest_runs)
        lines.append(f"     nearest labelled runs: {near}")
    return lines


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"
