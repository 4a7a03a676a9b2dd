"""Parquet inputs: step-metric tables and trajectory rows, read column-wise."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from rftfm_agent.cli import app
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.faultbench_export import trajectory_row
from rftfm_agent.telemetry.store import Store


def test_step_metrics_with_nulls_nans_and_text(tmp_path: Path) -> None:
    table = pa.table(
        {
            "global_step": [1, 2, 3, 4],
            "train/reward": pa.array([0.1, 0.2, float("nan"), 0.4]),  # a NaN written as such: logged
            "train/kl": pa.array([0.01, None, 0.03, 0.04]),  # null: not logged at that row
            "run_name": ["a", "a", "a", "a"],
        }
    )
    path = tmp_path / "history.parquet"
    pq.write_table(table, path)
    (run,) = importers.load(path)
    assert [s.step for s in run.steps] == [1, 2, 3, 4]
    assert "train/kl" not in run.steps[1].values and run.steps[2].values["train/kl"] == 0.03
    assert math.isnan(run.steps[2].values["train/reward"])  # a NaN is kept as logged, and noted
    notes = " | ".join(run.source.notes)
    assert "1 NaN value(s) kept" in notes and "run_name" in notes and "'global_step'" in notes

    # pandas writes its NaN as null: a frame's gaps are values not logged, not NaN.
    pd.DataFrame({"step": [1, 2], "reward": [0.5, float("nan")], "kl": [0.1, 0.2]}).to_parquet(path)
    (run,) = importers.load(path)
    assert "reward" not in run.steps[1].values and not any("NaN" in n for n in run.source.notes)


def test_trajectory_rows_nested_or_flat_become_trajectories_with_aggregates(tmp_path: Path) -> None:
    rows = [
        trajectory_row(
            s,
            {"reward": float(i % 2), "response_length": 5},
            {"truncated": i == 0},
            group_id=0,
            response=str(i),
        )
        for s in (1, 2)
        for i in range(4)
    ]
    nested = tmp_path / "rollouts.parquet"
    pq.write_table(pa.Table.from_pylist(rows), nested)
    (run,) = importers.load(nested)
    assert run.trajectories is not None and run.trajectories.num_rows == 8
    assert run.steps[0].values["traj/truncated_frac"] == 0.25 and run.steps[0].values["traj/count"] == 4

    # The store's own trajectory parts read back as trajectories (a run moved from one store to another).
    store = Store(tmp_path / "store")
    result = CliRunner().invoke(app, ["ingest", str(nested), "--store", str(store.root)])
    assert result.exit_code == 0, result.output
    (run_id,) = store.run_ids()
    part = store.runs_dir / run_id / "trajectories" / store.manifest(run_id).trajectory_parts[0]
    (again,) = importers.load(part)
    assert again.trajectories.num_rows == 8
    assert [s.values for s in again.steps] == [s.values for s in run.steps]


def test_a_corrupt_parquet_file_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1" + b"\x00" * 100)
    store = tmp_path / "store"
    result = CliRunner().invoke(app, ["ingest", str(path), "--store", str(store)])
    assert result.exit_code == 1
    assert "broken.parquet" in result.output and "unreadable Parquet" in result.output
    assert Store(store).run_ids() == []

    pq.write_table(pa.table({"step": ["one", "two"], "reward": [0.1, 0.2]}), path)
    result = CliRunner().invoke(app, ["ingest", str(path), "--store", str(store)])
    assert (
        result.exit_code == 1
        and "'step' is not a number" in result.output
        and "Traceback" not in result.output
    )


def test_trajectory_rows_with_a_fractional_step_or_a_word_for_a_reward_are_one_clear_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "traj.parquet"
    one = trajectory_row(1, {"reward": 1.0, "rewards": {"a": 1.0}}, {"truncated": False})
    fraction = {**one, "metadata": {**one["metadata"], "rollout_step": 1.5}}
    word = {**one, "metrics": {"reward": 1.0, "rewards": {"a": "x"}}}
    one_as_double = {**one, "metadata": {**one["metadata"], "rollout_step": 1.0}}
    for rows, message in (
        ([one_as_double, fraction], "row 2: rollout_step 1.5 is not a whole number"),
        ([word, word], "per-function reward metrics.rewards.a holds values that are not numbers"),
    ):
        pq.write_table(pa.Table.from_pylist(rows), path)
        result = CliRunner().invoke(app, ["ingest", str(path), "--store", str(tmp_path / "store")])
        assert result.exit_code == 1 and message in result.output, result.output
        assert Store(tmp_path / "store").run_ids() == []
