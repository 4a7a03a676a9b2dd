"""Symptoms: patterns in a run's own recent rows that change what a fix should be, whatever the
diagnosis.

    symptoms(rows)  ->  e.g. ["no_signal_too_easy"], ["entropy_collapse_kl_explosion"], []

They are measured against the run itself (its early steps and its own reward range), not against a
healthy band, so they work on any run. The playbook has a play per symptom (`symptom:<name>`); the planner
uses it when the diagnosis is not confident enough to act on, and puts "fix entropy first" ahead of the
diagnosis's own fixes when entropy collapse and KL explosion come together.

Why these two: zero-variance groups give GRPO no learning signal, and the fix is opposite for data that
is too easy (every sample solved: filter those groups, add harder prompts) and too hard (every sample
failed: easier prompts or a warm-up, never a filter that would leave nothing to learn from); and when the
sampler's entropy collapses, KL grows as a consequence, so raising the KL penalty treats the symptom.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, Literal

Symptom = Literal["no_signal_too_easy", "no_signal_too_hard", "entropy_collapse_kl_explosion"]

RECENT = 3  # logged rows the symptoms are read from (the newest ones)
EARLY = 3  # logged rows the run's own baseline is read from (the oldest ones)
NO_SIGNAL_FRAC = 0.6  # groups with all-equal rewards: above this share, GRPO has little left to learn from
# (DAPO, arXiv:2503.14476 §3.2, filters exactly these groups; 0.6 leaves a margin over healthy testbed
# runs, whose median share stays under 0.4 while they learn)
EASY_SHARE = 0.5  # recent reward in the upper half of the run's own reward range: groups all solved
ENTROPY_COLLAPSE = 0.5  # recent entropy under this share of its early median
KL_EXPLOSION = 10.0  # recent KL over this many times its early median …
KL_FLOOR = 0.01  # … and above this absolute value (a KL that starts at 0 is not an explosion at 1e-4)


def symptoms(rows: Sequence[dict[str, Any]]) -> list[Symptom]:
    """The symptoms the newest rows of `rows` (canonical step rows, oldest first) show."""
    out: list[Symptom] = []
    if len(rows) < RECENT:
        return out
    recent, early = rows[-RECENT:], rows[:EARLY]
    zero = _median(recent, "frac_reward_zero_std")
    if zero is not None and zero >= NO_SIGNAL_FRAC:
        out.append(
            "no_signal_too_easy" if _reward_share(rows, recent) >= EASY_SHARE else "no_signal_too_hard"
        )
    entropy_now, entropy_then = _median(recent, "entropy"), _median(early, "entropy")
    kl_now, kl_then = _median(recent, "kl"), _median(early, "kl")
    if (
        entropy_now is not None
        and entropy_then is not None
        and kl_now is not None
        and kl_then is not None
        and entropy_then > 0
        and entropy_now < ENTROPY_COLLAPSE * entropy_then
        and kl_now > KL_FLOOR
        and kl_now > KL_EXPLOSION * max(kl_then, KL_FLOOR / KL_EXPLOSION)
    ):
        out.append("entropy_collapse_kl_explosion")
    return out


def _values(rows: Sequence[dict[str, Any]], metric: str) -> list[float]:
    out = []
    for row in rows:
        value = row.get(metric)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out.append(float(value))
    return out


def _median(rows: Sequence[dict[str, Any]], metric: str) -> float | None:
    values = _values(rows, metric)
    return statistics.median(values) if values else None


def _reward_share(rows: Sequence[dict[str, Any]], recent: Sequence[dict[str, Any]]) -> float:
    """Where the recent reward sits in the run's own reward range (0: its lowest, 1: its highest).

    A run whose reward never moved sits at 1 when that reward is positive (everything paid) and 0 when it
    is zero or negative (nothing paid)."""
    everything, now = _values(rows, "reward"), _median(recent, "reward")
    if not everything or now is None:
        return 0.0
    low, high = min(everything), max(everything)
    if high - low < 1e-9:
        return 1.0 if now > 0 else 0.0
    return (now - low) / (high - low)
