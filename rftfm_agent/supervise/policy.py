"""The safety policy: rules, not the planner or an LLM, decide whether an action touches a run.

The policy is a TOML file a person reads and edits (`rftfm supervise --policy FILE`; the defaults are in
`DEFAULT_POLICY_TOML`, printed by `rftfm supervise --show-policy`). It is validated when loaded: an unknown
key, a knob the supervisor does not know, an out-of-range value or a malformed line is one error naming the
file and the problem, and nothing is applied.

`Policy.check(candidate, situation)` returns a `PolicyDecision`: "apply", "ask" (a person must approve
first) or "refuse", with the rule that decided and why. Checked in this order:

1. mode: `observe` refuses every action (the supervisor only reports); `ask` asks for every action;
2. budget: at most `max_interventions` applied fixes per run;
3. cooldown: at least `cooldown_steps` steps between interventions;
4. checkpoint: a checkpoint from before the incident must exist (when `require_checkpoint`);
5. allowlist: every action's kind is in `allowed_actions`, every knob it changes is in `[knobs]`;
6. bounds: every new knob value lies in [min, max] and moves at most `max_factor` (×/÷) or `max_delta`
   from its value at the incident; restoring a knob to its configured value is exempt from the step
   limit when `restore_configured_exempt` (it goes back to what the user chose, not somewhere new);
7. approval: reward-function changes (unless `allow_reward_changes`), data changes (unless
   `allow_data_changes`) and environment changes (unless `allow_environment_changes`) need a person.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rftfm_agent.errors import RftfmError
from rftfm_agent.remediate.actions import ACTION_KINDS, Escalate, Observe
from rftfm_agent.remediate.planner import Candidate

Mode = Literal["observe", "ask", "auto"]
Verdict = Literal["apply", "ask", "refuse"]

# The knobs actions may change (see remediate/actions.py `changes()`), with the default bounds.
KNOWN_KNOBS = (
    "learning_rate",
    "beta",
    "temperature",
    "top_p",
    "max_completion_length",
    "max_grad_norm",
    "warmup_steps",
    "tool_retries",
    "token_bias",
)


class KnobBounds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min: float | None = None
    max: float | None = None
    max_factor: float | None = Field(default=None, gt=1, description="largest ×/÷ change per intervention")
    max_delta: float | None = Field(
        default=None, gt=0, description="largest absolute change per intervention"
    )

    @model_validator(mode="after")
    def _ordered(self) -> KnobBounds:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode = "ask"
    max_interventions: int = Field(default=3, ge=0)
    cooldown_steps: int = Field(default=3, ge=0)
    verify_steps: int = Field(default=5, ge=1, description="steps after a fix before it is judged")
    require_checkpoint: bool = True
    allow_reward_changes: bool = False
    allow_data_changes: bool = False
    allow_environment_changes: bool = True
    restore_configured_exempt: bool = True
    on_escalate: Literal["stop", "continue"] = "stop"
    allowed_actions: list[str] = Field(default_factory=lambda: list(ACTION_KINDS))
    knobs: dict[str, KnobBounds] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> Policy:
        unknown = [k for k in self.knobs if k not in KNOWN_KNOBS]
        if unknown:
            raise ValueError(f"unknown knob {unknown[0]!r} (known: {', '.join(KNOWN_KNOBS)})")
        bad = [a for a in self.allowed_actions if a not in ACTION_KINDS]
        if bad:
            raise ValueError(
                f"unknown action {bad[0]!r} in allowed_actions (known: {', '.join(ACTION_KINDS)})"
            )
        return self

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> Policy:
        """The policy in `path` (TOML), else the defaults; `overrides` (e.g. mode) replace file values."""
        if path is None:
            data = tomllib.loads(DEFAULT_POLICY_TOML)
            where = "default policy"
        else:
            path = Path(path)
            where = str(path)
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise RftfmError(f"{path}: no such policy file") from None
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise RftfmError(f"{path}: not a valid TOML policy: {exc}") from None
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(x) for x in first["loc"]) or "policy"
            raise RftfmError(f"{where}: {loc}: {first['msg']}") from None

    # ------------------------------------------------------------------ deciding
    def check(self, candidate: Candidate, situation: Situation) -> PolicyDecision:
        actions = [a for a in candidate.actions if not isinstance(a, Observe | Escalate)]
        if not actions:
            return PolicyDecision(verdict="apply", rule="control", reason="no change to the run")
        if self.mode == "observe":
            return _refuse("mode", "mode is observe: report only, change nothing")
        if situation.interventions >= self.max_interventions:
            return _refuse(
                "budget", f"intervention budget spent ({situation.interventions}/{self.max_interventions})"
            )
        if (
            situation.steps_since_intervention is not None
            and situation.steps_since_intervention < self.cooldown_steps
        ):
            return _refuse(
                "cooldown",
                f"{situation.steps_since_intervention} step(s) since the last intervention, cooldown is "
                f"{self.cooldown_steps}",
            )
        if self.require_checkpoint and (
            situation.checkpoint_step is None or situation.checkpoint_step >= situation.incident_step
        ):
            return _refuse(
                "checkpoint", f"no checkpoint from before the incident at step {situation.incident_step}"
            )
        for action in actions:
            if action.kind not in self.allowed_actions:
                return _refuse("allowlist", f"action {action.kind} is not in allowed_actions")
            for knob, value in action.changes().items():
                problem = self._knob_problem(knob, value, situation)
                if problem:
                    return _refuse(problem[0], problem[1])
        if self.mode == "ask":
            return PolicyDecision(
                verdict="ask", rule="mode", reason="mode is ask: a person approves every fix"
            )
        for action in actions:
            gate = {
                "reward": ("allow_reward_changes", self.allow_reward_changes),
                "data": ("allow_data_changes", self.allow_data_changes),
                "environment": ("allow_environment_changes", self.allow_environment_changes),
            }.get(action.category)
            if gate is not None and not gate[1]:
                return PolicyDecision(
                    verdict="ask",
                    rule=gate[0],
                    reason=f"{action.kind} is a {action.category} change: a person approves it "
                    f"({gate[0]} is off)",
                )
        return PolicyDecision(verdict="apply", rule="allowed", reason="within the policy's bounds")

    def _knob_problem(self, knob: str, value: Any, situation: Situation) -> tuple[str, str] | None:
        bounds = self.knobs.get(knob)
        if bounds is None:
            return "allowlist", f"knob {knob} is not in the policy's [knobs] allowlist"
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None  # a switch (e.g. token_bias cleared): allowed by being listed
        value = float(value)
        if not math.isfinite(value):
            return "bounds", f"{knob} = {value} is not finite"
        if bounds.min is not None and value < bounds.min:
            return "bounds", f"{knob} = {value:g} is below the policy's min {bounds.min:g}"
        if bounds.max is not None and value > bounds.max:
            return "bounds", f"{knob} = {value:g} is above the policy's max {bounds.max:g}"
        current = situation.current.get(knob)
        configured = situation.configured.get(knob)
        if (
            self.restore_configured_exempt
            and isinstance(configured, int | float)
            and abs(value - configured) <= 1e-12 * max(1.0, abs(configured))
        ):
            return None
        if not isinstance(current, int | float) or isinstance(current, bool):
            return None
        current = float(current)
        if bounds.max_delta is not None and abs(value - current) > bounds.max_delta:
            return (
                "max_change",
                f"{knob} {current:g} → {value:g} moves more than max_delta {bounds.max_delta:g}",
            )
        if (
            bounds.max_factor is not None
            and current > 0
            and value > 0
            and max(value / current, current / value) > bounds.max_factor
        ):
            return "max_change", f"{knob} {current:g} → {value:g} changes more than ×{bounds.max_factor:g}"
        return None


class Situation(BaseModel):
    """Where the run stands when a candidate is checked (measured by the supervisor)."""

    incident_step: int
    checkpoint_step: int | None = None
    interventions: int = 0
    steps_since_intervention: int | None = None
    current: dict[str, Any] = Field(default_factory=dict)
    configured: dict[str, Any] = Field(default_factory=dict)


class PolicyDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    rule: str
    reason: str


def _refuse(rule: str, reason: str) -> PolicyDecision:
    return PolicyDecision(verdict="refuse", rule=rule, reason=reason)


DEFAULT_POLICY_TOML = """\
# rftfm safety policy. Rules decide whether a fix touches the run; see rftfm_agent/supervise/policy.py.
mode = "ask"                     # observe: report only | ask: a person approves each fix | auto
max_interventions = 3            # applied fixes per run
cooldown_steps = 3               # steps between interventions
verify_steps = 5                 # steps after a fix before it is kept or undone
require_checkpoint = true        # a checkpoint from before the incident must exist
allow_reward_changes = false     # switching to a fallback reward function needs a person unless true
allow_data_changes = false       # filtering samples / skipping batches needs a person unless true
allow_environment_changes = true # tool-call retries
restore_configured_exempt = true # restoring a knob to its configured value ignores the step limit
on_escalate = "stop"             # stop the run when the supervisor escalates, or "continue" unsupervised

[knobs.learning_rate]
min = 1e-8
max = 1e-3
max_factor = 10.0

[knobs.beta]
min = 0.0
max = 1.0
max_delta = 0.5

[knobs.temperature]
min = 0.2
max = 1.5
max_factor = 5.0

[knobs.top_p]
min = 0.5
max = 1.0
max_delta = 0.5

[knobs.max_completion_length]
min = 1
max = 8192
max_factor = 4.0

[knobs.max_grad_norm]
min = 0.01
max = 100.0

[knobs.warmup_steps]
min = 1
max = 100

[knobs.tool_retries]
min = 1
max = 5

[knobs.token_bias]
"""
