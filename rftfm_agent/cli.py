"""The `rftfm` command line: ingest logs, list and show runs, query the store, run benchmarks.

Every command takes `--json` for machine-readable output. Bad input ends in one line on stderr that
names the file and what is wrong, a non-zero exit, and a store left exactly as it was.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.store import Store, default_store_path
from rftfm_agent.telemetry.vocabulary import MAIN_METRICS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="rftfm: automatic failure management for reinforcement fine-tuning.",
)
bench_app = typer.Typer(
    no_args_is_help=True, help="RFT-FaultBench: generate, export and measure; benchmarks that print figures."
)
app.add_typer(bench_app, name="bench")
testbed_app = typer.Typer(no_args_is_help=True, help="The offline tiny-model RFT testbed.")
app.add_typer(testbed_app, name="testbed")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate detection and diagnosis on a benchmark.")
app.add_typer(eval_app, name="eval")
fingerprints_app = typer.Typer(no_args_is_help=True, help="The fault-fingerprint library diagnosis uses.")
app.add_typer(fingerprints_app, name="fingerprints")

# Piped output (CI logs, `| less`) gets a wide table instead of rich's 80-column default.
console = Console(width=shutil.get_terminal_size((140, 40)).columns)
err_console = Console(stderr=True, width=shutil.get_terminal_size((140, 40)).columns)

StoreOpt = Annotated[
    Path | None, typer.Option("--store", help="store folder (default: $RFTFM_STORE or ~/.rftfm/store)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Turn rftfm's own errors into one line on stderr and exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RftfmError as exc:
            err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _json_safe(value: Any) -> Any:
    """NaN/Inf are not JSON: print them as the strings 'NaN' / 'Infinity' / '-Infinity'."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(_json_safe(payload), indent=2, allow_nan=False) + "\n")


def _store(path: Path | None) -> Store:
    return Store(path if path is not None else default_store_path())


def _write_report(path: Path, write: Callable[[], Any]) -> None:
    """Write a report file, turning an unwritable path into rftfm's one-line error."""
    try:
        write()
    except OSError as exc:
        raise RftfmError(f"{path}: cannot write the report ({exc.strerror or exc})") from None


def _deliver_report(payload: Any, text: str, markdown: Path | None, as_json: bool) -> None:
    """What every report command ends with: Markdown to a file on request, then JSON or the text."""
    if markdown is not None:
        _write_report(markdown, lambda: markdown.write_text(text))
    if as_json:
        emit_json(payload)
    else:
        console.print(text, markup=False, highlight=False)


# ---------------------------------------------------------------------------------------------- ingest
@app.command()
@friendly_errors
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="log files or run folders")],
    store: StoreOpt = None,
    replace: Annotated[bool, typer.Option(help="replace a stored run of the same name")] = False,
    skip_bad: Annotated[bool, typer.Option(help="store the readable inputs even if some are bad")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import training logs (TRL, HF console, verl, RFT-FaultBench, CSV/W&B, TensorBoard, notebook HTML).

    All inputs are read before anything is written: if one is bad, nothing is stored (unless --skip-bad).
    """
    st = _store(store)
    loaded, errors = [], []
    for path in paths:
        try:
            loaded.extend(importers.load(path))
        except RftfmError as exc:
            errors.append(str(exc))
    for line in errors:
        err_console.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
    if errors and not skip_bad:
        if len(paths) > 1:
            err_console.print("nothing was stored (--skip-bad stores the readable inputs)", markup=False)
        raise typer.Exit(1)
    results = []
    for run in loaded:
        manifest, outcome = st.write_run(run, replace=replace)
        results.append(
            {
                "run_id": manifest.run_id,
                "name": manifest.name,
                "format": manifest.source.format,
                "steps": manifest.n_steps,
                "trajectories": manifest.n_trajectories,
                "outcome": outcome,
            }
        )
    if as_json:
        emit_json({"store": str(st.root), "runs": results, "errors": errors})
    else:
        table = Table("run", "format", "steps", "trajectories", "outcome", title=f"ingested into {st.root}")
        for r in results:
            table.add_row(r["run_id"], r["format"], str(r["steps"]), str(r["trajectories"]), r["outcome"])
        console.print(table)
    if errors:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- runs
def _run_summary(st: Store, run_id: str) -> dict[str, Any]:
    m = st.manifest(run_id)
    return {
        "run_id": m.run_id,
        "name": m.name,
        "format": m.source.format,
        "framework": m.source.framework,
        "status": m.status,
        "steps": m.n_steps,
        "first_step": m.first_step,
        "last_step": m.last_step,
        "trajectories": m.n_trajectories,
        "label": m.label,
        "fault": m.fault.model_dump() if m.fault else None,
        "mapped": {k: m.metric_sources[k] for k in MAIN_METRICS if k in m.metric_sources},
        "missing": [k for k in MAIN_METRICS if k not in m.metric_sources],
        "n_metrics": len(m.metrics),
    }


@app.command()
@friendly_errors
def runs(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """List stored runs with their step counts and which main metrics were found."""
    st = _store(store)
    rows = [_run_summary(st, r) for r in st.run_ids()]
    if as_json:
        emit_json(rows)
        return
    table = Table(
        "run", "format", "steps", "traj", "label", "main metrics", "not logged", title=f"runs in {st.root}"
    )
    for r in rows:
        label = r["label"] + (f" {r['fault']['type']}/{r['fault']['strength']}" if r["fault"] else "")
        found = f"{len(r['mapped'])}/{len(MAIN_METRICS)}"
        table.add_row(
            r["run_id"],
            r["format"],
            str(r["steps"]),
            str(r["trajectories"]),
            label,
            found,
            ", ".join(r["missing"]) or "-",
        )
    console.print(table)


# ---------------------------------------------------------------------------------------------- show
_SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> str:
    """A terminal plot of a series: resampled to `width`, NaN as '·', ±Inf as '!'."""
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [values[int(i * step)] for i in range(width)]
    finite = [v for v in values if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
    out = []
    for v in values:
        if math.isnan(v):
            out.append("·")
        elif math.isinf(v):
            out.append("!")
        else:
            idx = 0 if hi == lo else int((v - lo) / (hi - lo) * (len(_SPARKS) - 1))
            out.append(_SPARKS[idx])
    return "".join(out)


def _metric_stats(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if math.isfinite(v)]
    return {
        "first": finite[0] if finite else None,
        "last": finite[-1] if finite else None,
        "min": min(finite) if finite else None,
        "max": max(finite) if finite else None,
        "nan": sum(1 for v in values if math.isnan(v)),
        "inf": sum(1 for v in values if math.isinf(v)),
        "logged_steps": len(values),
    }


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


@app.command()
@friendly_errors
def show(
    run: Annotated[str, typer.Argument(help="run id, name or unique id prefix")],
    store: StoreOpt = None,
    png: Annotated[Path | None, typer.Option(help="also write a PNG plot of the main metrics here")] = None,
    all_metrics: Annotated[bool, typer.Option("--all", help="every metric, not only the main ones")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a run: what it is, a table of its metrics with a sparkline each, optionally a PNG plot."""
    st = _store(store)
    run_id = st.resolve(run)
    m = st.manifest(run_id)
    # Statistics come from the long table: a NaN there was logged as NaN, whereas the wide table also
    # has NaN where a metric simply was not logged at that step.
    long = st.steps(run_id, wide=False).sort_values("step", kind="stable")
    series = {str(k): g["value"].astype(float).tolist() for k, g in long.groupby("metric", sort=False)}
    shown = [c for c in (m.metrics if all_metrics else MAIN_METRICS) if c in series]
    extra = [] if all_metrics else sorted(c for c in series if c.startswith("traj/"))
    stats = {c: _metric_stats(series[c]) for c in shown + extra}
    if png is not None:
        from rftfm_agent.telemetry.plots import plot_run

        plot_run(st.steps(run_id), shown + extra, title=f"{m.name} ({m.source.format})", out=png)
    if as_json:
        emit_json(
            {
                "run": _run_summary(st, run_id),
                "source": m.source.model_dump(),
                "task": m.task,
                "model": m.model,
                "config": m.config,
                "metrics": stats,
                "png": str(png) if png else None,
            }
        )
        return
    console.print(f"[bold]{m.name}[/bold]  ({m.run_id})")
    console.print(
        f"format {m.source.format} · framework {m.source.framework or '?'} · {m.n_steps} steps "
        f"({m.first_step}…{m.last_step}) · {m.n_trajectories} trajectories · label {m.label}"
        + (
            f" · fault {m.fault.family}/{m.fault.type}/{m.fault.strength} from step {m.fault.onset_step}"
            if m.fault
            else ""
        )
    )
    for note in m.source.notes:
        console.print(f"[dim]note: {note}[/dim]")
    table = Table("metric", "logged as", "first", "last", "min", "max", "NaN/Inf")
    table.add_column("trend (step →)", no_wrap=True, min_width=40)
    for c in shown + extra:
        s = stats[c]
        table.add_row(
            c,
            m.metric_sources.get(c, c),
            _fmt(s["first"]),
            _fmt(s["last"]),
            _fmt(s["min"]),
            _fmt(s["max"]),
            f"{s['nan']}/{s['inf']}" if s["nan"] or s["inf"] else "",
            sparkline(series[c]),
        )
    console.print(table)
    missing = [c for c in MAIN_METRICS if c not in series]
    if missing:
        console.print(f"[yellow]not logged by this run:[/yellow] {', '.join(missing)}")
    if png is not None:
        console.print(f"plot written to {png}")


# ---------------------------------------------------------------------------------------------- sql
@app.command()
@friendly_errors
def sql(
    query: Annotated[str, typer.Argument(help="one SELECT over the views runs, steps, trajectories")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a read-only SQL query over the store (the entry point the agent's tools use)."""
    df = _store(store).sql(query)
    if as_json:
        emit_json(json.loads(df.to_json(orient="records")))
        return
    table = Table(*[str(c) for c in df.columns])
    for row in df.head(200).itertuples(index=False):
        table.add_row(*[str(v) for v in row])
    console.print(table)
    if len(df) > 200:
        console.print(f"[dim]… {len(df) - 200} more rows (use --json for all)[/dim]")


# ---------------------------------------------------------------------------------------------- demo
@app.command()
@friendly_errors
def demo(
    store: StoreOpt = None,
    png: Annotated[Path | None, typer.Option(help="where to write the plot")] = Path("rftfm-demo.png"),
) -> None:
    """Ingest the bundled example run (a real tiny GRPO run recorded by TRL), show, detect, diagnose."""
    from rftfm_agent.resources import example_path

    st = _store(store)
    example = example_path("tiny_grpo_trainer_state.json")
    console.print(f"[bold]1. ingest[/bold] {example}")
    ingest([example], store=st.root, replace=False, skip_bad=False, as_json=False)
    console.print("[bold]2. runs[/bold]")
    runs(store=st.root, as_json=False)
    console.print("[bold]3. show[/bold]")
    show("tiny_grpo_trainer_state", store=st.root, png=png, all_metrics=False, as_json=False)
    console.print("[bold]4. detect[/bold]")
    detect(["tiny_grpo_trainer_state"], store=st.root, detector=None, save=True, as_json=False)
    console.print("[bold]5. diagnose[/bold]")
    diagnose(["tiny_grpo_trainer_state"], store=st.root, library=None, detector=None, top=3, as_json=False)


# ---------------------------------------------------------------------------------------------- bench
@bench_app.command("ingest")
@friendly_errors
def bench_ingest(
    records: Annotated[int, typer.Option(help="trajectory records to generate and ingest")] = 1_000_000,
    as_json: JsonOpt = False,
) -> None:
    """Time ingesting N trajectory records (RFT-FaultBench JSONL → store) on this machine."""
    from rftfm_agent.evals.bench_ingest import run_benchmark

    result = run_benchmark(records)
    if as_json:
        emit_json(result)
    else:
        for key, value in result.items():
            console.print(f"{key:>28}: {value}")


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
    if as_json:
        emit_json(payload)
    else:
        for key, value in payload.items():
            console.print(f"{key:>14}: {value}", markup=False)
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
    if as_json:
        emit_json(result)
    else:
        for key, value in result.items():
            console.print(f"{key:>14}: {value}", markup=False)


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
    _deliver_report(table, render_markdown(table, bench), markdown, as_json)


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
    if as_json:
        emit_json(result)
    else:
        for key, value in result.items():
            console.print(f"{key:>32}: {value}", markup=False)


@testbed_app.command("warmup")
@friendly_errors
def testbed_warmup(as_json: JsonOpt = False) -> None:
    """Warm up (or find cached) the testbed's tiny model; print its held-out accuracy per task."""
    from rftfm_agent.testbed.model import WarmupConfig, warm_model, warmup_report

    folder = warm_model(WarmupConfig(), quiet=as_json)
    report = {"folder": str(folder), **warmup_report(folder)}
    if as_json:
        emit_json(report)
    else:
        for key in ("folder", "parameters", "seconds", "heldout_accuracy_greedy", "heldout_accuracy_sampled"):
            console.print(f"{key:>26}: {report[key]}", markup=False)


@testbed_app.command("train")
@friendly_errors
def testbed_train(
    name: Annotated[str, typer.Option(help="run name in the store")] = "testbed-run",
    task: Annotated[str, typer.Option(help="arith_a, arith_b, tool or arith_c")] = "arith_a",
    steps: Annotated[int, typer.Option(help="optimizer steps")] = 20,
    seed: Annotated[int, typer.Option()] = 0,
    learning_rate: Annotated[
        float | None, typer.Option("--lr", help="learning rate (default 5e-5; on resume: the checkpoint's)")
    ] = None,
    fault: Annotated[
        str | None, typer.Option(help="TYPE:STRENGTH[@ONSET][:VARIANT], e.g. od_lr:easy@8:high")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="any HF causal LM path (default: the tiny testbed)")
    ] = None,
    save_steps: Annotated[int | None, typer.Option(help="checkpoint every N steps")] = None,
    resume_from: Annotated[Path | None, typer.Option(help="checkpoint folder to resume from")] = None,
    workdir: Annotated[Path, typer.Option(help="trainer output folder (checkpoints)")] = Path("rftfm-runs"),
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train one GRPO run of the testbed (optionally with a fault), recorded into the store."""
    from rftfm_agent.testbed.runner import RunSpec, parse_fault, run

    spec = RunSpec(
        name=name,
        task=task,
        steps=steps,
        seed=seed,
        learning_rate=learning_rate if learning_rate is not None else 5e-5,
        fault=parse_fault(fault) if fault else None,
        model=model,
        save_steps=save_steps,
    )
    result = run(
        spec,
        _store(store),
        workdir / name,
        resume_from=resume_from,
        keep_checkpoint_lr=resume_from is not None and learning_rate is None,
    )
    payload = {
        "run_id": result.run_id,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "heldout_accuracy": result.heldout,
        "checkpoints": sorted(str(p) for p in (workdir / name).glob("checkpoint-*")),
    }
    if as_json:
        emit_json(payload)
    else:
        for key, value in payload.items():
            console.print(f"{key:>18}: {value}", markup=False)


# ---------------------------------------------------------------------------------------------- detect
@app.command()
@friendly_errors
def detect(
    runs_: Annotated[list[str], typer.Argument(metavar="RUN…", help="run ids or names in the store")],
    store: StoreOpt = None,
    detector: Annotated[
        Path | None, typer.Option(help="a fitted detector (default: the one shipped, fitted on bench-full)")
    ] = None,
    save: Annotated[bool, typer.Option(help="write events.json beside each run")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Detect anomalies in stored runs: hard rules, change detectors, run profile; a verdict per run."""
    from rftfm_agent.detect.api import detect_runs

    verdicts = detect_runs(_store(store), runs_, detector_path=detector, save=save)
    if as_json:
        emit_json(
            [
                {
                    "run": v.run,
                    "verdict": v.verdict,
                    "mode": v.mode,
                    "missing": v.missing,
                    "events": [
                        {
                            k: e.model_dump()[k]
                            for k in ("step", "metric", "kind", "severity", "score", "evidence")
                        }
                        for e in v.events
                    ],
                }
                for v in verdicts
            ]
        )
        return
    for v in verdicts:
        colour = "red" if v.verdict == "anomalous" else "green"
        console.print(f"[bold]{v.run}[/bold]: [{colour}]{v.verdict}[/{colour}] (mode: {v.mode})")
        if v.missing:
            console.print(f"  [dim]not logged: {', '.join(v.missing)}[/dim]")
        for e in v.events[:20]:
            console.print(
                f"  step {e.step:>5}  {e.severity:<8} {e.kind:<18} {e.metric:<32} score {e.score:.3g}",
                markup=False,
            )
        if len(v.events) > 20:
            console.print(f"  … {len(v.events) - 20} more events (--json for all)", markup=False)


@app.command("fit-detector")
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


@eval_app.command("detect")
@friendly_errors
def eval_detect(
    bench: Annotated[Path, typer.Option(help="a generated benchmark")],
    folds: Annotated[int, typer.Option(help="cross-validation folds over cells (seeds)")] = 5,
    alpha: Annotated[float, typer.Option(help="false-alarm budget")] = 0.02,
    markdown: Annotated[Path | None, typer.Option(help="also write the report as Markdown here")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run-level P/R/F1 per family × strength (protocols B and A), online delay, baselines side by side."""
    from rftfm_agent.evals.eval_detect import evaluate, render

    report = evaluate(bench, folds=folds, alpha=alpha)
    _deliver_report(report, render(report), markdown, as_json)


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


LOW_CONFIDENCE = 0.4  # below this top probability the readable verdict warns that nothing stands out


@app.command()
@friendly_errors
def diagnose(
    runs_: Annotated[list[str], typer.Argument(metavar="RUN…", help="run ids or names in the store")],
    store: StoreOpt = None,
    library: Annotated[
        Path | None, typer.Option(help="fingerprint library (default: the shipped one, from bench-full)")
    ] = None,
    detector: Annotated[Path | None, typer.Option(help="fitted detector (default: the one shipped)")] = None,
    top: Annotated[int, typer.Option(help="hypotheses to list")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Rank fault hypotheses for stored runs, with the features, metrics and labelled runs behind each."""
    from rftfm_agent.diagnose.api import diagnose_runs

    results = diagnose_runs(_store(store), runs_, library, detector, top=top)
    if as_json:
        payload = [
            {
                "run": d.run,
                "verdict": v.verdict,
                "anchor_step": d.anchor_step,
                "mode": d.mode,
                "unknown": d.unknown,
                "hypotheses": [h.model_dump() for h in d.hypotheses],
                "missing": d.missing,
                "notes": d.notes,
            }
            for d, v in results
        ]
        emit_json(payload[0] if len(payload) == 1 else payload)
        return
    for d, v in results:
        colour = "red" if v.verdict == "anomalous" else "green"
        console.print(
            f"[bold]{d.run}[/bold]: detector [{colour}]{v.verdict}[/{colour}]; fingerprint at step "
            f"{d.anchor_step} (mode: {d.mode})"
        )
        brief = v.verdict == "healthy"  # no incident: name the closest types, without evidence
        if brief:
            console.print(
                "  [dim]nothing was detected: the types below are only the closest matches of the run's "
                "most unusual stretch, not an incident (--json for their evidence)[/dim]"
            )
        for note in d.notes:
            console.print(f"  [yellow]note: {note}[/yellow]", markup=True, highlight=False)
        if d.missing:
            console.print(f"  [dim]not logged, diagnosed without: {', '.join(d.missing)}[/dim]")
        known = [h for h in d.hypotheses if h.type != "unknown"]
        if known and known[0].probability < LOW_CONFIDENCE:
            console.print(f"  [yellow]low confidence: no known type reaches p={LOW_CONFIDENCE}[/yellow]")
        for rank, h in enumerate(d.hypotheses, 1):
            console.print(f"  {rank}. {h.family}/{h.type}  p={h.probability:.2f}", markup=False)
            ev = h.evidence
            if brief:
                continue
            if h.type == "unknown":
                console.print(f"     {ev['why']}", markup=False)
                continue
            for f in ev.get("features", []):
                console.print(
                    f"     {f['feature']:<44} {_fmt(f['value']):>10}  (healthy {_fmt(f['healthy'])}, "
                    f"typical {_fmt(f['typical'])})",
                    markup=False,
                )
            for m in ev.get("metrics", []):
                console.print(
                    f"     {m['metric']:<44} {_fmt(m['before'])} before → {_fmt(m['after'])} after"
                    + (f" (healthy runs: {_fmt(m['healthy'])})" if "healthy" in m else ""),
                    markup=False,
                )
            near = ", ".join(f"{n['run']} ({n['strength']}, {n['task']})" for n in ev.get("nearest_runs", []))
            if near:
                console.print(f"     nearest labelled runs: {near}", markup=False)


@eval_app.command("diagnose")
@friendly_errors
def eval_diagnose(
    bench: Annotated[Path, typer.Option(help="a generated benchmark")],
    folds: Annotated[int, typer.Option(help="cross-validation folds over cells (seeds)")] = 5,
    alpha: Annotated[float, typer.Option(help="false-alarm budget of the detectors that anchor")] = 0.02,
    markdown: Annotated[Path | None, typer.Option(help="also write the report as Markdown here")] = None,
    png: Annotated[Path | None, typer.Option(help="write the confusion matrices (seeds split) here")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Type/family top-1 and top-3, macro-F1, confusions: on unseen seeds and on an unseen task."""
    from rftfm_agent.evals.eval_diagnose import evaluate, plot_confusion, render

    report = evaluate(bench, folds=folds, alpha=alpha)
    if png is not None:
        _write_report(png, lambda: plot_confusion(report, png))
    _deliver_report(report, render(report), markdown, as_json)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
