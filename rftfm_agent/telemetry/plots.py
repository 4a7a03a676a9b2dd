"""PNG plots of a run's metrics (matplotlib, headless)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from rftfm_agent.telemetry.store import LOGGED_NAN


def plot_run(steps: pd.DataFrame, metrics: list[str], title: str, out: Path) -> Path:
    """One small panel per metric against step; NaN/Inf steps are marked in red along the x axis."""
    metrics = [m for m in metrics if m in steps.columns]
    if not metrics:
        metrics = [
            c for c in steps.columns if c not in {"step", "wall_time"} and not c.startswith(LOGGED_NAN)
        ][:6]
    cols = 3
    rows = max(1, math.ceil(len(metrics) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        data = steps[["step", metric]].dropna(subset=[metric])
        finite = data[data[metric].map(math.isfinite)]
        ax.plot(finite["step"], finite[metric], lw=1.2)
        bad = data[~data[metric].map(math.isfinite)]
        if not bad.empty:
            ax.scatter(bad["step"], [ax.get_ylim()[0]] * len(bad), color="red", marker="x", label="NaN/Inf")
            ax.legend(fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
