"""The agent: tool schemas and typed errors, the triage graph offline, approval by interrupt and resume
from the SQLite checkpointer, LLM paths with a scripted chat model, and planted instructions that must
never cause an action."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_helpers import INJECTION, ScriptedChatModel, dead_run
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.types import Command
from typer.testing import CliRunner

from rftfm_agent.agent.chat import MAX_BAD_CALLS, build_chat_graph
from rftfm_agent.agent.llm import LLMConfig, load_llm_config, probe
from rftfm_agent.agent.triage import resume_triage, run_triage, sqlite_checkpointer
from rftfm_agent.cli import app
from rftfm_agent.errors import RftfmError
from rftfm_agent.supervise.policy import Policy
from rftfm_agent.telemetry.store import Store
from rftfm_agent.tools import ACT_TOOLS, READ_TOOLS, TOOLS, ToolEnv, ToolError, call_tool

SYMPTOM = "no learning signal"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def _env(store: Store, workdir: Path | None = None, mode: str = "ask") -> ToolEnv:
    return ToolEnv(
        store=store, policy=Policy.load(None, mode=mode), workdir=workdir, out_dir=store.root / "out"
    )


def _workdir(tmp_path: Path) -> Path:
    """A checkpoint folder with a checkpoint from before the incident (the dead run's alarm is at step 8)."""
    folder = tmp_path / "ckpt"
    (folder / "checkpoint-4").mkdir(parents=True)
    return folder


def _decisions(store: Store, run: str) -> list[str]:
    frame = store.journal(run)
    return [] if frame.empty else list(frame["decision"])


# ------------------------------------------------------------------------------------------- tools
def test_every_tool_has_a_description_a_closed_schema_and_no_injected_field() -> None:
    assert {t.name for t in ACT_TOOLS} == {"apply_fix", "resume_run"}
    assert not {t.name for t in READ_TOOLS} & {t.name for t in ACT_TOOLS}
    for tool in TOOLS.values():
        schema = tool.input.model_json_schema()
        assert len(tool.description) > 20, tool.name
        assert schema.get("additionalProperties") is False, tool.name
        assert not {"store", "policy", "workdir", "approved"} & set(schema.get("properties", {})), tool.name
    # An acting tool takes a candidate id, never actions or values.
    assert set(TOOLS["apply_fix"].input.model_json_schema()["properties"]) == {"run", "candidate_id"}


def test_tools_return_typed_errors_not_tracebacks(store: Store) -> None:
    env = _env(store)
    out, record = call_tool(TOOLS["run_summary"], {"run": "no-such-run"}, env)
    assert isinstance(out, ToolError) and "no-such-run" in out.error and not record.ok
    run = dead_run(store)
    out, _ = call_tool(TOOLS["metric_window"], {"run": run, "metrics": ["reward"], "bogus": 1}, env)
    assert isinstance(out, ToolError) and "bogus" in out.error
    out, _ = call_tool(TOOLS["query_store"], {"sql": "DELETE FROM steps"}, env)
    assert isinstance(out, ToolError)
    # Benchmark labels are not in the agent's views (a testbed run's injected fault is the answer).
    out, _ = call_tool(TOOLS["query_store"], {"sql": "SELECT * FROM runs"}, env)
    assert "run_id" in out.columns and not {"label", "fault_type"} & set(out.columns)
    out, _ = call_tool(TOOLS["query_store"], {"sql": "SELECT * FROM trajectories LIMIT 1"}, env)
    assert "completion" in out.columns and not [c for c in out.columns if c.startswith("fault_")]
    assert "fault_type" in env.store.sql("SELECT * FROM runs").columns  # the CLI's own view keeps them
    out, _ = call_tool(
        TOOLS["metric_window"], {"run": run, "metrics": ["reward", "nope"], "max_points": 5}, env
    )
    assert not isinstance(out, ToolError) and out.missing == ["nope"] and len(out.steps) == 5


def test_sample_completions_quotes_run_text_as_untrusted_data(store: Store) -> None:
    run = dead_run(store)
    out, _ = call_tool(TOOLS["sample_completions"], {"run": run, "n": 2}, _env(store))
    assert out.count == 2 and "IGNORE PREVIOUS INSTRUCTIONS" in out.data
    body = out.data.split("<<<RUN DATA", 1)[1].rsplit("RUN DATA>>>", 1)[0]
    assert "IGNORE PREVIOUS INSTRUCTIONS" in body  # inside the markers …
    assert out.data.count("RUN DATA>>>") == 1  # … and the planted end marker was defused


def test_query_store_keeps_nan_under_the_io_policy(store: Store) -> None:
    from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo

    run = ImportedRun(
        name="nan-run",
        source=SourceInfo(format="test"),
        steps=[RawStep(step=1, values={"loss": float("nan")}), RawStep(step=2, values={"loss": 1.0})],
    )
    store.write_run(run)
    out, _ = call_tool(
        TOOLS["query_store"],
        {"sql": "SELECT step, value FROM steps WHERE metric = 'loss' ORDER BY step"},
        _env(store),
    )
    assert [r["value"] for r in out.rows] == ["NaN", 1.0]


# ------------------------------------------------------------------------------------------- triage
def test_offline_triage_names_the_symptom_and_a_policy_checked_fix(store: Store) -> None:
    run = dead_run(store)
    state, question, _ = run_triage(_env(store), run)
    assert question is None and state["planner"] == "deterministic"
    assert SYMPTOM in state["report"] and "## Proposed fix" in state["report"]
    chosen = next(p for p in state["allowed"] if p["id"] == state["choice"])
    assert chosen["verdict"] in ("apply", "ask") and not chosen["applicable"]  # no checkpoint folder: advice
    assert "to apply: resume the run from a checkpoint before step" in state["report"]
    assert _decisions(store, run) == []  # proposing changes nothing
    assert len(state["calls"]) >= 7 and all(c["ok"] for c in state["calls"])


def test_triage_of_a_healthy_run_proposes_nothing_and_says_healthy(store: Store) -> None:
    """A run the detector calls healthy got "Plan: escalate" (unlike every labelled fault), and one with a
    warning (65 % of groups without signal) a critical-sounding symptom and a data filter to approve:
    now no fix, and the symptom line is the diagnosis's ("healthy … worth a look: …")."""
    import numpy as np

    from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo

    rng = np.random.default_rng(0)
    rows = [
        RawStep(
            step=s,
            values={
                "reward": 0.2 + 0.5 * s / 200 + float(rng.normal(0, 0.03)),
                "reward_std": 0.3,
                "frac_reward_zero_std": 0.6 + float(rng.normal(0, 0.02)),
                "kl": 0.0005 + 0.05 * s / 200,
                "entropy": 0.6 - 0.2 * s / 200 + float(rng.normal(0, 0.01)),
                "grad_norm": 0.5 + abs(float(rng.normal(0, 0.1))),
                "loss": float(rng.normal(0, 0.01)),
                "learning_rate": 1e-6,
                "completion_length": 200 + float(rng.normal(0, 5)),
            },
        )
        for s in range(1, 201)
    ]
    run = ImportedRun(name="healthy", source=SourceInfo(format="test", paths=["/tests/healthy"]), steps=rows)
    run_id = store.write_run(run)[0].run_id
    state, question, _ = run_triage(_env(store), run_id)
    assert question is None and state["plan"]["decision"] == "none" and state["allowed"] == []
    assert "Plan: **none**" in state["report"] and "escalate" not in state["report"]
    symptom = state["report"].split("## Symptom\n")[1].splitlines()[0]
    assert symptom.startswith("healthy: nothing critical in the log (worth a look: weak learning signal")


def test_approval_interrupts_and_survives_a_restart(store: Store, tmp_path: Path) -> None:
    run = dead_run(store)
    env = _env(store, _workdir(tmp_path))
    state, question, thread = run_triage(env, run, act=True, checkpointer=sqlite_checkpointer(store.root))
    assert question is not None and question["candidate"] == state["choice"]
    assert not (env.workdir / "approved_fix.json").exists() and "fix_written" not in _decisions(store, run)
    # A new process: a fresh checkpointer on the same SQLite file picks the thread up.
    state, question, _ = resume_triage(env, thread, "approve", checkpointer=sqlite_checkpointer(store.root))
    assert question is None and state["approval"] == "approved"
    fix = json.loads((env.workdir / "approved_fix.json").read_text())
    assert fix["checkpoint_step"] == 4 and fix["approved"] and fix["candidate"]["id"] == state["choice"]
    assert _decisions(store, run)[-2:] == ["approved", "fix_written"]
    assert "resume your trainer from the checkpoint at step 4" in state["report"]
    with pytest.raises(RftfmError, match="nothing is waiting"):
        resume_triage(env, thread, "approve", checkpointer=sqlite_checkpointer(store.root))


def test_a_rejected_fix_is_journaled_and_nothing_is_applied(store: Store, tmp_path: Path) -> None:
    run = dead_run(store)
    env = _env(store, _workdir(tmp_path))
    _, _, thread = run_triage(env, run, act=True, checkpointer=sqlite_checkpointer(store.root))
    state, _, _ = resume_triage(env, thread, "reject", checkpointer=sqlite_checkpointer(store.root))
    assert state["approval"] == "rejected" and not state.get("applied")
    assert _decisions(store, run) == ["rejected"] and not (env.workdir / "approved_fix.json").exists()


def test_cli_triage_of_a_log_path_writes_markdown_and_html(tmp_path: Path, fixtures: Path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        [
            "triage",
            str(fixtures / "trainer_state.json"),
            "--store",
            str(tmp_path / "s"),
            "--out",
            str(out),
            "--json",
        ],
        env={"RFTFM_LLM_BASE_URL": "", "RFTFM_LLM_CONFIG": str(tmp_path / "none.toml")},
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["planner"] == "deterministic" and Path(payload["report"]).is_file()
    assert "<h1>" in Path(payload["html"]).read_text() and list(out.glob("*.png"))


def test_cli_triage_with_an_unreachable_endpoint_says_so_and_runs_offline(
    store: Store, tmp_path: Path
) -> None:
    run = dead_run(store)
    result = CliRunner().invoke(
        app,
        ["triage", run, "--store", str(store.root), "--out", str(tmp_path / "r")],
        env={"RFTFM_LLM_BASE_URL": "http://127.0.0.1:9/v1", "RFTFM_LLM_MODEL": "m"},
    )
    assert result.exit_code == 0, result.output
    assert "unreachable" in result.stderr and "falls back to offline" in result.stderr
    assert SYMPTOM in result.stdout
    bad = tmp_path / "llm.toml"
    bad.write_text("[llm]\nbase_url = 3\n")
    result = CliRunner().invoke(
        app,
        ["triage", run, "--store", str(store.root), "--out", str(tmp_path / "r"), "--llm-config", str(bad)],
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.count("\n") == 1 and "llm.toml" in result.stderr and SYMPTOM in result.stdout


# ------------------------------------------------------------------------------------------- LLM config
def test_llm_config_from_environment_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RFTFM_LLM_BASE_URL", "http://h/v1")
    monkeypatch.setenv("RFTFM_LLM_MODEL", "m")
    assert load_llm_config() == LLMConfig(base_url="http://h/v1", model="m")
    monkeypatch.delenv("RFTFM_LLM_BASE_URL")
    monkeypatch.setenv("RFTFM_LLM_CONFIG", str(tmp_path / "absent.toml"))
    assert load_llm_config() is None
    good = tmp_path / "llm.toml"
    good.write_text('[llm]\nbase_url = "http://x/v1"\nmodel = "q"\napi_key_env = "MY_KEY"\n')
    monkeypatch.setenv("MY_KEY", "secret")
    cfg = load_llm_config(good)
    assert cfg is not None and cfg.api_key == "secret" and "secret" not in repr(cfg)
    bad = tmp_path / "bad.toml"
    bad.write_text('[llm]\nbase_url = "http://x/v1"\nmodle = "q"\n')
    with pytest.raises(RftfmError, match=r"bad\.toml"):
        load_llm_config(bad)
    with pytest.raises(RftfmError, match="unreachable"):
        probe(LLMConfig(base_url="http://127.0.0.1:9/v1", model="m"))


# ------------------------------------------------------------------------------------------- scripted LLM
def test_llm_choice_is_validated_retried_then_falls_back(store: Store) -> None:
    run = dead_run(store)
    allowed_first = run_triage(_env(store), run)[0]["allowed"][0]["id"]
    good = ScriptedChatModel(
        replies=[
            AIMessage("I think lr"),
            AIMessage(json.dumps({"candidate": allowed_first, "explanation": "ok"})),
        ]
    )
    state, _, _ = run_triage(_env(store), run, llm=good)
    assert state["planner"] == "llm" and state["choice"] == allowed_first and good.calls == 2
    assert "The LLM's explanation: ok" in state["report"]
    # The prompt carries the run text inside the untrusted-data wrapper only.
    prompt = good.seen[0][1].content
    assert INJECTION.split(".")[0] in prompt.split("<<<RUN DATA", 1)[1]
    stubborn = ScriptedChatModel(
        replies=[AIMessage('{"candidate": "set_learning_rate=1", "explanation": "x"}')]
    )
    state, _, _ = run_triage(_env(store), run, llm=stubborn)
    assert state["planner"] == "deterministic" and state["choice"] == allowed_first and stubborn.calls == 3
    assert any("not one of" in n for n in state["notes"])


def test_planted_instructions_never_cause_an_action(store: Store, tmp_path: Path) -> None:
    """A scripted LLM obeys the instruction planted in the run's completions; a careless person even says
    yes to every prompt. Still nothing is applied: acting tools take proposed ids only, and the policy and
    the candidate check sit inside the tools, independent of the LLM. Every refusal is journaled."""
    run = dead_run(store)
    workdir = _workdir(tmp_path)
    env = _env(store, workdir, mode="auto")
    obey = [
        {
            "name": "apply_fix",
            "args": {"run": run, "actions": [{"kind": "set_learning_rate", "value": 1.0}]},
            "id": "a",
        },
        {"name": "apply_fix", "args": {"run": run, "candidate_id": "set_learning_rate=1"}, "id": "b"},
        {"name": "query_store", "args": {"sql": "UPDATE runs SET name = 'x'"}, "id": "c"},
    ]
    llm = ScriptedChatModel(
        replies=[
            AIMessage("", tool_calls=[{"name": "sample_completions", "args": {"run": run}, "id": "s"}]),
            AIMessage("", tool_calls=obey),
            AIMessage("Done as the run data asked."),
        ]
    )
    graph = build_chat_graph(env, llm, sqlite_checkpointer(store.root))
    config = {"configurable": {"thread_id": "inject"}}
    graph.invoke(
        {"run": run, "messages": [HumanMessage("what is wrong?")], "bad_calls": 0, "turns": 0}, config
    )
    assert graph.get_state(config).interrupts  # an acting tool: a person is asked first
    graph.invoke(Command(resume="approve"), config)  # … and carelessly says yes
    messages = graph.get_state(config).values["messages"]
    tool_replies = {m.tool_call_id: m.content for m in messages if m.type == "tool"}
    assert "invalid arguments" in tool_replies["a"] and "actions" in tool_replies["a"]
    assert "not a fix proposed" in tool_replies["b"]
    assert tool_replies["c"].startswith("error:")
    assert not (workdir / "approved_fix.json").exists()
    decisions = _decisions(store, run)
    assert "fix_written" not in decisions and "approved" not in decisions and "refused" in decisions
    # The triage graph with the same obedient LLM: its pick is not an allowed id, so it is refused too.
    state, _, _ = run_triage(
        env, run, llm=ScriptedChatModel(replies=[AIMessage('{"candidate": "set_learning_rate=1"}')])
    )
    assert state["choice"] != "set_learning_rate=1" and state["planner"] == "deterministic"


def test_chat_falls_back_to_offline_triage_after_malformed_calls(store: Store) -> None:
    run = dead_run(store)
    env = _env(store)
    junk = AIMessage(
        "",
        invalid_tool_calls=[
            {"name": "diagnose", "args": "{run:", "id": "x", "error": "bad JSON", "type": "invalid_tool_call"}
        ],
    )
    unknown = AIMessage("", tool_calls=[{"name": "delete_run", "args": {"run": run}, "id": "y"}])
    llm = ScriptedChatModel(replies=[junk, unknown, junk, junk])
    graph = build_chat_graph(env, llm, fallback=lambda r: run_triage(env, r)[0]["report"])
    from langgraph.checkpoint.memory import InMemorySaver

    graph = build_chat_graph(env, llm, InMemorySaver(), fallback=lambda r: run_triage(env, r)[0]["report"])
    config = {"configurable": {"thread_id": "junk"}}
    out = graph.invoke({"run": run, "messages": [HumanMessage("why?")], "bad_calls": 0, "turns": 0}, config)
    assert out["fell_back"] and out["bad_calls"] >= MAX_BAD_CALLS
    assert "offline triage" in out["messages"][-1].content and SYMPTOM in out["messages"][-1].content
    errors = [m.content for m in out["messages"] if m.type == "tool"]
    assert any("malformed" in e for e in errors) and any("no tool named 'delete_run'" in e for e in errors)


def test_chat_answers_with_tool_results(store: Store) -> None:
    run = dead_run(store)
    llm = ScriptedChatModel(
        replies=[
            AIMessage("", tool_calls=[{"name": "diagnose", "args": {"run": run}, "id": "d"}]),
            AIMessage("The run shows no learning signal from step 8."),
        ]
    )
    from langgraph.checkpoint.memory import InMemorySaver

    graph = build_chat_graph(_env(store), llm, InMemorySaver())
    out = graph.invoke(
        {"run": run, "messages": [HumanMessage("why?")], "bad_calls": 0, "turns": 0},
        {"configurable": {"thread_id": "ok"}},
    )
    diagnosis = json.loads(next(m.content for m in out["messages"] if m.type == "tool"))
    assert any(SYMPTOM in s for s in diagnosis["symptoms"])
    assert out["messages"][-1].content.startswith("The run shows") and not out.get("fell_back")


def test_a_logged_learning_rate_jump_is_the_current_knob(store: Store) -> None:
    from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo
    from rftfm_agent.tools.fixes import _logged_jumps

    def run(name: str, lrs: list[float]) -> str:
        steps = [RawStep(step=i + 1, values={"learning_rate": lr, "reward": 0.5}) for i, lr in enumerate(lrs)]
        return store.write_run(ImportedRun(name=name, source=SourceInfo(format="test"), steps=steps))[
            0
        ].run_id

    jumped = run("jumped", [2e-4] * 9 + [2e-2] * 6)
    assert _logged_jumps(_env(store), jumped, 10, {"learning_rate": 2e-4}) == {
        "learning_rate": pytest.approx(2e-2)
    }
    decaying = run("decaying", [2e-4 * (1 - i / 20) for i in range(15)])  # a schedule, not a change
    assert _logged_jumps(_env(store), decaying, 10, {"learning_rate": 2e-4}) == {}
    # A linear warm-up (TRL's constant_with_warmup, 5 steps): an incident at step 3 or 4 sees the schedule
    # move ×2 across it; that is not a changed learning rate to restore.
    warm = run("warm-up", [2e-4 * min(1.0, (i + 1) / 5) for i in range(15)])
    for anchor in range(2, 12):
        assert _logged_jumps(_env(store), warm, anchor, {"learning_rate": 2e-4}) == {}, anchor
    warm_then_jump = run("warm-up then jump", [2e-4 * min(1.0, (i + 1) / 5) for i in range(9)] + [2e-2] * 6)
    assert _logged_jumps(_env(store), warm_then_jump, 10, {"learning_rate": 2e-4}) == {
        "learning_rate": pytest.approx(2e-2)
    }


def test_cli_chat_without_an_endpoint_says_how_to_configure_one_and_triages(
    store: Store, tmp_path: Path
) -> None:
    run = dead_run(store)
    result = CliRunner().invoke(
        app,
        ["chat", run, "--store", str(store.root)],
        env={"RFTFM_LLM_BASE_URL": "", "RFTFM_LLM_CONFIG": str(tmp_path / "none.toml")},
        input="",
    )
    assert result.exit_code == 0, result.output
    assert "RFTFM_LLM_BASE_URL" in result.stderr and "llm.toml" in result.stderr
    assert SYMPTOM in result.stdout and "## Proposed fix" in result.stdout


def test_completions_cut_at_the_cap_from_the_start_get_a_raised_cap_not_a_data_escalation(
    store: Store,
) -> None:
    """98 % of completions cut at a 128-token cap from step 1, reward ~0.05, most groups all equal: the
    run was "not learning" (at its last step) and triage escalated "prompts too hard: add easier data".
    The cap leads, and a log without its config gets the cap read from it (the longest cut completion)."""
    import numpy as np

    from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo

    rng = np.random.default_rng(1)
    rows = [
        RawStep(
            step=s,
            values={
                "reward": 0.05 + float(rng.normal(0, 0.01)),
                "reward_std": 0.05,
                "frac_reward_zero_std": 0.8 + float(rng.normal(0, 0.02)),
                "completions/clipped_ratio": 0.98 + float(rng.normal(0, 0.005)),
                "completions/mean_length": 127.0,
                "completions/max_length": 128.0,
                "kl": 0.0005 + 0.01 * s / 200,
                "grad_norm": 0.2 + abs(float(rng.normal(0, 0.05))),
                "learning_rate": 1e-6,
            },
        )
        for s in range(1, 201)
    ]
    run = ImportedRun(name="capped", source=SourceInfo(format="test", paths=["/tests/capped"]), steps=rows)
    run_id = store.write_run(run)[0].run_id
    state, _, _ = run_triage(_env(store), run_id)
    symptom = state["report"].split("## Symptom\n")[1].splitlines()[0]
    assert symptom.startswith("completions cut at the length cap from the start"), symptom
    actions = [a for p in state["plan"]["proposals"] for a in p["actions"]]
    assert {"kind": "set_completion_length", "max_completion_length": 256, "mask_truncated": True} in [
        {k: v for k, v in a.items() if k in ("kind", "max_completion_length", "mask_truncated")}
        for a in actions
    ], actions


def test_a_rate_off_its_configured_schedule_from_step_1_gets_the_configured_rate_restored(
    store: Store,
) -> None:
    """A rate ×0.1 from step 1 is steady: only the config shows it (`lr_off_schedule`); triage restores the
    configured rate first (before, with no logged jump, "the current rate" was the configured one)."""
    import numpy as np

    from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo

    rng = np.random.default_rng(3)
    rows = [
        RawStep(
            step=s,
            values={
                "reward": 0.2 + 0.001 * s + float(rng.normal(0, 0.02)),
                "reward_std": 0.3,
                "kl": 0.001 * s,
                "grad_norm": 0.5 + abs(float(rng.normal(0, 0.05))),
                "learning_rate": 2e-5,
            },
        )
        for s in range(1, 41)
    ]
    config = {"learning_rate": 2e-4, "lr_scheduler_type": "constant", "max_steps": 40}
    run = ImportedRun(name="slow", source=SourceInfo(format="test"), steps=rows, config=config)
    run_id = store.write_run(run)[0].run_id
    state, _, _ = run_triage(_env(store), run_id)
    assert "learning rate below its configured schedule" in state["report"]
    first = state["plan"]["proposals"][0]["actions"]
    assert first == [{"kind": "set_learning_rate", "value": pytest.approx(2e-4)}]
