"""Evaluate fault diagnosis on a generated benchmark: seeds never seen in training, and tasks never seen.

    rftfm eval diagnose --bench DIR [--folds 5] [--alpha 0.02] [--markdown F] [--png F] [--json]

Two splits, both with everything fitted on the training side only:

- **Seeds**: the benchmark's cells (a configuration and seed with its healthy control and fault runs) are
  dealt into folds, as in the detection evaluation. For each fold a detector is fitted on the other
  folds' healthy controls, every run is fingerprinted with it, and a diagnoser built from the other
  folds' fingerprints ranks the held-out fold's runs.
- **Task**: for each arithmetic task the diagnoser is built from the fingerprints of the *other* tasks'
  runs and ranks this task's runs, so it has never seen a fault on it. "band" rows use the new task's
  healthy band (a detector fitted on healthy runs, including this task's); "self" rows use no healthy
  run of the task at all. (The testbed's held-out task `arith_c` cannot serve: the warmed policy solves
  none of it, so every reward is 0 and a healthy run already looks broken.)

Each split is scored in both fingerprint modes: "band" (the run's task has a healthy band: every
benchmark run) and "self" (compared with its own past, as an imported run of an unknown task is).

Rankings are the known types in the diagnoser's order, as `rftfm diagnose` lists them after its
`unknown` line (types with probability 0 are not listed); how often `unknown` would lead is reported
separately. Scores, per strength, over fault runs: type and family accuracy top-1 and top-3
(family top-k: the k families with the most summed probability), macro-F1 over the 16 types,
per-type accuracy and the confusions behind each miss. "healthy" is one of the answers the diagnoser
can give; for a fault run it counts as wrong. Also: the share of healthy controls diagnosed healthy,
and the share of fault runs called unknown.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from rftfm_agent.detect.bench_data import load_bench
from rftfm_agent.detect.detector import Detector, RunData
from rftfm_agent.diagnose.diagnoser import Diagnoser
from rftfm_agent.diagnose.library import HEALTHY, Library, fingerprint_table, split_cells
from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry.schema import FAULT_FAMILIES, FAULT_TYPES

MODES = ("band", "self")
TARGETS = {"type_top1": {"easy": 0.90, "hard": 0.75}, "family_top1": {"easy": 0.95}}
HELD_OUT_TASKS = ("arith_a", "arith_b")


def _rank(diagnoser: Diagnoser, mode: str, test: pd.DataFrame) -> list[dict[str, Any]]:
    classes, proba, unknown = diagnoser.predict_table(mode, test)
    family_of = {**FAULT_TYPES, HEALTHY: "none"}
    out = []
    for (_, row), p, far in zip(test.iterrows(), proba, unknown, strict=True):
        order = [i for i in np.argsort(-p) if p[i] > 0]  # as `rftfm diagnose` lists them
        types = [str(classes[i]) for i in order]
        fam_p: dict[str, float] = defaultdict(float)
        for c, v in zip(classes, p, strict=True):
            fam_p[family_of[str(c)]] += float(v)
        families = sorted(fam_p, key=lambda f: -fam_p[f])
        out.append(
            {
                "experiment_id": row["experiment_id"],
                "mode": mode,
                "task": row["task"],
                "strength": row["strength"],
                "true_type": row["type"],
                "true_family": row["family"],
                "types": types[:3],
                "families": families[:3],
                "probability": float(p[order[0]]) if order else 0.0,
                "unknown": bool(far),
            }
        )
    return out


def _predictions_seeds(runs: list[RunData], folds: int, alpha: float) -> list[dict[str, Any]]:
    fold_of = split_cells((r.meta["cell"] for r in runs), folds)
    out = []
    for fold in range(folds):
        healthy = [
            r for r in runs if fold_of[r.meta["cell"]] != fold and r.meta["control_or_fault"] == "control"
        ]
        detector = Detector(alpha=alpha).fit(healthy)
        table = fingerprint_table(detector, runs, MODES)
        in_test = table["cell"].map(fold_of) == fold
        diagnoser = Diagnoser(Library(table[~in_test]))
        for mode in MODES:
            out += [
                {**p, "split": "seeds"}
                for p in _rank(diagnoser, mode, table[in_test & (table["mode"] == mode)])
            ]
    return out


def _predictions_tasks(runs: list[RunData], alpha: float) -> list[dict[str, Any]]:
    held_out = [t for t in HELD_OUT_TASKS if any(r.task == t for r in runs)]
    if not held_out:
        return []
    controls = [r for r in runs if r.meta["control_or_fault"] == "control"]
    band = fingerprint_table(Detector(alpha=alpha).fit(controls), runs, ("band",))
    out = []
    for task in held_out:
        # Self mode uses no healthy run of the new task at all, not even to calibrate the anchor's alarms.
        others = Detector(alpha=alpha).fit([r for r in controls if r.task != task])
        table = pd.concat([band, fingerprint_table(others, runs, ("self",))], ignore_index=True)
        diagnoser = Diagnoser(Library(table[table["task"] != task]))
        for mode in MODES:
            test = table[(table["task"] == task) & (table["mode"] == mode)]
            out += [{**p, "split": "task"} for p in _rank(diagnoser, mode, test)]
    return out


def _scores(preds: list[dict[str, Any]]) -> dict[str, Any]:
    faults = [p for p in preds if p["true_type"] != HEALTHY]
    if not faults:
        return {}
    types = sorted({p["true_type"] for p in faults})
    top1 = [p["types"][0] for p in faults]
    truth = [p["true_type"] for p in faults]
    per_type = {}
    for kind in types:
        mine = [p for p in faults if p["true_type"] == kind]
        confusions = Counter(p["types"][0] for p in mine if p["types"][0] != kind)
        per_type[kind] = {
            "n": len(mine),
            "top1": sum(p["types"][0] == kind for p in mine) / len(mine),
            "confused_with": dict(confusions.most_common(3)),
        }
    return {
        "n": len(faults),
        "type_top1": float(np.mean([p["types"][0] == p["true_type"] for p in faults])),
        "type_top3": float(np.mean([p["true_type"] in p["types"][:3] for p in faults])),
        "family_top1": float(np.mean([p["families"][0] == p["true_family"] for p in faults])),
        "family_top3": float(np.mean([p["true_family"] in p["families"][:3] for p in faults])),
        "type_macro_f1": float(f1_score(truth, top1, labels=types, average="macro", zero_division=0)),
        "unknown_rate": float(np.mean([p["unknown"] for p in faults])),
        "per_type": per_type,
    }


def _summarise(preds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split in ("seeds", "task"):
        for mode in MODES:
            mine = [p for p in preds if p["split"] == split and p["mode"] == mode]
            if not mine:
                continue
            controls = [p for p in mine if p["true_type"] == HEALTHY]
            out[f"{split}/{mode}"] = {
                "easy": _scores([p for p in mine if p["strength"] == "easy"]),
                "hard": _scores([p for p in mine if p["strength"] == "hard"]),
                "healthy_controls": len(controls),
                "controls_called_healthy": (
                    float(np.mean([p["types"][0] == HEALTHY for p in controls])) if controls else math.nan
                ),
            }
    return out


def confusion(preds: list[dict[str, Any]], strength: str) -> pd.DataFrame:
    """Counts of (true type, top-1 type) over fault runs of one strength."""
    faults = [p for p in preds if p["true_type"] != HEALTHY and p["strength"] == strength]
    labels = [*sorted(FAULT_TYPES), HEALTHY]
    table = pd.crosstab(
        pd.Categorical([p["true_type"] for p in faults], categories=labels),
        pd.Categorical([p["types"][0] for p in faults], categories=labels),
        dropna=False,
    )
    return table.loc[sorted(FAULT_TYPES)]


def evaluate(bench: Path, folds: int = 5, alpha: float = 0.02) -> dict[str, Any]:
    if folds < 2:
        raise RftfmError(f"--folds must be at least 2, got {folds}")
    started = time.perf_counter()
    runs = load_bench(bench)
    preds = _predictions_seeds(runs, folds, alpha) + _predictions_tasks(runs, alpha)
    return {
        "bench": str(bench),
        "runs": len(runs),
        "folds": folds,
        "alpha": alpha,
        "seconds": round(time.perf_counter() - started, 1),
        "results": _summarise(preds),
        "predictions": preds,
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"Diagnosis on {report['bench']}: {report['runs']} runs; seeds split {report['folds']}-fold by "
        f"cell; task split: leave one arithmetic task out; detector alpha {report['alpha']} "
        f"({report['seconds']} s)",
        "",
        "| split / mode | strength | fault runs | type top-1 | type top-3 | family top-1 | family top-3 "
        "| type macro-F1 | unknown |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, result in report["results"].items():
        for strength in ("easy", "hard"):
            s = result[strength]
            if s:
                lines.append(
                    f"| {key} | {strength} | {s['n']} | {s['type_top1']:.3f} | {s['type_top3']:.3f} | "
                    f"{s['family_top1']:.3f} | {s['family_top3']:.3f} | {s['type_macro_f1']:.3f} | "
                    f"{s['unknown_rate']:.1%} |"
                )
    lines += ["", "Healthy controls diagnosed `healthy` (top-1):", ""]
    for key, result in report["results"].items():
        lines.append(f"- {key}: {result['controls_called_healthy']:.1%} of {result['healthy_controls']}")
    headline = report["results"].get("seeds/band")
    if headline:
        lines += ["", "Targets (seeds split, band mode):", ""]
        for metric, by_strength in TARGETS.items():
            for strength, target in by_strength.items():
                value = headline[strength].get(metric, math.nan)
                verdict = "met" if value >= target else "**missed**"
                lines.append(f"- {metric} {strength}: {value:.3f} (target {target:.2f}) {verdict}")
        lines += ["", "Per type, seeds split, band mode (top-1 easy / hard; top confusions when < 1):", ""]
        for kind in sorted(FAULT_TYPES):
            parts = []
            for strength in ("easy", "hard"):
                row = headline[strength].get("per_type", {}).get(kind)
                if row is None:
                    continue
                text = f"{row['top1']:.2f}"
                if row["confused_with"]:
                    text += " (→ " + ", ".join(f"{k} {v}" for k, v in row["confused_with"].items()) + ")"
                parts.append(text)
            if parts:
                lines.append(f"- {FAULT_TYPES[kind]} {kind}: " + " / ".join(parts))
    families = ", ".join(f"{k} = {v}" for k, v in FAULT_FAMILIES.items())
    lines += ["", f"Families: {families}."]
    return "\n".join(lines) + "\n"


def plot_confusion(report: dict[str, Any], path: Path, split: str = "seeds", mode: str = "band") -> Path:
    """Confusion matrices (easy, hard) of one split and mode as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    preds = [p for p in report["predictions"] if p["split"] == split and p["mode"] == mode]
    fig, axes = plt.subplots(1, 2, figsize=(17, 9), constrained_layout=True)
    for ax, strength in zip(axes, ("easy", "hard"), strict=True):
        table = confusion(preds, strength)
        shares = table.div(table.sum(axis=1).replace(0, 1), axis=0)
        ax.imshow(shares.to_numpy(), cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(table.columns)), table.columns, rotation=90, fontsize=8)
        ax.set_yticks(range(len(table.index)), table.index, fontsize=8)
        for i in range(table.shape[0]):
            for j in range(table.shape[1]):
                n = int(table.iat[i, j])
                if n:
                    colour = "white" if shares.iat[i, j] > 0.5 else "black"
                    ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color=colour)
        ax.set_xlabel("diagnosed (top-1)")
        ax.set_ylabel("injected")
        ax.set_title(f"{strength} faults, {split} split, {mode} mode")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
