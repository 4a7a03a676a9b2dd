"""Per-step summaries of trajectory records, logged beside a step's metrics under `traj/` names.

Detectors read step rows, not trajectories, so the shape of a step's completions (how many were cut at
the length cap, how repetitive they were, how many groups gave no learning signal) is condensed into a
few numbers per step. The live recorder adds them to every logged step; importers that carry
trajectories can call the same function so that imported and live runs expose the same `traj/` metrics.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

PREFIX = "traj/"
# Bump when a definition below changes: runs whose stored traj/ step metrics carry this version (in their
# config, `traj_aggregates_version`) were aggregated per step by these definitions, and detection reads
# them as stored instead of recomputing them from the trajectories.
# 2: traj/distinct_completion_frac counts logged completions only (a source without completion texts
#    gave 0, "every sample the same", instead of no value).
AGGREGATES_VERSION = 2
VERSION_KEY = "traj_aggregates_version"

# Equal-reward tolerance for `traj/zero_std_group_frac`, close to TRL's `torch.isclose(std, 0)`.
_ZERO_STD_RTOL = 1e-6
_ZERO_STD_ATOL = 1e-8

# Trajectory columns that `aggregate_trajectories` reads (callers select these before aggregating).
INPUT_COLUMNS: tuple[str, ...] = (
    "step",
    "group_id",
    "reward",
    "advantage",
    "response_length",
    "truncated",
    "repetition_ratio",
    "unique_token_ratio",
    "empty_response",
    "short_response",
    "long_response",
    "tool_call_count",
    "tool_error_count",
    "completion",
)

AGGREGATE_NAMES: tuple[str, ...] = (
    "traj/count",
    "traj/reward_mean",
    "traj/advantage_abs_mean",
    "traj/response_length_mean",
    "traj/truncated_frac",
    "traj/empty_frac",
    "traj/short_frac",
    "traj/long_frac",
    "traj/repetition_ratio_mean",
    "traj/unique_token_ratio_mean",
    "traj/zero_std_group_frac",
    "traj/tool_calls_mean",
    "traj/tool_error_rate",
    "traj/reward_neg_frac",
    "traj/reward_mismatch_frac",
    "traj/adv_reward_discord_frac",
    "traj/advantage_group_mean_abs",
    "traj/advantage_group_std_mean",
    "traj/distinct_completion_frac",
)

# aggregate name → (store column, how): "mean" of a float column, "frac" of a boolean column, "abs_mean".
_SIMPLE: tuple[tuple[str, str, str], ...] = (
    ("traj/reward_mean", "reward", "mean"),
    ("traj/advantage_abs_mean", "advantage", "abs_mean"),
    ("traj/response_length_mean", "response_length", "mean"),
    ("traj/truncated_frac", "truncated", "frac"),
    ("traj/empty_frac", "empty_response", "frac"),
    ("traj/short_frac", "short_response", "frac"),
    ("traj/long_frac", "long_response", "frac"),
    ("traj/repetition_ratio_mean", "repetition_ratio", "mean"),
    ("traj/unique_token_ratio_mean", "unique_token_ratio", "mean"),
    ("traj/tool_calls_mean", "tool_call_count", "mean"),
)


def _as_float(series: pd.Series) -> np.ndarray:
    """Any column (float, int, bool, or object holding None) as float64 with NaN for missing values.

    Columns read back from Parquet hold None in object dtype when a boolean column has nulls, so a plain
    `astype(float)` is not enough.
    """
    if series.dtype == object:
        series = pd.to_numeric(series.astype("Float64"), errors="coerce")
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _nanmean(values: np.ndarray) -> float | None:
    """Mean over the non-NaN values; None when there are none (the caller then omits the key)."""
    valid = values[~np.isnan(values)]
    return float(valid.mean()) if valid.size else None


def _zero_std_group_frac(df: pd.DataFrame) -> float | None:
    """Fraction of prompt groups whose finite rewards are all equal (or fewer than two are finite).

    Such a group gets zero advantage for every completion in GRPO: it costs compute and teaches nothing.
    Groups are keyed by (step, group_id) so that a frame spanning several steps is handled correctly.
    Plain numpy (no pandas groupby): the live recorder calls this at every logged step.
    """
    if "group_id" not in df.columns or "reward" not in df.columns:
        return None
    group = _as_float(df["group_id"])
    reward = _as_float(df["reward"])
    if np.isnan(group).all() or np.isnan(reward).all():
        return None
    step = _as_float(df["step"]) if "step" in df.columns else np.zeros(len(df))
    keep = ~np.isnan(group)
    group = group[keep]
    step = np.nan_to_num(step[keep], nan=-1.0)
    # One number per (step, group): exact in float64 for any realistic step count and group id.
    keys = (step - step.min()) * (group.max() - group.min() + 1) + (group - group.min())
    _, inverse = np.unique(keys, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    reward = reward[keep]
    finite = np.isfinite(reward)
    members, values = inverse[finite], reward[finite]
    count = np.bincount(members, minlength=n_groups)
    low = np.full(n_groups, np.inf)
    high = np.full(n_groups, -np.inf)
    np.minimum.at(low, members, values)
    np.maximum.at(high, members, values)
    with np.errstate(invalid="ignore"):
        flat = np.isclose(high, low, rtol=_ZERO_STD_RTOL, atol=_ZERO_STD_ATOL)
    return float(((count < 2) | flat).mean())


def _group_consistency(df: pd.DataFrame) -> dict[str, float]:
    """Group-level checks that GRPO's own arithmetic makes constant in a healthy run (see the names)."""
    out: dict[str, float] = {}
    if "reward" not in df.columns:
        return out
    reward = _as_float(df["reward"])
    finite = np.isfinite(reward)
    if finite.any():
        out["traj/reward_neg_frac"] = float((reward[finite] < 0).mean())
    if "group_id" not in df.columns:
        return out
    frame = pd.DataFrame(
        {
            "step": _as_float(df["step"]) if "step" in df.columns else np.zeros(len(df)),
            "group": _as_float(df["group_id"]),
            "reward": reward,
        }
    )
    keys = ["step", "group"]
    if "completion" in df.columns:
        frame["completion"] = df["completion"].astype("string").to_numpy()
        logged = frame[frame["completion"].notna()]  # a group without texts has no diversity to measure
        distinct = logged.groupby(keys)["completion"].agg(lambda c: c.nunique() / max(1, len(c)))
        if len(distinct):
            out["traj/distinct_completion_frac"] = float(distinct.mean())
        spread = frame.groupby([*keys, "completion"], dropna=True)["reward"].agg(lambda r: r.max() - r.min())
        mismatch = (spread > 1e-9).groupby(level=[0, 1]).any()
        if len(mismatch):
            out["traj/reward_mismatch_frac"] = float(mismatch.mean())
    if "advantage" in df.columns:
        frame["advantage"] = _as_float(df["advantage"])
        frame = frame[np.isfinite(frame["advantage"]) & np.isfinite(frame["reward"])]
        if not frame.empty:
            grouped = frame.groupby(keys)
            out["traj/advantage_group_mean_abs"] = float(grouped["advantage"].mean().abs().mean())
            centred_r = frame["reward"] - grouped["reward"].transform("mean")
            centred_a = frame["advantage"] - grouped["advantage"].transform("mean")
            cov = (centred_r * centred_a).groupby([frame["step"], frame["group"]]).sum()
            varied = grouped["reward"].agg(lambda r: r.max() - r.min()) > 1e-9
            if varied.any():
                out["traj/adv_reward_discord_frac"] = float((cov[varied] < 0).mean())
                std = grouped["advantage"].std()[varied]
                if std.notna().any():
                    out["traj/advantage_group_std_mean"] = float(std.mean())
    return out


def aggregate_trajectories(df: pd.DataFrame) -> dict[str, float]:
    """Summarise one step's trajectory rows (columns named as in the store's TRAJECTORY_SCHEMA).

    Definitions (each over the rows of `df`; NaN and null values are left out of means and fractions):

    - traj/count: number of rows (completions).
    - traj/reward_mean: mean total reward; NaN rewards (unscorable completions) are excluded.
    - traj/advantage_abs_mean: mean |advantage|; near 0 means the step had almost no learning signal.
    - traj/response_length_mean: mean completion length in tokens.
    - traj/truncated_frac: fraction of completions that ended without an EOS token (cut at the cap).
    - traj/empty_frac, traj/short_frac, traj/long_frac: fraction flagged empty / short / long.
    - traj/repetition_ratio_mean: mean of 1 − distinct 3-grams / 3-grams (degenerate loops → near 1).
    - traj/unique_token_ratio_mean: mean of distinct tokens / tokens.
    - traj/tool_calls_mean: mean tool calls per completion.
    - traj/tool_error_rate: failed tool calls / tool calls (absent when no completion called a tool).
    - traj/reward_neg_frac: fraction of negative rewards.
    - traj/distinct_completion_frac: mean over groups of distinct completions / completions logged
      (diversity: near 1/group size means every sample of a prompt is the same text — collapse or a cold
      sampler); rows without a completion text are left out.
    - traj/reward_mismatch_frac: fraction of groups in which the same completion text got different
      rewards (a deterministic verifier never does that: noise, misattached or flipped rewards do).
    - traj/adv_reward_discord_frac: fraction of groups with unequal rewards whose advantages run against
      their rewards (negative covariance): advantages flipped or attached to the wrong rows.
    - traj/advantage_group_mean_abs: mean over groups of |mean advantage|; GRPO's baseline makes it ~0.
    - traj/advantage_group_std_mean: mean over groups with unequal rewards of the advantages' std; GRPO's
      group scaling makes it ~1, whatever the rewards (a wrong group size or scale moves it).
    - traj/zero_std_group_frac: fraction of (step, group_id) groups whose finite rewards are all equal or
      that have fewer than two finite rewards, i.e. groups that give GRPO no signal.

    A key is left out when its column is absent or holds no value at all, so that a source without, say,
    token statistics yields no made-up number. (Pandas cannot tell a missing float from a NaN one, so a
    step whose rewards are all NaN has no traj/reward_mean; the step metric `reward` still shows the NaN.)
    """
    out: dict[str, float] = {"traj/count": float(len(df))}
    if df.empty:
        return out
    for name, column, how in _SIMPLE:
        if column not in df.columns:
            continue
        values = _as_float(df[column])
        if how == "abs_mean":
            values = np.abs(values)
        mean = _nanmean(values)
        if mean is not None:
            out[name] = mean
    if "tool_call_count" in df.columns and "tool_error_count" in df.columns:
        calls = np.nansum(_as_float(df["tool_call_count"]))
        if calls > 0:
            out["traj/tool_error_rate"] = float(np.nansum(_as_float(df["tool_error_count"])) / calls)
    out.update(_group_consistency(df))
    zero_std = _zero_std_group_frac(df)
    if zero_std is not None:
        out["traj/zero_std_group_frac"] = zero_std
    return out


def aggregate_by_step(table: pa.Table | pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """`aggregate_trajectories` for every step of a run at once: one row per step, one column per
    aggregate (NaN where the per-step function leaves the key out), in one vectorised DuckDB pass.

    Ingest and detection aggregate whole runs; looping over steps with pandas costs ~20× the reading
    of the file. The definitions are the ones documented on `aggregate_trajectories` (a test holds the
    two equal on random trajectories with NaN, nulls and missing columns); the live recorder keeps the
    per-step function, which sees one step at a time. `by` names a column that tells several runs apart
    (ingest aggregates a whole export in one pass): the result then has one row per (by, step).
    """
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    cols = set(table.column_names)
    keys = [by, "step"] if by else ["step"]
    if "step" not in cols or table.num_rows == 0:
        return pd.DataFrame({k: pd.Series(dtype="int64") for k in keys})
    table = table.select([*([by] if by else []), *[c for c in INPUT_COLUMNS if c in cols]])
    con = duckdb.connect()
    con.register("t", table)

    def num(c: str) -> str:  # a column as DOUBLE with NaN (and nulls) as NULL
        return f"CASE WHEN isnan(TRY_CAST({c} AS DOUBLE)) THEN NULL ELSE TRY_CAST({c} AS DOUBLE) END"

    key_sql = ", ".join(keys)

    def q(sql: str) -> pd.DataFrame:  # every query groups by the run key too, when there is one
        relation = con.sql(re.sub(r"\bstep\b", key_sql, sql))
        return relation.df() if relation is not None else pd.DataFrame()

    selects = ["step", 'count(*)::DOUBLE AS "traj/count"']
    for name, column, how in _SIMPLE:
        if column in cols:
            value = f"abs({num(column)})" if how == "abs_mean" else num(column)
            selects.append(f'avg({value}) AS "{name}"')
    if {"tool_call_count", "tool_error_count"} <= cols:
        calls = f"sum(coalesce({num('tool_call_count')}, 0))"
        errors = f"sum(coalesce({num('tool_error_count')}, 0))"
        selects.append(f'CASE WHEN {calls} > 0 THEN {errors} / {calls} END AS "traj/tool_error_rate"')
    if "reward" in cols:
        selects.append(
            f"avg(CASE WHEN isfinite({num('reward')}) THEN ({num('reward')} < 0)::DOUBLE END) "
            'AS "traj/reward_neg_frac"'
        )
    out = q(f"SELECT {', '.join(selects)} FROM t GROUP BY step")
    if {"group_id", "reward"} <= cols:
        out = out.merge(_group_aggregates(q, cols, num), on=keys, how="left")
    con.close()
    out = out.sort_values(keys).reset_index(drop=True)
    out["step"] = out["step"].astype("int64")
    keep = [*keys, *[c for c in out.columns if c not in keys and out[c].notna().any()]]
    return out[keep].astype({c: "float64" for c in keep if c not in keys})


def aggregate_by_run(tables: Sequence[pa.Table | None]) -> dict[int, pd.DataFrame]:
    """`aggregate_by_step` for several runs' trajectory tables in one pass (its fixed cost is most of
    the work for one run): {position of a table: its per-step aggregates}. Each run's frame holds only
    the aggregates it has a value for, as if it had been aggregated alone; a table that is None or
    empty gets no entry."""
    names, blocks = aggregate_blocks(tables)
    out = {}
    for i, (step, block) in blocks.items():
        has = ~np.isnan(block).all(axis=0)
        frame = pd.DataFrame(block[:, has], columns=[n for n, h in zip(names, has, strict=True) if h])
        frame.insert(0, "step", step)
        out[i] = frame
    return out


def aggregate_blocks(
    tables: Sequence[pa.Table | None],
) -> tuple[list[str], dict[int, tuple[np.ndarray, np.ndarray]]]:
    """What `aggregate_by_run` computes, as arrays: the aggregate names and, by position of a table,
    its steps (sorted) and a steps × names block of values (NaN where a step has none). Ingest attaches
    these to step rows directly: building a data frame per run cost ~1 ms a run."""
    parts = [
        t.select([c for c in INPUT_COLUMNS if c in t.column_names]).append_column(
            "run", pa.array(np.full(t.num_rows, i, dtype=np.int32))
        )
        for i, t in enumerate(tables)
        if t is not None and t.num_rows
    ]
    if not parts:
        return [], {}
    aggregates = aggregate_by_step(pa.concat_tables(parts, promote_options="permissive"), by="run")
    names = [c for c in aggregates.columns if c not in ("run", "step")]
    run_of, step = aggregates["run"].to_numpy(), aggregates["step"].to_numpy()
    values = aggregates[names].to_numpy(dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, run_of[1:] != run_of[:-1]])  # rows are sorted by (run, step)
    ends = [*starts[1:], len(run_of)]
    return names, {int(run_of[a]): (step[a:b], values[a:b]) for a, b in zip(starts, ends, strict=True)}


def _group_aggregates(
    q: Callable[[str], pd.DataFrame], cols: set[str], num: Callable[[str], str]
) -> pd.DataFrame:
    """The (step, group) aggregates of `_group_consistency` and `_zero_std_group_frac`, per step."""
    g = num("group_id")
    r = num("reward")
    completion = "CAST(completion AS VARCHAR)" if "completion" in cols else "NULL::VARCHAR"
    advantage = num("advantage") if "advantage" in cols else "NULL::DOUBLE"
    q(f"CREATE TEMP VIEW rows AS SELECT step, {g} AS g, {r} AS r, {completion} AS c, {advantage} AS a FROM t")
    # Zero-std groups: groups of a step whose finite rewards are all (nearly) equal or fewer than two.
    zero = f"""
        SELECT step, avg(CASE WHEN n < 2 OR abs(hi - lo) <= {_ZERO_STD_ATOL} + {_ZERO_STD_RTOL} * abs(lo)
                         THEN 1.0 ELSE 0.0 END) AS "traj/zero_std_group_frac"
        FROM (SELECT step, g, count(r) FILTER (WHERE isfinite(r)) AS n,
                     min(r) FILTER (WHERE isfinite(r)) AS lo, max(r) FILTER (WHERE isfinite(r)) AS hi
              FROM rows WHERE g IS NOT NULL GROUP BY step, g)
        GROUP BY step"""
    parts = [q(zero)]
    # A step whose groups or rewards are all missing gets no zero-std share (as the per-step function).
    present = q("SELECT step FROM rows GROUP BY step HAVING count(g) > 0 AND count(r) > 0")
    keys = list(present.columns)
    parts[0] = parts[0].merge(present, on=keys, how="inner")
    if "completion" in cols:
        parts.append(
            q(
                """SELECT step, avg(d) AS "traj/distinct_completion_frac"
                   FROM (SELECT step, g, count(DISTINCT c) / greatest(1, count(c)) AS d
                         FROM rows WHERE g IS NOT NULL AND c IS NOT NULL GROUP BY step, g)
                   GROUP BY step"""
            )
        )
        parts.append(
            q(
                """SELECT step, avg(m::DOUBLE) AS "traj/reward_mismatch_frac"
                   FROM (SELECT step, g, bool_or(coalesce(spread > 1e-9 AND NOT isnan(spread), false)) AS m
                         FROM (SELECT step, g, c, max(r) - min(r) AS spread
                               FROM rows WHERE g IS NOT NULL AND c IS NOT NULL GROUP BY step, g, c)
                         GROUP BY step, g)
                   GROUP BY step"""
            )
        )
    if "advantage" in cols:
        parts.append(
            q(
                """WITH f AS (SELECT step, g, r, a,
                                     r - avg(r) OVER (PARTITION BY step, g) AS cr,
                                     a - avg(a) OVER (PARTITION BY step, g) AS ca
                              FROM rows WHERE g IS NOT NULL AND isfinite(a) AND isfinite(r)),
                        groups AS (SELECT step, g, abs(avg(a)) AS mean_abs, sum(cr * ca) AS cov,
                                          max(r) - min(r) > 1e-9 AS varied, stddev_samp(a) AS sd
                                   FROM f GROUP BY step, g)
                   SELECT step, avg(mean_abs) AS "traj/advantage_group_mean_abs",
                          avg(CASE WHEN varied THEN (cov < 0)::DOUBLE END) AS "traj/adv_reward_discord_frac",
                          avg(CASE WHEN varied THEN sd END) AS "traj/advantage_group_std_mean"
                   FROM groups GROUP BY step"""
            )
        )
    out = parts[0]
    for part in parts[1:]:
        out = out.merge(part, on=keys, how="outer")
    return out


__all__ = [
    "AGGREGATES_VERSION",
    "AGGREGATE_NAMES",
    "PREFIX",
    "VERSION_KEY",
    "aggregate_blocks",
    "aggregate_by_run",
    "aggregate_by_step",
    "aggregate_trajectories",
]
