"""`rftfm supervise` (a testbed run under the supervisor) and `rftfm journal` (what it decided and why)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from rftfm_agent.cli.common import (
    JsonOpt,
    StoreOpt,
    console,
    emit_json,
    err_console,
    friendly_errors,
    open_store,
)
from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry import io

SESSION_FILE = "session.json"


@friendly_errors
def supervise(
    fault: Annotated[
        str | None,
        typer.Option(help="inject a fault: TYPE:STRENGTH[@ONSET][:VARIANT], e.g. od_lr:easy@10:high"),
    ] = None,
    task: Annotated[str, typer.Option(help="testbed task")] = "arith_a",
    steps: Annotated[int, typer.Option(help="optimizer steps")] = 30,
    seed: Annotated[int, typer.Option(help="run seed")] = 0,
    mode: Annotated[
        str | None, typer.Option(help="observe | ask | auto (default: the policy file's)")
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="safety policy (TOML); default: the built-in one")
    ] = None,
    fallback: Annotated[
        bool, typer.Option(help="register the exact verifier as a fallback reward function")
    ] = True,
    name: Annotated[str | None, typer.Option(help="run name (default: from the fault)")] = None,
    workdir: Annotated[Path | None, typer.Option(help="checkpoints and the session file")] = None,
    resume: Annotated[Path | None, typer.Option(help="a stopped session's workdir, to carry on")] = None,
    approve: Annotated[bool, typer.Option(help="with --resume: apply the fix awaiting approval")] = False,
    reject: Annotated[
        bool, typer.Option(help="with --resume: refuse it (journaled; the run stays stopped)")
    ] = False,
    show_policy: Annotated[bool, typer.Option(help="print the built-in policy file and exit")] = False,
    agent: Annotated[
        bool,
        typer.Option(
            help="plan through the agent's graph (an LLM, when configured, orders the fixes; the "
            "policy still decides)"
        ),
    ] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a testbed run with the supervisor in charge: detect, diagnose, check the policy, fix, resume,
    verify. In `ask` mode it stops at the first fix that needs approval and prints the command that
    resumes."""
    from rftfm_agent.supervise.policy import DEFAULT_POLICY_TOML, Policy

    if show_policy:
        typer.echo(DEFAULT_POLICY_TOML, nl=False)  # verbatim: never wrapped to the terminal's width
        return
    if mode is not None and mode not in ("observe", "ask", "auto"):
        raise RftfmError(f"--mode must be observe, ask or auto, not {mode!r}")
    if (approve or reject) and resume is None:
        raise RftfmError("--approve and --reject go with --resume WORKDIR")
    if approve and reject:
        raise RftfmError("--approve or --reject, not both")
    st = open_store(store)
    if resume is not None:
        outcome = _resume(resume, approve, reject, st)
        if outcome is not None:
            _report(outcome, resume, as_json)
        return
    from rftfm_agent.testbed.runner import RunSpec, parse_fault

    parsed = parse_fault(fault) if fault else None
    run_name = name or (f"supervised-{parsed.type}" if parsed else "supervised-healthy")
    spec = RunSpec(name=run_name, task=task, steps=steps, seed=seed, fault=parsed, eval_every=10)
    pol = Policy.load(policy, mode=mode)  # validated before anything trains
    folder = workdir or Path("rftfm-runs") / run_name
    planner = _agent_planner() if agent else None
    outcome = _run(spec, pol, policy, fallback, st, folder, prepare=None, planner=planner)
    _report(outcome, folder, as_json)


def _agent_planner() -> Any:
    from rftfm_agent.agent.supervisor_planner import agent_planner
    from rftfm_agent.cli.agent import connect_llm

    llm, which = connect_llm(None, offline=False)
    err_console.print(f"agent planner: {which}", markup=False)
    return agent_planner(llm)


def _run(
    spec: Any,
    pol: Any,
    policy_path: Path | None,
    fallback: bool,
    st: Any,
    folder: Path,
    prepare: Any,
    stop: Any = None,
    planner: Any = None,
) -> Any:
    from rftfm_agent.evals.closed_loop import supervised_testbed_run
    from rftfm_agent.remediate.actions import parse_action

    folder.mkdir(parents=True, exist_ok=True)
    outcome = supervised_testbed_run(
        spec,
        st,
        folder / f"resume-{len(list(folder.glob('resume-*')))}" if stop is not None else folder,
        pol,
        fallback=fallback,
        prepare=prepare,
        **({"planner": planner} if planner is not None else {}),
        resume_from=stop.checkpoint if stop is not None else None,
        actions=[parse_action(a) for a in stop.actions] if stop is not None else None,
    )
    sup = outcome.supervisor
    session = {
        "spec": spec.model_dump(mode="json"),
        "policy": pol.model_dump(mode="json"),
        "policy_file": str(policy_path) if policy_path else None,
        "fallback": fallback,
        "store": str(st.root),
        "stop": outcome.result.stop.model_dump(mode="json") if outcome.result.stop else None,
        "state": sup.state() if sup else {},
    }
    io.atomic_write_text(folder / SESSION_FILE, io.dumps(session))
    return outcome


def resume_session(folder: Path, candidate: Any, st: Any) -> dict[str, Any]:
    """Carry on a stopped supervised session with `candidate` (a person approved it): the agent's resume."""
    outcome = _resume(folder, approve=True, reject=False, st=st, candidate=candidate)
    return _payload(outcome, folder)


def _resume(folder: Path, approve: bool, reject: bool, st: Any, candidate: Any = None) -> Any:
    from rftfm_agent.supervise.policy import Policy
    from rftfm_agent.supervise.supervisor import START, Stop
    from rftfm_agent.testbed.runner import RunSpec

    path = folder / SESSION_FILE
    try:
        session = io.from_json_safe(json.loads(path.read_text()))
    except FileNotFoundError:
        raise RftfmError(f"{path}: no supervised session here") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RftfmError(f"{path}: not a session file ({exc})") from None
    stop = Stop.model_validate(session["stop"]) if session.get("stop") else None
    if stop is None or stop.kind != "ask":
        raise RftfmError(f"{path}: the session is not waiting for an approval")
    if candidate is not None:
        kept = list((session.get("state") or {}).get("kept") or [])
        stop = stop.model_copy(
            update={"candidate": candidate, "actions": [*kept, *(a.model_dump() for a in candidate.actions)]}
        )
    if not (approve or reject):
        console.print(
            f"waiting for approval: {stop.candidate.summary() if stop.candidate else '?'} ({stop.reason})"
        )
        console.print(f"  approve: rftfm supervise --resume {folder} --approve")
        return None
    spec = RunSpec.model_validate(session["spec"])
    pol = Policy.model_validate(session["policy"])
    state = session["state"]
    if stop.checkpoint and stop.checkpoint != START and not Path(stop.checkpoint).is_dir():
        raise RftfmError(f"{stop.checkpoint}: the checkpoint to resume from is gone; nothing was changed")
    if reject:
        from rftfm_agent.evals.closed_loop import shared_models
        from rftfm_agent.supervise.supervisor import Supervisor

        detector, diagnoser = shared_models()
        sup = Supervisor(
            policy=pol, detector=detector, diagnoser=diagnoser, store=st, task=spec.task, run_name=spec.name
        )
        sup.restore(state, stop, approved=False)
        session["stop"] = None
        io.atomic_write_text(path, io.dumps(session))
        console.print("fix rejected (journaled); the run stays stopped")
        return None
    return _run(
        spec,
        pol,
        Path(session["policy_file"]) if session.get("policy_file") else None,
        bool(session.get("fallback", True)),
        st,
        folder,
        prepare=lambda sup: sup.restore(state, stop, approved=True),
        stop=stop,
    )


def _payload(outcome: Any, folder: Path) -> dict[str, Any]:
    result = outcome.result
    stop = result.stop
    payload = {
        "run": result.run_id,
        "segments": result.segments,
        "final_step": outcome.final_step,
        "final_heldout_accuracy": outcome.final_heldout,
        "steps_trained": outcome.steps_trained,
        "seconds": round(result.seconds, 2),
        "supervisor_seconds": round(result.supervisor_seconds, 3),
        "stopped": stop.kind if stop else None,
        "reason": stop.reason if stop else None,
        "errors": result.errors,
    }
    if stop is not None and stop.kind == "ask":
        payload["resume_command"] = f"rftfm supervise --resume {folder} --approve"
    return payload


def _report(outcome: Any, folder: Path, as_json: bool) -> None:
    result, stop = outcome.result, outcome.result.stop
    payload = _payload(outcome, folder)
    if as_json:
        emit_json(payload)
        return
    console.print(
        f"[bold]{result.run_id}[/bold]: {outcome.final_step} steps kept, {outcome.steps_trained} trained, "
        f"held-out accuracy {_pct(outcome.final_heldout)}, segments {', '.join(result.segments)}"
    )
    if stop is not None:
        console.print(f"stopped ({stop.kind}): {stop.reason}", markup=False)
        if stop.kind == "ask" and stop.candidate is not None:
            console.print(f"fix awaiting approval: {stop.candidate.summary()}", markup=False)
            console.print(f"  resume with it:  rftfm supervise --resume {folder} --approve", markup=False)
            console.print(f"  or refuse it:    rftfm supervise --resume {folder} --reject", markup=False)
    for error in result.errors:
        console.print(f"supervisor error (fell back to observe): {error}", markup=False)
    console.print(f"journal: rftfm journal {result.run_id}")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


@friendly_errors
def journal(
    run: Annotated[str, typer.Argument(help="a supervised run (or one of its resumed segments)")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What the supervisor decided on a run and why: incidents, diagnoses, proposals, policy verdicts,
    applied, verified and undone fixes, escalations. Also queryable: `rftfm sql "SELECT * FROM journal"`."""
    from rich.table import Table

    st = open_store(store)
    run_id = st.resolve(run)
    frame = st.journal(run_id)
    if frame.empty:
        everything = st.journal()
        owners = (
            everything.loc[everything["segment_run"] == run_id, "run_id"].unique()
            if not everything.empty
            else []
        )
        if len(owners):
            frame = st.journal(str(owners[0]))
    if as_json:
        emit_json(json.loads(frame.to_json(orient="records")))
        return
    if frame.empty:
        console.print(f"{run_id}: no journal (the run was not supervised)")
        return
    table = Table(title=f"journal of {frame['run_id'].iloc[0]}")
    for col in ("step", "decision", "rule", "reason", "actions"):
        table.add_column(col, overflow="fold")
    for _, e in frame.iterrows():
        actions = json.loads(e["actions"] or "[]")
        table.add_row(
            str(e["step"]),
            str(e["decision"]),
            str(e["rule"] or ""),
            str(e["reason"] or ""),
            "; ".join(_action_text(a) for a in actions),
        )
    console.print(table)


def _action_text(action: dict[str, Any]) -> str:
    fields = ", ".join(f"{k}={v}" for k, v in action.items() if k != "kind" and v not in (None, False))
    return f"{action.get('kind')}({fields})"
