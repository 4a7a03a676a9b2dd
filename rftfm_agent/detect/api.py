"""Entry points the CLI and the agent's tools use: fit on a benchmark, detect on stored runs."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from rftfm_agent.detect.bench_data import load_bench
from rftfm_agent.detect.detector import Detector, RunData
from rftfm_agent.detect.events import RunVerdict, save_verdict
from rftfm_agent.detect.features import run_frames
from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry.store import Store

SHIPPED = "detector.json"


def shipped_detector_path() -> Path:
    return Path(str(resources.files("rftfm_agent") / "data" / SHIPPED))


def load_detector(path: Path | None = None) -> Detector:
    path = Path(path) if path is not None else shipped_detector_path()
    if not path.is_file():
        raise RftfmError(
            f"{path}: no fitted detector (make one with `rftfm fit-detector --bench DIR --out FILE`)"
        )
    try:
        return Detector.load(path)
    except (KeyError, ValueError) as exc:
        raise RftfmError(f"{path}: not a fitted rftfm detector ({exc})") from None


def fit_on_bench(bench: Path, alpha: float = 0.02) -> Detector:
    healthy = [r for r in load_bench(bench) if r.meta["control_or_fault"] == "control"]
    return Detector(alpha=alpha).fit(healthy)


def detect_runs(
    store: Store, refs: Sequence[str], detector_path: Path | None = None, save: bool = True
) -> list[RunVerdict]:
    """Verdicts for stored runs (resolved by id, name or prefix); with `save`, each verdict and its events
    are stored beside the run (SQL views `verdicts` and `events`)."""
    detector = load_detector(detector_path)
    run_ids = [store.resolve(ref) for ref in refs]
    verdicts = []
    for run_id, frame in run_frames(store, run_ids):
        manifest = store.manifest(run_id)
        if frame.empty:
            raise RftfmError(f"run {run_id}: no step records to examine")
        verdict = detector.score_run(RunData(run_id, manifest.task, frame, config=dict(manifest.config)))
        if save:
            save_verdict(store, verdict, last_step=int(frame["step"].max()))
        verdicts.append(verdict)
    return verdicts
