"""Where an installed rftfm finds its bundled files (examples, prompts) — editable or wheel install alike."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rftfm_agent.errors import RftfmError


def example_path(name: str) -> Path:
    """Path of a bundled example log shipped in rftfm_agent/data/examples."""
    path = Path(str(resources.files("rftfm_agent") / "data" / "examples" / name))
    if not path.is_file():
        raise RftfmError(f"{path}: bundled example missing from this installation")
    return path


def prompt_text(name: str) -> str:
    """Text of a prompt template shipped in prompts/ (installed as rftfm_agent.prompts)."""
    return (resources.files("rftfm_agent.prompts") / name).read_text(encoding="utf-8")
