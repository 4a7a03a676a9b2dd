"""The vectorised per-step aggregation equals the per-step reference function on messy trajectories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rftfm_agent.telemetry.aggregates import aggregate_by_step, aggregate_trajectories


def _messy(seed: int, steps: int = 12, per_step: int = 24) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = steps * per_step
    reward = rng.choice([0.0, 1.0, 0.5, -1.0], n).astype(float)
    reward[rng.random(n) < 0.05] = np.nan
    reward[rng.random(n) < 0.01] = np.inf
    advantage = rng.normal(0, 1, n)
    advantage[rng.random(n) < 0.05] = np.nan
    group = (np.arange(n) % per_step) // 4 * 1.0
    group[rng.random(n) < 0.03] = np.nan
    completion = rng.choice(["19", "20", "twenty", None], n).astype(object)
    frame = pd.DataFrame(
        {
            "step": np.repeat(np.arange(1, steps + 1), per_step),
            "group_id": group,
            "reward": reward,
            "advantage": advantage,
            "response_length": rng.integers(1, 64, n).astype(float),
            "truncated": rng.random(n) < 0.2,
            "repetition_ratio": rng.random(n),
            "unique_token_ratio": rng.random(n),
            "empty_response": pd.array(rng.choice([True, False, None], n), dtype="boolean"),
            "short_response": rng.random(n) < 0.1,
            "long_response": rng.random(n) < 0.1,
            "tool_call_count": rng.integers(0, 3, n).astype(float),
            "tool_error_count": rng.integers(0, 2, n).astype(float),
            "completion": completion,
        }
    )
    frame.loc[frame["step"] == 3, "reward"] = np.nan  # a step whose rewards are all missing
    frame.loc[frame["step"] == 5, "group_id"] = np.nan  # a step without groups
    frame.loc[frame["step"] == 7, "tool_call_count"] = 0.0  # no tool calls: no error rate
    frame.loc[frame["step"] == 8, "reward"] = 1.0  # every group equal
    return frame


def _reference(frame: pd.DataFrame) -> pd.DataFrame:
    rows = [{"step": int(s), **aggregate_trajectories(g)} for s, g in frame.groupby("step", sort=True)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "drop", [[], ["completion"], ["advantage", "tool_error_count"], ["group_id"], ["reward", "advantage"]]
)
def test_vectorised_equals_per_step(seed: int, drop: list[str]) -> None:
    frame = _messy(seed).drop(columns=drop)
    expected = _reference(frame)
    got = aggregate_by_step(frame)
    assert sorted(got.columns) == sorted(expected.columns)
    pd.testing.assert_frame_equal(
        got[expected.columns],
        expected.astype({c: "float64" for c in expected.columns if c != "step"}),
        check_exact=False,
        rtol=1e-9,
        atol=1e-12,
    )


def test_empty_and_stepless_input() -> None:
    assert aggregate_by_step(pd.DataFrame({"step": pd.Series(dtype="int64")})).empty
    assert list(aggregate_by_step(pd.DataFrame({"reward": [1.0]})).columns) == ["step"]


def test_several_runs_in_one_pass() -> None:
    a, b = _messy(0), _messy(1, steps=5)
    both = pd.concat([a.assign(run="a"), b.assign(run="b")], ignore_index=True)
    got = aggregate_by_step(both, by="run")
    for name, frame in (("a", a), ("b", b)):
        alone = aggregate_by_step(frame)
        mine = got[got["run"] == name].drop(columns="run").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine[alone.columns], alone)


def test_frames_of_many_runs_equal_frames_of_each_run_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`run_frames` aggregates the trajectories of a chunk of runs together; each run's frame must be the
    one its own trajectories give (runs without completions, advantages or trajectories at all, and a
    logged traj/ metric that the recomputed one replaces, across chunk boundaries)."""
    import random

    import pandas as pd
    import pyarrow as pa

    from rftfm_agent.detect.features import run_frames, trajectory_aggregates
    from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo
    from rftfm_agent.telemetry.store import Store

    store = Store(tmp_path / "store")
    rng = random.Random(3)
    for r in range(7):
        rows = [
            {
                "step": s,
                "group_id": i // 4,
                "reward": rng.choice([0.0, 1.0, float("nan")]),
                "advantage": rng.gauss(0, 1) if r % 3 else None,
                "completion": rng.choice(["a", "b"]) if r % 2 else None,
                "response_length": rng.randint(1, 9),
                "truncated": rng.random() < 0.2,
            }
            for s in range(1, 6)
            for i in range(8)
        ]
        steps = [RawStep(step=s, values={"reward": 0.1 * s, "traj/count": 99.0}) for s in range(1, 7)]
        store.write_run(
            ImportedRun(
                name=f"r{r}",
                source=SourceInfo(format="test", paths=[], sha256=f"h{r}"),
                steps=steps,
                trajectories=pa.Table.from_pylist(rows) if r != 4 else None,
            )
        )
    ids = store.run_ids()
    for run_id, frame in run_frames(store, ids, chunk=3):
        alone = store.steps(run_id)
        aggs = trajectory_aggregates(store.trajectories(run_id))
        if not aggs.empty:
            alone = alone.drop(columns=[c for c in aggs.columns if c != "step" and c in alone.columns])
            alone = alone.merge(aggs, on="step", how="outer")
        alone = alone.sort_values("step").reset_index(drop=True)
        pd.testing.assert_frame_equal(frame, alone, check_like=True)
