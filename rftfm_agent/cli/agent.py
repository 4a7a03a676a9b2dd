"""`rftfm triage` (one incident, the whole graph, a report) and `rftfm chat` (an LLM over the tools)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rftfm_agent.cli.common import (
    JsonOpt,
    MapOpt,
    StoreOpt,
    console,
    emit_json,
    err_console,
    friendly_errors,
    open_store,
    resolve_runs,
)
from rftfm_agent.errors import RftfmError

PolicyOpt = Annotated[Path | None, typer.Option(help="safety policy (TOML); default: the built-in one")]
ModeOpt = Annotated[str | None, typer.Option(help="observe | ask | auto (default: the policy file's)")]
WorkdirOpt = Annotated[
    Path | None,
    typer.Option(
        help="the run's checkpoint folder (a TRL output_dir or a supervised session): fixes can be "
        "applied only with one"
    ),
]
LlmConfigOpt = Annotated[Path | None, typer.Option("--llm-config", help="LLM endpoint config (TOML)")]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="never call an LLM: the deterministic planner")]


def make_env(
    store: Any, policy: Path | None, mode: str | None, workdir: Path | None, out: Path | None
) -> Any:
    from rftfm_agent.supervise.policy import Policy
    from rftfm_agent.tools import ToolEnv

    if mode is not None and mode not in ("observe", "ask", "auto"):
        raise RftfmError(f"--mode must be observe, ask or auto, not {mode!r}")
    if workdir is not None and not workdir.is_dir():
        raise RftfmError(f"{workdir}: no such checkpoint folder")
    resumer = None
    if workdir is not None:
        from rftfm_agent.cli.supervise import resume_session

        def resumer(folder: Path, candidate: Any) -> dict[str, Any]:
            return resume_session(folder, candidate, store)

    return ToolEnv(
        store=store, policy=Policy.load(policy, mode=mode), workdir=workdir, out_dir=out, resumer=resumer
    )


def connect_llm(llm_config: Path | None, offline: bool) -> tuple[Any, str]:
    """(chat model or None, one line saying which). An unreachable endpoint: a warning, then offline."""
    if offline:
        return None, "offline (--offline): deterministic planner"
    from rftfm_agent.agent.llm import chat_model, load_llm_config, probe

    try:
        config = load_llm_config(llm_config)
        if config is None:
            return None, "offline (no LLM configured): deterministic planner"
        probe(config)
    except RftfmError as exc:
        err_console.print(
            f"warning: {exc}; triage falls back to offline", markup=False, highlight=False, soft_wrap=True
        )
        return None, f"offline ({exc}): deterministic planner"
    return chat_model(config), f"LLM {config.describe()}"


@friendly_errors
def triage(
    target: Annotated[
        str | None, typer.Argument(metavar="RUN|PATH", help="stored run, or a log to import")
    ] = None,
    store: StoreOpt = None,
    policy: PolicyOpt = None,
    mode: ModeOpt = None,
    workdir: WorkdirOpt = None,
    act: Annotated[
        bool, typer.Option("--act", help="go on to apply, resume and verify (needs --workdir)")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="report folder (default: ./triage/<run>)")] = None,
    thread: Annotated[str | None, typer.Option(help="a triage waiting for approval, to answer")] = None,
    approve: Annotated[bool, typer.Option(help="with --thread: approve the fix")] = False,
    reject: Annotated[bool, typer.Option(help="with --thread: reject it (journaled)")] = False,
    llm_config: LlmConfigOpt = None,
    offline: OfflineOpt = False,
    key_map: MapOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Triage a run: detect, diagnose, compare fingerprints, propose a policy-checked fix; write a Markdown
    and HTML report with plots. Works offline; with an LLM configured, the LLM picks among the fixes the
    policy allowed and explains. With --act and --workdir it asks before applying, then resumes and
    verifies."""
    from rftfm_agent.agent.triage import pending_setup, resume_triage, run_triage, sqlite_checkpointer

    st = open_store(store)
    llm, which = connect_llm(llm_config, offline)
    checkpointer = sqlite_checkpointer(st.root)
    if thread is not None:
        if approve == reject:
            raise RftfmError("--thread goes with exactly one of --approve or --reject")
        setup = pending_setup(thread, checkpointer)
        env = make_env(
            st,
            _path(setup.get("policy")),
            setup.get("mode"),
            _path(setup.get("workdir")),
            _path(setup.get("out")),
        )
        results = [
            resume_triage(env, thread, "approve" if approve else "reject", llm=llm, checkpointer=checkpointer)
        ]
    else:
        if target is None:
            raise RftfmError("give a run id or a log path (or --thread to answer a waiting triage)")
        if act and workdir is None:
            raise RftfmError("--act needs --workdir (the run's checkpoint folder)")
        runs = resolve_runs(st, [target], key_map)
        results = []
        for run_id in runs:
            folder = out or Path("triage") / run_id
            setup = {"policy": _str(policy), "mode": mode, "workdir": _str(workdir), "out": str(folder)}
            env = make_env(st, policy, mode, workdir, folder)
            result = run_triage(env, run_id, llm=llm, act=act, checkpointer=checkpointer, setup=setup)
            if result[1] is not None and act and sys.stdin.isatty() and not as_json:
                answer = typer.confirm(
                    f"apply {result[1]['summary']} ({result[1]['policy']})?", default=False
                )
                result = resume_triage(
                    env, result[2], "approve" if answer else "reject", llm=llm, checkpointer=checkpointer
                )
            results.append(result)
    _deliver(results, st, which, as_json)


def _deliver(results: list[Any], st: Any, which: str, as_json: bool) -> None:
    from rftfm_agent.agent.report import to_html
    from rftfm_agent.cli.common import write_report

    payload = []
    for state, question, thread_id in results:
        folder = Path((state.get("setup") or {}).get("out") or Path("triage") / state["run"])
        entry: dict[str, Any] = {"run": state["run"], "thread": thread_id, "planner": state.get("planner")}
        if question is not None:
            entry["waiting_for_approval"] = question
            entry["approve_command"] = f"rftfm triage --store {st.root} --thread {thread_id} --approve"
        if state.get("report"):
            md, html_path = folder / "report.md", folder / "report.html"
            folder.mkdir(parents=True, exist_ok=True)
            write_report(md, lambda md=md, s=state: md.write_text(s["report"]))
            write_report(html_path, lambda h=html_path, s=state: h.write_text(to_html(s["report"], s["run"])))
            entry.update(
                report=str(md),
                html=str(html_path),
                diagnosis=[h["type"] for h in (state.get("diagnosis") or {}).get("hypotheses", [])],
                symptoms=(state.get("diagnosis") or {}).get("symptoms", []),
                fix=state.get("choice"),
                seconds=round(float(state.get("seconds") or 0.0), 3),
                tool_calls=len(state.get("calls") or []),
            )
        payload.append(entry)
    if as_json:
        emit_json(payload[0] if len(payload) == 1 else payload)
        return
    console.print(f"[dim]{which}[/dim]")
    for entry, (state, question, _) in zip(payload, results, strict=True):
        if state.get("report"):
            console.print(state["report"], markup=False, highlight=False)
            console.print(f"report: {entry['report']} · {entry['html']}", markup=False)
        if question is not None:
            console.print(f"waiting for approval: {question['summary']} ({question['policy']})", markup=False)
            console.print(f"  approve: {entry['approve_command']}", markup=False)
            console.print(
                f"  reject:  {entry['approve_command'].replace('--approve', '--reject')}", markup=False
            )


def _path(x: str | None) -> Path | None:
    return Path(x) if x else None


def _str(x: Path | None) -> str | None:
    return str(x) if x is not None else None


CONFIGURE_HELP = (
    "no LLM is configured. Point rftfm at any OpenAI-compatible endpoint, e.g.\n"
    "  export RFTFM_LLM_BASE_URL=http://127.0.0.1:8080/v1 RFTFM_LLM_MODEL=my-model [RFTFM_LLM_API_KEY=...]\n"
    "or write ~/.rftfm/llm.toml with [llm] base_url, model, api_key_env (OpenAI, vLLM, llama.cpp, Ollama)."
)


@friendly_errors
def chat(
    target: Annotated[str, typer.Argument(metavar="RUN|PATH", help="stored run, or a log to import")],
    store: StoreOpt = None,
    policy: PolicyOpt = None,
    mode: ModeOpt = None,
    workdir: WorkdirOpt = None,
    llm_config: LlmConfigOpt = None,
    key_map: MapOpt = None,
) -> None:
    """Talk to an LLM about a run; it answers through the tools (logs, detection, diagnosis, fixes) and asks
    you before any tool that acts. Type /quit to leave. Without an endpoint: how to configure one, and the
    offline triage."""
    import time

    from langchain_core.messages import HumanMessage
    from langgraph.types import Command

    from rftfm_agent.agent.chat import briefing_of, build_chat_graph
    from rftfm_agent.agent.triage import run_triage, sqlite_checkpointer

    st = open_store(store)
    run_id = resolve_runs(st, [target], key_map)[0]
    env = make_env(st, policy, mode, workdir, Path("triage") / run_id)
    llm, which = connect_llm(llm_config, offline=False)
    if llm is None:
        err_console.print(CONFIGURE_HELP if "no LLM" in which else which, markup=False, highlight=False)
        if not sys.stdin.isatty() or typer.confirm("run the offline triage now?", default=True):
            console.print(run_triage(env, run_id)[0]["report"], markup=False, highlight=False)
        return
    triaged = run_triage(env, run_id)[0]  # the facts first: a weak model then has them to talk about
    graph = build_chat_graph(
        env,
        llm,
        sqlite_checkpointer(st.root),
        fallback=lambda run: run_triage(env, run)[0]["report"],
        briefing=briefing_of(triaged),
    )
    config = {"configurable": {"thread_id": f"chat-{run_id}-{time.strftime('%Y%m%dT%H%M%S')}"}}
    console.print(f"[dim]{which} · run {run_id} · /quit to leave[/dim]")
    while True:
        question = _ask("you> ")
        if question is None or question.strip() in ("/quit", "/exit"):
            return
        if not question.strip():
            continue
        payload: Any = {"run": run_id, "messages": [HumanMessage(question)], "bad_calls": 0, "turns": 0}
        while True:
            graph.invoke(payload, config)
            interrupts = graph.get_state(config).interrupts
            if not interrupts:
                break
            answer = _ask(f"{interrupts[0].value['question']} [y/N] ") or "n"
            payload = Command(resume="approve" if answer.strip().lower() in ("y", "yes") else "reject")
        last = graph.get_state(config).values["messages"][-1]
        console.print(f"rftfm> {last.content}", markup=False, highlight=False)


def _ask(prompt: str) -> str | None:
    try:
        return input(prompt)
    except EOFError:
        return None
