"""`rftfm eval`: evaluate detection and diagnosis on a benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rftfm_agent.cli.common import JsonOpt, deliver_report, err_console, friendly_errors, write_report
from rftfm_agent.errors import RftfmError

eval_app = typer.Typer(
    no_args_is_help=True,
    help="Evaluate detection, diagnosis, remediation, the agent, and rftfm beside its peers.",
)


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
    deliver_report(report, render(report), markdown, as_json)


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
        write_report(png, lambda: plot_confusion(report, png))
    deliver_report(report, render(report), markdown, as_json)


@eval_app.command("remediate")
@friendly_errors
def eval_remediate(
    bench: Annotated[Path, typer.Option(help="a generated benchmark")],
    out: Annotated[Path, typer.Option(help="folder for the closed-loop runs and results (resumable)")],
    workers: Annotated[int, typer.Option(help="processes")] = 2,
    limit: Annotated[int | None, typer.Option(help="at most this many hurt runs (spread over types)")] = None,
    arms: Annotated[str, typer.Option(help="comma-separated arms")] = ",".join(
        ("playbook", "oracle", "halve_lr", "random", "stop")
    ),
    ray: Annotated[str | None, typer.Option(help="a Ray cluster address ('local' for one here)")] = None,
    markdown: Annotated[Path | None, typer.Option(help="also write the report as Markdown here")] = None,
    png: Annotated[Path | None, typer.Option(help="write the recovery plots here")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Closed-loop remediation on the hurt fault runs (fault kept), next to baselines; harm on controls."""
    from rftfm_agent.evals.eval_remediate import evaluate, plot, render

    chosen = tuple(a for a in arms.split(",") if a)
    report = evaluate(bench, out, workers=workers, limit=limit, arms=chosen, ray_address=ray)
    if png is not None:
        write_report(png, lambda: plot(report, png))
    slim = {k: v for k, v in report.items() if k != "runs"}
    deliver_report(slim, render(report), markdown, as_json)


@eval_app.command("agent")
@friendly_errors
def eval_agent(
    out: Annotated[Path, typer.Option(help="folder for the evaluation store, checkpoints and plots")],
    bench: Annotated[Path | None, typer.Option(help="a generated benchmark (labelled runs)")] = None,
    realruns: Annotated[
        Path | None, typer.Option(help="folder of real logs labelled in realrun_labels.toml")
    ] = None,
    limit: Annotated[int, typer.Option(help="benchmark fault runs, spread over types")] = 16,
    controls: Annotated[int, typer.Option(help="benchmark healthy controls")] = 4,
    llm_config: Annotated[
        Path | None, typer.Option("--llm-config", help="LLM endpoint config (TOML)")
    ] = None,
    offline: Annotated[bool, typer.Option("--offline", help="deterministic planner only")] = False,
    markdown: Annotated[Path | None, typer.Option(help="also write the report as Markdown here")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Triage benchmark runs and real logs with the agent's graph; score the named fault or symptom, the
    fix, actions without approval (must be 0), tool calls and seconds. With an LLM configured, both the
    deterministic planner and the LLM are scored."""
    from rftfm_agent.cli.agent import connect_llm
    from rftfm_agent.evals.eval_agent import evaluate, render

    llm, _ = connect_llm(llm_config, offline)
    report = evaluate(out, bench=bench, realruns=realruns, limit=limit, controls=controls, llm=llm)
    deliver_report(report, render(report), markdown, as_json)


@eval_app.command("peers")
@friendly_errors
def eval_peers(
    realruns: Annotated[
        Path | None, typer.Option(help="folder of real logs labelled in realrun_labels.toml")
    ] = None,
    bench: Annotated[
        Path | None, typer.Option(help="a generated benchmark: its runs are exported to CSV and compared too")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many benchmark runs (¼ controls)")] = None,
    markdown: Annotated[Path | None, typer.Option(help="also write the report as Markdown here")] = None,
    as_json: JsonOpt = False,
) -> None:
    """rftfm beside rl-doctor and rlwatch on the same logs: flagged, critical findings on healthy runs,
    right symptom on broken runs, seconds (pip install 'rftfm[peers]' for the peers)."""
    import shlex
    import sys
    import tempfile

    try:
        import rl_doctor  # noqa: F401
        import rlwatch  # noqa: F401
    except ImportError as exc:
        raise RftfmError(f"the peers are not installed ({exc.name}): pip install 'rftfm[peers]'") from None
    from rftfm_agent.evals import compare_peers

    command = "rftfm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        rows = compare_peers.run(
            realruns, bench, limit, Path(tmp), lambda name: err_console.print(f"  {name}", markup=False)
        )
    payload = {"totals": compare_peers.totals(rows), "runs": rows}
    deliver_report(payload, compare_peers.to_markdown(rows, command), markdown, as_json)
