"""The agent's tools: plain typed functions with pydantic inputs and outputs.

Installed as `rftfm_agent.tools`. Each tool is usable on its own (tests, CLI, notebooks) and is wrapped
for the LangGraph agent elsewhere; none of them writes to a run.
"""
