"""TensorBoard event files: old and new style scalars, NaN kept, folder merge, strict truncation and CRC."""

from __future__ import annotations

import math
import os
import re
import shutil
import struct
from pathlib import Path

import pytest

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.importers import csv_table, html_table, tensorboard_events
from rftfm_agent.telemetry.importers.base import read_head

SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter


def _write_run(logdir: Path, steps: range, reward: float = 0.1, hparams: bool = False) -> Path:
    """What transformers' TensorBoardCallback writes: the args as text, then train/* scalars per step."""
    writer = SummaryWriter(str(logdir))
    writer.add_text("args", '{"max_steps": 5, "learning_rate": 1e-06, "beta": 0.04}')
    for step in steps:
        writer.add_scalar("train/reward", reward * step, step)  # old style: simple_value
        kl = math.nan if step == 2 else 0.001 * step
        writer.add_scalar("train/kl", kl, step, new_style=True)  # new style: tensor + 'scalars' plugin
        writer.add_scalar("train/loss", math.inf if step == 3 else 0.5, step)
    if hparams:
        writer.add_hparams({"learning_rate": 1e-6, "beta": 0.04, "loss_type": "grpo"}, {})
    writer.close()
    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert len(files) == 1
    return files[0]


def _record(payload: bytes) -> bytes:
    header = struct.pack("<Q", len(payload))
    crc = tensorboard_events._masked_crc
    return header + struct.pack("<I", crc(header)) + payload + struct.pack("<I", crc(payload))


@pytest.fixture
def event_file(tmp_path: Path) -> Path:
    return _write_run(tmp_path / "grpo_run", range(1, 5))


def test_crc32c_matches_tensorboards_own() -> None:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    for data in (b"", b"a", os.urandom(1000)):
        assert tensorboard_events._masked_crc(data) == masked_crc32c(data)


def test_scalars_old_and_new_style_with_nan_kept(event_file: Path) -> None:
    (run,) = tensorboard_events.read(event_file)
    assert run.source.format == tensorboard_events.NAME == "tensorboard"
    assert run.source.framework == "trl" and run.name == "grpo_run"  # the folder TensorBoard wrote into
    assert run.source.paths == [str(event_file)] and run.source.sha256
    steps = {s.step: s.values for s in run.steps}
    assert sorted(steps) == [1, 2, 3, 4]
    assert steps[2]["train/reward"] == 0.2  # float32 shown as the number that was logged
    assert steps[4]["train/kl"] == 0.004
    assert math.isnan(steps[2]["train/kl"])  # NaN kept, never dropped
    assert math.isinf(steps[3]["train/loss"])
    assert all(s.wall_time is not None and s.wall_time > 0 for s in run.steps)
    assert run.config["args"] == {"max_steps": 5, "learning_rate": 1e-06, "beta": 0.04}


def test_tf2_style_metadata_only_on_first_value(tmp_path: Path) -> None:
    """TF2 writers attach the 'scalars' plugin metadata to a tag's first value only."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    writer = EventFileWriter(str(tmp_path))
    for step in (1, 2, 3):
        value = summary_pb2.Summary.Value(tag="reward", tensor=tensor_util.make_tensor_proto(0.25 * step))
        if step == 1:
            value.metadata.plugin_data.plugin_name = "scalars"
        writer.add_event(
            event_pb2.Event(step=step, wall_time=1.0e9 + step, summary=summary_pb2.Summary(value=[value]))
        )
    writer.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    (run,) = tensorboard_events.read(path)
    assert [(s.step, s.values["reward"], s.wall_time) for s in run.steps] == [
        (1, 0.25, 1.0e9 + 1),
        (2, 0.5, 1.0e9 + 2),
        (3, 0.75, 1.0e9 + 3),
    ]


def test_sniff_checks_the_bytes(event_file: Path, fixtures: Path, tmp_path: Path) -> None:
    assert tensorboard_events.sniff(event_file, read_head(event_file))
    assert not html_table.sniff(event_file, read_head(event_file))
    assert not csv_table.sniff(event_file, read_head(event_file))
    for name in ("nb_table.html", "metrics.csv", "wandb_history.csv", "wandb_panel.csv"):
        assert not tensorboard_events.sniff(fixtures / name, read_head(fixtures / name))
    assert not tensorboard_events.sniff(tmp_path, b"")
    assert not tensorboard_events.sniff(tmp_path, os.urandom(4096))
    assert not tensorboard_events.sniff(tmp_path, read_head(event_file)[:20])
    # well-framed TFRecord whose first record is not an Event file version (e.g. a dataset shard)
    assert not tensorboard_events.sniff(tmp_path, _record(b"not an event") + _record(b"x"))


def test_load_dispatches_by_content_not_name(event_file: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "whatever.log"
    shutil.copy(event_file, renamed)
    (run,) = importers.load(renamed)
    assert run.source.format == "tensorboard" and run.name == "whatever"
    assert len(run.steps) == 4


@pytest.mark.parametrize("cut", [5, 13, 40])
def test_an_event_file_cut_mid_record_keeps_its_complete_records(
    event_file: Path, tmp_path: Path, cut: int
) -> None:
    """A job killed while writing a record leaves the file cut inside it: the complete records are read
    (as TensorBoard shows them), the cut one is skipped with a note. (It was refused whole.)"""
    data = event_file.read_bytes()
    truncated = tmp_path / "events.out.tfevents.cut"
    truncated.write_bytes(data[:-cut])
    (whole,) = tensorboard_events.read(event_file)
    for (run,) in (tensorboard_events.read(truncated), importers.load(truncated)):
        assert 0 < len(run.steps) <= len(whole.steps)
        kept = len(run.steps) - 1  # the last step may have lost the cut record's values
        assert [str(s.values) for s in run.steps[:kept]] == [str(s.values) for s in whole.steps[:kept]]  # NaN
        assert any(
            re.match(r"truncated: events.out.tfevents.cut ends inside record \d+", n)
            for n in run.source.notes
        )
    (tmp_path / "first.tfevents").write_bytes(data[:20])  # not even one record complete: an error
    with pytest.raises(InputError, match=r"truncated: .* no record is complete"):
        tensorboard_events.read(tmp_path / "first.tfevents")


def test_a_cut_file_in_a_run_folder_is_read_with_a_note(event_file: Path) -> None:
    second = event_file.parent / "events.out.tfevents.9999999999.host.1.1"
    second.write_bytes(event_file.read_bytes()[:-7])
    (run,) = importers.load(event_file.parent)
    assert any(n.startswith("truncated: events.out.tfevents.9999999999") for n in run.source.notes)


def test_bad_crc_is_an_input_error(event_file: Path, tmp_path: Path) -> None:
    data = bytearray(event_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt = tmp_path / "corrupt.bin"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"corrupt: record \d+ at byte \d+ fails its (data|length) checksum"):
        tensorboard_events.read(corrupt)


def test_empty_garbage_and_foreign_tfrecord(tmp_path: Path) -> None:
    empty = tmp_path / "events.out.tfevents.empty"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        tensorboard_events.read(empty)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(os.urandom(2048))
    with pytest.raises(InputError, match=r"corrupt|truncated"):
        tensorboard_events.read(garbage)
    with pytest.raises(InputError, match="binary file"):
        importers.load(garbage)
    foreign = tmp_path / "shard.tfrecord"
    foreign.write_bytes(_record(b"\x08\x01") + _record(b"\x08\x02"))
    with pytest.raises(InputError, match="not TensorBoard"):
        tensorboard_events.read(foreign)


def test_file_without_scalars_is_an_input_error(tmp_path: Path) -> None:
    writer = SummaryWriter(str(tmp_path))
    writer.add_text("args", "{}")
    writer.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    with pytest.raises(InputError, match="no scalar summaries"):
        tensorboard_events.read(path)


def test_read_many_merges_a_resumed_run_and_hparams(tmp_path: Path) -> None:
    run_dir = tmp_path / "resumed_run"
    first = _write_run(run_dir / "a", range(1, 4))  # steps 1..3, then the job died
    second = _write_run(run_dir / "b", range(3, 6), reward=0.2, hparams=True)  # resumed: re-logs step 3
    hparams_files = [p for p in run_dir.rglob("events.out.tfevents.*") if p not in (first, second)]
    assert hparams_files  # torch writes hparams into a sub-folder of its own
    (run,) = tensorboard_events.read_many(sorted(run_dir.rglob("events.out.tfevents.*")), name="resumed_run")
    steps = {s.step: s.values for s in run.steps}
    assert sorted(steps) == [1, 2, 3, 4, 5] and run.name == "resumed_run"
    assert steps[1]["train/reward"] == 0.1 and steps[3]["train/reward"] == pytest.approx(0.6)  # later wins
    assert math.isnan(steps[2]["train/kl"])
    assert run.config["hparams"] == {"learning_rate": 1e-6, "beta": 0.04, "loss_type": "grpo"}
    assert len(run.source.paths) == 3
    assert any("later value is kept" in n for n in run.source.notes)


def test_load_folder_gives_one_run_named_after_the_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "my_tb_run"
    _write_run(run_dir, range(1, 4), hparams=True)
    (run,) = importers.load(run_dir)
    assert run.name == "my_tb_run" and run.source.format == "tensorboard"
    assert [s.step for s in run.steps] == [1, 2, 3]
