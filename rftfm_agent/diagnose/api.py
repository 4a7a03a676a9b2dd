"""Entry points the CLI and the agent's tools use: build a fingerprint library, diagnose stored runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from rftfm_agent.detect.api import load_detector
from rftfm_agent.detect.bench_data import load_bench
from rftfm_agent.detect.detector import RunData
from rftfm_agent.detect.events import RunVerdict
from rftfm_agent.detect.features import run_frames
from rftfm_agent.diagnose.diagnoser import Diagnoser
from rftfm_agent.diagnose.findings import findings_for, headline
from rftfm_agent.diagnose.fingerprint import fingerprint
from rftfm_agent.diagnose.hypothesis import Diagnosis
from rftfm_agent.diagnose.library import Library, build_library, detector_digest
from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry.store import Store


def build_from_bench(
    bench: Path, detector_path: Path | None = None, holdout_fold: int | None = 0, folds: int = 5
) -> Library:
    """Fingerprint a benchmark's training cells with a fitted detector (default: the shipped one)."""
    if folds < 2:
        raise RftfmError(f"--folds must be at least 2, got {folds}")
    if holdout_fold is not None and not 0 <= holdout_fold < folds:
        raise RftfmError(f"--holdout-fold must be in 0..{folds - 1} (or omitted), got {holdout_fold}")
    detector = load_detector(detector_path)
    return build_library(load_bench(bench), detector, holdout_fold, folds, source=str(Path(bench).name))


def diagnose_runs(
    store: Store,
    refs: Sequence[str],
    library_path: Path | None = None,
    detector_path: Path | None = None,
    top: int = 3,
) -> list[tuple[Diagnosis, RunVerdict]]:
    """A diagnosis (and the detector's verdict it is anchored on) for each stored run."""
    if top < 1:
        raise RftfmError(f"--top must be at least 1, got {top}")
    detector = load_detector(detector_path)
    library = Library.load(library_path)
    notes = []
    made_with = library.meta.get("detector")
    if made_with and made_with != detector_digest(detector):
        notes.append(
            f"the fingerprint library was anchored with another detector ({made_with}); "
            "rebuild it with `rftfm fingerprints build --detector` for like-for-like fingerprints"
        )
    diagnoser = Diagnoser(library)
    items = []
    run_ids = [store.resolve(ref) for ref in refs]
    for run_id, frame in run_frames(store, run_ids):
        manifest = store.manifest(run_id)
        if frame.empty:
            raise RftfmError(f"run {run_id}: no step records to diagnose")
        verdict = detector.score_run(RunData(run_id, manifest.task, frame, config=dict(manifest.config)))
        band = detector.bands.get(manifest.task) if manifest.task else None
        items.append((frame, verdict, fingerprint(run_id, frame, verdict, band)))
    diagnoses = diagnoser.diagnose_many([fp for _, _, fp in items], top=top)
    out = []
    for (frame, verdict, _), diagnosis in zip(items, diagnoses, strict=True):
        diagnosis = explain(diagnosis, verdict, frame)
        out.append((diagnosis.model_copy(update={"notes": notes + diagnosis.notes}), verdict))
    return out


def explain(diagnosis: Diagnosis, verdict: RunVerdict, frame: pd.DataFrame) -> Diagnosis:
    """The diagnosis with its plain-language findings and one-line symptom added."""
    found = findings_for(verdict, frame)
    return diagnosis.model_copy(update={"findings": found, "symptom": headline(found, verdict)})
