"""Importers for the logs people already have, chosen by content, never by file name.

`load(path)` reads a file or a folder and returns the runs in it. A folder is either a RFT-FaultBench
export (many runs) or a run folder holding one or more logs; files that no importer recognises inside a
folder (READMEs, configs) are skipped, but a file named explicitly must be recognised or it is an error.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry.importers import (
    csv_table,
    faultbench,
    hf_console,
    html_table,
    tensorboard_events,
    trainer_state,
    verl_console,
)
from rftfm_agent.telemetry.importers.base import looks_binary, provenance_beside, read_head
from rftfm_agent.telemetry.schema import ImportedRun

# Order matters only where two formats could both claim a file: the more specific one goes first.
FILE_IMPORTERS: tuple[ModuleType, ...] = (
    tensorboard_events,
    faultbench,
    trainer_state,
    verl_console,
    html_table,
    hf_console,
    csv_table,
)

# Files in a run folder that describe the run rather than log it.
_NOTES = {"provenance.txt", "provenance.md", "readme.md", "readme.txt", "license", "license.txt"}


def sniff(path: Path) -> ModuleType | None:
    """The importer that recognises this file's content, or None."""
    head = read_head(path)
    for importer in FILE_IMPORTERS:
        if importer.sniff(path, head):
            return importer
    return None


def load_file(path: Path, importer: ModuleType | None = None) -> list[ImportedRun]:
    """Read one file that must be a recognised log (`importer`: one already chosen by `sniff`)."""
    head = read_head(path)
    if not head.strip():
        raise InputError(path, "file is empty")
    importer = importer or sniff(path)
    if importer is None:
        if looks_binary(head):
            raise InputError(path, "binary file that is not a TensorBoard event file; no importer reads it")
        raise InputError(
            path,
            "unknown format: not a trainer_state.json, HF/TRL or verl console log, RFT-FaultBench JSONL, "
            "notebook HTML table, CSV/W&B export or TensorBoard event file",
        )
    runs = importer.read(path)
    if not runs or not any(r.steps or r.trajectories is not None for r in runs):
        raise InputError(path, f"recognised as {importer.NAME} but holds no step records")
    note = provenance_beside(path)
    for run in runs:
        run.provenance = run.provenance or note
    return runs


def load_folder(folder: Path) -> list[ImportedRun]:
    """Read a run folder or a FaultBench export; skips files that are not logs."""
    if faultbench.is_export_folder(folder):
        return faultbench.read_folder(folder)
    candidates = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    runs: list[ImportedRun] = []
    tb_files: list[Path] = []
    for path in candidates:
        if path.name.lower() in _NOTES or path.stat().st_size == 0:
            continue
        importer = sniff(path)
        if importer is None:
            continue
        if importer is tensorboard_events:
            tb_files.append(path)
            continue
        runs.extend(load_file(path, importer))
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
    if len(runs) == 1:
        runs[0].name = folder.name  # a run folder names its run
    note = provenance_beside(folder)
    for run in runs:
        run.provenance = run.provenance or note
    return runs


def load(path: str | Path) -> list[ImportedRun]:
    """Runs held by a file or folder; raises InputError with one clear line on anything unreadable."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file or folder")
    if p.is_dir():
        return load_folder(p)
    return load_file(p)


__all__ = ["FILE_IMPORTERS", "ImportedRun", "load", "load_file", "load_folder", "sniff"]
