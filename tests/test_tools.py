from pathlib import Path

import pytest
from rftfm_agent.tools.query_store import QueryStoreInput, query_store

from rftfm_agent.errors import StoreError
from rftfm_agent.resources import prompt_text
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.store import Store


def test_query_store_tool(tmp_path: Path, fixtures: Path) -> None:
    st = Store(tmp_path)
    for run in importers.load(fixtures / "verl_console.log"):
        st.write_run(run)
    out = query_store(
        QueryStoreInput(
            sql="SELECT step, value FROM steps WHERE metric = 'reward' ORDER BY step",
            store=str(tmp_path),
            max_rows=2,
        )
    )
    assert out.columns == ["step", "value"] and out.total_rows == 5 and out.truncated and len(out.rows) == 2
    with pytest.raises(StoreError):
        query_store(QueryStoreInput(sql="DELETE FROM steps", store=str(tmp_path)))


def test_prompt_templates_are_installed() -> None:
    assert "{data}" in prompt_text("untrusted_data.md")
