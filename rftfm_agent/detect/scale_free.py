"""Scale-free rules: what a practitioner sees on the curves of a run that has no healthy runs to compare
with — other people's logs, a new task, a run broken from step 1.

Without a healthy band the statistical checks compare a run with its own past, so a run that never worked
looks "normal" to them. These rules need no fitting: each compares the run with its own start, or counts
how often a state that gives no learning occurs, and is stated in units that do not depend on the model,
the task or the reward's scale (shares of steps, ratios to the run's own early level, orders of magnitude).
They are data like the hard rules (`RULES`): a name, a severity, what it means, a confirmation window and
a reference. `ScaleFreeRules` evaluates them on a stream of step rows; the detector uses all of them for runs
it judges in self mode (no healthy band for their task), and the sustained ones for runs judged against a
band too (a KL 1,000× its start is broken whatever the band's calibrated thresholds say).

Two kinds of window:
* *sustained* rules look at a rolling median of the last `CONFIRM` logged values (one odd value is not an
  incident), and fire online;
* *whole-run* rules judge a share or a trend over all steps so far. A run that starts badly and recovers
  is healthy (models often earn no reward for their first steps), so online they wait for `WHOLE_RUN_MIN`
  logged steps; an offline scoring judges them once more at the end of the run (`finish`), for runs of at
  least `FINISH_MIN` steps.

Calibration (2026-12-02): every threshold leaves the runs we judge healthy in ../shared/realruns quiet at
critical level (see evals/realrun_labels.toml and docs/peers.md for the measured margins).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from rftfm_agent.detect.events import Event, RunVerdict, Severity
from rftfm_agent.detect.schedule import LrSchedule

CONFIRM = 3  # logged values a sustained condition is read from (their median)
EARLY = 3  # first finite logged values that make a run's own early level (their median)
WHOLE_RUN_MIN = 50  # online, whole-run rules wait for this many logged steps
FINISH_MIN = 10  # offline, the end-of-run judgement needs at least this many

# The run's zero-signal share: the mean share of prompt groups whose rewards were all equal
# (frac_reward_zero_std), or, where only the reward std is logged, the share of steps with std 0.
NO_SIGNAL_CRITICAL = 0.8  # nothing to learn from on most of the run
NO_SIGNAL_WARNING = 0.4  # much of the compute wasted (healthy real runs: ≤ 0.33; `mini` controls: ≤ 0.35)
LOSS_ZERO_SHARE = 0.9  # loss exactly 0 on this share of steps (and no grad norm logged to say otherwise)
KL_CEILING = 1.0  # nats/token sustained: far from the reference (healthy real runs: ≤ 0.35 sustained)
KL_RUNAWAY = 100.0  # … and this many times the run's early KL: a runaway, not a slow drift
BLOWUP_WARNING = 100.0  # loss or grad norm this many times its early level (healthy real runs: ≤ 31×)
BLOWUP_CRITICAL = 1000.0  # three orders of magnitude: numerically broken
BLOWUP_FLOOR = 0.01  # early levels below this count as this (GRPO's loss starts near 0)
GRAD_SHIFT = 20.0  # gradient norm sustained (median of `CONFIRM`) this many times its early level: the
# updates changed scale (healthy real runs: ≤ 5.1× sustained; `mid` seed 7's 48 controls: ≤ 8.4×; its
# corrupted-gradient and KL-sign runs: 12–300×, 2026-12-03). The loss has no such rule: GRPO's starts at 0.
LR_JUMP = 4.0  # the logged learning rate moved this many times (up or down) from one logged value to the
# next, between two steady stretches: a changed configuration (a resume with another rate, an optimizer
# rebuilt, a scheduler's state lost), not a schedule; transformers' schedules (linear, cosine, constant,
# warm-up, WSD) move it smoothly after warm-up, and a warm-up ramp is not steady
LR_STEADY = 1.5  # a stretch of `CONFIRM` logged rates is steady when its largest is at most this × its
# smallest (the ×2 steps of a linear warm-up are not; `steady_rate`, which triage's tools/fixes also reads)
LR_OFF = 3.0  # the logged learning rate this many times above, or below, what the run's configured
# schedule gives at that step, on `CONFIRM` logged values in a row: not the configured rate. Rates logged
# by the Trainer equal the schedule's to float precision; console logs rounded to one significant digit are
# within 1.5×. RFT-FaultBench's od_lr: ×8 and ×0.1 (hard), ×100 and ×0.01 (easy)
LR_OFF_FLOOR = 0.05  # below-schedule judged only where the schedule gives ≥ 5 % of the base rate (at the
# very start of a warm-up and the end of a decay the expected rate is near 0 and any ratio is noise)
TOOL_METRICS = ("traj/tool_error_rate", "tools/failure_frequency")  # the share of tool calls that failed:
# ours (from trajectories' tool_error_count) and TRL's (`tools/failure_frequency`, a call that raised); the
# first one a run logs is judged
TOOL_FAIL_MOST = 0.5  # half the tool calls failed, sustained: the agent's environment is not working
# (`mini` seed 43 and `mid` seed 7 healthy tool-task runs: ≤ 0.03 at any step; te_tool_error easy, the
# calculator failing 60 % of calls: 0.54-0.74 from its onset, 2026-12-05)
TOOL_FAIL_RISE = 0.1  # the failed share rose this much above its early level, and at least doubled,
# sustained: calls that worked now fail (an outage, a changed API, a sandbox out of resources); a policy that
# learns to call the tool makes its share fall, not rise (te_tool_error hard, 15 % of calls: 0.12-0.27 from
# a start of 0; a sampler at 3x temperature writing malformed calls: 0.34, `mid-s7-0018`)
ENTROPY_COLLAPSE = 0.05  # entropy under 5 % of its start (healthy PPO sharpening: ≥ 10 %)
LENGTH_COLLAPSE = 0.1  # completion length under 10 % of its start …
LENGTH_MIN_START = 20.0  # … when it started at 20 tokens or more
LENGTH_EXPLOSION = 4.0  # completion length over 4× its start
TRUNCATION_RISE = 0.5  # share of completions cut at the cap, and at least twice its start (a model that
# rambles at first and learns to stop — the testbed's warm-up, many SFT'd models — falls, it does not rise)
PLATEAU_Z = 1.0  # last third's mean reward less than 1 standard error above the first third's
KL_DRIFT = 10.0  # KL's last third this many times its early level while the reward has not improved
KL_DRIFT_FLOOR = 1e-3  # early KL levels below this count as this (KL starts at 0 by construction)
DECLINE_SHARE = 0.5  # the smoothed reward gave back half of what it had gained …
DECLINE_Z = 3.0  # … by more than 3 standard errors
COLLAPSE_SHARE = 0.8  # a collapse: it gave back 80 % of its gain …
COLLAPSE_Z = 10.0  # … in a fall of more than 10 standard errors (healthy real runs: ≤ 4.4; collapses in
# logs written to probe the rules, 2026-12-03: 34-85) …
COLLAPSE_RISE = 3.0  # … after a rise of 3 per-step noise levels or more (seen on the raw curve, not only
# on the smoothed one: a reward drifting 0.01 under noise of 0.01 did not learn anything to lose) …
COLLAPSE_HELD = 1  # … held above half its gain for a smoothing window (a tenth of the run) before falling:
# a 10-step excursion is not a level the run reached
TRUNCATION_MOST = 0.9  # nearly every completion cut at the cap, and at least twice its start share …
TRUNCATION_STUCK = 30  # training steps a share that high since the start must last (it never learned to
# stop: models that ramble at first, as the testbed's warm-up and many SFT'd ones, stop within 10-30 steps;
# offline, the run must also still be cut at its end)
SATURATED_TOP = 0.8  # a reward that rose from the bottom half of its range to its top fifth, while the
# groups without signal came with the rise: the run solved its prompts (every sample paid), it did not fail;
# read instead of the critical no-signal rule (a person decides whether to stop). Below that share the
# groups are mixed (some all solved, some all failed: a 0.46 reward with 46 % all-equal groups is not
# "solved"), and the weak-signal warning stands.

# The held-out (validation) score, where the log has one: the outcome a practitioner judges a run by. Its
# noise is not logged, so an accuracy's standard error is taken from its level and a modest evaluation set
# (GSM8K's test set has 1,319 problems, MATH-500 500; a set of 200 is small), and from the scores' own
# scatter when there are enough of them; the larger of the two counts.
HELDOUT_METRICS = ("eval/score", "heldout/accuracy")  # the canonical validation score; the testbed's own
HELDOUT_MIN = 3  # evaluations a run needs before its held-out score is judged
HELDOUT_SAMPLES = 200  # an accuracy is read as measured on at least this many samples
HELDOUT_Z = 3.0  # a fall judged real beyond this many standard errors of the difference of two scores
HELDOUT_FALL_SHARE = 0.25  # … and when it lost at least a quarter of the score it started from
HELDOUT_DECLINE_SHARE = 0.5  # a score that rose and gave back half its gain (or more)
HELDOUT_FLAT_Z = 1.0  # the last score less than one standard error above the first: no gain
# (verl_ppo_qwen25_7b_gsm8k_resumed, healthy, drifts 0.892 → 0.867 over 34 evaluations: no alarm, a
# no-gain warning; the testbed's healthy controls gain ≥ 0.17 in 30 steps; faults that made the model
# worse fell 0.1–0.3 from ~0.28, 2026-12-03)


@dataclass(frozen=True, kw_only=True)
class ScaleFreeRule:
    """A rule that compares a run with its own start: name, severity, meaning, window and source."""

    name: str
    severity: Severity
    description: str
    window: str
    reference: str


DAPO = (
    "DAPO (Yu et al., 2025, arXiv:2503.14476) §3.2: groups whose rewards are all equal have zero advantage "
    "and give GRPO no gradient"
)
ENTROPY_REF = (
    "Cui et al., 2025, 'The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models' "
    "(arXiv:2505.22617): policy entropy collapses early and performance plateaus with it"
)
KL_REF = (
    "Schulman, 'Approximating KL Divergence' (2020) and TRL's logging docs (kl: mean per-token KL to the "
    "reference, https://huggingface.co/docs/trl/logging); Gao et al., 2023 (ICML), reward over-optimisation "
    "grows with the distance from the reference"
)
BLOWUP_REF = (
    "Goodfellow, Bengio & Courville, Deep Learning (2016) §10.11.1: exploding gradients; Pascanu et al., "
    "2013 (ICML), on the difficulty of training recurrent networks: gradient norms that jump by orders of "
    "magnitude precede divergence"
)
LENGTH_REF = (
    "Liu et al., 2025, 'Understanding R1-Zero-Like Training' (Dr. GRPO, arXiv:2503.20783) §3: the length "
    "bias of GRPO's loss drives response length; DAPO §3.4, overlong and collapsing responses"
)
TOOL_REF = (
    "Jin et al., 2025, Search-R1 (arXiv:2503.09516) §3.1: the environment's output is part of every "
    "rollout, so a failing tool changes what the policy is rewarded for; TRL's GRPO tool metrics "
    "(`tools/failure_frequency`: the share of tool calls that raised); RFT-FaultBench te_tool_error"
)
COLLAPSE_REF = (
    "Dohare, Lan & Mahmood, 2023, 'Overcoming Policy Collapse in Deep Reinforcement Learning': PPO's "
    "performance can fall after a period of learning and not come back"
)
PLATEAU_REF = (
    "Andrychowicz et al., 2021, 'What Matters in On-Policy RL' (ICLR): judge a run by its return curve; "
    "a curve that does not rise above its noise has not learned"
)

HELDOUT_REF = (
    "Gao, Schulman & Hilton, 2023 (ICML), 'Scaling Laws for Reward Model Overoptimization' "
    "(arXiv:2210.10760): the optimised reward keeps rising while the true objective peaks and falls; "
    "Prechelt, 1998, 'Early Stopping — But When?': judge training by its validation score"
)

SCALE_FREE_RULES: dict[str, ScaleFreeRule] = {
    r.name: r
    for r in (
        ScaleFreeRule(
            name="no_signal_most_steps",
            severity="critical",
            description=f"≥ {NO_SIGNAL_CRITICAL:.0%} of prompt groups got identical rewards over the run "
            "(mean frac_reward_zero_std, or the share of steps with reward std 0): no learning signal",
            window=f"whole run (online after {WHOLE_RUN_MIN} steps; offline from {FINISH_MIN})",
            reference=DAPO,
        ),
        ScaleFreeRule(
            name="no_signal_many_steps",
            severity="warning",
            description=f"≥ {NO_SIGNAL_WARNING:.0%} of prompt groups got identical rewards over the run: "
            "much of the rollout compute gives no learning signal",
            window=f"whole run (online after {WHOLE_RUN_MIN} steps; offline from {FINISH_MIN})",
            reference=DAPO,
        ),
        ScaleFreeRule(
            name="reward_saturated",
            severity="warning",
            description=f"≥ {NO_SIGNAL_CRITICAL:.0%} of prompt groups got identical rewards, and they came "
            f"as the reward rose from the bottom half of its range to its top {1 - SATURATED_TOP:.0%}: the "
            "run solved its prompts; little is left to learn from them (stop, or add harder prompts)",
            window=f"whole run (online after {WHOLE_RUN_MIN} steps; offline from {FINISH_MIN})",
            reference=DAPO,
        ),
        ScaleFreeRule(
            name="not_learning",
            severity="critical",
            description="the reward has not improved over the run while many steps give no learning "
            "signal: the run is not learning",
            window=f"whole run (online after {WHOLE_RUN_MIN} steps; offline from {FINISH_MIN})",
            reference=f"{DAPO}; {PLATEAU_REF}",
        ),
        ScaleFreeRule(
            name="loss_zero_most_steps",
            severity="warning",
            description=f"loss exactly 0 on ≥ {LOSS_ZERO_SHARE:.0%} of steps and no gradient norm logged: "
            "no gradient, or a loss printed with too few digits",
            window=f"whole run (online after {WHOLE_RUN_MIN} steps; offline from {FINISH_MIN})",
            reference="huggingface/trl#3857 (GRPO loss and grad_norm 0 when every group's rewards are equal)",
        ),
        ScaleFreeRule(
            name="reward_never_changes",
            severity="critical",
            description="the mean reward is identical on every logged step since the start: the reward "
            "function never distinguishes completions",
            window=f"whole run (online after {WHOLE_RUN_MIN} steps; offline from {FINISH_MIN})",
            reference="huggingface/trl#3452 (GRPO reward=0 and loss=0: the reward function never pays)",
        ),
        ScaleFreeRule(
            name="reward_component_stuck",
            severity="warning",
            description="one reward function returned the same mean on every logged step: it never pays "
            "(or always pays) — a verifier bug, or a format the model never produces",
            window=f"whole run (online after {WHOLE_RUN_MIN} steps; offline from {FINISH_MIN})",
            reference="huggingface/trl#3452; Unsloth GRPO notebooks' format rewards that stay 0 when the "
            "regex never matches",
        ),
        ScaleFreeRule(
            name="kl_runaway",
            severity="critical",
            description=f"KL ≥ {KL_CEILING:g} and ≥ {KL_RUNAWAY:g}× its early level, sustained: the policy "
            "runs away from the reference",
            window=f"median of {CONFIRM} logged values",
            reference=KL_REF,
        ),
        ScaleFreeRule(
            name="kl_high",
            severity="warning",
            description=f"KL ≥ {KL_CEILING:g} nats/token, sustained: far from the reference model",
            window=f"median of {CONFIRM} logged values",
            reference=KL_REF,
        ),
        ScaleFreeRule(
            name="loss_blowup",
            severity="critical",
            description=f"|loss| ≥ {BLOWUP_CRITICAL:g}× its early level: numerically broken",
            window="one logged value (a jump of three orders of magnitude is decisive)",
            reference=BLOWUP_REF,
        ),
        ScaleFreeRule(
            name="loss_spike",
            severity="warning",
            description=f"|loss| ≥ {BLOWUP_WARNING:g}× its early level",
            window="one logged value",
            reference=BLOWUP_REF,
        ),
        ScaleFreeRule(
            name="grad_blowup",
            severity="critical",
            description=f"gradient norm ≥ {BLOWUP_CRITICAL:g}× its early level: exploding gradients",
            window="one logged value (a jump of three orders of magnitude is decisive)",
            reference=BLOWUP_REF,
        ),
        ScaleFreeRule(
            name="grad_spike",
            severity="warning",
            description=f"gradient norm ≥ {BLOWUP_WARNING:g}× its early level",
            window="one logged value",
            reference=BLOWUP_REF,
        ),
        ScaleFreeRule(
            name="grad_norm_shift",
            severity="warning",
            description=f"gradient norm ≥ {GRAD_SHIFT:g}× its early level, sustained: the updates changed "
            "scale",
            window=f"{CONFIRM} logged values (their median)",
            reference=BLOWUP_REF,
        ),
        ScaleFreeRule(
            name="lr_jump",
            severity="critical",
            description=f"learning rate moved ≥ {LR_JUMP:g}× from one logged value to the next, steady "
            "before and after: the run's configuration changed mid-run (a scheduler that cuts on a "
            "plateau does this on purpose: ReduceLROnPlateau's default factor is 0.1)",
            window=f"{CONFIRM} logged values each side, each within {LR_STEADY:g}×",
            reference="transformers optimizer schedules (smooth after warm-up): "
            "https://huggingface.co/docs/transformers/main_classes/optimizer_schedules; RFT-FaultBench "
            "od_lr (a learning rate misconfigured mid-run)",
        ),
        ScaleFreeRule(
            name="lr_off_schedule",
            severity="critical",
            description=f"learning rate ≥ {LR_OFF:g}× above, or below, what the run's configured schedule "
            "(learning_rate, lr_scheduler_type, warm-up, total steps) gives at that step: the optimizer does "
            "not use the configured rate (a DeepSpeed or optimizer config whose lr wins, a resume that "
            "restored another rate, a callback that set it); seen from step 1, where `lr_jump` sees nothing",
            window=f"{CONFIRM} logged values in a row, each compared with the schedule one step either side",
            reference="transformers optimizer schedules (the logged rate is the base rate × the schedule's "
            "factor): https://huggingface.co/docs/transformers/main_classes/optimizer_schedules; "
            "huggingface/transformers#9099 (a resumed Trainer takes the rate from the saved scheduler, "
            "not the one set); RFT-FaultBench od_lr",
        ),
        ScaleFreeRule(
            name="tool_failures_most",
            severity="critical",
            description=f"≥ {TOOL_FAIL_MOST:.0%} of tool calls failed, sustained: the environment's tool "
            "does not work (down, timing out, rejecting the calls), or the policy cannot call it",
            window=f"median of {CONFIRM} logged values",
            reference=TOOL_REF,
        ),
        ScaleFreeRule(
            name="tool_failures_rose",
            severity="critical",
            description=f"the share of failed tool calls rose ≥ {TOOL_FAIL_RISE:.0%} above its early level "
            "and at least doubled, sustained: calls that worked now fail",
            window=f"median of {CONFIRM} logged values against the first {EARLY}",
            reference=TOOL_REF,
        ),
        ScaleFreeRule(
            name="entropy_collapse",
            severity="critical",
            description=f"entropy under {ENTROPY_COLLAPSE:.0%} of its start, sustained: the sampler stopped "
            "exploring",
            window=f"median of {CONFIRM} logged values",
            reference=ENTROPY_REF,
        ),
        ScaleFreeRule(
            name="length_collapse",
            severity="critical",
            description=f"completion length under {LENGTH_COLLAPSE:.0%} of its start (≥ {LENGTH_MIN_START:g} "
            "tokens), sustained: the model stopped answering",
            window=f"median of {CONFIRM} logged values",
            reference=LENGTH_REF,
        ),
        ScaleFreeRule(
            name="length_explosion",
            severity="warning",
            description=f"completion length over {LENGTH_EXPLOSION:g}× its start, sustained",
            window=f"median of {CONFIRM} logged values",
            reference=LENGTH_REF,
        ),
        ScaleFreeRule(
            name="truncation_rising",
            severity="warning",
            description=f"≥ {TRUNCATION_RISE:.0%} of completions cut at the length cap, at least twice the "
            "share at the start, sustained",
            window=f"median of {CONFIRM} logged values",
            reference=LENGTH_REF,
        ),
        ScaleFreeRule(
            name="truncation_most",
            severity="critical",
            description=f"≥ {TRUNCATION_MOST:.0%} of completions cut at the length cap, at least twice the "
            "share at the start, sustained: the length ran into the cap",
            window=f"median of {CONFIRM} logged values",
            reference=LENGTH_REF,
        ),
        ScaleFreeRule(
            name="truncation_from_start",
            severity="critical",
            description=f"≥ {TRUNCATION_MOST:.0%} of completions cut at the length cap from the start, "
            f"still so {TRUNCATION_STUCK} training steps later (and at the end of the run, offline): the "
            "answers do not fit the cap (a model that rambles at first and learns to stop falls well below "
            "it by then)",
            window=f"the logged values of the first {TRUNCATION_STUCK} steps (their median) and the last "
            f"{CONFIRM}",
            reference=LENGTH_REF,
        ),
        ScaleFreeRule(
            name="same_length",
            severity="critical",
            description="every completion has the same length (mean = max), sustained: all cut at the cap "
            "or degenerate",
            window=f"{CONFIRM} logged steps in a row",
            reference=LENGTH_REF,
        ),
        ScaleFreeRule(
            name="reward_plateau",
            severity="warning",
            description=f"the reward has not improved over the run (last third < {PLATEAU_Z:g} standard "
            "error above the first third)",
            window=f"whole run (online after {WHOLE_RUN_MIN} steps; offline from {FINISH_MIN})",
            reference=PLATEAU_REF,
        ),
        ScaleFreeRule(
            name="kl_drift_without_gain",
            severity="warning",
            description=f"KL grew ≥ {KL_DRIFT:g}× its early level while the reward did not improve: the "
            "policy moves away from the reference and gains nothing for it",
            window=f"whole run (online after {WHOLE_RUN_MIN} steps; offline from {FINISH_MIN})",
            reference=f"{KL_REF}; {PLATEAU_REF}",
        ),
        ScaleFreeRule(
            name="reward_collapse",
            severity="critical",
            description=f"the smoothed reward gave back ≥ {COLLAPSE_SHARE:.0%} of what it had gained, a fall "
            f"of more than {COLLAPSE_Z:g} standard errors, after a rise of ≥ {COLLAPSE_RISE:g} per-step "
            "noise levels held for a tenth of the run: the run learned and lost it",
            window=f"whole run (online after {WHOLE_RUN_MIN} steps; offline from {FINISH_MIN})",
            reference=COLLAPSE_REF,
        ),
        ScaleFreeRule(
            name="reward_fell",
            severity="critical",
            description=f"the smoothed reward fell from its start by more than {COLLAPSE_Z:g} standard "
            f"errors and lost at least {DECLINE_SHARE:.0%} of its starting level, without rising first: the "
            "run got worse from its first steps",
            window=f"whole run (online after {WHOLE_RUN_MIN} steps; offline from {FINISH_MIN})",
            reference=COLLAPSE_REF,
        ),
        ScaleFreeRule(
            name="heldout_fell",
            severity="critical",
            description=f"the held-out score ended below where it started, by at least "
            f"{HELDOUT_FALL_SHARE:.0%} of its first value and {HELDOUT_Z:g} standard errors: the training "
            "made the model worse at the task",
            window=f"the first and last of ≥ {HELDOUT_MIN} evaluations (online after {WHOLE_RUN_MIN} steps; "
            f"offline from {FINISH_MIN})",
            reference=HELDOUT_REF,
        ),
        ScaleFreeRule(
            name="heldout_decline",
            severity="warning",
            description=f"the held-out score rose, then gave back ≥ {HELDOUT_DECLINE_SHARE:.0%} of its gain, "
            f"by more than {HELDOUT_Z:g} standard errors: a better checkpoint lies behind",
            window=f"≥ {HELDOUT_MIN} evaluations (online after {WHOLE_RUN_MIN} steps; offline from "
            f"{FINISH_MIN})",
            reference=HELDOUT_REF,
        ),
        ScaleFreeRule(
            name="heldout_flat",
            severity="warning",
            description=f"the held-out score did not improve over the run (its last value less than "
            f"{HELDOUT_FLAT_Z:g} standard error above its first)",
            window=f"the first and last of ≥ {HELDOUT_MIN} evaluations (online after {WHOLE_RUN_MIN} steps; "
            f"offline from {FINISH_MIN})",
            reference=HELDOUT_REF,
        ),
        ScaleFreeRule(
            name="reward_decline",
            severity="warning",
            description=f"the smoothed reward gave back ≥ {DECLINE_SHARE:.0%} of its gain, by more than "
            f"{DECLINE_Z:g} standard errors",
            window=f"whole run (online after {WHOLE_RUN_MIN} steps; offline from {FINISH_MIN})",
            reference=PLATEAU_REF,
        ),
    )
}


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def reward_position(level: float, run: np.ndarray | list[float]) -> float:
    """Where a reward level sits between "nothing paid" (0) and "everything paid" (1). A reward that stays
    within [0, 1] over the run is read on its own scale (an accuracy, a pass rate: 0.42 is not "solved"
    because it is the run's best so far); any other reward by its place in the run's own range. A reward
    that never moved sits at 1 when positive (everything paid) and 0 otherwise (nothing paid)."""
    values = np.asarray(run, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:
        return min(1.0, max(0.0, level))
    if high - low < 1e-9:
        return 1.0 if level > 0 else 0.0
    return (level - low) / (high - low)


def _sigma(values: np.ndarray) -> float:
    """A curve's per-step noise σ, from its second differences (x[t+1] − 2x[t] + x[t−1] has variance 6σ²
    for independent noise, and a rise or a fall at a steady pace cancels out of it) through their median
    absolute deviation (× 1.4826: the standard deviation for Gaussian noise), so that the fall being judged
    does not count as noise. The standard deviation of the first differences did: a reward that crashed by
    0.3–0.5 a step had a "noise" so large that its crash was no collapse, and the steeper the crash the
    less it was seen. Falls back to the plain standard deviation where most second differences are equal
    (a coarse or noiseless reward)."""
    if len(values) < 3:
        return 0.0
    second = np.diff(values, 2)
    robust = 1.4826 * float(np.median(np.abs(second - np.median(second))))
    return (robust if robust > 0 else float(np.std(second))) / math.sqrt(6)


class ScaleFreeRules:
    """Streaming scale-free rules; `update(step, row)` returns the events that fire at this step and
    `finish()` the whole-run events an offline scoring adds at the end of the run."""

    def __init__(
        self, online: bool = True, whole_run: bool = True, schedule: LrSchedule | None = None
    ) -> None:
        self.online = online  # offline (a whole run scored at once), whole-run rules wait for `finish`
        self.whole_run = whole_run  # False: the sustained rules only (a run judged against a healthy band)
        self.schedule = schedule  # the configured learning-rate schedule, where the run's config says
        # The newest `CONFIRM` logged rates against the schedule: ("above" / "below" / None, ratio).
        self.off_schedule: deque[tuple[str | None, float]] = deque(maxlen=CONFIRM)
        self.history: dict[str, list[float]] = {}
        self.steps: list[int] = []
        self.zero_signal: list[float] = []  # per step: share of groups without signal
        self.signal_basis = "steps (reward std 0)"
        self.same_length_streak = 0
        self.reward_steps: list[int] = []  # the step of each logged reward (a fall is dated by them)
        self.heldout_steps: dict[str, list[int]] = {}  # the step of each held-out evaluation, per metric
        self.fired: set[str] = set()
        self.first_clip_step: int | None = None  # where the clipped share was first logged: "the start"
        self.stuck_at: tuple[int, float, float] | None = (
            None  # offline: (step, share, early), judged at the end
        )

    # ------------------------------------------------------------------ helpers
    def _fire(
        self, events: list[Event], rule: str, metric: str, step: int, value: float, **evidence: float | str
    ) -> None:
        key = f"{rule}:{metric}"
        if key in self.fired or (rule == "kl_high" and "kl_runaway:kl" in self.fired):
            return
        self.fired.add(key)
        events.append(
            Event(
                step=step,
                metric=metric,
                source="rule",
                check=rule,
                severity=SCALE_FREE_RULES[rule].severity,
                score=math.inf,
                evidence={"value": value, **evidence},
            )
        )

    def _early(self, metric: str, nonzero: bool = False) -> float | None:
        values = [abs(v) for v in self.history.get(metric, []) if not nonzero or v != 0][:EARLY]
        return _median(values) if len(values) == EARLY else None

    def _recent(self, metric: str) -> float | None:
        values = self.history.get(metric, [])
        return _median(values[-CONFIRM:]) if len(values) >= EARLY + CONFIRM else None

    # ------------------------------------------------------------------ streaming
    def update(self, step: int, row: Mapping[str, float | None]) -> list[Event]:
        events: list[Event] = []
        self.steps.append(step)
        for metric, value in row.items():
            if value is not None and isinstance(value, float | int) and math.isfinite(value):
                self.history.setdefault(metric, []).append(float(value))
                if metric == "reward":
                    self.reward_steps.append(step)
                elif metric in HELDOUT_METRICS:
                    self.heldout_steps.setdefault(metric, []).append(step)
        std, frac = row.get("reward_std"), row.get("frac_reward_zero_std")
        if frac is not None and math.isfinite(frac):
            self.zero_signal.append(min(1.0, max(0.0, float(frac))))
            self.signal_basis = "prompt groups"
        elif std is not None and math.isfinite(std):
            self.zero_signal.append(1.0 if abs(std) <= 1e-12 else 0.0)
        self._sustained(events, step, row)
        if self.whole_run and self.online and len(self.steps) >= WHOLE_RUN_MIN:
            self._whole_run(events, step)
        return events

    def finish(self) -> list[Event]:
        """Whole-run rules judged once more on the complete run (offline scoring)."""
        events: list[Event] = []
        if self.whole_run and len(self.steps) >= FINISH_MIN:
            self._whole_run(events, self.steps[-1])
        end = self._recent("completions/clipped_ratio")
        if self.stuck_at is not None and end is not None and end >= TRUNCATION_MOST:
            step, share, early = self.stuck_at  # still cut at the end: it never learned to stop
            self._fire(events, "truncation_from_start", "completions/clipped_ratio", step, share, early=early)
        return events

    def _sustained(self, events: list[Event], step: int, row: Mapping[str, float | None]) -> None:
        kl, kl_early = self._recent("kl"), self._early("kl")
        if kl is not None and kl >= KL_CEILING:
            early = max(kl_early or 0.0, 1e-3)
            if kl >= KL_RUNAWAY * early:
                self._fire(events, "kl_runaway", "kl", step, kl, early=early, ratio=kl / early)
            else:
                self._fire(events, "kl_high", "kl", step, kl, early=early)
        for metric, (spike, blowup) in {
            "loss": ("loss_spike", "loss_blowup"),
            "grad_norm": ("grad_spike", "grad_blowup"),
        }.items():
            value = row.get(metric)
            early = self._early(metric, nonzero=True)
            if value is None or not math.isfinite(value) or early is None:
                continue
            ratio = abs(value) / max(early, BLOWUP_FLOOR)
            if ratio >= BLOWUP_CRITICAL:
                self._fire(events, blowup, metric, step, value, early=early, ratio=ratio)
            elif ratio >= BLOWUP_WARNING:
                self._fire(events, spike, metric, step, value, early=early, ratio=ratio)
        grad, grad_early = self._recent("grad_norm"), self._early("grad_norm", nonzero=True)
        if grad is not None and grad_early is not None:
            ratio = abs(grad) / max(grad_early, BLOWUP_FLOOR)
            if ratio >= GRAD_SHIFT:
                self._fire(events, "grad_norm_shift", "grad_norm", step, grad, early=grad_early, ratio=ratio)
        self._lr_jump(events, step)
        self._lr_off_schedule(events, step, row.get("learning_rate"))
        self._tool_failures(events, step)
        entropy, entropy_early = self._recent("entropy"), self._early("entropy")
        # Some trainers log the entropy term of the loss under an entropy name, negated (Stable-Baselines3's
        # entropy_loss = -H): its size is the entropy (`_early` already reads sizes).
        entropy = abs(entropy) if entropy is not None else None
        if entropy is not None and entropy_early and entropy < ENTROPY_COLLAPSE * entropy_early:
            self._fire(events, "entropy_collapse", "entropy", step, entropy, early=entropy_early)
        length, length_early = self._recent("completion_length"), self._early("completion_length")
        if length is not None and length_early:
            if length_early >= LENGTH_MIN_START and length < LENGTH_COLLAPSE * length_early:
                self._fire(events, "length_collapse", "completion_length", step, length, early=length_early)
            elif length > LENGTH_EXPLOSION * length_early:
                self._fire(events, "length_explosion", "completion_length", step, length, early=length_early)
        cut = row.get("completions/clipped_ratio")
        if cut is not None and math.isfinite(cut) and self.first_clip_step is None:
            self.first_clip_step = step
        clipped, clipped_early = (
            self._recent("completions/clipped_ratio"),
            self._early("completions/clipped_ratio"),
        )
        if clipped is not None and clipped_early is not None:
            logged = self.history["completions/clipped_ratio"]
            stuck = (
                step - (self.first_clip_step or step) + 1 >= TRUNCATION_STUCK
                and min(clipped, clipped_early, float(np.median(logged))) >= TRUNCATION_MOST
            )
            if stuck and self.online:
                self._fire(
                    events,
                    "truncation_from_start",
                    "completions/clipped_ratio",
                    step,
                    clipped,
                    early=clipped_early,
                )
            elif stuck and self.stuck_at is None:
                self.stuck_at = (step, clipped, clipped_early)  # offline: judged at the run's end
            for rule, share in (("truncation_most", TRUNCATION_MOST), ("truncation_rising", TRUNCATION_RISE)):
                if stuck or "truncation_from_start:completions/clipped_ratio" in self.fired:
                    break
                if clipped >= max(share, 2 * clipped_early):
                    self._fire(events, rule, "completions/clipped_ratio", step, clipped, early=clipped_early)
                    break
        mean, top = row.get("completion_length"), row.get("completions/max_length")
        same = mean is not None and top is not None and top > 1 and abs(mean - top) < 1e-9
        self.same_length_streak = self.same_length_streak + 1 if same else 0
        if self.same_length_streak >= CONFIRM:
            self._fire(
                events, "same_length", "completion_length", step, float(mean or 0.0), cap=float(top or 0.0)
            )

    def _tool_failures(self, events: list[Event], step: int) -> None:
        """`tool_failures_most` from the first `CONFIRM` logged shares (a tool broken from step 1 has no
        healthy start to compare with), `tool_failures_rose` once the run has an early level of its own."""
        metric = next((m for m in TOOL_METRICS if m in self.history), None)
        if metric is None:
            return
        shares = self.history[metric]
        if len(shares) < CONFIRM:
            return
        early, recent = self._early(metric), self._recent(metric)
        if early is not None and recent is not None and recent >= max(early + TOOL_FAIL_RISE, 2 * early):
            self._fire(events, "tool_failures_rose", metric, step, recent, early=early)
            return
        now = _median(shares[-CONFIRM:]) or 0.0
        if now >= TOOL_FAIL_MOST and f"tool_failures_rose:{metric}" not in self.fired:
            self._fire(events, "tool_failures_most", metric, step, now, early=early or 0.0)

    def _lr_jump(self, events: list[Event], step: int) -> None:
        """`lr_jump`: the last `CONFIRM` logged rates and the `CONFIRM` before them are each steady, all
        positive, and their medians differ by `LR_JUMP`× or more (fires when the new rate has held)."""
        rates = self.history.get("learning_rate", [])
        if len(rates) < 2 * CONFIRM:
            return
        before, after = rates[-2 * CONFIRM : -CONFIRM], rates[-CONFIRM:]
        if min(before) <= 0 or min(after) <= 0:
            return  # a rate of 0 is `lr_zero`'s
        if not (steady_rate(before) and steady_rate(after)):
            return
        old, new = _median(before) or 0.0, _median(after) or 0.0
        factor = max(new / old, old / new)
        if factor >= LR_JUMP:
            way = "rose" if new > old else "fell"
            self._fire(events, "lr_jump", "learning_rate", step, new, before=old, factor=factor, way=way)

    def _lr_off_schedule(self, events: list[Event], step: int, rate: float | None) -> None:
        """`lr_off_schedule`: the last `CONFIRM` logged rates each `LR_OFF`× above the configured schedule's
        highest rate one step either side, or each `LR_OFF`× below its lowest (where that is at least
        `LR_OFF_FLOOR` of the base). A logged 0 is `lr_zero`'s (or a console's rounding)."""
        if self.schedule is None or rate is None or not math.isfinite(rate) or rate <= 0:
            return
        low, high = self.schedule.bounds(step)
        way, ratio = None, 1.0
        if rate > LR_OFF * high:
            way, ratio = "above", rate / high
        elif low is not None and low >= LR_OFF_FLOOR * self.schedule.learning_rate and rate * LR_OFF < low:
            way, ratio = "below", low / rate
        self.off_schedule.append((way, ratio))
        recent = self.off_schedule
        if len(recent) == CONFIRM and way is not None and all(w == way for w, _ in recent):
            expected = self.schedule.factor(step)
            self._fire(
                events,
                "lr_off_schedule",
                "learning_rate",
                step,
                rate,
                configured=self.schedule.learning_rate,
                expected=self.schedule.learning_rate * expected if expected is not None else high,
                factor=_median([r for _, r in recent]) or ratio,
                way=way,
                scheduler=self.schedule.scheduler,
            )

    def _whole_run(self, events: list[Event], step: int) -> None:
        n = len(self.zero_signal)
        share = sum(self.zero_signal) / n if n else 0.0
        reward = self.history.get("reward", [])
        if n >= FINISH_MIN and share >= NO_SIGNAL_WARNING:
            rule, extra = "no_signal_many_steps", {}
            if share >= NO_SIGNAL_CRITICAL and self._saturated(reward):
                rule = "reward_saturated"
                extra = {
                    "reward": float(np.median(reward[-CONFIRM:])),
                    "first": float(np.median(reward[:EARLY])),
                }
            elif share >= NO_SIGNAL_CRITICAL:
                rule = "no_signal_most_steps"
            self._fire(
                events,
                rule,
                "reward_std",
                step,
                share,
                share=share,
                steps=n,
                basis=self.signal_basis,
                **extra,
            )
        loss = self.history.get("loss", [])
        if len(loss) >= FINISH_MIN and "grad_norm" not in self.history:
            zero = sum(v == 0 for v in loss) / len(loss)
            if zero >= LOSS_ZERO_SHARE:
                self._fire(events, "loss_zero_most_steps", "loss", step, zero, share=zero, steps=len(loss))
        if len(reward) >= FINISH_MIN and max(reward) == min(reward):
            self._fire(events, "reward_never_changes", "reward", step, reward[0], steps=len(reward))
        varies = len(reward) >= FINISH_MIN and max(reward) > min(reward)
        for metric, values in self.history.items():
            if (
                varies
                and metric.startswith("rewards/")
                and metric.endswith("/mean")
                and len(values) >= FINISH_MIN
                and max(values) == min(values)
            ):
                self._fire(events, "reward_component_stuck", metric, step, values[0], steps=len(values))
        self._trend(events, step, reward, share if n >= FINISH_MIN else 0.0)
        self._heldout(events)

    def _heldout(self, events: list[Event]) -> None:
        """The held-out score's course, where the log has one: fell below its start (critical), gave back
        most of a gain (warning), or never rose (warning). One evaluation's standard error is the larger of
        an accuracy's binomial error on `HELDOUT_SAMPLES` samples (for a score within [0, 1]) and the
        scores' own per-evaluation noise (`_sigma`, from five evaluations on); a score outside [0, 1] with
        fewer has no known noise and is not judged."""
        metric = next((m for m in HELDOUT_METRICS if len(self.history.get(m, [])) >= HELDOUT_MIN), None)
        if metric is None:
            return
        v, at = np.asarray(self.history[metric]), self.heldout_steps[metric]
        if at[-1] - at[0] + 1 < FINISH_MIN:
            return
        bounded = float(v.min()) >= 0.0 and float(v.max()) <= 1.0
        noise = _sigma(v) if len(v) >= 5 else 0.0
        if bounded:
            p = float(np.clip(v, 0.0, 1.0)[np.argmin(np.abs(v - 0.5))])  # the level with the widest error
            noise = max(noise, math.sqrt(max(p * (1 - p), 0.01) / HELDOUT_SAMPLES))
        if noise <= 0:
            return
        se = noise * math.sqrt(2)  # of the difference of two evaluations
        start, end = float(v[0]), float(v[-1])
        peak = int(v.argmax())
        best = float(v[peak])
        line = start - max(HELDOUT_FALL_SHARE * abs(start), HELDOUT_Z * se)
        if start - end > HELDOUT_Z * se and start - end >= HELDOUT_FALL_SHARE * abs(start):
            below = np.flatnonzero(v > line)  # dated at the evaluation from which it stayed below the line
            since = int(below[-1]) + 1 if below.size else 0
            self._fire(
                events, "heldout_fell", metric, at[min(since, len(v) - 1)], end, first=start, best=best
            )
        elif (
            best - start > HELDOUT_Z * se
            and best - end > HELDOUT_Z * se
            and best - end >= HELDOUT_DECLINE_SHARE * (best - start)
        ):
            self._fire(
                events, "heldout_decline", metric, at[-1], end, first=start, best=best, best_step=at[peak]
            )
        elif end - start < HELDOUT_FLAT_Z * se:
            self._fire(events, "heldout_flat", metric, at[-1], end, first=start, evaluations=len(v))

    def saturated(self) -> bool:
        """Whether the run so far has solved its prompts (see `_saturated`)."""
        return self._saturated(self.history.get("reward", []))

    def _saturated(self, reward: list[float]) -> bool:
        """Whether the groups without signal are groups the run learned to solve: the reward started in the
        bottom half between nothing paid and everything paid and ends in its top part (`reward_position`),
        its rise is far outside its noise, and the share of all-equal groups grew with it. A run whose
        reward never paid (too hard, a broken verifier) or paid everything from its first step (too easy
        from the start) is not saturated: it learned nothing."""
        if len(reward) < FINISH_MIN or len(self.zero_signal) < FINISH_MIN:
            return False
        r, z = np.asarray(reward), np.asarray(self.zero_signal)
        if float(r.max()) - float(r.min()) <= 0:
            return False
        early, now = float(np.median(r[:EARLY])), float(np.median(r[-CONFIRM:]))
        third = max(3, len(r) // 3)
        first, last = r[:third], r[-third:]
        se = math.sqrt(first.var(ddof=1) / first.size + last.var(ddof=1) / last.size)
        zt = max(3, len(z) // 3)
        return (
            reward_position(early, r) <= 0.5
            and reward_position(now, r) >= SATURATED_TOP
            and float(last.mean() - first.mean()) > DECLINE_Z * se
            and float(z[-zt:].mean()) > float(z[:zt].mean())
        )

    def _trend(self, events: list[Event], step: int, reward: list[float], no_signal: float) -> None:
        if len(reward) < FINISH_MIN:
            return
        if self._fall(events, reward) in ("reward_collapse", "reward_fell"):  # it fell: not a plateau
            return
        r = np.asarray(reward)
        third = max(3, len(r) // 3)
        first, last = r[:third], r[-third:]
        se = math.sqrt(first.var(ddof=1) / first.size + last.var(ddof=1) / last.size)
        gain = float(last.mean() - first.mean())
        if se > 0 and gain < PLATEAU_Z * se:
            self._fire(
                events, "reward_plateau", "reward", step, float(last.mean()), first=float(first.mean())
            )
            # A flat reward that pays most samples (on a [0, 1] scale, at half or more) has little left to
            # learn from its all-equal groups: mostly solved ones (too easy data, a warning), not a run
            # that cannot learn.
            solved = r.min() >= 0 and r.max() <= 1 and reward_position(float(last.mean()), r) >= 0.5
            if no_signal >= NO_SIGNAL_WARNING and not solved:
                self._fire(
                    events,
                    "not_learning",
                    "reward",
                    step,
                    float(last.mean()),
                    first=float(first.mean()),
                    no_signal_share=no_signal,
                )
            kl = self.history.get("kl", [])
            if len(kl) >= FINISH_MIN:
                early = max(float(np.median(kl[:EARLY])), KL_DRIFT_FLOOR)
                late = float(np.median(kl[-max(3, len(kl) // 3) :]))
                if late >= KL_DRIFT * early:
                    self._fire(
                        events, "kl_drift_without_gain", "kl", step, late, early=early, ratio=late / early
                    )

    def _fall(self, events: list[Event], reward: list[float]) -> str | None:
        """A reward that rose and gave much of it back (smoothed over a tenth of the run): a collapse when a
        rise the run held fell by most of its gain, far outside its noise, and is still half lost at the end;
        else a decline (the rule that fired, or None). The event is dated at the first logged reward from
        which the reward stays below the rule's line, not where the smoothing or the run's end saw it."""
        for rule in ("reward_collapse", "reward_fell"):  # online: once fallen, the run stays so judged
            if f"{rule}:reward" in self.fired:
                return rule
        r = np.asarray(reward)
        window = max(5, len(r) // 10)
        if len(r) < 3 * window:
            return None
        smooth = np.convolve(r, np.ones(window) / window, mode="valid")
        peak = int(smooth.argmax())
        early, best, now = float(smooth[0]), float(smooth[peak]), float(smooth[-1])
        trough = float(smooth[peak:].min())  # a collapse may recover part of the way: judged at its bottom
        sigma = _sigma(r)
        noise = sigma / math.sqrt(window)  # the standard error of a window's mean
        gain, drop = best - early, best - now
        if gain <= DECLINE_Z * noise:  # it never rose: did it fall from where it started?
            return self._fell_from_start(events, r, smooth, noise)
        if drop <= DECLINE_Z * noise:
            return None
        step_noise = sigma
        held = int((smooth[: peak + 1] >= early + gain / 2).sum()) >= COLLAPSE_HELD * window
        learned = gain >= COLLAPSE_RISE * step_noise and held
        for rule, share, z, fall in (
            ("reward_collapse", COLLAPSE_SHARE, COLLAPSE_Z, best - trough),
            ("reward_decline", DECLINE_SHARE, DECLINE_Z, drop),
        ):
            # A collapse also needs the run still down at its end (half its gain given back, as a decline):
            # a dip it recovered from is no longer the run's state.
            if rule == "reward_collapse" and not (learned and drop >= DECLINE_SHARE * gain):
                continue
            if fall >= share * gain and fall > z * noise:
                if f"{rule}:reward" in self.fired:  # online this runs each step: date it once
                    return rule
                line = best - share * gain
                # Dated at the first logged reward after the best window from which the reward stays below
                # the line (the median of CONFIRM values): where it fell, not where the smoothing saw it.
                medians = np.median(np.lib.stride_tricks.sliding_window_view(r[peak:], CONFIRM), axis=1)
                below = np.flatnonzero(medians <= line)
                fell_at = peak + int(below[0]) if below.size else len(r) - 1
                at = self.reward_steps[fell_at] if len(self.reward_steps) == len(r) else self.steps[-1]
                value = trough if rule == "reward_collapse" else now
                self._fire(events, rule, "reward", at, value, best=best, early=early, now=now)
                return rule
        return None

    def _fell_from_start(
        self, events: list[Event], r: np.ndarray, smooth: np.ndarray, noise: float
    ) -> str | None:
        """A reward that got worse from its first steps and never rose (a learning rate or KL setting too
        strong from the start, a reward with the wrong sign): critical when the smoothed reward fell more
        than `COLLAPSE_Z` standard errors and lost at least half its (positive) starting level; a decline
        (warning) for a fall as clear that keeps more (a curriculum that gets harder also lowers the
        training reward). Dated where the reward went below the halfway line."""
        early, now = float(smooth[0]), float(smooth[-1])
        lost = early - now
        if lost <= COLLAPSE_Z * noise:
            return None
        rule = "reward_fell" if early > 0 and now <= (1 - DECLINE_SHARE) * early else "reward_decline"
        if f"{rule}:reward" in self.fired:
            return rule
        medians = np.median(np.lib.stride_tricks.sliding_window_view(r, CONFIRM), axis=1)
        below = np.flatnonzero(medians <= early - DECLINE_SHARE * lost)
        fell_at = int(below[0]) if below.size else len(r) - 1
        at = self.reward_steps[fell_at] if len(self.reward_steps) == len(r) else self.steps[-1]
        self._fire(events, rule, "reward", at, now, best=early, early=early, now=now)
        return rule


def steady_rate(rates: Iterable[float]) -> bool:
    """Whether logged learning rates hold within `LR_STEADY`× of each other (a warm-up's steps do not):
    what makes a move between two stretches a changed setting rather than a schedule."""
    values = [float(r) for r in rates]
    return max(values) <= LR_STEADY * min(values)


def without_scale_free(verdict: RunVerdict) -> RunVerdict:
    """The verdict the statistical checks and hard rules alone give (scale-free events left out).

    The fault fingerprint is anchored on this one: the labelled library was fingerprinted that way, and a
    like-for-like comparison needs the same anchor. The scale-free rules speak through the findings.
    """
    events = [e for e in verdict.events if not (e.source == "rule" and e.check in SCALE_FREE_RULES)]
    if len(events) == len(verdict.events):
        return verdict
    return RunVerdict.judge(verdict.run, verdict.mode, events, verdict.score, verdict.missing)
