"""Tool: read-only SQL over the run store (views `runs`, `steps`, `trajectories`, `verdicts`, `events`).

The agent reaches telemetry only through this read-only entry point, so a tool call can never change
or delete a run, and text inside trajectories is returned as data, never acted on.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field

from rftfm_agent.telemetry.store import Store


class QueryStoreInput(BaseModel):
    sql: str = Field(
        description="one SELECT over the views runs, steps (long: run_id, step, metric, "
        "source_key, value), trajectories, verdicts (the detector's latest verdict per run) and events "
        "(run_id, step, metric, source, check, severity, score, alarm, evidence)"
    )
    store: str | None = Field(
        default=None, description="store folder; default $RFTFM_STORE or ~/.rftfm/store"
    )
    max_rows: int = Field(default=200, ge=1, le=10_000, description="rows returned at most")


class QueryStoreOutput(BaseModel):
    columns: list[str]
    rows: list[dict]
    total_rows: int
    truncated: bool


def query_store(params: QueryStoreInput) -> QueryStoreOutput:
    """Run the query; rows beyond `max_rows` are counted but not returned."""
    df = Store(Path(params.store) if params.store else None).sql(params.sql)
    head = df.head(params.max_rows)
    rows = json.loads(head.to_json(orient="records"))
    return QueryStoreOutput(
        columns=[str(c) for c in df.columns], rows=rows, total_rows=len(df), truncated=len(df) > len(head)
    )
