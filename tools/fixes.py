"""Tools that propose fixes and check them against the safety policy, and read the audit journal.

`proposals(env, run)` is the one source of what may be applied to a run: the playbook's candidates for the
run's diagnosis (remediate.planner), each checked by the policy (supervise.policy) in the run's situation.
An LLM can only pick among these ids; the acting tools recompute the list and refuse anything else.

A stored log without a checkpoint folder (`env.workdir`) gets advice: the policy's knob rules are checked,
and the fix is marked not applicable here (resume the run from a checkpoint before the incident with it).
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from rftfm_agent.detect.scale_free import steady_rate
from rftfm_agent.remediate.planner import Candidate, PlanContext, make_plan, measured_knobs
from rftfm_agent.supervise.policy import KNOWN_KNOBS, Situation
from rftfm_agent.telemetry import io
from rftfm_agent.tools.analysis import analyse
from rftfm_agent.tools.base import RunInput, ToolEnv

SESSION_FILE = "session.json"  # a stopped supervised session (cli/supervise.py writes it)
APPROVED_FILE = "approved_fix.json"


class Proposal(BaseModel):
    id: str = Field(description="candidate id: the only thing an LLM may pass to apply_fix")
    summary: str
    actions: list[dict[str, Any]]
    why: str
    reference: str
    verdict: Literal["apply", "ask", "refuse"] = Field(description="the policy's verdict")
    rule: str
    reason: str
    applicable: bool = Field(description="a checkpoint before the incident is known here")


class ProposeOutput(BaseModel):
    run_id: str
    decision: Literal["fix", "observe", "escalate", "none"] = Field(
        description="none: the detector found nothing critical, so no fix is proposed"
    )
    reason: str
    fault_type: str | None
    confidence: float
    checkpoint_step: int | None
    proposals: list[Proposal]


def proposals(env: ToolEnv, run: str) -> ProposeOutput:
    a = analyse(env, run)
    if a.verdict.verdict == "healthy" and not any(f.severity == "critical" for f in a.diagnosis.findings):
        # Nothing to fix: a fault type's play or a warning's symptom is no reason to change a healthy run
        # (triage used to say "escalate", or offer a data filter for a warning, on healthy runs).
        return ProposeOutput(
            run_id=a.run_id,
            decision="none",
            reason="the detector found nothing anomalous and no finding is critical: no fix proposed",
            fault_type=None,
            confidence=0.0,
            checkpoint_step=None,
            proposals=[],
        )
    manifest = env.store.manifest(a.run_id)
    config = manifest.config or {}
    configured = {k: config[k] for k in KNOWN_KNOBS if isinstance(config.get(k), int | float | str)}
    if "max_completion_length" not in configured and (cap := _logged_cap(env, a.run_id)) is not None:
        configured["max_completion_length"] = cap
    current = {**configured, **_logged_jumps(env, a.run_id, a.diagnosis.anchor_step, configured)}
    current.update(_off_schedule(a.verdict.events, configured))
    context = PlanContext(
        configured=configured,
        current=current,
        observed_steps=a.rows_after_anchor,
        symptoms=list(a.symptoms),
        measured=measured_knobs(e.check for e in a.verdict.events),
        # Without a healthy band the fault types are far from home; a corroborated critical finding is not.
        prefer_symptoms=a.diagnosis.mode == "self"
        and any(
            f.severity == "critical" and f.confidence == "high" and (f.play or "").startswith("symptom:")
            for f in a.diagnosis.findings
        ),
        uses_tools=bool(
            "tool_call_count" in (manifest.metrics or []) or "tools/call_frequency" in manifest.metrics
        ),
    )
    plan = make_plan(a.diagnosis, context)
    checkpoint_step = _checkpoint_before(env.workdir, a.diagnosis.anchor_step) if env.workdir else None
    applied = _count(env, a.run_id, "applied")
    situation = Situation(
        incident_step=a.diagnosis.anchor_step,
        checkpoint_step=checkpoint_step,
        interventions=applied,
        current=current,
        configured=configured,
    )
    policy = env.policy if env.workdir else env.policy.model_copy(update={"require_checkpoint": False})
    out = []
    for c in plan.candidates:
        decision = policy.check(c, situation)
        out.append(
            Proposal(
                id=c.id,
                summary=c.summary(),
                actions=[x.model_dump() for x in c.actions],
                why=c.why,
                reference=c.reference,
                verdict=decision.verdict,
                rule=decision.rule,
                reason=decision.reason,
                applicable=env.workdir is not None and checkpoint_step is not None,
            )
        )
    return ProposeOutput(
        run_id=a.run_id,
        decision=plan.decision,
        reason=plan.reason,
        fault_type=plan.fault_type,
        confidence=round(plan.confidence, 3),
        checkpoint_step=checkpoint_step,
        proposals=out,
    )


JUMP = 2.0  # a logged learning rate that moves ×/÷ this between the steps before and after the incident was
# changed, not scheduled: warm-up and decay schedules move it gradually, never by a factor within a step
# ...provided it was steady on both sides (the three steps each side, `detect.scale_free.steady_rate`, the
# `lr_jump` rule's test): a linear warm-up from 0 doubles the rate from its first logged step to its second,
# so at an early incident the schedule itself moves ×2 across the boundary (triage then "restored" a warm-up
# as a changed learning rate)


def _logged_jumps(env: ToolEnv, run_id: str, anchor: int, configured: dict[str, Any]) -> dict[str, Any]:
    """Knobs the log shows changed at the incident (today: the learning rate), as `current` values."""
    steps = env.store.steps(run_id)
    if "learning_rate" not in steps:
        return {}
    lr = steps[["step", "learning_rate"]].dropna()
    lr = lr[lr["learning_rate"].map(lambda v: math.isfinite(v) and v > 0)]
    before = lr[lr["step"] < anchor]["learning_rate"].tail(3)
    after = lr[lr["step"] >= anchor]["learning_rate"].head(3)
    if before.empty or after.empty or not (steady_rate(before) and steady_rate(after)):
        return {}
    ratio = float(after.median()) / float(before.median())
    if max(ratio, 1 / ratio) < JUMP:
        return {}
    base = configured.get("learning_rate")
    return {"learning_rate": float(base) * ratio if isinstance(base, int | float) else float(after.median())}


def _off_schedule(events: list[Any], configured: dict[str, Any]) -> dict[str, Any]:
    """The base learning rate the run used, where `lr_off_schedule` measured it off the configured schedule:
    the configured rate × logged / expected at the alarm (as `current`, so the restore applies)."""
    for e in events:
        if e.check != "lr_off_schedule":
            continue
        value, expected = e.evidence.get("value"), e.evidence.get("expected")
        base = configured.get("learning_rate", e.evidence.get("configured"))
        if all(isinstance(x, int | float) and x > 0 for x in (value, expected, base)):
            return {"learning_rate": float(base) * float(value) / float(expected)}
    return {}


def _logged_cap(env: ToolEnv, run_id: str) -> int | None:
    """The completion cap a log shows without its config: the longest completion on steps where some were
    cut at the cap (`completions/max_length` with `completions/clipped_ratio` > 0), so that a run whose
    completions all hit the cap gets "raise the cap" with a number, not a bare escalation."""
    steps = env.store.steps(run_id)
    if not {"completions/max_length", "completions/clipped_ratio"} <= set(steps.columns):
        return None
    cut = steps[steps["completions/clipped_ratio"] > 0]["completions/max_length"].dropna()
    cut = cut[cut.map(math.isfinite)]
    return int(cut.max()) if not cut.empty and cut.max() >= 1 else None


def candidate_of(proposal: Proposal) -> Candidate:
    return Candidate.model_validate(
        {"id": proposal.id, "actions": proposal.actions, "why": proposal.why, "reference": proposal.reference}
    )


def propose_fixes(params: RunInput, env: ToolEnv) -> ProposeOutput:
    """Propose fixes for a run from the playbook (its diagnosis → ranked candidates, each with why and a
    reference), every one already checked by the safety policy. Only these ids can ever be applied."""
    return proposals(env, params.run)


class CheckPolicyInput(RunInput):
    candidate_id: str = Field(description="an id from propose_fixes")


def check_policy(params: CheckPolicyInput, env: ToolEnv) -> Proposal:
    """The safety policy's verdict (apply / ask a person / refuse) on one proposed fix, with the rule."""
    found = {p.id: p for p in proposals(env, params.run).proposals}
    if params.candidate_id not in found:
        raise _unknown(params.candidate_id, found)
    return found[params.candidate_id]


class JournalInput(RunInput):
    last: int = Field(default=20, ge=1, le=500)


class JournalOutput(BaseModel):
    run_id: str
    entries: list[dict[str, Any]]


def read_journal(params: JournalInput, env: ToolEnv) -> JournalOutput:
    """The run's audit journal: every decision (proposed, refused, asked, approved, applied, verified …)."""
    run_id = env.store.resolve(params.run)
    frame = env.store.journal(run_id).tail(params.last)
    cols = ["seq", "step", "decision", "rule", "reason", "actions"]
    entries = json.loads(frame[cols].to_json(orient="records")) if not frame.empty else []
    return JournalOutput(run_id=run_id, entries=entries)


def journal(
    env: ToolEnv,
    run_id: str,
    decision: str,
    *,
    step: int | None = None,
    rule: str | None = None,
    reason: str = "",
    actions: list[dict[str, Any]] | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one decision to the run's journal (the supervisor's format; `actor` in the detail)."""
    existing = env.store.journal(run_id)
    env.store.append_journal(
        run_id,
        {
            "run_id": run_id,
            "seq": int(existing["seq"].max()) + 1 if not existing.empty else 1,
            "time": time.time(),
            "segment_run": run_id,
            "step": step,
            "decision": decision,
            "rule": rule,
            "reason": reason,
            "actions": io.dumps(actions or [], indent=None),
            "detail": io.dumps({"actor": env.actor, **(detail or {})}, indent=None),
        },
    )


def _count(env: ToolEnv, run_id: str, decision: str) -> int:
    frame = env.store.journal(run_id)
    return 0 if frame.empty else int((frame["decision"] == decision).sum())


_CHECKPOINT = re.compile(r"checkpoint-(\d+)$")


def _checkpoint_before(workdir: Path, anchor: int) -> int | None:
    """The newest checkpoint in `workdir` before `anchor`: a stopped session's, else checkpoint-N folders."""
    session = workdir / SESSION_FILE
    if session.is_file():
        stop = (io.from_json_safe(json.loads(session.read_text())) or {}).get("stop") or {}
        step = stop.get("checkpoint_step")
        return int(step) if isinstance(step, int) else None  # chosen by the supervisor before its incident
    steps = [
        int(m[1]) for p in workdir.rglob("checkpoint-*") if p.is_dir() and (m := _CHECKPOINT.search(p.name))
    ]
    before = [s for s in steps if s < anchor]
    return max(before) if before else None


def _unknown(candidate_id: str, found: dict[str, Proposal]) -> Exception:
    from rftfm_agent.errors import RftfmError

    known = ", ".join(found) or "none (the diagnosis proposes no fix)"
    return RftfmError(f"{candidate_id!r} is not a proposed fix for this run (proposed: {known})")
