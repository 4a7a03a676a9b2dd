"""The agent's tools: thin typed functions over the stages' APIs, installed as `rftfm_agent.tools`.

Each tool is `tool(params: XInput, env: ToolEnv) -> XOutput` with pydantic models in and out; its
docstring is the description a model reads. `env` (the store, the policy, the run's checkpoint folder,
a person's approvals) is injected by whoever builds the agent and never shown to a model.

Read-only tools and acting tools are separate lists: the agent runs an acting tool only behind the policy
and, where the policy asks for a person, the approval step. None of them imports LangGraph: they are
usable on their own (tests, CLI, notebooks) and wrapped for the graph in `rftfm_agent.agent`.
"""

from __future__ import annotations

from rftfm_agent.tools.acting import apply_fix, resume_run, verify_fix
from rftfm_agent.tools.analysis import PlotInput, detect, diagnose, nearest_runs, plot_metrics
from rftfm_agent.tools.base import RunInput, Tool, ToolCall, ToolEnv, ToolError, call_tool
from rftfm_agent.tools.fixes import CheckPolicyInput, JournalInput, check_policy, propose_fixes, read_journal
from rftfm_agent.tools.query_store import QueryStoreInput, query_store
from rftfm_agent.tools.runs import (
    ListRunsInput,
    MetricWindowInput,
    SampleInput,
    list_runs,
    metric_window,
    run_summary,
    sample_completions,
)

READ_TOOLS: tuple[Tool, ...] = (
    Tool("list_runs", list_runs, ListRunsInput),
    Tool("run_summary", run_summary, RunInput),
    Tool("metric_window", metric_window, MetricWindowInput),
    Tool("query_store", query_store, QueryStoreInput),
    Tool("sample_completions", sample_completions, SampleInput),
    Tool("detect", detect, RunInput),
    Tool("diagnose", diagnose, RunInput),
    Tool("nearest_runs", nearest_runs, RunInput),
    Tool("plot_metrics", plot_metrics, PlotInput),
    Tool("propose_fixes", propose_fixes, RunInput),
    Tool("check_policy", check_policy, CheckPolicyInput),
    Tool("read_journal", read_journal, JournalInput),
    Tool("verify_fix", verify_fix, RunInput),  # reads the journal: the supervisor verifies, not the tool
)
ACT_TOOLS: tuple[Tool, ...] = (
    Tool("apply_fix", apply_fix, CheckPolicyInput, acting=True),
    Tool("resume_run", resume_run, RunInput, acting=True),
)
TOOLS: dict[str, Tool] = {t.name: t for t in (*READ_TOOLS, *ACT_TOOLS)}

__all__ = ["ACT_TOOLS", "READ_TOOLS", "TOOLS", "Tool", "ToolCall", "ToolEnv", "ToolError", "call_tool"]
