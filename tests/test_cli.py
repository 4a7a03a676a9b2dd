"""The CLI end to end: ingest, runs, show, sql, and bad input (one line, non-zero, store unchanged)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from rftfm_agent.cli import app

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args))


def test_ingest_runs_show_json(tmp_path: Path, fixtures: Path) -> None:
    store = str(tmp_path / "s")
    result = _run(
        "ingest",
        str(fixtures / "trainer_state.json"),
        str(fixtures / "verl_console.log"),
        "--store",
        store,
        "--json",
    )
    assert result.exit_code == 0, result.output
    ingested = json.loads(result.stdout)["runs"]
    assert {r["format"] for r in ingested} == {"trl_trainer_state", "verl_console"}

    listing = json.loads(_run("runs", "--store", store, "--json").stdout)
    by_format = {r["format"]: r for r in listing}
    assert by_format["verl_console"]["steps"] == 5
    assert by_format["verl_console"]["mapped"]["reward"] == "critic/score/mean"
    assert by_format["trl_trainer_state"]["mapped"]["completion_length"] == "completion_length"
    assert "entropy" in by_format["trl_trainer_state"]["missing"]

    png = tmp_path / "plot.png"
    shown = _run("show", "trainer_state", "--store", store, "--json", "--png", str(png))
    assert shown.exit_code == 0, shown.output
    payload = json.loads(shown.stdout)
    assert payload["metrics"]["grad_norm"]["nan"] == 1 and payload["metrics"]["kl"]["inf"] == 1
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"

    text = _run("show", "trainer_state", "--store", store)
    assert text.exit_code == 0 and "reward" in text.stdout and "not logged by this run" in text.stdout

    rows = json.loads(
        _run(
            "sql", "SELECT count(*) AS n FROM steps WHERE metric = 'reward'", "--store", store, "--json"
        ).stdout
    )
    assert rows == [{"n": 11}]


def _assert_one_line_error(result, path: Path) -> None:
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith(f"error: {path}")
    assert "Traceback" not in result.output


def test_bad_inputs_exit_non_zero_and_store_nothing(tmp_path: Path, fixtures: Path) -> None:
    store = tmp_path / "s"
    _run("ingest", str(fixtures / "verl_console.log"), "--store", str(store))
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    bad = {
        "empty.log": b"",
        "binary.bin": bytes(range(256)) * 40,
        "foreign.csv": b"name,city\nann,paris\nbob,rome\n",
        "truncated.json": (fixtures / "trainer_state.json").read_bytes()[:700],
        "corrupt.log": (fixtures / "hf_console.log")
        .read_bytes()
        .replace(b"'kl': '0.004'", b"'kl': '0.004", 1),
    }
    for name, data in bad.items():
        path = tmp_path / name
        path.write_bytes(data)
        result = _run("ingest", str(path), "--store", str(store))
        _assert_one_line_error(result, path)
        # together with a good file: still nothing is stored
        both = _run("ingest", str(fixtures / "trainer_state.json"), str(path), "--store", str(store))
        assert both.exit_code != 0
        assert sorted(p.relative_to(store) for p in store.rglob("*")) == before, name


def test_skip_bad_stores_the_good_ones(tmp_path: Path, fixtures: Path) -> None:
    (tmp_path / "empty.log").write_text("")
    result = _run(
        "ingest",
        str(fixtures / "trainer_state.json"),
        str(tmp_path / "empty.log"),
        "--store",
        str(tmp_path / "s"),
        "--skip-bad",
        "--json",
    )
    assert result.exit_code == 1
    assert len(json.loads(result.stdout)["runs"]) == 1


def test_unknown_run_and_bad_sql_are_one_line_errors(tmp_path: Path) -> None:
    result = _run("show", "nope", "--store", str(tmp_path / "s"))
    assert result.exit_code == 1 and result.stderr.startswith("error:") and "Traceback" not in result.output
    result = _run("sql", "DROP TABLE steps", "--store", str(tmp_path / "s"))
    assert result.exit_code == 1 and "read-only" in result.stderr


def test_folder_ingest_uses_folder_name(tmp_path: Path, fixtures: Path) -> None:
    folder = tmp_path / "my_verl_run"
    folder.mkdir()
    shutil.copy(fixtures / "verl_console.log", folder / "out.txt")
    result = _run("ingest", str(folder), "--store", str(tmp_path / "s"), "--json")
    assert json.loads(result.stdout)["runs"][0]["run_id"] == "my_verl_run"
