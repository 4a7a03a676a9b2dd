"""The fault-effect table: does each fault type, at each strength, visibly move the metrics it should?

For every fault run, each metric's mean over the steps from the onset to the end is compared with the
same steps of its matched healthy control (the control of its cell: same task, seed, batch size, learning
rate and KL coefficient; see `presets.py`). The change is then put in units of how much healthy runs
differ among themselves: the robust spread (1.4826 × MAD) of that metric's late-run mean over all controls
of the same task. Per type and strength the table shows the median over runs of the change and of this
effect size.

A type×strength counts as *visible* when some metric's median |effect size| is at least 1: its typical
run differs from its healthy twin by more than healthy runs differ from each other.

What a fault *costs* is read off the ground truth: the held-out accuracy at the end of the run. A fault
run's lost gain is (control's last held-out accuracy − the fault run's) / (control's last − control's
first): the share of what its healthy twin learned that the fault took away (1: learned nothing; above
1: ended worse than it started; below 0: did better than its twin). A type×strength *costs* the gain
when its median lost share is at least `COSTLY` (one third).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rftfm_agent.bench.registry import registry_rows
from rftfm_agent.faults.registry import INJECTORS
from rftfm_agent.telemetry.store import Store

METRICS: tuple[str, ...] = (
    "reward",
    "heldout/accuracy",
    "reward_std",
    "frac_reward_zero_std",
    "kl",
    "entropy",
    "completion_length",
    "completions/clipped_ratio",
    "grad_norm",
    "learning_rate",
    "loss",
    "traj/advantage_abs_mean",
    "traj/repetition_ratio_mean",
    "traj/tool_error_rate",
    "traj/reward_mismatch_frac",
    "traj/adv_reward_discord_frac",
    "traj/advantage_group_std_mean",
    "traj/distinct_completion_frac",
)
VISIBLE = 1.0
COSTLY = 1 / 3  # median share of the healthy gain lost for a fault to count as costly (issue's bar)
HELDOUT = "heldout/accuracy"


def _window_means(frame: Any, start: int) -> dict[str, float]:
    window = frame[frame["step"] >= start]
    out = {}
    for metric in METRICS:
        if metric in window.columns:
            values = window[metric].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            if values.size:
                out[metric] = float(values.mean())
    return out


def _effect_size(delta: float, scale: float | None) -> float:
    """delta in units of the healthy spread; ±inf when healthy runs never differ but this one does."""
    if scale is None or not math.isfinite(scale):
        return math.nan
    if scale == 0:
        return 0.0 if delta == 0 else math.copysign(math.inf, delta)
    return delta / scale


def effect_table(bench: Path) -> dict[str, Any]:
    """Per fault type × strength: runs, median change and median effect size of each metric."""
    bench = Path(bench)
    store = Store(bench / "store")
    finished = {m.experiment_id or m.name: m.run_id for m in store.manifests() if m.status == "finished"}
    rows = [r for r in registry_rows(bench) if r["experiment_id"] in finished]
    frames = {r["experiment_id"]: store.steps(finished[r["experiment_id"]]) for r in rows}
    controls = {r["cell"]: r for r in rows if r["control_or_fault"] == "control"}

    # Healthy spread per task and metric: late-run means (second half) of all controls of the task.
    late: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in controls.values():
        frame = frames[r["experiment_id"]]
        for metric, value in _window_means(frame, int(frame["step"].max()) // 2 + 1).items():
            late[(r["task_group"], metric)].append(value)
    spread = {}
    for key, values in late.items():
        arr = np.asarray(values)
        mad = 1.4826 * float(np.median(np.abs(arr - np.median(arr))))
        spread[key] = mad if mad > 0 else float(arr.std())

    cells: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    counts: dict[tuple[str, str], int] = defaultdict(int)
    lost: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    for r in rows:
        if r["control_or_fault"] != "fault" or r["cell"] not in controls:
            continue
        control_frame = frames[controls[r["cell"]]["experiment_id"]]
        outcome = _lost_gain(frames[r["experiment_id"]], control_frame)
        if outcome is not None:
            lost[(r["fault_type"], r["strength"])].append({**outcome, "midrun": r["onset_style"] == "midrun"})
        onset = int(r["onset_step"] or 1)
        fault_means = _window_means(frames[r["experiment_id"]], onset)
        control_means = _window_means(frames[controls[r["cell"]]["experiment_id"]], onset)
        key = (r["fault_type"], r["strength"])
        counts[key] += 1
        for metric, value in fault_means.items():
            if metric not in control_means:
                continue
            delta = value - control_means[metric]
            cells[key][metric].append((delta, _effect_size(delta, spread.get((r["task_group"], metric)))))

    gains = [g for r in controls.values() if (g := _heldout_gain(frames[r["experiment_id"]])) is not None]
    table: dict[str, Any] = {
        "visible_threshold": VISIBLE,
        "costly_threshold": COSTLY,
        "healthy_heldout_gain_median": float(np.median(gains)) if gains else math.nan,
        "healthy_runs_with_gain": len(gains),
        "rows": [],
    }
    for kind, strength in sorted(cells, key=lambda k: (k[0], k[1] != "easy")):
        metrics = {}
        for metric, pairs in cells[(kind, strength)].items():
            deltas = np.array([p[0] for p in pairs])
            sizes = np.array([p[1] for p in pairs])
            sizes = sizes[~np.isnan(sizes)]
            metrics[metric] = {
                "median_change": float(np.median(deltas)),
                "median_effect_size": float(np.median(sizes)) if sizes.size else math.nan,
            }
        key_metrics = [m for m in INJECTORS[kind].key_metrics if m in metrics] if kind in INJECTORS else []
        strongest = max(
            (m for m in metrics if not math.isnan(metrics[m]["median_effect_size"])),
            key=lambda m: abs(metrics[m]["median_effect_size"]),
            default=None,
        )
        best = abs(metrics[strongest]["median_effect_size"]) if strongest else math.nan
        table["rows"].append(
            {
                "fault_type": kind,
                "strength": strength,
                "runs": counts[(kind, strength)],
                "key_metrics": key_metrics,
                "metrics": metrics,
                "strongest_metric": strongest,
                "strongest_effect_size": best,
                "visible": bool(best >= VISIBLE),
                **_lost_summary(lost.get((kind, strength), [])),
            }
        )
    return table


def _heldout(frame: Any) -> np.ndarray:
    if HELDOUT not in frame.columns:
        return np.array([])
    values = frame[HELDOUT].to_numpy(dtype=float)
    return values[np.isfinite(values)]


def _heldout_gain(frame: Any) -> float | None:
    acc = _heldout(frame)
    return float(acc[-1] - acc[0]) if acc.size >= 2 else None


def _lost_gain(fault_frame: Any, control_frame: Any) -> dict[str, float] | None:
    """End held-out accuracy of a fault run and its control, and the share of the control's gain lost."""
    fault_acc, control_acc = _heldout(fault_frame), _heldout(control_frame)
    if fault_acc.size == 0 or control_acc.size < 2:
        return None
    gain = float(control_acc[-1] - control_acc[0])
    return {
        "fault_end": float(fault_acc[-1]),
        "control_end": float(control_acc[-1]),
        "lost_share": float((control_acc[-1] - fault_acc[-1]) / gain) if gain > 0 else math.nan,
    }


def _lost_summary(outcomes: list[dict[str, float]]) -> dict[str, Any]:
    """Medians over a type×strength's runs (all, and by onset style) of the lost share of the gain."""

    def median(key: str, subset: list[dict[str, float]]) -> float:
        values = [o[key] for o in subset if math.isfinite(o[key])]
        return float(np.median(values)) if values else math.nan

    share = median("lost_share", outcomes)
    return {
        "heldout_end_fault": median("fault_end", outcomes),
        "heldout_end_control": median("control_end", outcomes),
        "lost_share": share,
        "lost_share_step1": median("lost_share", [o for o in outcomes if not o["midrun"]]),
        "lost_share_midrun": median("lost_share", [o for o in outcomes if o["midrun"]]),
        "costly": bool(share >= COSTLY),
    }


def render_markdown(table: dict[str, Any], bench: Path) -> str:
    """The table as Markdown: key metrics' median change (effect size), strongest metric, visible flag."""
    lines = [
        f"Fault effects in `{bench}`: median over runs of (fault − matched control),",
        "each metric averaged over the steps from the fault's onset to the end;",
        "in brackets the effect size, in units of the healthy controls' spread for the task.",
        f"Visible: some metric's median |effect size| ≥ {table['visible_threshold']}.",
        "",
        "| type | strength | runs | key metrics: median change (effect size) | strongest metric | visible |",
        "|---|---|---|---|---|---|",
    ]
    for row in table["rows"]:
        parts = []
        for metric in row["key_metrics"]:
            m = row["metrics"][metric]
            parts.append(f"{metric} {m['median_change']:+.3g} ({m['median_effect_size']:+.1f})")
        strongest = row["strongest_metric"]
        strong_text = (
            f"{strongest} ({row['metrics'][strongest]['median_effect_size']:+.1f})" if strongest else "—"
        )
        lines.append(
            f"| {row['fault_type']} | {row['strength']} | {row['runs']} | {'; '.join(parts)} | {strong_text} "
            f"| {'yes' if row['visible'] else 'NO'} |"
        )
    lines += [
        "",
        "## What each fault costs: the lost gain",
        "",
        f"Healthy controls raise held-out accuracy by {table['healthy_heldout_gain_median']:+.3f} "
        f"(median over {table['healthy_runs_with_gain']} controls, first to last evaluation).",
        "Per fault run, the lost share is (control's end accuracy − the fault run's) / (control's gain);",
        "the table gives medians over runs, overall and by onset style.",
        f"Costly: median lost share ≥ {table['costly_threshold']:.2f}.",
        "",
        "| type | strength | runs | end accuracy: fault / control | lost share | step-1 onset "
        "| mid-run onset | costly |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table["rows"]:
        lines.append(
            f"| {row['fault_type']} | {row['strength']} | {row['runs']} | {row['heldout_end_fault']:.3f} / "
            f"{row['heldout_end_control']:.3f} | {row['lost_share']:+.2f} | {row['lost_share_step1']:+.2f} | "
            f"{row['lost_share_midrun']:+.2f} | {'yes' if row['costly'] else 'no'} |"
        )
    easy = [row for row in table["rows"] if row["strength"] == "easy"]
    lines.append(
        f"\nAt easy strength {sum(r['costly'] for r in easy)} of {len(easy)} types cost at least "
        f"{table['costly_threshold']:.2f} of the healthy gain."
    )
    return "\n".join(lines) + "\n"
