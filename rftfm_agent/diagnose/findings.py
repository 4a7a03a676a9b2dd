"""Findings: what is wrong with a run in plain words, its likely causes, the numbers, and what to check.

The fault-type ranking compares a run with labelled testbed faults; on other people's runs those types
are often far away and their probabilities low. What a user needs first is the symptom, said plainly
("no learning signal: on 95 % of steps every group got identical rewards"), the causes that usually
produce it, most likely first, and what to check or change first. This module turns the detector's rule
events into such findings, from a table of templates (data, one per rule, each naming the playbook play
that holds its fixes), grouped by topic so that three rules seeing one problem read as one finding.

When the log cannot tell — too few steps, or the reward not logged — the answer is `unknown`, with why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from rftfm_agent.detect.events import SEVERITY_RANK, Event, RunVerdict, Severity, is_alarm
from rftfm_agent.detect.rules import RULES
from rftfm_agent.detect.scale_free import FINISH_MIN, SCALE_FREE_RULES, reward_position

Confidence = Literal["high", "medium", "low"]


class Finding(BaseModel):
    """One problem in plain words, with the evidence behind it and what to do first."""

    model_config = ConfigDict(frozen=True)

    topic: str = Field(description="what the problem is about: 'learning signal', 'KL', 'numerics' …")
    symptom: str = Field(description="one line a person can read, with the run's numbers")
    severity: Severity
    confidence: Confidence
    step: int | None = Field(description="first logged step it was seen at")
    evidence: list[str] = Field(description="the metric evidence, one line per rule that saw it")
    causes: list[str] = Field(description="likely causes, most likely first")
    checks: list[str] = Field(description="what to check or change first")
    play: str | None = Field(default=None, description="the playbook play with candidate fixes")
    rules: list[str] = Field(description="the detector rules behind it")


@dataclass(frozen=True)
class Template:
    topic: str
    symptom: str  # format string over the event's evidence (value, share, ratio, early, steps …)
    causes: tuple[str, ...]
    checks: tuple[str, ...]
    play: str | None = None


_NO_SIGNAL_CAUSES = (
    "the data is too hard for the model: every sample of a prompt fails (reward 0 everywhere)",
    "the data is too easy: every sample of a prompt succeeds",
    "the verifier returns a constant (a parsing bug, a wrong answer key, a format the model never emits)",
    "too few samples per prompt (num_generations) or a sampling temperature too low to vary them",
)
_NO_SIGNAL_CHECKS = (
    "read a few completions with their rewards: do correct answers get paid?",
    "look at the reward per prompt: all 0 (too hard) or all at the maximum (too easy)?",
    "raise num_generations or the temperature; filter prompts whose groups are all equal (DAPO dynamic "
    "sampling)",
)
_REWARD_FN_CAUSES = (
    "the reward function never matches the model's output (a regex or format the model never produces)",
    "the answer extraction or the answer key is wrong",
    "the reward function raises and a default value is returned",
)
_REWARD_FN_CHECKS = (
    "call the reward function by hand on a completion that should score, and on one that should not",
    "print the parsed answer next to the reference answer for a few samples",
)
_TOOL_CAUSES = (
    "the environment's tool is failing: a service down or rate-limited, calls timing out, a sandbox out of "
    "memory or processes",
    "the tool's interface changed (an API, a schema, a version) and calls that worked are rejected",
    "the policy writes calls the tool cannot parse (a sampler too random, a format it never learned)",
)
_TOOL_CHECKS = (
    "read a few failed calls with the tool's reply: an error from the service, or a malformed call?",
    "call the tool by hand with a call from the log that failed; check its service's health and limits",
    "retry failed calls and keep samples whose call still failed out of the loss, so the policy is not "
    "punished for the environment's failures",
)
_KL_CAUSES = (
    "the KL penalty is too weak (beta / kl_coef) for the learning rate",
    "the learning rate is too high",
    "the reward is being exploited: the policy drifts to where the reward pays, away from sensible text",
    "entropy collapsed first and KL grows as a consequence",
)
_KL_CHECKS = (
    "compare the reward with the KL: rising KL with a flat reward is drift without gain",
    "lower the learning rate or raise the KL coefficient; resume from a checkpoint before the climb",
)
_NUMERIC_CAUSES = (
    "a learning rate too high, or a warm-up too short",
    "low-precision overflow (fp16/bf16) or a division by a zero std in the advantage",
    "a corrupt batch (empty completions, extreme rewards)",
)
_NUMERIC_CHECKS = (
    "find the first step with a non-finite or exploding value and the batch it trained on",
    "clip gradients (max_grad_norm), lower the learning rate, resume from the last finite checkpoint",
)
_ENTROPY_CAUSES = (
    "a learning rate too high or too many updates per batch (the policy sharpens too fast)",
    "a sampling temperature too low",
    "no entropy or KL regularisation to hold exploration",
)
_ENTROPY_CHECKS = (
    "read completions: are they near-identical across samples?",
    "lower the learning rate, raise the temperature, or add an entropy bonus / clip-higher (DAPO)",
)
_LENGTH_CAUSES = (
    "a reward term that pays short (or long) answers, which the policy exploits",
    "the length bias of GRPO's per-sequence loss normalisation (Dr. GRPO)",
    "the completion cap (max_completion_length) too small for the task",
)
_LENGTH_CHECKS = (
    "read the shortest and longest completions with their rewards",
    "check max_completion_length against the answers the task needs; check length terms in the reward",
)
_CAP_CAUSES = (
    "the completion cap (max_completion_length) too small for the answers the task needs",
    "completions that never end (repetition, an end-of-sequence token suppressed or missing in the chat "
    "template)",
    "the length bias of GRPO's per-sequence loss normalisation (Dr. GRPO), or a reward term that pays long "
    "answers",
)
_PROGRESS_CAUSES = (
    "the learning signal is too weak (see the other findings) or the learning rate too low",
    "the task is beyond the model, or the reward does not measure the task",
    "the run has already converged (a plateau near the reward's maximum is not a problem)",
)
_PROGRESS_CHECKS = (
    "compare the reward with its maximum possible value: a plateau near it is convergence",
    "check the held-out score; look for zero-variance groups and a stuck reward component",
)

_FALL_CAUSES = (
    "an update too large for the policy (learning rate, clip range, too many epochs on a batch): check "
    "grad norm, KL and clip fraction just before the fall",
    "the reward changed under the run: a verifier or reward server failing, a parsing change, a data shard "
    "of another kind",
    "the policy degenerated (entropy collapse, repetition, length running away or collapsing)",
)
_FALL_CHECKS = (
    "read completions from before and after the fall, and the reward components around it",
    "roll back to a checkpoint before the fall and resume with a smaller learning rate",
)

TEMPLATES: dict[str, Template] = {
    # hard rules
    "non_finite": Template(
        "numerics",
        "numerical failure: {metric} became NaN/Inf at step {step}",
        _NUMERIC_CAUSES,
        _NUMERIC_CHECKS,
        "od_grad",
    ),
    "grad_norm_zero": Template(
        "learning signal",
        "no learning signal: gradient norm exactly 0 from step {step}",
        _NO_SIGNAL_CAUSES,
        _NO_SIGNAL_CHECKS,
        "symptom:no_signal_too_hard",
    ),
    "zero_std_groups": Template(
        "learning signal",
        "no learning signal: every group got identical rewards from step {step}",
        _NO_SIGNAL_CAUSES,
        _NO_SIGNAL_CHECKS,
        "symptom:no_signal_too_hard",
    ),
    "lr_zero": Template(
        "optimiser",
        "learning rate fell to 0 at step {step}: nothing is learned after it",
        (
            "a scheduler that ended early (max_steps smaller than planned)",
            "a resumed run with a spent schedule",
        ),
        ("check the scheduler's total steps against the run's", "resume with a fresh schedule"),
    ),
    "lr_jump": Template(
        "optimiser",
        "learning rate {way} {factor:.0f}× ({before:.3g} → {value:.3g}) between steady stretches, by step "
        "{step}",
        (
            "a resume with another learning rate (a config or a command line that changed)",
            "an optimizer or scheduler rebuilt mid-run (its state lost, its rate set again)",
            "a scheduler that cuts on a plateau (deliberate: check the run's lr_scheduler_type)",
        ),
        ("compare the rate with the run's configured one", "restore the configured rate and resume"),
        "od_lr",
    ),
    "lr_off_schedule": Template(
        "optimiser",
        "learning rate {way} its configured schedule: {value:.3g} at step {step} where the config "
        "({scheduler}, base {configured:.3g}) gives {expected:.3g}, {factor:.0f}× off",
        (
            "an optimizer or DeepSpeed config whose own learning rate wins over the trainer's",
            "a resume that restored the scheduler's rate from the checkpoint, not the one configured now",
            "a callback, wrapper or scheduler rebuilt with another base rate",
        ),
        (
            "compare the optimizer's param_groups lr with the configured learning_rate",
            "restore the configured rate and resume",
        ),
        "od_lr",
    ),
    "lr_logged_zero": Template(
        "optimiser",
        "learning rate logged as 0 from the start",
        ("the logger prints too few digits (verl's console shows 0.000 for 1e-6)", "the learning rate is 0"),
        ("check the learning rate in the run's config",),
    ),
    "all_clipped": Template(
        "length",
        "every completion hits the length cap from step {step}",
        _CAP_CAUSES,
        _LENGTH_CHECKS,
        "symptom:length_at_cap",
    ),
    "constant_reward": Template(
        "reward function",
        "the mean reward stayed at {value:g} for {steps} steps",
        _REWARD_FN_CAUSES,
        _REWARD_FN_CHECKS,
    ),
    "advantage_baseline": Template(
        "advantages",
        "advantages lost their group baseline (mean |group mean| {value:.3g})",
        ("the advantage computation skips the group-mean subtraction", "groups mixed across prompts"),
        ("check the advantage code against GRPO's definition: reward minus its group's mean",),
    ),
    # scale-free rules
    "no_signal_most_steps": Template(
        "learning signal",
        "no learning signal: {share:.0%} of {basis} got identical rewards over {steps} steps",
        _NO_SIGNAL_CAUSES,
        _NO_SIGNAL_CHECKS,
        "symptom:no_signal_too_hard",
    ),
    "reward_saturated": Template(
        "learning signal",
        "the run solved its prompts: the reward rose ({first:.3g} → {reward:.3g}) and {share:.0%} of {basis} "
        "got identical rewards over {steps} steps, so little is left to learn from them",
        (
            "the model has learned this data: its groups are all solved, and all-equal groups give GRPO no "
            "gradient",
            "the verifier pays too easily (check that a wrong answer still gets 0)",
        ),
        (
            "evaluate on held-out prompts: if accuracy there has stopped rising too, stop the run",
            "to go on learning, add harder prompts or filter solved groups (DAPO dynamic sampling)",
        ),
        "symptom:no_signal_too_easy",
    ),
    "no_signal_many_steps": Template(
        "learning signal",
        "weak learning signal: {share:.0%} of {basis} got identical rewards over {steps} steps",
        _NO_SIGNAL_CAUSES,
        _NO_SIGNAL_CHECKS,
        "symptom:no_signal_too_hard",
    ),
    "not_learning": Template(
        "progress",
        "not learning: the reward is flat ({first:.3g} → {value:.3g}) while {no_signal_share:.0%} of steps "
        "give no learning signal",
        _NO_SIGNAL_CAUSES + _PROGRESS_CAUSES[1:2],
        _NO_SIGNAL_CHECKS,
        "symptom:no_signal_too_hard",
    ),
    "loss_zero_most_steps": Template(
        "learning signal",
        "possibly no learning signal: loss exactly 0 on {share:.0%} of {steps} steps (no gradient norm "
        "logged to confirm; or the loss is printed with too few digits)",
        _NO_SIGNAL_CAUSES,
        ("log the gradient norm to tell a zero gradient from rounding", *_NO_SIGNAL_CHECKS),
    ),
    "reward_never_changes": Template(
        "learning signal",
        "no learning signal: the reward is {value:g} on every one of {steps} steps",
        _REWARD_FN_CAUSES + _NO_SIGNAL_CAUSES[:2],
        _REWARD_FN_CHECKS,
    ),
    "reward_component_stuck": Template(
        "reward function",
        "reward function {component} returned {value:g} on all {steps} steps",
        _REWARD_FN_CAUSES,
        _REWARD_FN_CHECKS,
    ),
    "kl_runaway": Template(
        "KL",
        "KL runaway: {value:.3g} sustained, {ratio:.0f}× its early level ({early:.2g})",
        _KL_CAUSES,
        _KL_CHECKS,
        "od_kl",
    ),
    "kl_high": Template(
        "KL", "KL high: {value:.3g} sustained (early {early:.2g})", _KL_CAUSES, _KL_CHECKS, "od_kl"
    ),
    "kl_drift_without_gain": Template(
        "KL",
        "KL drift without gain: KL {value:.3g}, {ratio:.0f}× its early level, while the reward did not "
        "improve",
        _KL_CAUSES,
        _KL_CHECKS,
        "od_kl",
    ),
    "loss_blowup": Template(
        "numerics",
        "loss blow-up: {value:.3g} at step {step}, {ratio:.0f}× its early level",
        _NUMERIC_CAUSES,
        _NUMERIC_CHECKS,
        "od_lr",
    ),
    "loss_spike": Template(
        "numerics",
        "loss spike: {value:.3g} at step {step}, {ratio:.0f}× its early level",
        _NUMERIC_CAUSES,
        _NUMERIC_CHECKS,
        "od_lr",
    ),
    "grad_blowup": Template(
        "numerics",
        "gradient norm blow-up: {value:.3g} at step {step}, {ratio:.0f}× its early level",
        _NUMERIC_CAUSES,
        _NUMERIC_CHECKS,
        "od_grad",
    ),
    "grad_spike": Template(
        "numerics",
        "gradient norm spike: {value:.3g} at step {step}, {ratio:.0f}× its early level",
        _NUMERIC_CAUSES,
        _NUMERIC_CHECKS,
        "od_grad",
    ),
    "grad_norm_shift": Template(
        "numerics",
        "gradient norm up {ratio:.0f}× from its early level ({early:.3g} → {value:.3g} sustained, from step "
        "{step})",
        _NUMERIC_CAUSES,
        _NUMERIC_CHECKS,
        "od_grad",
    ),
    "entropy_collapse": Template(
        "entropy",
        "entropy collapse: {value:.3g}, under 5 % of its start ({early:.3g})",
        _ENTROPY_CAUSES,
        _ENTROPY_CHECKS,
        "symptom:entropy_collapse_kl_explosion",
    ),
    "length_collapse": Template(
        "length",
        "length collapse: completions {value:.3g} tokens, from {early:.3g} at the start",
        _LENGTH_CAUSES,
        _LENGTH_CHECKS,
    ),
    "length_explosion": Template(
        "length",
        "length explosion: completions {value:.3g} tokens, from {early:.3g} at the start",
        _LENGTH_CAUSES,
        _LENGTH_CHECKS,
    ),
    "truncation_most": Template(
        "length",
        "length ran into the cap: {value:.0%} of completions cut at the length cap, from {early:.0%} at "
        "the start",
        _CAP_CAUSES,
        _LENGTH_CHECKS,
        "symptom:length_at_cap",
    ),
    "truncation_from_start": Template(
        "length",
        "completions cut at the length cap from the start: {value:.0%} of them ({early:.0%} at first)",
        _CAP_CAUSES,
        _LENGTH_CHECKS,
        "symptom:length_at_cap",
    ),
    "truncation_rising": Template(
        "length",
        "truncation rising: {value:.0%} of completions cut at the length cap, from {early:.0%} at the start",
        _LENGTH_CAUSES,
        _LENGTH_CHECKS,
    ),
    "same_length": Template(
        "length",
        "every completion has the same length ({value:g} tokens) from step {step}: truncated at "
        "the cap or degenerate",
        _LENGTH_CAUSES,
        _LENGTH_CHECKS,
    ),
    "reward_plateau": Template(
        "progress",
        "reward plateau: no improvement over the run ({first:.3g} → {value:.3g})",
        _PROGRESS_CAUSES,
        _PROGRESS_CHECKS,
    ),
    "reward_decline": Template(
        "progress",
        "reward decline: {value:.3g} now, from a best of {best:.3g} (around step {step})",
        _FALL_CAUSES,
        _FALL_CHECKS,
    ),
    "reward_fell": Template(
        "progress",
        "reward fell from the start: {early:.3g} at first, under half of it from around step {step} "
        "({now:.3g} at the end), never having risen: the run got worse from its first steps",
        (
            "a setting too strong from the start: the learning rate (grad norm and KL high from the first "
            "steps), a clip range or a KL coefficient with the wrong sign",
            "the reward's sign or scale is wrong: the policy optimises against the task",
            *_FALL_CAUSES[1:],
        ),
        (
            "compare grad norm, KL and entropy of the first steps with a run of this model that worked",
            "restart from the initial model with a 10× smaller learning rate; score a correct and a wrong "
            "answer with the reward function by hand",
        ),
    ),
    "heldout_fell": Template(
        "progress",
        "held-out score fell: {first:.3g} at the first evaluation, {value:.3g} at the last, below the start "
        "from step {step}: the training made the model worse at the task",
        (
            "an update too large for the policy (learning rate, clip range) or a KL penalty too weak: grad "
            "norm, KL and entropy move with the fall",
            "the reward does not measure the task (a wrong sign, a shortcut it pays, a wrong answer key)",
            "the training prompts differ from the held-out task (another format or domain)",
        ),
        (
            "roll back to the checkpoint with the best held-out score; resume from it with a 10× smaller "
            "learning rate",
            "plot the training reward beside the held-out score: moving apart, the reward is wrong; falling "
            "together, the update is",
        ),
    ),
    "heldout_decline": Template(
        "progress",
        "held-out score declined: {value:.3g} at the end, from a best of {best:.3g} at step {best_step} (it "
        "started at {first:.3g})",
        (
            "the policy over-optimises the training reward past the point where it tracks the task",
            *_FALL_CAUSES,
        ),
        (
            "keep the checkpoint with the best held-out score",
            "resume from it with a smaller learning rate or a stronger KL penalty",
        ),
    ),
    "heldout_flat": Template(
        "progress",
        "held-out score did not improve: {first:.3g} → {value:.3g} over {evaluations} evaluations",
        _PROGRESS_CAUSES,
        _PROGRESS_CHECKS,
    ),
    "tool_failures_most": Template(
        "tools",
        "tool calls failing: {value:.0%} of them failed (median of the last logged steps, from {early:.0%} "
        "at the start), by step {step}",
        _TOOL_CAUSES,
        _TOOL_CHECKS,
        "te_tool_error",
    ),
    "tool_failures_rose": Template(
        "tools",
        "tool calls started failing: {value:.0%} of them failed by step {step}, from {early:.0%} at the "
        "start",
        _TOOL_CAUSES,
        _TOOL_CHECKS,
        "te_tool_error",
    ),
    "reward_collapse": Template(
        "progress",
        "reward collapse: the reward fell from a best of {best:.3g} to {value:.3g} around step {step} "
        "(it started at {early:.3g}; {now:.3g} at the end): the run learned and lost it",
        _FALL_CAUSES,
        _FALL_CHECKS,
    ),
}


# The topic of a statistical alarm (band, own past, run profile): what its metric is about.
METRIC_TOPICS: dict[str, str] = {
    "reward": "progress",
    "reward_std": "learning signal",
    "frac_reward_zero_std": "learning signal",
    "traj/advantage_abs_mean": "learning signal",
    "kl": "KL",
    "entropy": "entropy",
    "traj/repetition_ratio_mean": "entropy",
    "traj/unique_token_ratio_mean": "entropy",
    "traj/distinct_completion_frac": "entropy",
    "loss": "numerics",
    "grad_norm": "numerics",
    "learning_rate": "optimiser",
    "completion_length": "length",
    "completions/clipped_ratio": "length",
    "traj/response_length_mean": "length",
    "traj/truncated_frac": "length",
    "traj/tool_error_rate": "tools",
    "tools/failure_frequency": "tools",
    "traj/reward_neg_frac": "reward function",
    "traj/reward_mismatch_frac": "reward function",
    "traj/adv_reward_discord_frac": "advantages",
    "traj/advantage_group_mean_abs": "advantages",
    "traj/advantage_group_std_mean": "advantages",
}
_TOPIC_CAUSES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "progress": (_PROGRESS_CAUSES, _PROGRESS_CHECKS),
    "learning signal": (_NO_SIGNAL_CAUSES, _NO_SIGNAL_CHECKS),
    "KL": (_KL_CAUSES, _KL_CHECKS),
    "entropy": (_ENTROPY_CAUSES, _ENTROPY_CHECKS),
    "numerics": (_NUMERIC_CAUSES, _NUMERIC_CHECKS),
    "length": (_LENGTH_CAUSES, _LENGTH_CHECKS),
    "reward function": (_REWARD_FN_CAUSES, _REWARD_FN_CHECKS),
    "tools": (_TOOL_CAUSES, _TOOL_CHECKS),
}
_AGAINST = {"band": "healthy runs of its task", "self": "the run's own past", "profile": "healthy runs"}


def _alarm_line(e: Event) -> str:
    if e.source == "profile":
        return f"unusual {e.metric} over the run compared with {_AGAINST['profile']} (run profile)"
    return f"{e.metric} broke away from {_AGAINST[e.source]} at step {e.step} ({e.check})"


def _describe(rule: str) -> str:
    """What a rule (or a statistical check, by its kind) means."""
    if rule in RULES:
        return RULES[rule].description
    if rule in SCALE_FREE_RULES:
        return SCALE_FREE_RULES[rule].description
    if rule == "profile":
        return "the run-level profile score against healthy runs"
    return "a statistical change detector (shewhart / ewma / cusum / bocpd; see `rftfm detect`)"


def _text(template: str, evidence: dict[str, Any], step: int, metric: str) -> str:
    component = metric.removeprefix("rewards/").removesuffix("/mean")
    fields = {"step": step, "metric": metric, "component": component, "steps": "", "share": 0.0, "ratio": 0.0}
    fields.update({k: v for k, v in evidence.items() if isinstance(v, int | float | str)})
    try:
        return template.format(**fields)
    except (KeyError, ValueError, TypeError):
        return template.split(":")[0]


# Rules whose `value` is the metric's level when they fired: a finding also says where it ended.
_LEVEL_RULES = frozenset(
    {"entropy_collapse", "length_collapse", "length_explosion", "truncation_rising", "truncation_most"}
    | {"truncation_from_start"}
    | {"kl_high", "kl_runaway", "grad_norm_shift"}
)
_MOVED = 0.2  # … when the last value is this share (or more) away from the one quoted


def _since(e: Event, frame: pd.DataFrame) -> str:
    """Where the metric ended ("; 3.9 at the last step (210)") when it went on past the level the rule
    fired at (a length that fired at 21 tokens and ended at 4, a truncation share that fired at 93 % and
    ended at 99 %); else nothing."""
    value = e.evidence.get("value")
    if e.check not in _LEVEL_RULES or e.metric not in frame.columns or not isinstance(value, int | float):
        return ""
    logged = frame[["step", e.metric]].dropna()
    logged = logged[logged[e.metric].map(math.isfinite)]
    if logged.empty or int(logged["step"].iloc[-1]) <= e.step:
        return ""
    last = float(logged[e.metric].iloc[-1])
    if abs(last - value) < _MOVED * max(abs(value), 1e-12):
        return ""
    shown = f"{last:.0%}" if e.metric == "completions/clipped_ratio" else f"{last:.3g}"
    return f"; {shown} at the last step ({int(logged['step'].iloc[-1])})"


# Hard rules that fire once a state has held for a few steps (`rules.PATIENCE`, `CONSTANT_STEPS`): the
# finding names where the state began and how long it held, not the few steps that confirmed it.
_STREAK_RULES = frozenset({"grad_norm_zero", "zero_std_groups", "all_clipped", "constant_reward", "lr_zero"})
_FULL = 0.999  # a share at or above this is "every" (the rules' own bar)


def _streak(e: Event, frame: pd.DataFrame) -> tuple[int, int | None]:
    """(first step, logged steps) of the run of rows around a streak rule's firing step in which its
    metric kept the state that fired it ("gradient norm exactly 0 from step 3" read for a run dead from
    step 1, "stayed at 0 for 6 steps" for 200); (the event's step, None) for other rules."""
    value = e.evidence.get("value")
    if e.check not in _STREAK_RULES or e.metric not in frame.columns or not isinstance(value, int | float):
        return e.step, None
    logged = frame[["step", e.metric]].dropna()
    held = (
        (logged[e.metric] >= _FULL)
        if value >= _FULL and e.check != "constant_reward"
        else logged[e.metric] == value
    )
    steps, held = logged["step"].to_numpy(), held.to_numpy()
    at = np.flatnonzero(steps == e.step)
    if at.size == 0 or not held[at[0]]:
        return e.step, None
    first = last = int(at[0])
    while first > 0 and held[first - 1]:
        first -= 1
    while last + 1 < len(held) and held[last + 1]:
        last += 1
    return int(steps[first]), last - first + 1


_HACKING_CAUSES = (
    "the reward pays a shortcut (a format or keyword check, a verifier that accepts a bare or empty "
    "answer), which the policy found",
    "a length term in the reward that pays short answers",
)
_HACKING_CHECKS = (
    "read the shortest completions that got the highest rewards: do they solve the task?",
    "score a sample with a stricter verifier or by hand; compare with the logged reward",
)
_STOPPED_PAYING = (
    "the reward stopped paying after the run had learned (its reward collapsed): a verifier or reward "
    "server failing, a changed answer format, not data that got harder"
)
_DIVERGED_CAUSES = (
    "the reward pays for something other than the task: a shortcut (a format or keyword check, a lenient "
    "verifier), a wrong answer key, or a sign flipped somewhere between the verifier and the trainer",
    "the training prompts differ from the held-out task: the run learns them and not the task",
)
_DIVERGED_CHECKS = (
    "read completions that got the highest rewards: are they right? score them with the held-out grader",
    "score a correct and a wrong answer with the training reward function by hand",
)
_HELDOUT_RULES = frozenset({"heldout_fell", "heldout_decline", "heldout_flat"})
HACKING_Z = 3.0  # the reward's last third this many standard errors above its first third


def _reward_rose(frame: pd.DataFrame) -> tuple[float, float] | None:
    """(first third's mean, last third's) of a reward that rose clearly over the run and is still up at its
    end, else None (a reward that fell with the length is not paying a shortcut)."""
    if "reward" not in frame.columns:
        return None
    reward = frame["reward"].dropna()
    reward = reward[reward.map(math.isfinite)].to_numpy()
    if len(reward) < 9:
        return None
    third = len(reward) // 3
    first, middle, last = reward[:third], reward[third:-third], reward[-third:]
    se = math.sqrt(first.var(ddof=1) / first.size + last.var(ddof=1) / last.size)
    gain = float(last.mean() - first.mean())
    if gain <= HACKING_Z * max(se, 1e-12) or last.mean() < middle.mean() - se:  # risen, and still up
        return None
    return float(first.mean()), float(last.mean())


# Plays of findings that explain others of the same severity, so they lead: completions cut at the cap earn
# nothing (the groups are all equal, the reward flat), a reward paid for a shortcut makes groups "solved".
_EXPLAINS_OTHERS = frozenset({"symptom:length_at_cap", "symptom:reward_hacking"})
_FALLS = frozenset(
    {"reward_collapse", "reward_fell"}
)  # a reward that stopped paying: its groups go all equal


def findings_for(verdict: RunVerdict, frame: pd.DataFrame) -> list[Finding]:
    """The run's findings, worst first: one per topic, from the detector's rule events; `unknown` when
    the log cannot tell; none for a run with nothing to report."""
    by_topic: dict[str, list[tuple[str, str, Severity, int, str]]] = {}
    fell = any(e.check in ("reward_decline", "reward_collapse", "reward_fell") for e in verdict.events)
    collapsed = any(e.check == "reward_collapse" for e in verdict.events)
    for e in verdict.events:
        if e.source == "rule" and e.check in TEMPLATES:
            t = TEMPLATES[e.check]
            start, length = _streak(e, frame)
            evidence = {**e.evidence, "steps": length} if length else e.evidence
            line = _text(t.symptom, evidence, start, e.metric) + _since(e, frame)
            if isinstance(ended := e.evidence.get("ended_at"), int | float):
                # A no-signal streak the run started in and left (the detector's slow start): say so.
                line += f"; a learning signal from step {int(ended)} on (a slow start)"
            if e.evidence.get("solved"):
                line += ", as the reward reached the top of its range: the run solved its prompts"
            by_topic.setdefault(t.topic, []).append((e.check, line, e.severity, e.step, e.metric))
        elif e.source != "rule" and is_alarm(e, verdict.mode):
            topic = METRIC_TOPICS.get(e.metric, "other")
            by_topic.setdefault(topic, []).append((e.kind, _alarm_line(e), e.severity, e.step, e.metric))
    out = []
    for topic, hits in by_topic.items():
        hits.sort(key=lambda h: (-SEVERITY_RANK[h[2]], h[3]))
        lead_rule, lead_line, severity, _, _ = hits[0]
        causes_checks = _TOPIC_CAUSES.get(
            topic, ((), ("plot the metric and read the completions around it",))
        )
        t = TEMPLATES.get(lead_rule) or Template(topic, lead_line, *causes_checks)
        if lead_rule == "non_finite":
            bad = list(dict.fromkeys(h[4] for h in hits if h[0] == "non_finite"))
            lead_line = _text(t.symptom, {}, hits[0][3], ", ".join(bad[:6]))
        causes, play = list(t.causes), t.play
        if lead_rule == "length_collapse" and not fell and (rise := _reward_rose(frame)) is not None:
            # Completions collapsing while the reward climbs: the policy found what the reward pays.
            first, last = rise
            lead_line = (
                f"reward hacking suspected: the reward rose ({first:.3g} → {last:.3g}) while completions "
                f"collapsed ({lead_line.partition(': ')[2] or lead_line})"
            )
            causes, play = list(_HACKING_CAUSES), "symptom:reward_hacking"
            t = Template(topic, lead_line, _HACKING_CAUSES, _HACKING_CHECKS, play)
        if lead_rule in _HELDOUT_RULES and (rise := _reward_rose(frame)) is not None:
            # The training reward rose while the held-out score did not follow: the reward is not the task
            # (over-optimisation of a proxy, Gao et al. 2023), whatever the update does.
            first, last = rise
            what, _, numbers = lead_line.partition(": ")
            lead_line = f"the training reward rose ({first:.3g} → {last:.3g}) while the {what} ({numbers})"
            causes, play = list(_DIVERGED_CAUSES), "symptom:reward_hacking"
            t = Template(topic, lead_line, _DIVERGED_CAUSES, _DIVERGED_CHECKS, play)
        if play == "symptom:no_signal_too_hard" and collapsed:
            # Groups all equal after the run had learned and its reward collapsed: the reward stopped paying
            # (a verifier or reward server failing), not data that got harder; no data play.
            play = None
            causes = [_STOPPED_PAYING, *causes]
        elif play == "symptom:no_signal_too_hard" and _solved(frame):
            # All-equal groups at a high reward: the data is too easy, not too hard (opposite fixes).
            play = "symptom:no_signal_too_easy"
            causes[0], causes[1] = causes[1], causes[0]
        rules = list(dict.fromkeys(h[0] for h in hits))
        corroborated = len(rules) > 1
        confidence: Confidence = (
            "high"
            if severity == "critical" and corroborated
            else "medium"
            if severity == "critical" or corroborated
            else "low"
        )
        out.append(
            Finding(
                topic=topic,
                symptom=lead_line,
                severity=severity,
                confidence=confidence,
                step=min(h[3] for h in hits),
                evidence=[f"{h[1]} [{h[0]}: {_describe(h[0])}]" for h in hits],
                causes=causes,
                checks=list(t.checks),
                play=play,
                rules=rules,
            )
        )
    out.sort(
        key=lambda f: (
            -SEVERITY_RANK[f.severity],
            f.play not in _EXPLAINS_OTHERS and not _FALLS & set(f.rules),
            {"high": 0, "medium": 1, "low": 2}[f.confidence],
        )
    )
    if not any(f.severity == "critical" for f in out):
        unknown = _cannot_tell(frame)
        if unknown is not None:
            out.insert(0, unknown)
    return out


def _solved(frame: pd.DataFrame) -> bool:
    """Whether the recent reward sits in the upper half between nothing paid and everything paid."""
    if "reward" not in frame:
        return False
    r = pd.to_numeric(frame["reward"], errors="coerce").dropna()
    if r.empty:
        return False
    return reward_position(float(r.tail(3).median()), r.to_numpy()) >= 0.5


TOO_EARLY = 30  # optimizer steps: fewer than this and a run without a critical finding is "unknown"


def _cannot_tell(frame: pd.DataFrame) -> Finding | None:
    """An `unknown` finding when the log is too short or lacks the reward: silence would read as health."""
    steps = frame["step"] if "step" in frame else pd.Series(dtype=float)
    span = int(steps.max() - steps.min() + 1) if len(steps) else 0
    reward = frame["reward"].notna().sum() if "reward" in frame else 0
    why = None
    if reward == 0:
        why = "the log has no reward, so whether the run learns cannot be read from it"
    elif span < TOO_EARLY or len(steps) < FINISH_MIN:
        why = f"only {span} steps logged ({len(steps)} rows): too early to tell whether the run learns"
    if why is None:
        return None
    return Finding(
        topic="unknown",
        symptom=f"unknown: {why}",
        severity="info",
        confidence="low",
        step=None,
        evidence=[why],
        causes=[],
        checks=["log more steps (or the reward) and run the diagnosis again"],
        rules=[],
    )


def headline(findings: list[Finding], verdict: RunVerdict) -> str:
    """The symptom in one line: the worst finding; for a healthy run, that it is healthy (and what is
    worth a look); else what the alarms are about."""
    lead = findings[0] if findings else None
    if lead is not None and (lead.severity == "critical" or lead.topic == "unknown"):
        return lead.symptom
    if verdict.verdict == "healthy":
        look = f" (worth a look: {lead.symptom})" if lead is not None else ""
        return f"healthy: nothing critical in the log{look}"
    if lead is not None:
        return lead.symptom
    return "anomalous " + ", ".join(dict.fromkeys(e.metric for e in verdict.alarms))
