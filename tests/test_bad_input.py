"""Odd input that parses, found by fuzzing `rftfm ingest` by hand: each is one line naming the file (and
the line or row where there is one), exit 1, nothing stored; none is a traceback, a crash or a hang,
and none is stored changed (a fraction truncated, a step wrapped, a value merged into another)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rftfm_agent.cli import app
from rftfm_agent.errors import InputError
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.importers import base
from rftfm_agent.telemetry.store import Store

_HF = "{'loss': 0.5, 'grad_norm': 1.0, 'learning_rate': 1e-06, 'step': 1}\n"
_STATE = {"global_step": 2, "log_history": [{"step": 1, "loss": 0.5}]}

# (file name, content, what the one-line error says)
_ODD_FILES: list[tuple[str, bytes, str]] = [
    (
        "nan.jsonl",
        b'{"step": 1, "loss": 0.5}\n{"step": NaN, "loss": 0.4}\n',
        "line 2: step is not a whole number",
    ),
    ("big.jsonl", b'{"step": 1, "loss": 0.5}\n{"step": 1e19, "loss": 0.4}\n', "line 2: step is not a whole"),
    (
        "gap.jsonl",
        b'{"step": 10, "loss": 0.5}\n{"loss": 0.4}\n{"step": 20, "loss": 0.3}\n',
        "line 2: no step",
    ),
    (
        "digits.jsonl",
        b'{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 1' + b"0" * 400 + b"}\n",
        "OverflowError",
    ),
    (
        "deep.jsonl",
        b'{"step": 1, "loss": 0.5}\n{"step": 2, "x": ' + b"[" * 99_999 + b"]" * 99_999 + b"}\n",
        "Recursion",
    ),
    ("surrogate.jsonl", b'{"step": 1, "\\udc80": 0.5}\n', "is not valid text"),
    (
        "state.json",
        json.dumps({**_STATE, "log_history": [{"step": 1.5, "loss": 0.5}]}).encode(),
        "log_history[0]",
    ),
    ("hf.log", (_HF + _HF.replace("'step': 1", "'step': 1.5")).encode(), "line 2: 'step' 1.5 is not a whole"),
    ("hf_inf.log", (_HF + _HF.replace("'step': 1", "'step': inf")).encode(), "line 2: 'step' inf"),
    (
        "verl.log",
        b"step:1 - actor/loss:0.5 - critic/score/mean:0.1\nstep:1.5 - actor/loss:0.4\n",
        "line 2: step",
    ),
    (
        "verl_big.log",
        b"step:1 - actor/loss:0.5\nstep:99999999999999999999 - actor/loss:0.4\n",
        "line 2: step",
    ),
    ("keys_only.json", json.dumps({**_STATE, "log_history": [{"step": 1}]}).encode(), "no metric values"),
]


@pytest.mark.parametrize(("name", "content", "said"), _ODD_FILES, ids=[f[0] for f in _ODD_FILES])
def test_odd_input_is_one_line_naming_the_file(tmp_path: Path, name: str, content: bytes, said: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = CliRunner().invoke(app, ["ingest", str(path), "--store", str(tmp_path / "store")])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and said in lines[0], result.output
    assert Store(tmp_path / "store").run_ids() == []


def test_a_parquet_step_past_the_64_bit_range_is_refused_not_wrapped(tmp_path: Path) -> None:
    for step in (1e19, float("inf")):
        path = tmp_path / "steps.parquet"
        pq.write_table(pa.table({"step": [1.0, step], "loss": [0.5, 0.4]}), path)
        with pytest.raises(importers.InputError, match="outside the 64-bit range"):
            importers.load(path)


def test_a_pipe_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "log.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(importers.InputError, match="not a regular file"):
        importers.load(fifo)


def test_a_file_name_that_is_not_utf8_is_named_readably(tmp_path: Path) -> None:
    path = Path(os.fsdecode(os.fsencode(tmp_path) + b"/bad\xffname.jsonl"))
    path.write_text('{"step": 1, "loss": 0.5}\n')
    with pytest.raises(importers.InputError, match="not valid UTF-8") as refused:
        importers.load(path)
    assert "bad\ufffdname.jsonl" in str(refused.value)


def test_a_byte_order_mark_is_read_past_and_utf16_read(tmp_path: Path) -> None:
    for name, text in (
        ("m.jsonl", '{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n'),
        ("trainer_state.json", json.dumps(_STATE)),
        ("verl.log", "step:1 - actor/loss:0.5\nstep:2 - actor/loss:0.4\n"),
    ):
        for encoded in (b"\xef\xbb\xbf" + text.encode(), text.encode("utf-16")):  # UTF-16: PowerShell's `>`
            path = tmp_path / name
            path.write_bytes(encoded)
            (run,) = importers.load(path)
            assert run.steps[0].step == 1 and run.steps[0].values, name


def test_a_utf16_console_log_whose_metrics_start_past_the_head_is_recognised(tmp_path: Path) -> None:
    """PowerShell's `>` writes UTF-16; a console log opens with pages of loading messages before its
    first metrics line. The sniffers look past the head for that line, and used to search the raw UTF-16
    bytes there: "unknown format" for a log the same bytes in UTF-8 import from."""
    preamble = "".join(f"Loading shard {i} of the model weights from the local cache\n" for i in range(2000))
    trl = "{'loss': 0.5, 'reward': 0.1, 'epoch': 0.01}\n{'loss': 0.4, 'reward': 0.2, 'epoch': 0.02}\n"
    for name, metrics, key in (
        ("trl.log", trl, "loss"),
        ("verl.log", "step:1 - actor/loss:0.5\nstep:2 - actor/loss:0.4\n", "actor/loss"),
    ):
        text = preamble + metrics
        assert len(text.encode("utf-16")) > 2 * base.HEAD_BYTES  # the metrics lie past the sniffed head
        path = tmp_path / name
        path.write_bytes(text.encode("utf-16"))
        (run,) = importers.load(path)
        assert [s.step for s in run.steps] == [1, 2] and run.steps[1].values[key] == 0.4, name


def test_two_keys_of_one_name_both_survive(tmp_path: Path) -> None:
    """`train/loss` and `loss` both normalise to `loss`: the second is kept under its logged key (it was
    merged into `loss`, and the wide table kept one of the two)."""
    path = tmp_path / "m.jsonl"
    path.write_text(
        '{"step": 1, "train/loss": 0.5, "loss": 0.6}\n{"step": 2, "train/loss": 0.4, "loss": 0.7}\n'
    )
    store = Store(tmp_path / "store")
    CliRunner().invoke(app, ["ingest", str(path), "--store", str(store.root)], catch_exceptions=False)
    wide = store.steps(store.run_ids()[0])
    assert wide["loss"].tolist() == [0.5, 0.4] and wide["loss~2"].tolist() == [0.6, 0.7]


def test_skip_bad_leaves_a_row_with_a_bad_step_out_of_a_metrics_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(
        '{"step": 1, "loss": 0.5}\n{not json\n{"step": 2.5, "loss": 0.4}\n{"step": 3, "loss": 0.3}\n'
    )
    (run,) = importers.load(path, skip_bad=True)
    assert [s.step for s in run.steps] == [1, 3]
    (note,) = [n for n in run.source.notes if n.startswith("--skip-bad")]
    assert "2 malformed row(s)" in note and "first: line 2" in note


def test_a_registry_that_labels_one_experiment_twice_is_refused(tmp_path: Path) -> None:
    from rftfm_agent.telemetry.faultbench_export import write_registry
    from rftfm_agent.telemetry.importers.faultbench import read_registries

    write_registry(
        tmp_path,
        "reg",
        [
            {"experiment_id": "e1", "control_or_fault": "control"},
            {"experiment_id": "e1", "control_or_fault": "fault", "fault_type": "rf_sign_flip"},
        ],
    )
    with pytest.raises(
        importers.InputError, match="line 3: 'e1' is listed again with another control_or_fault"
    ):
        read_registries(tmp_path)


def test_a_notebook_table_with_a_column_twice_is_refused_and_an_unnamed_one_left_out(tmp_path: Path) -> None:
    """A second `Training Loss` overwrote the first without a word, and an unnamed column (an index) was
    stored as a metric named ''."""
    row = "<tr><td>{}</td><td>0.5</td><td>0.1</td></tr>"
    for header, refused in (("Training Loss", True), ("", False)):
        path = tmp_path / "table.html"
        path.write_text(
            f"<table><thead><tr><th>Step</th><th>Training Loss</th><th>{header}</th></tr></thead>"
            f"<tbody>{row.format(1)}{row.format(2)}</tbody></table>"
        )
        if refused:
            with pytest.raises(importers.InputError, match="duplicate column name"):
                importers.load(path)
            continue
        (run,) = importers.load(path)
        assert [set(s.values) for s in run.steps] == [{"Training Loss"}] * 2
        assert any("without a name" in n for n in run.source.notes)


def test_a_per_step_train_loss_is_a_metric_and_the_end_summary_goes_to_config(tmp_path: Path) -> None:
    """`train_loss` alone made a row the end-of-training summary: a trainer logging it per step lost
    those steps (or the whole file: "without any metrics row"). The summary is marked by run-time figures."""
    path = tmp_path / "m.jsonl"
    rows = [{"step": s, "train_loss": 0.5 / s, "reward": 0.1 * s} for s in (1, 2, 3)]
    rows.append({"train_runtime": 12.0, "train_loss": 0.3, "train_samples_per_second": 4.0})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run,) = importers.load(path)
    assert [s.step for s in run.steps] == [1, 2, 3] and run.steps[1].values["train_loss"] == 0.25
    assert run.config["summary/train_loss"] == 0.3 and run.config["summary/train_runtime"] == 12.0


def test_a_word_where_other_rows_log_a_number_is_noted(tmp_path: Path) -> None:
    """It was left out without a word (a text field that is never a number, a mode name, is not noted)."""
    path = tmp_path / "m.jsonl"
    rows = [{"step": 1, "loss": 0.5, "mode": "train"}, {"step": 2, "loss": "oops", "mode": "train"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, {"step": 3, "loss": {"a": 1}}]))
    (run,) = importers.load(path)
    assert "values that are not numbers left out: 'loss' ×2 (first: line 2)" in run.source.notes


def test_a_quote_never_closed_says_how_many_lines_it_swallows(tmp_path: Path) -> None:
    """With --skip-bad the rest of the file went as "1 malformed row" without saying it was 198 lines."""
    path = tmp_path / "h.csv"
    rest = "".join(f"{s},0.{s % 10},0.1\n" for s in range(3, 200))
    path.write_text('step,loss,reward\n1,0.5,0.1\n2,"0.4,0.2\n' + rest)
    (run,) = importers.load(path, skip_bad=True)
    assert any("runs over 199 lines" in n for n in run.source.notes), run.source.notes


def test_a_file_of_a_folder_that_no_importer_recognises_is_named_in_the_notes(tmp_path: Path) -> None:
    """A log cut at its first line was left out of its folder without a word. (A log whose later lines
    parse is recognised, and its corrupt first line named: the test above.)"""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "a.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n')
    (tmp_path / "run" / "b.jsonl").write_text('{"step": 1, "loss": 0.5,,\n')  # cut at its first line
    (run,) = importers.load(tmp_path / "run")
    assert "file(s) in the folder that no importer recognised, left out: b.jsonl" in run.source.notes


def test_a_corrupt_first_line_is_named_or_skipped_not_an_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1, "loss": 0.5,,\n{"step": 2, "loss": 0.4}\n{"step": 3, "loss": 0.3}\n')
    with pytest.raises(importers.InputError, match="corrupt JSONL at line 1"):
        importers.load(path)
    (run,) = importers.load(path, skip_bad=True)
    assert [s.step for s in run.steps] == [2, 3]


def _rows(fmt: str, steps: range) -> str:
    """Complete log lines, one per step, as each trainer writes them."""
    if fmt == "jsonl":
        return "".join(json.dumps({"step": s, "loss": 0.5, "reward": 0.25}) + "\n" for s in steps)
    if fmt == "hf":
        return "".join(f"{{'loss': 0.5, 'reward': 0.25, 'step': {s}}}\n" for s in steps)
    if fmt == "verl":
        return "".join(f"step:{s} - actor/pg_loss:0.5 - critic/score/mean:0.25\n" for s in steps)
    return "step,loss,reward\n" + "".join(f"{s},0.5,0.25\n" for s in steps)


# A step cut short where the writer was killed: mid-number, as a number still (verl stored 0.0).
_CUT = {
    "jsonl": '{"step": 4, "loss": 0.',
    "hf": "{'loss': 0.5, 'reward': 0.",
    "verl": "step:4 - actor/pg_loss:0.5 - critic/score/mean:0.",
    "csv": "4,0.",
}


@pytest.mark.parametrize("fmt", sorted(_CUT))
def test_a_log_cut_mid_line_by_a_killed_job_is_read_without_the_cut_part_and_says_so(
    tmp_path: Path, fmt: str
) -> None:
    """Every line-based importer treats a last line cut short (no newline after it) alike: the complete
    steps are stored, nothing of the cut part is stored as a value, and the run's notes say so. (CSV
    refused the whole file; verl stored the cut `0.` as 0.0 without a word.)"""
    name = {"jsonl": "log.jsonl", "hf": "train.log", "verl": "verl.log", "csv": "history.csv"}[fmt]
    path = tmp_path / name
    path.write_text(_rows(fmt, range(1, 25)) + _CUT[fmt].replace("4", "25", 1))
    store = Store(tmp_path / "store")
    result = CliRunner().invoke(app, ["ingest", str(path), "--store", str(store.root)])
    assert result.exit_code == 0, result.output
    (manifest,) = store.manifests()
    assert any(n.startswith("truncated:") for n in manifest.source.notes), manifest.source.notes
    steps = store.steps(manifest.run_id)
    values = steps.drop(columns=["step", "wall_time"]).to_numpy()
    assert (values[~pd.isna(values)] != 0.0).all()  # no cut value stored as zero
    if fmt == "verl":  # the complete entries of the cut line are kept, its last one is not
        last = steps.iloc[-1]
        assert (
            steps["step"].tolist() == list(range(1, 26))
            and last["pg_loss"] == 0.5
            and pd.isna(last["reward"])
        )
    else:
        assert steps["step"].tolist() == list(range(1, 25))


def test_a_log_that_merely_lacks_its_final_newline_loses_nothing(tmp_path: Path) -> None:
    """Logs copied or downloaded whole often end without a newline (a verl log in ../shared/realruns
    does): a last value written like the key's earlier ones is kept, and nothing is said."""
    path = tmp_path / "verl.log"
    path.write_text(_rows("verl", range(1, 4)) + "step:4 - actor/pg_loss:0.5 - critic/score/mean:0.75")
    (run,) = importers.load(path)
    assert run.steps[-1].values == {"actor/pg_loss": 0.5, "critic/score/mean": 0.75} and not run.source.notes
    path.write_text(_rows("verl", range(1, 4)) + "step:4 - actor/pg_loss:0.5 - critic/score/mean:nan")
    (run,) = importers.load(path)
    assert math.isnan(run.steps[-1].values["critic/score/mean"]) and not run.source.notes
    for name, fmt in (("log.jsonl", "jsonl"), ("history.csv", "csv")):
        (tmp_path / name).write_text(_rows(fmt, range(1, 4)).rstrip("\n"))
        (run,) = importers.load(tmp_path / name)
        assert [s.step for s in run.steps] == [1, 2, 3] and not any(
            "truncated" in n for n in run.source.notes
        )


def test_a_first_line_longer_than_the_sniffed_head_is_still_recognised(tmp_path: Path) -> None:
    """A JSON-lines log whose first record holds a long reasoning trace (a 32k-token completion is
    ~100-150 KB) was "unknown format", or a trajectory file taken for console text or for step rows:
    sniffing saw only the first 64 KB, not one whole line."""
    long = "y" * 200_000
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "reward": 0.5, "sample": long}) + "\n" for s in (1, 2)))
    (run,) = importers.load(metrics)
    assert [s.step for s in run.steps] == [1, 2] and run.steps[0].values["reward"] == 0.5
    for bom, encoding in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le")):  # a byte-order mark first
        marked = tmp_path / f"marked-{encoding}.jsonl"
        marked.write_bytes(bom + metrics.read_text().encode(encoding))
        assert [s.step for s in importers.load(marked)[0].steps] == [1, 2], encoding
    rows = [
        {"metadata": {"rollout_step": 1, "group_id": 0, "sample_index": i}, "metrics": {"reward": 1.0}}
        | {"data": {"prompt": "q", "response": long}}
        for i in range(3)
    ]
    trajectories = tmp_path / "trajectories.jsonl"
    trajectories.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run,) = importers.load(trajectories)
    assert run.source.format == "rft_faultbench" and run.trajectories is not None
    assert run.trajectories.num_rows == 3 and run.trajectories.column("completion")[0].as_py() == long


def test_a_trajectory_row_longer_than_the_json_readers_block_is_read(tmp_path: Path) -> None:
    """pyarrow's JSON reader, with its 1 MB blocks, refuses a row of a few MB ("straddling object": 3 MB
    here, 1.5 MB passes), which was reported as rows of mixed types: a file of long multi-turn
    trajectories could not be read, alone or in an export folder."""
    long = "z" * 3_000_000
    rows = [
        {"metadata": {"rollout_step": 1, "group_id": 0, "sample_index": i}, "metrics": {"reward": 0.5 * i}}
        | {"data": {"prompt": "q", "response": long if i == 1 else "short"}}
        for i in range(3)
    ]
    single = tmp_path / "trajectories.jsonl"
    single.write_text("".join(json.dumps(r) + "\n" for r in rows))
    folder = tmp_path / "export" / "runs" / "e1"
    folder.mkdir(parents=True)
    (folder / "openrlhf_train_trajectory.jsonl").write_text(single.read_text())
    for path in (single, tmp_path / "export"):
        (run,) = importers.load(path)
        assert run.trajectories is not None and run.trajectories.num_rows == 3
        assert run.trajectories.column("completion").to_pylist() == ["short", long, "short"]


@pytest.mark.parametrize("fmt", ["jsonl", "hf", "verl"])
def test_a_run_resumed_from_a_checkpoint_is_one_run_that_says_so(tmp_path: Path, fmt: str) -> None:
    """A resume re-logs the steps after its checkpoint: one run, the later values kept, and the notes say
    so in every line-based importer (verl said it; JSON lines and HF console logs kept them silently)."""
    name = {"jsonl": "log.jsonl", "hf": "train.log", "verl": "verl.log"}[fmt]
    path = tmp_path / name
    path.write_text(_rows(fmt, range(1, 7)) + _rows(fmt, range(4, 9)).replace("0.5", "0.75"))
    (run,) = importers.load(path)
    assert [s.step for s in run.steps] == list(range(1, 9))
    assert any("3 step(s) logged twice (resumed from a checkpoint), first 4" in n for n in run.source.notes)
    assert 0.75 in run.steps[3].values.values() and 0.5 in run.steps[2].values.values()


def test_a_gzip_compressed_log_is_read_as_the_file_it_holds(tmp_path: Path) -> None:
    """Logs archived or downloaded from a cluster come gzip-compressed (`train.log.gz`): they were
    "binary file". Read alone or in a run folder, a cut one (the job killed while writing it) up to its
    cut, appended members as appended logs; a damaged one is one line naming it."""
    import gzip

    text = _rows("jsonl", range(1, 301))
    log = tmp_path / "metrics.jsonl.gz"
    log.write_bytes(gzip.compress(text.encode()))
    (run,) = importers.load(log)
    assert run.name == "metrics" and [s.step for s in run.steps] == list(range(1, 301))
    assert (
        run.source.paths == [str(log)]
        and "read from the gzip-compressed metrics.jsonl.gz" in run.source.notes
    )
    again = tmp_path / "again" / "metrics.jsonl"  # the same content, not compressed: the same hash
    again.parent.mkdir()
    again.write_text(text)
    assert importers.load(again)[0].source.sha256 == run.source.sha256

    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(log.read_bytes()[: len(log.read_bytes()) // 2])
    (run,) = importers.load(cut)
    assert 1 < len(run.steps) < 300 and any("ends before its gzip stream does" in n for n in run.source.notes)

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "train.log.gz").write_bytes(gzip.compress(_rows("hf", range(1, 4)).encode()))
    (folder / "notes.gz").write_bytes(gzip.compress(b"not a log at all"))
    (run,) = importers.load(folder)
    assert [s.step for s in run.steps] == [1, 2, 3] and any("notes.gz" in n for n in run.source.notes)

    two = tmp_path / "two.jsonl.gz"  # `gzip >> log.gz` twice: two members, two runs of one file
    two.write_bytes(gzip.compress(text.encode()) + gzip.compress(text.encode()))
    assert [r.name for r in importers.load(two)] == ["two-run1", "two-run2"]

    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(InputError, match=r"bad.jsonl.gz: cannot be decompressed as gzip"):
        importers.load(bad)


def test_a_resumed_trainer_state_or_parquet_history_says_so(tmp_path: Path) -> None:
    """trainer_state.json and a Parquet step history kept the later values of a step logged twice, as
    the line-based importers do, but without a word: now their notes say so too. Rows of one step that
    log other keys (an eval row beside a training row, both with `epoch`) are not a repeat."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    history = [
        {"step": s, "loss": 0.5, "reward": 0.5, "epoch": s / 8, "num_input_tokens_seen": 64 * s}
        for s in range(1, 7)
    ]
    history += [{"step": s, "loss": 0.75, "reward": 0.75, "epoch": s / 8} for s in range(4, 9)]
    state = tmp_path / "trainer_state.json"
    state.write_text(json.dumps({"global_step": 8, "log_history": [*history, {"step": 8, "eval_loss": 0.3}]}))
    table = tmp_path / "history.parquet"
    pq.write_table(pa.Table.from_pylist(history), table)
    for path in (state, table):
        (run,) = importers.load(path)
        assert [s.step for s in run.steps] == list(range(1, 9)), path.name
        assert run.steps[3].values["reward"] == 0.75 and run.steps[2].values["reward"] == 0.5
        assert any(
            "3 step(s) logged twice (resumed from a checkpoint), first 4" in n for n in run.source.notes
        )
    once = tmp_path / "once.json"
    evals = [{"step": s, "eval_loss": 0.3, "epoch": s / 8, "num_input_tokens_seen": 64 * s} for s in (3, 6)]
    once.write_text(json.dumps({"log_history": [*history[:6], *evals]}))
    (run,) = importers.load(once)
    assert not any("logged twice" in n for n in run.source.notes) and run.steps[5].values["eval_loss"] == 0.3


def test_a_log_of_a_job_that_crashed_before_logging_says_so(tmp_path: Path) -> None:
    """A console log with a traceback and no metric was "unknown format": the error now names the
    exception, what a person triaging a crashed job needs (the log may hold metrics in a format rftfm
    does not read, so it does not claim there were none)."""
    log = tmp_path / "train.log"
    log.write_text(
        'Loading model...\nTraceback (most recent call last):\n  File "train.py", line 3, in <module>\n'
        "    trainer.train()\nRuntimeError: CUDA error: device-side assert triggered\n"
    )
    with pytest.raises(InputError, match=r"traceback at line 2 \(RuntimeError: CUDA error: device-side"):
        importers.load(log)
    # behind torchrun's prefix: the exception's line, not a frame's source line
    log.write_text(
        '[rank0]: Traceback (most recent call last):\n[rank0]:   File "t.py", line 4, in <module>\n'
        "[rank0]:     for batch in loader:\n[rank0]: torch.OutOfMemoryError: CUDA out of memory.\n"
    )
    with pytest.raises(InputError, match=r"line 1 \(torch.OutOfMemoryError: CUDA out of memory.\)"):
        importers.load(log)


def test_a_one_line_config_is_not_a_one_step_run(tmp_path: Path) -> None:
    """A JSON file of one object without a step (a config or summary) was read as a run of one step,
    and in a run folder as a second run beside the log."""
    config = tmp_path / "run" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"learning_rate": 1e-6, "num_generations": 8, "beta": 0.04}) + "\n")
    with pytest.raises(InputError, match="unknown format"):
        importers.load(config)
    (config.parent / "metrics.jsonl").write_text(_rows("jsonl", range(1, 4)))
    (run,) = importers.load(config.parent)
    assert [s.step for s in run.steps] == [1, 2, 3] and any("config.json" in n for n in run.source.notes)
    summary = {
        "train/reward": 0.7,
        "train/global_step": 30,
        "_step": 29,
        "_runtime": 900,
        "_wandb": {"runtime": 900},
    }
    (config.parent / "wandb-summary.json").write_text(json.dumps(summary))  # W&B's: the last values, no log
    (run,) = importers.load(config.parent)
    assert run.name == "run" and any("wandb-summary.json" in n for n in run.source.notes)
    (tmp_path / "one.jsonl").write_text(json.dumps({"step": 7, "loss": 0.5, "reward": 0.1}) + "\n")
    assert [s.step for s in importers.load(tmp_path / "one.jsonl")[0].steps] == [7]  # a step: a log
