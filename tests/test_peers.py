"""The side-by-side benchmark runs rftfm, rl-doctor and rlwatch on the same parsed rows and scores them
against labels; here on two hand-made logs (one learning, one with no learning signal)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from rftfm_agent.cli import app
from rftfm_agent.evals import compare_peers


def _log(path: Path, broken: bool, n: int = 80) -> Path:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(1, n + 1):
        t = i / n
        rows.append(
            {
                "step": i,
                "reward": 0.0 if broken else 0.2 + 0.6 * t + rng.normal(0, 0.03),
                "reward_std": 0.0 if broken else 0.3 + rng.normal(0, 0.02),
                "frac_reward_zero_std": 1.0 if broken else 0.1,
                "kl": 0.0 if broken else 0.001 + 0.02 * t,
                "grad_norm": 0.0 if broken else 0.5 + abs(rng.normal(0, 0.05)),
                "entropy": 1.4 - 0.1 * t,
                "completion_length": 200.0,
                "learning_rate": 1e-6,
            }
        )
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_the_three_tools_are_scored_on_the_same_rows(tmp_path: Path) -> None:
    cases = [
        compare_peers.Case("learning", "real", "healthy", (), _log(tmp_path / "ok.jsonl", broken=False)),
        compare_peers.Case(
            "dead", "real", "broken", ("learning signal",), _log(tmp_path / "dead.jsonl", broken=True)
        ),
    ]
    rows = compare_peers.evaluate(cases)
    ok, dead = rows
    assert dead["rftfm"]["right"] and dead["rftfm"]["critical"]
    assert not ok["rftfm"]["critical"]
    for tool in ("rldoctor", "rlwatch"):  # the peers really ran and were scored the same way
        assert set(dead[tool]) == {"flagged", "critical", "right", "said", "seconds"}
        assert dead[tool]["seconds"] > 0
    assert dead["rldoctor"]["flagged"]  # rl-doctor sees a run with zero gradients, as it should
    totals = compare_peers.totals(rows)
    assert totals["rftfm"]["true_findings"] == 1 and totals["rftfm"]["false_criticals"] == 0
    text = compare_peers.to_markdown(rows, "rftfm eval peers …")
    assert "| dead | broken | ✓ **C**" in text


def test_cli_needs_something_to_compare(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "peers"])
    assert result.exit_code == 1 and "nothing to compare" in result.output
    result = CliRunner().invoke(app, ["eval", "peers", "--realruns", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "no such folder" in result.output
