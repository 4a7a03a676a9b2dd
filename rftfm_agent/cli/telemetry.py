"""Telemetry commands: ingest logs, list and show runs, query the store with SQL."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from rftfm_agent.cli.common import (
    JsonOpt,
    MapOpt,
    StoreOpt,
    console,
    emit_json,
    err_console,
    fmt,
    friendly_errors,
    open_store,
)
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.ingest import ingest as ingest_runs
from rftfm_agent.telemetry.store import Store
from rftfm_agent.telemetry.vocabulary import MAIN_METRICS


@friendly_errors
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="log files or run folders")],
    store: StoreOpt = None,
    replace: Annotated[bool, typer.Option(help="replace a stored run of the same name")] = False,
    skip_bad: Annotated[
        bool,
        typer.Option(
            help="leave malformed rows (JSON lines, CSV; counted) and unreadable inputs out; store the rest"
        ),
    ] = False,
    key_map: MapOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import training logs (TRL, HF console, verl, RFT-FaultBench, CSV/W&B, TensorBoard, notebook HTML).

    All inputs are read before anything is written: if one is bad, nothing is stored (unless --skip-bad).
    """
    st = open_store(store)
    mapping = importers.parse_key_map(key_map or [])
    outcome = ingest_runs(st, paths, mapping, replace=replace, skip_bad=skip_bad)
    errors = outcome.errors
    for line in errors:
        err_console.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
    if errors and not skip_bad:
        if len(paths) > 1:
            err_console.print("nothing was stored (--skip-bad stores the readable inputs)", markup=False)
        raise typer.Exit(1)
    results = [
        {
            "run_id": m.run_id,
            "name": m.name,
            "format": m.source.format,
            "steps": m.n_steps,
            "trajectories": m.n_trajectories,
            "outcome": how,
            "skipped": [n for n in m.source.notes if n.startswith("--skip-bad")],
        }
        for m, how in outcome.stored
    ]
    if as_json:
        emit_json({"store": str(st.root), "runs": results, "errors": errors})
    else:
        table = Table("run", "format", "steps", "trajectories", "outcome", title=f"ingested into {st.root}")
        for r in results:
            table.add_row(r["run_id"], r["format"], str(r["steps"]), str(r["trajectories"]), r["outcome"])
        console.print(table)
        for r in results:
            for note in r["skipped"]:
                err_console.print(f"{r['run_id']}: {note}", markup=False, highlight=False, soft_wrap=True)
    if errors:
        raise typer.Exit(1)


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


@friendly_errors
def runs(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """List stored runs with their step counts and which main metrics were found."""
    st = open_store(store)
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


@friendly_errors
def show(
    run: Annotated[str, typer.Argument(help="run id, name or unique id prefix")],
    store: StoreOpt = None,
    png: Annotated[Path | None, typer.Option(help="also write a PNG plot of the main metrics here")] = None,
    all_metrics: Annotated[bool, typer.Option("--all", help="every metric, not only the main ones")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a run: what it is, a table of its metrics with a sparkline each, optionally a PNG plot."""
    st = open_store(store)
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
            fmt(s["first"]),
            fmt(s["last"]),
            fmt(s["min"]),
            fmt(s["max"]),
            f"{s['nan']}/{s['inf']}" if s["nan"] or s["inf"] else "",
            sparkline(series[c]),
        )
    console.print(table)
    missing = [c for c in MAIN_METRICS if c not in series]
    if missing:
        console.print(f"[yellow]not logged by this run:[/yellow] {', '.join(missing)}")
    if png is not None:
        console.print(f"plot written to {png}")


@friendly_errors
def sql(
    query: Annotated[str, typer.Argument(help="one SELECT over the views runs, steps, trajectories")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a read-only SQL query over the store (the entry point the agent's tools use)."""
    df = open_store(store).sql(query)
    if as_json:
        emit_json(json.loads(df.to_json(orient="records")))
        return
    table = Table(*[str(c) for c in df.columns])
    for row in df.head(200).itertuples(index=False):
        table.add_row(*[str(v) for v in row])
    console.print(table)
    if len(df) > 200:
        console.print(f"[dim]… {len(df) - 200} more rows (use --json for all)[/dim]")
