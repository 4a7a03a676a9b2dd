"""Where an installed rftfm finds its bundled files (examples, prompts) — editable or wheel install alike."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from rftfm_agent.errors import RftfmError


def cache_root() -> Path:
    """Where rftfm caches what it can rebuild (warmed-up models, fitted forests): $RFTFM_CACHE, else
    ~/.cache/rftfm."""
    return Path(os.environ.get("RFTFM_CACHE") or Path.home() / ".cache" / "rftfm")


def example_path(name: str) -> Path:
    """Path of a bundled example log shipped in rftfm_agent/data/examples."""
    path = Path(str(resources.files("rftfm_agent") / "data" / "examples" / name))
    if not path.is_file():
        raise RftfmError(f"{path}: bundled example missing from this installation")
    return path


_VERSION = re.compile(r"^<!-- version: (\S+) -->\n")


def _prompt_file(name: str) -> str:
    folder = resources.files("rftfm_agent.prompts")
    for candidate in (name, f"{name}.md"):
        if (folder / candidate).is_file():
            return (folder / candidate).read_text(encoding="utf-8")
    raise RftfmError(f"prompt {name!r}: no such template in rftfm_agent/prompts")


def prompt_text(name: str) -> str:
    """Text of a prompt template shipped in prompts/ (installed as rftfm_agent.prompts), loaded by name
    (`untrusted_data` or `untrusted_data.md`), without its version line."""
    return _VERSION.sub("", _prompt_file(name), count=1)


def prompt_version(name: str) -> str:
    """The version a template declares on its first line (`<!-- version: 3 -->`); "0" when none."""
    match = _VERSION.match(_prompt_file(name))
    return match[1] if match else "0"
