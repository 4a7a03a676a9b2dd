"""`rftfm testbed`: the offline tiny-model RFT testbed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rftfm_agent.cli.common import JsonOpt, StoreOpt, console, emit_json, friendly_errors, open_store

testbed_app = typer.Typer(no_args_is_help=True, help="The offline tiny-model RFT testbed.")


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
    steps: Annotated[int | None, typer.Option(help="optimizer steps (default 30)")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    learning_rate: Annotated[
        float | None, typer.Option("--lr", help="learning rate (default 2e-4; on resume: the checkpoint's)")
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
    from rftfm_agent.faults.registry import hooks_for
    from rftfm_agent.testbed.runner import RunSpec, parse_fault, run

    given = {"steps": steps, "learning_rate": learning_rate}  # the rest: RunSpec's defaults
    spec = RunSpec(
        name=name,
        task=task,
        seed=seed,
        fault=parse_fault(fault) if fault else None,
        model=model,
        save_steps=save_steps,
        **{k: v for k, v in given.items() if v is not None},
    )
    result = run(
        spec,
        open_store(store),
        workdir / name,
        hooks=hooks_for(spec.fault),
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
