"""Run-level multivariate score against a profile of healthy runs (step metrics and trajectory aggregates).

A run becomes a vector of summaries per watched metric — its mean over the run, over its last third, and
the change from its first third to its last third — each turned into a robust z-score against healthy
runs of the same task. The score is the mean of the three largest |z| (several summaries moving together
count more than one outlier). It sees slow drifts and level shifts from step 1 that no within-run change
detector can see, since such a run has no healthy stretch of its own to compare with.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from rftfm_agent.detect.features import WATCHED, as_float
from rftfm_agent.detect.robust import MIN_SCALE, robust_location_scale, robust_z

TOP = 3

# Shares of completions or tokens that are rare events in a healthy run: a completion cut at the length cap,
# a repeated token, a failed tool call. Healthy runs of a task can log such a share as exactly 0 on every
# seed a profile was fitted on (the shipped profile's `arith_b` runs never repeated a token), which leaves
# a spread of ~0 and turns a handful of events on another seed or machine into hundreds of z: two of the
# 48 healthy runs of `mid` seed 7, made on another CPU than the shipped profile's runs, scored 5-7× the
# alarm limit on a repetition share of 0.0003. A run-level share is therefore given a spread of at least
# half a percentage point, about one completion in three steps of a 64-completion batch (those 48 runs
# log these shares up to 0.005 away from the profile's medians). Shares that are 0 in a healthy run by
# construction (rewards below 0, rewards that disagree with the answer, advantages against rewards) keep
# their exact spread: any of them is a bug.
RARE_EVENT_SHARES = frozenset(
    {"traj/truncated_frac", "completions/clipped_ratio", "traj/repetition_ratio_mean", "traj/tool_error_rate"}
)
RARE_EVENT_RESOLUTION = 0.005


def resolution(feature: str) -> float:
    """The smallest spread a run summary (`metric|summary`) is measured against, whatever healthy runs log."""
    return RARE_EVENT_RESOLUTION if feature.split("|")[0] in RARE_EVENT_SHARES else 0.0


# Metrics whose course over a run is set by the configuration, not learned: the learning rate's change from
# the first third to the last is its warm-up (a logged 0 at step 1 is 1e-12 on the log scale) measured
# against the run's length, so a 12-step run, whose first third is mostly warm-up, scored 20-170 z against
# profiles fitted on 20-40-step runs (4 of the 16 healthy runs of `mini` seed 31 critical). Its level
# (mean, last third) is still summarised: a rate set wrong from step 1 shows there; one changed mid-run is
# the `lr_jump` rule's.
SCHEDULED = frozenset({"learning_rate"})


def run_summary(frame: pd.DataFrame, start: int = 1) -> dict[str, float]:
    """Summaries of the steps from `start` on (mean, last-third mean, last-minus-first-third change; no
    change for `SCHEDULED` metrics)."""
    frame = frame[frame["step"] >= start]
    out: dict[str, float] = {}
    n = len(frame)
    if n == 0:
        return out
    third = max(1, n // 3)
    for metric in WATCHED:
        if metric not in frame.columns:
            continue
        values = as_float(frame, metric)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            continue
        first, last = values[:third], values[-third:]
        first, last = first[np.isfinite(first)], last[np.isfinite(last)]
        out[f"{metric}|mean"] = float(finite.mean())
        if last.size:
            out[f"{metric}|last"] = float(last.mean())
        if first.size and last.size and metric not in SCHEDULED:
            out[f"{metric}|change"] = float(last.mean() - first.mean())
    return out


class HealthyProfile:
    """Median and robust spread of each run summary over healthy runs of one task (set by `fit`)."""

    def fit(self, frames: Iterable[pd.DataFrame]) -> HealthyProfile:
        self.center: dict[str, float] = {}
        self.scale: dict[str, float] = {}
        summaries = pd.DataFrame([run_summary(f) for f in frames])
        # A metric's typical size, so that a change feature near 0 is not scaled by a vanishing spread.
        size = {
            f.split("|")[0]: abs(float(np.nanmedian(summaries[f].to_numpy(dtype=float))))
            for f in summaries.columns
            if f.endswith("|mean")
        }
        for feature in summaries.columns:
            values = summaries[feature].to_numpy(dtype=float)
            center, scale = robust_location_scale(values)
            if not math.isfinite(center):
                continue
            spread = float(np.nanstd(values))
            magnitude = max(abs(center), size.get(feature.split("|")[0], 0.0))
            floor = max(MIN_SCALE, 1e-3 * magnitude, 0.25 * spread)
            self.center[feature], self.scale[feature] = center, max(scale, floor)
        return self

    def zscores(self, frame: pd.DataFrame) -> dict[str, float]:
        """Robust z of each run summary. The rare-event floor (`resolution`) is applied here, where every
        profile is read, so that one fitted and saved before the floor existed gets it too."""
        summary = run_summary(frame)
        return {
            f: float(robust_z(v, self.center[f], max(self.scale[f], resolution(f))))
            for f, v in summary.items()
            if f in self.center and math.isfinite(v)
        }

    def score(self, frame: pd.DataFrame) -> tuple[float, list[tuple[str, float]]]:
        """(mean of the top |z|, the top features with their z)."""
        z = self.zscores(frame)
        top = sorted(z.items(), key=lambda kv: -abs(kv[1]))[:TOP]
        if not top:
            return 0.0, []
        return float(np.mean([abs(v) for _, v in top])), top

    def to_dict(self) -> dict:
        return {"center": self.center, "scale": self.scale}

    @classmethod
    def from_dict(cls, data: dict) -> HealthyProfile:
        profile = cls()
        profile.center, profile.scale = data["center"], data["scale"]
        return profile
