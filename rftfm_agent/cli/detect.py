"""Detection commands: `rftfm detect` and `rftfm fit-detector`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rftfm_agent.cli.common import (
    JsonOpt,
    MapOpt,
    StoreOpt,
    console,
    emit_json,
    friendly_errors,
    open_store,
    resolve_runs,
)


@friendly_errors
def detect(
    runs_: Annotated[
        list[str],
        typer.Argument(
            metavar="RUN|PATH…", help="stored runs (id, name, prefix) or log files/folders to import"
        ),
    ],
    store: StoreOpt = None,
    detector: Annotated[
        Path | None, typer.Option(help="a fitted detector (default: the one shipped, fitted on bench-full)")
    ] = None,
    save: Annotated[
        bool, typer.Option(help="store each verdict and its events with the run (SQL: verdicts, events)")
    ] = True,
    key_map: MapOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Detect anomalies in stored runs: hard rules, change detectors, run profile; a verdict per run."""
    from rftfm_agent.detect.api import detect_runs
    from rftfm_agent.detect.report import to_json, to_text

    st = open_store(store)
    verdicts = detect_runs(st, resolve_runs(st, runs_, key_map), detector_path=detector, save=save)
    if as_json:
        emit_json([to_json(v) for v in verdicts])
        return
    for v in verdicts:
        console.print(to_text(v), markup=False, highlight=False)


@friendly_errors
def fit_detector(
    bench: Annotated[Path, typer.Option(help="a generated benchmark; its healthy controls are the fit data")],
    out: Annotated[Path, typer.Option(help="where to write the fitted detector (JSON)")],
    alpha: Annotated[
        float, typer.Option(help="false-alarm budget: share of healthy runs allowed to alarm")
    ] = 0.02,
) -> None:
    """Fit and calibrate the detector on a benchmark's healthy controls."""
    from rftfm_agent.detect.api import fit_on_bench

    detector = fit_on_bench(bench, alpha=alpha)
    out.parent.mkdir(parents=True, exist_ok=True)
    detector.save(out)
    console.print(f"wrote {out} (tasks: {', '.join(detector.bands)}; alpha {alpha})", markup=False)
