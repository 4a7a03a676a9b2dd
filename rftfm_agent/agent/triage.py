"""The triage graph: one incident, from a stored run to a report and, with approval, a fix applied.

    observe → detect → diagnose → compare → propose → policy → choose ─┬→ report
                                     └→ approval → apply → resume → verify → report

Each node calls one tool (`rftfm_agent.tools`) and returns a partial update. `choose` is where an LLM may
help: it picks one of the ids the policy allowed (the answer is validated against that enum, retried with
the error at most `MAX_LLM_RETRIES` times, then the deterministic planner decides); without an LLM the
deterministic planner picks the playbook's first allowed fix. `approval` calls `interrupt()` when the
policy asks for a person; the side effects (`apply`, `resume`) are later nodes, so a node re-run on resume
never repeats them. The checkpointer (SQLite in the store's folder) keeps one thread per incident, so a
triage waiting for approval can be picked up after a restart.
"""

from __future__ import annotations

import json
import operator
import time
from typing import Annotated, Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from pydantic import BaseModel, ValidationError

from rftfm_agent.resources import prompt_text
from rftfm_agent.tools import TOOLS, ToolEnv, ToolError, call_tool
from rftfm_agent.tools.fixes import journal

MAX_LLM_RETRIES = 2  # a malformed or out-of-enum answer is fed back this many times, then the planner decides
NONE = "none"


class TriageState(TypedDict, total=False):
    source: str
    run: str
    act: bool
    setup: dict[str, Any]  # how the graph was built (policy file, mode, workdir): never shown to an LLM
    summary: dict[str, Any]
    samples: str
    plot: str | None
    detection: dict[str, Any]
    diagnosis: dict[str, Any]
    neighbours: list[dict[str, Any]]
    plan: dict[str, Any]
    allowed: list[dict[str, Any]]
    choice: str | None
    explanation: str
    planner: Literal["deterministic", "llm"]
    approval: Literal["not_needed", "approved", "rejected"] | None
    applied: dict[str, Any] | None
    resumed: dict[str, Any] | None
    verified: dict[str, Any] | None
    report: str
    seconds: float
    started: float
    calls: Annotated[list[dict[str, Any]], operator.add]
    notes: Annotated[list[str], operator.add]


def _call(
    env: ToolEnv, name: str, **arguments: Any
) -> tuple[dict[str, Any] | None, dict[str, Any], str | None]:
    out, record = call_tool(TOOLS[name], arguments, env)
    call = {"tool": name, "ok": record.ok, "seconds": round(record.seconds, 4), "error": record.error}
    if isinstance(out, ToolError):
        return None, call, f"{name}: {out.error}"
    return out.model_dump(mode="json"), call, None


def build_triage_graph(env: ToolEnv, llm: Any = None, checkpointer: Any = None) -> Any:
    """The compiled triage graph; `env` and `llm` are bound into the nodes (configuration, not state)."""

    def step(name: str, key: str, **extra: Any) -> Any:
        def node(state: TriageState) -> dict[str, Any]:
            out, call, error = _call(env, name, run=state["run"], **extra)
            update: dict[str, Any] = {"calls": [call]}
            if error:
                update["notes"] = [error]
            update[key] = out
            return update

        return node

    def observe(state: TriageState) -> dict[str, Any]:
        update: dict[str, Any] = {
            "started": state.get("started") or time.perf_counter(),
            "calls": [],
            "notes": [],
        }
        for name, key in (
            ("run_summary", "summary"),
            ("sample_completions", "samples"),
            ("plot_metrics", "plot"),
        ):
            out, call, error = _call(env, name, run=state["run"])
            update["calls"].append(call)
            if error:
                update["notes"].append(error)
            update[key] = out
        if update["summary"] is not None:
            update["run"] = update["summary"]["run_id"]
        update["samples"] = (update["samples"] or {}).get("data", "")
        update["plot"] = (update["plot"] or {}).get("path")
        return update

    def compare(state: TriageState) -> dict[str, Any]:
        out, call, error = _call(env, "nearest_runs", run=state["run"])
        return {
            "neighbours": (out or {}).get("neighbours", []),
            "calls": [call],
            "notes": [error] if error else [],
        }

    def policy(state: TriageState) -> dict[str, Any]:
        proposals = (state.get("plan") or {}).get("proposals", [])
        allowed = [p for p in proposals if p["verdict"] != "refuse" and not _control(p)]
        return {"allowed": allowed}

    def choose(state: TriageState) -> dict[str, Any]:
        allowed = state.get("allowed") or []
        fallback = allowed[0]["id"] if allowed else None
        if llm is None or not allowed:
            return {"choice": fallback, "planner": "deterministic", "explanation": ""}
        picked, explanation, notes = llm_choice(llm, state, [p["id"] for p in allowed])
        if picked is None:
            return {"choice": fallback, "planner": "deterministic", "explanation": "", "notes": notes}
        return {
            "choice": None if picked == NONE else picked,
            "planner": "llm",
            "explanation": explanation,
            "notes": notes,
        }

    def approval(state: TriageState) -> dict[str, Any]:
        chosen = _chosen(state)
        if chosen["verdict"] == "apply":
            return {"approval": "not_needed"}
        answer = interrupt(
            {
                "run": state["run"],
                "candidate": chosen["id"],
                "summary": chosen["summary"],
                "why": chosen["why"],
                "policy": chosen["reason"],
                "question": "apply this fix and resume the run? (approve / reject)",
            }
        )
        approved = str(answer).strip().lower() in ("approve", "approved", "yes", "y", "true")
        if not approved:
            journal(
                env,
                state["run"],
                "rejected",
                rule="human",
                reason="a person rejected the fix",
                actions=chosen["actions"],
                detail={"candidate": chosen["id"]},
            )
        return {"approval": "approved" if approved else "rejected"}

    def apply(state: TriageState) -> dict[str, Any]:
        chosen = _chosen(state)
        acting_env = env.with_approval(chosen["id"]) if state.get("approval") == "approved" else env
        out, call, error = _call(acting_env, "apply_fix", run=state["run"], candidate_id=chosen["id"])
        return {"applied": out, "calls": [call], "notes": [error] if error else []}

    def report(state: TriageState) -> dict[str, Any]:
        from rftfm_agent.agent.report import render_markdown

        seconds = time.perf_counter() - state["started"] if state.get("started") else 0.0
        return {"report": render_markdown({**state, "seconds": seconds}), "seconds": seconds}

    def after_choose(state: TriageState) -> Literal["approval", "report"]:
        chosen = _chosen(state) if state.get("choice") else None
        return "approval" if state.get("act") and chosen and chosen.get("applicable") else "report"

    def after_approval(state: TriageState) -> Literal["apply", "report"]:
        return "apply" if state.get("approval") in ("approved", "not_needed") else "report"

    def after_apply(state: TriageState) -> Literal["resume", "report"]:
        return "resume" if state.get("applied") else "report"

    graph = StateGraph(TriageState)
    graph.add_node("observe", observe)
    graph.add_node("detect", step("detect", "detection"))
    graph.add_node("diagnose", step("diagnose", "diagnosis"))
    graph.add_node("compare", compare)
    graph.add_node("propose", step("propose_fixes", "plan"))
    graph.add_node("policy", policy)
    graph.add_node("choose", choose)
    graph.add_node("approval", approval)
    graph.add_node("apply", apply)
    graph.add_node("resume", step("resume_run", "resumed"))
    graph.add_node("verify", step("verify_fix", "verified"))
    graph.add_node("report", report)
    graph.add_edge(START, "observe")
    for a, b in (
        ("observe", "detect"),
        ("detect", "diagnose"),
        ("diagnose", "compare"),
        ("compare", "propose"),
        ("propose", "policy"),
        ("policy", "choose"),
        ("resume", "verify"),
        ("verify", "report"),
    ):
        graph.add_edge(a, b)
    graph.add_conditional_edges("choose", after_choose)
    graph.add_conditional_edges("approval", after_approval)
    graph.add_conditional_edges("apply", after_apply)
    graph.add_edge("report", END)
    return graph.compile(checkpointer=checkpointer)


def _control(proposal: dict[str, Any]) -> bool:
    return all(a.get("kind") in ("observe", "escalate") for a in proposal["actions"])


def _chosen(state: TriageState) -> dict[str, Any]:
    return next(p for p in state.get("allowed") or [] if p["id"] == state.get("choice"))


# ---------------------------------------------------------------------------------------- the LLM's pick
class _Choice(BaseModel):
    candidate: str
    explanation: str = ""


def llm_choice(llm: Any, state: TriageState, ids: list[str]) -> tuple[str | None, str, list[str]]:
    """Ask the LLM to pick one of `ids` (or "none"); (None, "", notes) when it fails every try."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    messages: list[Any] = [SystemMessage(prompt_text("system")), HumanMessage(triage_prompt(state))]
    notes: list[str] = []
    for attempt in range(1 + MAX_LLM_RETRIES):
        try:
            reply = llm.invoke(messages)
        except Exception as exc:  # endpoint gone mid-triage: the deterministic planner decides
            notes.append(
                f"LLM call failed ({type(exc).__name__}: {str(exc)[:120]}); deterministic planner used"
            )
            return None, "", notes
        text = reply.content if isinstance(reply.content, str) else json.dumps(reply.content)
        problem = None
        try:
            choice = _Choice.model_validate_json(_json_object(text))
            if choice.candidate not in (*ids, NONE):
                problem = f"candidate {choice.candidate!r} is not one of {[*ids, NONE]}"
        except (ValidationError, ValueError) as exc:
            problem = f"not the JSON asked for ({str(exc).splitlines()[0][:160]})"
        if problem is None:
            return choice.candidate, choice.explanation.strip(), notes
        notes.append(f"LLM answer {attempt + 1} rejected: {problem}")
        messages += [AIMessage(text), HumanMessage(f"Rejected: {problem}. Answer with the JSON only.")]
    notes.append(f"LLM failed {1 + MAX_LLM_RETRIES} times; deterministic planner used")
    return None, "", notes


def _json_object(text: str) -> str:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the answer")
    return text[start : end + 1]


def triage_prompt(state: TriageState) -> str:
    s, d, det = state.get("summary") or {}, state.get("diagnosis") or {}, state.get("detection") or {}
    allowed = state.get("allowed") or []
    return prompt_text("triage").format(
        run=s.get("run_id", state.get("run")),
        format=s.get("format"),
        task=s.get("task"),
        first_step=s.get("first_step"),
        last_step=s.get("last_step"),
        verdict=det.get("verdict"),
        mode=det.get("mode"),
        first_alarm=det.get("first_alarm_step"),
        alarms=", ".join(f"{a['metric']}@{a['step']} {a['check']}" for a in det.get("alarms", [])[:6])
        or "none",
        anchor=d.get("anchor_step"),
        hypotheses="; ".join(
            f"{h['type']} ({h['family']}) p={h['probability']}" for h in d.get("hypotheses", [])
        )
        or "none",
        symptoms="; ".join(d.get("symptoms", [])) or "none",
        neighbours=", ".join(f"{n['run']} ({n['type']})" for n in (state.get("neighbours") or [])[:3])
        or "none",
        candidates="\n".join(f"- {p['id']}: {p['summary']} — {p['why']} — {p['verdict']}" for p in allowed),
        samples=state.get("samples") or "",
        ids=", ".join([*(p["id"] for p in allowed), NONE]),
    )


# ---------------------------------------------------------------------------------------- running it
CHECKPOINT_DB = "agent.sqlite"  # in the store's folder: one thread per incident survives a restart


def sqlite_checkpointer(store_root: Any) -> Any:
    import sqlite3
    from pathlib import Path

    from langgraph.checkpoint.sqlite import SqliteSaver

    path = Path(store_root) / CHECKPOINT_DB
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteSaver(sqlite3.connect(str(path), check_same_thread=False))


def run_triage(
    env: ToolEnv,
    run: str,
    *,
    llm: Any = None,
    act: bool = False,
    checkpointer: Any = None,
    thread_id: str | None = None,
    setup: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    """Run the graph on `run`: (final state, the pending approval question or None, thread id)."""
    from langgraph.checkpoint.memory import InMemorySaver

    graph = build_triage_graph(env, llm, checkpointer or InMemorySaver())
    thread_id = thread_id or f"triage-{run}-{time.strftime('%Y%m%dT%H%M%S')}"
    config = {"configurable": {"thread_id": thread_id}}
    started = time.perf_counter()
    out = graph.invoke(
        {"source": run, "run": run, "act": act, "setup": setup or {}, "started": started}, config
    )
    return _finish(graph, out, config, thread_id)


def resume_triage(
    env: ToolEnv, thread_id: str, answer: str, *, llm: Any = None, checkpointer: Any
) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    """Carry on a triage stopped at its approval question with a person's answer (approve / reject)."""
    from langgraph.types import Command

    graph = build_triage_graph(env, llm, checkpointer)
    config = {"configurable": {"thread_id": thread_id}}
    if not graph.get_state(config).interrupts:
        from rftfm_agent.errors import RftfmError

        raise RftfmError(f"triage thread {thread_id!r}: nothing is waiting for an approval")
    graph.update_state(config, {"started": time.perf_counter()})
    out = graph.invoke(Command(resume=answer), config)
    return _finish(graph, out, config, thread_id)


def pending_setup(thread_id: str, checkpointer: Any) -> dict[str, Any]:
    """How a waiting thread was set up (store, policy, workdir), to rebuild its configuration."""
    saved = checkpointer.get_tuple({"configurable": {"thread_id": thread_id}})
    if saved is None:
        from rftfm_agent.errors import RftfmError

        raise RftfmError(f"triage thread {thread_id!r}: no such thread in this store")
    return dict(saved.checkpoint["channel_values"].get("setup") or {})


def _finish(
    graph: Any, out: dict[str, Any], config: dict[str, Any], thread_id: str
) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    interrupts = graph.get_state(config).interrupts
    question = dict(interrupts[0].value) if interrupts else None
    return dict(out), question, thread_id
