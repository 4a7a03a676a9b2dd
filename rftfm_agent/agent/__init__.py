"""The agent: LangGraph graphs over the tools, with any OpenAI-compatible LLM or none.

- `triage.py`: the one-shot triage graph, observe → detect → diagnose → compare → propose → policy →
  choose → approval → apply → resume → verify → report; with no LLM its `choose` node is deterministic.
- `chat.py`: the chat graph, an LLM calling the tools, with a person's approval before any acting tool.
- `llm.py`: which endpoint (environment or a config file), reached through `langchain-openai`.
- `report.py`: the Markdown/HTML report.

Nothing below this package imports LangGraph or LangChain (tests/test_architecture.py).
"""
