"""Diagnosis commands: `rftfm diagnose` and the `rftfm fingerprints` library group."""

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
from rftfm_agent.errors import RftfmError

fingerprints_app = typer.Typer(no_args_is_help=True, help="The fault-fingerprint library diagnosis uses.")


@fingerprints_app.command("build")
@friendly_errors
def fingerprints_build(
    bench: Annotated[Path, typer.Option(help="a generated benchmark (labelled runs)")],
    out: Annotated[Path, typer.Option(help="where to write the library (Parquet)")],
    detector: Annotated[
        Path | None, typer.Option(help="fitted detector that anchors the fingerprints (default: shipped)")
    ] = None,
    holdout_fold: Annotated[
        int, typer.Option(help="fold of cells (seeds) kept out of the library; -1 keeps none")
    ] = 0,
    folds: Annotated[int, typer.Option(help="folds the cells are dealt into")] = 5,
) -> None:
    """Fingerprint a benchmark's labelled runs (training split) into a library for `rftfm diagnose`."""
    from rftfm_agent.diagnose.api import build_from_bench

    library = build_from_bench(bench, detector, None if holdout_fold < 0 else holdout_fold, folds)
    library.save(out)
    table = library.table
    console.print(
        f"wrote {out}: {table['experiment_id'].nunique()} runs × {table['mode'].nunique()} modes, "
        f"{len(table.columns) - 9} features, {table['type'].nunique()} labels "
        f"(held out: fold {library.meta['holdout_fold']} = {len(library.meta['holdout_cells'])} cells)",
        markup=False,
    )


@friendly_errors
def diagnose(
    runs_: Annotated[
        list[str],
        typer.Argument(
            metavar="RUN|PATH…", help="stored runs (id, name, prefix) or log files/folders to import"
        ),
    ],
    store: StoreOpt = None,
    library: Annotated[
        Path | None, typer.Option(help="fingerprint library (default: the shipped one, from bench-full)")
    ] = None,
    detector: Annotated[Path | None, typer.Option(help="fitted detector (default: the one shipped)")] = None,
    top: Annotated[int, typer.Option(help="hypotheses to list")] = 3,
    key_map: MapOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rank fault hypotheses for stored runs, with the features, metrics and labelled runs behind each."""
    from rftfm_agent.diagnose.api import diagnose_runs
    from rftfm_agent.diagnose.report import to_json, to_text

    if top < 1:  # options first: a bad option is reported before any log is read
        raise RftfmError(f"--top must be at least 1, got {top}")
    st = open_store(store)
    results = diagnose_runs(st, resolve_runs(st, runs_, key_map), library, detector, top=top)
    if as_json:
        payload = [to_json(d, v) for d, v in results]
        emit_json(payload[0] if len(payload) == 1 else payload)
        return
    for d, v in results:
        console.print(to_text(d, v), markup=False, highlight=False)
