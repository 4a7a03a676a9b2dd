"""The planner: a diagnosis (and what is known of the run) → a plan: fix, observe longer, or escalate.

    plan = make_plan(diagnosis, PlanContext(configured=..., current=..., fallbacks=["strict"]))
    plan.decision        # "fix" | "observe" | "escalate"
    plan.candidates      # ranked, each a list of actions with why and a reference

Never a blind fix: an `unknown` diagnosis or one whose top probability is under `min_confidence` gets
"observe" while the incident is young (`observed_steps < max_observe_steps`), then "escalate"; a type the
playbook does not know is escalated at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rftfm_agent.diagnose.hypothesis import Diagnosis
from rftfm_agent.remediate.actions import Action, Escalate, Observe, parse_action
from rftfm_agent.remediate.playbook import PLAYBOOK, Play

MIN_CONFIDENCE = 0.35  # below it, a diagnosis is not acted on (measured: `rftfm eval remediate`)
MAX_OBSERVE_STEPS = 6  # logged steps after the first alarm a low-confidence diagnosis may wait for more
# Rules whose alarm is itself a measurement that a setting is off its configured value: the knob they
# measure. Restoring a measured setting comes before acting on a diagnosis, which is inferred from how the
# run resembles labelled ones (`mini-s43-0056`, the rate ×0.1 from step 1, was read as a sparse reward,
# p=0.44, and given a fallback verifier while the alarm said the rate was a tenth of the configured one).
MEASURES: dict[str, str] = {"lr_off_schedule": "learning_rate"}


def measured_knobs(checks: Iterable[str]) -> list[str]:
    """The knobs alarms with these checks (`Event.check`) measured off their configured value."""
    return sorted({MEASURES[c] for c in checks if c in MEASURES})


class PlanContext(BaseModel):
    """What the planner knows about the run beside its diagnosis (all measured, none labelled)."""

    configured: dict[str, Any] = Field(default_factory=dict, description="knobs when supervision began")
    current: dict[str, Any] = Field(default_factory=dict, description="knobs at the incident")
    fallbacks: list[str] = Field(default_factory=list, description="registered fallback reward names")
    uses_tools: bool = False
    offending_steps: list[int] = Field(default_factory=list, description="steps with a non-finite update")
    observed_steps: int = 0
    max_observe_steps: int = MAX_OBSERVE_STEPS
    min_confidence: float = MIN_CONFIDENCE
    exclude: list[str] = Field(default_factory=list, description="candidate ids already tried")
    symptoms: list[str] = Field(default_factory=list, description="see remediate/symptoms.py")
    measured: list[str] = Field(
        default_factory=list,
        description="knobs the incident's own alarms measured off their configured value (`MEASURES`)",
    )
    prefer_symptoms: bool = Field(
        default=False,
        description="a symptom seen with high confidence by rules (a run without a healthy band): its play "
        "comes before the fault type's, which was learned on other runs",
    )


class Candidate(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(description="'<play>#<rank>': stable across re-plans, so a tried one is not retried")
    actions: list[Action]
    why: str
    reference: str

    def summary(self) -> str:
        return " + ".join(a.summary() for a in self.actions)

    @property
    def escalates(self) -> bool:
        return any(isinstance(a, Escalate) for a in self.actions)


class Plan(BaseModel):
    decision: Literal["fix", "observe", "escalate"]
    reason: str
    fault_type: str | None = None
    confidence: float = 0.0
    candidates: list[Candidate] = Field(default_factory=list)
    unexplained: bool = Field(
        default=False,
        description="escalated because observation found no cause to act on, not by a play that names one",
    )

    def first_fix(self) -> Candidate | None:
        """The first candidate that changes the run (not an escalation, not "observe")."""
        return next((c for c in self.candidates if not all(a.category == "control" for a in c.actions)), None)


def make_plan(diagnosis: Diagnosis, context: PlanContext) -> Plan:
    """The plan for an incident: a setting the alarms measured off its configured value is restored first
    (unless the diagnosis's own fix already restores it), then the diagnosis's plan."""
    plan = _diagnosis_plan(diagnosis, context)
    measured = [k for k in context.measured if _knob_changed(k, context)]
    restores = _restores(measured, context)
    if not restores or any(_sets(c, measured) for c in plan.candidates):
        return plan
    # After an observe plan nothing else is tried now: an undone restore re-plans without it.
    rest = plan.candidates if plan.decision != "observe" else []
    return Plan(
        decision="fix",
        reason=f"the alarm measured {', '.join(measured)} off the configured value: restore it before "
        f"acting on the diagnosis ({plan.reason})",
        fault_type=plan.fault_type,
        confidence=plan.confidence,
        candidates=[*restores, *rest],
    )


def _sets(candidate: Candidate, knobs: list[str]) -> bool:
    return any(k in a.changes() for a in candidate.actions for k in knobs)


def _restores(knobs: list[str], context: PlanContext) -> list[Candidate]:
    """The settings-changed play's untried restores of `knobs`."""
    if not knobs:
        return []
    play = PLAYBOOK[SETTINGS_CHANGED]
    return [c for c in candidates_for(play, context) if not c.escalates and _sets(c, knobs)]


def _diagnosis_plan(diagnosis: Diagnosis, context: PlanContext) -> Plan:
    known = [h for h in diagnosis.hypotheses if h.type != "unknown"]
    top = known[0] if known else None
    confidence = top.probability if top else 0.0
    if context.prefer_symptoms:
        symptom = _symptom_plan(context, top.type if top else None, confidence, escalations=True)
        if symptom is not None:
            return symptom
    # "healthy" on top during an incident: the alarm saw what the labelled faults do not explain (a KL
    # runaway after an optimizer rebuilt at 10× the rate was diagnosed healthy, p=0.44, and escalated as a
    # type without a play): inconclusive, like a diagnosis under the bar.
    if diagnosis.unknown or top is None or top.type == HEALTHY or confidence < context.min_confidence:
        symptom = _symptom_plan(context, top.type if top else None, confidence)
        if symptom is not None:
            return symptom
        restore = _restore_plan(context, top.type if top else None, confidence)
        if restore is not None:
            return restore
        why = (
            "the run is unlike every labelled fault"
            if diagnosis.unknown or top is None
            else f"the fault types read the incident as a healthy run (p={confidence:.2f})"
            if top.type == HEALTHY
            else (
                f"the best diagnosis ({top.type}, p={confidence:.2f}) is under the confidence bar "
                f"{context.min_confidence}"
            )
        )
        if context.symptoms:
            why += (
                " (the run shows "
                + ", ".join(
                    PLAYBOOK[f"symptom:{n}"].summary if f"symptom:{n}" in PLAYBOOK else n
                    for n in context.symptoms
                )
                + ")"
            )
        return _observe_or_escalate(why, context, top.type if top else None, confidence)
    play = PLAYBOOK.get(top.type)
    if play is None:
        return Plan(
            decision="escalate",
            reason=f"the playbook has no entry for {top.type!r}: escalating rather than guessing",
            fault_type=top.type,
            confidence=confidence,
            candidates=[_escalation(f"no playbook entry for {top.type}")],
        )
    candidates = candidates_for(play, context)
    if ENTROPY_FIRST in context.symptoms and top.type not in ENTROPY_FIRST_EXEMPT:
        # Entropy collapse with KL explosion: fix entropy first (the KL follows), then the diagnosis's own.
        first = [c for c in candidates_for(PLAYBOOK[f"symptom:{ENTROPY_FIRST}"], context) if not c.escalates]
        candidates = [*first, *candidates]
    fixes = [c for c in candidates if not c.escalates]
    if not fixes:
        escalation = next((c for c in candidates if c.escalates), None) or _escalation("no fix left to try")
        return Plan(
            decision="escalate",
            reason=escalation.why,
            fault_type=top.type,
            confidence=confidence,
            candidates=candidates,
        )
    return Plan(
        decision="fix",
        reason=f"{top.type} (p={confidence:.2f}): {play.summary}",
        fault_type=top.type,
        confidence=confidence,
        candidates=candidates,
    )


HEALTHY = "healthy"  # the library's label for healthy runs (a false alarm can be named as one)
SETTINGS_CHANGED = "symptom:settings_changed"


def _restore_plan(context: PlanContext, fault_type: str | None, confidence: float) -> Plan | None:
    """Without a diagnosis to act on, the first thing a practitioner checks: did a setting change from its
    configured value? If so, restore it (no guess at a cause: the change is measured). None when nothing
    changed."""
    play = PLAYBOOK[SETTINGS_CHANGED]
    candidates = candidates_for(play, context)
    if all(c.escalates for c in candidates):
        return None
    changed = ", ".join(a.summary() for c in candidates if not c.escalates for a in c.actions)
    return Plan(
        decision="fix",
        reason=f"no confident diagnosis, but {play.summary} ({changed})",
        fault_type=fault_type,
        confidence=confidence,
        candidates=candidates,
    )


ENTROPY_FIRST = "entropy_collapse_kl_explosion"
ENTROPY_FIRST_EXEMPT = ("pg_temperature",)  # its own play already restores the sampler


def _symptom_plan(
    context: PlanContext, fault_type: str | None, confidence: float, escalations: bool = False
) -> Plan | None:
    """A plan from the run's symptoms when the diagnosis cannot be acted on (None: no symptom play).

    With `escalations`, a symptom whose play only escalates (data too hard: a person changes the data)
    gives that escalation rather than nothing, so that no fault type's fix is tried in its place."""
    for name in context.symptoms:
        play = PLAYBOOK.get(f"symptom:{name}")
        if play is None:
            continue
        candidates = candidates_for(play, context)
        if escalations and candidates and all(c.escalates for c in candidates):
            return Plan(
                decision="escalate",
                reason=f"the run shows {name}: {play.summary}; no automatic fix, a person decides",
                fault_type=fault_type,
                confidence=confidence,
                candidates=candidates,
            )
        if not any(not c.escalates for c in candidates):
            continue  # nothing to try: the usual observe-then-escalate, the symptom named in its reason
        return Plan(
            decision="fix",
            reason=f"no confident diagnosis, but the run shows {name}: {play.summary}",
            fault_type=fault_type,
            confidence=confidence,
            candidates=candidates,
        )
    return None


def candidates_for(play: Play, context: PlanContext) -> list[Candidate]:
    """The play's candidates whose conditions hold, with their values resolved, untried ones only."""
    out = []
    for rank, template in enumerate(play.candidates):
        cid = f"{play.applies_to}#{rank}"
        if cid in context.exclude or not all(_holds(w, context) for w in template.when):
            continue
        try:
            actions = [parse_action(_resolve(a, context)) for a in template.actions]
        except (ValueError, KeyError):
            continue  # a value the run cannot provide (or out of an action's own range): skip it
        out.append(Candidate(id=cid, actions=actions, why=template.why, reference=template.reference))
    return out


def _observe_or_escalate(why: str, context: PlanContext, fault_type: str | None, confidence: float) -> Plan:
    if context.observed_steps < context.max_observe_steps:
        steps = context.max_observe_steps - context.observed_steps
        return Plan(
            decision="observe",
            reason=f"{why}: watching {steps} more step(s) before deciding",
            fault_type=fault_type,
            confidence=confidence,
            candidates=[
                Candidate(
                    id="observe",
                    actions=[Observe(steps=steps, reason=why)],
                    why="never a blind fix: more steps make the fingerprint clearer",
                    reference="rftfm DESIGN.md §7",
                )
            ],
        )
    return Plan(
        decision="escalate",
        reason=f"{why} after {context.observed_steps} steps of observation",
        fault_type=fault_type,
        confidence=confidence,
        candidates=[_escalation(why)],
        unexplained=True,
    )


def _escalation(reason: str) -> Candidate:
    return Candidate(
        id="escalate", actions=[Escalate(reason=reason)], why=reason, reference="rftfm DESIGN.md §7"
    )


def _knob_changed(knob: str, context: PlanContext) -> bool:
    if knob == "token_bias":
        return bool(context.current.get("suppress_tokens")) or bool(context.current.get("sequence_bias"))
    a, b = context.configured.get(knob), context.current.get(knob)
    if a is None or b is None:
        return False
    if isinstance(a, float | int) and isinstance(b, float | int):
        return abs(float(a) - float(b)) > 1e-9 * max(1.0, abs(float(a)))
    return a != b


def _holds(condition: str, context: PlanContext) -> bool:
    name, _, arg = condition.partition(":")
    if name == "changed":
        return _knob_changed(arg, context)
    if name == "unchanged":
        return not _knob_changed(arg, context)
    if name == "fallback_reward":
        return bool(context.fallbacks)
    if name == "tools":
        return context.uses_tools
    if name == "offending_steps":
        return bool(context.offending_steps)
    if name == "kl_penalty":
        beta = context.configured.get("beta")
        return isinstance(beta, int | float) and beta > 0
    raise ValueError(f"playbook: unknown condition {condition!r}")


_REF = re.compile(r"^\$(configured|current)\.([a-z_]+)(?:\*([0-9.]+))?$")


def _resolve(action: dict[str, Any], context: PlanContext) -> dict[str, Any]:
    out = {}
    for key, value in action.items():
        if isinstance(value, str) and value.startswith("$"):
            if value == "$fallback":
                value = context.fallbacks[0]
            elif value == "$offending_steps":
                value = list(context.offending_steps)
            else:
                match = _REF.match(value)
                if match is None:
                    raise ValueError(f"playbook: cannot resolve {value!r}")
                source = context.configured if match[1] == "configured" else context.current
                value = source[match[2]]
                if match[3]:
                    value = type(value)(value * float(match[3]))
        out[key] = value
    return out
