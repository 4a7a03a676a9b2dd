"""The supervisor in real (short) testbed runs: the closed loop recovers a run with its fault still present;
a crash in the supervisor never stops training; a fix with no checkpoint before the incident is refused and
journaled; `ask` stops with a resume command that carries on after approval; misaligned batching survives the
fallback verifier, which is undone and the run escalated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rftfm_agent.cli import app
from rftfm_agent.supervise.policy import Policy
from rftfm_agent.telemetry.store import Store

pytestmark = pytest.mark.slow

FAULT = "od_lr:easy@10:high"  # the learning rate jumps (×100) at step 10 of 30 and stays there
RECOVERED = 0.9  # share of the healthy control's held-out gain a recovered run keeps (DESIGN.md §6)


def _spec(name: str, fault: str | None = FAULT):  # type: ignore[no-untyped-def]
    from rftfm_agent.testbed.runner import RunSpec, parse_fault

    return RunSpec(name=name, fault=parse_fault(fault) if fault else None, eval_every=10)


def _decisions(store: Store, run_id: str) -> list[str]:
    return store.journal(run_id)["decision"].tolist()


def test_the_closed_loop_recovers_a_learning_rate_fault_that_stays_in_the_world(tmp_path: Path) -> None:
    from rftfm_agent.evals.closed_loop import supervised_testbed_run
    from rftfm_agent.faults.registry import hooks_for
    from rftfm_agent.testbed.runner import run

    store = Store(tmp_path / "store")
    control = run(_spec("control", None), store, tmp_path / "control")
    faulty = _spec("faulty")
    unsupervised = run(faulty, store, tmp_path / "faulty", hooks=hooks_for(faulty.fault))
    outcome = supervised_testbed_run(
        _spec("supervised"), store, tmp_path / "supervised", Policy.load(mode="auto")
    )
    first, healthy_end = control.heldout[0][1], control.heldout[-1][1]
    bar = first + RECOVERED * (healthy_end - first)
    assert unsupervised.heldout[-1][1] < bar  # the fault hurts: without the supervisor the gain is lost
    assert outcome.final_step == 30 and outcome.final_heldout is not None
    assert outcome.final_heldout >= bar
    decisions = _decisions(store, outcome.result.run_id)
    for expected in ("incident", "diagnosed", "proposed", "allowed", "applied", "verified"):
        assert expected in decisions, decisions
    assert decisions.index("applied") < decisions.index("verified")
    # The fault stays in the world: every segment was built with its injector.
    factor = store.manifest(unsupervised.run_id).config["fault/lr_factor"]
    assert factor > 1
    for segment in outcome.result.segments:
        assert store.manifest(segment).config.get("fault/lr_factor") == factor, segment
    assert outcome.steps_trained > 30  # the rolled-back steps were trained twice (wasted, and counted)


def test_a_rate_off_its_schedule_from_step_1_is_seen_and_the_configured_rate_restored(tmp_path: Path) -> None:
    """×0.1 from the first step: steady and smooth, so no jump rule and no band can tell; the schedule the job
    was configured with can (`lr_off_schedule`), and the configured rate is restored from the start."""
    from rftfm_agent.evals.closed_loop import supervised_testbed_run
    from rftfm_agent.faults.registry import hooks_for
    from rftfm_agent.testbed.runner import run

    low = "od_lr:hard@1:low"
    store = Store(tmp_path / "store")
    control = run(_spec("control", None), store, tmp_path / "control")
    faulty = _spec("faulty", low)
    unsupervised = run(faulty, store, tmp_path / "faulty", hooks=hooks_for(faulty.fault))
    outcome = supervised_testbed_run(
        _spec("supervised", low), store, tmp_path / "supervised", Policy.load(mode="auto")
    )
    journal = store.journal(outcome.result.run_id)
    incident = journal[journal["decision"] == "incident"].iloc[0]
    assert "lr_off_schedule" in incident["reason"] and int(incident["step"]) <= 4
    applied = journal[journal["decision"] == "applied"].iloc[0]
    configured = store.manifest(control.run_id).config["learning_rate"]
    assert json.loads(applied["actions"]) == [
        {"kind": "set_learning_rate", "value": pytest.approx(configured)}
    ]
    assert "verified" in journal["decision"].tolist()
    first, healthy_end = control.heldout[0][1], control.heldout[-1][1]
    assert unsupervised.heldout[-1][1] < first + RECOVERED * (healthy_end - first)  # the fault hurts
    assert outcome.final_heldout is not None
    assert outcome.final_heldout >= first + RECOVERED * (healthy_end - first)


def test_a_crash_in_the_supervisor_is_journaled_and_training_goes_on(tmp_path: Path) -> None:
    from rftfm_agent.evals.closed_loop import supervised_testbed_run

    def broken_planner(diagnosis: object, context: object) -> object:
        raise RuntimeError("planner bug")

    store = Store(tmp_path / "store")
    outcome = supervised_testbed_run(
        _spec("crash"), store, tmp_path / "work", Policy.load(mode="auto"), planner=broken_planner
    )
    assert outcome.final_step == 30  # trained to the end, unsupervised after the crash
    assert outcome.result.errors and "planner bug" in outcome.result.errors[0]
    journal = store.journal(outcome.result.run_id)
    assert "error" in journal["decision"].tolist() and "applied" not in journal["decision"].tolist()
    assert "falling back to observe" in journal.loc[journal.decision == "error", "reason"].iloc[0]
    assert outcome.supervisor is not None and outcome.supervisor.mode == "observe"


def test_without_a_checkpoint_before_the_incident_the_fix_is_refused_and_the_run_untouched(
    tmp_path: Path,
) -> None:
    """The supervisor's callback added to a trainer that saves no checkpoints (no `Supervisor.run` to
    restart it either): every fix is refused by the checkpoint rule and journaled; training goes on."""
    from rftfm_agent.evals.closed_loop import shared_models
    from rftfm_agent.faults.registry import hooks_for
    from rftfm_agent.supervise.supervisor import Supervisor
    from rftfm_agent.testbed.runner import build

    store = Store(tmp_path / "store")
    spec = _spec("no-checkpoint")
    trainer, recorder, _ = build(spec, store, tmp_path / "work", hooks=hooks_for(spec.fault))
    detector, diagnoser = shared_models()
    policy = Policy.load(mode="auto", on_escalate="continue")
    supervisor = Supervisor(
        policy=policy, detector=detector, diagnoser=diagnoser, store=store, task=spec.task, run_name=spec.name
    )
    supervisor.attach(trainer, recorder)
    trainer.train()
    recorder.flush(wait=True)
    learning_rates = store.steps(recorder.run_id)["learning_rate"].dropna().tolist()
    journal = store.journal(recorder.run_id)
    refused = journal[journal.decision == "refused"]
    assert not refused.empty and refused["rule"].iloc[0] == "checkpoint", journal[["decision", "rule"]]
    assert set(refused["rule"]) <= {"checkpoint", "mode"}  # after escalating it only reports (observe)
    assert "applied" not in journal["decision"].tolist() and "escalated" in journal["decision"].tolist()
    assert int(trainer.state.global_step) == 30 and not list((tmp_path / "work").glob("checkpoint-*"))
    factor = store.manifest(recorder.run_id).config["fault/lr_factor"]
    assert learning_rates[-1] == pytest.approx(factor * learning_rates[8], rel=1e-6)  # the fault, unfixed


def test_ask_mode_stops_with_a_resume_command_and_carries_on_after_approval(tmp_path: Path) -> None:
    cli = CliRunner()
    store, work = tmp_path / "store", tmp_path / "session"
    common = ["--store", str(store), "--json"]
    first = cli.invoke(app, ["supervise", "--fault", FAULT, "--mode", "ask", "--workdir", str(work), *common])
    assert first.exit_code == 0, first.output
    stopped = json.loads(first.output)
    assert stopped["stopped"] == "ask" and stopped["final_step"] < 30
    assert stopped["resume_command"] == f"rftfm supervise --resume {work} --approve"
    st = Store(store)
    assert _decisions(st, stopped["run"])[-1] == "asked"  # nothing applied before a person says so
    resumed = cli.invoke(app, ["supervise", "--resume", str(work), "--approve", *common])
    assert resumed.exit_code == 0, resumed.output
    done = json.loads(resumed.output)
    assert done["final_step"] == 30 and done["run"] == stopped["run"]
    decisions = _decisions(st, stopped["run"])
    assert decisions[decisions.index("asked") + 1 :][:2] == ["approved", "applied"]
    again = cli.invoke(app, ["supervise", "--resume", str(work), "--approve", *common])
    assert again.exit_code != 0 and "not waiting for an approval" in again.output


def test_misaligned_batching_survives_the_fallback_verifier_which_is_undone_and_the_run_escalated(
    tmp_path: Path,
) -> None:
    """`mini-s61-0054` (rewards attached to the wrong completions from step 1): the misalignment play swaps
    in the registered fallback verifier first, because a noisy verifier reads the same (`mini-s61-0029`);
    here the bug is in the batching, which the swap does not touch, so the alarm stays, the swap is undone
    and the run escalated — never kept as a fix."""
    from rftfm_agent.evals.closed_loop import supervised_testbed_run
    from rftfm_agent.testbed.runner import RunSpec, parse_fault

    spec = RunSpec(
        name="misaligned",
        task="arith_a",
        seed=6100007,
        steps=12,
        batch_size=32,
        learning_rate=3e-4,
        eval_every=10,
        fault=parse_fault("ca_group_misalign:easy@1"),
    )
    store = Store(tmp_path / "store")
    policy = Policy.load(mode="auto", allow_reward_changes=True, allow_data_changes=True)
    outcome = supervised_testbed_run(spec, store, tmp_path / "run", policy)
    journal = store.journal(outcome.result.run_id)
    decisions = journal["decision"].tolist()
    assert "applied" in decisions and "undone" in decisions and decisions[-1] == "escalated", decisions
    assert decisions.index("applied") < decisions.index("undone") and "verified" not in decisions
    applied = json.loads(journal[journal["decision"] == "applied"].iloc[0]["actions"])
    assert [a["kind"] for a in applied] == ["fallback_reward"]
