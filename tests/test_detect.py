"""Detection: hard rules, change detectors, the run profile, calibration, persistence, the CLI, and the
evaluation harness (on the mini benchmark, in the slow tier)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rftfm_agent.cli import app
from rftfm_agent.detect.detector import Detector, RunData
from rftfm_agent.detect.events import Event, RunVerdict
from rftfm_agent.detect.rules import RULES, HardRules
from rftfm_agent.errors import NotFittedError, RftfmError
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.store import Store, mark_nan


def _healthy_frame(seed: int, steps: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "step": np.arange(1, steps + 1),
            "reward": 0.4 + 0.05 * rng.standard_normal(steps),
            "kl": np.abs(0.02 + 0.005 * rng.standard_normal(steps)),
            "entropy": 0.5 + 0.02 * rng.standard_normal(steps),
            "grad_norm": 2.0 + 0.3 * rng.standard_normal(steps),
            "learning_rate": np.full(steps, 5e-5),
            "frac_reward_zero_std": 0.3 + 0.05 * rng.standard_normal(steps),
            "traj/advantage_group_std_mean": 0.9998 + 1e-5 * rng.standard_normal(steps),
            "traj/advantage_group_mean_abs": np.zeros(steps),
        }
    )


@pytest.fixture(scope="module")
def fitted() -> Detector:
    healthy = [RunData(f"h{i}", "arith_a", _healthy_frame(i)) for i in range(40)]
    return Detector(alpha=0.05).fit(healthy)


def test_hard_rules_fire_on_what_is_never_healthy() -> None:
    rules = HardRules(patience=3)
    kinds = []
    for step in range(1, 8):
        row = {
            "grad_norm": 0.0,
            "learning_rate": 1e-5 if step < 3 else 0.0,
            "reward": 0.5,
            "frac_reward_zero_std": 1.0,
            "completions/clipped_ratio": 1.0,
            "loss": math.nan if step == 6 else 0.1,
        }
        kinds += [e.kind for e in rules.update(step, row)]
    assert kinds.count("grad_norm_zero") == 1  # fires once, not at every step
    assert {
        "grad_norm_zero",
        "lr_zero",
        "zero_std_groups",
        "all_clipped",
        "constant_reward",
        "non_finite",
    } <= set(kinds)
    # A learning rate logged as 0 from the start is a warning (too few digits?), not an lr drop.
    logged = HardRules(patience=3)
    events = [e for s in range(1, 5) for e in logged.update(s, {"learning_rate": 0.0})]
    assert [(e.kind, e.severity) for e in events] == [("lr_logged_zero", "warning")]
    # A hidden NaN: TRL averaged it away, the recorder kept the fraction.
    assert HardRules().update(1, {"loss": 0.1, "nan_frac/loss": 0.25})[0].kind == "non_finite"


def test_healthy_held_out_runs_mostly_pass(fitted: Detector) -> None:
    verdicts = [fitted.score_run(RunData(f"t{i}", "arith_a", _healthy_frame(1000 + i))) for i in range(40)]
    flagged = sum(v.verdict == "anomalous" for v in verdicts)
    assert flagged <= 6  # budget 5% → expect about 2; generous for 40 runs


def test_faults_are_flagged_with_the_step_and_metric(fitted: Detector) -> None:
    frame = _healthy_frame(7)
    frame.loc[frame["step"] >= 15, "kl"] = 0.5  # KL blows up at step 15
    verdict = fitted.score_run(RunData("kl", "arith_a", frame))
    assert verdict.verdict == "anomalous" and verdict.mode == "band"
    first = min(e.step for e in verdict.events if e.metric == "kl")
    assert 15 <= first <= 17  # online delay of at most 2 steps
    broken = _healthy_frame(8)
    broken["traj/advantage_group_std_mean"] = 0.55  # a wrong group size in the advantage normalisation
    events = fitted.score_run(RunData("ca", "arith_a", broken)).events
    assert any(e.metric == "traj/advantage_group_std_mean" and e.severity == "critical" for e in events)


def test_online_monitor_matches_offline_scoring(fitted: Detector) -> None:
    frame = _healthy_frame(9)
    frame.loc[frame["step"] >= 10, "reward"] = -0.4
    monitor = fitted.monitor("arith_a", run="live")
    online = [e for row in frame.to_dict("records") for e in monitor.update(row)]
    offline = fitted.score_run(RunData("live", "arith_a", frame)).events
    assert [(e.step, e.metric, e.kind) for e in online] == [
        (e.step, e.metric, e.kind) for e in offline if e.kind != "profile"
    ]


def test_unknown_task_uses_the_run_itself(fitted: Detector) -> None:
    frame = _healthy_frame(10, steps=60)
    verdict = fitted.score_run(RunData("real", "gsm8k", frame))
    assert verdict.mode == "self" and verdict.verdict == "healthy"
    frame.loc[frame["step"] >= 40, ["kl", "grad_norm", "entropy"]] = [5.0, 80.0, 0.01]  # a real blow-up
    verdict = fitted.score_run(RunData("real", "gsm8k", frame))
    assert verdict.verdict == "anomalous"
    assert {e.metric for e in verdict.events if e.severity == "critical"} & {"kl", "grad_norm", "entropy"}


def test_detector_round_trips_through_json(fitted: Detector, tmp_path: Path) -> None:
    fitted.save(tmp_path / "d.json")
    again = Detector.load(tmp_path / "d.json")
    frame = _healthy_frame(11)
    frame.loc[frame["step"] >= 5, "entropy"] = 0.05
    a = fitted.score_run(RunData("x", "arith_a", frame))
    b = again.score_run(RunData("x", "arith_a", frame))
    assert a.model_dump() == b.model_dump()


def test_detect_cli_json_and_events_beside_the_run(fitted: Detector, tmp_path: Path, fixtures: Path) -> None:
    fitted.save(tmp_path / "d.json")
    store = tmp_path / "store"
    runner = CliRunner()
    assert (
        runner.invoke(app, ["ingest", str(fixtures / "trainer_state.json"), "--store", str(store)]).exit_code
        == 0
    )
    run_id = json.loads(runner.invoke(app, ["runs", "--store", str(store), "--json"]).stdout)[0]["run_id"]
    result = runner.invoke(
        app, ["detect", run_id, "--store", str(store), "--detector", str(tmp_path / "d.json"), "--json"]
    )
    assert result.exit_code == 0, result.output
    [payload] = json.loads(result.stdout)
    assert payload["run"] == run_id and payload["verdict"] in ("healthy", "anomalous")
    for event in payload["events"]:
        assert set(event) == {"step", "metric", "kind", "source", "check", "severity", "score", "evidence"}
    stored = Store(store)
    [verdict] = stored.sql("SELECT run_id, verdict, mode, n_alarms FROM verdicts").to_dict("records")
    assert verdict["run_id"] == run_id
    assert (verdict["verdict"], verdict["mode"]) == (payload["verdict"], payload["mode"])
    events = stored.sql('SELECT step, metric, source, "check", severity FROM events ORDER BY step, metric')
    assert len(events) == len(payload["events"])
    missing = runner.invoke(
        app, ["detect", run_id, "--store", str(store), "--detector", str(tmp_path / "nope.json")]
    )
    assert missing.exit_code == 1 and "no fitted detector" in missing.output


def test_shipped_detector_loads() -> None:
    from rftfm_agent.detect.api import load_detector

    detector = load_detector()
    assert {"arith_a", "arith_b", "tool"} <= set(detector.bands)


def test_band_z_many_is_z_for_a_whole_series(fitted: Detector) -> None:
    band = fitted.bands["arith_a"]
    frame = _healthy_frame(99, steps=40)  # runs past the last fitted bin, which then serves
    for metric in ("reward", "learning_rate", "traj/advantage_group_std_mean", "not_a_metric"):
        values = frame[metric].to_numpy(dtype=float, copy=True) if metric in frame else np.ones(40)
        values[3] = math.nan
        many = band.z_many(metric, frame["step"].to_numpy(), values)
        one = [band.z(metric, int(s), float(v)) for s, v in zip(frame["step"], values, strict=True)]
        np.testing.assert_allclose(many, [math.nan if z is None else z for z in one])


def test_cli_json_and_stored_events_agree_on_nan_and_inf(
    tmp_path: Path, fitted: Detector, fixtures: Path
) -> None:
    """A NaN loss: `rftfm detect --json` and the stored `events` spell NaN and Inf the same way."""
    state = json.loads((fixtures / "trainer_state.json").read_text())
    state["log_history"][4]["loss"] = math.nan  # step 4
    (tmp_path / "trainer_state.json").write_text(json.dumps(state, indent=2))  # a bare NaN, as TRL writes it
    fitted.save(tmp_path / "d.json")
    store, runner = tmp_path / "store", CliRunner()
    ingest = runner.invoke(app, ["ingest", str(tmp_path / "trainer_state.json"), "--store", str(store)])
    assert ingest.exit_code == 0, ingest.output
    run_id = Store(store).run_ids()[0]
    result = runner.invoke(
        app, ["detect", run_id, "--store", str(store), "--detector", str(tmp_path / "d.json"), "--json"]
    )
    assert result.exit_code == 0, result.output
    events = json.loads(result.stdout)[0]["events"]
    [printed] = [e for e in events if e["check"] == "non_finite" and e["metric"] == "loss"]
    assert printed["evidence"] == {"value": "NaN"} and printed["score"] == "Infinity"
    stored = Store(store).sql("SELECT evidence, score FROM events WHERE \"check\" = 'non_finite'")
    assert json.loads(stored["evidence"][0]) == printed["evidence"] and math.isinf(stored["score"][0])


def test_events_are_typed_and_rules_carry_provenance(fitted: Detector) -> None:
    frame = _healthy_frame(99).assign(loss=0.1)
    frame.loc[frame["step"] == 12, "loss"] = math.nan
    frame["nan/loss"] = (frame["step"] == 12).astype(float)  # logged as NaN, as `store.wide_steps` flags it
    verdict = fitted.score_run(RunData("r", "arith_a", frame))
    rule_events = [e for e in verdict.events if e.source == "rule"]
    assert rule_events and all(e.check in RULES for e in rule_events)
    band_checks = {e.check for e in verdict.events if e.source == "band"}
    assert band_checks <= {"shewhart", "ewma", "cusum", "bocpd"}
    assert verdict.verdict == "anomalous" and verdict.first_alarm_step == 12
    assert all(r.reference and r.description for r in RULES.values())
    with pytest.raises(ValueError):
        Event(step=1, metric="x", source="nowhere", check="x", severity="warning", score=1.0)


def test_alarm_policy_depends_on_the_mode() -> None:
    warning = Event(step=4, metric="kl", source="self", check="shewhart", severity="warning", score=1.5)
    critical = warning.model_copy(update={"severity": "critical", "step": 9})
    self_verdict = RunVerdict.judge("r", "self", [warning, critical], 2.0, [])
    assert self_verdict.alarms == [critical] and self_verdict.first_alarm_step == 9
    band_verdict = RunVerdict.judge("r", "band", [warning], 1.5, [])
    assert band_verdict.verdict == "anomalous" and band_verdict.first_alarm_step == 4
    quiet = RunVerdict.judge("r", "self", [warning], 1.5, [])
    assert quiet.verdict == "healthy" and quiet.first_alarm_step is None


def test_detector_options_are_validated_and_an_unfitted_detector_refuses() -> None:
    for bad in ({"alpha": 0}, {"alpha": 1.5}, {"folds": 1}, {"warmup": 0}, {"k": -1}):
        with pytest.raises(RftfmError):
            Detector(**bad)
    detector = Detector()
    assert not detector.is_fitted
    with pytest.raises(NotFittedError):
        detector.score_run(RunData("r", "t", _healthy_frame(1)))
    with pytest.raises(NotFittedError):
        detector.monitor("t")


def test_detector_file_has_a_format_version(tmp_path: Path, fitted: Detector) -> None:
    fitted.save(tmp_path / "d.json")
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["format_version"] == 1
    data["format_version"] = 99
    (tmp_path / "future.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="format version 99"):
        Detector.load(tmp_path / "future.json")


def test_batched_monitors_equal_one_monitor_per_metric() -> None:
    """The run monitor updates all metrics' statistics together (change points batched in arrays); each
    metric's statistics must be those of its own `MetricMonitor`, with metrics missing at some steps,
    heavy tails, a level shift and huge values."""
    import numpy as np

    from rftfm_agent.detect.band import MetricMonitor, MetricMonitors

    rng = np.random.default_rng(0)
    names = [f"m{i}" for i in range(6)]
    for _ in range(10):
        alone = {m: MetricMonitor() for m in names}
        together = MetricMonitors(names)
        for step in range(120):
            zs = {
                m: float(rng.standard_t(3) * (5 if step > 60 and m == "m2" else 1))
                for m in names
                if rng.random() < 0.8
            }
            if rng.random() < 0.05:
                zs = dict.fromkeys(zs, 1e6)
            got = together.update(zs)
            assert set(got) == set(zs)
            for m, z in zs.items():
                assert got[m] == pytest.approx(alone[m].update(z), rel=1e-9, abs=1e-12)


def test_a_metric_a_step_did_not_log_is_not_a_nan(tmp_path: Path, fitted: Detector) -> None:
    """A validation-only row (verl logs one at step 0 by default, HF Trainer with `eval_on_start`) leaves
    the training metrics out of its step. Their empty cells were read as logged NaN: a critical "numerical
    failure" on a healthy run. A value logged as NaN is still one, stored or in the supervisor's rows."""
    lines = ["step:0 - val-core/openai/gsm8k/reward/mean@1:0.412"]
    lines += [
        f"step:{s} - actor/entropy:{1 - s / 100:.3f} - actor/pg_loss:0.010 - actor/grad_norm:0.500 - "
        f"actor/kl_loss:0.001 - critic/score/mean:{0.3 + s / 100:.3f}"
        for s in range(1, 31)
    ]
    store = Store(tmp_path / "store")
    for name, tail in (("healthy", []), ("broken", ["step:31 - actor/entropy:nan - actor/grad_norm:nan"])):
        (tmp_path / f"{name}.log").write_text("\n".join(lines + tail) + "\n")
        (run,) = importers.load(tmp_path / f"{name}.log")
        frame = store.steps(store.write_run(run)[0].run_id)
        events = fitted.score_run(RunData(name, None, frame)).events
        found = {(e.step, e.metric) for e in events if e.check == "non_finite"}
        assert found == (set() if name == "healthy" else {(31, "entropy"), (31, "grad_norm")}), name

    # The supervisor builds its frame from logged rows: an eval-only row, then a NaN loss.
    rows = [{"step": 0, "eval/score": 0.4}]
    rows += [{"step": s, "loss": 0.1, "reward": 0.3 + s / 100, "kl": 0.01} for s in range(1, 31)]
    rows += [{"step": 31, "loss": math.nan, "reward": 0.5, "kl": 0.01}]
    frame = pd.DataFrame([mark_nan(r) for r in rows])
    events = fitted.score_run(RunData("live", None, frame)).events
    assert {(e.step, e.metric) for e in events if e.check == "non_finite"} == {(31, "loss")}


def test_the_nan_flags_are_not_metrics_of_an_export_or_a_plot(tmp_path: Path) -> None:
    """The wide table's `nan/<metric>` flags say where a value was logged as NaN; the benchmark export
    wrote them as metrics of the paper's layout, and a default plot would pick them."""
    from rftfm_agent.bench.export import export_run
    from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo

    rows = [
        RawStep(step=s, values={"loss": math.nan if s == 3 else 0.5, "reward": 0.1 * s}) for s in (1, 2, 3)
    ]
    store = Store(tmp_path / "store")
    run_id = store.write_run(ImportedRun(name="r", source=SourceInfo(format="test"), steps=rows))[0].run_id
    assert "nan/loss" in store.steps(run_id).columns
    export_run(store, run_id, tmp_path / "out")
    (steps,) = (tmp_path / "out").rglob("*train_step.jsonl")
    assert all("nan/" not in line for line in steps.read_text().splitlines())


def test_a_rare_event_share_that_healthy_runs_logged_as_zero_is_not_measured_in_millionths() -> None:
    """A profile whose healthy runs never repeated a token must not make a run with a handful of repeated
    tokens (another seed, another machine) an outlier, while a share that is 0 by construction (rewards
    that disagree with the answer) stays exact, and a real rise in repetition still stands out."""
    from rftfm_agent.detect.profile import HealthyProfile

    def frame(seed: int, repetition: float = 0.0, mismatch: float = 0.0) -> pd.DataFrame:
        f = _healthy_frame(seed)
        f["traj/repetition_ratio_mean"] = repetition
        f["traj/reward_mismatch_frac"] = mismatch
        return f

    profile = HealthyProfile().fit([frame(i) for i in range(20)])
    noise = profile.zscores(frame(100, repetition=0.0003))
    assert max(abs(noise[f"traj/repetition_ratio_mean|{s}"]) for s in ("mean", "last")) < 1
    assert profile.zscores(frame(101, repetition=0.1))["traj/repetition_ratio_mean|mean"] >= 10
    assert profile.zscores(frame(102, mismatch=0.0003))["traj/reward_mismatch_frac|mean"] >= 100
    # A profile saved before the floor existed (a spread of 1e-6) is read with it.
    old = HealthyProfile.from_dict(profile.to_dict())
    old.scale = {f: (1e-6 if f.startswith("traj/repetition") else s) for f, s in old.scale.items()}
    assert abs(old.zscores(frame(100, repetition=0.0003))["traj/repetition_ratio_mean|mean"]) < 1


def test_a_short_run_s_warm_up_is_not_an_unusual_learning_rate() -> None:
    """The logged rate of a warm-up starts at 0 (1e-12 on the log scale): over a 12-step run, its first
    third is mostly warm-up, so the rate's first-to-last-third change scored ~100 z against runs of 30
    steps. The change of a scheduled metric is not summarised; its level still is (a rate 10× off)."""
    from rftfm_agent.detect.profile import HealthyProfile

    def frame(seed: int, steps: int, peak: float = 5e-5) -> pd.DataFrame:
        f = _healthy_frame(seed, steps)
        f["learning_rate"] = np.minimum(np.arange(steps) / 5, 1.0) * peak  # 0 at step 1, then a warm-up
        return f

    peaks = (1e-4, 2e-4, 3e-4)  # healthy runs' configured rates differ, as the benchmark's cells do
    profile = HealthyProfile().fit([frame(i, 30, peaks[i % 3]) for i in range(21)])
    short = profile.zscores(frame(100, 12, 2e-4))
    assert "learning_rate|change" not in short
    assert max(abs(z) for f, z in short.items() if f.startswith("learning_rate")) < 3
    wrong = profile.zscores(frame(101, 30, peak=2e-3))  # a rate set 10× too high from the start
    assert min(wrong["learning_rate|mean"], wrong["learning_rate|last"]) >= 3
