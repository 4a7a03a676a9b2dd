"""Ingest: read logs and store their runs, all or nothing, with memory that does not grow with the input.

Every input is read and each run staged (its Parquet parts written to a hidden folder) before anything
is committed; only then are the staged runs made visible, one atomic rename each. A bad input leaves the
store as it was (or, with `skip_bad`, is left out whole while the readable inputs are stored). Memory
holds a read chunk of runs or two at a time (see `importers.iter_load`), not the whole input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.schema import RunManifest
from rftfm_agent.telemetry.store import StagedRun, Store


@dataclass
class IngestResult:
    stored: list[tuple[RunManifest, str]] = field(default_factory=list)  # (manifest, outcome)
    errors: list[str] = field(default_factory=list)  # one line per bad input


def ingest(
    store: Store,
    paths: Sequence[str | Path],
    key_map: Mapping[str, str] | None = None,
    replace: bool = False,
    skip_bad: bool = False,
) -> IngestResult:
    """Read every input, then store its runs; with an error and not `skip_bad`, store nothing.

    With `skip_bad`, a malformed row of a JSON-lines log is left out (counted in its run's notes) and an
    input that cannot be read at all is left out whole (its error is reported)."""
    result = IngestResult()
    staged: list[StagedRun] = []
    reserved: set[str] = set()
    seen: set[tuple[str, str]] = set()  # the same run (name and bytes) given twice in one call: stored once
    try:
        for path in paths:
            mine: list[StagedRun] = []
            try:
                for run in importers.iter_load(path, key_map, skip_bad):
                    key = (run.name, run.source.sha256 or "")
                    if run.source.sha256 and key in seen:
                        continue
                    seen.add(key)
                    # Staged files are flushed to disk by the commit, all together (`commit_all`).
                    mine.append(store.stage_run(run, replace=replace, reserved=reserved, durable=False))
            except RftfmError as exc:
                result.errors.append(str(exc))
                for s in mine:  # a bad input is stored not at all, not in part
                    store.discard_staged(s)
                continue
            staged.extend(mine)
        if result.errors and not skip_bad:
            return result
        manifests = store.commit_all(staged)
        result.stored = [(m, s.outcome) for m, s in zip(manifests, staged, strict=True)]
        staged = []
        return result
    finally:
        for s in staged:
            store.discard_staged(s)
