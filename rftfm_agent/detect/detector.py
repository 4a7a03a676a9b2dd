"""The detector: hard rules + per-metric Shewhart/CUSUM against a healthy band (or the run's own start) +
a run-level profile score, with thresholds calibrated on healthy runs scored out of sample.

    detector = Detector(alpha=0.02).fit(healthy_runs)      # RunData of healthy runs
    monitor = detector.monitor(task="arith_a")             # online, inside a training job
    events = monitor.update({"step": 7, "reward": 0.31, "kl": 0.02, ...})
    verdict = detector.score_run(run)                      # offline, a whole run

Calibration (`fit`): healthy runs are split into folds; each fold is scored by bands and profiles fitted
on the other folds, so no healthy run scores itself. Per metric, each statistic is divided by its 90th
percentile over those out-of-sample runs; a run's alarm statistic is the largest normalised value over
metrics and steps; the threshold is the conformal (1 − alpha/5) quantile of that over the healthy runs,
for each of the five alarm kinds (Shewhart, EWMA, CUSUM, BOCPD, profile). So at most about `alpha` of
healthy runs raise an alarm (on the calibration data; the evaluation measures it on held-out seeds).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rftfm_agent.detect.band import HealthyBand, MetricMonitors, SelfReference
from rftfm_agent.detect.events import SEVERITY_RANK, Event, Mode, RunVerdict, Severity
from rftfm_agent.detect.features import WATCHED
from rftfm_agent.detect.profile import HealthyProfile
from rftfm_agent.detect.rules import NO_SIGNAL_STREAKS, HardRules, no_signal_state
from rftfm_agent.detect.scale_free import (
    HELDOUT_METRICS,
    NO_SIGNAL_CRITICAL,
    WHOLE_RUN_MIN,
    ScaleFreeRules,
)
from rftfm_agent.detect.schedule import LrSchedule
from rftfm_agent.errors import NotFittedError, RftfmError
from rftfm_agent.telemetry import io
from rftfm_agent.telemetry.store import LOGGED_NAN

KINDS = MetricMonitors.KINDS


@dataclass
class RunData:
    """A run as detectors see it: id, task (None when unknown), its per-step frame and the training
    configuration its manifest records (empty when unknown; the learning-rate schedule is read from it).

    In the frame, as in pandas, NaN is a value the step did not log. A value logged as NaN (a numerical
    failure) is flagged in a `nan/<metric>` column (1.0 at that step), as `Store.steps` builds it; a frame
    built from logged rows gets the flags from `telemetry.store.mark_nan` on each row."""

    run_id: str
    task: str | None
    frame: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)  # labels for evaluation only, never read here
    config: dict[str, Any] = field(default_factory=dict)  # the manifest's config (`RunManifest.config`)


@dataclass
class Thresholds:
    """Per-metric normalisers and one global threshold per alarm kind, for one mode ('band' or 'self')."""

    refs: dict[str, dict[str, float]] = field(default_factory=dict)  # kind → metric → normaliser
    limits: dict[str, float] = field(default_factory=dict)  # kind → threshold on the normalised value


class RunMonitor:
    """Online state for one run: feed it step rows in order, get the events that fire."""

    def __init__(
        self,
        detector: Detector,
        task: str | None,
        run: str = "",
        online: bool = True,
        schedule: LrSchedule | None = None,
    ) -> None:
        self.detector = detector
        self.run = run
        self.band = detector.bands.get(task) if task else None
        self.mode: Mode = "band" if self.band is not None else "self"
        # Without a healthy band, the scale-free rules compare the run with its own start. With one, their
        # sustained rules run too (a KL 1,000× its start, a loss 1,000× its start, every completion cut):
        # the band's thresholds are calibrated on healthy runs whose KL and gradient norm have heavy tails
        # (the `mid` benchmark's KL reference is ~9 z, so a KL of 1.2–2.0 nats at 13 z was no alarm), and
        # such states are broken whatever a band says. Whole-run judgements stay with the band there.
        self.scale_free = ScaleFreeRules(online=online, whole_run=self.mode == "self", schedule=schedule)
        self.thresholds = detector.thresholds[self.mode]
        self.self_ref = SelfReference(detector.warmup)
        self.rules = HardRules()
        self.monitors = MetricMonitors(WATCHED, detector.k)
        self.level: dict[tuple[str, str], int] = {}  # (kind, metric) → severity already reported
        self.peak = 0.0
        self.stats: dict[tuple[str, str], float] = {}
        self.recent: list[tuple[int, str, float]] = []  # (step, metric, score): corroboration in self mode
        self.online = online
        self.rows = 0
        # No-signal streaks a run started in (self mode): held back until the run leaves them (a slow
        # start: a warning) or stays in them for `WHOLE_RUN_MIN` rows online / to its end offline (critical).
        self.from_start = dict.fromkeys(NO_SIGNAL_STREAKS, True)
        self.out_since: dict[str, int | None] = dict.fromkeys(
            NO_SIGNAL_STREAKS
        )  # first step out of the state
        self.out_rows = dict.fromkeys(NO_SIGNAL_STREAKS, 0)  # logged values in a row out of it
        self.held: dict[str, Event] = {}

    def finish(self) -> list[Event]:
        """Events only a complete run can show (whole-run scale-free rules; a no-signal streak the run
        started in and never left), at the end of an offline scoring."""
        held, self.held = list(self.held.values()), {}
        return [e.model_copy(update={"run": self.run}) for e in held + self.scale_free.finish()]

    def _slow_start(self, step: int, values: Mapping[str, float | None], found: list[Event]) -> list[Event]:
        """Without a healthy band, a run that starts with no learning signal (every group's rewards equal,
        a gradient of exactly 0) is not yet an incident: models often earn nothing on their first steps
        (or a rare success now and then) and then learn. A streak rule's event is held back while the run
        is still in its start, which ends when the metric has left it (`_starting`) for `CONFIRM_OUT`
        logged values in a row (one lucky step is not a learning signal); the event then comes as a
        warning saying where the signal came, and as the critical it is when the run stays in its start for
        `WHOLE_RUN_MIN` rows (online) or to its end (offline). After the start, a streak that comes as the
        reward reached the top of its range (the run solved its prompts) is a warning too."""
        self.rows += 1
        out: list[Event] = []
        for check, metric in NO_SIGNAL_STREAKS.items():
            value = values.get(metric)
            if value is None or not math.isfinite(value) or not self.from_start[check]:
                continue
            if _starting(check, value):
                self.out_since[check], self.out_rows[check] = None, 0
                continue
            self.out_since[check] = self.out_since[check] or step
            self.out_rows[check] += 1
            if self.out_rows[check] < CONFIRM_OUT:
                continue
            self.from_start[check] = False
            if (held := self.held.pop(check, None)) is not None:
                evidence = {**held.evidence, "ended_at": self.out_since[check]}
                out.append(held.model_copy(update={"severity": "warning", "evidence": evidence}))
                self.rules.rearm(check, metric)  # losing the signal later is an incident
        for event in found:
            if event.check in NO_SIGNAL_STREAKS and self.from_start[event.check]:
                self.held.setdefault(event.check, event)
                continue
            if event.check in NO_SIGNAL_STREAKS and self.scale_free.saturated():
                event = event.model_copy(
                    update={"severity": "warning", "evidence": {**event.evidence, "solved": 1.0}}
                )
            out.append(event)
        if self.online and self.rows >= WHOLE_RUN_MIN:
            for check in list(self.held):
                held = self.held.pop(check)
                out.append(
                    held.model_copy(update={"step": step, "evidence": {**held.evidence, "since": held.step}})
                )
        return out

    def z(self, metric: str, step: int, value: float) -> float | None:
        if self.band is not None:
            return self.band.z(metric, step, value)
        return self.self_ref.observe(metric, value)

    def update(self, row: Mapping[str, Any]) -> list[Event]:
        step = int(row["step"])
        values = {k: _number(v) for k, v in row.items() if k != "step"}
        found = self.rules.update(step, values)
        if self.mode == "self":
            found = self._slow_start(step, values, found)
        found += self.scale_free.update(step, values)
        events = [e.model_copy(update={"run": self.run}) for e in found]
        zs = {}
        for metric in WATCHED:
            value = values.get(metric)
            if value is None:
                continue
            z = self.z(metric, step, value)
            if z is not None:
                zs[metric] = z
        for metric, stats in self.monitors.update(zs).items():
            value, z = values[metric], zs[metric]
            for kind, stat in zip(KINDS, stats, strict=True):
                key = (kind, metric)
                self.stats[key] = max(self.stats.get(key, 0.0), stat)
                ref = self.thresholds.refs.get(kind, {}).get(metric)
                limit = self.thresholds.limits.get(kind)
                if not ref or not limit:
                    continue
                if self.mode == "self":
                    ref = max(ref, SELF_FLOORS[kind] / limit)
                score = stat / ref / limit  # ≥ 1: alarm
                self.peak = max(self.peak, score)
                if self.mode == "self":
                    severity = self._self_mode_severity(kind, metric, step, score)
                else:
                    severity = "critical" if score >= 2 else "warning" if score >= 1 else None
                if severity and SEVERITY_RANK[severity] > self.level.get(key, -1):
                    self.level[key] = SEVERITY_RANK[severity]
                    events.append(
                        Event(
                            run=self.run,
                            step=step,
                            metric=metric,
                            source=self.mode,
                            check=kind,
                            severity=severity,
                            score=score,
                            evidence={"value": value, "z": z, "statistic": stat, "threshold": ref * limit},
                        )
                    )
        return events

    def _self_mode_severity(self, kind: str, metric: str, step: int, score: float) -> Severity | None:
        """Without healthy runs to compare with, one metric moving alone is a warning, not an incident.

        A run's own past is a weak reference (real runs trend: reward rises, KL grows, schedules move, and
        their metrics are noisier than the testbed's), so in self mode the statistics must also clear
        `SELF_FLOORS` (a jump of 6 robust sigmas, a CUSUM of 10), a CUSUM drift is at most a warning, and
        a jump is critical only when another metric jumped past its critical level within the last 2
        steps (real incidents move several numbers at once).
        """
        if self.recent and step - self.recent[0][0] > 2:
            self.recent = [(s, m, v) for s, m, v in self.recent if step - s <= 2]
        jump = kind in ("shewhart", "bocpd")  # jumps corroborate each other; a lingering CUSUM does not
        if jump and score >= 2:  # only a critical-level jump can corroborate another
            self.recent.append((step, metric, score))
        if score < 1:
            return None
        if score >= 2 and jump and any(m != metric for _, m, _ in self.recent):
            return "critical"
        return "warning"


SELF_FLOORS = {"shewhart": 6.0, "ewma": 6.0, "cusum": 10.0, "bocpd": 3.0}
CONFIRM_OUT = 3  # logged values in a row with a learning signal that end a run's no-signal start


def _starting(check: str, value: float) -> bool:
    """Whether a logged value keeps a run in its no-signal start: the streak rule's own state, or, for the
    share of all-equal groups, most of them (a rare success leaves 97-99 % of groups all equal: a spark,
    not yet a learning signal, and a 3-step stretch without one is no incident then)."""
    if check == "zero_std_groups":
        return value >= NO_SIGNAL_CRITICAL
    return no_signal_state(check, value)


FORMAT_VERSION = 1  # of detector.json; files written before the field existed are version 1


class Detector:
    """Fit on healthy runs; `monitor(task).update(row)` online; `score_run(run)` offline.

    The constructor takes only options (validated at once); the fitted state — bands, profiles,
    thresholds, profile limit — exists only after `fit` (or `load`), and an unfitted detector refuses to
    score instead of calling every run healthy.
    """

    def __init__(
        self, alpha: float = 0.02, k: float = 0.5, warmup: int = 5, bin_width: int = 5, folds: int = 5
    ):
        if not 0 < alpha < 1:
            raise RftfmError(f"detector alpha (false-alarm budget) must be in (0, 1), got {alpha}")
        if not k >= 0:
            raise RftfmError(f"detector k (CUSUM allowance) must be ≥ 0, got {k}")
        for name, value, least in (("warmup", warmup, 1), ("bin_width", bin_width, 1), ("folds", folds, 2)):
            if int(value) != value or value < least:
                raise RftfmError(f"detector {name} must be an integer ≥ {least}, got {value}")
        self.alpha = alpha
        self.k = k
        self.warmup = int(warmup)
        self.bin_width = int(bin_width)
        self.folds = int(folds)

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "profile_limit")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError("this detector is not fitted: call fit(healthy_runs) or Detector.load(path)")

    # ------------------------------------------------------------------ fitting
    def _fit_models(
        self, runs: Sequence[RunData]
    ) -> tuple[dict[str, HealthyBand], dict[str, HealthyProfile]]:
        bands, profiles = {}, {}
        for task in sorted({r.task for r in runs if r.task}):
            frames = [r.frame for r in runs if r.task == task]
            bands[task] = HealthyBand(self.bin_width).fit(frames)
            profiles[task] = HealthyProfile().fit(frames)
        return bands, profiles

    def fit(self, healthy: Sequence[RunData]) -> Detector:
        healthy = list(healthy)
        if len(healthy) < 2 * self.folds:
            raise RftfmError(
                f"need at least {2 * self.folds} healthy runs to fit and calibrate, got {len(healthy)}"
            )
        self.thresholds: dict[str, Thresholds] = {"band": Thresholds(), "self": Thresholds()}
        per_run: dict[str, list[dict[tuple[str, str], float]]] = {"band": [], "self": []}
        profile_scores: list[float] = []
        order = sorted(range(len(healthy)), key=lambda i: healthy[i].run_id)
        for fold in range(self.folds):
            held = [healthy[i] for n, i in enumerate(order) if n % self.folds == fold]
            rest = [healthy[i] for n, i in enumerate(order) if n % self.folds != fold]
            self.bands, self.profiles = self._fit_models(rest)
            for run in held:
                for mode in ("band", "self"):
                    per_run[mode].append(self._raw_stats(run, mode))
                if run.task in self.profiles:
                    profile_scores.append(self.profiles[run.task].score(run.frame)[0])
        for mode in ("band", "self"):
            self.thresholds[mode] = _calibrate(per_run[mode], self.alpha / (len(KINDS) + 1))
        share = self.alpha / (len(KINDS) + 1)
        profile_limit = _quantile(profile_scores, 1 - share) if profile_scores else math.inf
        self.bands, self.profiles = self._fit_models(healthy)
        self.profile_limit = profile_limit  # set last: the detector counts as fitted from here on
        return self

    def _raw_stats(self, run: RunData, mode: str) -> dict[tuple[str, str], float]:
        """Per (kind, metric) the largest raw statistic over the run (thresholds not applied)."""
        monitor = RunMonitor(self, run.task if mode == "band" else None)
        if mode == "self":
            monitor.band, monitor.mode = None, "self"
        monitor.thresholds = Thresholds()  # no alarms while collecting raw statistics
        for row in _rows(run.frame):
            monitor.update(row)
        return monitor.stats

    # ------------------------------------------------------------------ scoring
    def monitor(
        self, task: str | None, run: str = "", online: bool = True, schedule: LrSchedule | None = None
    ) -> RunMonitor:
        """Online state for one run; `schedule` (the configured learning-rate schedule) enables the check
        of the logged rate against it."""
        self._check_fitted()
        return RunMonitor(self, task, run, online=online, schedule=schedule)

    def score_run(self, run: RunData) -> RunVerdict:
        monitor = self.monitor(
            run.task, run.run_id, online=False, schedule=LrSchedule.from_config(run.config)
        )
        events: list[Event] = []
        for row in _rows(run.frame):
            events.extend(monitor.update(row))
        events.extend(monitor.finish())
        peak = monitor.peak
        if monitor.mode == "band" and run.task in self.profiles and math.isfinite(self.profile_limit):
            score, top = self.profiles[run.task].score(run.frame)
            relative = score / self.profile_limit
            peak = max(peak, relative)
            if relative >= 1:
                last = int(run.frame["step"].max())
                events.append(
                    Event(
                        run=run.run_id,
                        step=last,
                        metric=top[0][0].split("|")[0],
                        source="profile",
                        check="profile",
                        severity="critical" if relative >= 2 else "warning",
                        score=relative,
                        evidence={"score": score, "threshold": self.profile_limit, "top_features": dict(top)},
                    )
                )
        rule_hit = any(e.source == "rule" for e in events)
        missing = [m for m in WATCHED if m not in run.frame.columns or run.frame[m].isna().all()]
        return RunVerdict.judge(run.run_id, monitor.mode, events, math.inf if rule_hit else peak, missing)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "format_version": FORMAT_VERSION,
            "alpha": self.alpha,
            "k": self.k,
            "warmup": self.warmup,
            "bin_width": self.bin_width,
            "folds": self.folds,
            "bands": {t: b.to_dict() for t, b in self.bands.items()},
            "profiles": {t: p.to_dict() for t, p in self.profiles.items()},
            "thresholds": {m: {"refs": t.refs, "limits": t.limits} for m, t in self.thresholds.items()},
            "profile_limit": self.profile_limit,
        }

    def save(self, path: Path) -> None:
        io.atomic_write_text(Path(path), io.dumps(self.to_dict(), indent=None))

    @classmethod
    def load(cls, path: Path) -> Detector:
        data = io.from_json_safe(json.loads(Path(path).read_text()))
        version = data.get("format_version", 1)
        if version != FORMAT_VERSION:
            raise ValueError(f"format version {version}; this rftfm reads version {FORMAT_VERSION}")
        det = cls(data["alpha"], data["k"], data["warmup"], data["bin_width"], data["folds"])
        det.bands = {t: HealthyBand.from_dict(b) for t, b in data["bands"].items()}
        det.profiles = {t: HealthyProfile.from_dict(p) for t, p in data["profiles"].items()}
        det.thresholds = {m: Thresholds(t["refs"], t["limits"]) for m, t in data["thresholds"].items()}
        det.profile_limit = data["profile_limit"]
        return det


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _rows(frame: pd.DataFrame) -> Iterable[dict[str, Any]]:
    cols = [
        c
        for c in frame.columns
        if c == "step"
        or c in WATCHED
        or c in _RULE_INPUTS
        or c.startswith(("nan_frac/", "rewards/"))
        or c.removeprefix(LOGGED_NAN) in _KEEP_NAN
    ]
    for row in frame[cols].to_dict("records"):
        # A NaN cell is a metric the step did not log, left out; one the step logged as NaN is flagged
        # (`store.wide_steps`, `store.mark_nan`) and given back as NaN, which the hard rules report.
        out = {}
        for k, v in row.items():
            if k.startswith(LOGGED_NAN):
                if v == 1.0:
                    out[k.removeprefix(LOGGED_NAN)] = math.nan
            elif not (isinstance(v, float) and math.isnan(v)):
                out[k] = v
        yield out


# Read by the rules though not watched by the change detectors.
_RULE_INPUTS = frozenset({"completions/max_length", *HELDOUT_METRICS})
# Metrics whose logged NaN is news (the hard rules report it); elsewhere a logged NaN is left out like a
# value not logged (kept as before the flags: the scale-free rules were calibrated on real logs so).
_KEEP_NAN = {"loss", "reward", "kl", "entropy", "grad_norm"}


def _quantile(values: Sequence[float], q: float) -> float:
    """Conformal (finite-sample) upper quantile: the ⌈(n+1)q⌉-th smallest value, capped at the largest.

    With n exchangeable healthy scores, a new healthy run exceeds it with probability at most 1 − q; a
    plain empirical quantile would undershoot that on the few hundred healthy runs a benchmark has.
    """
    arr = np.sort(np.asarray([v for v in values if math.isfinite(v)]))
    if arr.size == 0:
        return math.inf
    k = math.ceil((arr.size + 1) * q)
    return float(arr[min(k, arr.size) - 1])


def _calibrate(stats: list[dict[tuple[str, str], float]], alpha: float) -> Thresholds:
    refs: dict[str, dict[str, float]] = {kind: {} for kind in KINDS}
    for kind in KINDS:
        for metric in WATCHED:
            values = [s[(kind, metric)] for s in stats if (kind, metric) in s]
            if values:
                refs[kind][metric] = max(1.0, _quantile(values, 0.9))
    limits = {}
    for kind in KINDS:
        normalised = [
            max((v / refs[kind][m] for (k, m), v in s.items() if k == kind and m in refs[kind]), default=0.0)
            for s in stats
        ]
        limits[kind] = max(1.0, _quantile(normalised, 1 - alpha)) if normalised else math.inf
    return Thresholds(refs, limits)
