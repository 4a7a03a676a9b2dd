"""Which LLM the agent talks to: any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, Ollama …).

Configured by the environment or a TOML file, never by a prompt:

    RFTFM_LLM_BASE_URL=http://127.0.0.1:8080/v1  RFTFM_LLM_MODEL=qwen2.5-7b  [RFTFM_LLM_API_KEY=…]

or `$RFTFM_LLM_CONFIG` / `~/.rftfm/llm.toml`:

    [llm]
    base_url = "http://127.0.0.1:11434/v1"
    model = "llama3.1"
    api_key_env = "OPENAI_API_KEY"   # the name of the variable holding the key, never the key itself

With none configured, the agent runs offline with its deterministic planner.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rftfm_agent.errors import RftfmError

CONFIG_ENV = "RFTFM_LLM_CONFIG"
DEFAULT_CONFIG = Path("~/.rftfm/llm.toml")
PROBE_TIMEOUT_S = 5.0  # an endpoint that does not list its models in this long is called unreachable


class LLMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str
    model: str
    api_key: str = Field(default="not-needed", repr=False)
    timeout: float = Field(default=60.0, gt=0)
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=512, ge=16, description="per answer: a rambling model is cut off")
    where: str = "environment"

    def describe(self) -> str:
        return f"{self.model} at {self.base_url} (from {self.where})"


def load_llm_config(path: Path | None = None) -> LLMConfig | None:
    """The configured endpoint, or None (offline). A config file that exists but is wrong is an error."""
    env = os.environ
    if path is None and env.get("RFTFM_LLM_BASE_URL") and env.get("RFTFM_LLM_MODEL"):
        return LLMConfig(
            base_url=env["RFTFM_LLM_BASE_URL"],
            model=env["RFTFM_LLM_MODEL"],
            api_key=env.get("RFTFM_LLM_API_KEY") or env.get("OPENAI_API_KEY") or "not-needed",
        )
    if path is None:
        path = Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else DEFAULT_CONFIG.expanduser()
        if not path.is_file():
            return None
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8")).get("llm", {})
    except FileNotFoundError:
        raise RftfmError(f"{path}: no such LLM config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RftfmError(f"{path}: not a valid TOML LLM config: {exc}") from None
    key_env = data.pop("api_key_env", None)
    if key_env:
        data["api_key"] = env.get(key_env, "")
        if not data["api_key"]:
            raise RftfmError(f"{path}: api_key_env names {key_env}, which is not set")
    try:
        return LLMConfig(**data, where=str(path))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RftfmError(f"{path}: [llm] {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def probe(config: LLMConfig) -> None:
    """Raise a one-line RftfmError when the endpoint cannot be reached or does not answer like OpenAI."""
    import openai

    client = openai.OpenAI(
        base_url=config.base_url, api_key=config.api_key, timeout=PROBE_TIMEOUT_S, max_retries=0
    )
    try:
        served = [m.id for m in client.models.list()]
    except openai.APIConnectionError as exc:
        raise RftfmError(f"LLM endpoint {config.base_url}: unreachable ({exc.__cause__ or exc})") from None
    except openai.APIStatusError as exc:
        raise RftfmError(f"LLM endpoint {config.base_url}: HTTP {exc.status_code} ({exc.message})") from None
    except openai.OpenAIError as exc:
        raise RftfmError(f"LLM endpoint {config.base_url}: {exc}") from None
    if served and config.model not in served:
        shown = ", ".join(served[:8]) + (" …" if len(served) > 8 else "")
        raise RftfmError(f"LLM endpoint {config.base_url}: no model {config.model!r} (it serves: {shown})")


def chat_model(config: LLMConfig) -> Any:
    """A LangChain chat model for the endpoint (no retries inside: the agent's own fallback handles it)."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=config.base_url,
        api_key=config.api_key,
        model=config.model,
        timeout=config.timeout,
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        max_retries=0,
    )
