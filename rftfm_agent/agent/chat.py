"""The chat graph: an LLM calling the tools, with a person's approval before any acting tool.

    assistant ─┬→ tools ──→ assistant          (read-only tool calls; errors fed back to the model)
               ├→ approval → act → assistant   (acting tool calls: interrupt(), then the policy decides)
               ├→ fallback → END               (too many malformed calls: the deterministic triage answers)
               └→ END

A tool call is validated against the tool's input model (unknown tools, unknown or missing arguments are
errors the model is told about, at most `MAX_BAD_CALLS` per question); acting tools take a candidate id,
never actions, and run only after `interrupt()` returns a person's yes, with the policy checking again
inside the tool. Run text reaches the model only inside the untrusted-data wrapper.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, SystemMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import interrupt

from rftfm_agent.resources import prompt_text
from rftfm_agent.tools import ACT_TOOLS, READ_TOOLS, TOOLS, ToolEnv, ToolError, call_tool
from rftfm_agent.tools.fixes import journal

MAX_BAD_CALLS = 3  # malformed or refused tool calls per question before the deterministic triage answers
MAX_TURNS = 12  # model turns per question: a model that loops on tools is stopped


class ChatState(TypedDict, total=False):
    run: str
    messages: Annotated[list[AnyMessage], add_messages]
    bad_calls: int
    turns: int
    calls: list[dict[str, Any]]
    approvals: dict[str, str]  # tool call id → the person's answer
    fell_back: bool


def tool_schemas(acting: bool = True) -> list[dict[str, Any]]:
    """OpenAI function schemas of the tools: the input model's JSON schema and the docstring."""
    tools = (*READ_TOOLS, *ACT_TOOLS) if acting else READ_TOOLS
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": t.input.model_json_schema(),
            },
        }
        for t in tools
    ]


def build_chat_graph(
    env: ToolEnv, llm: Any, checkpointer: Any = None, fallback: Any = None, briefing: str = ""
) -> Any:
    """`fallback(run) -> str` answers when the model cannot make a valid tool call (the offline triage);
    `briefing` (what the tools already found, e.g. `briefing_of(triage state)`) grounds the first answer."""
    model = llm.bind_tools(tool_schemas())

    def assistant(state: ChatState) -> dict[str, Any]:
        system = SystemMessage(
            prompt_text("system")
            + f"\nThe run under discussion: {state.get('run')}"
            + (f"\nWhat the tools found so far:\n{briefing}" if briefing else "")
        )
        try:
            reply = model.invoke([system, *state["messages"]])
        except Exception as exc:
            reply = AIMessage(f"(the LLM call failed: {type(exc).__name__}: {str(exc)[:160]})")
            return {"messages": [reply], "bad_calls": MAX_BAD_CALLS, "turns": state.get("turns", 0) + 1}
        bad = len(getattr(reply, "invalid_tool_calls", None) or [])
        return {
            "messages": [reply],
            "turns": state.get("turns", 0) + 1,
            "bad_calls": state.get("bad_calls", 0) + bad,
        }

    def tools(state: ChatState) -> dict[str, Any]:
        last = state["messages"][-1]
        out, bad, calls = [], state.get("bad_calls", 0), list(state.get("calls") or [])
        for invalid in getattr(last, "invalid_tool_calls", None) or []:
            out.append(
                ToolMessage(
                    f"error: malformed tool call ({invalid.get('error') or 'arguments are not JSON'})",
                    tool_call_id=invalid.get("id") or "invalid",
                )
            )
        for call in last.tool_calls:
            content, ok = _run_read(env, call)
            bad += 0 if ok else 1
            calls.append({"tool": call["name"], "ok": ok})
            out.append(ToolMessage(content, tool_call_id=call["id"]))
        return {"messages": out, "bad_calls": bad, "calls": calls}

    def approval(state: ChatState) -> dict[str, Any]:
        acting = [
            c for c in state["messages"][-1].tool_calls if c["name"] in TOOLS and TOOLS[c["name"]].acting
        ]
        answer = interrupt(
            {
                "calls": [{"tool": c["name"], "arguments": c["args"]} for c in acting],
                "question": "allow "
                + ", ".join(f"{c['name']}({json.dumps(c['args'])})" for c in acting)
                + "?",
            }
        )
        return {"approvals": {c["id"]: str(answer) for c in acting}}

    def act(state: ChatState) -> dict[str, Any]:
        last = state["messages"][-1]
        approvals = state.get("approvals") or {}
        out, bad, calls = [], state.get("bad_calls", 0), list(state.get("calls") or [])
        for call in last.tool_calls:
            tool = TOOLS.get(call["name"])
            if tool is None or not tool.acting:
                content, ok = _run_read(env, call)
            elif not _yes(approvals.get(call["id"])):
                run = call["args"].get("run") or state.get("run")
                _journal_refusal(env, run, call, "a person declined the tool call")
                content, ok = "refused: the person did not approve this action", False
            else:
                candidate = call["args"].get("candidate_id")
                acting_env = env.with_approval(candidate) if isinstance(candidate, str) else env
                result, record = call_tool(tool, call["args"], acting_env)
                content, ok = _content(result), record.ok
            bad += 0 if ok else 1
            calls.append({"tool": call["name"], "ok": ok})
            out.append(ToolMessage(content, tool_call_id=call["id"]))
        return {"messages": out, "bad_calls": bad, "calls": calls}

    def fall_back(state: ChatState) -> dict[str, Any]:
        text = fallback(state["run"]) if fallback is not None else "(no offline triage available)"
        note = (
            f"The model made {state.get('bad_calls', 0)} malformed or refused tool calls; "
            "here is the offline triage instead.\n\n"
        )
        return {"messages": [AIMessage(note + text)], "fell_back": True}

    def route(state: ChatState) -> Literal["tools", "approval", "fallback", "__end__"]:
        last = state["messages"][-1]
        if state.get("bad_calls", 0) >= MAX_BAD_CALLS or state.get("turns", 0) >= MAX_TURNS:
            return "fallback" if fallback is not None else "__end__"
        if not isinstance(last, AIMessage):
            return "__end__"
        if any(TOOLS.get(c["name"]) is not None and TOOLS[c["name"]].acting for c in last.tool_calls):
            return "approval"
        if last.tool_calls or getattr(last, "invalid_tool_calls", None):
            return "tools"
        return "__end__"

    def after_tools(state: ChatState) -> Literal["assistant", "fallback"]:
        return (
            "fallback" if state.get("bad_calls", 0) >= MAX_BAD_CALLS and fallback is not None else "assistant"
        )

    graph = StateGraph(ChatState)
    graph.add_node("assistant", assistant)
    graph.add_node("tools", tools)
    graph.add_node("approval", approval)
    graph.add_node("act", act)
    graph.add_node("fallback", fall_back)
    graph.add_edge(START, "assistant")
    graph.add_conditional_edges("assistant", route)
    graph.add_conditional_edges("tools", after_tools)
    graph.add_edge("approval", "act")
    graph.add_conditional_edges("act", after_tools)
    graph.add_edge("fallback", END)
    return graph.compile(checkpointer=checkpointer)


def briefing_of(state: dict[str, Any]) -> str:
    """A few lines of what an offline triage found (tool output, not run text), for the chat's context."""
    from rftfm_agent.agent.report import symptom_line

    d, det = state.get("diagnosis") or {}, state.get("detection") or {}
    hyps = "; ".join(f"{h['type']} p={h['probability']}" for h in d.get("hypotheses", [])[:3]) or "none"
    fix = next((p for p in state.get("allowed") or [] if p["id"] == state.get("choice")), None)
    return "\n".join(
        [
            f"- detector: {det.get('verdict')} ({det.get('mode')} mode), "
            f"first alarm step {det.get('first_alarm_step')}",
            f"- symptom: {symptom_line(d, det)}",
            f"- diagnosis: {hyps}{' (unknown: unlike every labelled fault)' if d.get('unknown') else ''}",
            f"- proposed fix: {fix['id']} = {fix['summary']} ({fix['verdict']})"
            if fix
            else "- proposed fix: none",
        ]
    )


def _run_read(env: ToolEnv, call: dict[str, Any]) -> tuple[str, bool]:
    tool = TOOLS.get(call["name"])
    if tool is None:
        return f"error: no tool named {call['name']!r} (tools: {', '.join(TOOLS)})", False
    if tool.acting:
        return "error: acting tools run only after approval", False
    result, record = call_tool(tool, call.get("args") or {}, env)
    return _content(result), record.ok


def _content(result: Any) -> str:
    if isinstance(result, ToolError):
        return f"error: {result.error}"
    return json.dumps(result.model_dump(mode="json"), default=str)[:12_000]


def _yes(answer: Any) -> bool:
    return str(answer).strip().lower() in ("approve", "approved", "yes", "y", "true")


def _journal_refusal(env: ToolEnv, run: str | None, call: dict[str, Any], reason: str) -> None:
    if not run:
        return
    try:
        run_id = env.store.resolve(run)
    except Exception:
        return
    journal(
        env,
        run_id,
        "refused",
        rule="human",
        reason=reason,
        detail={"tool": call["name"], "args": call["args"]},
    )
