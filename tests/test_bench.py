"""The benchmark generator: presets at the promised scale, and the `mini` preset generated for real (the
CI tier that runs it): coverage of the taxonomy, resumability, labels, export in the paper's layout, and
the fault-effect table."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from rftfm_agent.bench.effects import effect_table
from rftfm_agent.bench.export import export_bench
from rftfm_agent.bench.generator import generate
from rftfm_agent.bench.presets import PAPER_SCALE, plan, scale
from rftfm_agent.cli import app
from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.schema import FAULT_FAMILIES, FAULT_TYPES, RunManifest, SourceInfo
from rftfm_agent.telemetry.store import Store


def test_full_preset_is_at_least_the_papers_scale() -> None:
    size = scale(plan("full"))
    assert size["runs"] >= PAPER_SCALE["runs"]
    assert size["steps"] >= PAPER_SCALE["steps"]
    assert size["trajectories"] >= PAPER_SCALE["trajectories"]


def test_plans_are_deterministic_and_ids_carry_no_label() -> None:
    a, b = plan("full", seed=0), plan("full", seed=0)
    assert [p.spec for p in a] == [p.spec for p in b]
    assert [p.spec for p in plan("full", seed=1)] != [p.spec for p in a]
    for p in a[:50]:
        assert p.experiment_id.startswith("full-s0-") and (
            p.fault is None or p.fault.type not in p.experiment_id
        )


@pytest.mark.parametrize("preset", ["mini", "full"])
def test_presets_cover_the_taxonomy(preset: str) -> None:
    plans = plan(preset)
    faults = [p for p in plans if p.fault]
    assert {p.fault.family for p in faults} == set(FAULT_FAMILIES)  # type: ignore[union-attr]
    combos = {(p.fault.type, p.fault.strength, p.onset_style) for p in faults}  # type: ignore[union-attr]
    assert len(combos) == len(FAULT_TYPES) * 2 * 2
    assert all(p.fault.onset_step == 1 for p in faults if p.onset_style == "step1")  # type: ignore[union-attr]
    assert all(p.fault.onset_step > 1 for p in faults if p.onset_style == "midrun")  # type: ignore[union-attr]
    assert all(p.spec.task == "tool" for p in faults if p.fault.family == "TE")  # type: ignore[union-attr]
    controls = [p for p in plans if p.control_or_fault == "control"]
    # Honest knobs: controls differ in seed and task (and, in full, batch size, learning rate, beta).
    assert len({c.spec.seed for c in controls}) == len(controls)
    assert len({c.spec.task for c in controls}) == 3
    assert len({c.spec.learning_rate for c in controls}) >= 2
    cells = {c.cell for c in controls}
    assert all(p.cell in cells for p in faults)  # every fault run has a matched control
    for p in faults:
        twin = next(c for c in controls if c.cell == p.cell)
        assert p.spec.model_copy(
            update={"fault": None, "name": "", "experiment_id": None}
        ) == twin.spec.model_copy(update={"name": "", "experiment_id": None})


def _registry(out: Path) -> list[dict[str, str]]:
    with (out / "metadata" / "registries" / "mini.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "mini"
    first = generate("mini", out, workers=2, limit=6)
    # An interrupted worker leaves a live run behind: the next generation must redo it, not skip it.
    store = Store(out / "store")
    todo = [p for p in plan("mini") if p.experiment_id not in {m.name for m in store.manifests()}]
    store.create_live_run(
        RunManifest(run_id=todo[0].experiment_id, name=todo[0].experiment_id, source=SourceInfo(format="x"))
    )
    second = generate("mini", out, workers=2)
    return {"out": out, "first": first, "second": second, "interrupted": todo[0].experiment_id}


@pytest.mark.slow
def test_mini_generates_every_run_and_resumes(mini: dict[str, Any]) -> None:
    first, second, out = mini["first"], mini["second"], mini["out"]
    assert first.made == 6 and not first.failed
    assert second.skipped == 6 and second.made == second.total - 6 and not second.failed
    store = Store(out / "store")
    manifests = {m.name: m for m in store.manifests()}
    assert len(manifests) == len(plan("mini")) and all(m.status == "finished" for m in manifests.values())
    assert manifests[mini["interrupted"]].n_steps == 12  # redone from the start, not half a run
    log = [json.loads(line) for line in (out / "generation.jsonl").read_text().splitlines()]
    assert len(log) == len(plan("mini"))


@pytest.mark.slow
def test_mini_registry_covers_families_types_strengths_onsets_and_controls(mini: dict[str, Any]) -> None:
    rows = _registry(mini["out"])
    assert list(rows[0])[:5] == [
        "experiment_id",
        "control_or_fault",
        "fault_type",
        "fault_family",
        "task_group",
    ]
    faults = [r for r in rows if r["control_or_fault"] == "fault"]
    assert {r["fault_family"] for r in faults} == set(FAULT_FAMILIES)
    assert {r["fault_type"] for r in faults} == set(FAULT_TYPES)
    assert {r["strength"] for r in faults} == {"easy", "hard"}
    assert {r["onset_style"] for r in faults} == {"step1", "midrun"}
    assert sum(r["control_or_fault"] == "control" for r in rows) == 16
    for kind in FAULT_TYPES:
        for strength in ("easy", "hard"):
            assert sum(r["fault_type"] == kind and r["strength"] == strength for r in faults) >= 2


@pytest.mark.slow
def test_mini_labels_follow_the_onset(mini: dict[str, Any]) -> None:
    store = Store(mini["out"] / "store")
    for row in _registry(mini["out"]):
        manifest = store.manifest(row["experiment_id"])
        traj = store.trajectories(manifest.run_id)
        if row["control_or_fault"] == "control":
            assert manifest.label == "control" and traj["fault_injection_type"].isna().all()
            continue
        onset = int(row["onset_step"])
        assert manifest.fault is not None and manifest.fault.onset_step == onset
        before, after = traj[traj["step"] < onset], traj[traj["step"] >= onset]
        assert before["fault_injection_type"].isna().all() and not before["fault_injected"].any()
        assert (after["fault_injection_type"] == row["fault_type"]).all()


@pytest.mark.slow
def test_mini_every_easy_fault_moves_a_metric(mini: dict[str, Any]) -> None:
    table = effect_table(mini["out"])
    easy = {r["fault_type"]: r for r in table["rows"] if r["strength"] == "easy"}
    assert set(easy) == set(FAULT_TYPES)
    invisible = [k for k, r in easy.items() if not r["visible"]]
    assert not invisible, invisible


@pytest.mark.slow
def test_mini_exports_to_the_papers_layout_and_loads_back(mini: dict[str, Any], tmp_path: Path) -> None:
    result = export_bench(mini["out"], tmp_path / "paper")
    assert result["runs"] == len(plan("mini"))
    runs = importers.load(tmp_path / "paper")
    assert len(runs) == result["runs"]
    by_id = {r.experiment_id: r for r in runs}
    store = Store(mini["out"] / "store")
    for row in _registry(mini["out"])[:10]:
        imported = by_id[row["experiment_id"]]
        original = store.manifest(row["experiment_id"])
        assert imported.label == original.label
        assert imported.fault == original.fault
        assert len(imported.steps) == original.n_steps
        assert imported.trajectories is not None and imported.trajectories.num_rows == original.n_trajectories
        ours = store.trajectories(original.run_id)
        theirs = imported.trajectories.to_pandas()
        assert theirs["fault_injected"].tolist() == ours["fault_injected"].tolist()
        assert (
            theirs["fault_injection_type"].fillna("").tolist()
            == ours["fault_injection_type"].fillna("").tolist()
        )


def test_generation_refuses_a_folder_of_another_preset(tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text(json.dumps({"preset": "full", "seed": 0}))
    with pytest.raises(RftfmError, match="holds preset 'full'"):
        generate("mini", tmp_path, workers=1, limit=0)


@pytest.mark.slow
def test_ray_backend_makes_the_same_records_as_the_pool(tmp_path: Path) -> None:
    """Ray is an optional extra (`rftfm[ray]`); the test runs where it is installed."""
    pytest.importorskip("ray")
    pool = generate("mini", tmp_path / "pool", workers=2, limit=2)
    on_ray = generate("mini", tmp_path / "ray", ray_address="local", limit=2)
    assert pool.made == on_ray.made == 2 and not pool.failed and not on_ray.failed
    a, b = Store(tmp_path / "pool" / "store"), Store(tmp_path / "ray" / "store")
    assert a.run_ids() == b.run_ids()
    for run_id in a.run_ids():
        assert a.trajectories(run_id).equals(b.trajectories(run_id))


@pytest.mark.slow
def test_bench_cli_effects_and_export(mini: dict[str, Any], tmp_path: Path) -> None:

    from rftfm_agent.cli import app

    runner = CliRunner()
    result = runner.invoke(
        app, ["bench", "effects", str(mini["out"]), "--json", "--markdown", str(tmp_path / "e.md")]
    )
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)
    assert len(table["rows"]) == len(FAULT_TYPES) * 2
    assert "| rf_sign_flip | easy |" in (tmp_path / "e.md").read_text()
    result = runner.invoke(app, ["bench", "export", str(mini["out"]), "--out", str(tmp_path / "p"), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["runs"] == len(plan("mini"))


def test_bench_cli_bad_folder_is_one_line(tmp_path: Path) -> None:

    from rftfm_agent.cli import app

    result = CliRunner().invoke(app, ["bench", "export", str(tmp_path), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: {tmp_path}: not a benchmark folder (no metadata/registries or store)"
    ]
    result = CliRunner().invoke(app, ["bench", "generate", "--preset", "huge", "--out", str(tmp_path / "y")])
    assert result.exit_code == 1 and "unknown preset 'huge'" in result.output


@pytest.mark.slow
def test_eval_detect_on_mini_reports_protocols_baselines_and_online(mini: dict[str, Any]) -> None:
    from rftfm_agent.evals.eval_detect import evaluate, render

    report = evaluate(mini["out"], folds=4)
    assert set(report["methods"]) == {"rftfm", "flag-all", "fixed thresholds", "IsolationForest", "LOF"}
    flag_all = report["methods"]["flag-all"]
    # The paper's labelling trap: counting the controls as faulty makes flagging everything perfect.
    assert flag_all["mean_f1"]["A"] == {"easy": 1.0, "hard": 1.0}
    assert flag_all["mean_f1"]["B"]["easy"] < 0.9 and flag_all["false_alarm_rate"] == 1.0
    ours = report["methods"]["rftfm"]
    # On mini the in-fold detector is fitted on 12 controls over 3 tasks (about 4 per task's band) of
    # 12-step runs that vary their learning rate: its bands are too narrow to calibrate, and a control whose
    # learning rate differs from its fold's flags on `learning_rate` and the trajectory metrics. Measured:
    # F1 above flag-all on one machine; flag-all's F1 with 94 % (seed 7) and 100 % (a fresh warm-up,
    # 2026-12-02) false alarms on this one. Held here: the machinery and never worse than flag-all; the
    # false-alarm figure is `full`'s (`docs/detection.md`: 1.5 %), not mini's.
    assert ours["mean_f1"]["B"]["easy"] >= flag_all["mean_f1"]["B"]["easy"]
    assert report["online"]["midrun_faults"] == 32 and report["online"]["detected"] > 0
    assert set(report["recall_by_type"]) == set(FAULT_TYPES)
    assert "| rftfm |" in render(report)


@pytest.mark.slow
def test_eval_diagnose_on_mini_reports_splits_modes_and_confusions(
    mini: dict[str, Any], tmp_path: Path
) -> None:
    from rftfm_agent.evals.eval_diagnose import evaluate, plot_confusion, render

    report = evaluate(mini["out"], folds=4)
    assert set(report["results"]) == {"seeds/band", "seeds/self", "task/band", "task/self"}
    seeds = report["results"]["seeds/band"]
    assert seeds["easy"]["n"] == 32 and seeds["hard"]["n"] == 32
    # Four mini cells train each fold (one or two runs per type), so this only has to beat chance (1/17).
    assert seeds["easy"]["type_top3"] > 3 / 17
    assert set(seeds["easy"]["per_type"]) == set(FAULT_TYPES)
    text = render(report)
    assert "type_top1 easy" in text and "| seeds/band | easy |" in text
    png = plot_confusion(report, tmp_path / "confusion.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_shipped_library_diagnoses_runs_of_another_benchmark(mini: dict[str, Any]) -> None:
    """The shipped library was built from `full` (20–40 steps, batches of 48–96); mini's runs are 12 steps
    of 32: easy faults are still named, and the CLI answers in the issue's schema."""
    from rftfm_agent.detect.api import load_detector
    from rftfm_agent.detect.bench_data import load_bench
    from rftfm_agent.diagnose.diagnoser import Diagnoser
    from rftfm_agent.diagnose.library import Library, fingerprint_table

    runs = [r for r in load_bench(mini["out"]) if r.meta["strength"] == "easy"]
    table = fingerprint_table(load_detector(), runs, ("band",))
    classes, proba, _ = Diagnoser(Library.load()).predict_table("band", table)
    top1 = classes[proba.argmax(axis=1)]
    top3 = [set(classes[np.argsort(-p)[:3]]) for p in proba]
    assert (top1 == table["type"].to_numpy()).mean() >= 0.75
    assert np.mean([t in s for t, s in zip(table["type"], top3, strict=True)]) >= 0.9

    # `rftfm diagnose` (one run at a time) answers exactly what the evaluation (a whole table) scores.
    from rftfm_agent.diagnose.library import fingerprint_run

    diagnoser = Diagnoser(Library.load())
    for run, p in list(zip(runs, proba, strict=True))[:8]:
        diagnosis = diagnoser.diagnose(fingerprint_run(load_detector(), run, "band"))
        best = next(h for h in diagnosis.hypotheses if h.type != "unknown")
        assert best.type == classes[p.argmax()] and best.probability == pytest.approx(p.max())

    flip = next(r for r in runs if r.meta["fault_type"] == "rf_sign_flip")
    store = str(mini["out"] / "store")
    result = CliRunner().invoke(app, ["diagnose", flip.run_id, "--store", store, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["mode"] == "band" and payload["missing"] == []
    best = payload["hypotheses"][0]
    assert (best["family"], best["type"]) == ("RF", "rf_sign_flip")
    assert best["evidence"]["features"] and best["evidence"]["nearest_runs"]


@pytest.mark.slow
def test_eval_remediate_on_mini_runs_arms_through_the_pool_and_resumes(
    mini: dict[str, Any], tmp_path: Path
) -> None:
    from rftfm_agent.evals.eval_remediate import evaluate, plot, render, select

    hurt, healthy = select(mini["out"])
    assert hurt and healthy and all(h["nothing_final"] is not None for h in hurt)
    out = tmp_path / "rem"
    report = evaluate(mini["out"], out, workers=2, limit=2, arms=("playbook", "stop"))
    assert not report["failed"]
    assert set(report["arms"]) == {"nothing", "playbook", "stop"}
    assert report["arms"]["playbook"]["runs"] == report["arms"]["stop"]["runs"] == 2
    assert report["harm"]["controls"] == 1
    lines = (out / "remediation.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 2 + 1
    again = evaluate(mini["out"], out, workers=2, limit=2, arms=("playbook", "stop"))
    assert len((out / "remediation.jsonl").read_text().splitlines()) == len(lines)  # resumed: nothing redone
    assert again["arms"]["playbook"] == report["arms"]["playbook"]
    text = render(report)
    assert "| playbook |" in text and "| nothing |" in text
    plot(report, tmp_path / "rem.png")
    assert (tmp_path / "rem.png").stat().st_size > 5000


@pytest.mark.slow
def test_eval_agent_on_mini_scores_triage_without_labels_and_acts_on_nothing(
    mini: dict[str, Any], tmp_path: Path
) -> None:
    from conftest import REALRUNS

    from rftfm_agent.evals.eval_agent import evaluate, render

    realruns = REALRUNS

    report = evaluate(
        tmp_path / "ea",
        bench=mini["out"],
        realruns=realruns if realruns.is_dir() else None,
        limit=6,
        controls=2,
    )
    kinds = {r["kind"] for r in report["rows"]}
    assert {"fault", "control"} <= kinds and len([r for r in report["rows"] if r["kind"] == "fault"]) == 6
    eval_store = Store(tmp_path / "ea" / "store")
    for m in eval_store.manifests():  # the copies carry no label the tools could read
        assert m.label == "unknown" and m.fault is None and not any(k.startswith("fault") for k in m.config)
    for row in report["rows"]:
        assert row["unapproved_actions"] == 0 and row["fix_allowed"] and row["tool_calls"] >= 7
    assert sum(r["asked"] for r in report["rows"]) >= 1  # a fix was proposed and left waiting for a person
    faults = [r for r in report["rows"] if r["kind"] == "fault"]
    assert sum(r["named"] for r in faults) >= 1  # the measured share is in docs/agent.md
    text = render(report)
    assert "| deterministic | fault | 6 |" in text
