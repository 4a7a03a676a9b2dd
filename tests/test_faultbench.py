"""The RFT-FaultBench layout: registries, step JSONL, trajectory JSONL, labels and aggregates."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pyarrow as pa
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


def test_a_trajectory_file_cut_mid_line_loses_that_line_with_a_note(tmp_path: Path) -> None:
    """A trainer killed while writing leaves its trajectory file's last line cut short: the run is read
    without it, and says so (it was refused whole, as a corrupt file; the metrics JSONL reader already
    skipped such a line). A malformed line before the last is still an error naming it."""
    _write_export(tmp_path)
    path = tmp_path / "RF" / "easy" / "exp_fault" / TRAJECTORY_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 30])
    runs = {r.name: r for r in importers.load(tmp_path)}
    fault = runs["exp_fault"]
    assert fault.trajectories is not None and fault.trajectories.num_rows == 7
    assert "truncated: the last line (8) is an incomplete JSON record and was skipped" in fault.source.notes
    assert runs["exp_control"].trajectories.num_rows == 8
    assert not any(n.startswith("truncated") for n in runs["exp_control"].source.notes)
    lines = data.decode().splitlines(keepends=True)
    path.write_text("".join(lines[:3]) + lines[3][:20] + "\n" + "".join(lines[4:]))
    with pytest.raises(InputError, match="line 4"):
        importers.load(tmp_path)


def test_a_cut_step_file_or_single_trajectory_file_is_read_without_its_last_line(tmp_path: Path) -> None:
    _write_export(tmp_path)
    steps = tmp_path / "RF" / "easy" / "exp_control" / STEP_FILE
    steps.write_bytes(steps.read_bytes()[:-10])
    (control,) = (r for r in importers.load(tmp_path) if r.name == "exp_control")
    assert "truncated: the last line (2) is an incomplete JSON record and was skipped" in control.source.notes
    assert "reward" in control.steps[0].values and "reward" not in control.steps[1].values  # traj/ only
    single = tmp_path / "traj.jsonl"
    data = (tmp_path / "RF" / "easy" / "exp_fault" / TRAJECTORY_FILE).read_bytes()
    single.write_bytes(data + data[:25])
    (run,) = importers.load(single)
    assert run.trajectories is not None and run.trajectories.num_rows == 8
    assert run.source.notes == ["truncated: the last line (9) is an incomplete JSON record and was skipped"]
    single.write_bytes(data + data[:25] + b"\n")  # a newline after it: not cut short, but corrupt
    with pytest.raises(InputError, match="line 9"):
        importers.load(single)


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


def test_chunks_read_ahead_come_out_in_folder_order_and_the_first_bad_file_is_named(tmp_path: Path) -> None:
    """The next chunk is read while the caller stores the current one: runs still come out in folder
    order, and with bad files in two chunks the error names the one of the earlier chunk, after that
    chunk's good runs (the later chunk's read, done ahead, fails too but is never reported)."""
    from rftfm_agent.errors import InputError
    from rftfm_agent.telemetry.importers.faultbench import iter_folder

    root = tmp_path / "export"
    for r in range(7):
        steps = [step_row(s, {"reward": 0.1 * s}) for s in (1, 2)]
        trajs = [
            trajectory_row(s, {"reward": 1.0}, {}, group_id=0, sample_index=i)
            for s in (1, 2)
            for i in range(2)
        ]
        write_run_folder(root / "runs" / f"exp{r}", steps, trajs)
    assert [r.name for r in iter_folder(root, chunk=2)] == [f"exp{r}" for r in range(7)]
    for r in (3, 5):  # chunks: exp0-1, exp2-3, exp4-5, exp6
        path = root / "runs" / f"exp{r}" / TRAJECTORY_FILE
        path.write_text(path.read_text().replace("}", "", 1))
    seen = []
    with pytest.raises(InputError, match="exp3"):
        for run in iter_folder(root, chunk=2):
            seen.append(run.name)
    assert seen == ["exp0", "exp1"]


@pytest.mark.parametrize("later", [TRAJECTORY_FILE, STEP_FILE])
def test_step_files_read_beside_duckdb_still_fail_in_folder_order(tmp_path: Path, later: str) -> None:
    """Step files are read on the pool while DuckDB reads the chunk's trajectories, and a chunk with a
    corrupt trajectory file goes to the per-file reader: whichever file of a later folder is bad too,
    the error names the earlier folder's bad step file, and within one folder the trajectory file."""
    from rftfm_agent.telemetry.importers.faultbench import iter_folder

    root = tmp_path / "export"
    for r in range(4):
        steps = [step_row(s, {"reward": 0.1 * s}) for s in (1, 2)]
        trajs = [
            trajectory_row(s, {"reward": 1.0}, {}, group_id=0, sample_index=i) for s in (1, 2) for i in (0, 1)
        ]
        write_run_folder(root / "runs" / f"exp{r}", steps, trajs)
    step = root / "runs" / "exp1" / STEP_FILE
    step.write_text(step.read_text() + "{not json\n")
    bad = root / "runs" / "exp2" / later
    bad.write_text(bad.read_text().replace("}", "", 1))
    with pytest.raises(InputError, match=f"exp1/{STEP_FILE}"):
        list(iter_folder(root))
    traj = root / "runs" / "exp1" / TRAJECTORY_FILE
    traj.write_text(traj.read_text().replace("}", "", 1))
    with pytest.raises(InputError, match=f"exp1/{TRAJECTORY_FILE}"):
        list(iter_folder(root))


def test_answer_benchmark_prints_its_figures() -> None:
    """`rftfm bench answer` on two runs: every figure is there (shell calls, in-process calls, many runs)."""
    from rftfm_agent.evals.bench_answer import run_answer_benchmark

    figures = run_answer_benchmark(runs=2, repeats=1)
    assert figures["runs stored"] == 2
    timed = [k for k in figures if k.endswith("(s)")]  # figures, not compared: timings here are noisy
    assert len(timed) == 12 and "diagnose 2 runs, one call (s)" in timed
    assert all(isinstance(figures[k], float) for k in timed) and figures["rftfm diagnose RUN, shell (s)"] > 0


def test_ingest_benchmark_reports_its_anchor_and_memory() -> None:
    from rftfm_agent.evals.bench_ingest import run_benchmark

    figures = run_benchmark(records=3000)
    assert figures["trajectory_records"] == 3000 and figures["runs"] == 2
    assert figures["ratio_to_duckdb"] > 0 and figures["peak_rss_MB after ingest (process)"] > 0
    assert figures["reference_ratio_to_duckdb"] > 0 and figures["floor_ratio_to_duckdb"] > 0
    # The CPU figures (every thread's) say whether the wall ratio is bound by the work or by the cores.
    assert figures["ingest_cpu_s (all threads)"] > 0 and figures["cores"] >= 1
    assert figures["cpu_ratio_to_duckdb"] is None or figures["cpu_ratio_to_duckdb"] > 0


def test_csv_ingest_benchmark_stores_every_row_and_reports_its_anchor() -> None:
    from rftfm_agent.evals.bench_ingest import run_csv_benchmark

    figures = run_csv_benchmark(rows=300, columns=12)
    assert figures["steps_stored"] == 300 and figures["csv_columns"] == 12
    assert figures["ratio_to_duckdb"] > 0


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


def _messy_export(root: Path) -> None:
    """Runs whose trajectory files differ the way real exports do: spellings, missing and late keys,
    per-function rewards with NaN, ±Inf and nulls, fractional lengths, flat rows."""
    runs: dict[str, list[dict]] = {
        "a_nested": [
            trajectory_row(
                s,
                {
                    "reward": r,
                    "rewards": {"correct": r, "format": f},
                    "response_length": 7.6,
                    "advantage": 0.5,
                },
                {"truncated": s == 2, "empty_response": False},
                group_id=i // 2,
                sample_index=i,
                prompt_id=f"p{i // 2}",
                response=f"text {i % 3}",
            )
            for s in (1, 2)
            for i, (r, f) in enumerate(
                [(1.0, 0.0), (float("nan"), None), (float("inf"), 1.0), (-float("inf"), None)]
            )
        ],
        "b_completion_spelling": [
            {
                "metadata": {"rollout_step": s, "group_id": 0},
                "metrics": {"reward": float(i)},
                "completion": "x",
            }
            for s in (1, 2, 3)
            for i in range(3)
        ],
        "c_flat_rows": [
            {"metadata": {"rollout_step": s}, "reward": 0.5, "response_length": 4, "prompt": "q"}
            for s in (1, 2)
        ],
        "d_late_key": [
            {
                "metadata": {"rollout_step": 1 + i // 4, "group_id": i // 2},
                "metrics": {"reward": float(i % 2)},
            }
            for i in range(40)
        ]
        + [{"metadata": {"rollout_step": 11, "group_id": 0}, "metrics": {"reward": 1.0, "advantage": -0.3}}],
        "e_no_functions": [
            {"metadata": {"rollout_step": 1}, "metrics": {"reward": 0.0, "rewards": {"a": None}}},
            {"metadata": {"rollout_step": 1}, "metrics": {"reward": 1.0, "rewards": {"b": 2.0, "a": 1.0}}},
        ],
    }
    for name, rows in runs.items():
        write_run_folder(root / "runs" / name, [step_row(1, {"reward": 0.5, "kl": 0.1})], rows)


def _same_table(a, b) -> None:  # type: ignore[no-untyped-def]
    """Two store-schema tables hold the same rows (maps in the same key order, NaN equal to NaN): the
    bytes stored for a file must not depend on the other files read beside it."""
    left, right = a.to_pandas(), b.to_pandas()
    for frame in (left, right):
        frame["rewards"] = [None if m is None else list(m) for m in frame["rewards"]]
    assert left.drop(columns="rewards").equals(right.drop(columns="rewards"))
    for x, y in zip(left["rewards"], right["rewards"], strict=True):
        assert (x is None and y is None) or (
            [k for k, _ in x] == [k for k, _ in y]
            and all(u == v or (math.isnan(u) and math.isnan(v)) for (_, u), (_, v) in zip(x, y, strict=True))
        ), (x, y)


def test_one_read_of_many_files_equals_one_read_per_file(tmp_path: Path) -> None:
    """A chunk's trajectory files read by DuckDB in one typed pass give the same store rows as the
    per-file reader, on messy files; and whole runs (step rows with their traj/ aggregates) are equal."""
    import duckdb

    from rftfm_agent.telemetry.importers.faultbench import (
        _read_together,
        iter_folder,
        read_registries,
        read_run_folder,
        read_trajectories,
    )
    from rftfm_agent.telemetry.store import conform_trajectories

    _messy_export(tmp_path)
    dirs = sorted((tmp_path / "runs").iterdir())
    together = _read_together(duckdb.connect(), dirs)
    assert together is not None
    for d, table in zip(dirs, together, strict=True):
        _same_table(
            conform_trajectories(d.name, table),
            conform_trajectories(d.name, read_trajectories(d / TRAJECTORY_FILE)),
        )
    registry = read_registries(tmp_path)
    for run in iter_folder(tmp_path):
        alone = read_run_folder(tmp_path / "runs" / run.name, registry)
        assert [s.step for s in run.steps] == [s.step for s in alone.steps]
        for mine, theirs in zip(run.steps, alone.steps, strict=True):
            assert mine.values.keys() == theirs.values.keys(), run.name
            assert list(mine.values.values()) == pytest.approx(list(theirs.values.values()), nan_ok=True)
        assert run.source.sha256 == alone.source.sha256


@pytest.mark.parametrize(
    "bad_row",
    [
        {"metadata": {"rollout_step": 1}, "metrics": {"reward": "oops"}},  # another type
        {"metadata": {"rollout_step": 1, "group_id": 0.5}, "metrics": {"reward": 1.0}},  # a fractional id
        {"metrics": {"reward": 1.0}},  # no step
        {
            "metadata": {"rollout_step": 1.5},
            "metrics": {"reward": 1.0},
        },  # DuckDB would round it into a BIGINT
        {"metadata": {"rollout_step": 1}, "metrics": {"reward": 1.0, "rewards": {"a": "x"}}},  # not a number
        {"metadata": {"rollout_step": 1}, "metrics": {"reward": 1.0, "rewards": 3}},  # not an object
    ],
)
def test_a_chunk_duckdb_cannot_read_alike_goes_to_the_per_file_reader(tmp_path: Path, bad_row: dict) -> None:
    import duckdb

    from rftfm_agent.telemetry.importers.faultbench import _read_together

    _messy_export(tmp_path)
    path = tmp_path / "runs" / "c_flat_rows" / TRAJECTORY_FILE
    path.write_text(path.read_text() + json.dumps(bad_row) + "\n")
    assert _read_together(duckdb.connect(), sorted((tmp_path / "runs").iterdir())) is None


def test_skip_bad_leaves_malformed_rows_out_and_counts_them(tmp_path: Path) -> None:
    """Without --skip-bad a corrupt line is a one-line error naming the file and line and nothing is
    stored; with it, the bad lines (anywhere in the file, steps and trajectories) are left out, counted
    in the run's notes and shown, and every good row is stored."""
    from typer.testing import CliRunner

    from rftfm_agent.cli import app
    from rftfm_agent.telemetry.store import Store

    _write_export(tmp_path / "export")
    run_dir = tmp_path / "export" / "RF" / "easy" / "exp_control"
    traj = run_dir / TRAJECTORY_FILE
    lines = traj.read_text().splitlines()
    traj.write_text("\n".join([lines[0], "{not json", *lines[1:3], "[1, 2]", *lines[3:]]) + "\n")
    steps = run_dir / STEP_FILE
    steps.write_text(steps.read_text() + '{"metrics": {"reward": 1.0}}\n')
    store = tmp_path / "store"

    refused = CliRunner().invoke(app, ["ingest", str(tmp_path / "export"), "--store", str(store)])
    assert refused.exit_code == 1 and "line 2" in refused.output and TRAJECTORY_FILE in refused.output
    assert Store(store).run_ids() == []

    kept = CliRunner().invoke(app, ["ingest", str(tmp_path / "export"), "--store", str(store), "--skip-bad"])
    assert kept.exit_code == 0, kept.output
    manifest = Store(store).manifest(Store(store).resolve("exp_control"))
    assert manifest.n_trajectories == len(lines)
    notes = [n for n in manifest.source.notes if n.startswith("--skip-bad")]
    assert any(f"2 malformed row(s) of {TRAJECTORY_FILE}" in n and "line 2" in n for n in notes)
    assert any(f"1 malformed row(s) of {STEP_FILE}" in n for n in notes)
    assert "malformed row(s)" in kept.output


def test_every_spelling_the_mapping_knows_is_read_alike_by_both_readers(tmp_path: Path) -> None:
    """The one-pass DuckDB read declares its columns; a spelling missing there would silently drop a
    column the per-file reader keeps. One run folder per spelling of every store column."""
    import duckdb

    from rftfm_agent.telemetry.importers.faultbench import (
        _TRAJECTORY_COLUMNS,
        _read_together,
        read_trajectories,
    )
    from rftfm_agent.telemetry.store import conform_trajectories

    text = {"prompt_id", "prompt", "completion", "fault_injection_type", "fault_injection_strength"}
    flags = {"truncated", "empty_response", "short_response", "long_response", "fault_injected"}
    n = 0
    for target, spellings in _TRAJECTORY_COLUMNS.items():
        for spelling in spellings:
            if target == "step":
                continue
            value = "x" if target in text else True if target in flags else 2
            row: dict = {"metadata": {"rollout_step": 1}}
            node = row
            *parents, leaf = spelling.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
            write_run_folder(
                tmp_path / "runs" / f"r{n:03d}", [step_row(1, {"reward": 0.0, "kl": 0.0})], [row, row]
            )
            n += 1
    dirs = sorted((tmp_path / "runs").iterdir())
    together = _read_together(duckdb.connect(), dirs)
    assert together is not None
    for d, table in zip(dirs, together, strict=True):
        alone = conform_trajectories(d.name, read_trajectories(d / TRAJECTORY_FILE))
        _same_table(conform_trajectories(d.name, table), alone)


# A row that parses as JSON but is not a trajectory row the store can keep, and the error naming it.
# (pyarrow's reader took a `null` row for a row of nulls, which failed later with a traceback, and a file
# whose first row is `null` crashed the process.)
_MALFORMED_ROWS = [
    ("null", "corrupt JSONL at line {n}: a record must be a JSON object"),
    ("[1, 2]", "corrupt JSONL at line {n}: a record must be a JSON object"),
    ('{"metrics": {"reward": 1.0}}', "line {n}: no rollout_step"),
    ('{"metadata": {"rollout_step": 1.5}, "metrics": {"reward": 1.0}}', "line {n}: rollout_step 1.5 is not"),
    ('{"metadata": {"rollout_step": 2, "group_id": 0.5}, "metrics": {}}', "line {n}: group_id 0.5 is not"),
    (
        '{"metadata": {"rollout_step": 2}, "metrics": {"reward": "high"}}',
        "line {n}: metrics.reward is text where other rows have a number",
    ),
    (
        '{"metadata": {"rollout_step": 2, "sample_index": [1]}}',
        "line {n}: metadata.sample_index is a list where",
    ),
]


@pytest.mark.parametrize(("row", "message"), _MALFORMED_ROWS)
@pytest.mark.parametrize("line", [1, 3])
def test_a_malformed_trajectory_row_is_named_or_left_out(
    tmp_path: Path, row: str, message: str, line: int
) -> None:
    """In an export folder (DuckDB's one read, then the per-file reader) and as a single file: one error
    naming the file and line; with --skip-bad the row is left out, counted, and the rest is kept."""
    _write_export(tmp_path)
    path = tmp_path / "RF" / "easy" / "exp_control" / TRAJECTORY_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[: line - 1], row, *lines[line - 1 :]]) + "\n")
    expected = message.format(n=line)
    with pytest.raises(InputError, match=re.escape(expected)) as refused:
        importers.load(tmp_path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)
    runs = {r.name: r for r in importers.load(tmp_path, skip_bad=True)}
    kept = runs["exp_control"]
    assert kept.trajectories is not None and kept.trajectories.num_rows == len(lines)
    assert kept.trajectories.column("step").type == pa.int64()
    assert any("1 malformed row(s)" in n and f"line {line}" in n for n in kept.source.notes)
    if line > 1:  # a single file is recognised by its first row
        with pytest.raises(InputError, match=re.escape(expected)):
            importers.load(path)


def test_a_fractional_or_boolean_step_in_a_step_file_is_named(tmp_path: Path) -> None:
    """`int()` truncated 1.5 to step 1 without a word."""
    (tmp_path / "x").mkdir()
    path = tmp_path / "x" / STEP_FILE
    first = '{"metadata": {"rollout_step": 1}, "metrics": {"reward": 0.5, "kl": 0.1}}\n'
    for step in ("1.5", "true", "1e400", '"two"'):
        path.write_text(first + f'{{"metadata": {{"rollout_step": {step}}}, "metrics": {{"reward": 0.5}}}}\n')
        with pytest.raises(InputError, match="line 2: no valid step number"):
            importers.load(tmp_path)
    path.write_text(first + '{"metadata": {"rollout_step": 2.0}, "metrics": {"reward": 0.5}}\n')
    assert [s.step for s in importers.load(tmp_path)[0].steps] == [1, 2]


def test_a_word_in_every_row_of_a_number_column_is_one_line_and_nothing_is_stored(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rftfm_agent.cli import app
    from rftfm_agent.telemetry.store import Store

    _write_export(tmp_path / "export")
    path = tmp_path / "export" / "RF" / "easy" / "exp_control" / TRAJECTORY_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text(
        "".join(json.dumps({**r, "metrics": {**r["metrics"], "reward": "high"}}) + "\n" for r in rows)
    )
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "export"), "--store", str(tmp_path / "store")])
    assert result.exit_code == 1, result.output
    assert f"{path}: metrics.reward holds string values, not numbers" in result.output
    assert Store(tmp_path / "store").run_ids() == []


def test_a_list_of_mixed_kinds_is_named_by_the_per_file_reader(tmp_path: Path) -> None:
    """pyarrow's reader refuses a list whose items differ in kind, in any field (DuckDB's one read of
    a folder reads only the fields the store keeps)."""
    path = tmp_path / "traj.jsonl"
    row = {"metadata": {"rollout_step": 1}, "metrics": {"reward": 1.0}}
    path.write_text("".join(json.dumps(r) + "\n" for r in [row, row, {**row, "tags": [1, "a"]}]))
    with pytest.raises(InputError, match=re.escape("line 3: tags[] holds items of mixed kinds")):
        importers.load(path)
    (run,) = importers.load(path, skip_bad=True)
    assert run.trajectories is not None and run.trajectories.num_rows == 2


def test_the_importers_typed_columns_are_the_stores() -> None:
    """faultbench types number, flag and whole-number columns before aggregating (a run whose column is
    text cannot be aggregated beside the others); its lists must say what the store's schema says."""
    from rftfm_agent.telemetry.importers import faultbench
    from rftfm_agent.telemetry.store import TRAJECTORY_SCHEMA

    kinds = {f.name: f.type for f in TRAJECTORY_SCHEMA}
    assert {n for n, t in kinds.items() if t == pa.float64()} == set(faultbench._NUMBER_COLUMNS)
    assert {n for n, t in kinds.items() if t == pa.bool_()} == set(faultbench._FLAG_COLUMNS)
    whole = {n for n, t in kinds.items() if t == pa.int64()}
    assert whole == {"step", "response_length", *faultbench._INTEGER_COLUMNS}


def test_a_files_rewards_map_is_the_same_beside_other_files(tmp_path: Path) -> None:
    """DuckDB reads a chunk of files at once; the map of each file's rows is built as the per-file reader
    builds it, keys in name order, not in an order the chunk's other files (or pyarrow's blocks) set."""
    import duckdb

    from rftfm_agent.telemetry.importers.faultbench import _read_together, read_trajectories

    dirs = []
    for name, rewards in (("r0", {"b": 1.0, "a": 2.0}), ("r1", {"a": 1.0, "b": 2.0})):
        (tmp_path / name).mkdir()
        row = {"metadata": {"rollout_step": 1}, "metrics": {"reward": 1.0, "rewards": rewards}}
        (tmp_path / name / TRAJECTORY_FILE).write_text(json.dumps(row) + "\n")
        dirs.append(tmp_path / name)
    together = _read_together(duckdb.connect(), dirs)
    assert together is not None
    for d, table in zip(dirs, together, strict=True):
        _same_table(table, read_trajectories(d / TRAJECTORY_FILE))
    assert [[k for k, _ in t.column("rewards")[0].as_py()] for t in together] == [["a", "b"], ["a", "b"]]


def test_an_id_past_2_to_the_53_is_read_exactly_from_a_folder(tmp_path: Path) -> None:
    """DuckDB reads ids and steps as doubles (to see fractions); past 2**53 a double is not the number,
    so such a chunk goes to the per-file reader, which reads the digits."""
    (tmp_path / "runs" / "big").mkdir(parents=True)
    row = {"metadata": {"rollout_step": 1, "group_id": 1152921504606846983}, "metrics": {"reward": 1.0}}
    (tmp_path / "runs" / "big" / TRAJECTORY_FILE).write_text(json.dumps(row) + "\n")
    (run,) = importers.load(tmp_path)
    assert (
        run.trajectories is not None and run.trajectories.column("group_id")[0].as_py() == 1152921504606846983
    )


def test_skip_bad_names_the_right_lines_after_a_row_of_another_kind(tmp_path: Path) -> None:
    path = tmp_path / "traj.jsonl"
    rows = [
        {"metadata": {"rollout_step": s}, "metrics": {"reward": "text" if s == 2 else 1.0}}
        for s in (1, 2, 3, 4.5, 5)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run,) = importers.load(path, skip_bad=True)
    assert run.trajectories is not None and run.trajectories.column("step").to_pylist() == [1, 3, 5]
    (note,) = [n for n in run.source.notes if n.startswith("--skip-bad")]
    assert "2 malformed row(s)" in note and "first: line 2: metrics.reward is text" in note
    from rftfm_agent.telemetry.importers.faultbench import read_trajectories

    bad: list[str] = []
    read_trajectories(path, bad)
    assert bad[1] == "line 4: rollout_step 4.5 is not a whole number"


@pytest.mark.parametrize("tags", [[1, {"a": 1}], [[1], ["a"]]])
def test_a_list_mixing_kinds_at_any_depth_is_named(tmp_path: Path, tags: list) -> None:
    path = tmp_path / "traj.jsonl"
    row = {"metadata": {"rollout_step": 1}, "metrics": {"reward": 1.0}}
    path.write_text("".join(json.dumps(r) + "\n" for r in [row, row, {**row, "tags": tags}]))
    with pytest.raises(InputError, match=r"line 3: tags\[\]"):
        importers.load(path)


def test_a_step_written_as_text_is_read_alike_by_both_readers(tmp_path: Path) -> None:
    (tmp_path / "runs" / "r").mkdir(parents=True)
    path = tmp_path / "runs" / "r" / TRAJECTORY_FILE
    path.write_text(json.dumps({"metadata": {"rollout_step": "3.0"}, "metrics": {"reward": 1.0}}) + "\n")
    from rftfm_agent.telemetry.importers.faultbench import read_trajectories

    assert read_trajectories(path).column("step").to_pylist() == [3]
    (run,) = importers.load(tmp_path)
    assert run.trajectories is not None and run.trajectories.column("step").to_pylist() == [3]


def test_a_registry_onset_that_is_not_a_step_names_its_line(tmp_path: Path) -> None:
    _write_export(tmp_path)
    reg = tmp_path / "metadata" / "registries" / "rf_easy.csv"
    reg.write_text(reg.read_text().replace(",1,easy,", ",abc,easy,"))
    with pytest.raises(InputError, match=r"rf_easy.csv: line 2: onset_step 'abc' is not a step"):
        importers.load(tmp_path)


def _random_row(rng: random.Random, step: int, nested: bool) -> dict:
    """A valid trajectory row, nested or flat, with the kinds of value real exports hold."""

    def value() -> float | int | None:
        return rng.choice([0.0, 1.0, 0.5, -2.25, 3, math.nan, math.inf, -math.inf, None, 1e300])

    rewards: object = rng.choice([None, "absent", {}, "some"])
    if rewards == "some":
        rewards = {k: value() for k in rng.sample(["a", "b", "c", "d"], rng.randint(1, 4))}
    metrics = {"reward": value(), "advantage": value(), "response_length": rng.choice([3, 4.0, 7.6, None])}
    if rewards != "absent":
        metrics["rewards"] = rewards
    if rng.random() < 0.3:
        metrics["tool_call_count"] = rng.choice([0, 1, 2.0])
    flags = {
        k: rng.choice([True, False, None])
        for k in rng.sample(["truncated", "empty_response", "long_response"], 2)
    }
    meta = {
        "rollout_step": rng.choice([step, float(step)]),
        "group_id": rng.choice([0, 1, 2.0]),
        "sample_index": 1,
    }
    if rng.random() < 0.3:
        meta["prompt_id"] = rng.choice(["p1", "p2"])
    if not nested:
        out = {
            "rollout_step": meta["rollout_step"],
            "reward": metrics["reward"],
            "group_id": meta["group_id"],
        }
        return {
            **out,
            "response": "y",
            **({"metrics": {"rewards": rewards}} if isinstance(rewards, dict) else {}),
        }
    return {"metadata": meta, "metrics": metrics, "flags": flags, rng.choice(["response", "completion"]): "x"}


@pytest.mark.parametrize("seed", range(40))
def test_both_readers_agree_on_random_valid_files(tmp_path: Path, seed: int) -> None:
    """Differential test: random valid files (nested and flat rows mixed in one file, NaN/±Inf, ints and
    doubles for one column, rewards in any key order, now and then a file of several pyarrow blocks) read
    by DuckDB's one pass and by the per-file reader give the same store rows, and DuckDB's pass reads
    them all. (It found a map's key order following pyarrow's blocks, and flat rows losing their step
    and reward beside nested ones in the per-file reader.)"""
    import duckdb

    from rftfm_agent.telemetry.importers.faultbench import _read_together, read_trajectories
    from rftfm_agent.telemetry.store import conform_trajectories

    rng = random.Random(seed)
    dirs = []
    for f in range(rng.randint(1, 4)):
        (tmp_path / f"r{f}").mkdir()
        dirs.append(tmp_path / f"r{f}")
        nested, many = rng.random() < 0.8, rng.random() < 0.05
        steps, per_step = (400, 40) if many else (rng.randint(2, 4), rng.randint(1, 3))
        rows = [
            _random_row(rng, s, nested if rng.random() < 0.9 else not nested)
            for s in range(1, steps)
            for _ in range(per_step)
        ]
        (dirs[-1] / TRAJECTORY_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    together = _read_together(duckdb.connect(), dirs)
    assert together is not None
    for d, table in zip(dirs, together, strict=True):
        _same_table(
            conform_trajectories("r", table),
            conform_trajectories("r", read_trajectories(d / TRAJECTORY_FILE)),
        )
