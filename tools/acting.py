"""Acting tools: apply an approved fix, resume the run with it; and `verify_fix`, read-only, which reads
the supervisor's verdict on it from the journal.

They take a candidate id, never actions: the fix is recomputed from the run (`tools.fixes.proposals`), so
a model cannot make up an action or a value. The policy decides, not the caller: a refused candidate is
refused; one the policy sends to a person needs that person's approval, which only the agent's approval
step can grant (`ToolEnv.approved`). Every refusal is journaled.

"Apply" writes the approved fix beside the run's checkpoints (`approved_fix.json` in the checkpoint
folder) and journals it; "resume" carries on a stopped supervised session with it (training resumes from
the checkpoint before the incident, with the fix installed), or, for a run rftfm does not drive, says how
to resume it with the fix.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry import io
from rftfm_agent.tools.base import RunInput, ToolEnv
from rftfm_agent.tools.fixes import (
    APPROVED_FILE,
    SESSION_FILE,
    CheckPolicyInput,
    Proposal,
    candidate_of,
    journal,
    proposals,
)


class ApplyOutput(BaseModel):
    run_id: str
    candidate_id: str
    summary: str
    fix_file: str
    checkpoint_step: int | None


def apply_fix(params: CheckPolicyInput, env: ToolEnv) -> ApplyOutput:
    """Apply a proposed fix (by its candidate id) to the run, if the safety policy allows it and, where the
    policy asks for a person, a person approved it. Refusals are journaled."""
    plan = proposals(env, params.run)
    run_id, found = plan.run_id, {p.id: p for p in plan.proposals}
    p = found.get(params.candidate_id)
    problem = None
    if p is None:
        problem = ("agent", f"{params.candidate_id!r} is not a fix proposed for this run's diagnosis")
    elif p.verdict == "refuse":
        problem = (p.rule, p.reason)
    elif p.verdict == "ask" and p.id not in env.approved:
        problem = ("approval", f"{p.reason}; no person approved it")
    elif not p.applicable or env.workdir is None:
        problem = ("checkpoint", "no checkpoint folder with a checkpoint before the incident is configured")
    if problem is not None:
        journal(
            env,
            run_id,
            "refused",
            rule=problem[0],
            reason=problem[1],
            detail={"candidate": params.candidate_id},
        )
        raise RftfmError(f"refused ({problem[0]}): {problem[1]}")
    assert p is not None and env.workdir is not None
    approved = p.id in env.approved
    if approved:
        journal(env, run_id, "approved", rule="human", reason="a person approved the fix", actions=p.actions)
    fix = {
        "run": run_id,
        "candidate": p.model_dump(),
        "checkpoint_step": plan.checkpoint_step,
        "approved": approved,
    }
    path = env.workdir / APPROVED_FILE
    io.atomic_write_text(path, io.dumps(fix))
    journal(
        env,
        run_id,
        "fix_written",
        rule=p.rule,
        reason=f"{p.summary}; resume from checkpoint step {plan.checkpoint_step}",
        actions=p.actions,
        detail={"candidate": p.id, "fix_file": str(path)},
    )
    return ApplyOutput(
        run_id=run_id,
        candidate_id=p.id,
        summary=p.summary,
        fix_file=str(path),
        checkpoint_step=plan.checkpoint_step,
    )


class ResumeOutput(BaseModel):
    run_id: str
    resumed: bool = Field(description="training was resumed here with the fix")
    outcome: dict[str, Any] = Field(default_factory=dict)
    instructions: str = ""


def resume_run(params: RunInput, env: ToolEnv) -> ResumeOutput:
    """Resume the run from its checkpoint before the incident with the applied fix installed."""
    run_id = env.store.resolve(params.run)
    if env.workdir is None or not (env.workdir / APPROVED_FILE).is_file():
        raise RftfmError(f"run {run_id}: no applied fix to resume with (apply_fix first)")
    fix = json.loads((env.workdir / APPROVED_FILE).read_text())
    candidate = candidate_of(Proposal.model_validate(fix["candidate"]))
    if (env.workdir / SESSION_FILE).is_file() and env.resumer is not None:
        outcome = env.resumer(env.workdir, candidate)
        return ResumeOutput(run_id=run_id, resumed=True, outcome=outcome)
    actions = json.dumps([a.model_dump() for a in candidate.actions])
    return ResumeOutput(
        run_id=run_id,
        resumed=False,
        instructions=(
            f"resume your trainer from the checkpoint at step {fix['checkpoint_step']} with the fix: "
            f"Supervisor.run(make_trainer, workdir, resume_from=CHECKPOINT, "
            f"actions=[parse_action(a) for a in json.loads({actions!r})])"
        ),
    )


class VerifyOutput(BaseModel):
    run_id: str
    status: str = Field(description="verified | undone | escalated | pending | unverified")
    reason: str


def verify_fix(params: RunInput, env: ToolEnv) -> VerifyOutput:
    """Whether the fix held after the resume: the supervisor's verdict from the run's journal."""
    run_id = env.store.resolve(params.run)
    frame = env.store.journal(run_id)
    for decision in reversed(list(frame["decision"]) if not frame.empty else []):
        if decision in ("verified", "undone", "escalated", "unverified"):
            row = frame[frame["decision"] == decision].iloc[-1]
            return VerifyOutput(run_id=run_id, status=decision, reason=str(row["reason"] or ""))
    return VerifyOutput(run_id=run_id, status="pending", reason="no verdict on a fix in the journal yet")
