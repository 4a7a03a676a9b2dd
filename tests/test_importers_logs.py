"""trainer_state.json, HF/TRL console and verl console importers, on hand-written fixtures."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rftfm_agent.cli import app
from rftfm_agent.errors import InputError
from rftfm_agent.telemetry import importers


def _by_step(run: importers.ImportedRun) -> dict[int, dict[str, float]]:
    return {s.step: s.values for s in run.steps}


def test_trainer_state(fixtures: Path) -> None:
    (run,) = importers.load(fixtures / "trainer_state.json")
    assert run.source.format == "trl_trainer_state" and run.source.framework == "trl"
    steps = _by_step(run)
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]
    assert steps[3]["eval_reward"] == 0.55  # eval row merged into its step
    assert math.isnan(steps[4]["grad_norm"]) and math.isinf(steps[5]["kl"])  # kept, not dropped
    assert "train_runtime" not in steps[6] and run.config["summary/train_runtime"] == 12.5
    assert run.config["max_steps"] == 6


def test_hf_console_recovers_steps_strings_and_nan(fixtures: Path) -> None:
    (run,) = importers.load(fixtures / "hf_console.log")
    assert run.source.format == "hf_console"
    steps = _by_step(run)
    assert sorted(steps) == [2, 4, 6, 8]  # from the progress bar, not the row order
    assert steps[2]["learning_rate"] == 1e-5  # value printed as a string
    assert math.isnan(steps[6]["grad_norm"])
    assert steps[4]["eval_reward"] == 0.45
    assert run.config["max_steps"] == 8 and run.config["summary/train_runtime"] == 10.2
    assert all("eos_token_id" not in v for v in steps.values())


def test_verl_console_merges_lines_and_keeps_nan(fixtures: Path) -> None:
    (run,) = importers.load(fixtures / "verl_console.log")
    assert run.source.format == "verl_console" and run.source.framework == "verl"
    steps = _by_step(run)
    assert sorted(steps) == [0, 1, 2, 3, 4]
    assert steps[0]["test_score/openai/gsm8k"] == 0.21 and "critic/kl" in steps[0]
    assert math.isnan(steps[3]["actor/grad_norm"])


@pytest.mark.parametrize("name", ["trainer_state.json", "hf_console.log", "verl_console.log"])
def test_format_is_chosen_by_content_not_name(fixtures: Path, tmp_path: Path, name: str) -> None:
    expected = importers.load(fixtures / name)[0].source.format
    renamed = tmp_path / "whatever.dat"
    shutil.copy(fixtures / name, renamed)
    assert importers.load(renamed)[0].source.format == expected


def _error(path: Path) -> str:
    with pytest.raises(InputError) as info:
        importers.load(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.log").write_text("")
    assert "empty" in _error(tmp_path / "empty.log")


def test_binary_file(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 64)
    assert "binary" in _error(tmp_path / "blob.bin")


def test_foreign_text_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("def main():\n    print('hello')\n")
    assert "unknown format" in _error(tmp_path / "notes.txt")
    (tmp_path / "other.json").write_text('{"name": "x", "values": [1, 2]}')
    assert "unknown format" in _error(tmp_path / "other.json")


def test_truncated_trainer_state(fixtures: Path, tmp_path: Path) -> None:
    data = (fixtures / "trainer_state.json").read_text()
    (tmp_path / "ts.json").write_text(data[: len(data) // 2])
    assert "truncated" in _error(tmp_path / "ts.json")


def test_corrupt_trainer_state(fixtures: Path, tmp_path: Path) -> None:
    data = (fixtures / "trainer_state.json").read_text().replace('"kl": 0.002', '"kl": 0.002 oops', 1)
    (tmp_path / "ts.json").write_text(data)
    assert "corrupt JSON at line" in _error(tmp_path / "ts.json")


def test_truncated_console_log_keeps_what_is_complete(fixtures: Path, tmp_path: Path) -> None:
    """A job killed mid-write: the records before the cut are imported, the cut one is skipped, noted."""
    data = (fixtures / "hf_console.log").read_text()
    cut = data.index("{'loss'", data.index("{'loss'") + 1) + 40  # inside the second metrics dict
    (tmp_path / "c.log").write_text(data[:cut])
    (run,) = importers.load(tmp_path / "c.log")
    assert sorted(_by_step(run)) == [2]
    assert any("truncated" in n and "skipped" in n for n in run.source.notes)
    (tmp_path / "only.log").write_text(data[: data.index("{'loss'") + 40])  # nothing complete at all
    assert "truncated" in _error(tmp_path / "only.log")


def test_corrupt_console_log(fixtures: Path, tmp_path: Path) -> None:
    data = (fixtures / "hf_console.log").read_text().replace("'reward': '0.2',", "'reward': [0.2,", 1)
    (tmp_path / "c.log").write_text(data)
    assert "corrupt" in _error(tmp_path / "c.log")


def test_truncated_verl_log_keeps_the_complete_entries(fixtures: Path, tmp_path: Path) -> None:
    data = (fixtures / "verl_console.log").read_text()
    last = data.rstrip("\n").rsplit("\n", 1)[0]  # drop the trailing non-metric line
    (tmp_path / "v.log").write_text(last[: last.rindex(":") - 3])
    (run,) = importers.load(tmp_path / "v.log")
    steps = _by_step(run)
    assert sorted(steps) == [0, 1, 2, 3, 4] and "critic/kl" in steps[4]  # the cut line's complete entries
    assert any("truncated" in n for n in run.source.notes)


def test_folder_skips_notes_and_names_the_run(fixtures: Path, tmp_path: Path) -> None:
    folder = tmp_path / "my_run"
    folder.mkdir()
    shutil.copy(fixtures / "verl_console.log", folder / "train.log")
    (folder / "PROVENANCE.txt").write_text("copied from somewhere\n")
    (folder / "config.yaml").write_text("lr: 1e-6\n")
    (run,) = importers.load(folder)
    assert run.name == "my_run" and run.provenance and "copied" in run.provenance


def test_folder_without_logs(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("nothing here")
    assert "no training log" in _error(tmp_path)


def test_missing_path(tmp_path: Path) -> None:
    assert "no such file" in _error(tmp_path / "nope.log")


def test_wandb_history_jsonl_with_media_is_read_and_its_own_counter_is_not_a_metric(tmp_path: Path) -> None:
    """W&B's `wandb-history.jsonl` (and `scan_history()` dumps) carry media entries in their rows (a
    histogram, a table of completions): such a file was "unknown format". Its `_step` is W&B's log-call
    counter; the trainer's `train/global_step` is the step, as in the CSV importer."""
    import json

    rows = [
        {
            "_step": s - 1,
            "_runtime": 10.0 * s,
            "_timestamp": 1.7e9 + s,
            "train/global_step": 2 * s,
            "train/reward": 0.1 * s,
            "train/kl": 0.01 * s,
            "rewards_hist": {"_type": "histogram", "values": [1, 2], "bins": [0, 0.5, 1]},
            "completions": {"_type": "table-file", "path": "media/table/x.json", "ncols": 3, "nrows": 8},
        }
        for s in range(1, 6)
    ]
    path = tmp_path / "wandb-history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run,) = importers.load(path)
    assert [s.step for s in run.steps] == [2, 4, 6, 8, 10]
    assert run.steps[0].values == {"_runtime": 10.0, "train/reward": 0.1, "train/kl": 0.01}
    assert run.steps[0].wall_time == 1.7e9 + 1 and run.steps[-1].wall_time == 1.7e9 + 5
    assert "W&B media left out (histograms, tables, images): completions, rewards_hist" in run.source.notes
    assert "step counter key(s) not kept as metrics: _step" in run.source.notes
    rows[2]["train/kl"] = {"nested": "x"}  # nested text that is not W&B media: not this format
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[2:]))
    with pytest.raises(InputError, match="unknown format"):
        importers.load(path)


def test_verl_file_logger_jsonl_is_read_from_each_rows_data(tmp_path: Path) -> None:
    """verl's file logger (`trainer.logger=[console,file]`, VERL_FILE_LOGGER_PATH) writes
    `{"step": N, "data": {...}}` per step: it was "unknown format"; its metrics map as verl's console
    lines do."""
    import json

    from rftfm_agent.telemetry.store import Store

    rows = [
        {"step": s, "data": {"actor/entropy": 1.0 / s, "critic/score/mean": 0.25 * s, "actor/pg_loss": 0.5}}
        for s in range(1, 5)
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run,) = importers.load(path)
    assert run.source.framework == "verl" and [s.step for s in run.steps] == [1, 2, 3, 4]
    assert run.steps[1].values == {"actor/entropy": 0.5, "critic/score/mean": 0.5, "actor/pg_loss": 0.5}
    store = Store(tmp_path / "store")
    manifest, _ = store.write_run(run)
    assert {"entropy", "reward", "pg_loss"} <= set(manifest.metrics)


@pytest.mark.parametrize("where", ["mlflow.db", "mlruns"])
def test_mlflow_stores_are_read_run_by_run(fixtures: Path, tmp_path: Path, where: str) -> None:
    """MLflow's SQLite database (its default store; verl's mlflow logger writes one) and its file store,
    as MLflow 3.17 wrote them (tests/fixtures/mlflow/make_fixtures.py): one run per MLflow run, NaN and
    ±Inf as logged (MLflow keeps them as a flag and as ±float max), a value logged again at a step kept
    last, a run that logged no step read in logging order, a failed run said so, a deleted run left out."""
    from rftfm_agent.telemetry.store import Store

    source = shutil.copytree(fixtures / "mlflow", tmp_path / "mlflow")
    runs = {r.name: r for r in importers.load(source / where)}
    assert set(runs) == {"healthy", "crashed", "stepless"}  # "gone" was deleted
    healthy = {s.step: s.values for s in runs["healthy"].steps}
    assert sorted(healthy) == [1, 2, 3, 4, 5, 6]
    assert healthy[2] == {"critic/score/mean": 0.2, "actor/entropy": 0.5, "actor/pg_loss": 0.5}
    assert math.isnan(healthy[3]["actor/kl_loss"]) and healthy[4]["actor/grad_norm"] == math.inf
    assert healthy[6]["critic/score/mean"] == 0.9  # logged again at step 6: the later value
    assert runs["healthy"].config["actor_rollout_ref.actor.optim.lr"] == "1e-06"
    assert runs["healthy"].config["mlflow_experiment"] == "grpo-gsm8k"
    assert "MLflow status FAILED: the run did not finish" in runs["crashed"].source.notes
    stepless = [(s.step, s.values["reward"]) for s in runs["stepless"].steps]
    assert stepless == [(1, 0.3), (2, 0.4), (3, 0.5)]
    assert not any("no importer recognised" in n for r in runs.values() for n in r.source.notes)
    store = Store(tmp_path / "store")
    for _ in range(2):  # the second time: the same bytes, nothing new
        result = CliRunner().invoke(app, ["ingest", str(source / where), "--store", str(store.root)])
        assert result.exit_code == 0, result.output
    assert len(store.manifests()) == 3 and "unchanged" in result.output


def test_a_cut_mlflow_database_is_one_line_naming_it(fixtures: Path, tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    path.write_bytes((fixtures / "mlflow" / "mlflow.db").read_bytes()[:20_000])
    with pytest.raises(InputError, match=r"mlflow\.db: SQLite database that cannot be read \(database disk"):
        importers.load(path)


def test_a_grown_mlflow_database_re_ingests_its_other_runs_as_unchanged(
    fixtures: Path, tmp_path: Path
) -> None:
    """verl's mlflow logger collects every run in one database: a run's hash is of its own rows, so a run
    logged since (or a value added to one run) does not store the others again."""
    import sqlite3

    from rftfm_agent.telemetry.store import Store

    db = tmp_path / "mlflow.db"
    shutil.copy(fixtures / "mlflow" / "mlflow.db", db)
    store = Store(tmp_path / "store")
    first = CliRunner().invoke(app, ["ingest", str(db), "--store", str(store.root)])
    assert first.exit_code == 0, first.output
    with sqlite3.connect(db) as con:
        (run_uuid,) = con.execute("SELECT run_uuid FROM runs WHERE name = 'crashed'").fetchone()
        con.execute("INSERT INTO metrics VALUES ('actor/entropy', 0.02, 1796305852999, ?, 4, 0)", (run_uuid,))
    second = CliRunner().invoke(app, ["ingest", str(db), "--store", str(store.root)])
    assert second.exit_code == 0, second.output
    assert sorted(m.name for m in store.manifests()) == ["crashed", "crashed", "healthy", "stepless"]


def test_mlflow_stores_beside_other_logs(fixtures: Path, tmp_path: Path) -> None:
    """A run folder holding a console log and SQLite or MLflow files that are not runs: the log is read.
    A SQLite file that is not MLflow's (a cache) is named in the notes, not a failure of the folder; an
    `mlruns/` whose runs logged nothing yet adds no run; a metric line cut by a killed job is left out."""
    folder = tmp_path / "job"
    (folder / "mlruns" / "0" / "abc" / "metrics").mkdir(parents=True)
    (folder / "mlruns" / "0" / "abc" / "meta.yaml").write_text("run_id: abc\nstatus: 1\n")
    (folder / "train.log").write_text("step:1 - actor/pg_loss:0.500\nstep:2 - actor/pg_loss:0.400\n")
    import sqlite3

    with sqlite3.connect(folder / "cache.sqlite") as con:
        con.execute("CREATE TABLE t (a)")
    (run,) = importers.load(folder)
    assert run.source.format == "verl_console" and [s.step for s in run.steps] == [1, 2]
    assert any("cache.sqlite" in n for n in run.source.notes)
    with pytest.raises(InputError, match=r"cache\.sqlite: SQLite database without MLflow's"):
        importers.load(folder / "cache.sqlite")
    (folder / "mlruns" / "0" / "abc" / "metrics" / "reward").write_text(
        "1700000001000 0.51 1\n1700000002000 0.5"
    )
    runs = {r.source.format: r for r in importers.load(folder)}
    assert [(s.step, s.values) for s in runs["mlflow"].steps] == [(1, {"reward": 0.51})]
    assert any(n.startswith("truncated: the last line of 1 metric file") for n in runs["mlflow"].source.notes)
    # Cut inside its step (12 → 1): still three fields, but MLflow ends every line with a newline.
    (folder / "mlruns" / "0" / "abc" / "metrics" / "reward").write_text(
        "1700000001000 0.51 1\n1700000002000 0.5 1"
    )
    runs = {r.source.format: r for r in importers.load(folder)}
    assert [(s.step, s.values) for s in runs["mlflow"].steps] == [(1, {"reward": 0.51})]
    # A damaged MLflow database in the folder is an error naming it, not a file quietly left out.
    (folder / "mlflow.db").write_bytes((fixtures / "mlflow" / "mlflow.db").read_bytes()[:20_000])
    with pytest.raises(InputError, match=r"mlflow\.db: SQLite database that cannot be read"):
        importers.load(folder)


def test_wandb_rows_of_media_only_do_not_choose_the_step(tmp_path: Path) -> None:
    """TRL logs its completions table to W&B in a row of its own, without the trainer's step: that row
    made W&B's `_step` the step (JSON lines and CSV alike), and the real steps were dropped."""
    import json

    rows = [
        {"_step": 0, "_runtime": 1.0, "train/global_step": 10, "train/reward": 0.1, "train/loss": 0.5},
        {"_step": 1, "_runtime": 2.0, "completions": {"_type": "table-file", "path": "t.json"}},
        {"_step": 2, "_runtime": 3.0, "train/global_step": 20, "train/reward": 0.2, "train/loss": 0.4},
    ]
    jsonl = tmp_path / "history.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    csv = tmp_path / "history.csv"
    csv.write_text(
        "_step,_runtime,train/global_step,train/reward,train/loss,completions\n"
        "0,1.0,10,0.1,0.5,\n1,2.0,,,,table-file\n2,3.0,20,0.2,0.4,\n"
    )
    for path in (jsonl, csv):
        (run,) = importers.load(path)
        assert [s.step for s in run.steps] == [10, 20], path.name
        assert run.steps[1].values["train/reward"] == 0.2


def test_a_cut_last_value_is_told_by_its_digits_in_csv_and_verl(tmp_path: Path) -> None:
    """A value cut inside its digits still reads as a number: a last value written with fewer digits than
    the column's (verl: the key's, or for a new key all) earlier values is cut, and skipped, noted."""
    csv = tmp_path / "metrics.csv"
    rows = "".join(f"{s},0.{500 + s},0.{1000 + s}\n" for s in range(1, 25))  # fixed widths, as loggers
    csv.write_text("step,reward,kl\n" + rows + "25,0.525,0.10")  # 0.1025 cut
    (run,) = importers.load(csv)
    assert [s.step for s in run.steps] == list(range(1, 25))
    assert any("written shorter" in n for n in run.source.notes)
    short = tmp_path / "short.csv"  # 3 rows: too few to tell a cut from a complete 0.9 after 0.812
    short.write_text("step,reward\n1,0.812\n2,0.873\n3,0.9")
    assert [s.step for s in importers.load(short)[0].steps] == [1, 2, 3]
    verl = tmp_path / "verl.log"
    verl.write_text(
        "".join(f"step:{s} - actor/pg_loss:0.{400 + s}\n" for s in range(1, 25))
        + "step:25 - actor/pg_loss:0.471 - val/score:0."
    )
    (run,) = importers.load(verl)
    assert run.steps[-1].values == {"actor/pg_loss": 0.471} and any(
        "val/score" in n for n in run.source.notes
    )
