"""Diagnosis: fingerprints, the library, the diagnoser (ranking, evidence, unknown, missing metrics), the
CLI and bad input. Synthetic runs here; the benchmark-backed checks are in test_bench.py (slow tier)."""

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
from rftfm_agent.diagnose.diagnoser import Diagnoser
from rftfm_agent.diagnose.fingerprint import FEATURES, change_point_row, feature_docs
from rftfm_agent.diagnose.library import Library, build_library, fingerprint_run, shipped_library_path
from rftfm_agent.errors import RftfmError

STEPS = 30


def _frame(seed: int, fault: str | None = None, onset: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "step": np.arange(1, STEPS + 1),
            "reward": 0.4 + 0.05 * rng.standard_normal(STEPS),
            "reward_std": 0.3 + 0.03 * rng.standard_normal(STEPS),
            "kl": np.abs(0.02 + 0.005 * rng.standard_normal(STEPS)),
            "entropy": 0.5 + 0.02 * rng.standard_normal(STEPS),
            "grad_norm": 2.0 + 0.3 * rng.standard_normal(STEPS),
            "learning_rate": np.full(STEPS, 5e-5),
            "frac_reward_zero_std": 0.3 + 0.05 * rng.standard_normal(STEPS),
            "traj/reward_neg_frac": np.zeros(STEPS),
        }
    )
    after = frame["step"] >= onset
    if fault == "od_kl":  # KL runs away
        frame.loc[after, "kl"] = 0.1 * np.exp(0.2 * np.arange(after.sum()))
    elif fault == "rf_sign_flip":  # rewards come out negative, the mean reward drops
        frame.loc[after, "traj/reward_neg_frac"] = 0.6 + 0.05 * rng.standard_normal(after.sum())
        frame.loc[after, "reward"] -= 0.5
    elif fault == "pg_temperature":  # sampling too hot: entropy up, reward down a little
        frame.loc[after, "entropy"] += 0.6
        frame.loc[after, "reward"] -= 0.15
    return frame


def _run(i: int, fault: str | None, onset: int = 12) -> RunData:
    family = {"od_kl": "OD", "rf_sign_flip": "RF", "pg_temperature": "PG"}.get(fault or "", "")
    meta = {
        "control_or_fault": "fault" if fault else "control",
        "fault_type": fault or "",
        "fault_family": family,
        "strength": "easy" if fault else "",
        "cell": f"cell{i}",
        "onset_style": "midrun" if fault else "",
    }
    return RunData(f"{fault or 'healthy'}-{i}", "arith_a", _frame(i, fault, onset), meta)


@pytest.fixture(scope="module")
def setup() -> tuple[Detector, Library]:
    healthy = [_run(i, None) for i in range(30)]
    detector = Detector(alpha=0.05).fit(healthy)
    faults = [_run(100 + i, kind, onset=8 + i % 10) for kind in ("od_kl", "rf_sign_flip", "pg_temperature")
              for i in range(12)]  # fmt: skip
    return detector, build_library(healthy + faults, detector, holdout_fold=None, source="synthetic")


def test_every_feature_has_a_one_line_meaning() -> None:
    docs = feature_docs()
    assert list(docs) == list(FEATURES) and len(FEATURES) == len(set(FEATURES))
    assert all(text and "\n" not in text for text in docs.values())


def test_fingerprint_is_fixed_length_and_anchored_at_the_alarm(setup: tuple[Detector, Library]) -> None:
    detector, _ = setup
    run = _run(500, "od_kl", onset=15)
    fp = fingerprint_run(detector, run, "band")
    assert fp.vector().shape == (len(FEATURES),)
    assert 15 <= fp.anchor_step <= 17  # the detector's first alarm, at or just after the onset
    assert fp.values["kl:jump"] > 5 and fp.values["kl:slope"] > 0
    assert abs(fp.values["reward:after"]) < 3  # reward did not move
    assert fp.windows["kl"]["after"] > 5 * fp.windows["kl"]["before"]
    # In self mode the same break is measured against the run's own steps before the anchor.
    own = fingerprint_run(detector, run, "self")
    assert own.mode == "self" and own.values["kl:jump"] > 5


def test_without_an_alarm_self_mode_anchors_at_the_largest_shift() -> None:
    frame = _frame(950)
    frame.loc[frame["step"] >= 18, "reward"] += 0.12  # about two noise sigmas: no alarm, but a shift
    frame.loc[frame["step"] >= 18, "entropy"] += 0.04
    assert 17 <= int(frame["step"].iloc[change_point_row(frame)]) <= 19
    assert change_point_row(frame.iloc[:4]) == 0  # too short to split


@pytest.mark.parametrize("kind", ["od_kl", "rf_sign_flip", "pg_temperature"])
def test_diagnoser_ranks_the_injected_type_first_with_evidence(
    setup: tuple[Detector, Library], kind: str
) -> None:
    detector, library = setup
    diagnosis = Diagnoser(library).diagnose(fingerprint_run(detector, _run(600, kind, onset=14), "band"))
    best = diagnosis.hypotheses[0]
    assert not diagnosis.unknown
    assert best.type == kind and best.probability > 0.5
    assert sum(h.probability for h in diagnosis.hypotheses) <= 1.0 + 1e-9
    evidence = best.evidence
    assert evidence.features and all(f.meaning for f in evidence.features)
    assert evidence.nearest_runs and all(n.run.startswith(kind) for n in evidence.nearest_runs)
    assert evidence.why.startswith(f"{kind}: ") and evidence.features[0].feature in evidence.why
    driving = {f.feature.split(":")[0] for f in evidence.features}
    expected = {"od_kl": "kl", "rf_sign_flip": "traj/reward_neg_frac", "pg_temperature": "entropy"}[kind]
    assert expected in driving
    assert any(m.metric == expected for m in evidence.metrics) or expected == "traj/reward_neg_frac"


def test_healthy_run_is_called_healthy(setup: tuple[Detector, Library]) -> None:
    detector, library = setup
    diagnosis = Diagnoser(library).diagnose(fingerprint_run(detector, _run(700, None), "band"))
    assert diagnosis.hypotheses[0].type == "healthy"


def test_missing_metrics_are_named_and_left_out(setup: tuple[Detector, Library]) -> None:
    detector, library = setup
    run = _run(800, "od_kl", onset=14)
    run = RunData(run.run_id, run.task, run.frame.drop(columns=["entropy", "reward_std"]))
    fp = fingerprint_run(detector, run, "band")
    assert {"entropy", "reward_std"} <= set(fp.missing)
    assert math.isnan(fp.vector()[FEATURES.index("entropy:after")])
    diagnoser = Diagnoser(library)
    used = diagnoser.usable_features(fp)
    assert not any(f.startswith(("entropy:", "reward_std:")) for f in used)
    diagnosis = diagnoser.diagnose(fp)
    assert diagnosis.hypotheses[0].type == "od_kl"
    assert {"entropy", "reward_std"} <= set(diagnosis.missing)


def test_far_from_everything_is_unknown(setup: tuple[Detector, Library]) -> None:
    detector, library = setup
    frame = _frame(900)
    frame["grad_norm"] = 1e4 * (1 + np.arange(STEPS))  # nothing in the library looks like this
    frame["entropy"] = 50.0
    frame["reward_std"] = 0.0
    frame["traj/reward_neg_frac"] = 1.0
    fp = fingerprint_run(detector, RunData("odd", "arith_a", frame), "band")
    diagnosis = Diagnoser(library).diagnose(fp)
    assert diagnosis.unknown and diagnosis.hypotheses[0].type == "unknown"
    assert diagnosis.novelty["nearest_distance"] > diagnosis.novelty["limit"]
    assert len(diagnosis.hypotheses) > 1  # the closest known types are still ranked


def test_library_round_trips_with_its_metadata(setup: tuple[Detector, Library], tmp_path: Path) -> None:
    _, library = setup
    path = tmp_path / "lib" / "fp.parquet"
    library.save(path)
    back = Library.load(path)
    assert back.meta["source"] == "synthetic" and back.meta["features"] == len(FEATURES)
    pd.testing.assert_frame_equal(back.table, library.table)
    assert [p.name for p in path.parent.iterdir()] == ["fp.parquet"]  # no temporary file left behind


def test_bad_library_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "fp.parquet"
    bad.write_text("not parquet")
    with pytest.raises(RftfmError, match="not a Parquet fingerprint library"):
        Library.load(bad)
    with pytest.raises(RftfmError, match="no fingerprint library"):
        Library.load(tmp_path / "absent.parquet")


def test_shipped_library_covers_the_taxonomy() -> None:
    from rftfm_agent.telemetry.schema import FAULT_TYPES

    library = Library.load(shipped_library_path())
    assert set(library.table["type"]) == set(FAULT_TYPES) | {"healthy"}
    assert set(library.table["mode"]) == {"band", "self"}
    assert library.meta["holdout_cells"]  # built from a training split
    held = set(library.meta["holdout_cells"])
    assert not held & set(library.table["cell"])


def test_diagnose_cli_json_and_readable(tmp_path: Path, fixtures: Path) -> None:
    runner = CliRunner()
    store = tmp_path / "store"
    ingested = runner.invoke(app, ["ingest", str(fixtures / "trainer_state.json"), "--store", str(store)])
    assert ingested.exit_code == 0
    run_id = json.loads(runner.invoke(app, ["runs", "--store", str(store), "--json"]).stdout)[0]["run_id"]
    result = runner.invoke(app, ["diagnose", run_id, "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert {"run", "hypotheses", "missing"} <= set(payload) and payload["run"] == run_id
    assert payload["mode"] == "self"  # an imported run of a task the detector has no band for
    assert payload["hypotheses"] and all(
        {"family", "type", "probability", "evidence"} <= set(h) for h in payload["hypotheses"]
    )
    assert "traj/tool_error_rate" in payload["missing"]  # no trajectories in a trainer_state.json
    text = runner.invoke(app, ["diagnose", run_id, "--store", str(store)])
    assert text.exit_code == 0 and "not logged, diagnosed without" in text.output


def test_diagnose_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["diagnose", "nope", "--store", str(tmp_path / "store")])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "error:" in result.output
    bad = tmp_path / "lib.parquet"
    bad.write_bytes(b"\x00garbage")
    result = runner.invoke(app, ["fingerprints", "build", "--bench", str(tmp_path), "--out", str(bad)])
    assert result.exit_code == 1 and "not a benchmark folder" in result.output
    assert bad.read_bytes() == b"\x00garbage"  # nothing overwritten


def test_missing_means_not_logged_not_undefined() -> None:
    from rftfm_agent.diagnose.fingerprint import LEVEL_METRICS, missing_metrics

    frame = _frame(1000)
    frame["traj/reward_mean"] = frame["reward"]
    frame["traj/adv_reward_discord_frac"] = np.nan  # recorded, undefined (every group had equal rewards)
    missing = missing_metrics(frame)
    assert not any(m.startswith("traj/") for m in missing)  # trajectories were recorded
    assert "entropy" not in missing and "loss" in missing
    bare = missing_metrics(_frame(1000))  # no trajectories: traj/ metrics it did not log are missing
    assert {m for m in LEVEL_METRICS if m.startswith("traj/")} - {"traj/reward_neg_frac"} <= set(bare)
    assert "traj/reward_neg_frac" not in bare  # the synthetic frame logs this one


def test_sparse_logging_keeps_its_features(setup: tuple[Detector, Library]) -> None:
    detector, _ = setup
    frame = _frame(1100)
    frame.loc[frame.index % 2 == 0, "kl"] = np.nan  # kl logged every other step
    frame.loc[frame["step"] >= 16, "reward"] -= 0.4
    assert 15 <= int(frame["step"].iloc[change_point_row(frame)]) <= 17
    fp = fingerprint_run(detector, RunData("sparse", "arith_a", frame), "self")
    assert "kl" not in fp.missing and math.isfinite(fp.values["kl:after"])


def test_a_run_without_any_watched_metric_is_unknown(setup: tuple[Detector, Library]) -> None:
    """Nothing to fingerprint is an answer (unknown, with why), not an error: a pasted step whose metrics
    are all NaN still gets its findings."""
    detector, library = setup
    frame = pd.DataFrame({"step": np.arange(1, 11), "epoch": np.linspace(0, 1, 10)})
    fp = fingerprint_run(detector, RunData("bare", None, frame), "self")
    d = Diagnoser(library).diagnose(fp)
    assert d.unknown and [h.type for h in d.hypotheses] == ["unknown"]
    assert "none of the metrics" in d.hypotheses[0].evidence.why


def test_cli_refuses_bad_options_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    cases = [
        (["diagnose", "x", "--top", "0", "--store", str(tmp_path)], "--top must be at least 1"),
        (["eval", "diagnose", "--bench", str(tmp_path), "--folds", "1"], "--folds must be at least 2"),
        (["fingerprints", "build", "--bench", str(tmp_path), "--out", "o", "--folds", "1"], "--folds must"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and message in result.output and result.output.count("\n") == 1


def test_library_with_broken_metadata_names_the_file(setup: tuple[Detector, Library], tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, library = setup
    path = tmp_path / "fp.parquet"
    table = pa.Table.from_pandas(library.table, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({b"rftfm": b"{not json"}), path)
    with pytest.raises(RftfmError, match=str(path)):
        Library.load(path)
    pq.write_table(pa.Table.from_pandas(library.table[["mode"]], preserve_index=False), path)
    with pytest.raises(RftfmError, match=f"{path}: fingerprint table lacks columns"):
        Library.load(path)


def test_a_library_made_with_another_detector_is_noted(
    setup: tuple[Detector, Library], tmp_path: Path, fixtures: Path
) -> None:
    from rftfm_agent.diagnose.api import diagnose_runs
    from rftfm_agent.telemetry.store import Store

    detector, library = setup
    library.save(tmp_path / "fp.parquet")  # built with the synthetic detector, not the shipped one
    store = Store(tmp_path / "store")
    ingested = CliRunner().invoke(
        app, ["ingest", str(fixtures / "trainer_state.json"), "--store", str(store.root)]
    )
    assert ingested.exit_code == 0
    run_id = store.run_ids()[0]
    [(diagnosis, _)] = diagnose_runs(store, [run_id], library_path=tmp_path / "fp.parquet")
    assert diagnosis.notes and "another detector" in diagnosis.notes[0]
    detector.save(tmp_path / "d.json")
    [(same, _)] = diagnose_runs(store, [run_id], tmp_path / "fp.parquet", tmp_path / "d.json")
    assert same.notes == []


def test_diagnosing_many_runs_at_once_gives_each_runs_own_answer(setup: tuple[Detector, Library]) -> None:
    detector, library = setup
    fps = [
        fingerprint_run(detector, _run(500 + i, kind, onset=15), mode)
        for i, kind in enumerate(["od_kl", "control", "od_kl"])
        for mode in ("band", "self")
    ]
    diagnoser = Diagnoser(library)
    assert diagnoser.diagnose_many(fps) == [diagnoser.diagnose(fp) for fp in fps]


def test_array_forest_predicts_as_scikit_learn() -> None:
    """The diagnoser predicts from the forest's arrays (no scikit-learn import at predict time); the
    probabilities and importances must be scikit-learn's, rows with NaN included."""
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    from rftfm_agent.diagnose.forest import ArrayForest

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 10))
    x[rng.random(x.shape) < 0.1] = np.nan
    y = rng.choice(["healthy", "od_lr", "rf_noise"], 300)
    forest = RandomForestClassifier(n_estimators=50, class_weight="balanced", random_state=0).fit(x, y)
    arrays = ArrayForest.of(forest)
    test = rng.normal(size=(40, 10)) * 3
    test[rng.random(test.shape) < 0.2] = np.nan
    assert list(arrays.classes_) == list(forest.classes_)
    np.testing.assert_allclose(arrays.predict_proba(test), forest.predict_proba(test), atol=1e-12)
    np.testing.assert_allclose(arrays.importances, forest.feature_importances_)
