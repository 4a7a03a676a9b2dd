"""Logs written with real GRPO dynamics in four formats (`evals/written_logs.py`): healthy ones stay
healthy, broken ones are flagged with the symptom of what broke, within 40 steps of its start. Two of these
failures (a reward collapse, a length running into the cap) were called healthy before the rules that
now catch them; a validation-only row and reward hacking were misread too."""

from __future__ import annotations

from pathlib import Path

from rftfm_agent.evals.written_logs import CASES, evaluate


def test_written_logs_are_judged_as_written(tmp_path: Path) -> None:
    rows = evaluate(tmp_path)
    assert len(rows) == len(CASES) and any(c.expected == "healthy" for c in CASES)
    wrong = [
        f"{r['log']}: {r['verdict']} at {r['first_alarm']}, {r['symptom']!r}" for r in rows if not r["ok"]
    ]
    assert not wrong, wrong
