"""Per-metric change detection against a healthy band (or the run's own recent past).

`HealthyBand` is fitted on healthy runs of a task: for every watched metric and every bin of steps, the
median and the robust spread (1.4826 × MAD, see `robust.py`) of the healthy values. A step's value
becomes a robust z-score against its bin. `MetricMonitor` turns a metric's z-scores into four
statistics, one step at a time: Shewhart (jumps), EWMA (smoothed level shifts), two-sided CUSUM (small
persistent shifts) and Bayesian online change-point detection (Adams & MacKay 2007).

Without a band for the run's task (an imported real run), `SelfReference` builds the reference from the
run's own recent past instead, so the same statistics measure change *within* the run.

Metric scales differ and some metrics are heavier-tailed than others, so the detector divides each
statistic by a per-metric reference (its 90th percentile over healthy runs scored out of sample, see
`detector._calibrate`) before one threshold per statistic is applied.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import ClassVar

import numpy as np
import pandas as pd

from rftfm_agent.detect.events import STAT_CHECKS, StatCheck
from rftfm_agent.detect.features import LOG_METRICS, WATCHED, as_float, to_scale
from rftfm_agent.detect.robust import MIN_SCALE, robust_location_scale, robust_z, self_location_scale


class HealthyBand:
    """Median and robust spread per (metric, step bin) over healthy runs of one task."""

    def __init__(self, bin_width: int = 5) -> None:
        self.bin_width = bin_width

    def fit(self, frames: Iterable[pd.DataFrame]) -> HealthyBand:
        frames = list(frames)
        self.center: dict[str, list[float]] = {}
        self.scale: dict[str, list[float]] = {}
        for metric in WATCHED:
            by_bin: dict[int, list[np.ndarray]] = {}
            pooled: list[np.ndarray] = []
            for frame in frames:
                if metric not in frame.columns:
                    continue
                values, steps = as_float(frame, metric), frame["step"].to_numpy()
                pooled.append(values)
                for b in np.unique(steps // self.bin_width):
                    by_bin.setdefault(int(b), []).append(values[steps // self.bin_width == b])
            if not by_bin:
                continue
            _, pooled_scale = robust_location_scale(np.concatenate(pooled))
            available = sorted(by_bin)
            centers, scales = [], []
            for b in range(available[-1] + 1):
                nearest = max((k for k in available if k <= b), default=available[0])  # a gap: bin below
                chunk = np.concatenate(by_bin[nearest])
                center, scale = robust_location_scale(chunk)
                floor = max(
                    MIN_SCALE, 1e-3 * abs(center), 0.25 * pooled_scale if math.isfinite(pooled_scale) else 0
                )
                centers.append(center)
                scales.append(max(scale, floor) if math.isfinite(scale) else floor)
            self.center[metric], self.scale[metric] = centers, scales
        return self

    def z(self, metric: str, step: int, value: float) -> float | None:
        if metric not in self.center or value is None or not math.isfinite(value):
            return None
        value = float(to_scale(metric, value))
        b = min(step // self.bin_width, len(self.center[metric]) - 1)
        center, scale = self.center[metric][b], self.scale[metric][b]
        if not math.isfinite(center):
            return None
        return float(robust_z(value, center, scale))

    def _bins(self, metric: str, steps: np.ndarray) -> np.ndarray:
        return np.minimum(np.asarray(steps, dtype=np.int64) // self.bin_width, len(self.center[metric]) - 1)

    def z_many(self, metric: str, steps: np.ndarray, values: np.ndarray) -> np.ndarray:
        """`z` for a whole series at once (NaN where `z` would be None), for offline use."""
        if metric not in self.center:
            return np.full(len(values), math.nan)
        b = self._bins(metric, steps)
        center, scale = np.asarray(self.center[metric], float)[b], np.asarray(self.scale[metric], float)[b]
        return robust_z(to_scale(metric, np.asarray(values, dtype=float)), center, scale)

    def expected(self, metric: str, steps: np.ndarray) -> np.ndarray:
        """What healthy runs log at these steps: the band's medians, back on the metric's own scale."""
        center = np.asarray(self.center[metric], float)[self._bins(metric, steps)]
        return 10.0**center if metric in LOG_METRICS else center

    def to_dict(self) -> dict:
        return {"bin_width": self.bin_width, "center": self.center, "scale": self.scale}

    @classmethod
    def from_dict(cls, data: dict) -> HealthyBand:
        band = cls(data["bin_width"])
        band.center, band.scale = data["center"], data["scale"]
        return band


class SelfReference:
    """A rolling band from the run's own recent past (for runs of a task no healthy run covers).

    The reference for a step is the median and robust spread of the metric's previous `window` finite
    values (at least `warmup` of them), so slow, deliberate trends — reward rising as the policy learns,
    KL growing from zero, a learning-rate schedule — move the reference along, and only changes that are
    abrupt relative to the recent past score high. Metrics listed in `UPWARD_BAD` / `DOWNWARD_BAD` only
    count in their harmful direction (a reward that jumps up is not an incident).
    """

    UPWARD_BAD = frozenset({"kl", "grad_norm", "completions/clipped_ratio", "frac_reward_zero_std", "loss"})
    DOWNWARD_BAD = frozenset({"reward", "traj/reward_mean"})
    SKIP = frozenset({"learning_rate"})  # schedules are deliberate; the hard rules watch for lr = 0
    # Changes smaller than these are not worth an alarm whatever the run's own noise (a KL moving from
    # 1e-5 to 1e-3 is a large relative change and no incident).
    MIN_CHANGE: ClassVar[dict[str, float]] = {
        "reward": 0.05,
        "reward_std": 0.05,
        "kl": 0.01,
        "loss": 0.01,
        "entropy": 0.05,
        "grad_norm": 1.0,
        "completion_length": 5.0,
        "completions/clipped_ratio": 0.05,
        "frac_reward_zero_std": 0.05,
        "traj/reward_mean": 0.05,
        "traj/response_length_mean": 5.0,
    }

    def __init__(self, warmup: int = 5, window: int = 10) -> None:
        self.warmup = warmup
        self.window = window
        self.history: dict[str, list[float]] = {}

    def observe(self, metric: str, value: float) -> float | None:
        """z of this value against the metric's recent past (None until `warmup` values were seen)."""
        if metric in self.SKIP or value is None or not math.isfinite(value):
            return None
        past = self.history.setdefault(metric, [])
        z = None
        if len(past) >= self.warmup:
            recent = np.asarray(past[-self.window :])
            center, scale = self_location_scale(recent, self.MIN_CHANGE.get(metric, 0.0))
            z = float(robust_z(value, center, scale))
            if metric in self.UPWARD_BAD:
                z = max(z, 0.0)
            elif metric in self.DOWNWARD_BAD:
                z = min(z, 0.0)
        past.append(value)
        return z


class BayesianChangePoint:
    """Bayesian online change-point detection (Adams & MacKay 2007) on one metric's z-scores.

    Gaussian observations with unknown mean and variance (Normal-Gamma prior, Student-t predictive), a
    constant hazard 1/`expected_run`, run lengths truncated at `max_run`. The statistic is the
    posterior probability that the current regime began 1 to 3 steps ago, reported as −log10(1 − p)
    (2 means p = 0.99, capped at 6), and 0 for the first `warmup` steps, when every run length is short.
    Neither river nor ruptures has an online Bayesian detector, hence this small implementation.
    """

    def __init__(self, expected_run: float = 50.0, max_run: int = 32, warmup: int = 5) -> None:
        self.hazard = 1.0 / expected_run
        self.warmup = warmup
        self.max_run = max_run
        self.prob = np.array([1.0])
        self.mu = np.array([0.0])
        self.kappa = np.array([1.0])
        self.alpha = np.array([1.0])
        self.beta = np.array([1.0])
        self.seen = 0

    def update(self, z: float) -> float:
        """The statistic after this observation; 0 for the first `warmup` ones (every run is young then)."""
        scale2 = self.beta * (self.kappa + 1) / (self.alpha * self.kappa)
        nu = 2 * self.alpha
        t = (z - self.mu) ** 2 / (nu * scale2)
        # Student-t log density. alpha at run length i is always 1 + i/2, so the Gamma-function ratio
        # comes from a table instead of being recomputed at every step.
        log_pred = _T_CONST[: nu.size] - 0.5 * np.log(np.pi * nu * scale2) - (nu + 1) / 2 * np.log1p(t)
        pred = np.exp(log_pred - log_pred.max())
        joint = self.prob * pred
        growth = joint * (1 - self.hazard)
        change = joint.sum() * self.hazard
        prob = np.concatenate(([change], growth))
        mu = np.concatenate(([0.0], (self.kappa * self.mu + z) / (self.kappa + 1)))
        beta = np.concatenate(([1.0], self.beta + self.kappa * (z - self.mu) ** 2 / (2 * (self.kappa + 1))))
        kappa = np.concatenate(([1.0], self.kappa + 1))
        alpha = np.concatenate(([1.0], self.alpha + 0.5))
        if prob.size > self.max_run:  # fold the longest run lengths into the last kept one
            prob[self.max_run - 1] += prob[self.max_run :].sum()
            prob, mu, beta, kappa, alpha = (a[: self.max_run] for a in (prob, mu, beta, kappa, alpha))
        total = prob.sum()
        self.prob = prob / total if total > 0 else np.eye(1, prob.size).ravel()
        self.mu, self.beta, self.kappa, self.alpha = mu, beta, kappa, alpha
        self.seen += 1
        if self.seen <= self.warmup:
            return 0.0
        recent = float(self.prob[1:4].sum())
        return -math.log10(max(1e-6, 1.0 - recent))


_NU = 2 * (1 + 0.5 * np.arange(256))
_T_CONST = np.array([math.lgamma((n + 1) / 2) - math.lgamma(n / 2) for n in _NU])


class MetricMonitor:
    """The statistics of one metric's z-scores, updated one step at a time.

    - shewhart: |z| (a large jump fires at once);
    - ewma: |EWMA of z| over its stationary standard deviation (smoothed level shift);
    - cusum: two-sided CUSUM with allowance k (a small persistent shift accumulates);
    - bocpd: Bayesian online change-point probability (see `BayesianChangePoint`).
    """

    KINDS: tuple[StatCheck, ...] = STAT_CHECKS

    def __init__(self, k: float = 0.5, lam: float = 0.3) -> None:
        self.k = k
        self.lam = lam
        self.up = 0.0
        self.down = 0.0
        self.ewma = 0.0
        self.bocpd = BayesianChangePoint()

    def update(self, z: float) -> tuple[float, float, float, float]:
        """(shewhart, ewma, cusum, bocpd) statistics after this step."""
        self.up = max(0.0, self.up + z - self.k)
        self.down = max(0.0, self.down - z - self.k)
        self.ewma = self.lam * z + (1 - self.lam) * self.ewma
        ewma = abs(self.ewma) / math.sqrt(self.lam / (2 - self.lam))
        return abs(z), ewma, max(self.up, self.down), self.bocpd.update(z)


class BatchedChangePoint:
    """`BayesianChangePoint` for many metrics at once: one set of array operations per step for all the
    metrics observed at that step, instead of one per metric (scoring a run costs ~20× fewer numpy calls).

    Each metric's run-length distribution sits in one row of fixed-width arrays (`max_run` columns),
    padded past its current length with zero probability; a test holds it equal to one
    `BayesianChangePoint` per metric, metrics missing at some steps included.
    """

    def __init__(self, n: int, expected_run: float = 50.0, max_run: int = 32, warmup: int = 5) -> None:
        self.hazard = 1.0 / expected_run
        self.warmup = warmup
        self.max_run = max_run
        self.length = np.ones(n, dtype=np.int64)  # run lengths held per metric
        self.prob = np.zeros((n, max_run))
        self.prob[:, 0] = 1.0
        self.mu = np.zeros((n, max_run))
        self.kappa = np.ones((n, max_run))
        self.alpha = np.ones((n, max_run))
        self.beta = np.ones((n, max_run))
        self.seen = np.zeros(n, dtype=np.int64)
        self._columns = np.arange(max_run)

    def update(self, which: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The statistic of each metric in `which` (row indices) after observing `z` (one value each)."""
        w = self.max_run
        prob, mu, kappa, alpha, beta = (
            a[which] for a in (self.prob, self.mu, self.kappa, self.alpha, self.beta)
        )
        length = self.length[which]
        zc = z[:, None]
        scale2 = beta * (kappa + 1) / (alpha * kappa)
        nu = 2 * alpha
        t = (zc - mu) ** 2 / (nu * scale2)
        log_pred = _T_CONST[:w] - 0.5 * np.log(np.pi * nu * scale2) - (nu + 1) / 2 * np.log1p(t)
        log_pred[self._columns >= length[:, None]] = -np.inf  # padding: no probability
        pred = np.exp(log_pred - log_pred.max(axis=1, keepdims=True))
        joint = prob * pred
        growth = joint * (1 - self.hazard)
        change = joint.sum(axis=1) * self.hazard
        new_prob = np.concatenate([change[:, None], growth[:, :-1]], axis=1)
        full = length >= w  # the longest run length folds into the last kept one
        new_prob[full, w - 1] += growth[full, w - 1]
        self.mu[which] = np.concatenate(
            [np.zeros((len(which), 1)), ((kappa * mu + zc) / (kappa + 1))[:, :-1]], 1
        )
        self.beta[which] = np.concatenate(
            [np.ones((len(which), 1)), (beta + kappa * (zc - mu) ** 2 / (2 * (kappa + 1)))[:, :-1]], 1
        )
        self.kappa[which] = np.concatenate([np.ones((len(which), 1)), (kappa + 1)[:, :-1]], 1)
        self.alpha[which] = np.concatenate([np.ones((len(which), 1)), (alpha + 0.5)[:, :-1]], 1)
        total = new_prob.sum(axis=1, keepdims=True)
        reset = np.zeros_like(new_prob)
        reset[:, 0] = 1.0
        self.prob[which] = np.where(total > 0, new_prob / np.where(total > 0, total, 1.0), reset)
        self.length[which] = np.minimum(length + 1, w)
        self.seen[which] += 1
        recent = self.prob[which, 1:4].sum(axis=1)
        stat = -np.log10(np.maximum(1e-6, 1.0 - recent))
        return np.where(self.seen[which] <= self.warmup, 0.0, stat)


class MetricMonitors:
    """`MetricMonitor` for a fixed set of metrics, updated together (the change points batched)."""

    KINDS: tuple[StatCheck, ...] = STAT_CHECKS

    def __init__(self, metrics: Iterable[str], k: float = 0.5, lam: float = 0.3) -> None:
        self.metrics = list(metrics)
        self.index = {m: i for i, m in enumerate(self.metrics)}
        self.k = k
        self.lam = lam
        self.up = dict.fromkeys(self.metrics, 0.0)
        self.down = dict.fromkeys(self.metrics, 0.0)
        self.ewma = dict.fromkeys(self.metrics, 0.0)
        self.bocpd = BatchedChangePoint(len(self.metrics))

    def update(self, zs: dict[str, float]) -> dict[str, tuple[float, float, float, float]]:
        """(shewhart, ewma, cusum, bocpd) after this step, for each metric with a z-score at this step."""
        if not zs:
            return {}
        names = list(zs)
        bocpd = self.bocpd.update(
            np.array([self.index[m] for m in names]), np.array([zs[m] for m in names], dtype=np.float64)
        )
        out = {}
        norm = math.sqrt(self.lam / (2 - self.lam))
        for name, change in zip(names, bocpd.tolist(), strict=True):
            z = zs[name]
            self.up[name] = max(0.0, self.up[name] + z - self.k)
            self.down[name] = max(0.0, self.down[name] - z - self.k)
            self.ewma[name] = self.lam * z + (1 - self.lam) * self.ewma[name]
            out[name] = (abs(z), abs(self.ewma[name]) / norm, max(self.up[name], self.down[name]), change)
        return out
