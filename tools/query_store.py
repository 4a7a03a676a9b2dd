"""Tool: read-only SQL over the run store (views `runs`, `steps`, `trajectories`, `verdicts`, `events`,
`journal`).

The agent reaches telemetry only through read-only entry points, so a tool call can never change or
delete a run. The store is injected configuration: the model picks the query, never the store. Values
follow rftfm's one NaN/Inf policy (telemetry.io: "NaN", "Infinity", "-Infinity"), never a silent null.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from rftfm_agent.telemetry import io
from rftfm_agent.tools.base import ToolEnv, ToolInput


class QueryStoreInput(ToolInput):
    sql: str = Field(
        description="one SELECT over the views runs, steps (long: run_id, step, metric, "
        "source_key, value), trajectories, verdicts (the detector's latest verdict per run), events "
        "(run_id, step, metric, source, check, severity, score, alarm, evidence) and journal"
    )
    max_rows: int = Field(default=200, ge=1, le=10_000, description="rows returned at most")


class QueryStoreOutput(BaseModel):
    columns: list[str]
    rows: list[dict]
    total_rows: int
    truncated: bool


def query_store(params: QueryStoreInput, env: ToolEnv) -> QueryStoreOutput:
    """Run one read-only SQL query over the store; rows beyond `max_rows` are counted but not returned."""
    df = env.store.sql(params.sql, labels=False)  # benchmark labels are never a model's evidence
    head = df.head(params.max_rows)
    rows = [{str(k): _plain(v) for k, v in r.items()} for r in head.to_dict(orient="records")]
    return QueryStoreOutput(
        columns=[str(c) for c in df.columns], rows=rows, total_rows=len(df), truncated=len(df) > len(head)
    )


def _plain(value: Any) -> Any:
    """A JSON-able value: numpy scalars unwrapped, timestamps as text, NaN/±Inf under the io policy."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            value = value.item()
        except (ValueError, TypeError):
            value = str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return io.json_safe(value)
    if isinstance(value, dict | list):
        return io.json_safe(value)
    return str(value)
