"""The per-step numbers detectors read: step metrics plus trajectory aggregates.

`run_frame()` returns one row per step with the step metrics a run logged and, when the store holds its
trajectories, the `traj/` aggregates recomputed from them with the current aggregate definitions (so a
run recorded before a new aggregate existed still gets it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from rftfm_agent.telemetry.aggregates import (
    AGGREGATES_VERSION,
    INPUT_COLUMNS,
    VERSION_KEY,
    aggregate_by_run,
    aggregate_by_step,
)
from rftfm_agent.telemetry.store import Store

# Step metrics and trajectory aggregates the change detectors watch. Held-out accuracy is not among them:
# it is the benchmark's ground truth, and real runs rarely log it every few steps.
STEP_METRICS: tuple[str, ...] = (
    "reward",
    "reward_std",
    "frac_reward_zero_std",
    "kl",
    "entropy",
    "loss",
    "grad_norm",
    "learning_rate",
    "completion_length",
    "completions/clipped_ratio",
)
TRAJ_METRICS: tuple[str, ...] = (
    "traj/advantage_abs_mean",
    "traj/response_length_mean",
    "traj/truncated_frac",
    "traj/repetition_ratio_mean",
    "traj/unique_token_ratio_mean",
    "traj/tool_error_rate",
    "traj/reward_neg_frac",
    "traj/reward_mismatch_frac",
    "traj/adv_reward_discord_frac",
    "traj/advantage_group_mean_abs",
    "traj/advantage_group_std_mean",
    "traj/distinct_completion_frac",
)
WATCHED: tuple[str, ...] = STEP_METRICS + TRAJ_METRICS


def trajectory_aggregates(traj: pd.DataFrame) -> pd.DataFrame:
    """traj/ aggregates per step from a run's trajectory rows (one row per step)."""
    if traj is None or traj.empty:
        return pd.DataFrame({"step": pd.Series(dtype="int64")})
    return aggregate_by_step(traj[[c for c in INPUT_COLUMNS if c in traj.columns]])


FRAME_CHUNK = 64  # runs whose trajectories are aggregated together (see `run_frames`)


def run_frame(store: Store, run_id: str, with_trajectories: bool = True) -> pd.DataFrame:
    """Wide per-step frame: logged metrics, with traj/ aggregates recomputed from stored trajectories
    (unless the run was stored with aggregates of the current definitions: then they are read as stored)."""
    return next(run_frames(store, [run_id], with_trajectories))[1]


def run_frames(
    store: Store, run_ids: Sequence[str], with_trajectories: bool = True, chunk: int = FRAME_CHUNK
) -> Iterator[tuple[str, pd.DataFrame]]:
    """`run_frame` for many runs, in order: the trajectories of a chunk of runs are aggregated in one
    vectorised pass (per run, the pass's fixed cost is most of the work); memory holds one chunk."""
    for start in range(0, len(run_ids), chunk):
        ids = list(run_ids[start : start + chunk])
        manifests = {r: store.manifest(r) for r in ids}
        stale = [
            r
            for r in ids
            if with_trajectories
            and manifests[r].n_trajectories
            and (manifests[r].config or {}).get(VERSION_KEY) != AGGREGATES_VERSION
        ]
        tables = [store.trajectory_table(r, list(INPUT_COLUMNS), manifests[r]) for r in stale]
        aggregates = {stale[i]: frame for i, frame in aggregate_by_run(tables).items()}
        for r in ids:
            steps = store.steps(r)
            aggs = aggregates.get(r)
            if aggs is not None and not aggs.empty:
                steps = steps.drop(columns=[c for c in aggs.columns if c != "step" and c in steps.columns])
                steps = steps.merge(aggs, on="step", how="outer")
            yield r, steps.sort_values("step").reset_index(drop=True)


# Compared on a log scale against healthy runs: a learning rate 10× too low is as wrong as one 10× too
# high. (Gradient norms stay linear: their spikes are the signal.)
LOG_METRICS = frozenset({"learning_rate"})


def to_scale(metric: str, values: np.ndarray | float) -> np.ndarray | float:
    """The values on the scale the healthy band and profile compare them (log10 for LOG_METRICS)."""
    if metric not in LOG_METRICS:
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(np.maximum(values, 1e-12))


def as_float(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float on its comparison scale (see `to_scale`)."""
    return to_scale(column, pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float))
