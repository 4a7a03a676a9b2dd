"""A wheel-installed rftfm finds its tools, prompts, evals and bundled example.

Builds the wheel, unpacks it and imports rftfm from there (not from the source tree) in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_carries_tools_prompts_evals_and_example(tmp_path: Path) -> None:
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("rftfm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "rftfm_agent/cli/__init__.py",
        "rftfm_agent/tools/query_store.py",
        "rftfm_agent/prompts/untrusted_data.md",
        "rftfm_agent/evals/bench_ingest.py",
        "rftfm_agent/remediate/playbook.py",
        "rftfm_agent/supervise/supervisor.py",
        "rftfm_agent/data/examples/tiny_grpo_trainer_state.json",
    ):
        assert required in names, required
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import rftfm_agent, rftfm_agent.tools.query_store, rftfm_agent.evals.bench_ingest;"
        "from rftfm_agent.resources import example_path, prompt_text;"
        "assert rftfm_agent.__file__.startswith({!r}), rftfm_agent.__file__;"
        "assert example_path('tiny_grpo_trainer_state.json').is_file();"
        "assert '{{data}}' in prompt_text('untrusted_data.md');"
        "from rftfm_agent.cli import app;"
        "app(['demo', '--example', '--store', {!r}, '--png', {!r}], standalone_mode=False)"
    ).format(str(site), str(tmp_path / "store"), str(tmp_path / "demo.png"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "demo.png").stat().st_size > 5000
