"""What every tool shares: the injected configuration (`ToolEnv`), the typed error, and `call_tool`.

A tool is a plain function `tool(params: XInput, env: ToolEnv) -> XOutput`. The LLM sees the input model's
schema and the function's docstring, never `env`: the store, the policy, the run's checkpoint folder and
the person's approvals are set by whoever builds the agent (the CLI, a test), so no text from a run or a
model can point a tool at another store, loosen the policy or approve a fix.

`call_tool(name, arguments, env)` is the one way the agent calls a tool: it validates the arguments
(unknown fields are refused, so a hallucinated argument is an error the model is told about), and turns
every failure into a `ToolError`, never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rftfm_agent.errors import RftfmError
from rftfm_agent.supervise.policy import Policy
from rftfm_agent.telemetry.store import Store


class ToolInput(BaseModel):
    """Base of every tool's input: unknown fields are refused (a model may not invent arguments)."""

    model_config = ConfigDict(extra="forbid")


class RunInput(ToolInput):
    run: str = Field(description="run id or name in the store (see list_runs)")


class ToolError(BaseModel):
    """What a tool returns instead of raising: which tool, and what was wrong, in one line."""

    tool: str
    error: str


@dataclass(frozen=True)
class ToolEnv:
    """Configuration injected into every tool; never shown to, or set by, the LLM.

    `approved` holds the candidate ids a person approved (set by the agent's approval step only);
    `resumer(workdir, candidate, approved)` carries on a stopped supervised session with a fix (the CLI
    provides it: the tools cannot build a trainer)."""

    store: Store
    policy: Policy
    workdir: Path | None = None
    out_dir: Path | None = None
    detector_path: Path | None = None
    library_path: Path | None = None
    approved: frozenset[str] = frozenset()
    resumer: Callable[..., dict[str, Any]] | None = None
    actor: str = "agent"

    def with_approval(self, candidate_id: str) -> ToolEnv:
        return dataclasses.replace(self, approved=self.approved | {candidate_id})


@dataclass(frozen=True)
class Tool:
    name: str
    fn: Callable[[Any, ToolEnv], BaseModel]
    input: type[ToolInput]
    acting: bool = False

    @property
    def description(self) -> str:
        return (self.fn.__doc__ or self.name).strip()


@dataclass(frozen=True)
class ToolCall:
    """One call as the agent made it: for the report, the eval's count and the journal."""

    name: str
    arguments: dict[str, Any]
    ok: bool
    seconds: float
    error: str | None = None


def call_tool(tool: Tool, arguments: dict[str, Any], env: ToolEnv) -> tuple[BaseModel, ToolCall]:
    """Validate `arguments`, run the tool, and return its output (or a `ToolError`) with a call record."""
    started = time.perf_counter()
    try:
        params = tool.input.model_validate(arguments or {})
        out: BaseModel = tool.fn(params, env)
    except ValidationError as exc:
        out = ToolError(tool=tool.name, error=f"invalid arguments: {_validation_text(exc)}")
    except RftfmError as exc:
        out = ToolError(tool=tool.name, error=str(exc))
    except Exception as exc:  # a tool must never take the agent down with a traceback
        out = ToolError(tool=tool.name, error=f"{type(exc).__name__}: {exc}")
    error = out.error if isinstance(out, ToolError) else None
    record = ToolCall(tool.name, dict(arguments or {}), error is None, time.perf_counter() - started, error)
    return out, record


def _validation_text(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        loc = ".".join(str(x) for x in e["loc"]) or "arguments"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


@functools.cache
def _models(detector_path: Path | None, library_path: Path | None) -> tuple[Any, Any]:
    """The fitted detector and diagnoser, loaded once per process (they take most of a triage's time)."""
    from rftfm_agent.detect.api import load_detector
    from rftfm_agent.diagnose.diagnoser import Diagnoser
    from rftfm_agent.diagnose.library import Library

    return load_detector(detector_path), Diagnoser(Library.load(library_path))


def models(env: ToolEnv) -> tuple[Any, Any]:
    return _models(env.detector_path, env.library_path)
