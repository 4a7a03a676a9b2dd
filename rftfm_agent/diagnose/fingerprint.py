"""A fault fingerprint: a fixed-length, named feature vector describing a run around its anomaly.

The detector says *when* something went wrong (the anchor: its first alarm); the fingerprint says *how*.
Every watched metric is turned into z-scores against a reference, then summarised over the window of
`WINDOW` logged steps that starts at the anchor (the "after" window) and compared with the window just
before it. The reference is the healthy band of the run's task when the detector has one (mode
"band"), else the run's own steps before the anchor, or its first steps when the anchor is at the start
(mode "self", for imported real runs). Fractions that mean the same thing in any run (zero-std groups,
truncation, tool errors, advantage statistics) are also kept as raw levels, and each hard rule the
detector fired is a 0/1 flag.

A feature is NaN when the run does not log the metric behind it, or when its window is empty; the
diagnoser then works with the features that are there and reports the metrics that were missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rftfm_agent.detect.band import HealthyBand, SelfReference
from rftfm_agent.detect.events import Mode, RunVerdict
from rftfm_agent.detect.features import WATCHED, as_float
from rftfm_agent.detect.robust import MIN_SCALE, robust_location_scale, robust_z, self_location_scale
from rftfm_agent.detect.rules import RULES
from rftfm_agent.detect.scale_free import without_scale_free

WINDOW = 10  # logged steps in the before and after windows
MIN_REFERENCE = 3  # fewest finite values a self reference needs
Z_LIMIT = 1e3  # z-scores are clipped here: past it, "how far" carries no more information

# How each watched metric is summarised: one line per statistic, the feature name is "<metric>:<stat>".
Z_STATS: dict[str, str] = {
    "after": "median z over the after window: the level the metric moved to, against the reference",
    "peak": "the after window's z of largest magnitude, with its sign: the worst single step",
    "slope": "least-squares slope of z per logged step over the after window: a drift that continues",
    "vol": "standard deviation of step-to-step changes of z over the after window: how erratic it became",
    "jump": "median z after minus median z before the anchor: the break at the anchor (NaN at the start)",
}

# Quantities that mean the same in every run, kept as their raw mean over the after window.
LEVEL_METRICS: dict[str, str] = {
    "frac_reward_zero_std": "share of prompt groups whose completions all got the same reward",
    "completions/clipped_ratio": "share of completions cut at the length limit (as the trainer logs it)",
    "traj/truncated_frac": "share of completions cut at the length limit (from trajectories)",
    "traj/empty_frac": "share of empty completions",
    "traj/short_frac": "share of very short completions",
    "traj/long_frac": "share of very long completions",
    "traj/repetition_ratio_mean": "mean share of repeated n-grams in a completion",
    "traj/unique_token_ratio_mean": "mean share of distinct tokens in a completion",
    "traj/zero_std_group_frac": "share of groups with equal rewards (from trajectories)",
    "traj/tool_calls_mean": "mean tool calls per completion",
    "traj/tool_error_rate": "share of tool calls that returned an error",
    "traj/reward_neg_frac": "share of negative rewards",
    "traj/reward_mismatch_frac": "share of repeated completions in a group that got different rewards",
    "traj/adv_reward_discord_frac": "share of groups whose advantages are not ordered like their rewards",
    "traj/advantage_group_mean_abs": "mean |group mean of advantages| (GRPO makes it 0)",
    "traj/advantage_group_std_mean": "mean group std of advantages (GRPO makes it 1 where rewards differ)",
    "traj/distinct_completion_frac": "mean share of distinct completions in a group",
}


# Changes smaller than these are noise whatever the run's own spread (self mode only; log10 for lr).
SELF_MIN_CHANGE: dict[str, float] = {**SelfReference.MIN_CHANGE, "learning_rate": 0.05}


def feature_docs() -> dict[str, str]:
    """Every fingerprint feature with its one-line meaning, in vector order."""
    docs: dict[str, str] = {}
    for metric in WATCHED:
        for stat, text in Z_STATS.items():
            docs[f"{metric}:{stat}"] = f"{metric}: {text}"
    for metric, text in LEVEL_METRICS.items():
        docs[f"{metric}:level"] = f"{text}, mean over the after window"
    for name, rule in RULES.items():  # the detector's hard rules, one 0/1 flag each
        docs[f"rule:{name}"] = f"1 if the detector's hard rule fired: {rule.description}"
    return docs


FEATURES: tuple[str, ...] = tuple(feature_docs())


def feature_metric(feature: str) -> str:
    """The logged metric a feature is computed from ('rule:x' features: the rule's name)."""
    return feature.rsplit(":", 1)[0] if not feature.startswith("rule:") else feature


@dataclass
class Fingerprint:
    """A run's feature vector plus where it was taken (anchor step) and against what (mode)."""

    run: str
    anchor_step: int
    mode: Mode
    values: dict[str, float]
    missing: list[str] = field(default_factory=list)  # watched metrics the run did not log
    windows: dict[str, dict[str, float]] = field(default_factory=dict)  # metric → raw before/after means

    def vector(self, features: Sequence[str] = FEATURES) -> np.ndarray:
        return np.array([self.values.get(f, math.nan) for f in features], dtype=float)


def missing_metrics(frame: pd.DataFrame) -> list[str]:
    """Metrics behind the fingerprint that the run did not log.

    A run that recorded trajectories has every `traj/` aggregate, even where one is undefined (a tool-error
    rate without tool calls, advantage statistics when every group had equal rewards): those are NaN
    features, as in the library, not missing metrics. Without trajectories, all `traj/` metrics are missing.
    """
    has_traj = "traj/reward_mean" in frame.columns and bool(frame["traj/reward_mean"].notna().any())
    missing = []
    for metric in dict.fromkeys([*WATCHED, *LEVEL_METRICS]):
        if metric.startswith("traj/") and has_traj:
            continue
        if metric not in frame.columns or frame[metric].isna().all():
            missing.append(metric)
    return missing


def anchor_row(frame: pd.DataFrame, verdict: RunVerdict, band: HealthyBand | None) -> int:
    """Row where the anomaly starts: the detector's first alarm, else its first event, else the step that
    deviates most from the healthy band (a run-level 'profile' event has no step of its own)."""
    step = verdict.first_alarm_step
    if step is None:  # no alarm: the first event below the alarm level, if any
        step = min((e.step for e in verdict.events if e.source != "profile"), default=None)
    steps = frame["step"].to_numpy()
    if step is not None:
        return int(np.searchsorted(steps, step, side="left").clip(0, len(steps) - 1))
    if band is None:
        return change_point_row(frame)
    worst = np.zeros(len(frame))
    for metric in WATCHED:
        if metric in frame.columns:
            z = band.z_many(
                metric, steps, pd.to_numeric(frame[metric], errors="coerce").to_numpy(dtype=float)
            )
            worst = np.fmax(worst, np.abs(np.nan_to_num(z, nan=0.0)))
    return int(np.argmax(worst))


def change_point_row(frame: pd.DataFrame, margin: int = MIN_REFERENCE) -> int:
    """The row where the watched metrics, together, shift their mean the most (0 if none does).

    Offline mean-shift change point, as ruptures' binary segmentation with an L2 cost would find it: each
    metric is divided by its step-to-step noise (robust spread of first differences / √2), and a split
    at row k scores Σ_metrics k(n−k)/n · (mean after − mean before)². Used in self mode when the
    detector raised nothing: the fingerprint is then taken where the run changed most, not at its start.
    """
    n = len(frame)
    if n < 2 * margin:
        return 0
    score = np.zeros(n)
    ks = np.arange(margin, n - margin + 1)
    for metric in WATCHED:
        if metric not in frame.columns:
            continue
        x = as_float(frame, metric)
        if np.isfinite(x).sum() < 2 * margin:
            continue
        if not np.isfinite(x).all():  # a metric logged every few steps: fill its gaps linearly
            x = pd.Series(x).interpolate(limit_direction="both").to_numpy(dtype=float)
        _, noise = robust_location_scale(np.diff(x))
        noise = max(noise / math.sqrt(2), 0.1 * float(np.std(x)), MIN_SCALE)
        x = x / noise
        total = np.cumsum(x)
        before = total[ks - 1] / ks
        after = (total[-1] - total[ks - 1]) / (n - ks)
        score[ks] += ks * (n - ks) / n * (after - before) ** 2
    return int(np.argmax(score)) if score.any() else 0


def _self_z(values: np.ndarray, reference: np.ndarray, metric: str) -> np.ndarray:
    """z of `values` against the run's own reference steps, with floors so that tiny changes stay small."""
    ref = reference[np.isfinite(reference)]
    if ref.size < MIN_REFERENCE:
        return np.full(values.shape, math.nan)
    center, scale = self_location_scale(ref, SELF_MIN_CHANGE.get(metric, 0.0))
    return robust_z(values, center, scale, clip=Z_LIMIT)


def _slope(z: np.ndarray) -> float:
    ok = np.isfinite(z)
    if ok.sum() < 3:
        return math.nan
    x = np.arange(z.size, dtype=float)[ok]
    return float(np.polyfit(x, z[ok], 1)[0])


def _vol(z: np.ndarray) -> float:
    finite = z[np.isfinite(z)]
    return float(np.std(np.diff(finite))) if finite.size >= 3 else math.nan


def _median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def _peak(z: np.ndarray) -> float:
    finite = z[np.isfinite(z)]
    return float(finite[np.argmax(np.abs(finite))]) if finite.size else math.nan


def fingerprint(
    run_id: str, frame: pd.DataFrame, verdict: RunVerdict, band: HealthyBand | None
) -> Fingerprint:
    """The fingerprint of one run, anchored at the detector's verdict (band=None: self mode); the
    scale-free rules are left out of it, as they were when the labelled library was fingerprinted."""
    verdict = without_scale_free(verdict)
    frame = frame.sort_values("step").reset_index(drop=True)
    n = len(frame)
    anchor = anchor_row(frame, verdict, band)
    before = slice(max(0, anchor - WINDOW), anchor)
    after = slice(anchor, min(n, anchor + WINDOW))
    mode = "band" if band is not None else "self"
    values: dict[str, float] = {}
    windows: dict[str, dict[str, float]] = {}
    missing = missing_metrics(frame)
    steps = frame["step"].to_numpy()
    for metric in WATCHED:
        if metric in missing or metric not in frame.columns:  # (a column of NaN: its features stay NaN)
            continue
        plain = pd.to_numeric(frame[metric], errors="coerce").to_numpy(dtype=float)
        raw = as_float(frame, metric)
        if band is not None:
            z = band.z_many(metric, steps, plain)
        else:
            enough = np.isfinite(raw[before]).sum() >= MIN_REFERENCE
            first = raw[np.isfinite(raw)][:MIN_REFERENCE]  # else: the run's first logged values
            reference = raw[before] if enough else first
            z = _self_z(raw, reference, metric)
        z = np.clip(z, -Z_LIMIT, Z_LIMIT)
        z_after, z_before = z[after], z[before]
        values[f"{metric}:after"] = _median(z_after)
        values[f"{metric}:peak"] = _peak(z_after)
        values[f"{metric}:slope"] = _slope(z_after)
        values[f"{metric}:vol"] = _vol(z_after)
        values[f"{metric}:jump"] = (
            _median(z_after) - _median(z_before) if np.isfinite(z_before).sum() >= 2 else math.nan
        )
        windows[metric] = {"before": _mean(plain[before]), "after": _mean(plain[after])}
        if band is not None and metric in band.center:
            windows[metric]["healthy"] = _mean(band.expected(metric, steps[after]))
    for metric in LEVEL_METRICS:
        if metric in frame.columns and metric not in missing:
            values[f"{metric}:level"] = _mean(
                pd.to_numeric(frame[metric], errors="coerce").to_numpy(dtype=float)[after]
            )
    fired = {e.check for e in verdict.events if e.source == "rule"}
    for rule in RULES:
        values[f"rule:{rule}"] = float(rule in fired)
    return Fingerprint(
        run=run_id,
        anchor_step=int(frame["step"].iloc[anchor]) if n else 0,
        mode=mode,
        values=values,
        missing=missing,
        windows=windows,
    )


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan
