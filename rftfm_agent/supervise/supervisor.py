"""The supervisor: the closed loop detect → diagnose → plan → policy → fix → resume → verify, inside a
training job, for any TRL `GRPOTrainer`.

    supervisor = Supervisor(policy=Policy.load("policy.toml", mode="auto"), store=Store(), task="arith_a",
                            fallback_rewards={"strict": strict_verifier})

    def make_trainer(segment):                       # called for the first run and for every resume
        trainer = GRPOTrainer(model=..., reward_funcs=[segment.wrap_reward(my_reward)],
                              args=GRPOConfig(output_dir=segment.output_dir, save_steps=5, ...), ...)
        return trainer                               # the supervisor installs its callback and the fixes

    result = supervisor.run(make_trainer, workdir="runs/my-run")

Each `run` segment trains until the supervisor stops it (or the run ends). On a critical incident the
supervisor diagnoses the run so far, plans, and asks the policy. In `auto` an allowed fix makes it stop
training and resume from the last checkpoint before the incident, in a new segment with the fix installed
(and every earlier kept fix); in `ask` it stops and leaves a report and the command that resumes with the
fix; in `observe` it only reports. After a fix it watches `verify_steps` steps: the detector quiet, no
alarmed metric still off the healthy band on the side the fault pushed it to, held-out accuracy (where the
run logs it) not below where it was at the checkpoint. Then the fix is kept, or undone (resume from the
same checkpoint without it) and the next candidate tried, or the incident escalated. Every decision goes
to the run's audit journal (`Store.append_journal`; SQL view `journal`).

A crash inside the supervisor never stops training: it is journaled and the supervisor falls back to
observing. In a multi-process job (accelerate, one process per device) the main process decides and the
decision is broadcast to every process (`torch.distributed`), so all stop and resume alike.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, Field
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rftfm_agent.detect.detector import Detector, RunData, RunMonitor
from rftfm_agent.detect.events import Event
from rftfm_agent.detect.schedule import LrSchedule
from rftfm_agent.diagnose.diagnoser import Diagnoser
from rftfm_agent.diagnose.fingerprint import fingerprint
from rftfm_agent.diagnose.hypothesis import Diagnosis
from rftfm_agent.hooks import RewardFn, RunContext
from rftfm_agent.knobs import current_settings, get_learning_rate
from rftfm_agent.remediate.actions import Action, ActionHook, SetLearningRate, parse_action
from rftfm_agent.remediate.planner import (
    MAX_OBSERVE_STEPS,
    Candidate,
    Plan,
    PlanContext,
    make_plan,
    measured_knobs,
)
from rftfm_agent.remediate.symptoms import finite_value, symptoms
from rftfm_agent.supervise.policy import Policy, Situation
from rftfm_agent.telemetry import io
from rftfm_agent.telemetry.recorder import RunRecorder
from rftfm_agent.telemetry.run_config import config_from_args
from rftfm_agent.telemetry.store import Store, mark_nan
from rftfm_agent.telemetry.vocabulary import canonical_row

HELDOUT = "heldout/accuracy"
HELDOUT_TOLERANCE = 0.05  # a fix may not leave held-out accuracy more than this below its checkpoint value
BAND_Z_OK = 3.0  # an alarmed metric is "off the healthy band" when its recent median |z| is over this
ROLLBACK_MARGIN = 3  # prefer a checkpoint this many steps before the first alarm (detection lags the onset)
START = "start"  # the "checkpoint" at step 0: the run's initial model, rebuilt by `make_trainer`
CONFIRM_STEPS = (
    2  # logged steps after the first critical alarm before the first diagnosis (fingerprint window)
)


class Stop(BaseModel):
    """Why a segment ended early, identical on every process."""

    kind: Literal["resume", "ask", "escalate"]
    checkpoint: str | None = None
    checkpoint_step: int | None = None
    actions: list[dict[str, Any]] = Field(default_factory=list)  # every fix the next segment runs with
    reason: str = ""
    candidate: Candidate | None = None  # "ask": the fix awaiting approval


@dataclass
class Segment:
    """What `make_trainer` is given: where to write checkpoints and the fixes to build the trainer with."""

    index: int
    output_dir: Path
    hook: ActionHook
    resume_from: str | None
    recorder: Any = None  # set it to the trainer's RunRecorder if `make_trainer` attached one

    def wrap_reward(self, fn: RewardFn) -> RewardFn:
        """The reward function to build the trainer with (a fallback reward replaces `fn` when chosen)."""
        return self.hook.wrap_reward(fn)


@dataclass
class Incident:
    anchor_step: int
    opened_step: int
    events: list[Event]
    tried: list[str] = field(default_factory=list)
    diagnosis: Diagnosis | None = None
    next_look: int = 0
    current: dict[str, Any] | None = (
        None  # knobs at the first decision (a later fix's knobs are not the run's)
    )
    offending: list[int] | None = None  # non-finite steps seen before any rollback
    sides: dict[str, int] | None = None  # the side of the band each alarmed metric left, before any rollback


@dataclass
class Verification:
    candidate: Candidate
    checkpoint_step: int
    checkpoint: str
    until_step: int
    metrics: list[str]
    heldout_before: float | None
    sides: dict[str, int] = field(default_factory=dict)  # +1 above the band, -1 below: the symptom to remove


@dataclass
class SupervisedResult:
    run_id: str  # the journal's run: the first segment's store run (or the name given)
    segments: list[str]
    stop: Stop | None
    seconds: float
    supervisor_seconds: float  # all of the supervisor's own time (watching and deciding)
    errors: list[str]
    resumes: list[dict[str, Any]] = field(default_factory=list)  # each resume: checkpoint and fixes
    watch_seconds: float = 0.0  # the part spent on rows that needed no decision: the per-step overhead
    rows: int = 0  # rows watched


class Supervisor:
    def __init__(
        self,
        *,
        policy: Policy,
        detector: Detector,
        diagnoser: Diagnoser,
        store: Store | None = None,
        task: str | None = None,
        fallback_rewards: dict[str, RewardFn] | None = None,
        run_name: str = "supervised",
        on_step: Callable[[dict[str, Any]], None] | None = None,
        planner: Callable[[Diagnosis, PlanContext], Plan] = make_plan,
    ) -> None:
        """`planner` turns a diagnosis into a plan (default: the playbook's `make_plan`; the evaluation's
        baselines put their own here). The policy checks whatever it proposes."""
        self.policy = policy
        self.detector = detector
        self.diagnoser = diagnoser
        self.store = store
        self.task = task
        self.fallbacks = dict(fallback_rewards or {})
        self.run_name = run_name
        self.on_step = on_step
        self.planner = planner
        self.mode = policy.mode
        # After an unexplained escalation that let the run go on: the held-out score it stops under.
        self.heldout_floor: float | None = None
        self.went_on = False  # an unexplained escalation let the run go on (watched, in "observe")
        self.journal_run: str | None = None
        self.segment_run: str | None = None
        self.seq = 0
        self.pending_journal: list[dict[str, Any]] = []
        self.timeline: list[dict[str, Any]] = []  # rows of the run as it now stands (after rollbacks)
        self.abandoned: list[dict[str, Any]] = []
        self.monitor: RunMonitor = detector.monitor(task, run_name)
        self.configured: dict[str, Any] | None = None
        # The learning-rate schedule the job was launched with (TrainingArguments + total steps), read at the
        # first train begin: the monitor checks the logged rate against it (`lr_off_schedule`).
        self.schedule_config: dict[str, Any] | None = None
        self.current: dict[str, Any] = {}
        self.checkpoints: dict[int, str] = {}
        self.kept: list[Action] = []
        self.interventions = 0
        self.last_intervention_step: int | None = None
        self.incident: Incident | None = None
        self.verifying: Verification | None = None
        self.stop: Stop | None = None
        self.errors: list[str] = []
        self.busy_seconds = 0.0
        self.watch_seconds = 0.0  # time on rows that led to no diagnosis (see SupervisedResult)
        self.rows_seen = 0
        self.decided = False
        self.uses_tools = False

    # ------------------------------------------------------------------ the driver
    def run(
        self,
        make_trainer: Callable[[Segment], Any],
        workdir: str | Path,
        resume_from: str | None = None,
        actions: list[Action] | None = None,
        context: RunContext | None = None,
    ) -> SupervisedResult:
        """Train, stopping, fixing and resuming as decided, until the run ends or a person is needed."""
        started = time.perf_counter()
        workdir = Path(workdir)
        segments: list[str] = []
        resumes: list[dict[str, Any]] = []
        resume, active = resume_from, list(actions or [])
        if resume_from is None:
            self.checkpoints.setdefault(0, START)  # starting over is always a rollback to before any incident
        while True:
            index = len(segments)
            try:
                segment, trainer = self._build(make_trainer, workdir, index, active, resume, context)
            except Exception as exc:
                if index == 0 or [a.model_dump() for a in active] == [a.model_dump() for a in self.kept]:
                    raise  # the user's own trainer does not build: nothing of ours to take back
                # The fix cannot be installed in this trainer (e.g. β on a run without a reference model):
                # journal it and resume from the same checkpoint with the fixes kept so far only.
                self._journal(
                    int(self.timeline[-1]["step"]) if self.timeline else 0,
                    "error",
                    rule="install",
                    reason=f"the fix could not be installed ({type(exc).__name__}: {exc}); "
                    "resuming without it",
                )
                self.verifying = None
                self.incident = None
                active = list(self.kept)
                segment, trainer = self._build(make_trainer, workdir, index, active, resume, context)
            if segment.recorder is None and self.store is not None:
                segment.recorder = RunRecorder(
                    self.store, f"{self.run_name}-s{index}", task=self.task
                ).attach(trainer)
            self.attach(trainer, segment.recorder)
            self.stop = None
            trainer.train(resume_from_checkpoint=None if resume == START else resume)
            segments.append(self.segment_run or f"segment-{index}")
            stop = self.stop
            if stop is None or stop.kind != "resume":
                break
            resume = stop.checkpoint
            active = [parse_action(a) for a in stop.actions]
            resumes.append(
                {"checkpoint": stop.checkpoint, "step": stop.checkpoint_step, "actions": stop.actions}
            )
        if self.verifying is not None:
            self._journal(
                int(self.timeline[-1]["step"]) if self.timeline else 0,
                "unverified",
                reason="the run ended before the fix's verification window did",
                actions=self.verifying.candidate.actions,
            )
        self._flush_journal()
        return SupervisedResult(
            run_id=self.journal_run or self.run_name,
            segments=segments,
            stop=self.stop,
            seconds=time.perf_counter() - started,
            supervisor_seconds=self.busy_seconds,
            watch_seconds=self.watch_seconds,
            rows=self.rows_seen,
            errors=list(self.errors),
            resumes=resumes,
        )

    def _build(
        self,
        make_trainer: Callable[[Segment], Any],
        workdir: Path,
        index: int,
        active: list[Action],
        resume: str | None,
        context: RunContext | None,
    ) -> tuple[Segment, Any]:
        hook = ActionHook(active, self.fallbacks)
        segment = Segment(index, workdir / f"segment-{index}", hook, resume)
        trainer = make_trainer(segment)
        if not getattr(trainer, "_rftfm_actions_installed", False):
            hook.install(trainer, context or _context(trainer, self.task))
        return segment, trainer

    def state(self) -> dict[str, Any]:
        """What a later process needs to carry on after an `ask` stop (JSON-able)."""
        return {
            "journal_run": self.journal_run,
            "seq": self.seq,
            "configured": self.configured,
            "schedule_config": self.schedule_config,
            "interventions": self.interventions,
            "kept": [a.model_dump() for a in self.kept],
            "timeline": self.timeline,
            "checkpoints": {str(k): v for k, v in self.checkpoints.items()},
            "uses_tools": self.uses_tools,
            "events": [e.model_dump(mode="json") for e in (self.incident.events if self.incident else [])],
            "diagnosis": self.incident.diagnosis.model_dump(mode="json")
            if self.incident is not None and self.incident.diagnosis is not None
            else None,
        }

    def restore(self, state: dict[str, Any], stop: Stop, approved: bool) -> None:
        """Carry on from `state` after an `ask` stop: with `approved`, the fix is applied and verified as if
        it had been allowed; without, the rejection is journaled and nothing is changed (the run stays
        stopped)."""
        self.journal_run = state["journal_run"]
        self.seq = int(state.get("seq", 0))
        self.configured = state.get("configured")
        self.schedule_config = state.get("schedule_config")
        self.interventions = int(state.get("interventions", 0))
        self.kept = [parse_action(a) for a in state.get("kept", [])]
        self.timeline = list(state.get("timeline", []))
        self.checkpoints = {int(k): v for k, v in (state.get("checkpoints") or {}).items()}
        self.uses_tools = bool(state.get("uses_tools", False))
        step = int(self.timeline[-1]["step"]) if self.timeline else 0
        candidate = stop.candidate
        if candidate is None or stop.checkpoint is None or stop.checkpoint_step is None:
            raise ValueError("the stopped run has no fix awaiting approval")
        if not approved:
            self._journal(
                step, "rejected", rule="human", reason="a person rejected the fix", actions=candidate.actions
            )
            return
        self._journal(
            step, "approved", rule="human", reason="a person approved the fix", actions=candidate.actions
        )
        diagnosis = state.get("diagnosis")
        self.checkpoints[stop.checkpoint_step] = stop.checkpoint
        self.incident = Incident(
            anchor_step=stop.checkpoint_step + 1,
            opened_step=step,
            events=[Event.model_validate(e) for e in state.get("events", [])],
            tried=[candidate.id],
            diagnosis=Diagnosis.model_validate(diagnosis) if diagnosis else None,
        )
        self._apply(step, candidate, stop.checkpoint_step, stop.checkpoint)

    def attach(self, trainer: Any, recorder: Any = None) -> SupervisorCallback:
        """Add the supervisor's callback to `trainer` (after the recorder, whose rows it reads if given)."""
        callback = SupervisorCallback(self, trainer)
        if recorder is not None:
            recorder.on_row(callback.queue_row)
            if self.journal_run is None and recorder.run_id:
                self.journal_run = recorder.run_id
            self.segment_run = recorder.run_id
        trainer.add_callback(callback)
        return callback

    # ------------------------------------------------------------------ the loop, on the main process
    def observe(self, row: dict[str, Any], trainer: Any) -> Stop | None:
        started = time.perf_counter()
        try:
            return self._observe(row, trainer)
        except Exception as exc:  # never let the supervisor stop training
            message = f"{type(exc).__name__}: {exc}"
            self.errors.append(message)
            self.mode = "observe"
            self.verifying = None  # nothing half-done is acted on later
            self.incident = None
            self._journal(
                int(row.get("step", 0)),
                "error",
                rule="crash",
                reason=f"supervisor error, falling back to observe: {message}",
                detail={"traceback": traceback.format_exc(limit=5)},
            )
            return None
        finally:
            spent = time.perf_counter() - started
            self.busy_seconds += spent
            self.rows_seen += 1
            if not self.decided:
                self.watch_seconds += spent
            self.decided = False

    def _observe(self, row: dict[str, Any], trainer: Any) -> Stop | None:
        step = int(row["step"])
        self.current = current_settings(trainer)
        if self.on_step is not None:
            self.on_step(row)
        self.timeline.append(row)
        stop = self._check_heldout_floor(row)
        if stop is not None:
            return stop
        if row.get("traj/tool_calls_mean", 0.0) and row.get("traj/tool_calls_mean", 0.0) > 0:
            self.uses_tools = True
        events = self.monitor.update({k: v for k, v in row.items() if k != HELDOUT})
        # What a kept fix changes by design (a guard's spikes, masked samples' advantages) is no new fault.
        kept = {m for a in self.kept for m in a.absorbs()}
        critical = [e for e in events if e.severity == "critical" and e.metric not in kept]
        if self.verifying is not None:
            return self._verify(step, critical)
        if self.incident is None:
            if not critical:
                return None
            self.incident = Incident(
                anchor_step=step, opened_step=step, events=critical, next_look=step + CONFIRM_STEPS
            )
            self._journal(
                step,
                "incident",
                reason="; ".join(
                    f"{e.metric} {e.check} ({e.severity}, score {e.score:.1f})" for e in critical[:5]
                ),
                detail={"events": [e.model_dump(mode="json") for e in critical[:10]]},
            )
        else:
            self.incident.events.extend(critical)
        if step < self.incident.next_look:
            return None
        return self._decide(step)

    def _decide(self, step: int, replan: bool = False) -> Stop | None:
        """Diagnose the run so far (or, re-planning after an undone fix, reuse the diagnosis), plan, and ask
        the policy about each candidate in turn."""
        self.decided = True
        incident = self.incident
        assert incident is not None
        reuse = replan and incident.diagnosis is not None
        diagnosis = incident.diagnosis if reuse and incident.diagnosis else self._diagnose()
        incident.diagnosis = diagnosis
        incident.anchor_step = min(incident.anchor_step, diagnosis.anchor_step)
        checkpoint_step, checkpoint = self._checkpoint_before(incident.anchor_step)
        if incident.current is None:
            incident.current = dict(self.current)
        if incident.offending is None:
            incident.offending = self._offending_steps(checkpoint_step or 0)
        context = PlanContext(
            configured=self.configured or {},
            current=incident.current,
            fallbacks=list(self.fallbacks),
            uses_tools=self.uses_tools,
            offending_steps=incident.offending,
            observed_steps=MAX_OBSERVE_STEPS if replan else step - incident.opened_step,
            exclude=incident.tried,
            symptoms=list(symptoms(self.timeline, self.monitor.band)),
            measured=measured_knobs(e.check for e in incident.events),
        )
        plan = self.planner(diagnosis, context)
        top = diagnosis.hypotheses[0] if diagnosis.hypotheses else None
        self._journal(
            step,
            "diagnosed",
            reason=f"{top.type} p={top.probability:.2f}" if top else "no hypothesis",
            detail={
                "anchor_step": diagnosis.anchor_step,
                "unknown": diagnosis.unknown,
                "hypotheses": [
                    {"type": h.type, "p": round(h.probability, 3)} for h in diagnosis.hypotheses[:3]
                ],
                "why": top.evidence.why if top else "",
                "symptoms": context.symptoms,
            },
        )
        if plan.decision == "observe":
            observe = plan.candidates[0].actions[0]
            incident.next_look = step + getattr(observe, "steps", 1)
            self._journal(step, "observe", reason=plan.reason)
            return None
        if plan.decision == "escalate":
            return self._escalate(step, plan.reason, plan)
        situation = Situation(
            incident_step=incident.anchor_step,
            checkpoint_step=checkpoint_step,
            interventions=self.interventions,
            steps_since_intervention=None
            if self.last_intervention_step is None or replan
            else step - self.last_intervention_step,
            current=incident.current,
            configured=self.configured or {},
        )
        for candidate in plan.candidates:
            if candidate.escalates:
                return self._escalate(step, candidate.why, plan)
            self._journal(
                step,
                "proposed",
                reason=candidate.why,
                actions=candidate.actions,
                detail={"candidate": candidate.id, "reference": candidate.reference, "plan": plan.reason},
            )
            decision = self.policy.model_copy(update={"mode": self.mode}).check(candidate, situation)
            if decision.verdict == "refuse":
                self._journal(
                    step, "refused", rule=decision.rule, reason=decision.reason, actions=candidate.actions
                )
                incident.tried.append(candidate.id)
                if decision.rule == "mode":  # observe mode: report only, keep training
                    self.incident = None
                    return None
                continue
            if decision.verdict == "ask":
                self._journal(
                    step, "asked", rule=decision.rule, reason=decision.reason, actions=candidate.actions
                )
                return Stop(
                    kind="ask",
                    checkpoint=checkpoint,
                    checkpoint_step=checkpoint_step,
                    actions=[a.model_dump() for a in [*self.kept, *candidate.actions]],
                    reason=decision.reason,
                    candidate=candidate,
                )
            self._journal(
                step, "allowed", rule=decision.rule, reason=decision.reason, actions=candidate.actions
            )
            return self._apply(step, candidate, checkpoint_step, checkpoint)
        return self._escalate(step, "every candidate fix was refused by the policy", plan)

    def _apply(
        self, step: int, candidate: Candidate, checkpoint_step: int | None, checkpoint: str | None
    ) -> Stop:
        if checkpoint_step is None or checkpoint is None:
            raise RuntimeError("no checkpoint to resume from (require_checkpoint is off and none exists)")
        self.interventions += 1
        self.last_intervention_step = checkpoint_step
        heldout = [v for s, v in self._heldout_scores() if s <= checkpoint_step]
        absorbed = {m for a in [*self.kept, *candidate.actions] for m in a.absorbs()}
        metrics = sorted({e.metric for e in (self.incident.events if self.incident else [])} - absorbed)
        if self.incident is not None and self.incident.sides is None:
            self.incident.sides = self._sides_left(metrics, after=checkpoint_step)
        self.verifying = Verification(
            candidate=candidate,
            checkpoint_step=checkpoint_step,
            checkpoint=checkpoint,
            # Past the step the incident was seen at: a window that ends before the fault acts again
            # would verify nothing.
            until_step=max(checkpoint_step, self.incident.opened_step if self.incident else 0)
            + self.policy.verify_steps,
            metrics=metrics,
            heldout_before=heldout[-1] if heldout else None,
            sides=dict(self.incident.sides or {}) if self.incident is not None else {},
        )
        self._rollback(checkpoint_step)
        actions = [*self.kept, *candidate.actions]
        self._journal(
            step,
            "applied",
            reason=f"resume from checkpoint step {checkpoint_step} with {candidate.summary()}",
            actions=candidate.actions,
            detail={
                "checkpoint": checkpoint,
                "checkpoint_step": checkpoint_step,
                "all_actions": [a.model_dump() for a in actions],
            },
        )
        return Stop(
            kind="resume",
            checkpoint=checkpoint,
            checkpoint_step=checkpoint_step,
            actions=[a.model_dump() for a in actions],
            reason=candidate.why,
        )

    def _verify(self, step: int, critical: list[Event]) -> Stop | None:
        v = self.verifying
        assert v is not None
        absorbed = {m for a in [*self.kept, *v.candidate.actions] for m in a.absorbs()}
        critical = [e for e in critical if e.metric not in absorbed]
        failed: str | None = None
        if critical:
            failed = "the detector raised a critical alarm again: " + ", ".join(
                sorted({f"{e.metric} {e.check}" for e in critical})
            )
        elif step >= v.until_step:
            failed = self._symptoms_remaining(v) or self._heldout_dropped(v)
            if failed is None:
                self._journal(
                    step,
                    "verified",
                    reason=f"quiet from the fix (step {v.checkpoint_step}) to step {step}, "
                    f"{self.policy.verify_steps} past the incident; no alarmed metric off the band on the "
                    "fault's side",
                    actions=v.candidate.actions,
                )
                self.kept.extend(v.candidate.actions)
                self.verifying = None
                self.incident = None
                self.last_intervention_step = step
                return None
        if failed is None:
            return None
        self._journal(step, "undone", reason=failed, actions=v.candidate.actions)
        incident = self.incident or Incident(
            anchor_step=v.checkpoint_step + 1, opened_step=step, events=critical
        )
        incident.tried.append(v.candidate.id)
        incident.events.extend(critical)
        self.incident = incident
        self.verifying = None
        # Undo = go back to the same checkpoint without the fix, then try the next candidate from there.
        self._rollback(v.checkpoint_step)
        return self._decide(step, replan=True) or Stop(
            kind="resume",
            checkpoint=v.checkpoint,
            checkpoint_step=v.checkpoint_step,
            actions=[a.model_dump() for a in self.kept],
            reason="fix undone; no other candidate: resuming without it",
        )

    def _escalate(self, step: int, reason: str, plan: Plan | None) -> Stop | None:
        """Hand the incident to a person: stop the run (the policy's `on_escalate`), or go on watching.

        An alarm nothing explains (`Plan.unexplained`) stops the run only on evidence that it harms it: its
        held-out accuracy below the last score measured before the alarm (by more than
        `HELDOUT_TOLERANCE`). Until a score after the alarm exists, the run goes on, watched but no longer
        changed (the mode "observe"), and stops at the first evaluation that shows the fall. Stopping at
        once cost the learning still to come: after a kept fix for a failing tool, a band alarm on one
        metric (token diversity, the loss) that no fault type explained stopped `mid` runs at steps 16-28
        while their held-out accuracy was still rising (`mid-s7-0044`: 0.270 → 0.307 at the stop, 0.400 at
        the end). A play's own escalation (a fault no automatic fix mends) and a run without a held-out
        score before the alarm stop at once, as before."""
        # A run let go on after an unexplained alarm is in "observe" only because of it: a cause named
        # later (a play's own escalation) stops it as it would have at first.
        stops = self.policy.on_escalate == "stop" and (self.mode != "observe" or self.went_on)
        floor, latest = (
            self._heldout_floor() if stops and plan is not None and plan.unexplained else (None, None)
        )
        if floor is not None and (latest is None or latest >= floor):
            so_far = f"{latest:.3f} since the alarm" if latest is not None else "not measured since the alarm"
            reason += (
                f"; the run goes on, watched but no longer changed (held-out accuracy {so_far}): it stops at "
                f"an evaluation below {floor:.3f}"
            )
            self.heldout_floor = floor
            self.went_on = True
            stops = False
        self._journal(
            step, "escalated", reason=reason, detail={"fault_type": plan.fault_type if plan else None}
        )
        self.incident = None
        if stops:
            return Stop(kind="escalate", reason=reason)
        self.mode = "observe"
        return None

    def _heldout_floor(self) -> tuple[float | None, float | None]:
        """(floor, latest): the lowest held-out accuracy an unexplained incident lets the run reach — the
        last score measured before its first alarm, less `HELDOUT_TOLERANCE` — and the latest score since
        the alarm; (None, None) where no score was measured before it. The alarm, not the diagnosis's
        anchor: an unexplained incident's diagnosis anchors at step 1 when the whole run differs from the
        labelled ones (as a run with a kept fix does), leaving nothing before it."""
        if self.incident is None:
            return None, None
        opened = self.incident.opened_step
        scores = self._heldout_scores()
        before = [v for s, v in scores if s < opened]
        after = [v for s, v in scores if s >= opened]
        if not before:
            return None, None
        return before[-1] - HELDOUT_TOLERANCE, after[-1] if after else None

    def _heldout_scores(self) -> list[tuple[int, float]]:
        """(step, held-out accuracy) of the timeline's rows that measured it, in order."""
        return [(int(r["step"]), float(r[HELDOUT])) for r in self.timeline if _finite(r.get(HELDOUT))]

    def _check_heldout_floor(self, row: dict[str, Any]) -> Stop | None:
        """After an unexplained escalation that let the run go on: stop at the first held-out score under
        the floor; the first one at or above it ends the watch."""
        if self.heldout_floor is None or not _finite(row.get(HELDOUT)):
            return None
        score, floor = float(row[HELDOUT]), self.heldout_floor
        self.heldout_floor = None
        if score >= floor:
            self._journal(
                int(row["step"]),
                "observe",
                reason=f"held-out accuracy {score:.3f} after the unexplained alarm, not below {floor:.3f}: "
                "the run goes on, watched",
            )
            return None
        reason = (
            f"held-out accuracy fell to {score:.3f}, below {floor:.3f}, after an alarm nothing explained: "
            "stopping the run"
        )
        self._journal(int(row["step"]), "escalated", reason=reason)
        return Stop(kind="escalate", reason=reason)

    # ------------------------------------------------------------------ helpers
    def _diagnose(self) -> Diagnosis:
        frame = pd.DataFrame([mark_nan(r) for r in self.timeline]).sort_values("step").reset_index(drop=True)
        frame = frame.drop(columns=[c for c in (HELDOUT,) if c in frame.columns])
        verdict = self.detector.score_run(
            RunData(self.run_name, self.task, frame, config=self._schedule_config() or {})
        )
        band = self.detector.bands.get(self.task) if self.task else None
        return self.diagnoser.diagnose(fingerprint(self.run_name, frame, verdict, band), top=3)

    def set_schedule(self, trainer: Any, total_steps: int) -> None:
        """Take the configured learning-rate schedule from the trainer, once (at the first train begin, before
        any fault or fix changed the rate), and give it to the monitor if no row was seen yet."""
        if self.schedule_config is not None:
            return
        config = config_from_args(trainer.args)  # with lr_scheduler_kwargs in it, the cap alone is judged
        config["learning_rate"] = get_learning_rate(trainer)
        config["total_steps"] = int(total_steps)
        self.schedule_config = config
        if not self.timeline:
            self.monitor = self.detector.monitor(self.task, self.run_name, schedule=self.lr_schedule())

    def _schedule_config(self) -> dict[str, Any] | None:
        """The configured schedule around the rate the supervisor's own fixes set last (kept ones, then the
        one being verified): a rate it chose is not a fault."""
        if self.schedule_config is None:
            return None
        active = [*self.kept, *(self.verifying.candidate.actions if self.verifying is not None else [])]
        rates = [a.value for a in active if isinstance(a, SetLearningRate)]
        return {**self.schedule_config, "learning_rate": rates[-1]} if rates else dict(self.schedule_config)

    def lr_schedule(self) -> LrSchedule | None:
        return LrSchedule.from_config(self._schedule_config())

    def _checkpoint_before(self, anchor: int) -> tuple[int | None, str | None]:
        """The last checkpoint before the incident that still exists (rotation may have deleted some)."""
        before = sorted(
            s for s, p in self.checkpoints.items() if s < anchor and (p == START or Path(p).is_dir())
        )
        preferred = [s for s in before if s <= anchor - 1 - ROLLBACK_MARGIN]
        choice = (preferred or before or [None])[-1]
        return (choice, self.checkpoints[choice]) if choice is not None else (None, None)

    def _offending_steps(self, after: int) -> list[int]:
        return [
            int(r["step"])
            for r in self.timeline
            if r["step"] > after and any(k in r and not _finite(r[k]) for k in ("loss", "grad_norm"))
        ]

    def _rollback(self, checkpoint_step: int) -> None:
        """The run continues from `checkpoint_step`: later rows are abandoned; the monitor replays the
        rest."""
        self.abandoned.extend(r for r in self.timeline if r["step"] > checkpoint_step)
        self.timeline = [r for r in self.timeline if r["step"] <= checkpoint_step]
        self.monitor = self.detector.monitor(self.task, self.run_name, schedule=self.lr_schedule())
        for r in self.timeline:
            self.monitor.update({k: v for k, v in r.items() if k != HELDOUT})
        self.checkpoints = {s: p for s, p in self.checkpoints.items() if s <= checkpoint_step}

    def _band_zs(self, metric: str, rows: list[dict[str, Any]]) -> list[float]:
        assert self.monitor.band is not None
        return [
            z
            for r in rows
            if _finite(r.get(metric))
            and (z := self.monitor.band.z(metric, int(r["step"]), float(r[metric]))) is not None
        ]

    def _sides_left(self, metrics: list[str], after: int) -> dict[str, int]:
        """The side of the healthy band each alarmed metric sat on while the fault acted (the rows after
        the checkpoint the fix resumes from): the symptom the fix has to remove. A metric whose median
        stayed in the band there (an alarm from a rule or a jump) has no side."""
        if self.monitor.band is None:
            return {}
        rows = [r for r in self.timeline if r["step"] > after]
        sides = {}
        for metric in metrics:
            zs = sorted(self._band_zs(metric, rows))
            if zs and abs(zs[len(zs) // 2]) > BAND_Z_OK:
                sides[metric] = 1 if zs[len(zs) // 2] > 0 else -1
        return sides

    def _symptoms_remaining(self, v: Verification) -> str | None:
        """An alarmed metric still out of the healthy band on the side the fault pushed it to. Out on the
        other side is not the symptom staying: a healthy run can sit there on a band fitted on other
        machines or settings (a restored length cap's entropy at +3.4 z, exactly its healthy control's),
        and a fix that overshoots into harm raises the detector's own, calibrated, alarms."""
        if self.monitor.band is None:
            return None
        recent = [r for r in self.timeline if r["step"] > v.checkpoint_step][-self.policy.verify_steps :]
        for metric in v.metrics:
            zs = sorted(self._band_zs(metric, recent))
            if not zs:
                continue
            size = sorted(abs(z) for z in zs)[len(zs) // 2]
            side = v.sides.get(metric)
            if size > BAND_Z_OK and (side is None or zs[len(zs) // 2] * side > 0):
                return f"{metric} is still out of the healthy band (median |z| {size:.1f})"
        return None

    def _heldout_dropped(self, v: Verification) -> str | None:
        after = [score for s, score in self._heldout_scores() if s > v.checkpoint_step]
        if v.heldout_before is None or not after:
            return None
        if after[-1] < v.heldout_before - HELDOUT_TOLERANCE:
            return f"held-out accuracy fell from {v.heldout_before:.3f} to {after[-1]:.3f}"
        return None

    def _journal(
        self,
        step: int,
        decision: str,
        *,
        rule: str | None = None,
        reason: str = "",
        actions: list[Action] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.seq += 1
        entry = {
            "run_id": self.journal_run or self.run_name,
            "seq": self.seq,
            "time": time.time(),
            "segment_run": self.segment_run,
            "step": step,
            "decision": decision,
            "rule": rule,
            "reason": reason,
            "actions": io.dumps([a.model_dump() for a in actions or []], indent=None),
            "detail": io.dumps(detail or {}, indent=None),
        }
        self.pending_journal.append(entry)
        self._flush_journal()

    def _flush_journal(self) -> None:
        if self.store is None or self.journal_run is None:
            return
        while self.pending_journal:
            entry = self.pending_journal[0]
            entry["run_id"] = self.journal_run
            try:
                self.store.append_journal(self.journal_run, entry)
            except Exception as exc:  # the store is unwritable: keep the entry, try again later
                self.errors.append(f"journal: {exc}")
                return
            self.pending_journal.pop(0)


class SupervisorCallback(TrainerCallback):
    """The supervisor inside one trainer: reads each logged row, decides on the main process, broadcasts
    the decision, and stops every process's training loop alike."""

    def __init__(self, supervisor: Supervisor, trainer: Any) -> None:
        self.supervisor = supervisor
        self.trainer = trainer
        self.rows: list[dict[str, Any]] = []

    def queue_row(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        sup = self.supervisor
        if sup.configured is None:
            try:
                sup.configured = current_settings(self.trainer)
            except Exception as exc:
                sup.errors.append(f"settings: {exc}")
                sup.configured = {}
        try:
            sup.set_schedule(self.trainer, int(state.max_steps))
        except Exception as exc:  # a trainer without a scheduler: no schedule check
            sup.errors.append(f"schedule: {exc}")
            sup.schedule_config = sup.schedule_config or {}

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        step = int(state.global_step)
        self.supervisor.checkpoints[step] = str(Path(args.output_dir) / f"checkpoint-{step}")

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        sup = self.supervisor
        stop: Stop | None = None
        if state.is_world_process_zero:
            rows, self.rows = self.rows, []
            try:
                if not rows and logs and "loss" in logs:  # no recorder: TRL's own logged row
                    row = canonical_row(logs)
                    row["step"] = float(state.global_step)
                    rows = [row]
            except Exception as exc:  # never skip the broadcast below: the other processes wait in it
                sup.errors.append(f"row: {type(exc).__name__}: {exc}")
                rows = []
            for row in rows:
                stop = sup.observe(row, self.trainer) or stop
        stop = _broadcast(stop)
        if stop is not None:
            sup.stop = stop
            control.should_training_stop = True


def _broadcast(stop: Stop | None) -> Stop | None:
    """The main process's decision, on every process (a no-op in a single-process job)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return stop
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return stop
    payload = [stop.model_dump_json() if stop is not None and dist.get_rank() == 0 else None]
    dist.broadcast_object_list(payload, src=0)
    return Stop.model_validate_json(payload[0]) if payload[0] else None


def _context(trainer: Any, task: str | None) -> RunContext:
    return RunContext(
        task=task or "", seed=int(trainer.args.seed), num_generations=int(trainer.num_generations)
    )


def _finite(x: Any) -> bool:
    return finite_value(x) is not None
