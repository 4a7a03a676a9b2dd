"""Importers for the logs people already have, chosen by content, never by file name.

`load(path)` reads a file or a folder and returns the runs in it. A folder is either a RFT-FaultBench
export (many runs) or a run folder holding one or more logs; files that no importer recognises inside a
folder (READMEs, configs) are skipped, but a file named explicitly must be recognised or it is an error.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType

import pyarrow as pa

from rftfm_agent.errors import InputError, RftfmError
from rftfm_agent.telemetry.importers import (
    csv_table,
    faultbench,
    hf_console,
    html_table,
    jsonl_metrics,
    mlflow_runs,
    openrlhf_console,
    parquet_table,
    tensorboard_events,
    trainer_state,
    verl_console,
)
from rftfm_agent.telemetry.importers.base import (
    STEP_RANGE,
    as_utf8,
    looks_binary,
    merge_steps,
    provenance_beside,
    read_head,
)
from rftfm_agent.telemetry.schema import ImportedRun, RawStep

# Order matters only where two formats could both claim a file: the more specific one goes first.
FILE_IMPORTERS: tuple[ModuleType, ...] = (
    parquet_table,
    tensorboard_events,
    mlflow_runs,
    jsonl_metrics,
    faultbench,
    trainer_state,
    verl_console,
    openrlhf_console,
    html_table,
    hf_console,
    csv_table,
)

# Importers that can leave a malformed row out (`--skip-bad`, counted in the run's notes) instead of
# refusing the file: the JSON-lines formats (one record per line) and CSV/W&B exports (one row per line
# or quoted record). Elsewhere a bad file is left out whole.
ROW_SKIPPERS: tuple[ModuleType, ...] = (faultbench, jsonl_metrics, csv_table)

# Files in a run folder that describe the run rather than log it.
_NOTES = {"provenance.txt", "provenance.md", "readme.md", "readme.txt", "license", "license.txt"}


# What reading odd content can raise inside an importer: each is the file's fault, and becomes one line
# naming the file (`load_file`) instead of a traceback. (InputError, the importers' own, is not among
# them.) Seen here: a step of 1e19 (OverflowError), 100,000 nested brackets (RecursionError), a 5,000-digit
# integer (ValueError), a key with a lone surrogate (UnicodeEncodeError), a column twice (KeyError).
_DATA_ERRORS = (ValueError, ArithmeticError, RecursionError, LookupError, TypeError, pa.ArrowException)


def sniff(path: Path) -> ModuleType | None:
    """The importer that recognises this file's content, or None (a sniffer that fails on the content
    does not recognise it)."""
    head = read_head(path)
    for importer in FILE_IMPORTERS:
        try:
            if importer.sniff(path, head):
                return importer
        except _DATA_ERRORS:
            continue
    return None


def _printable(path: Path) -> str:
    """A path as text that can be printed and written to JSON (a name with bytes that are not UTF-8
    keeps them as U+FFFD)."""
    return os.fsencode(path).decode("utf-8", errors="replace")


def _unreadable(importer: ModuleType, exc: BaseException) -> str:
    what = str(exc).splitlines()[0] if str(exc) else ""
    return f"cannot be read as {importer.NAME} ({type(exc).__name__}{': ' if what else ''}{what[:200]})"


def _check(path: Path, runs: list[ImportedRun]) -> None:
    """What the store cannot keep, named here as the file's fault: a step outside its 64-bit range, a
    metric name that is not text (a lone surrogate from a `\\udc80` escape)."""
    for run in runs:
        for raw in run.steps:
            if not STEP_RANGE[0] <= raw.step < STEP_RANGE[1]:
                digits = str(raw.step)
                shown = digits if len(digits) < 24 else f"{digits[:4]}… ({len(digits)} digits)"
                raise InputError(path, f"step {shown} is outside the 64-bit range the store keeps")
            for key in raw.values:
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    raise InputError(
                        path, f"metric name {key!r} is not valid text (a lone surrogate)"
                    ) from None


_GZIP_MAGIC = b"\x1f\x8b"  # RFC 1952


def is_gzip(path: Path) -> bool:
    """Whether a file is gzip-compressed (by its first bytes, not its name)."""
    try:
        with path.open("rb") as fh:
            return fh.read(2) == _GZIP_MAGIC
    except OSError:
        return False


def load_compressed(path: Path, skip_bad: bool = False) -> list[ImportedRun]:
    """A gzip-compressed log (`train.log.gz`, `metrics.jsonl.gz`, as logs are archived or downloaded
    from a cluster), read as the file it holds: decompressed into a temporary folder under the name
    without `.gz`, so that the importers see an ordinary file. Errors and the run's paths name the
    compressed file; the hash is of the content, as for the file itself."""
    inner = path.name.removesuffix(".gz").removesuffix(".gzip") or "log"
    with tempfile.TemporaryDirectory(prefix="rftfm-gunzip-") as tmp:
        target = Path(tmp) / inner
        try:
            complete = _gunzip(path, target)
        except (OSError, zlib.error) as exc:
            raise InputError(path, f"cannot be decompressed as gzip ({type(exc).__name__}: {exc})") from None
        try:
            runs = load_file(target, skip_bad=skip_bad)
        except InputError as exc:
            raise InputError(path, exc.problem.replace(str(target), str(path))) from None
    note = provenance_beside(path)
    for run in runs:
        run.source.paths = [str(path) if p == str(target) else p for p in run.source.paths]
        run.source.notes = [n.replace(str(target), str(path)) for n in run.source.notes]
        run.source.notes.append(f"read from the gzip-compressed {path.name}")
        if not complete:
            run.source.notes.append(
                f"{path.name} ends before its gzip stream does (cut): what it holds was read"
            )
        run.provenance = run.provenance or note
    return runs


def _gunzip(source: Path, target: Path) -> bool:
    """Decompress a gzip file (every member of one, as appending to a .gz makes) into `target`; False
    when the compressed bytes end before the stream does (a job killed while writing it), whose
    decompressed part is kept: its last line is then the cut line every importer handles."""
    with source.open("rb") as src, target.open("wb") as dst:
        unzip = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
        fed = False  # whether the current member has been given any bytes
        while chunk := src.read(1 << 20):
            while chunk:
                fed = True
                dst.write(unzip.decompress(chunk))
                if not unzip.eof:
                    break
                chunk, unzip, fed = unzip.unused_data, zlib.decompressobj(wbits=31), False
        dst.write(unzip.flush())
    return unzip.eof or not fed


_TRACEBACK = "Traceback (most recent call last):"
# A launcher's prefix on every line: torchrun's `[rank0]: ` / `[default0]:`, Ray's `(pid=123) `.
_LINE_PREFIX = re.compile(r"^(?:\[[^\]\n]*\]:\s?|\([^)\n]*\)\s)")


def _crash_before_metrics(path: Path) -> str | None:
    """What to add when no importer reads a log that holds a Python traceback: the exception it ends with
    (`RuntimeError: CUDA out of memory`), the first thing a person triaging a crashed job needs. The log
    may hold metrics in a format rftfm does not read, so it is not said that there were none."""
    try:
        text = as_utf8(path.read_bytes()[: 64 << 20]).decode("utf-8", errors="replace")
    except OSError:
        return None
    start = text.rfind(_TRACEBACK)
    if start == -1:
        return None
    line = text.count("\n", 0, start) + 1
    raised = None
    for raw in text[start:].splitlines()[1:]:
        body = _LINE_PREFIX.sub("", raw)
        if body.strip() and not body[:1].isspace():  # frames and their source lines are indented
            raised = body.strip()
            break
    what = f" ({raised[:200]})" if raised else ""
    return (
        f"unknown format: no metrics rftfm reads, and a Python traceback at line {line}{what}: the job may "
        "have crashed before logging any"
    )


def load_file(path: Path, importer: ModuleType | None = None, skip_bad: bool = False) -> list[ImportedRun]:
    """Read one file that must be a recognised log (`importer`: one already chosen by `sniff`);
    `skip_bad`: malformed rows are left out where the format allows (see `ROW_SKIPPERS`)."""
    if not path.is_file():  # reading a pipe would wait for a writer forever
        raise InputError(_printable(path), "not a regular file (a pipe, socket or device)")
    if _printable(path) != str(path):  # the store's manifest names its files in JSON
        raise InputError(_printable(path), "the name is not valid UTF-8 text: rename it")
    if importer is None and is_gzip(path):
        return load_compressed(path, skip_bad)
    head = read_head(path)
    if not head.strip():
        raise InputError(path, "file is empty")
    importer = importer or sniff(path)
    if importer is None:
        if head.startswith(mlflow_runs.SQLITE_HEADER):  # damaged, or not MLflow's: say which
            raise InputError(path, mlflow_runs.refusal(path) or "SQLite database no importer reads")
        if looks_binary(head):
            raise InputError(path, "binary file that is not a TensorBoard event file; no importer reads it")
        if crash := _crash_before_metrics(path):
            raise InputError(path, crash)
        raise InputError(
            path,
            "unknown format: not a trainer_state.json, HF/TRL, verl or OpenRLHF console log, JSONL of metric "
            "dicts, RFT-FaultBench JSONL, notebook HTML table, CSV/W&B export, Parquet, MLflow store or "
            "TensorBoard event file",
        )
    try:
        runs = (
            importer.read(path, skip_bad=True)
            if skip_bad and importer in ROW_SKIPPERS
            else importer.read(path)
        )
    except _DATA_ERRORS as exc:
        raise InputError(path, _unreadable(importer, exc)) from None
    _check(path, runs)
    if not runs or not any(r.steps or r.trajectories is not None for r in runs):
        raise InputError(path, f"recognised as {importer.NAME} but holds no step records")
    if not any(r.trajectories is not None or any(s.values for s in r.steps) for r in runs):
        raise InputError(path, f"recognised as {importer.NAME} but holds no metric values, only steps")
    note = provenance_beside(path)
    for run in runs:
        run.provenance = run.provenance or note
    return runs


def _store_folders(folder: Path, runs: list[Path]) -> set[Path]:
    """The experiment folders of the MLflow stores these runs are in (one without runs holds only its
    meta.yaml), as far as they are inside `folder`: a store's root outside it is not listed."""
    out: set[Path] = set()
    for root in {d.parent.parent for d in runs}:
        if root != folder and folder not in root.parents:
            continue
        try:
            out |= {e for e in root.iterdir() if e.is_dir()}
        except OSError:  # unlistable: its experiment folders are then not told apart
            continue
    return out


def _merge_panels(runs: list[ImportedRun]) -> list[ImportedRun]:
    """The W&B UI exports one panel (one metric) per CSV, TensorBoard one scalar tag per CSV: a folder of
    them held each run as several one-metric runs. A run's panels on the same x-axis are merged into one
    run (its steps' values together); on different axes (`Step` against `train/global_step`) they stay
    apart, with a note."""
    groups: dict[tuple[str, str], list[ImportedRun]] = {}
    out: list[ImportedRun] = []
    for run in runs:
        notes = run.source.notes
        axis = next((n for n in notes if n.startswith(csv_table.PANEL_AXIS)), None)
        panel = any(n == csv_table.PANEL_NOTE or n.startswith(csv_table.TB_SCALAR_NOTE) for n in notes)
        if run.source.format != csv_table.NAME or not panel or axis is None:
            out.append(run)
            continue
        group = groups.setdefault((run.name, axis), [])
        if not group:
            out.append(run)  # the merged run takes the place of its first panel
        group.append(run)
    axes: dict[str, set[str]] = {}
    for (name, axis), panels in groups.items():
        axes.setdefault(name, set()).add(axis)
        if len(panels) == 1:
            continue
        metrics = [{k for step in panel.steps for k in step.values} for panel in panels]
        if sum(len(m) for m in metrics) != len(set().union(*metrics)):
            # Two panels plot the same metric: two runs that share a display name (W&B names runs per
            # project), not two panels of one run; kept apart.
            out.extend(panel for panel in panels[1:])
            for panel in panels:
                panel.source.notes.append(
                    "another panel export has a run of this name with the same metric: kept apart"
                )
            continue
        first = panels[0]
        by_step = merge_steps([(step.step, step.values) for panel in panels for step in panel.steps])
        paths = sorted({p for panel in panels for p in panel.source.paths})
        digest = hashlib.sha256("".join(sorted(p.source.sha256 or "" for p in panels)).encode()).hexdigest()
        first.steps = [RawStep(step=s, values=by_step[s]) for s in sorted(by_step)]
        first.source.paths = paths
        first.source.sha256 = digest
        first.source.notes.append(
            f"{len(panels)} panels of this run merged on one x-axis: {len(paths)} files"
        )
    for run in out:
        if run.source.format == csv_table.NAME and len(axes.get(run.name, ())) > 1:
            run.source.notes.append("other panels of this run use another x-axis: not merged with them")
    return out


_CHECKPOINT = re.compile(r"checkpoint-\d+")  # the Trainer's `output_dir/checkpoint-<step>/`


def _latest_states(folder: Path, states: list[tuple[Path, list[ImportedRun]]]) -> list[ImportedRun]:
    """The trainer_state.json runs of a folder, one per training job: a Trainer saves one in every
    `checkpoint-<step>/` of its output folder (and `save_state()` one beside them), each the history up to
    then. Of one output folder's states the longest is kept when the others' steps are all in it (they
    were three overlapping runs named trainer_state, trainer_state-2, …); each run is named after its
    output folder."""
    by_job: dict[Path, list[tuple[Path, ImportedRun]]] = {}
    for path, found in states:
        inside = path.parent != folder  # a checkpoint folder given itself is its own job
        job = path.parent.parent if inside and _CHECKPOINT.fullmatch(path.parent.name) else path.parent
        by_job.setdefault(job, []).extend((path, run) for run in found)
    out: list[ImportedRun] = []
    for job, found in sorted(by_job.items()):
        name = folder.name if job == folder else str(job.relative_to(folder))
        latest = max(found, key=lambda f: (max((s.step for s in f[1].steps), default=-1), len(f[1].steps)))
        steps = {s.step for s in latest[1].steps}
        earlier = [f for f in found if f is not latest and {s.step for s in f[1].steps} <= steps]
        if len(earlier) < len(found) - 1:  # histories that are not one job's: each its own run
            for path, run in found:
                run.name = folder.name if path.parent == folder else str(path.parent.relative_to(folder))
                out.append(run)
            continue
        run = latest[1]
        run.name = name
        if earlier:
            left = ", ".join(sorted(str(p.parent.relative_to(job)) for p, _ in earlier)[:5])
            run.source.notes.append(
                f"read from {latest[0].relative_to(folder)}; {len(earlier)} earlier checkpoint "
                f"state(s) of the same history left out ({left})"
            )
        out.append(run)
    return out


def load_folder(folder: Path, skip_bad: bool = False) -> list[ImportedRun]:
    """Read a run folder or a FaultBench export; skips files that are not logs."""
    if faultbench.is_export_folder(folder):
        return faultbench.read_folder(folder, skip_bad)
    # An MLflow file store (or a part of one): each run is a folder of metric files, read as a unit; the
    # store's own files (experiment descriptions, its trash) are not logs.
    mlflow = mlflow_runs.run_folders(folder)
    runs: list[ImportedRun] = mlflow_runs.read_file_store(folder) if mlflow else []
    for run in runs:  # named by the run's metrics folder
        _check(Path(os.path.commonpath(run.source.paths)) if run.source.paths else folder, [run])
    inside = set(mlflow)
    experiments = {d.parent for d in mlflow} | _store_folders(folder, mlflow)
    candidates = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not p.name.startswith(".")
        and ".trash" not in p.relative_to(folder).parts
        and not (p.name == "meta.yaml" and p.parent in experiments)
        and inside.isdisjoint(p.parents)
    )
    tb_files: list[Path] = []
    states: list[tuple[Path, list[ImportedRun]]] = []  # trainer_state.json files, checkpoints' included
    unrecognised: list[str] = []  # named in the runs' notes: a log cut at its first line lands here too
    for path in candidates:
        if path.name.lower() in _NOTES or path.stat().st_size == 0:
            continue
        importer = sniff(path)
        if importer is None and is_gzip(path):
            try:
                runs.extend(load_compressed(path, skip_bad))
            except InputError as exc:
                if "unknown format" not in exc.problem and "binary file" not in exc.problem:
                    raise
                unrecognised.append(str(path.relative_to(folder)))
            continue
        if importer is None:
            unrecognised.append(str(path.relative_to(folder)))
            continue
        if importer is tensorboard_events:
            tb_files.append(path)
            continue
        if importer is trainer_state:
            states.append((path, load_file(path, importer, skip_bad)))
            continue
        runs.extend(load_file(path, importer, skip_bad))
    runs.extend(_latest_states(folder, states))
    # TensorBoard writes one folder per run (runs/<date>_<host>/events…): files of one folder (a resumed
    # run) are merged, sibling folders stay separate runs, and a folder nested inside a run's folder
    # (add_hparams writes runs/<date>/<timestamp>/events…) belongs to that run.
    by_dir: dict[Path, list[Path]] = {}
    for path in sorted(tb_files, key=lambda p: len(p.parts)):
        owner = next((d for d in by_dir if d in path.parents), path.parent)
        by_dir.setdefault(owner, []).append(path)
    for directory, files in sorted(by_dir.items()):
        name = folder.name if len(by_dir) == 1 else f"{folder.name}/{directory.relative_to(folder)}"
        runs.extend(tensorboard_events.read_many(files, name=name))
    if not runs:
        raise InputError(folder, "folder holds no training log that any importer recognises")
    runs = _merge_panels(runs)
    if len(runs) == 1 and runs[0].source.format != mlflow_runs.NAME:  # MLflow names its runs
        runs[0].name = folder.name  # a run folder names its run
    note = provenance_beside(folder)
    left_out = ", ".join(unrecognised[:5]) + (
        f" and {len(unrecognised) - 5} more" if len(unrecognised) > 5 else ""
    )
    for run in runs:
        run.provenance = run.provenance or note
        if unrecognised:
            run.source.notes.append(
                f"file(s) in the folder that no importer recognised, left out: {left_out}"
            )
    return runs


def load(
    path: str | Path, key_map: Mapping[str, str] | None = None, skip_bad: bool = False
) -> list[ImportedRun]:
    """Runs held by a file or folder; raises InputError with one clear line on anything unreadable.

    `key_map` renames logged keys before the vocabulary maps them ({'mean_reward': 'reward'}): for a
    trainer whose names rftfm does not know. A key the map names but no run logs is an error (a typo
    would otherwise pass silently). `skip_bad` leaves malformed rows out where the format allows.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(_printable(p), "no such file or folder")
    if _printable(p) != str(p):
        raise InputError(_printable(p), "the name is not valid UTF-8 text: rename it")
    if p.is_dir():
        try:
            runs = load_folder(p, skip_bad)
        except _DATA_ERRORS as exc:  # what a file's importer raised is named by `load_file` already
            raise InputError(
                _printable(p), f"cannot be read ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
    else:
        runs = load_file(p, skip_bad=skip_bad)
    if key_map:
        apply_key_map(p, runs, key_map)
    return runs


def iter_load(
    path: str | Path, key_map: Mapping[str, str] | None = None, skip_bad: bool = False
) -> Iterator[ImportedRun]:
    """`load`, one run at a time: an RFT-FaultBench export of thousands of runs is read in chunks, so
    that memory does not grow with the export (other inputs are small and read whole)."""
    p = Path(path)
    if not (p.is_dir() and faultbench.is_export_folder(p)):
        yield from load(p, key_map, skip_bad)
        return
    seen: set[str] = set()
    try:
        for run in faultbench.iter_folder(p, skip_bad=skip_bad):
            _check(Path(_printable(Path(run.source.paths[0]).parent)) if run.source.paths else p, [run])
            if key_map:
                seen |= {k for s in run.steps for k in s.values}
                apply_key_map(p, [run], key_map, check=False)
            yield run
    except _DATA_ERRORS as exc:
        raise InputError(p, _unreadable(faultbench, exc)) from None
    unknown = sorted(set(key_map or {}) - seen)
    if unknown:
        raise InputError(p, f"--map names key(s) the log does not have: {', '.join(unknown)}")


def parse_key_map(items: Sequence[str]) -> dict[str, str]:
    """`['mean_reward=reward', 'kl_div=kl']` → {'mean_reward': 'reward', 'kl_div': 'kl'}."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, target = item.partition("=")
        if not sep or not key.strip() or not target.strip():
            raise RftfmError(f"--map {item!r}: expected LOGGED_KEY=METRIC, e.g. --map mean_reward=reward")
        out[key.strip()] = target.strip()
    return out


def apply_key_map(
    path: Path, runs: list[ImportedRun], key_map: Mapping[str, str], check: bool = True
) -> None:
    """Rename logged keys in place (user-given mapping); the runs' hashes change with the mapping, so that
    re-importing with another mapping is not taken for the same input."""
    logged = {k for run in runs for s in run.steps for k in s.values}
    unknown = sorted(set(key_map) - logged)
    if check and unknown:
        raise InputError(path, f"--map names key(s) the log does not have: {', '.join(unknown)}")
    suffix = ";map:" + ",".join(f"{k}={v}" for k, v in sorted(key_map.items()))
    for run in runs:
        for s in run.steps:
            s.values = {key_map.get(k, k): v for k, v in s.values.items()}
        run.source.notes.append(
            "keys renamed by the user: " + ", ".join(f"{k} → {v}" for k, v in key_map.items())
        )
        if run.source.sha256:
            run.source.sha256 += suffix


__all__ = [
    "FILE_IMPORTERS",
    "ImportedRun",
    "apply_key_map",
    "iter_load",
    "load",
    "load_file",
    "load_folder",
    "parse_key_map",
    "sniff",
]
