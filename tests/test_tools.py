from pathlib import Path

import pytest

from rftfm_agent.errors import RftfmError, StoreError
from rftfm_agent.resources import prompt_text, prompt_version
from rftfm_agent.supervise.policy import Policy
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.store import Store
from rftfm_agent.tools import ToolEnv
from rftfm_agent.tools.query_store import QueryStoreInput, query_store


def test_query_store_tool(tmp_path: Path, fixtures: Path) -> None:
    st = Store(tmp_path)
    for run in importers.load(fixtures / "verl_console.log"):
        st.write_run(run)
    env = ToolEnv(store=st, policy=Policy.load(None))  # the store is injected, never an argument
    out = query_store(
        QueryStoreInput(
            sql="SELECT step, value FROM steps WHERE metric = 'reward' ORDER BY step", max_rows=2
        ),
        env,
    )
    assert out.columns == ["step", "value"] and out.total_rows == 5 and out.truncated and len(out.rows) == 2
    with pytest.raises(StoreError):
        query_store(QueryStoreInput(sql="DELETE FROM steps"), env)


def test_prompt_templates_are_installed() -> None:
    assert "{data}" in prompt_text("untrusted_data.md") == prompt_text("untrusted_data")
    for name in ("system", "triage", "report", "untrusted_data"):  # versioned, loaded by name
        assert prompt_version(name) == "1" and not prompt_text(name).startswith("<!--")
    with pytest.raises(RftfmError, match="no such template"):
        prompt_text("nope")
