"""The RFT-FaultBench layout: registries, step JSONL, trajectory JSONL, labels and aggregates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.faultbench_export import step_row, trajectory_row, write_registry, write_run_folder
from rftfm_agent.telemetry.importers.faultbench import STEP_FILE, TRAJECTORY_FILE


def _write_export(root: Path) -> None:
    for exp, fault in (("exp_fault", "rf_sign_flip"), ("exp_control", None)):
        steps, trajs = [], []
        for step in (1, 2):
            steps.append(
                step_row(
                    step,
                    {
                        "reward": 0.5 * step,
                        "kl": 0.01,
                        "entropy": 1.0,
                        "policy_loss": 0.2,
                        "response_length": 10.0,
                    },
                )
            )
            for i in range(4):
                reward = -1.0 if fault and i == 0 else float(i % 2)
                trajs.append(
                    trajectory_row(
                        step,
                        {
                            "reward": reward,
                            "response_length": 8 + i,
                            "advantage_mean": 0.0,
                            "advantage_std": 1.0,
                            "return": reward,
                            "repetition_ratio": 0.1,
                            "unique_token_ratio": 0.9,
                            "tool_call_count": 1,
                            "tool_error_count": 0,
                            "rewards": {"correct": reward},
                        },
                        {"empty_response": False, "short_response": False, "long_response": i == 3},
                        fault_type=fault,
                        fault_strength="easy" if fault else None,
                        group_id=i // 2,
                        sample_index=i,
                        prompt="1+1=",
                        response=str(i),
                    )
                )
        write_run_folder(root / "RF" / "easy" / exp, steps, trajs)
    write_registry(
        root,
        "rf_easy",
        [
            {
                "experiment_id": "exp_fault",
                "control_or_fault": "fault",
                "fault_type": "rf_sign_flip",
                "fault_family": "RF",
                "task_group": "arith_a",
                "onset_step": 1,
                "strength": "easy",
                "seed": 3,
            },
            {
                "experiment_id": "exp_control",
                "control_or_fault": "control",
                "task_group": "arith_a",
                "seed": 4,
            },
        ],
    )


def test_export_folder_imports_runs_with_labels(tmp_path: Path) -> None:
    _write_export(tmp_path)
    runs = {r.name: r for r in importers.load(tmp_path)}
    assert set(runs) == {"exp_fault", "exp_control"}
    fault, control = runs["exp_fault"], runs["exp_control"]
    assert fault.label == "fault" and fault.fault is not None
    assert (fault.fault.family, fault.fault.type, fault.fault.strength) == ("RF", "rf_sign_flip", "easy")
    assert control.label == "control" and control.fault is None and control.seed == 4
    assert fault.task == "arith_a"
    traj = fault.trajectories
    assert traj is not None and traj.num_rows == 8
    row = traj.slice(0, 1).to_pylist()[0]
    assert row["reward"] == -1.0 and row["completion"] == "0" and row["prompt"] == "1+1="
    assert row["fault_injection_type"] == "rf_sign_flip" and row["group_id"] == 0
    assert dict(row["rewards"]) == {"correct": -1.0}
    step1 = {s.step: s.values for s in fault.steps}[1]
    assert step1["policy_loss"] == 0.2  # the raw OpenRLHF key; the store maps it to pg_loss
    assert step1["traj/count"] == 4 and step1["traj/long_frac"] == 0.25


def test_single_trajectory_file_is_recognised_by_content(tmp_path: Path) -> None:
    _write_export(tmp_path)
    src = tmp_path / "RF" / "easy" / "exp_fault" / TRAJECTORY_FILE
    copy = tmp_path / "data.txt"
    copy.write_bytes(src.read_bytes())
    (run,) = importers.load(copy)
    assert run.trajectories is not None and run.trajectories.num_rows == 8
    assert {s.step for s in run.steps} == {1, 2}


def test_nan_in_step_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "steps.jsonl"
    path.write_text('{"step": 1, "reward": NaN, "kl": 0.1}\n{"step": 2, "reward": 0.5, "kl": Infinity}\n')
    (run,) = importers.load(path)
    values = {s.step: s.values for s in run.steps}
    assert math.isnan(values[1]["reward"]) and math.isinf(values[2]["kl"])


def test_truncated_trajectory_file(tmp_path: Path) -> None:
    _write_export(tmp_path)
    path = tmp_path / "RF" / "easy" / "exp_fault" / TRAJECTORY_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 30])
    with pytest.raises(InputError, match="truncated: last line 8"):
        importers.load(tmp_path)


def test_corrupt_step_line(tmp_path: Path) -> None:
    _write_export(tmp_path)
    path = tmp_path / "RF" / "easy" / "exp_control" / STEP_FILE
    lines = path.read_text().splitlines()
    lines.insert(1, "{not json")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"corrupt JSONL at line 2"):
        importers.load(tmp_path)


def test_registry_without_experiment_id(tmp_path: Path) -> None:
    _write_export(tmp_path)
    (tmp_path / "metadata" / "registries" / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="experiment_id"):
        importers.load(tmp_path)


def test_step_row_without_step(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / STEP_FILE).write_text(json.dumps({"metrics": {"reward": 1.0}}) + "\n")
    with pytest.raises(InputError, match="no valid step"):
        importers.load(tmp_path)


def test_per_function_rewards_map_keeps_each_rows_own_functions(tmp_path: Path) -> None:
    from rftfm_agent.telemetry.importers.faultbench import read_trajectories

    rows = [
        {"metadata": {"rollout_step": 1}, "metrics": {"reward": 1.0, "rewards": {"a": 1.0, "b": 0.0}}},
        {"metadata": {"rollout_step": 1}, "metrics": {"reward": 0.5, "rewards": {"a": 0.5}}},
        {"metadata": {"rollout_step": 2}, "metrics": {"reward": 0.0, "rewards": {"b": float("nan")}}},
    ]
    path = tmp_path / "openrlhf_train_trajectory.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    maps = read_trajectories(path).column("rewards").to_pylist()
    assert dict(maps[0]) == {"a": 1.0, "b": 0.0} and dict(maps[1]) == {"a": 0.5}
    assert list(dict(maps[2])) == ["b"] and math.isnan(dict(maps[2])["b"])


def test_ingest_of_a_large_export_is_staged_and_all_or_nothing(tmp_path: Path) -> None:
    """An export larger than one read chunk streams through hidden staging folders: a corrupt file in the
    last chunk leaves the store exactly as it was (no run, no staging folder), a good export commits
    every run, and the aggregates of runs read together equal those of runs read alone."""
    from typer.testing import CliRunner

    from rftfm_agent.cli import app
    from rftfm_agent.telemetry.importers.faultbench import CHUNK, iter_folder
    from rftfm_agent.telemetry.store import Store

    root = tmp_path / "export"
    n = CHUNK + 3
    for r in range(n):
        steps = [step_row(s, {"reward": 0.1 * s, "kl": 0.01}) for s in (1, 2)]
        trajs = [
            trajectory_row(
                s, {"reward": float((i + r) % 2)}, {}, group_id=i // 2, sample_index=i, response=str(i)
            )
            for s in (1, 2)
            for i in range(4)
        ]
        write_run_folder(root / "runs" / f"exp{r:03d}", steps, trajs)
    alone = {r.name: r for r in [next(iter_folder(root / "runs" / "exp034", chunk=1))]}
    together = {r.name: r for r in iter_folder(root)}
    assert len(together) == n
    assert [s.values for s in together["exp034"].steps] == [s.values for s in alone["exp034"].steps]

    bad = root / "runs" / f"exp{n - 1:03d}" / TRAJECTORY_FILE
    good_text = bad.read_text()
    bad.write_text(good_text.replace("}", "", 1))
    store = tmp_path / "store"
    result = CliRunner().invoke(app, ["ingest", str(root), "--store", str(store)])
    assert result.exit_code == 1 and "corrupt" in result.output
    assert Store(store).run_ids() == [] and not list((store / "runs").glob(".staging-*"))
    bad.write_text(good_text)
    result = CliRunner().invoke(app, ["ingest", str(root), "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    assert len(Store(store).run_ids()) == n and not list((store / "runs").glob(".staging-*"))
    again = CliRunner().invoke(app, ["ingest", str(root), "--store", str(store), "--json"])
    assert {r["outcome"] for r in json.loads(again.stdout)["runs"]} == {"unchanged"}


def test_ingest_benchmark_reports_its_anchor_and_memory() -> None:
    from rftfm_agent.evals.bench_ingest import run_benchmark

    figures = run_benchmark(records=3000)
    assert figures["trajectory_records"] == 3000 and figures["runs"] == 2
    assert figures["ratio_to_duckdb"] > 0 and figures["peak_rss_MB after ingest (process)"] > 0


def test_stored_aggregates_are_read_as_stored_when_current(tmp_path: Path) -> None:
    """An export's traj/ step aggregates are computed at ingest with the current definitions (stamped in
    the run's config); detection then reads them instead of recomputing, and they are the same numbers."""
    import pandas as pd

    from rftfm_agent.detect.features import run_frame, trajectory_aggregates
    from rftfm_agent.telemetry.aggregates import AGGREGATES_VERSION, VERSION_KEY
    from rftfm_agent.telemetry.store import Store

    root = tmp_path / "export"
    _write_export(root)
    store = Store(tmp_path / "store")
    run_ids = [store.write_run(r)[0].run_id for r in importers.load(root)]
    for run_id in run_ids:
        assert store.manifest(run_id).config[VERSION_KEY] == AGGREGATES_VERSION
        frame = run_frame(store, run_id)
        fresh = trajectory_aggregates(store.trajectories(run_id))
        cols = [c for c in fresh.columns if c != "step"]
        pd.testing.assert_frame_equal(
            frame[["step", *cols]].reset_index(drop=True), fresh[["step", *cols]], check_dtype=False
        )
