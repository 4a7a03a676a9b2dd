"""The import rule that keeps the pipeline readable: data flows one way, and a stage imports only the
stages before it.

    telemetry → detect → diagnose → remediate → supervise → agent

The testbed, the fault injectors and the benchmark generator make data; detection, diagnosis,
remediation and supervision never import them (a detector that imported the fault it is meant to find
could cheat). Nothing below the agent imports LangGraph or LangChain. The CLI and the evaluations sit on
top and may import anything. Read by parsing every module's imports (nothing is executed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "rftfm_agent"

# Where each top-level folder is installed (pyproject.toml: package-dir).
FOLDERS = {"rftfm_agent": PACKAGE, "tools": f"{PACKAGE}.tools", "evals": f"{PACKAGE}.evals"}

# Stage → the stages it may import. Modules at the package root (errors, resources, hooks …) are the
# ground everyone stands on and may be imported by all; they import nothing above telemetry.
ROOT_MODULES = "root"
ALLOWED: dict[str, set[str]] = {
    ROOT_MODULES: {ROOT_MODULES},
    "telemetry": {ROOT_MODULES, "telemetry"},
    "detect": {ROOT_MODULES, "telemetry", "detect"},
    "diagnose": {ROOT_MODULES, "telemetry", "detect", "diagnose"},
    "remediate": {ROOT_MODULES, "telemetry", "detect", "diagnose", "remediate"},
    "supervise": {ROOT_MODULES, "telemetry", "detect", "diagnose", "remediate", "supervise"},
    "tools": {ROOT_MODULES, "telemetry", "detect", "diagnose", "remediate", "supervise", "tools"},
    "agent": {ROOT_MODULES, "telemetry", "detect", "diagnose", "remediate", "supervise", "tools", "agent"},
    # data makers: the testbed trains, the faults break training, the generator runs both
    "testbed": {ROOT_MODULES, "telemetry", "testbed"},
    "faults": {ROOT_MODULES, "telemetry", "testbed", "faults"},
    "bench": {ROOT_MODULES, "telemetry", "testbed", "faults", "bench"},
}
ANYTHING = {"cli", "evals", "prompts"}  # on top: they wire the stages together
LLM_LIBRARIES = ("langgraph", "langchain", "langchain_core", "langchain_openai")
MAY_IMPORT_LLM_LIBRARIES = {"agent", "cli", "evals"}


def stage_of(module: str) -> str:
    """'rftfm_agent.detect.band' → 'detect'; 'rftfm_agent.errors' → 'root'."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        raise ValueError(module)
    if len(parts) == 2 and parts[1] not in ALLOWED and parts[1] not in ANYTHING:
        return ROOT_MODULES  # a module file at the package root (errors.py …)
    return parts[1] if len(parts) > 1 else ROOT_MODULES


def _module_name(rel: str) -> str:
    """'rftfm_agent/detect/band.py' → 'rftfm_agent.detect.band'; 'tools/x.py' → 'rftfm_agent.tools.x'."""
    folder, *rest = Path(rel).with_suffix("").parts
    return ".".join([FOLDERS[folder], *(p for p in rest if p != "__init__")])


def modules() -> list[tuple[str, Path]]:
    return [
        (_module_name(path.relative_to(ROOT).as_posix()), path)
        for folder in FOLDERS
        for path in sorted((ROOT / folder).rglob("*.py"))
    ]


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[str, int]]:
    """Absolute names of what a module imports (relative imports resolved), with line numbers."""
    tree = ast.parse(source)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.append((name, node.lineno))
            out += [(f"{name}.{alias.name}", node.lineno) for alias in node.names]  # `from pkg import mod`
    return out


def violations(planted: dict[str, str] | None = None) -> list[str]:
    """Every forbidden import, as 'file:line: why'. `planted` adds virtual files (path → source) to
    check, so the checker's own test needs no writes to the source tree."""
    files = {path.relative_to(ROOT).as_posix(): (module, path.read_text()) for module, path in modules()}
    for rel, source in (planted or {}).items():
        files[rel] = (_module_name(rel), source)
    known = {module for module, _ in files.values()}
    found = []
    for rel, (module, source) in files.items():
        stage = stage_of(module)
        for name, line in imports_of(source, module, rel.endswith("__init__.py")):
            where = f"{rel}:{line}"
            top = name.split(".")[0]
            if top in LLM_LIBRARIES and stage not in MAY_IMPORT_LLM_LIBRARIES:
                found.append(f"{where}: {stage} imports {name} (only the agent may use LangGraph/LangChain)")
            if top != PACKAGE or (name not in known and name.rsplit(".", 1)[0] in known):
                continue  # not ours, or `from module import name` (the module itself was checked)
            target = stage_of(name)
            if stage in ANYTHING:
                continue
            if target not in ALLOWED[stage]:
                found.append(f"{where}: {stage} imports {name} ({target} is not before {stage})")
    return sorted(set(found))


def test_every_stage_imports_only_the_stages_before_it() -> None:
    assert violations() == []


def test_every_package_folder_has_a_place_in_the_rule() -> None:
    stages = {stage_of(m) for m, _ in modules()}
    assert stages <= set(ALLOWED) | ANYTHING, stages - set(ALLOWED) - ANYTHING


@pytest.mark.parametrize(
    ("stage_file", "forbidden"),
    [
        ("rftfm_agent/detect/_probe.py", "from rftfm_agent.faults import registry"),
        ("rftfm_agent/diagnose/_probe.py", "import rftfm_agent.testbed.runner"),
        ("rftfm_agent/telemetry/_probe.py", "from rftfm_agent.detect.events import Event"),
        ("rftfm_agent/detect/_probe.py", "from langgraph.graph import StateGraph"),
        ("rftfm_agent/testbed/_probe.py", "from rftfm_agent.faults.base import Injector"),
        ("rftfm_agent/detect/_probe.py", "from ..bench import presets"),
    ],
)
def test_the_rule_catches_a_forbidden_import(stage_file: str, forbidden: str) -> None:
    """The checker itself works: a planted forbidden import is reported."""
    found = violations({stage_file: forbidden + "\n"})
    assert any(v.startswith(stage_file) for v in found), forbidden
