"""`rftfm bench`: generate, export and measure RFT-FaultBench."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rftfm_agent.cli.common import JsonOpt, console, deliver_report, emit_json, err_console, friendly_errors
from rftfm_agent.errors import RftfmError

bench_app = typer.Typer(
    no_args_is_help=True, help="RFT-FaultBench: generate, export and measure; benchmarks that print figures."
)


def _emit_figures(figures: dict[str, Any], as_json: bool, width: int) -> None:
    """A command's figures as JSON, or one `name: value` line each, names right-aligned to `width`."""
    if as_json:
        emit_json(figures)
        return
    for key, value in figures.items():
        console.print(f"{key:>{width}}: {value}", markup=False)


@bench_app.command("ingest")
@friendly_errors
def bench_ingest(
    records: Annotated[
        int | None,
        typer.Option(help="trajectory records to generate and ingest (default 1,000,000; csv: rows, 20,000)"),
    ] = None,
    format_: Annotated[
        str,
        typer.Option("--format", help="faultbench (trajectory JSONL export) or csv (a W&B history export)"),
    ] = "faultbench",
    as_json: JsonOpt = False,
) -> None:
    """Time ingesting N trajectory records (RFT-FaultBench JSONL → store) or a CSV export on this machine."""
    from rftfm_agent.evals.bench_ingest import run_benchmark, run_csv_benchmark

    if format_ not in ("faultbench", "csv"):
        raise RftfmError(f"--format must be faultbench or csv, got {format_!r}")
    if records is not None and records < 1:
        raise RftfmError(f"--records must be at least 1, got {records}")
    csv = format_ == "csv"
    result = run_csv_benchmark(records or 20_000) if csv else run_benchmark(records or 1_000_000)
    _emit_figures(result, as_json, width=28)


@bench_app.command("answer")
@friendly_errors
def bench_answer(
    runs: Annotated[int, typer.Option(help="runs to generate, ingest and diagnose in one call")] = 1000,
    repeats: Annotated[int, typer.Option(help="timings per figure (the median is printed)")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Time detect and diagnose on a stored run (from a shell and in a process) and on many runs at once."""
    from rftfm_agent.evals.bench_answer import run_answer_benchmark

    if runs < 2 or repeats < 1:
        raise RftfmError(f"--runs must be at least 2 and --repeats at least 1, got {runs} and {repeats}")
    result = run_answer_benchmark(runs, repeats)
    _emit_figures(result, as_json, width=34)


@bench_app.command("generate")
@friendly_errors
def bench_generate(
    out: Annotated[Path, typer.Option("--out", help="benchmark folder (store, registry, log)")],
    preset: Annotated[
        str, typer.Option(help="mini (80 short runs) or full (780 runs, paper scale)")
    ] = "mini",
    workers: Annotated[int | None, typer.Option(help="worker processes (default: one per CPU)")] = None,
    ray: Annotated[
        str | None, typer.Option("--ray", help="run on a Ray cluster at this address ('local' starts one)")
    ] = None,
    seed: Annotated[int, typer.Option(help="benchmark seed: same preset and seed, same records")] = 0,
    limit: Annotated[int | None, typer.Option(help="stop after this many new runs")] = None,
    export: Annotated[
        Path | None, typer.Option(help="also write the paper's released layout (JSONL) to this folder")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train every run of a preset (resumable: finished runs are skipped) with a progress bar."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from rftfm_agent.bench.generator import generate

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[last]}"),
    )
    with Progress(*columns, console=err_console, disable=as_json) as bar:
        task_id = bar.add_task(f"bench {preset}", total=None, last="")

        def progress(done: int, total: int, info: dict[str, Any] | None) -> None:
            last = f"{info['experiment_id']} {info['seconds']:.1f}s" if info else "warming up / resuming"
            bar.update(task_id, completed=done, total=total, last=last)

        report = generate(
            preset, out, workers=workers, seed=seed, ray_address=ray, limit=limit, progress=progress
        )
    exported = None
    if export is not None:
        from rftfm_agent.bench.export import export_bench

        exported = export_bench(out, export)
    payload = {
        "preset": report.preset,
        "seed": report.seed,
        "runs": report.total,
        "already_done": report.skipped,
        "made": report.made,
        "failed": report.failed,
        "seconds": round(report.seconds, 1),
        "out": str(report.out),
        "exported": exported,
    }
    _emit_figures(payload, as_json, width=14)
    if report.failed:
        raise typer.Exit(1)


@bench_app.command("export")
@friendly_errors
def bench_export(
    bench: Annotated[Path, typer.Argument(help="a folder made by `rftfm bench generate`")],
    out: Annotated[Path, typer.Option("--out", help="where to write the paper's layout")],
    as_json: JsonOpt = False,
) -> None:
    """Write a generated benchmark in the RFT-FaultBench release layout (JSONL + registries)."""
    from rftfm_agent.bench.export import export_bench

    result = export_bench(bench, out)
    _emit_figures(result, as_json, width=14)


@bench_app.command("effects")
@friendly_errors
def bench_effects(
    bench: Annotated[Path, typer.Argument(help="a folder made by `rftfm bench generate`")],
    markdown: Annotated[Path | None, typer.Option(help="also write the table as Markdown here")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fault-effect table: per type and strength, median change of key metrics against matched controls."""
    from rftfm_agent.bench.effects import effect_table, render_markdown

    table = effect_table(bench)
    deliver_report(table, render_markdown(table, bench), markdown, as_json)


@bench_app.command("speed")
@friendly_errors
def bench_speed(
    runs: Annotated[int, typer.Option(help="runs of the full preset to time")] = 6,
    workers: Annotated[int | None, typer.Option(help="workers (default: one per CPU)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Time a sample of the full preset's runs; print seconds per run and projected hours for `full`."""
    from rftfm_agent.evals.bench_generate import run_speed_benchmark

    result = run_speed_benchmark(runs, workers)
    _emit_figures(result, as_json, width=32)


@bench_app.command("supervisor")
@friendly_errors
def bench_supervisor(
    repeats: Annotated[int, typer.Option(help="plain and supervised runs, each")] = 2,
    steps: Annotated[int, typer.Option(help="steps per run")] = 30,
    as_json: JsonOpt = False,
) -> None:
    """The supervisor's overhead on a healthy testbed run: plain vs supervised, measured in one process."""
    from rftfm_agent.evals.bench_supervisor import run_supervisor_benchmark

    result = run_supervisor_benchmark(repeats, steps)
    _emit_figures(result, as_json, width=32)
