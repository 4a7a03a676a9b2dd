"""The store: round trip, NaN kept, idempotent ingest, atomic writes, read-only SQL."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pytest

from rftfm_agent.errors import StoreError
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry import store as store_mod
from rftfm_agent.telemetry.schema import RawStep, RunManifest, SourceInfo
from rftfm_agent.telemetry.store import Store


def _ingest(store: Store, path: Path) -> RunManifest:
    (run,) = importers.load(path)
    manifest, _ = store.write_run(run)
    return manifest


def test_round_trip_maps_names_and_keeps_originals(tmp_path: Path, fixtures: Path) -> None:
    st = Store(tmp_path / "s")
    m = _ingest(st, fixtures / "verl_console.log")
    assert m.n_steps == 5 and m.first_step == 0 and m.last_step == 4
    assert m.metric_sources["reward"] == "critic/score/mean"
    assert m.metric_sources["entropy"] == "actor/entropy_loss"
    assert m.metric_sources["completions/clipped_ratio"] == "response_length/clip_ratio"
    wide = st.steps(m.run_id)
    assert wide.loc[wide.step == 1, "learning_rate"].item() == pytest.approx(1e-6)  # lr(1e-4) scaled
    assert math.isnan(wide.loc[wide.step == 3, "grad_norm"].item())
    long = st.steps(m.run_id, wide=False)
    nan_rows = long[(long.metric == "grad_norm") & long.value.isna()]
    assert list(nan_rows.step) == [3]  # the logged NaN is a stored row, not a gap


def test_same_bytes_twice_is_a_no_op_and_new_content_gets_a_new_id(tmp_path: Path, fixtures: Path) -> None:
    st = Store(tmp_path / "s")
    (run,) = importers.load(fixtures / "trainer_state.json")
    first, outcome1 = st.write_run(run)
    again, outcome2 = st.write_run(run)
    assert (outcome1, outcome2) == ("new", "unchanged") and first.run_id == again.run_id
    run.source.sha256 = "different"
    other, outcome3 = st.write_run(run)
    assert outcome3 == "new" and other.run_id == f"{first.run_id}-2"
    replaced, outcome4 = st.write_run(run.__class__(**{**run.__dict__, "steps": run.steps[:2]}), replace=True)
    assert outcome4 == "replaced" and replaced.n_steps == 2 and st.manifest(replaced.run_id).n_steps == 2


def test_crash_before_commit_leaves_store_as_it_was(tmp_path: Path, fixtures: Path, monkeypatch) -> None:
    st = Store(tmp_path / "s")
    good = _ingest(st, fixtures / "trainer_state.json")
    before = st.steps(good.run_id)

    def crash(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Store, "_commit_manifest", crash)
    (run,) = importers.load(fixtures / "verl_console.log")
    with pytest.raises(OSError):
        st.write_run(run)
    with pytest.raises(OSError):  # an append to the existing run that dies before its commit
        st.append(good.run_id, steps=[RawStep(step=99, values={"reward": 1.0})])
    monkeypatch.undo()
    assert st.run_ids() == [good.run_id]  # the half-written run is invisible
    assert st.steps(good.run_id).equals(before)  # the appended part is not visible either
    # the next successful write cleans the orphaned part up
    st.append(good.run_id, steps=[RawStep(step=7, values={"reward": 2.0})])
    parts = list((st.runs_dir / good.run_id / "steps").iterdir())
    assert len(parts) == len(st.manifest(good.run_id).step_parts) == 2


def test_crash_while_writing_a_part(tmp_path: Path, fixtures: Path, monkeypatch) -> None:
    st = Store(tmp_path / "s")
    good = _ingest(st, fixtures / "trainer_state.json")
    real_write = store_mod.pq.write_table

    def half_write(table: pa.Table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod.pq, "write_table", half_write)
    with pytest.raises(KeyboardInterrupt):
        st.append(good.run_id, steps=[RawStep(step=50, values={"reward": 1.0})])
    monkeypatch.setattr(store_mod.pq, "write_table", real_write)
    assert st.manifest(good.run_id).n_steps == 6 and len(st.steps(good.run_id)) == 6


def test_live_append_and_compaction(tmp_path: Path) -> None:
    st = Store(tmp_path / "s")
    m = st.create_live_run(
        RunManifest(run_id="live", name="live", source=SourceInfo(format="rftfm_recorder"))
    )
    for step in range(1, store_mod.COMPACT_AFTER_PARTS + 5):
        st.append(m.run_id, steps=[RawStep(step=step, values={"reward": step / 10, "kl": float("nan")})])
    final = st.append(m.run_id, status="finished")
    assert final.status == "finished" and final.n_steps == store_mod.COMPACT_AFTER_PARTS + 4
    assert len(final.step_parts) < store_mod.COMPACT_AFTER_PARTS
    assert st.steps(m.run_id)["kl"].isna().all()


def test_sql_is_read_only_and_confined_to_the_store(tmp_path: Path, fixtures: Path) -> None:
    st = Store(tmp_path / "s")
    m = _ingest(st, fixtures / "trainer_state.json")
    df = st.sql("SELECT step, value FROM steps WHERE metric = 'reward' ORDER BY step")
    assert list(df.step) == [1, 2, 3, 4, 5, 6]
    assert st.sql("SELECT count(*) AS n FROM runs").n.item() == 1
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    for query in (
        f"DELETE FROM steps WHERE run_id = '{m.run_id}'",
        f"COPY steps TO '{tmp_path}/x.csv'",
        "SELECT 1; SELECT 2",
        f"ATTACH '{tmp_path}/db.duckdb'",
        "INSTALL httpfs",
    ):
        with pytest.raises(StoreError):
            st.sql(query)
    with pytest.raises(StoreError):
        st.sql(f"SELECT * FROM read_csv('{outside}')")


def test_resolve_by_name_and_prefix(tmp_path: Path, fixtures: Path) -> None:
    st = Store(tmp_path / "s")
    m = _ingest(st, fixtures / "verl_console.log")
    assert st.resolve(m.run_id[:5]) == m.run_id
    with pytest.raises(StoreError, match="no run"):
        st.resolve("zzz")


def test_derived_tables_are_stored_beside_a_run_and_queryable(tmp_path: Path, fixtures: Path) -> None:
    st = Store(tmp_path / "s")
    m = _ingest(st, fixtures / "verl_console.log")
    assert st.sql("SELECT count(*) AS n FROM events")["n"].item() == 0  # the view exists before any write
    table = pa.table(
        {
            "run_id": [m.run_id],
            "step": [3],
            "metric": ["grad_norm"],
            "source": ["rule"],
            "check": ["non_finite"],
            "severity": ["critical"],
            "score": [math.inf],
            "alarm": [True],
            "evidence": ['{"value": "NaN"}'],
        }
    )
    st.write_artifact(m.run_id, "events", table)
    got = st.sql('SELECT step, "check", score FROM events').to_dict("records")
    assert got == [{"step": 3, "check": "non_finite", "score": math.inf}]
    assert len(st.artifact(m.run_id, "events")) == 1
    with pytest.raises(StoreError, match="unknown run artifact"):
        st.write_artifact(m.run_id, "journal", table)
    with pytest.raises(StoreError, match="does not fit its schema"):
        st.write_artifact(m.run_id, "events", table.drop(["severity"]))
    with pytest.raises(StoreError, match="no run"):
        st.write_artifact("nope", "events", table)
    assert not list((st.runs_dir / m.run_id).glob(".*.tmp"))  # nothing half-written left behind


def test_replacing_a_runs_content_drops_its_stale_derived_tables(tmp_path: Path, fixtures: Path) -> None:
    st = Store(tmp_path / "s")
    (run,) = importers.load(fixtures / "verl_console.log")
    m, _ = st.write_run(run)
    st.write_artifact(m.run_id, "verdicts", store_mod.VERDICT_SCHEMA.empty_table())
    assert (st.runs_dir / m.run_id / "verdicts.parquet").is_file()
    changed = run.__class__(**{**run.__dict__, "steps": run.steps[:2]})
    changed.source = changed.source.model_copy(update={"sha256": "other"})
    _, outcome = st.write_run(changed, replace=True)
    assert outcome == "replaced" and not (st.runs_dir / m.run_id / "verdicts.parquet").exists()


def test_the_journal_is_appended_durably_read_in_order_and_queryable(tmp_path: Path, fixtures: Path) -> None:
    from typer.testing import CliRunner

    from rftfm_agent.cli import app

    st = Store(tmp_path / "s")
    m = _ingest(st, fixtures / "verl_console.log")
    assert st.journal(m.run_id).empty and st.sql("SELECT count(*) AS n FROM journal")["n"].item() == 0
    for seq, decision in enumerate(("incident", "refused", "escalated"), start=1):
        st.append_journal(
            m.run_id,
            {
                "run_id": m.run_id,
                "seq": seq,
                "step": 3,
                "decision": decision,
                "rule": "checkpoint" if decision == "refused" else None,
                "reason": f"{decision} at 3",
                "actions": "[]",
                "detail": "{}",
            },
        )
    path = st.runs_dir / m.run_id / store_mod.JOURNAL_FILE
    with path.open("a") as f:
        f.write('{"run_id": "torn')  # a crash mid-write: the torn line is skipped, nothing else lost
    frame = st.journal(m.run_id)
    assert frame["decision"].tolist() == ["incident", "refused", "escalated"]
    assert frame["rule"].tolist() == [None, "checkpoint", None]
    got = st.sql("SELECT decision, rule FROM journal WHERE decision = 'refused'").to_dict("records")
    assert got == [{"decision": "refused", "rule": "checkpoint"}]
    with pytest.raises(StoreError, match="no run"):
        st.append_journal("nope", {"seq": 1})
    result = CliRunner().invoke(app, ["journal", m.run_id, "--store", str(st.root), "--json"])
    assert result.exit_code == 0, result.output
    assert [e["decision"] for e in json.loads(result.output)] == ["incident", "refused", "escalated"]


def test_trajectory_parts_compress_text_with_zstd_and_every_other_leaf_with_snappy(tmp_path: Path) -> None:
    """Per-column codecs are given per Parquet leaf: a leaf left out of the mapping (the keys and values
    of the per-function rewards map) would be written uncompressed without a word."""
    import pyarrow.parquet as pq

    from rftfm_agent.telemetry.schema import ImportedRun

    traj = pa.table(
        {
            "step": [1, 1, 2],
            "prompt": ["2+2=", "2+2=", "3+3="],
            "completion": ["4", "5", "6"],
            "reward": [1.0, 0.0, 1.0],
            "rewards": pa.array(
                [[("correct", 1.0)], [("correct", 0.0)], [("format", 1.0)]],
                pa.map_(pa.string(), pa.float64()),
            ),
        }
    )
    run = ImportedRun(name="codecs", source=SourceInfo(format="test"), trajectories=traj)
    st = Store(tmp_path / "s")
    manifest, _ = st.write_run(run)
    (part,) = st._parts(manifest.run_id, "trajectories")
    meta = pq.ParquetFile(part).metadata.row_group(0)
    codecs = {meta.column(i).path_in_schema: meta.column(i).compression for i in range(meta.num_columns)}
    assert len(codecs) == len(store_mod.TRAJECTORY_SCHEMA) + 1  # the map has two leaves
    assert codecs["prompt"] == codecs["completion"] == "ZSTD"
    assert {c for p, c in codecs.items() if p not in ("prompt", "completion")} == {"SNAPPY"}
    assert st.trajectories(manifest.run_id)["completion"].tolist() == ["4", "5", "6"]
    # Dictionaries for text leaves only, min/max statistics for the columns parts are filtered on only.
    columns = [meta.column(i) for i in range(meta.num_columns)]
    dictionary = {c.path_in_schema for c in columns if c.dictionary_page_offset is not None}
    assert dictionary == {"run_id", "prompt_id", "prompt", "completion", "fault_injection_type"} | {
        "fault_injection_strength",
        "rewards.key_value.key",
    }
    assert {c.path_in_schema for c in columns if c.is_stats_set} == {"run_id", "step"}
