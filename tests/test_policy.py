"""The safety policy: a file a person edits, validated with one clear error, and rules that decide."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rftfm_agent.cli import app
from rftfm_agent.errors import RftfmError
from rftfm_agent.remediate.actions import (
    ACTION_KINDS,
    FallbackReward,
    SetLearningRate,
    SetSampling,
    SkipUpdates,
    ToolRetry,
)
from rftfm_agent.remediate.planner import Candidate
from rftfm_agent.supervise.policy import DEFAULT_POLICY_TOML, Policy, Situation


def _candidate(*actions: object) -> Candidate:
    return Candidate(id="t#0", actions=list(actions), why="test", reference="test")


def _situation(**kw: object) -> Situation:
    base: dict[str, object] = {
        "incident_step": 10,
        "checkpoint_step": 6,
        "current": {"learning_rate": 2e-4, "temperature": 1.0},
        "configured": {"learning_rate": 2e-4, "temperature": 1.0},
    }
    base.update(kw)
    return Situation(**base)  # type: ignore[arg-type]


def test_the_default_policy_file_loads_and_lists_every_action() -> None:
    policy = Policy.load()
    assert policy.mode == "ask"
    assert set(policy.allowed_actions) == set(ACTION_KINDS)
    assert "learning_rate" in policy.knobs and policy.knobs["learning_rate"].max_factor == 10.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[knobs.lr]\nmax = 1.0\n", "unknown knob 'lr'"),
        ("mode = 'yolo'\n", "mode"),
        ("verify_steps = 0\n", "verify_steps"),
        ("[knobs.temperature]\nmin = 2.0\nmax = 1.0\n", "min 2.0 is above max 1.0"),
        ("[knobs.temperature]\nmax_factor = 0.5\n", "max_factor"),
        ("allowed_actions = ['set_learning_rate', 'delete_run']\n", "unknown action 'delete_run'"),
        ("mode = 'auto'\nmax_interventions = \n", "not a valid TOML policy"),
        ("colour = 'red'\n", "colour"),
    ],
)
def test_a_bad_policy_file_is_one_line_naming_the_file_and_the_problem(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(RftfmError) as info:
        Policy.load(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message


def test_a_missing_policy_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RftfmError, match="no such policy file"):
        Policy.load(tmp_path / "absent.toml")


def test_the_cli_refuses_a_bad_policy_before_anything_is_trained_or_written(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[knobs.learning_rate]\nmin = 1e-3\nmax = 1e-5\n")
    workdir = tmp_path / "work"
    result = CliRunner().invoke(
        app, ["supervise", "--policy", str(path), "--workdir", str(workdir), "--steps", "2"]
    )
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(path) in lines[0] and "above max" in lines[0]
    assert not workdir.exists()


def test_show_policy_prints_the_default_file() -> None:
    result = CliRunner().invoke(app, ["supervise", "--show-policy"], env={"COLUMNS": "40"})
    assert result.exit_code == 0
    assert result.output == DEFAULT_POLICY_TOML  # not wrapped to a narrow terminal: a valid file as is


def test_rules_in_order_mode_budget_cooldown_checkpoint() -> None:
    fix = _candidate(SetLearningRate(value=1e-4))
    assert Policy.load(mode="observe").check(fix, _situation()).rule == "mode"
    auto = Policy.load(mode="auto")
    assert auto.check(fix, _situation()).verdict == "apply"
    spent = auto.check(fix, _situation(interventions=3))
    assert (spent.verdict, spent.rule) == ("refuse", "budget")
    cooling = auto.check(fix, _situation(steps_since_intervention=1))
    assert (cooling.verdict, cooling.rule) == ("refuse", "cooldown")
    for checkpoint in (None, 10, 12):  # none, or none from before the incident at step 10
        missing = auto.check(fix, _situation(checkpoint_step=checkpoint))
        assert (missing.verdict, missing.rule) == ("refuse", "checkpoint")
    assert Policy.load(mode="ask").check(fix, _situation()).verdict == "ask"


def test_bounds_and_largest_change_per_intervention() -> None:
    auto = Policy.load(mode="auto")
    too_high = auto.check(_candidate(SetLearningRate(value=5e-3)), _situation())
    assert (too_high.verdict, too_high.rule) == ("refuse", "bounds")
    jump = auto.check(_candidate(SetLearningRate(value=1e-6)), _situation())
    assert (jump.verdict, jump.rule) == ("refuse", "max_change")
    # Back to the configured value is exempt from the step limit (the user chose it) …
    restore = _situation(current={"learning_rate": 1e-2}, configured={"learning_rate": 2e-4})
    assert auto.check(_candidate(SetLearningRate(value=2e-4)), restore).verdict == "apply"
    # … unless the policy says otherwise.
    strict = Policy.load(mode="auto", restore_configured_exempt=False)
    assert strict.check(_candidate(SetLearningRate(value=2e-4)), restore).rule == "max_change"
    cold = auto.check(_candidate(SetSampling(temperature=0.1)), _situation())
    assert (cold.verdict, cold.rule) == ("refuse", "bounds")


def test_allowlist_of_actions_and_knobs() -> None:
    narrow = Policy.load(mode="auto", allowed_actions=["set_sampling"])
    decision = narrow.check(_candidate(SetLearningRate(value=1e-4)), _situation())
    assert (decision.verdict, decision.rule) == ("refuse", "allowlist")
    no_lr = Policy.model_validate({"mode": "auto", "knobs": {"temperature": {"max": 1.5}}})
    decision = no_lr.check(_candidate(SetLearningRate(value=1e-4)), _situation())
    assert decision.rule == "allowlist" and "learning_rate" in decision.reason


def test_reward_and_data_changes_need_a_person_unless_allowed() -> None:
    auto = Policy.load(mode="auto")
    reward = auto.check(_candidate(FallbackReward(name="strict")), _situation())
    assert (reward.verdict, reward.rule) == ("ask", "allow_reward_changes")
    data = auto.check(_candidate(SkipUpdates(steps=[9])), _situation())
    assert (data.verdict, data.rule) == ("ask", "allow_data_changes")
    assert auto.check(_candidate(ToolRetry(retries=2)), _situation()).verdict == "apply"
    trusting = Policy.load(mode="auto", allow_reward_changes=True, allow_data_changes=True)
    assert trusting.check(_candidate(FallbackReward(name="strict")), _situation()).verdict == "apply"
    assert trusting.check(_candidate(SkipUpdates(steps=[9])), _situation()).verdict == "apply"
