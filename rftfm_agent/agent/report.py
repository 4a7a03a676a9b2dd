"""The triage report: the template in prompts/report.md filled from the graph's state; HTML from it.

What the detector, the diagnosis and the policy said is written as they said it; an LLM's explanation,
when there is one, is shown as the model's and never replaces them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rftfm_agent.resources import prompt_text, prompt_version


def render_markdown(state: dict[str, Any]) -> str:
    s = state.get("summary") or {}
    det = state.get("detection") or {}
    d = state.get("diagnosis") or {}
    plan = state.get("plan") or {}
    hyps = d.get("hypotheses") or []
    return prompt_text("report").format(
        run=s.get("name") or state.get("run"),
        source_line=f"`{s.get('run_id', state.get('run'))}` · {s.get('format', '?')} · "
        f"task {s.get('task') or '?'} · steps {s.get('first_step')}–{s.get('last_step')} "
        f"({s.get('steps', 0)} logged)",
        verdict_line=_verdict(det),
        symptom_line=symptom_line(d, det),
        diagnosis_lines=_diagnosis(d, hyps),
        evidence_lines=_evidence(det, hyps, state.get("neighbours") or []),
        fix_lines=_fix(state, plan),
        policy_lines=_policy(plan),
        actions_lines=_actions(state),
        plot=Path(state["plot"]).name if state.get("plot") else "",
        planner=state.get("planner", "deterministic"),
        tool_calls=len(state.get("calls") or []),
        seconds=float(state.get("seconds") or 0.0),
        prompt_version=prompt_version("report"),
    )


def symptom_line(d: dict[str, Any], det: dict[str, Any]) -> str:
    """The symptom in plain words: a critical finding; for a run the detector calls healthy, the diagnosis's
    one line (healthy, its warnings worth a look, or unknown); else the newest rows' symptoms, else what
    the alarms are about."""
    findings = d.get("findings") or []
    if findings and findings[0].get("severity") == "critical":
        return d.get("symptom") or findings[0]["symptom"]
    if det.get("verdict") == "healthy" and d.get("symptom"):  # as `rftfm diagnose` says it: no alarm
        return d["symptom"]
    if d.get("symptoms"):
        return "; ".join(d["symptoms"])
    if d.get("symptom"):
        return d["symptom"]
    alarms = det.get("alarms") or []
    if not alarms:
        return "none: the detector found nothing anomalous" if det.get("verdict") == "healthy" else "unknown"
    meanings = list(dict.fromkeys(a["meaning"] for a in alarms if a.get("meaning")))
    if meanings:
        return "; ".join(meanings[:3])
    metrics = sorted({a["metric"] for a in alarms}, key=[a["metric"] for a in alarms].index)
    first = det.get("first_alarm_step")
    return f"anomalous {', '.join(metrics[:4])}" + (
        f" from step {first}" if first is not None else " (run level)"
    )


def _verdict(det: dict[str, Any]) -> str:
    if not det:
        return "not examined (see notes)"
    line = f"**{det['verdict']}** ({det['mode']} mode)"
    if det.get("first_alarm_step") is not None:
        line += f", first alarm at step {det['first_alarm_step']}"
    if det.get("missing"):
        line += f"; not logged: {', '.join(det['missing'][:8])}"
    return line


def _diagnosis(d: dict[str, Any], hyps: list[dict[str, Any]]) -> str:
    if not d:
        return "not diagnosed (see notes)"
    head = f"anchored at step {d['anchor_step']}" + (
        " · **unknown**: unlike every labelled fault" if d["unknown"] else ""
    )
    lines = [head, ""]
    lines += [
        f"{i}. **{h['type']}** ({h['family']}), p = {h['probability']:.2f} — {h['why']}"
        for i, h in enumerate(hyps, 1)
    ]
    lines += [f"- note: {n}" for n in d.get("notes", [])]
    for f in d.get("findings") or []:
        lines += ["", f"**{f['symptom']}** ({f['severity']}, {f['confidence']} confidence)"]
        lines += [f"- likely cause: {c}" for c in f.get("causes", [])[:3]]
        lines += [f"- check first: {c}" for c in f.get("checks", [])[:2]]
    return "\n".join(lines)


def _evidence(det: dict[str, Any], hyps: list[dict[str, Any]], neighbours: list[dict[str, Any]]) -> str:
    lines = [
        f"- step {a['step']}: {a['metric']} {a['check']} ({a['severity']}, score {_num(a['score'])})"
        for a in (det.get("alarms") or [])[:8]
    ]
    if neighbours:
        near = ", ".join(
            f"{n['run']} ({n['type']}, {n['strength']}, d={n['distance']})" for n in neighbours[:4]
        )
        lines.append(f"- nearest labelled runs: {near}")
    return "\n".join(lines) or "- no alarm"


def _fix(state: dict[str, Any], plan: dict[str, Any]) -> str:
    if not plan:
        return "none (no plan: see notes)"
    chosen = next((p for p in state.get("allowed") or [] if p["id"] == state.get("choice")), None)
    lines = [f"Plan: **{plan['decision']}** — {plan['reason']}"]
    if chosen is not None:
        lines.append(
            f"\n**{chosen['summary']}** (`{chosen['id']}`)\n\n- why: {chosen['why']}\n"
            f"- reference: {chosen['reference']}"
        )
        if not chosen["applicable"]:
            step = (state.get("diagnosis") or {}).get("anchor_step")
            lines.append(f"- to apply: resume the run from a checkpoint before step {step} with this change")
    elif plan["decision"] == "fix":
        lines.append("\nNo proposed fix is allowed by the policy.")
    if state.get("explanation"):
        lines.append(f"\n> The LLM's explanation: {state['explanation']}")
    return "\n".join(lines)


def _policy(plan: dict[str, Any]) -> str:
    rows = [
        f"- `{p['id']}` {p['summary']}: **{p['verdict']}** ({p['rule']}: {p['reason']})"
        for p in plan.get("proposals", [])
    ]
    return "\n".join(rows) or "- nothing to check"


def _actions(state: dict[str, Any]) -> str:
    lines = []
    if state.get("approval"):
        lines.append(f"- approval: {state['approval']}")
    if state.get("applied"):
        lines.append(f"- applied: {state['applied']['summary']} (fix file {state['applied']['fix_file']})")
    if state.get("resumed"):
        r = state["resumed"]
        lines.append(
            f"- resumed: {json_line(r['outcome'])}"
            if r.get("resumed")
            else f"- to resume: {r['instructions']}"
        )
    if state.get("verified"):
        lines.append(f"- verification: {state['verified']['status']} — {state['verified']['reason']}")
    lines += [f"- note: {n}" for n in state.get("notes") or []]
    return "\n".join(lines) or "- proposed only: nothing was changed"


def json_line(payload: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in payload.items() if v not in (None, [], {}))


def to_html(markdown_text: str, title: str) -> str:
    import html

    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto;line-height:1.4}"
        "img{max-width:100%}code{background:#f3f3f3}</style></head><body>"
        f"{body}</body></html>"
    )


def _num(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, int | float) else "∞" if x is None else str(x)
