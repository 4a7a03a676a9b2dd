"""TensorBoard event files (`events.out.tfevents.*`), as TRL/transformers write with report_to="tensorboard".

Scalars become step rows keyed by their tag (`train/reward`, `train/kl`, …; the vocabulary strips `train/`),
both the old `simple_value` form and the newer tensor form of the `scalars` plugin. Text summaries (the
`args` JSON transformers logs) and hparams go into the run's config.

The records are read with our own strict TFRecord reader rather than TensorBoard's loader, because the
loader stops quietly at a truncated or corrupt record and would hand back a silently partial run: here a
record failing its CRC32C is an InputError naming the record and byte offset, and a file that ends inside
its last record (a job killed while writing it) keeps its complete records with a `truncated:` note.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry.importers.base import sha256_of
from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo

NAME = "tensorboard"

_HEADER = 12  # uint64 length + uint32 masked CRC of the length
_FOOTER = 4  # uint32 masked CRC of the data
_MAX_TEXT = 20_000  # characters of one text summary kept in the config


# --- CRC32C (Castagnoli), as TFRecord framing uses it --------------------------------------------------
# Pure Python, table driven (about 70 ms per MB): no compiled crc32c package is a dependency of rftfm.
def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC_TABLE = _crc_table()


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _event_class() -> Any:
    # Imported lazily: protobuf and TensorBoard's protos cost a noticeable import time for every CLI call.
    from tensorboard.compat.proto import event_pb2

    return event_pb2.Event


# --- sniffing ------------------------------------------------------------------------------------------
def sniff(path: Path, head: bytes) -> bool:
    """TFRecord framing whose first record passes both checksums and is a 'brain.Event:' file version."""
    try:
        if len(head) < _HEADER + _FOOTER:
            return False
        (length,) = struct.unpack("<Q", head[:8])
        if length > 4096 or struct.unpack("<I", head[8:12])[0] != _masked_crc(head[:8]):
            return False
        end = _HEADER + length
        if len(head) < end + _FOOTER:
            return False
        data = head[_HEADER:end]
        if struct.unpack("<I", head[end : end + _FOOTER])[0] != _masked_crc(data):
            return False
        event = _event_class().FromString(data)
        return bool(event.file_version.startswith("brain.Event:"))
    except Exception:  # sniffing must never raise on arbitrary bytes
        return False


# --- strict record reading -----------------------------------------------------------------------------
def _records(path: Path, data: bytes) -> tuple[list[tuple[int, bytes]], str | None]:
    """(offset, payload) of every record, and a note when the file ends inside its last record (the job
    was killed while writing it, or the file is still being written): the complete records are kept, as
    TensorBoard shows them. A record failing its checksum is an InputError naming it."""
    out: list[tuple[int, bytes]] = []
    pos, n, size = 0, 0, len(data)

    def cut(problem: str) -> tuple[list[tuple[int, bytes]], str]:
        if not out:
            raise InputError(path, f"TensorBoard event file is truncated: {problem}; no record is complete")
        return out, f"truncated: {path.name} ends inside record {n} (byte {pos}, {problem}): it was skipped"

    while pos < size:
        n += 1
        if size - pos < _HEADER:
            return cut(f"{size - pos} of its {_HEADER} header bytes")
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[pos + 8 : pos + _HEADER])[0] != _masked_crc(header):
            raise InputError(
                path, f"TensorBoard event file is corrupt: record {n} at byte {pos} fails its length checksum"
            )
        start, end = pos + _HEADER, pos + _HEADER + length
        if end + _FOOTER > size:
            return cut(f"{max(0, size - start)} of its {length + _FOOTER} bytes")
        payload = data[start:end]
        if struct.unpack("<I", data[end : end + _FOOTER])[0] != _masked_crc(payload):
            raise InputError(
                path,
                f"TensorBoard event file is corrupt: record {n} at byte {pos} fails its "
                "data checksum (CRC32C)",
            )
        out.append((pos, payload))
        pos = end + _FOOTER
    return out, None


@dataclass
class _FileData:
    """What one event file holds, before files of a run folder are merged."""

    path: Path
    first_wall: float
    scalars: list[tuple[int, float, str, float]] = field(default_factory=list)  # step, wall, tag, value
    texts: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    other_tags: set[str] = field(default_factory=set)
    restarts: int = 0
    negative_steps: int = 0
    notes: list[str] = field(default_factory=list)


def _shortest(x: Any) -> float:
    """A float32/float16 as the shortest decimal that round-trips (0.1, not 0.10000000149011612): the number
    the user logged, not float32's binary approximation of it."""
    if isinstance(x, np.floating) and x.dtype.itemsize < 8:
        return float(np.format_float_positional(x, unique=True, trim="-")) if np.isfinite(x) else float(x)
    return float(x)


def _text_value(value: Any) -> str | None:
    from tensorboard.util import tensor_util

    arr = tensor_util.make_ndarray(value.tensor)
    parts = [x.decode("utf-8", errors="replace") if isinstance(x, bytes) else str(x) for x in arr.reshape(-1)]
    return "\n".join(parts) if parts else None


def _scalar_value(value: Any) -> float | None:
    from tensorboard.util import tensor_util

    arr = tensor_util.make_ndarray(value.tensor)
    if arr.size != 1 or arr.dtype.kind not in "fiub":
        return None
    return _shortest(arr.reshape(-1)[0])


def _hparams(content: bytes) -> dict[str, Any]:
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    if data.WhichOneof("data") != "session_start_info":
        return {}
    out: dict[str, Any] = {}
    for key, val in data.session_start_info.hparams.items():
        kind = val.WhichOneof("kind")
        if kind in ("number_value", "string_value", "bool_value"):
            out[key] = getattr(val, kind)
    return out


def _config_text(text: str) -> Any:
    """A text summary as config: JSON (transformers logs its TrainingArguments so) when it parses."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            pass
    return stripped[:_MAX_TEXT]


def _read_file(path: Path) -> _FileData:
    """Every scalar, text and hparams summary of one event file, read strictly."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    if not data:
        raise InputError(path, "file is empty")
    records, cut_note = _records(path, data)
    event_cls = _event_class()
    from google.protobuf.message import DecodeError

    plugins: dict[str, str] = {}  # tag → plugin name; TF2 writes the metadata only with a tag's first value
    out: _FileData | None = None
    for n, (offset, payload) in enumerate(records, start=1):
        try:
            event = event_cls.FromString(payload)
        except DecodeError:
            problem = f"TensorBoard event file is corrupt: record {n} at byte {offset} is not an Event"
            raise InputError(path, problem) from None
        if out is None:
            if not event.file_version.startswith("brain.Event:"):
                problem = "TFRecord file whose first record is not a 'brain.Event' version: not TensorBoard's"
                raise InputError(path, problem)
            out = _FileData(path=path, first_wall=event.wall_time)
            continue
        if event.HasField("session_log") and event.session_log.status == event.session_log.START:
            out.restarts += 1
        if not event.HasField("summary"):
            continue
        for value in event.summary.value:
            if value.HasField("metadata") and value.metadata.plugin_data.plugin_name:
                plugins[value.tag] = value.metadata.plugin_data.plugin_name
            plugin = plugins.get(value.tag, "")
            kind = value.WhichOneof("value")
            try:
                if plugin == "hparams":
                    out.hparams.update(_hparams(value.metadata.plugin_data.content))
                    continue
                number: float | None = None
                if kind == "simple_value":
                    number = _shortest(np.float32(value.simple_value))
                elif kind == "tensor" and plugin == "scalars":
                    number = _scalar_value(value)
                elif kind == "tensor" and plugin == "text":
                    text = _text_value(value)
                    if text is not None:
                        out.texts[value.tag.removesuffix("/text_summary")] = _config_text(text)
                    continue
            except Exception as exc:  # a summary TensorBoard itself could not decode
                raise InputError(
                    path,
                    f"TensorBoard event file is corrupt: record {n} at byte {offset}, tag "
                    f"{value.tag!r}: {type(exc).__name__}",
                ) from None
            if number is None:
                out.other_tags.add(value.tag)
                continue
            if event.step < 0:
                out.negative_steps += 1
                continue
            out.scalars.append((int(event.step), float(event.wall_time), value.tag, number))
    if out is None:
        raise InputError(path, "file is empty")
    if cut_note:
        out.notes.append(cut_note)
    return out


def _framework(tags: set[str]) -> str | None:
    """Guess the trainer from its tags: TRL's GRPO/PPO names, verl's actor/critic, plain transformers."""
    bare = {t.removeprefix("train/") for t in tags}
    if any(t.startswith(("actor/", "critic/", "response_length/")) for t in bare):
        return "verl"
    # OpenRLHF's PPO actor logs its status under train/ (openrlhf/trainer/ray/ppo_actor.py): these names
    # are its own, where TRL would write grad_norm, learning_rate and entropy.
    if bare & {"actor_grad_norm", "actor_lr", "policy_loss", "entropy_loss", "ppo_clip_ratio"}:
        return "openrlhf"
    if bare & {"reward", "kl", "completion_length", "reward_std"} or any(
        t.startswith(("rewards/", "completions/", "objective/")) for t in bare
    ):
        return "trl"
    if bare & {"loss", "learning_rate", "grad_norm"}:
        return "transformers"
    return None


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _build(files: list[_FileData], name: str, paths: list[Path]) -> ImportedRun:
    """One run from one or more files, merged oldest first so that a resumed run's re-logged steps win."""
    files = sorted(files, key=lambda f: (f.first_wall, str(f.path)))
    by_step: dict[int, RawStep] = {}
    overwritten = 0
    config: dict[str, Any] = {}
    tags: set[str] = set()
    other: set[str] = set()
    for f in files:
        for step, wall, tag, value in f.scalars:
            tags.add(tag)
            row = by_step.get(step)
            if row is None:
                by_step[step] = RawStep(step=step, values={tag: value}, wall_time=wall)
                continue
            held = row.values.get(tag)
            if held is not None and not _same(held, value):
                overwritten += 1
            row.values[tag] = value
            row.wall_time = wall if row.wall_time is None else max(row.wall_time, wall)
        config.update(f.texts)
        if f.hparams:
            config.setdefault("hparams", {}).update(f.hparams)
        other |= f.other_tags
    if not by_step:
        where = paths[0] if len(paths) == 1 else paths[0].parent
        what = f"; it holds only: {', '.join(sorted(other)[:5])}" if other else ""
        raise InputError(where, f"TensorBoard event file(s) hold no scalar summaries{what}")
    notes = [f"{len(tags)} scalar tag(s) from {len(files)} event file(s)"]
    notes.extend(n for f in files for n in f.notes)
    if other:
        notes.append(f"{len(other)} non-scalar tag(s) skipped (histograms, images, …)")
    if overwritten:
        notes.append(
            f"{overwritten} value(s) logged again at the same step in a later file or event: "
            "the later value is kept"
        )
    restarts = sum(f.restarts for f in files)
    if restarts:
        notes.append(f"{restarts} session restart(s) recorded in the event files")
    negative = sum(f.negative_steps for f in files)
    if negative:
        notes.append(f"{negative} scalar(s) at a negative step skipped")
    source = SourceInfo(
        format=NAME,
        framework=_framework(tags),
        paths=[str(p) for p in paths],
        sha256=sha256_of(paths),
        notes=notes,
    )
    steps = [by_step[s] for s in sorted(by_step)]
    return ImportedRun(name=name, source=source, steps=steps, config=config)


def read(path: Path) -> list[ImportedRun]:
    """One run from one event file, named after the folder TensorBoard wrote it into."""
    name = path.parent.name if path.name.startswith("events.out.tfevents") and path.parent.name else path.stem
    return [_build([_read_file(path)], name, [path])]


def read_many(paths: list[Path], name: str) -> list[ImportedRun]:
    """One run from all event files of a run folder (restarts, hparams sub-folders); a bad file fails all."""
    if not paths:
        raise InputError(name, "no TensorBoard event files given")
    files = [_read_file(p) for p in sorted(paths)]
    return [_build(files, name, sorted(paths))]
