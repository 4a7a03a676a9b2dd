"""Scale-free rules (runs without a healthy band) and the plain-language findings built on them: each rule
fires on the curve it is for, stays quiet on a learning run, and reads as a symptom with causes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rftfm_agent.detect.api import load_detector
from rftfm_agent.detect.detector import RunData
from rftfm_agent.detect.events import RunVerdict
from rftfm_agent.detect.scale_free import SCALE_FREE_RULES, ScaleFreeRules, without_scale_free
from rftfm_agent.diagnose.findings import TEMPLATES, findings_for, headline


def _healthy(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """A run that learns: reward rises with noise, KL grows slowly from ~0, nothing degenerate."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)
    return pd.DataFrame(
        {
            "step": np.arange(1, n + 1),
            "reward": 0.2 + 0.6 * t + rng.normal(0, 0.05, n),
            "reward_std": 0.3 + rng.normal(0, 0.03, n).clip(-0.2, 0.2),
            "kl": 0.0005 + 0.05 * t + np.abs(rng.normal(0, 0.005, n)),
            "entropy": 0.5 - 0.3 * t + rng.normal(0, 0.01, n),
            "loss": np.abs(rng.normal(0.01, 0.005, n)),
            "grad_norm": 0.4 + np.abs(rng.normal(0, 0.2, n)),
            "learning_rate": np.full(n, 1e-6),
            "completion_length": 150 - 40 * t + rng.normal(0, 5, n),
            "completions/max_length": np.full(n, 256.0),
            "rewards/correct/mean": 0.2 + 0.6 * t + rng.normal(0, 0.05, n),
        }
    )


def _fired(frame: pd.DataFrame, online: bool = False) -> dict[str, str]:
    rules = ScaleFreeRules(online=online)
    events = []
    for row in frame.to_dict("records"):
        events += rules.update(int(row.pop("step")), row)
    events += rules.finish()
    return {e.check: e.severity for e in events}


def test_every_rule_is_data_with_a_reference_and_a_template() -> None:
    for name, rule in SCALE_FREE_RULES.items():
        assert rule.reference and rule.window and rule.description, name
        assert name in TEMPLATES, f"{name}: no plain-language template"


@pytest.mark.parametrize("seed", range(5))
def test_a_learning_run_is_quiet(seed: int) -> None:
    assert _fired(_healthy(seed=seed)) == {}


def _with(**columns: object) -> pd.DataFrame:
    frame = _healthy()
    for name, values in columns.items():
        frame[name] = values
    return frame


def test_no_learning_signal_on_most_steps() -> None:
    n = 120
    std = np.where(np.arange(n) % 10 < 9, 0.0, 0.3)  # 90 % of steps: every group equal
    assert _fired(_with(reward_std=std))["no_signal_most_steps"] == "critical"
    std = np.where(np.arange(n) % 2 == 0, 0.0, 0.3)  # half the steps
    assert _fired(_with(reward_std=std))["no_signal_many_steps"] == "warning"


def test_not_learning_needs_a_flat_reward_and_little_signal() -> None:
    rng = np.random.default_rng(1)
    n = 120
    flat = 0.4 + rng.normal(0, 0.1, n)
    std = np.where(np.arange(n) % 2 == 0, 0.0, 0.3)
    fired = _fired(_with(reward=flat, reward_std=std))
    assert fired["not_learning"] == "critical" and fired["reward_plateau"] == "warning"
    assert "not_learning" not in _fired(_with(reward_std=std))  # the same signal share, but learning


def test_kl_drift_without_gain() -> None:
    rng = np.random.default_rng(4)
    flat = 0.4 + rng.normal(0, 0.05, 120)
    kl = np.linspace(0.001, 0.3, 120)
    assert _fired(_with(reward=flat, kl=kl))["kl_drift_without_gain"] == "warning"
    assert "kl_drift_without_gain" not in _fired(_with(kl=kl))  # the same KL growth, with a reward gain


def test_reward_never_changes_and_a_stuck_component() -> None:
    fired = _fired(_with(reward=np.zeros(120), **{"rewards/correct/mean": np.zeros(120)}))
    assert fired["reward_never_changes"] == "critical"
    fired = _fired(_with(**{"rewards/format/mean": np.zeros(120)}))
    assert fired == {"reward_component_stuck": "warning"}


def test_kl_runaway_against_its_early_level_and_the_ceiling() -> None:
    kl = np.concatenate([np.full(20, 0.002), np.linspace(0.002, 3.0, 50), np.full(50, 2.5)])
    assert _fired(_with(kl=kl))["kl_runaway"] == "critical"
    high_from_start = np.full(120, 1.5)
    assert _fired(_with(kl=high_from_start)) == {"kl_high": "warning"}
    spike = np.full(120, 0.01)
    spike[60] = 5.0  # one logged value is not sustained
    assert _fired(_with(kl=spike)) == {}


def test_loss_and_gradient_blowups_by_orders_of_magnitude() -> None:
    loss = np.full(120, 0.5)
    loss[80] = 0.5e6
    assert _fired(_with(loss=loss))["loss_blowup"] == "critical"
    grad = np.full(120, 0.5)
    grad[80] = 100.0  # 200×
    assert _fired(_with(grad_norm=grad)) == {"grad_spike": "warning"}
    grad[90] = 1e4
    assert _fired(_with(grad_norm=grad))["grad_blowup"] == "critical"


def test_entropy_and_length_collapse_and_explosion() -> None:
    entropy = np.concatenate([np.full(20, 0.5), np.full(100, 0.01)])
    assert _fired(_with(entropy=entropy)) == {"entropy_collapse": "critical"}
    length = np.concatenate([np.full(20, 150.0), np.full(100, 4.0)])
    assert _fired(_with(completion_length=length))["length_collapse"] == "critical"
    length = np.concatenate([np.full(20, 40.0), np.full(100, 200.0)])
    assert _fired(_with(completion_length=length)) == {"length_explosion": "warning"}
    capped = _with(completion_length=np.full(120, 256.0))
    assert _fired(capped)["same_length"] == "critical"
    rising = np.concatenate([np.full(20, 0.05), np.full(100, 0.6)])
    assert _fired(_with(**{"completions/clipped_ratio": rising})) == {"truncation_rising": "warning"}
    falling = np.concatenate([np.full(20, 0.7), np.full(100, 0.1)])  # learning to stop
    assert _fired(_with(**{"completions/clipped_ratio": falling})) == {}


def test_reward_decline_and_collapse_from_its_best() -> None:
    """A reward that gives back part of its gain is a decline (a warning); one that learned and lost it,
    most of the gain gone in a fall far outside its noise, is a collapse (critical), dated where it fell
    and not mistaken for a plateau ("no improvement") or a run that never learned. It was a warning that
    the plateau line hid: a run whose reward fell from 0.6 to 0.05 was called healthy."""
    rng = np.random.default_rng(2)
    t = np.linspace(0, 1, 120)
    partial = np.where(t < 0.5, 0.2 + 1.2 * t, 0.8 - 0.7 * (t - 0.5)) + rng.normal(0, 0.03, 120)
    assert _fired(_with(reward=partial)) == {"reward_decline": "warning"}
    # Not learned, so not lost (a review found these called collapses): a reward that drifts 0.01 under
    # noise of 0.01, a flat one with a 10-step excursion, a 15-step bump.
    s = np.arange(300)
    drift = (
        0.8 + 0.012 * np.minimum(s / 30, 1) - 0.035 * np.clip((s - 60) / 240, 0, 1) + rng.normal(0, 0.01, 300)
    )
    excursion = 0.3 + rng.normal(0, 0.05, 300)
    excursion[40:50] += 0.3
    bump = np.array(
        [0.50, 0.51, 0.52, 0.53, 0.54, 0.55, 0.55, 0.54, 0.53, 0.52, 0.51, 0.50, 0.50, 0.50, 0.50]
    )
    for reward in (drift, excursion, bump):
        frame = pd.DataFrame({"step": np.arange(1, len(reward) + 1), "reward": reward})
        assert _fired(frame).get("reward_collapse") is None
    for online in (False, True):
        steps = np.arange(1, 201)
        collapse = np.where(steps < 120, 0.2 + 0.4 * steps / 120, 0.05) + rng.normal(0, 0.04, 200)
        rules = ScaleFreeRules(online=online)
        events = []
        for step, value in zip(steps, collapse, strict=True):
            events += rules.update(int(step), {"reward": float(value), "reward_std": 0.3})
        events += rules.finish()
        fired = {e.check: e for e in events}
        assert fired["reward_collapse"].severity == "critical", online
        assert 115 <= fired["reward_collapse"].step <= 140, fired["reward_collapse"].step
        if not online:  # online a third-by-third plateau may show while the fall is under way
            assert not {"reward_plateau", "not_learning"} & fired.keys()
    verdict = RunVerdict.judge("r", "self", [fired["reward_collapse"]], 1.0, [])
    (finding,) = findings_for(verdict, _with(reward=collapse[:120]))
    assert finding.severity == "critical" and finding.symptom.startswith("reward collapse: the reward fell")


def test_nearly_every_completion_cut_at_the_cap_is_critical() -> None:
    """Length running into the cap shows as ~99 % of completions cut, rarely exactly 100 % (the hard rule's
    bar): it was only a warning that read "50 %", the share when it first crossed half; the critical
    finding now leads with the share at 90 % and over."""
    rising = np.concatenate([np.full(20, 0.01), np.linspace(0.01, 0.99, 30), np.full(70, 0.99)])
    fired = _fired(_with(**{"completions/clipped_ratio": rising}))
    assert fired == {"truncation_rising": "warning", "truncation_most": "critical"}
    always = np.full(120, 0.95)  # cut from the start: a cap too small for the task, its own rule
    assert _fired(_with(**{"completions/clipped_ratio": always})) == {"truncation_from_start": "critical"}


def test_whole_run_rules_wait_online_so_a_slow_start_is_not_an_incident() -> None:
    """Models often earn nothing for their first steps: zero reward and zero-variance groups there, then
    learning. Online the whole-run rules wait for 50 steps; offline they judge the complete run."""
    frame = _healthy()
    frame.loc[:29, ["reward", "reward_std", "rewards/correct/mean"]] = 0.0
    assert _fired(frame, online=False) == {}
    assert "reward_never_changes" not in _fired(frame, online=True)


def test_whole_run_rules_are_for_self_mode_sustained_ones_for_both_and_the_fingerprint_ignores_them() -> None:
    """With a healthy band the whole-run judgements stay with the band; the sustained rules run too, since
    the band's thresholds come from healthy runs whose KL has heavy tails: a KL of 1.2–2.0 nats (over
    1,000× its start) after an optimizer rebuilt at 10× the learning rate was no alarm in band mode
    (`mid` seed 7, od_optimizer_reset easy: its run lost 42 % of the control's held-out gain)."""
    detector = load_detector()
    dead = _with(reward=np.zeros(120), reward_std=np.zeros(120))
    verdict = detector.score_run(RunData("dead", None, dead))
    assert verdict.mode == "self" and verdict.verdict == "anomalous"
    assert {"no_signal_most_steps", "reward_never_changes"} <= {e.check for e in verdict.events}
    stripped = without_scale_free(verdict)
    assert not any(e.check in SCALE_FREE_RULES for e in stripped.events)
    task = next(iter(detector.bands))
    banded = detector.score_run(RunData("dead", task, dead))
    assert banded.mode == "band" and not any(e.check in SCALE_FREE_RULES for e in banded.events)
    runaway = _with(kl=np.r_[np.full(60, 0.001), np.linspace(0.01, 2.0, 60)])
    banded = detector.score_run(RunData("reset", task, runaway))
    fired = [e for e in banded.events if e.check in SCALE_FREE_RULES]
    assert [(e.check, e.severity) for e in fired] == [("kl_runaway", "critical")], fired
    assert banded.verdict == "anomalous" and not any(
        e.check in SCALE_FREE_RULES for e in without_scale_free(banded).events
    )


def test_findings_say_the_symptom_causes_and_checks() -> None:
    detector = load_detector()
    dead = _with(reward=np.zeros(120), reward_std=np.zeros(120), grad_norm=np.zeros(120))
    verdict = detector.score_run(RunData("dead", None, dead))
    found = findings_for(verdict, dead)
    lead = found[0]
    assert lead.topic == "learning signal" and lead.severity == "critical" and lead.confidence == "high"
    assert lead.symptom.startswith("no learning signal") and len(lead.rules) >= 2
    assert "too hard" in lead.causes[0] and lead.play == "symptom:no_signal_too_hard"
    assert lead.checks and headline(found, verdict) == lead.symptom
    solved = _with(reward=np.ones(120), reward_std=np.zeros(120), grad_norm=np.zeros(120))
    easy = findings_for(detector.score_run(RunData("easy", None, solved)), solved)
    assert easy[0].play == "symptom:no_signal_too_easy" and "too easy" in easy[0].causes[0]


def test_findings_of_a_healthy_run_and_of_a_log_that_cannot_tell() -> None:
    detector = load_detector()
    frame = _healthy()
    verdict = detector.score_run(RunData("ok", None, frame))
    assert verdict.verdict == "healthy"
    assert headline(findings_for(verdict, frame), verdict).startswith("healthy")
    short = _healthy(n=8)
    v = detector.score_run(RunData("short", None, short))
    assert headline(findings_for(v, short), v).startswith("unknown: only 8 steps")
    no_reward = _healthy().drop(columns=["reward", "rewards/correct/mean"])
    v = detector.score_run(RunData("nr", None, no_reward))
    assert "no reward" in headline(findings_for(v, no_reward), v)
    empty = RunVerdict.judge("x", "self", [], math.inf, [])
    assert findings_for(empty, frame) == []


def test_a_finding_says_where_the_metric_ended_when_it_went_on() -> None:
    """A sustained rule quotes the level it fired at: a length collapse read "21.4 tokens" for a run that
    ended at 4. The finding now adds the last value when it moved on by a fifth or more."""
    length = np.concatenate(
        [np.full(20, 230.0), np.linspace(230, 21, 10), np.linspace(20, 4, 20), np.full(70, 4.0)]
    )
    frame = _with(completion_length=length, reward=np.full(120, 0.5))  # not a hacked reward
    rules = ScaleFreeRules(online=False)
    events = []
    for row in frame.to_dict("records"):
        events += rules.update(int(row.pop("step")), row)
    verdict = RunVerdict.judge("r", "self", events, 1.0, [])
    (finding,) = [f for f in findings_for(verdict, frame) if f.topic == "length"]
    assert finding.symptom.startswith("length collapse:") and finding.symptom.endswith(
        "; 4 at the last step (120)"
    )


def test_completions_collapsing_while_the_reward_climbs_read_as_reward_hacking() -> None:
    """Reward → 0.97 while completions shrink to 4 tokens read as a plain length collapse, and triage
    offered the too-easy data filter; now the finding suspects the reward (its play escalates to a person).
    A length collapse with a flat reward, or with a reward that rose and then fell with it, stays one."""
    rng = np.random.default_rng(3)
    t = np.linspace(0, 1, 120)
    length = np.where(t < 0.4, 230.0, 4.0) + rng.normal(0, 1, 120).clip(-0.5, 0.5)
    fell = np.where(t < 0.5, 0.2 + 1.2 * t, 0.8 - 0.7 * (t - 0.5))  # rose, then fell with the length
    for reward, expected in (
        (fell, "length collapse:"),
        (0.3 + 0.65 * t, "reward hacking suspected: the reward rose"),
        (0.3 + 0 * t, "length collapse:"),
    ):
        frame = _with(completion_length=length, reward=reward + rng.normal(0, 0.02, 120))
        rules = ScaleFreeRules(online=False)
        events = []
        for row in frame.to_dict("records"):
            events += rules.update(int(row.pop("step")), row)
        events += rules.finish()
        verdict = RunVerdict.judge("r", "self", events, 1.0, [])
        (finding,) = [f for f in findings_for(verdict, frame) if f.topic == "length"]
        assert finding.severity == "critical" and finding.symptom.startswith(expected), finding.symptom
        assert (finding.play == "symptom:reward_hacking") == expected.startswith("reward hacking")


def test_a_collapse_is_judged_at_its_bottom_and_dated_where_it_fell() -> None:
    """A collapse that recovers part of the way (0.65 → 0.1 → 0.4) was a mere decline; a dip the run
    recovered from is not a collapse; a collapse is dated where the reward fell (it was dated where the
    smoothing saw it, ~10-25 steps later). A reward that went to exactly 0 after the run had learned is
    the reward failing, not data too hard: that finding loses its data play."""
    rng = np.random.default_rng(4)
    s = np.arange(1, 301)
    rise = 0.2 + 0.45 / (1 + np.exp(-(s - 60) / 10))
    partial = np.where(s < 150, rise, np.where(s < 180, 0.1, 0.1 + 0.3 * np.clip((s - 180) / 40, 0, 1)))
    dip = np.where((s >= 150) & (s < 170), 0.1, rise)
    for reward, collapses in ((partial, True), (dip, False)):
        frame = pd.DataFrame({"step": s, "reward": reward + rng.normal(0, 0.03, 300)})
        events = {e.check: e for e in _events(frame)}
        assert ("reward_collapse" in events) == collapses
        if collapses:
            collapse = events["reward_collapse"]
            assert 145 <= collapse.step <= 155 and collapse.evidence["now"] > collapse.evidence["value"] + 0.2
    n = 200
    dead = pd.DataFrame(
        {
            "step": np.arange(1, n + 1),
            "reward": np.where(np.arange(n) < 120, 0.2 + 0.4 * np.minimum(np.arange(n) / 60, 1), 0.0),
            "reward_std": np.where(np.arange(n) < 120, 0.3, 0.0),
            "frac_reward_zero_std": np.where(np.arange(n) < 120, 0.2, 1.0),
        }
    )
    dead["reward"] += np.where(np.arange(n) < 120, rng.normal(0, 0.03, n), 0.0)
    verdict = RunVerdict.judge("r", "self", _events(dead), 1.0, [])
    signal = next(f for f in findings_for(verdict, dead) if f.topic == "learning signal")
    assert signal.play is None and signal.causes[0].startswith("the reward stopped paying")


def _events(frame: pd.DataFrame) -> list:
    rules = ScaleFreeRules(online=False)
    events = []
    for row in frame.to_dict("records"):
        events += rules.update(int(row.pop("step")), row)
    return events + rules.finish()


def test_a_streak_finding_names_where_the_state_began_and_how_long_it_held() -> None:
    """A run dead from step 1 read "gradient norm exactly 0 from step 3" and "the mean reward stayed at 0
    for 6 steps" (the steps that confirmed the rules); now from step 1, for the 40 steps it held."""
    n = 40
    dead = pd.DataFrame(
        {
            "step": np.arange(1, n + 1),
            "reward": np.zeros(n),
            "reward_std": np.zeros(n),
            "grad_norm": np.zeros(n),
            "loss": np.zeros(n),
            "learning_rate": np.full(n, 1e-6),
        }
    )
    verdict = load_detector().score_run(RunData("dead", None, dead))
    lines = [line for f in findings_for(verdict, dead) for line in (f.symptom, *f.evidence)]
    assert any("gradient norm exactly 0 from step 1" in line for line in lines), lines
    assert any("the mean reward stayed at 0 for 40 steps" in line for line in lines), lines


def _saturating(n: int = 120, start: float = 0.3) -> pd.DataFrame:
    """A run that masters its prompts: the reward rises to near 1 in its first fifth, and the groups whose
    samples all succeed (no signal) come with it."""
    rng = np.random.default_rng(3)
    solved = 1 / (1 + np.exp(-(np.arange(n) - 0.15 * n) / (0.04 * n)))
    frame = _healthy(n)
    frame["reward"] = start + (0.97 - start) * solved + rng.normal(0, 0.02, n)
    frame["frac_reward_zero_std"] = np.clip(0.2 + 0.77 * solved + rng.normal(0, 0.01, n), 0, 0.99)
    return frame


def test_groups_all_solved_as_the_reward_rose_are_a_saturated_run_not_a_failure() -> None:
    fired = _fired(_saturating())
    assert fired == {"reward_saturated": "warning"}, fired
    # groups half all-equal at the top of the reward's range are mixed (all solved and all failed), not a
    # solved run: the weak-signal warning, not "solved its prompts"
    mixed = _saturating()
    mixed["frac_reward_zero_std"] = mixed["frac_reward_zero_std"] * 0.5
    assert _fired(mixed) == {"no_signal_many_steps": "warning"}
    # online, the weak-signal warning comes first, before most of the run is solved
    assert _fired(_saturating(), online=True) == {
        "no_signal_many_steps": "warning",
        "reward_saturated": "warning",
    }


def test_groups_all_equal_without_a_rise_stay_critical() -> None:
    """The same share of all-equal groups is no learning at all when the reward never rose: paid on every
    sample from the start (too easy from step 1) or never paid (too hard)."""
    n, rng = 120, np.random.default_rng(4)
    frac = np.clip(0.9 + rng.normal(0, 0.02, n), 0, 0.99)
    for reward in (0.95 + rng.normal(0, 0.01, n), 0.02 + rng.normal(0, 0.01, n)):
        fired = _fired(_with(reward=reward, frac_reward_zero_std=frac))
        assert fired.get("no_signal_most_steps") == "critical" and "reward_saturated" not in fired, fired
    # a reward that fell while the groups went all-equal is not a saturated run either
    falling = _saturating()
    falling["reward"] = falling["reward"].to_numpy()[::-1]
    fired = _fired(falling)
    assert "reward_saturated" not in fired and any(s == "critical" for s in fired.values()), fired


def test_a_saturated_run_reads_as_solved_with_the_too_easy_play() -> None:
    frame = _saturating()
    verdict = load_detector().score_run(RunData("sat", None, frame))
    assert verdict.verdict == "healthy", verdict.events
    (finding,) = [f for f in findings_for(verdict, frame) if f.topic == "learning signal"]
    assert finding.severity == "warning" and "solved its prompts" in finding.symptom
    assert finding.play == "symptom:no_signal_too_easy"


def test_a_run_that_starts_without_signal_and_then_learns_is_a_slow_start_not_an_incident() -> None:
    """Every group all 0 and a gradient of exactly 0 (β = 0) for the first 20 steps, then learning: the
    streak rules fired critical at step 3 in self mode ("no learning signal from step 1") on a run that
    learns. Held back while the run has been in the state since its start: a warning saying where it
    left it; critical when it never does (to the end offline, for 50 rows online)."""
    detector = load_detector()
    frame = _healthy()
    frame.loc[:19, ["reward", "rewards/correct/mean", "grad_norm"]] = 0.0
    frame["frac_reward_zero_std"] = np.where(frame.index < 20, 1.0, 0.3)
    verdict = detector.score_run(RunData("slow", None, frame))
    assert verdict.verdict == "healthy", verdict.alarms
    start = {e.check: e for e in verdict.events if e.check in ("zero_std_groups", "grad_norm_zero")}
    assert set(start) == {"zero_std_groups", "grad_norm_zero"}
    assert all(e.severity == "warning" and e.evidence["ended_at"] == 21 for e in start.values())
    (finding,) = [f for f in findings_for(verdict, frame) if f.topic == "learning signal"]
    assert "from step 1; a learning signal from step 21 on (a slow start)" in finding.symptom

    dead = frame.copy()
    dead["grad_norm"], dead["frac_reward_zero_std"] = 0.0, 1.0
    verdict = detector.score_run(RunData("dead", None, dead))
    fired = {e.check: (e.severity, e.step) for e in verdict.events}
    assert fired["grad_norm_zero"] == ("critical", 3) and fired["zero_std_groups"] == ("critical", 3)
    monitor = detector.monitor(None, "dead")  # online: the supervisor's view
    online = [(row["step"], e) for row in dead.to_dict("records") for e in monitor.update(row)]
    first = {e.check: step for step, e in online if e.check in ("zero_std_groups", "grad_norm_zero")}
    assert first == {"zero_std_groups": 50, "grad_norm_zero": 50}
    # a slow start, then the signal lost mid-run: that loss is an incident
    later = frame.copy()
    later.loc[80:, "grad_norm"] = 0.0
    verdict = detector.score_run(RunData("later", None, later))
    fired = [(e.check, e.severity, e.step) for e in verdict.events if e.check == "grad_norm_zero"]
    assert fired == [("grad_norm_zero", "warning", 3), ("grad_norm_zero", "critical", 83)], fired
    # a run that had signal and lost it is judged at once, as before
    lost = _healthy()
    lost.loc[60:, "grad_norm"] = 0.0
    verdict = detector.score_run(RunData("lost", None, lost))
    assert ("grad_norm_zero", "critical", 63) in {(e.check, e.severity, e.step) for e in verdict.events}


def test_a_reward_that_falls_from_the_start_is_critical_when_it_loses_half() -> None:
    """A learning rate 100× too high from step 1: the reward only falls (0.40 → 0.07). It was "not
    learning: the reward is flat (0.223 → 0.075)" at the run's last step. A curriculum that gets harder also
    lowers the training reward, by less: a warning."""
    n, rng = 120, np.random.default_rng(5)
    t = np.linspace(0, 1, n)
    fired = _fired(_with(reward=0.40 - 0.33 * t + rng.normal(0, 0.04, n)))
    assert fired.get("reward_fell") == "critical", fired
    assert not {"reward_plateau", "not_learning"} & set(fired)
    harder = _fired(_with(reward=0.80 - 0.25 * t + rng.normal(0, 0.04, n)))
    assert harder.get("reward_decline") == "warning" and "reward_fell" not in harder, harder
    ppo_scores = _fired(_with(reward=0.9 - 10.5 * t**2 + rng.normal(0, 0.3, n)))  # TRL PPO's objective/scores
    assert ppo_scores.get("reward_fell") == "critical", ppo_scores
    frame = _with(reward=0.40 - 0.33 * t + rng.normal(0, 0.04, n))
    verdict = load_detector().score_run(RunData("lr", None, frame))
    fell = next(e for e in verdict.events if e.check == "reward_fell")
    assert 40 <= fell.step <= 75  # where it went under halfway (0.235 at t ≈ 0.5), not the run's end
    (finding,) = [f for f in findings_for(verdict, frame) if f.topic == "progress"]
    assert finding.symptom.startswith("reward fell from the start") and "learning rate" in finding.causes[0]


def test_completions_cut_at_the_cap_from_the_start_are_critical_after_30_steps() -> None:
    """98 % cut from step 1 never rises to twice its start, so `truncation_most` never fired; a model that
    rambles at first and learns to stop is not this: online its share is low again by step 30, and offline
    a run still cut for its first 22 steps but not at its end is healthy (it was critical at step 20 with a
    doubled cap proposed, which would have thrown away 177 good steps)."""
    n, rng = 120, np.random.default_rng(6)
    stuck = np.clip(0.98 + rng.normal(0, 0.005, n), 0, 1)
    for online in (True, False):
        rules, events = ScaleFreeRules(online=online), []
        for step, share in enumerate(stuck, 1):
            events += rules.update(step, {"completions/clipped_ratio": float(share)})
        events += rules.finish()
        assert [(e.check, e.step) for e in events] == [("truncation_from_start", 30)], events
    learns = np.clip(0.95 * np.exp(-np.arange(n) / 8) + 0.02 + rng.normal(0, 0.005, n), 0, 1)
    assert _fired(_with(**{"completions/clipped_ratio": learns})) == {}
    late = np.where(np.arange(n) < 22, 0.95, 0.03) + rng.normal(0, 0.005, n)
    assert _fired(_with(**{"completions/clipped_ratio": late})) == {}
    assert _fired(_with(**{"completions/clipped_ratio": late}), online=True) == {}
    every10 = _with(**{"completions/clipped_ratio": stuck})  # logged every 10 steps: steps, not rows, count
    every10["step"] = every10["step"] * 10
    assert _fired(every10) == {"truncation_from_start": "critical"}


@pytest.mark.parametrize("per_step", [0.08, 0.2, 0.5])
def test_a_steep_crash_after_a_rise_is_a_collapse_however_steep(per_step: float) -> None:
    """The reward's noise was the standard deviation of its step differences, which the crash itself
    inflates: a crash of 0.2-0.5 a step (TRL PPO's objective/scores 0.9 → -9.6) was a mere decline, or
    "not learning: the reward is flat (0.318 → -6.45)"; one of 0.08 a step was a collapse."""
    rng = np.random.default_rng(7)
    rise = np.linspace(0.22, 0.58, 20) + rng.normal(0, 0.02, 20)
    crash = 0.58 - per_step * np.arange(1, 21) + rng.normal(0, 0.02, 20)
    frame = _healthy(40)
    frame["reward"] = np.concatenate([rise, crash])
    frame["rewards/correct/mean"] = frame["reward"]
    fired = _fired(frame)
    assert fired.get("reward_collapse") == "critical", fired
    assert "not_learning" not in fired and "reward_plateau" not in fired


def test_rare_early_successes_are_still_a_slow_start_and_a_solved_run_is_not_critical() -> None:
    """Reward ~0.004 for 50 steps (a success now and then: 97-99 % of groups all equal, and 3-step
    stretches of 100 %), then learning: it was critical at step 12 ("every group got identical rewards from
    step 10"). A run whose groups all went equal as its reward reached the top of its range (it solved its
    prompts) was critical through the same streak rule; both are warnings now. A mid-run loss of signal at a
    middling reward stays critical."""
    detector = load_detector()
    rng = np.random.default_rng(9)
    frame = _healthy(200)
    early = np.arange(200) < 50
    frame["frac_reward_zero_std"] = np.where(early, rng.choice([0.97, 0.99, 1.0, 1.0], 200), 0.3)
    frame.loc[early, ["reward", "rewards/correct/mean"]] = 0.004
    verdict = detector.score_run(RunData("sparks", None, frame))
    assert verdict.verdict == "healthy", verdict.alarms

    solved = _saturating(200)
    solved.loc[120:, "frac_reward_zero_std"] = 1.0
    verdict = detector.score_run(RunData("solved", None, solved))
    assert verdict.verdict == "healthy", verdict.alarms
    (finding,) = [f for f in findings_for(verdict, solved) if f.topic == "learning signal"]
    assert "the run solved its prompts" in finding.symptom and finding.play == "symptom:no_signal_too_easy"

    lost = _healthy(200)
    lost["frac_reward_zero_std"] = np.where(np.arange(200) < 100, 0.3, 1.0)
    verdict = detector.score_run(RunData("lost", None, lost))
    assert ("zero_std_groups", "critical") in {(e.check, e.severity) for e in verdict.events}


def test_a_flat_reward_that_pays_most_samples_is_not_a_run_that_cannot_learn() -> None:
    """A reward flat near 0.8 (on a [0, 1] scale) with 44 % of groups all equal: mostly solved groups,
    little left to learn; it was critical "not learning". The same at 0.23 still is."""
    rng = np.random.default_rng(11)
    frac = np.clip(0.44 + rng.normal(0, 0.03, 120), 0, 1)
    high = _fired(_with(reward=0.8 + rng.normal(0, 0.03, 120), frac_reward_zero_std=frac))
    assert "not_learning" not in high and high.get("reward_plateau") == "warning", high
    low = _fired(_with(reward=0.23 + rng.normal(0, 0.03, 120), frac_reward_zero_std=frac))
    assert low.get("not_learning") == "critical", low


def test_an_entropy_logged_negated_is_read_by_its_size() -> None:
    """An entropy term logged as a loss (-H, as Stable-Baselines3's entropy_loss) read as a collapse
    ("-1.18, under 5 % of its start (1.19)") on a steady entropy."""
    rng = np.random.default_rng(12)
    assert "entropy_collapse" not in _fired(_with(entropy=-1.19 + rng.normal(0, 0.01, 120)))
    assert _fired(_with(entropy=-1.19 * np.exp(-np.arange(120) / 10)))["entropy_collapse"] == "critical"


def _evaluated(scores: list[float], every: int = 10, n: int = 120, **columns: object) -> pd.DataFrame:
    """`_healthy` with a held-out score logged every `every` steps from step 1 (NaN between)."""
    frame = _with(**columns)
    frame["eval/score"] = np.nan
    at = [i * every for i in range(len(scores))]
    frame.loc[at, "eval/score"] = scores
    return frame.iloc[: max(n, at[-1] + 1)]


def test_the_held_out_score_judges_the_outcome() -> None:
    """A validation score in the log is the outcome a practitioner judges by: a run that ends below where
    it started made the model worse (critical), one that rose and gave most of it back left its best
    checkpoint behind, one that never rose did not learn the task (warnings). Its noise is not logged: an
    accuracy's error is read from its level on 200 samples, or from the scores' own scatter."""
    rng = np.random.default_rng(3)
    rising = list(np.linspace(0.30, 0.60, 12) + rng.normal(0, 0.01, 12))
    assert _fired(_evaluated(rising)) == {}
    fell = _fired(_evaluated([0.29, 0.14, 0.055, 0.03]))
    assert fell == {"heldout_fell": "critical"}, fell
    within_noise = _fired(_evaluated([0.29, 0.33, 0.27, 0.25]))  # a fall within the noise of 200 samples
    assert within_noise == {"heldout_flat": "warning"}, within_noise
    gave_back = _fired(_evaluated([0.23, 0.30, 0.42, 0.26]))
    assert gave_back == {"heldout_decline": "warning"}, gave_back
    flat = _fired(_evaluated([0.281, 0.281, 0.282, 0.283]))
    assert flat == {"heldout_flat": "warning"}, flat
    # verl_ppo_qwen25_7b_gsm8k_resumed (healthy, already trained): 34 evaluations drifting 0.892 → 0.867.
    drift = list(np.linspace(0.895, 0.872, 34) + rng.normal(0, 0.008, 34))
    assert _fired(_evaluated(drift, every=3, n=120)) == {"heldout_flat": "warning"}
    unbounded = _fired(_evaluated([3.0, -2.0, -8.0]))  # a mean reward, 3 values: no noise known
    assert unbounded == {}
    assert _fired(_evaluated([0.29, 0.14, 0.03], every=3)) == {}  # 3 evaluations over 7 steps: too close


def test_a_training_reward_rising_while_the_held_out_score_falls_reads_as_a_reward_that_is_not_the_task() -> (
    None
):
    frame = _evaluated([0.29, 0.14, 0.055, 0.03])
    verdict = load_detector().score_run(RunData("flip", None, frame))
    fell = next(e for e in verdict.events if e.check == "heldout_fell")
    assert fell.severity == "critical" and fell.step == 11  # below the start from the second evaluation
    lead = findings_for(verdict, frame)[0]
    assert lead.symptom.startswith("the training reward rose (") and "held-out score fell" in lead.symptom
    assert lead.play == "symptom:reward_hacking" and "sign" in lead.causes[0]
    flat = _evaluated([0.29, 0.14, 0.055, 0.03], reward=0.3 + np.random.default_rng(1).normal(0, 0.03, 120))
    verdict = load_detector().score_run(RunData("lr", None, flat))
    lead = findings_for(verdict, flat)[0]
    assert lead.symptom.startswith("held-out score fell: 0.29 at the first evaluation, 0.03 at the last")
    assert lead.play is None and "learning rate" in lead.causes[0]


def test_a_gradient_norm_sustained_an_order_of_magnitude_up_is_a_warning() -> None:
    """Healthy runs' gradient norms drift (real logs: ≤ 5.1× their start sustained; the `mid` controls:
    ≤ 8.4×); corrupted gradients or a KL term with the wrong sign put them 12–300× up for good, under the
    100× single-value spike rule."""
    n = 120
    base = 0.4 + np.abs(np.random.default_rng(4).normal(0, 0.05, n))
    shifted = np.where(np.arange(n) < 60, base, 25 * base)
    fired = _fired(_with(grad_norm=shifted))
    assert fired == {"grad_norm_shift": "warning"}, fired
    assert _fired(_with(grad_norm=np.where(np.arange(n) < 60, base, 8 * base))) == {}
    one_spike = base.copy()
    one_spike[70] *= 60
    assert _fired(_with(grad_norm=one_spike)) == {}
    frame = _with(grad_norm=shifted)
    verdict = load_detector().score_run(RunData("shift", None, frame))
    (finding,) = [f for f in findings_for(verdict, frame) if f.topic == "numerics"]
    assert finding.symptom.startswith("gradient norm up 2") and finding.play == "od_grad"


def _schedule(kind: str, n: int = 120, warmup: int = 10, **kwargs: object) -> np.ndarray:
    """The learning rate transformers' scheduler `kind` gives at each of `n` steps (peak 1e-6)."""
    import torch
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-6)
    scheduler = get_scheduler(kind, optimizer, warmup, n, scheduler_specific_kwargs=kwargs or None)
    rates = []
    for _ in range(n):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return np.array(rates)


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [
        ("linear", {}),
        ("cosine", {}),
        ("cosine_with_restarts", {"num_cycles": 3}),
        ("polynomial", {}),
        ("constant", {}),
        ("constant_with_warmup", {}),
        ("inverse_sqrt", {}),
        ("cosine_with_min_lr", {"min_lr_rate": 0.1}),
        ("warmup_stable_decay", {"num_decay_steps": 30}),
    ],
)
def test_a_learning_rate_schedule_is_not_a_jump(kind: str, kwargs: dict[str, object]) -> None:
    """Every schedule transformers offers (warm-up, decay, restarts from 0) moves the rate without a jump
    between steady stretches."""
    assert "lr_jump" not in _fired(_with(learning_rate=_schedule(kind, **kwargs)), online=True)


def test_a_learning_rate_that_jumps_between_steady_stretches_is_critical() -> None:
    """A resume with another rate (od_lr): ×0.1 or ×10 from one step to the next, steady on both sides, is
    critical and reads as a changed configuration with the learning-rate play; a ×3 step is not."""
    rates = _schedule("constant_with_warmup")
    for factor, way in ((0.1, "fell"), (10.0, "rose")):
        changed = np.where(np.arange(len(rates)) < 60, rates, factor * rates)
        assert _fired(_with(learning_rate=changed), online=True) == {"lr_jump": "critical"}
        frame = _with(learning_rate=changed)
        verdict = load_detector().score_run(RunData("lr", None, frame))
        (finding,) = [f for f in findings_for(verdict, frame) if "lr_jump" in f.rules]
        assert finding.symptom.startswith(f"learning rate {way} 10×") and finding.play == "od_lr"
    assert _fired(_with(learning_rate=np.where(np.arange(len(rates)) < 60, rates, 3 * rates))) == {}


def test_tool_calls_that_start_failing_or_fail_from_the_start_are_critical() -> None:
    """A tool that fails on more than half the calls from step 1 (te_tool_error easy from the start) fires
    within `CONFIRM` logged steps; one that starts failing mid-run fires on a rise of 10 points that at least
    doubled its early share (te_tool_error hard: 15 % of calls), under either metric name; a policy that
    learns to call the tool (its failed share falls) and a flaky tool at a steady few percent are quiet."""
    n = 120
    broken = np.full(n, 0.6)
    rules = ScaleFreeRules(online=True)
    first = next(s for s, v in enumerate(broken, 1) if rules.update(s, {"traj/tool_error_rate": float(v)}))
    assert first == 3
    fired = _fired(_with(**{"traj/tool_error_rate": broken}), online=True)
    assert fired == {"tool_failures_most": "critical"}
    onset = np.where(np.arange(n) < 60, 0.0, 0.15)
    fired = _fired(_with(**{"tools/failure_frequency": onset}), online=True)
    assert fired == {"tool_failures_rose": "critical"}
    learning = np.linspace(0.4, 0.02, n)  # malformed calls at first, fewer as it learns: not a fault
    assert _fired(_with(**{"tools/failure_frequency": learning}), online=True) == {}
    flaky = np.random.default_rng(0).binomial(64, 0.04, n) / 64  # a steady 4 % of calls time out
    assert _fired(_with(**{"traj/tool_error_rate": flaky}), online=True) == {}
    small = np.where(np.arange(n) < 60, 0.02, 0.08)  # up 6 points: under the bar
    assert _fired(_with(**{"traj/tool_error_rate": small}), online=True) == {}


def test_failing_tool_calls_read_as_a_tool_finding_with_the_tool_play() -> None:
    n = 120
    frame = _with(**{"traj/tool_error_rate": np.where(np.arange(n) < 60, 0.0, 0.7)})
    verdict = load_detector().score_run(RunData("tools", None, frame))
    (finding,) = [f for f in findings_for(verdict, frame) if f.topic == "tools"]
    assert finding.severity == "critical" and finding.play == "te_tool_error"
    assert finding.symptom.startswith("tool calls started failing: 70% of them failed by step 62")
    assert "tool" in finding.causes[0] and finding.checks
