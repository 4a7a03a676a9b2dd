"""The fingerprint library: fingerprints of labelled benchmark runs, the diagnoser's memory.

Each benchmark run is fingerprinted twice, once as the detector sees a run of a known task (against the
healthy band, mode "band") and once as it sees an imported run of an unknown task (against the run's own
past, mode "self"), so that both kinds of run are compared with fingerprints taken the same way.
Healthy controls are in it too, labelled `healthy`, so a false alarm can be recognised as one.

    rftfm fingerprints build --bench DIR --out fingerprints.parquet [--holdout-fold 0 --folds 5]

builds it from a training split of the benchmark's cells (seeds); the held-out cells are listed in the
file's metadata so an evaluation can keep away from them. The package ships one built from `full`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rftfm_agent.detect.detector import Detector, RunData
from rftfm_agent.diagnose.fingerprint import FEATURES, Fingerprint, fingerprint
from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry.io import atomic_write_with

HEALTHY = "healthy"  # the type (and family "none") of healthy controls in the library
LABELS = ("experiment_id", "mode", "family", "type", "strength", "task", "cell", "onset_style", "anchor_step")
SHIPPED = "fingerprints.parquet"


def fingerprint_run(detector: Detector, run: RunData, mode: str) -> Fingerprint:
    """Fingerprint a run in `mode` ('band': against its task's healthy band; 'self': task unknown)."""
    band = detector.bands.get(run.task) if (mode == "band" and run.task) else None
    if mode == "band" and band is None:
        raise RftfmError(f"run {run.run_id}: the detector has no healthy band for task {run.task!r}")
    scored = run if mode == "band" else RunData(run.run_id, None, run.frame, config=run.config)
    verdict = detector.score_run(scored)
    return fingerprint(run.run_id, run.frame, verdict, band)


def label_row(run: RunData) -> dict[str, Any]:
    meta = run.meta
    fault = meta.get("control_or_fault") == "fault"
    return {
        "experiment_id": run.run_id,
        "family": meta["fault_family"] if fault else "none",
        "type": meta["fault_type"] if fault else HEALTHY,
        "strength": meta.get("strength", "") if fault else "",
        "task": run.task or "",
        "cell": meta.get("cell", ""),
        "onset_style": meta.get("onset_style", "") if fault else "",
    }


def fingerprint_table(
    detector: Detector, runs: Iterable[RunData], modes: Sequence[str] = ("band", "self")
) -> pd.DataFrame:
    """One row per (run, mode): labels from the run's registry metadata, then every feature."""
    rows = []
    for run in runs:
        labels = label_row(run)
        for mode in modes:
            fp = fingerprint_run(detector, run, mode)
            rows.append({**labels, "mode": mode, "anchor_step": fp.anchor_step, **fp.values})
    table = pd.DataFrame(rows)
    return table.reindex(columns=[*LABELS, *FEATURES])


def split_cells(cells: Iterable[str], folds: int) -> dict[str, int]:
    """Cell → fold, dealt in sorted order (the same split the detection evaluation uses)."""
    return {cell: i % folds for i, cell in enumerate(sorted(set(cells)))}


class Library:
    """Fingerprints with labels, plus how they were made (metadata written into the Parquet file)."""

    def __init__(self, table: pd.DataFrame, meta: dict[str, Any] | None = None) -> None:
        missing = [c for c in LABELS if c not in table.columns]
        if missing:
            raise RftfmError(f"fingerprint table lacks columns {missing}")
        self.table = table.reindex(columns=[*LABELS, *FEATURES]).reset_index(drop=True)
        self.meta = meta or {}

    def rows(self, mode: str) -> pd.DataFrame:
        return self.table[self.table["mode"] == mode].reset_index(drop=True)

    def save(self, path: Path) -> None:
        """Atomic write: a temporary file beside the target, renamed into place."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrow = pa.Table.from_pandas(self.table, preserve_index=False)
        arrow = arrow.replace_schema_metadata(
            {**(arrow.schema.metadata or {}), b"rftfm": json.dumps(self.meta).encode()}
        )
        atomic_write_with(path, lambda tmp: pq.write_table(arrow, tmp))

    @classmethod
    def load(cls, path: Path | None = None) -> Library:
        path = Path(path) if path is not None else shipped_library_path()
        if not path.is_file():
            raise RftfmError(
                f"{path}: no fingerprint library (build one with `rftfm fingerprints build --bench DIR`)"
            )
        try:
            arrow = pq.read_table(path)
            meta = json.loads((arrow.schema.metadata or {}).get(b"rftfm", b"{}"))
            return cls(arrow.to_pandas(), meta)
        except (pa.ArrowInvalid, OSError, ValueError) as exc:  # (json errors are ValueErrors)
            raise RftfmError(f"{path}: not a Parquet fingerprint library ({exc})") from None
        except RftfmError as exc:
            raise RftfmError(f"{path}: {exc}") from None


def shipped_library_path() -> Path:
    return Path(str(resources.files("rftfm_agent") / "data" / SHIPPED))


def detector_digest(detector: Detector) -> str:
    """A short hash of the detector's options and fitted state (not of its file format version)."""
    state = {k: v for k, v in detector.to_dict().items() if k != "format_version"}
    return hashlib.sha1(json.dumps(state, sort_keys=True).encode()).hexdigest()[:12]


def build_library(
    runs: Sequence[RunData],
    detector: Detector,
    holdout_fold: int | None = 0,
    folds: int = 5,
    source: str = "",
) -> Library:
    """Fingerprint the runs of the training cells (all cells when `holdout_fold` is None)."""
    fold_of = split_cells((r.meta["cell"] for r in runs), folds)
    train = [r for r in runs if holdout_fold is None or fold_of[r.meta["cell"]] != holdout_fold]
    held = sorted(c for c, f in fold_of.items() if f == holdout_fold)
    table = fingerprint_table(detector, train)
    meta = {
        "source": source,
        "runs": len(train),
        "folds": folds,
        "holdout_fold": holdout_fold,
        "holdout_cells": held,
        "detector": detector_digest(detector),
        "features": len(FEATURES),
    }
    return Library(table, meta)
