"""MLflow tracking stores: the SQLite database (`mlflow.db`; verl's `trainer.logger=[..., mlflow]` writes
`/tmp/mlruns.db` by default) and the file store (`mlruns/<experiment>/<run>/metrics/<key>`).

Each MLflow run is a run. A metric's values are kept by the step they were logged at (later values of
one step win, noted); a run that logged every value at step 0 (no `step=` given) is read in logging
order, noted. MLflow stores NaN as 0 with a flag and ±Inf as ±float max: both are read back as logged.
Parameters go to the run's config; a run that FAILED or was KILLED (or is still RUNNING) says so in its
notes, and deleted runs are left out.
"""

from __future__ import annotations

import hashlib
import math
import re
import sqlite3
import sys
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry.importers.base import ends_with_newline, whole_step
from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo

NAME = "mlflow"

SQLITE_HEADER = b"SQLite format 3\x00"
# MLflow writes ±Inf as ±sys.float_info.max (`_get_metric_value_details` in its SQLAlchemy store).
_INF = sys.float_info.max
# The file store's run status codes (mlflow.entities.RunStatus).
_STATUS = {"1": "RUNNING", "2": "SCHEDULED", "3": "FINISHED", "4": "FAILED", "5": "KILLED"}
_META = re.compile(r"^(\w+):\s*'?(.*?)'?\s*$", re.MULTILINE)  # `key: value` lines of meta.yaml

# (key, step, timestamp in ms, value) as MLflow keeps a metric's points.
Point = tuple[str, int, int, float]


_TABLES = ("experiments", "runs", "metrics", "params")  # what `read` reads
_UNREADABLE = "SQLite database that cannot be read"


def sniff(path: Path, head: bytes) -> bool:
    """A SQLite database with MLflow's tables (another SQLite file in a run folder, a cache, is not);
    one that cannot be opened (damaged, locked by a writer) is claimed, so that `read` names the
    problem instead of the runs vanishing from a folder."""
    if not head.startswith(SQLITE_HEADER):
        return False
    problem = refusal(path)
    return problem is None or problem.startswith(_UNREADABLE)


def refusal(path: Path) -> str | None:
    """Why a SQLite file is not read as an MLflow store (damaged, or without its tables), or None."""
    try:
        with closing(_connect(path)) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        return f"{_UNREADABLE} ({exc})"
    missing = [t for t in _TABLES if t not in tables]
    if missing:
        return f"SQLite database without MLflow's {', '.join(missing)} table(s): no importer reads it"
    return None


def _connect(path: Path) -> sqlite3.Connection:
    """The database, read-only (a tracking server may be writing to it)."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def read(path: Path) -> list[ImportedRun]:
    """The runs of an MLflow SQLite database. Each run's hash is of its own rows, not of the file: a
    database that gained a run (verl's one file collects every run) re-ingests the others as
    unchanged."""
    if problem := refusal(path):
        raise InputError(path, problem)
    try:
        with closing(_connect(path)) as con:
            experiments = dict(con.execute("SELECT experiment_id, name FROM experiments").fetchall())
            runs = con.execute(
                "SELECT run_uuid, name, status, lifecycle_stage, experiment_id FROM runs ORDER BY start_time"
            ).fetchall()
            metrics: dict[str, list[Point]] = {}
            for run_uuid, key, step, timestamp, value, is_nan in con.execute(
                "SELECT run_uuid, key, step, timestamp, value, is_nan FROM metrics "
                "ORDER BY run_uuid, step, timestamp, key, value"
            ):
                value = math.nan if is_nan else _infinite(value)
                metrics.setdefault(run_uuid, []).append((key, step, timestamp, value))
            params: dict[str, dict[str, str]] = {}
            for run_uuid, key, value in con.execute("SELECT run_uuid, key, value FROM params"):
                params.setdefault(run_uuid, {})[key] = value
    except sqlite3.Error as exc:
        raise InputError(path, f"cannot be read as an MLflow database ({exc})") from None
    out = []
    deleted = 0
    for run_uuid, name, status, stage, experiment_id in runs:
        if stage == "deleted":
            deleted += 1
            continue
        run = _run(
            path,
            name or run_uuid,
            run_uuid,
            status,
            experiments.get(experiment_id),
            metrics.get(run_uuid, []),
            params.get(run_uuid, {}),
            _digest(run_uuid, metrics.get(run_uuid, []), params.get(run_uuid, {})),
        )
        if run is not None:
            out.append(run)
    if not out:
        said = f"{len(runs)} run(s), {deleted} of them deleted" if runs else "no run"
        raise InputError(path, f"MLflow database without a run that logged metrics ({said})")
    return out


def _digest(run_uuid: str, points: list[Point], params: dict[str, str]) -> str:
    """A run's content hash: its id, metric points (in the fixed order the caller reads them) and
    parameters."""
    h = hashlib.sha256(f"mlflow run {run_uuid}\n".encode())
    for key, step, timestamp, value in points:
        h.update(f"{key}\t{step}\t{timestamp}\t{value!r}\n".encode("utf-8", "surrogateescape"))
    for key in sorted(params):
        h.update(f"param\t{key}\t{params[key]}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _infinite(value: float | None) -> float:
    if value is None:
        return math.nan
    return math.copysign(math.inf, value) if abs(value) >= _INF else value


def _run(
    path: Path,
    name: str,
    run_uuid: str,
    status: str | None,
    experiment: str | None,
    points: list[Point],
    params: dict[str, str],
    sha256: str,
) -> ImportedRun | None:
    """One MLflow run's steps, or None when it logged no metric."""
    notes: list[str] = []
    if status and status != "FINISHED":
        notes.append(
            f"MLflow status {status}" + (": the run did not finish" if status in ("FAILED", "KILLED") else "")
        )
    if not points:
        return None
    steps: dict[int, dict[str, float]] = {}
    walls: dict[int, float] = {}
    if all(step == 0 for _, step, _, _ in points) and len({k for k, _, _, _ in points}) < len(points):
        notes.append("steps are logging order: the run logged its metrics without a step")
        count: dict[str, int] = {}
        numbered = []
        for key, _, timestamp, value in sorted(points, key=lambda p: p[2]):
            count[key] = count.get(key, 0) + 1
            numbered.append((key, count[key], timestamp, value))
        points = numbered
    repeated = 0
    for key, step, timestamp, value in points:
        whole = whole_step(step)
        if whole is None:
            raise InputError(path, f"MLflow run {name!r}: step {step!r} of {key!r} is not a whole number")
        row = steps.setdefault(whole, {})
        repeated += key in row
        row[key] = value
        walls[whole] = max(walls.get(whole, 0.0), timestamp / 1000)
    if repeated:
        notes.append(f"{repeated} value(s) logged again at a step already logged: later values kept")
    config: dict[str, Any] = dict(params)
    if experiment:
        config["mlflow_experiment"] = experiment
    config["mlflow_run_id"] = run_uuid
    return ImportedRun(
        name=name,
        source=SourceInfo(format=NAME, paths=[str(path)], sha256=sha256, notes=notes),
        steps=[RawStep(step=s, values=steps[s], wall_time=walls[s]) for s in sorted(steps)],
        config=config,
    )


# ---------------------------------------------------------------------------------------------- file store
def run_folders(folder: Path) -> list[Path]:
    """The MLflow runs under a folder of the file store (the store, an experiment, or one run): folders
    holding a `meta.yaml` and a `metrics` folder; the store's `.trash` is left out."""
    found = {m.parent for m in folder.rglob("meta.yaml") if (m.parent / "metrics").is_dir()}
    return sorted(d for d in found if ".trash" not in d.relative_to(folder).parts)


def read_file_store(folder: Path) -> list[ImportedRun]:
    """The runs of an MLflow file store (`mlruns/`), an experiment folder of it, or one run folder."""
    out = []
    for run_dir in run_folders(folder):
        meta = dict(_META.findall(_text(run_dir / "meta.yaml")))
        if meta.get("lifecycle_stage") == "deleted":
            continue
        metric_files = sorted(p for p in (run_dir / "metrics").rglob("*") if p.is_file())
        points: list[Point] = []
        cut: list[str] = []
        for file in metric_files:
            key = file.relative_to(run_dir / "metrics").as_posix()
            points.extend(_file_points(file, key, cut))
        points.sort(key=lambda p: (p[1], p[2], p[0], repr(p[3])))  # (step, time, key): as the database
        params = {
            p.relative_to(run_dir / "params").as_posix(): _text(p).strip()
            for p in sorted((run_dir / "params").rglob("*"))
            if p.is_file()
        }
        experiment = (
            dict(_META.findall(_text(run_dir.parent / "meta.yaml"))).get("name")
            if (run_dir.parent / "meta.yaml").is_file()
            else None
        )
        tag = run_dir / "tags" / "mlflow.runName"
        name = meta.get("run_name") or (_text(tag).strip() if tag.is_file() else "") or run_dir.name
        run_id = meta.get("run_id") or run_dir.name
        status = _STATUS.get(meta.get("status", ""), meta.get("status"))
        run = _run(run_dir, name, run_id, status, experiment, points, params, _digest(run_id, points, params))
        if run is not None:
            run.source.paths = [str(p) for p in metric_files]
            if cut:
                run.source.notes.append(
                    f"truncated: the last line of {len(cut)} metric file(s) was cut short and skipped "
                    f"(first: {cut[0]})"
                )
            out.append(run)
    return out  # none: a store whose runs logged no metric yet (the folder's other logs may)


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None


def _file_points(file: Path, key: str, cut: list[str]) -> Iterable[Point]:
    """A metric file's lines, `timestamp value [step]` (older stores wrote no step: step 0). MLflow
    appends each line with its newline, so a last line without one was cut by a killed job (inside its
    step, it would still read as a smaller step): left out, and its key added to `cut`."""
    text = _text(file)
    lines = text.splitlines()
    if lines and lines[-1].strip() and not ends_with_newline(text):
        cut.append(key)
        lines = lines[:-1]
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            timestamp, value = int(parts[0]), float(parts[1])
            step = int(parts[2]) if len(parts) > 2 else 0
        except (ValueError, IndexError):
            raise InputError(file, f"line {n}: not 'timestamp value step' ({line.strip()[:60]!r})") from None
        yield key, step, timestamp, _infinite(value)
