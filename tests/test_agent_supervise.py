"""The agent over real (short) testbed runs: the graph drives the supervisor (`supervise --agent`), and
triage applies, resumes and verifies a fix on a supervised run stopped for approval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_helpers import ScriptedChatModel
from langchain_core.messages import AIMessage
from typer.testing import CliRunner

from rftfm_agent.agent.supervisor_planner import agent_planner
from rftfm_agent.cli import app
from rftfm_agent.diagnose.hypothesis import Diagnosis, Hypothesis
from rftfm_agent.remediate.planner import PlanContext, make_plan
from rftfm_agent.telemetry.store import Store

FAULT = "od_lr:easy@10:high"
OFFLINE = {"RFTFM_LLM_BASE_URL": "", "RFTFM_LLM_CONFIG": "/nonexistent/llm.toml"}


def _diagnosis(fault_type: str) -> Diagnosis:
    return Diagnosis(
        run="r",
        anchor_step=10,
        mode="band",
        unknown=False,
        hypotheses=[Hypothesis(family="OD", type=fault_type, probability=0.9)],
    )


def test_agent_planner_is_the_playbook_without_an_llm_and_lets_an_llm_reorder_only() -> None:
    # KL blow-up with the sampler's temperature changed: the playbook has two fixes to order.
    diagnosis = _diagnosis("od_kl")
    context = PlanContext(
        configured={"learning_rate": 1e-4, "beta": 0.04, "temperature": 1.0},
        current={"learning_rate": 1e-4, "beta": 0.04, "temperature": 0.3},
        symptoms=["entropy_collapse_kl_explosion"],
    )
    playbook = make_plan(diagnosis, context)
    assert agent_planner()(diagnosis, context) == playbook
    fixes = [c.id for c in playbook.candidates if not c.escalates]
    assert len(fixes) >= 2
    second = fixes[1]
    llm = ScriptedChatModel(replies=[AIMessage(json.dumps({"candidate": second, "explanation": "x"}))])
    plan = agent_planner(llm)(diagnosis, context)
    assert plan.candidates[0].id == second and sorted(c.id for c in plan.candidates) == sorted(
        c.id for c in playbook.candidates
    )
    rogue = ScriptedChatModel(replies=[AIMessage('{"candidate": "set_learning_rate=1"}')])
    assert agent_planner(rogue)(diagnosis, context) == playbook  # not an id of the plan: ignored


@pytest.mark.slow
def test_triage_applies_resumes_and_verifies_a_fix_on_a_stopped_supervised_run(tmp_path: Path) -> None:
    runner, store, work = CliRunner(), tmp_path / "store", tmp_path / "work"
    common = ["--store", str(store), "--json"]
    out = runner.invoke(
        app, ["supervise", "--fault", FAULT, "--mode", "ask", "--workdir", str(work), *common], env=OFFLINE
    )
    assert out.exit_code == 0, out.output
    stopped = json.loads(out.stdout)
    assert stopped["stopped"] == "ask"
    run = stopped["run"]
    out = runner.invoke(
        app,
        ["triage", run, "--workdir", str(work), "--act", "--out", str(tmp_path / "r"), *common],
        env=OFFLINE,
    )
    assert out.exit_code == 0, out.output
    waiting = json.loads(out.stdout)
    assert "waiting_for_approval" in waiting and waiting["waiting_for_approval"]["candidate"].startswith(
        "od_lr"
    )
    out = runner.invoke(app, ["triage", "--thread", waiting["thread"], "--approve", *common], env=OFFLINE)
    assert out.exit_code == 0, out.output
    decisions = Store(store).journal(run)["decision"].tolist()
    assert decisions.index("approved") < decisions.index("fix_written") < decisions.index("applied")
    assert "verified" in decisions[decisions.index("fix_written") :], decisions
    report = Path(json.loads(out.stdout)["report"]).read_text()
    assert "verification: verified" in report and "resumed:" in report


@pytest.mark.slow
def test_supervise_with_the_agent_planner_recovers_like_the_playbook(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        app,
        [
            "supervise",
            "--fault",
            FAULT,
            "--mode",
            "auto",
            "--agent",
            "--workdir",
            str(tmp_path / "w"),
            "--store",
            str(tmp_path / "s"),
            "--json",
        ],
        env=OFFLINE,
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout[out.stdout.index("{") :])
    decisions = Store(tmp_path / "s").journal(result["run"])["decision"].tolist()
    assert "applied" in decisions and "verified" in decisions and result["final_step"] == 30
