"""Evaluate anomaly detection on a generated benchmark, beside baselines, cross-validated over seeds.

    rftfm eval detect --bench DIR [--json] [--folds 5] [--alpha 0.02]

Split: the benchmark's cells (one healthy control + the fault runs that share its configuration and
seed) are dealt into folds. For each fold the detector (and each baseline) is fitted on the healthy
controls of the other folds only, then scores every run of the fold: no healthy run used to fit is used
to score, and no seed is on both sides.

Run-level (paper-comparable): per family × strength, the fault runs of that family and strength and the
controls of their cells. Protocol B (headline) counts those controls as normal; protocol A counts them as
faulty, as the paper's labels do (where flagging everything scores near-perfectly). False alarms: share
of all healthy controls flagged. Online: for faults that start mid-run, the delay in steps from the onset
to the first alarm at or after it, and alarms per 1,000 healthy steps (controls' steps and the pre-onset
steps of mid-run faults).

Baselines, fitted and scored on the same split: flag-all; fixed thresholds (hand-set limits on kl,
entropy, grad_norm, clipped ratio, zero-std groups, reward sign, loss); IsolationForest and LOF on the
same run summaries as the profile score, thresholded at the (1 − alpha) quantile of their training
controls' scores.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rftfm_agent.detect.bench_data import load_bench
from rftfm_agent.detect.detector import Detector, RunData
from rftfm_agent.detect.profile import run_summary
from rftfm_agent.telemetry.schema import FAULT_FAMILIES

FIXED_LIMITS = {
    "kl": ("above", 1.0),
    "entropy": ("below", 0.05),
    "grad_norm": ("above", 50.0),
    "completions/clipped_ratio": ("above", 0.5),
    "frac_reward_zero_std": ("above", 0.9),
    "reward": ("below", 0.0),
    "loss": ("above", 10.0),
}


def fixed_threshold_flag(run: RunData) -> bool:
    """Hand-set limits on the mean of the last third of the run (what a dashboard alert would use)."""
    frame = run.frame
    last = frame.iloc[-max(1, len(frame) // 3) :]
    for metric, (direction, limit) in FIXED_LIMITS.items():
        if metric not in last.columns:
            continue
        value = pd.to_numeric(last[metric], errors="coerce").mean()
        if not math.isfinite(value) or (value > limit if direction == "above" else value < limit):
            return True
    return False


def _summary_matrix(runs: list[RunData], columns: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    frame = pd.DataFrame([run_summary(r.frame) for r in runs])
    if columns is None:
        columns = sorted(frame.columns)
    frame = frame.reindex(columns=columns)
    return frame.to_numpy(dtype=float), columns


def _sklearn_flags(train: list[RunData], test: list[RunData], alpha: float) -> dict[str, list[bool]]:
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor
    from sklearn.preprocessing import RobustScaler

    out = {}
    for task in sorted({r.task for r in test}):
        tr = [r for r in train if r.task == task]
        te_idx = [i for i, r in enumerate(test) if r.task == task]
        x_train, cols = _summary_matrix(tr)
        x_test, _ = _summary_matrix([test[i] for i in te_idx], cols)
        fill = np.nanmedian(x_train, axis=0)
        fill = np.where(np.isfinite(fill), fill, 0.0)
        x_train = np.where(np.isfinite(x_train), x_train, fill)
        x_test = np.where(np.isfinite(x_test), x_test, fill)
        scaler = RobustScaler().fit(x_train)
        x_train, x_test = (
            np.clip(scaler.transform(x_train), -1e6, 1e6),
            np.clip(scaler.transform(x_test), -1e6, 1e6),
        )
        models = {
            "IsolationForest": IsolationForest(random_state=0).fit(x_train),
            "LOF": LocalOutlierFactor(novelty=True, n_neighbors=min(20, len(tr) - 1)).fit(x_train),
        }
        for name, model in models.items():
            limit = np.quantile(-model.score_samples(x_train), 1 - alpha)
            flags = -model.score_samples(x_test) > limit
            out.setdefault(name, [False] * len(test))
            for i, flag in zip(te_idx, flags, strict=True):
                out[name][i] = bool(flag)
    return out


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def evaluate(bench: Path, folds: int = 5, alpha: float = 0.02) -> dict[str, Any]:
    runs = load_bench(bench)
    cells = sorted({r.meta["cell"] for r in runs})
    fold_of = {cell: i % folds for i, cell in enumerate(cells)}
    flags: dict[str, dict[str, bool]] = defaultdict(dict)  # method → run → flagged
    first_alarm: dict[str, int | None] = {}
    pre_onset_alarms = 0
    healthy_steps = 0
    healthy_alarm_events = 0
    step_seconds: list[float] = []
    for fold in range(folds):
        train = [
            r for r in runs if fold_of[r.meta["cell"]] != fold and r.meta["control_or_fault"] == "control"
        ]
        test = [r for r in runs if fold_of[r.meta["cell"]] == fold]
        detector = Detector(alpha=alpha).fit(train)
        for run in test:
            started = time.perf_counter()
            verdict = detector.score_run(run)
            step_seconds.append((time.perf_counter() - started) / max(1, len(run.frame)))
            flags["rftfm"][run.run_id] = verdict.verdict == "anomalous"
            alarms = [e for e in verdict.alarms if e.source != "profile"]  # the profile has no step
            if run.meta["control_or_fault"] == "control":
                healthy_steps += len(run.frame)
                healthy_alarm_events += len(alarms)
            elif run.meta["onset_style"] == "midrun":
                onset = int(run.meta["onset_step"])
                healthy_steps += int((run.frame["step"] < onset).sum())
                pre_onset_alarms += sum(e.step < onset for e in alarms)
                after = [e.step for e in alarms if e.step >= onset]
                first_alarm[run.run_id] = min(after) - onset if after else None
            flags["flag-all"][run.run_id] = True
            flags["fixed thresholds"][run.run_id] = fixed_threshold_flag(run)
        for name, values in _sklearn_flags(train, test, alpha).items():
            for run, flag in zip(test, values, strict=True):
                flags[name][run.run_id] = flag

    controls = [r for r in runs if r.meta["control_or_fault"] == "control"]
    report: dict[str, Any] = {
        "bench": str(bench),
        "runs": len(runs),
        "controls": len(controls),
        "folds": folds,
        "alpha": alpha,
        "methods": {},
    }
    for method, flagged in flags.items():
        rows = {}
        for family in FAULT_FAMILIES:
            for strength in ("easy", "hard"):
                faults = [
                    r for r in runs if r.meta["fault_family"] == family and r.meta["strength"] == strength
                ]
                twins = {r.meta["cell"] for r in faults}
                negs = [c for c in controls if c.meta["cell"] in twins]
                tp = sum(flagged[r.run_id] for r in faults)
                fn = len(faults) - tp
                fp = sum(flagged[c.run_id] for c in negs)
                b = _prf(tp, fp, fn)
                a = _prf(tp + fp, 0, fn + len(negs) - fp)  # protocol A: the controls count as faulty
                rows[f"{family}/{strength}"] = {"B": b, "A": a, "faults": len(faults), "controls": len(negs)}
        mean = {
            p: {
                s: statistics.fmean(rows[f"{f}/{s}"][p]["f1"] for f in FAULT_FAMILIES)
                for s in ("easy", "hard")
            }
            for p in ("A", "B")
        }
        report["methods"][method] = {
            "families": rows,
            "mean_f1": mean,
            "false_alarm_rate": sum(flagged[c.run_id] for c in controls) / len(controls),
        }
    delays = [d for d in first_alarm.values() if d is not None]
    report["online"] = {
        "midrun_faults": len(first_alarm),
        "detected": len(delays),
        "median_delay_steps": statistics.median(delays) if delays else None,
        "p90_delay_steps": float(np.quantile(delays, 0.9)) if delays else None,
        "false_alarms_per_1000_healthy_steps": 1000
        * (healthy_alarm_events + pre_onset_alarms)
        / max(1, healthy_steps),
        "ms_per_step": 1000 * statistics.median(step_seconds),
    }
    per_type: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.meta["control_or_fault"] == "fault":
            per_type[run.meta["fault_type"]][run.meta["strength"]].append(flags["rftfm"][run.run_id])
    report["recall_by_type"] = {
        t: {s: sum(v) / len(v) for s, v in d.items()} for t, d in sorted(per_type.items())
    }
    return report


def render(report: dict[str, Any]) -> str:
    lines = [
        f"Detection on {report['bench']}: {report['runs']} runs ({report['controls']} healthy controls), "
        f"{report['folds']}-fold split by cell/seed, alpha {report['alpha']}",
        "",
    ]
    header = (
        "| method | "
        + " | ".join(f"{f} easy | {f} hard" for f in FAULT_FAMILIES)
        + " | mean F1 easy (B) | mean F1 hard (B) | mean F1 easy (A) | mean F1 hard (A) | false alarms |"
    )
    lines += [header, "|" + "---|" * (2 + 2 * len(FAULT_FAMILIES) + 5)]
    for method, m in report["methods"].items():
        cells = [
            f"{m['families'][f'{f}/{s}']['B']['f1']:.2f}" for f in FAULT_FAMILIES for s in ("easy", "hard")
        ]
        lines.append(
            f"| {method} | " + " | ".join(cells) + f" | {m['mean_f1']['B']['easy']:.3f} | "
            f"{m['mean_f1']['B']['hard']:.3f} | {m['mean_f1']['A']['easy']:.3f} | "
            f"{m['mean_f1']['A']['hard']:.3f} | {m['false_alarm_rate']:.1%} |"
        )
    o = report["online"]
    lines += [
        "",
        "Family cells: protocol-B F1.",
        "",
        f"Online (mid-run faults): {o['detected']}/{o['midrun_faults']} detected after onset; median delay "
        f"{o['median_delay_steps']} steps, p90 {o['p90_delay_steps']}; "
        f"{o['false_alarms_per_1000_healthy_steps']:.1f} alarms per 1,000 healthy steps; "
        f"detector cost {o['ms_per_step']:.3f} ms/step (median, offline replay).",
        "",
        "rftfm recall by fault type (easy / hard):",
        "",
    ]
    for kind, r in report["recall_by_type"].items():
        lines.append(f"- {kind}: {r.get('easy', float('nan')):.2f} / {r.get('hard', float('nan')):.2f}")
    return "\n".join(lines) + "\n"
