"""Symptoms: patterns in a run's own recent rows that change what a fix should be, whatever the
diagnosis.

    symptoms(rows)  ->  e.g. ["no_signal_too_easy"], ["gradient_spikes"], ["reward_inconsistent"], []

Zero-signal is read from the run's own numbers (the share of all-equal groups, where its reward sits in
its own range) and, with a healthy band for its task, must also lie above that band; entropy collapse
with KL explosion is read against the band, or without one only at the extremes of the run's own past;
gradient spikes are read from the run's own gradient norms (scale-free: no band knows a real run's norm);
an inconsistent reward is the same completion paid differently within one group, at any newest row.
The playbook has a play per symptom (`symptom:<name>`); the planner uses one when the diagnosis is not
confident enough to act on and the play has a fix to try, and puts "fix entropy first" ahead of the
diagnosis's own fixes when entropy collapse and KL explosion come together.

Why these: zero-variance groups give GRPO no learning signal, and the fix is opposite for data that
is too easy (every sample solved: filter those groups, add harder prompts) and too hard (every sample
failed: easier prompts or a warm-up, never a filter that would leave nothing to learn from); and when the
sampler's entropy collapses, KL grows as a consequence, so raising the KL penalty treats the symptom.
Gradient spikes repeated within a few steps (a corrupted or exploding gradient) have one first response
whatever caused them — clip, and skip the updates that spike — which the fault types, learned on other
runs, may not name: a corrupted gradient from step 1 was read as a KL fault, under the bar, and escalated.
A reward that pays one completion text two ways within a group is not a function of the completion: a
rule-based verifier never does it, so its reward is noisy, partly flipped or lenient at random, or the
rewards reach the wrong samples. The first two are the verifier's, and a fallback verifier the user
registered is the fix to try when no fault type is confident (the re-check undoes it when the alarm
stays, as it does when the batching is at fault): a lenient verifier paying 30 % of shortcut answers was
read as a credit-assignment fault, under the bar, and escalated, which stopped a run that doing nothing
would have left 0.14 higher in held-out accuracy (`mid` seed 7, `mid-s7-0090`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from rftfm_agent.detect.scale_free import reward_position

Symptom = Literal[
    "no_signal_too_easy",
    "no_signal_too_hard",
    "entropy_collapse_kl_explosion",
    "reward_hacking",
    "length_at_cap",
    "gradient_spikes",
    "reward_inconsistent",
]
# (reward_hacking and length_at_cap come from the findings, `diagnose.findings`: a length collapse while
# the reward rises; nearly every completion cut at the length cap)

RECENT = 3  # logged rows the symptoms are read from (the newest ones)
EARLY = 3  # logged rows the run's own baseline is read from (the oldest ones)
NO_SIGNAL_FRAC = 0.6  # groups with all-equal rewards: above this share GRPO has little left to learn from
# (DAPO, arXiv:2503.14476 §3.2, filters exactly these groups). Healthy runs get there too once they have
# learned their data: on `mid` (seed 7) the healthy controls' highest 3-step median share is 0.56 (median
# over controls), 0.75 (p90). That is right — the data has become too easy — but not a fault: with a
# healthy band the share must also lie above it (robust z > BAND_Z).
EASY_SHARE = 0.5  # recent reward in the upper half of the run's own reward range: groups all solved
BAND_Z = 3.0  # against a healthy band: entropy below −3 and KL above +3 robust z at once
# Without a healthy band, only an extreme pair counts: healthy testbed runs lose up to 82 % of their early
# entropy and reach a KL of up to 1.17 while learning (`mid`, seed 7, 48 controls), so a run's own past
# cannot tell a collapse from learning to stop, except at these extremes.
SELF_ENTROPY_SHARE = 0.1  # recent entropy under this share of its early median …
SELF_KL = 2.0  # … and KL above this
SPIKE_FACTOR = 30.0  # a gradient norm this many times the lower quartile of the run's logged norms is a
# spike (the quartile, as the update guard's reference, so that spikes do not raise it). Measured with the
# newest `SPIKE_WINDOW` rows at every step, 2026-12-04: healthy testbed runs reach at most 14× (`mid` seed 7,
# 48 controls), and two spikes in a window never (0 / 48, `mini` seed 31 0 / 16, `full` seed 0 0 / 204);
# corrupted gradients (`od_grad` easy: random gradients 100× the true norm on half the steps) reach
# 136-312× within 7-16 steps (6 / 6). Healthy real runs: ≤ 5.4×, except isolated spikes of a LoRA run
# (unsloth_llama31_8b_gsm8k_grpo: 260× at steps 5, 76 and 84, never two in a window at its end).
SPIKE_WINDOW = 2 * RECENT  # newest logged rows the spikes are counted in …
SPIKES_MIN = 2  # … and how many it takes: one spike can be a hard batch; repeated ones are a pattern
MISMATCH = "traj/reward_mismatch_frac"  # share of groups whose identical completions got different rewards
# (telemetry/aggregates.py). Healthy testbed runs: exactly 0 at every step (`mid` seed 7, 48 controls); with
# a rule-based verifier it cannot be otherwise, so one row in the newest `SPIKE_WINDOW` is evidence. Faults
# that make it (`mid` seed 7): rf_noise 8 / 8 runs, rf_sign_flip 8 / 8, ca_group_misalign 8 / 8, rf_hackable
# hard 2 / 4 (sparsely: 0.08 at 3 of 30 steps), no other type. A run judged by a sampled LLM judge repeats
# itself less exactly: with a healthy band for its task, the share must also lie above that band.


class Band(Protocol):
    def z(self, metric: str, step: int, value: float) -> float | None: ...


def symptoms(rows: Sequence[dict[str, Any]], band: Band | None = None) -> list[Symptom]:
    """The symptoms the newest rows of `rows` (canonical step rows, oldest first) show; `band` (the run's
    task's healthy band, if it has one) makes the entropy/KL test relative to healthy runs."""
    out: list[Symptom] = []
    if len(rows) < RECENT:
        return out
    recent, early = rows[-RECENT:], rows[:EARLY]
    zero = _median(recent, "frac_reward_zero_std")
    zero_z = _median_z(recent, "frac_reward_zero_std", band) if band is not None else None
    unusual = band is None or (zero_z is not None and zero_z > BAND_Z)  # healthy runs that learned get there
    if zero is not None and zero >= NO_SIGNAL_FRAC and unusual:
        out.append(
            "no_signal_too_easy" if _reward_share(rows, recent) >= EASY_SHARE else "no_signal_too_hard"
        )
    if band is not None:
        entropy_z, kl_z = _median_z(recent, "entropy", band), _median_z(recent, "kl", band)
        collapsed = entropy_z is not None and kl_z is not None and entropy_z < -BAND_Z and kl_z > BAND_Z
    else:
        entropy_now, entropy_then = _median(recent, "entropy"), _median(early, "entropy")
        kl_now = _median(recent, "kl")
        collapsed = (
            entropy_now is not None
            and entropy_then is not None
            and kl_now is not None
            and entropy_then > 0
            and entropy_now < SELF_ENTROPY_SHARE * entropy_then
            and kl_now > SELF_KL
        )
    if collapsed:
        out.append("entropy_collapse_kl_explosion")
    if gradient_spikes(rows) >= SPIKES_MIN:
        out.append("gradient_spikes")
    if reward_inconsistent(rows, band):
        out.append("reward_inconsistent")
    return out


def reward_inconsistent(rows: Sequence[dict[str, Any]], band: Band | None = None) -> bool:
    """Whether one of the newest `SPIKE_WINDOW` rows has groups whose identical completions were paid
    differently (`MISMATCH` above 0), and, with a healthy band that scores the share, above it by BAND_Z."""
    for row in rows[-SPIKE_WINDOW:]:
        share = finite_value(row.get(MISMATCH))
        if share is None or share <= 0:
            continue
        z = band.z(MISMATCH, int(row["step"]), share) if band is not None else None
        if z is None or z > BAND_Z:
            return True
    return False


def gradient_spikes(rows: Sequence[dict[str, Any]]) -> int:
    """How many of the newest `SPIKE_WINDOW` rows have a gradient norm of `SPIKE_FACTOR`× the lower
    quartile of every norm logged in `rows` or more (0 without three logged norms or a positive quartile)."""
    norms = _values(rows, "grad_norm")
    if len(norms) < EARLY:
        return 0
    reference = statistics.quantiles(norms, n=4, method="inclusive")[0]
    if reference <= 0:  # gradients exactly 0 on a quarter of the steps: no signal, not spikes
        return 0
    recent = _values(rows[-SPIKE_WINDOW:], "grad_norm")
    return sum(1 for v in recent if v >= SPIKE_FACTOR * reference)


def _median_z(rows: Sequence[dict[str, Any]], metric: str, band: Band) -> float | None:
    zs = []
    for row in rows:
        value = finite_value(row.get(metric))
        if value is not None and (z := band.z(metric, int(row["step"]), value)) is not None:
            zs.append(z)
    return statistics.median(zs) if zs else None


def finite_value(x: Any) -> float | None:
    """`x` as a float when it is a finite number (not a bool, NaN, ±Inf or missing), else None."""
    if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


def _values(rows: Sequence[dict[str, Any]], metric: str) -> list[float]:
    return [v for row in rows if (v := finite_value(row.get(metric))) is not None]


def _median(rows: Sequence[dict[str, Any]], metric: str) -> float | None:
    values = _values(rows, metric)
    return statistics.median(values) if values else None


def _reward_share(rows: Sequence[dict[str, Any]], recent: Sequence[dict[str, Any]]) -> float:
    """Where the recent reward sits between nothing paid (0) and everything paid (1): on its own scale for
    a reward within [0, 1], else in the run's own range (`detect.scale_free.reward_position`). The range
    alone read a 0.05 reward at its run's best as "all solved" and a 0.8 one at its low as "all failed"."""
    everything, now = _values(rows, "reward"), _median(recent, "reward")
    if not everything or now is None:
        return 0.0
    return reward_position(now, everything)
