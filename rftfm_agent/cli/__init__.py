"""The `rftfm` command line: ingest logs, list and show runs, query the store, run benchmarks.

Every command takes `--json` for machine-readable output. Bad input ends in one line on stderr that
names the file and what is wrong, a non-zero exit, and a store left exactly as it was.

One module per command group (`telemetry`, `demo`, `detect`, `diagnose`, `supervise`, `agent`, `bench`,
`testbed`, `evals`), with what they share in `common`; this module builds `app` from them. Heavy
libraries (torch, trl, transformers) are imported inside the commands that need them, so `rftfm --help`
stays fast.
"""

from __future__ import annotations

import typer

from rftfm_agent.cli import agent, bench, demo, detect, diagnose, evals, supervise, telemetry, testbed

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="rftfm: automatic failure management for reinforcement fine-tuning.",
)

# Commands appear in `rftfm --help` in this order, followed by the groups.
app.command()(telemetry.ingest)
app.command()(telemetry.runs)
app.command()(telemetry.show)
app.command()(telemetry.sql)
app.command()(demo.demo)
app.command()(detect.detect)
app.command("fit-detector")(detect.fit_detector)
app.command()(diagnose.diagnose)
app.command()(supervise.supervise)
app.command()(supervise.journal)
app.command()(agent.triage)
app.command()(agent.chat)

app.add_typer(bench.bench_app, name="bench")
app.add_typer(testbed.testbed_app, name="testbed")
app.add_typer(evals.eval_app, name="eval")
app.add_typer(diagnose.fingerprints_app, name="fingerprints")


def main() -> None:
    app()


__all__ = ["app", "main"]
