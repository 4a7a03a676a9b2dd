"""The graph as the supervisor's brain: `rftfm supervise --agent`.

The supervisor asks its planner for a plan at each incident (supervise/supervisor.py). `agent_planner(llm)`
answers through a small graph, plan → choose: the playbook's plan, then the LLM (when one is configured)
picks which of its fixes to try first, from their ids only. The supervisor still asks the policy about
every candidate, in the new order: the LLM can reorder the playbook's fixes, never add one or skip the
policy. Without an LLM the plan is the playbook's, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph

from rftfm_agent.agent.triage import llm_choice
from rftfm_agent.diagnose.hypothesis import Diagnosis
from rftfm_agent.remediate.planner import Plan, PlanContext, make_plan


class PlanState(TypedDict, total=False):
    diagnosis: dict[str, Any]
    context: dict[str, Any]
    plan: dict[str, Any]
    picked: str | None
    planner: Literal["playbook", "llm"]
    notes: list[str]


def build_plan_graph(llm: Any = None) -> Any:
    def plan(state: PlanState) -> dict[str, Any]:
        made = make_plan(
            Diagnosis.model_validate(state["diagnosis"]), PlanContext.model_validate(state["context"])
        )
        return {"plan": made.model_dump(mode="json"), "planner": "playbook"}

    def choose(state: PlanState) -> dict[str, Any]:
        plan_ = state["plan"]
        fixes = [
            c
            for c in plan_["candidates"]
            if not all(a["kind"] in ("observe", "escalate") for a in c["actions"])
        ]
        if llm is None or len(fixes) < 2:
            return {}
        d = state["diagnosis"]
        view = {
            "run": d.get("run"),
            "diagnosis": {
                "anchor_step": d.get("anchor_step"),
                "hypotheses": [
                    {"type": h["type"], "family": h["family"], "probability": round(h["probability"], 3)}
                    for h in d.get("hypotheses", [])
                ],
                "symptoms": state["context"].get("symptoms", []),
            },
            "allowed": [
                {"id": c["id"], "summary": c["id"], "why": c["why"], "verdict": "checked by the policy next"}
                for c in fixes
            ],
        }
        picked, _, notes = llm_choice(llm, view, [c["id"] for c in fixes])  # type: ignore[arg-type]
        if picked is None or picked == "none":
            return {"notes": notes}
        first = [c for c in plan_["candidates"] if c["id"] == picked]
        rest = [c for c in plan_["candidates"] if c["id"] != picked]
        reason = f"{plan_['reason']} (the LLM chose {picked} first)"
        return {
            "plan": {**plan_, "candidates": first + rest, "reason": reason},
            "picked": picked,
            "planner": "llm",
            "notes": notes,
        }

    def route(state: PlanState) -> Literal["choose", "__end__"]:
        return "choose" if state["plan"]["decision"] == "fix" else "__end__"

    graph = StateGraph(PlanState)
    graph.add_node("plan", plan)
    graph.add_node("choose", choose)
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", route)
    graph.add_edge("choose", END)
    return graph.compile()


def agent_planner(llm: Any = None) -> Callable[[Diagnosis, PlanContext], Plan]:
    """A `Supervisor(planner=...)` that plans through the graph (the policy still decides)."""
    graph = build_plan_graph(llm)

    def planner(diagnosis: Diagnosis, context: PlanContext) -> Plan:
        out = graph.invoke(
            {"diagnosis": diagnosis.model_dump(mode="json"), "context": context.model_dump(mode="json")}
        )
        return Plan.model_validate(out["plan"])

    return planner
