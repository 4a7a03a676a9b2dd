"""One policy for NaN/Inf in JSON, and atomic writes that leave nothing half-written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rftfm_agent.telemetry import io


def test_non_finite_numbers_round_trip_as_strings() -> None:
    payload = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": np.float64(2.0), "d": "text"}
    text = io.dumps(payload)
    assert "NaN" in text and json.loads(text)["a"] == "NaN"  # standard JSON: no bare NaN token
    back = io.from_json_safe(json.loads(text))
    assert math.isnan(back["a"]) and back["b"] == [math.inf, -math.inf, 1.5] and back["c"] == 2.0
    assert back["d"] == "text"


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    io.atomic_write_text(path, "old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        io.atomic_write_with(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]
    io.atomic_write_bytes(path, b"new")
    assert path.read_text() == "new"


def test_fsync_tree_flushes_every_file_and_folder_of_the_staged_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch commit flushes the staged runs' files and folders (their entries too), nothing else."""
    for run in ("a", "b"):
        for kind in ("steps", "trajectories"):
            (tmp_path / run / kind).mkdir(parents=True)
            (tmp_path / run / kind / "part.parquet").write_bytes(b"x")
        (tmp_path / run / "manifest.json").write_text("{}")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "f").write_text("not staged")
    flushed = []
    real = io._fsync
    monkeypatch.setattr(io, "_fsync", lambda p: (flushed.append(p), real(p)))
    io.fsync_tree([tmp_path / "a", tmp_path / "b"])
    expected = {p for run in ("a", "b") for p in [tmp_path / run, *(tmp_path / run).rglob("*")]}
    assert set(flushed) == expected and len(flushed) == len(expected) == 12
    io.fsync_tree([])
