"""What every importer returns, and the careful file reading they all share.

Importers are chosen by what a file contains, never by its name: each one offers `sniff(path, head)`
and `read(path)`. They return `ImportedRun`s of raw rows (framework keys, unmapped; the record types live
in `telemetry.schema`); mapping to the vocabulary happens in one place, when the store writes a run
(`store.step_table`), so every source is mapped the same way.
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo

HEAD_BYTES = 64 * 1024
# Keys of the row `Trainer.train()` logs once at the end: a run summary (kept in config), not a step.
SUMMARY_KEYS = frozenset(
    {
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "train_tokens_per_second",
        "total_flos",
        "train_loss",
    }
)
# What marks that row: its run-time figures. `train_loss` alone does not (a custom trainer may log a
# per-step `train_loss`; such rows were taken for the summary and their steps lost).
_SUMMARY_MARKERS = SUMMARY_KEYS - {"train_loss"}


def is_summary(keys: Iterable[str]) -> bool:
    """Whether a logged row with these keys is the end-of-training summary (kept in config)."""
    return not _SUMMARY_MARKERS.isdisjoint(keys)


ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# Reprs of numpy scalars and torch tensors that loggers print instead of plain numbers: `np.float64(0.5)`
# (numpy ≥ 2 repr), `numpy.int64(3)`, `tensor(0.5)`, `tensor(0.5, device='cuda:0')`, `tensor([0.5])`.
_REPR = re.compile(
    r"\b(?:np|numpy|torch)\.(?:float|int|uint|bfloat|bool_?)\d*\(\s*([^()]*?)\s*\)"
    r"|\btensor\(\s*\[?\s*([^()\[\],]*?)\s*\]?\s*(?:,[^()]*)?\)"
)


class Importer(Protocol):
    """The interface each importer module implements."""

    NAME: str

    def sniff(self, path: Path, head: bytes) -> bool: ...

    def read(self, path: Path) -> list[ImportedRun]: ...


_BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark some Windows tools write at the start of a text file
# UTF-16 with its byte-order mark: what Windows PowerShell 5's `>` writes when a console log is captured.
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def as_utf8(data: bytes) -> bytes:
    """Text bytes as UTF-8 without a byte-order mark (UTF-16 with its mark is transcoded)."""
    if data[:2] in _UTF16_BOMS:
        return data.decode("utf-16", errors="replace").encode("utf-8")
    return data.removeprefix(_BOM)


# How far the head reaches for the end of a first line longer than HEAD_BYTES: a JSON-lines record of a
# long reasoning trace (a 32k-token completion is ~100-150 KB) is recognised by its first line whole.
FIRST_LINE_LIMIT = 64 << 20


def read_head(path: Path) -> bytes:
    """The first bytes of a file, for sniffing (as UTF-8: see `as_utf8`): HEAD_BYTES, or up to the end
    of the first line when that line is longer and opens a JSON object (up to FIRST_LINE_LIMIT; other
    long lines, a single-line file of tens of MB, would only cost the sniffers time)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(HEAD_BYTES)
            if len(head) == HEAD_BYTES and b"\n" not in head and as_utf8(head).lstrip()[:1] == b"{":
                parts, size = [head], len(head)
                while size < FIRST_LINE_LIMIT and (more := fh.read(1 << 20)):
                    parts.append(more)
                    size += len(more)
                    if b"\n" in more:
                        break
                head = b"".join(parts)
            return as_utf8(head)
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None


# Bytes that text does not hold: controls other than tab, newlines, form feed, carriage return and ESC
# (ANSI colours). NUL is among them (it also has its own, looser rule).
_CONTROL_BYTES = bytes(b for b in range(32) if b < 9 or 13 < b < 27 or 27 < b < 32)


def looks_binary(head: bytes) -> bool:
    """True when the bytes are not text (judged on the first HEAD_BYTES, also of a head `read_head` read
    on to the end of a long line). A stray NUL (seen in real verl logs) does not count."""
    head = head[:HEAD_BYTES]
    if not head:
        return False
    if head.count(b"\x00") > max(4, len(head) // 1000):
        return True
    control = len(head) - len(head.translate(None, _CONTROL_BYTES))  # counted in C, not byte by byte
    if control > len(head) * 0.05:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the head is fine; invalid bytes earlier are not.
        if exc.start < len(head) - 4:
            bad = head[exc.start :].decode("utf-8", errors="replace").count("\ufffd")
            return bad > len(head) * 0.02
    return False


def read_text(path: Path) -> str:
    """Whole file as text, with checks that turn bad input into one clear error."""
    try:
        data = as_utf8(path.read_bytes())
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    if not data.strip():
        raise InputError(path, "file is empty")
    if looks_binary(data[:HEAD_BYTES]):
        raise InputError(path, "binary file, not a training log")
    return data.decode("utf-8", errors="replace")


def strip_terminal(text: str) -> str:
    """Remove ANSI colour codes and split carriage-return progress-bar redraws into lines."""
    return ANSI_RE.sub("", text).replace("\r\n", "\n").replace("\r", "\n")


def sha256_of(paths: Iterable[Path]) -> str:
    """Content hash of one or more files: the same bytes always ingest to the same run."""
    h = hashlib.sha256()
    for p in sorted(paths):
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def bad_rows_note(path: Path, bad: list[str]) -> str:
    """The note a run carries when `--skip-bad` left rows of one of its files out (counted)."""
    more = f" (first: {bad[0]})" if bad else ""
    return f"--skip-bad: {len(bad)} malformed row(s) of {path.name} left out{more}"


def unwrap_reprs(text: str) -> str:
    """Numpy-scalar and tensor reprs replaced by the number inside (`np.float64(0.5)` → `0.5`)."""
    if "(" not in text:
        return text
    return _REPR.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), text)


def to_float(value: Any) -> float | None:
    """A logged value as float: numbers, numeric strings ('1e-05', 'nan', 'inf', 'np.float64(0.5)'),
    bools. Else None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        s = unwrap_reprs(value.strip()).lower()
        if s in {"nan", "+nan", "-nan"}:
            return math.nan
        if s in {"inf", "+inf", "infinity", "+infinity"}:
            return math.inf
        if s in {"-inf", "-infinity"}:
            return -math.inf
        try:
            return float(s)
        except ValueError:
            return None
    return None


# The store keeps steps as 64-bit integers (Parquet int64).
STEP_RANGE = (-(2**63), 2**63)


def whole_step(value: Any) -> int | None:
    """A logged step as an int: a whole number (`3`, `3.0`) or the digits of one (`"3"`) in the store's
    64-bit range; None for anything else: a fraction (which `int()` would truncate without a word), NaN,
    ±Inf, true/false, a word."""
    whole: int | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        whole = value
    elif isinstance(value, float) and value.is_integer():
        whole = int(value)
    elif isinstance(value, str):
        try:
            whole = int(value.strip())
        except ValueError:
            return None
    return whole if whole is not None and STEP_RANGE[0] <= whole < STEP_RANGE[1] else None


def numeric_items(row: dict[str, Any], skip: Callable[[str], bool] | None = None) -> dict[str, float]:
    """The numeric entries of a logged dict (strings that hold numbers included)."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if skip is not None and skip(key):
            continue
        f = to_float(value)
        if f is not None:
            out[str(key)] = f
    return out


def provenance_beside(path: Path) -> str | None:
    """Text of a PROVENANCE/README note shipped in the run's folder, kept in the manifest."""
    folder = path if path.is_dir() else path.parent
    for name in ("PROVENANCE.txt", "PROVENANCE.md"):
        note = folder / name
        if note.is_file():
            return note.read_text(errors="replace")[:8000]
    return None


def _decimals(x: float) -> int:
    text = repr(x)
    if "e-" in text:
        mantissa, exp = text.split("e-")
        return int(exp) + (len(mantissa.split(".")[1]) if "." in mantissa else 0)
    return len(text.split(".")[1]) if "." in text else 0


def infer_steps_from_epochs(epochs: list[float | None], steps_per_epoch: float | None) -> list[int] | None:
    """Optimizer steps of logged rows from their fractional epochs, or None when that is not possible.

    Loggers print the epoch rounded (often to 2 decimals), so `epoch × steps_per_epoch` can be off by
    many steps. When the rows fit a regular logging interval within that rounding, the regular grid
    is returned (it is exact when logging_steps is constant); otherwise the rounded products, if they
    rise strictly.
    """
    if not steps_per_epoch or not epochs or any(e is None or not math.isfinite(e) for e in epochs):
        return None
    values = [float(e) for e in epochs]  # type: ignore[arg-type]
    interval = max(1, round(values[-1] * steps_per_epoch / len(values)))
    grid = [(i + 1) * interval for i in range(len(values))]
    if all(
        abs(e * steps_per_epoch - g) <= 0.5 + steps_per_epoch * 0.5 * 10 ** -_decimals(e)
        for e, g in zip(values, grid, strict=True)
    ):
        return grid
    steps = [round(e * steps_per_epoch) for e in values]
    if steps[0] >= 1 and all(b > a for a, b in itertools.pairwise(steps)):
        return steps
    return None


def scan(path: Path, pattern: re.Pattern[bytes], limit: int = 64 << 20) -> bool:
    """Whether `pattern` occurs in the first `limit` bytes of a text file.

    Console logs can open with megabytes of progress bars before the first metrics line, so sniffers
    of console formats look past the head; binary files are ruled out first by the caller's head check.
    A UTF-16 file (with its byte-order mark: PowerShell's `>`) is searched as the text it holds, as
    `read_head` and `read_text` read it.
    """
    overlap = 4096
    tail = b""
    read = 0
    # A decoder when the file is UTF-16 with its mark: the pattern is UTF-8 bytes.
    utf16: codecs.IncrementalDecoder | None = None
    with path.open("rb") as fh:
        while read < limit:
            chunk = fh.read(1 << 20)
            if not chunk:
                return False
            if read == 0 and chunk[:2] in _UTF16_BOMS:
                utf16 = codecs.getincrementaldecoder("utf-16")(errors="replace")
            read += len(chunk)
            if utf16 is not None:
                chunk = utf16.decode(chunk).encode("utf-8")
            if pattern.search(tail + chunk):
                return True
            tail = chunk[-overlap:]
    return False


Rows = list[tuple[int, dict[str, float]]]


def split_restarts(rows: Rows) -> list[Rows]:
    """Rows in file order, split where the step counter starts over: one list per run.

    Several jobs appended to one log file (a relaunch with the same output file) show as the step falling
    back to (or below) the first step of the run so far; that starts a new run. A smaller fall is a resume
    from a checkpoint: the steps after it are re-logged and stay in the same run (later values win).
    """
    runs: list[Rows] = []
    for step, values in rows:
        if runs and (step >= runs[-1][-1][0] or step > runs[-1][0][0]):
            runs[-1].append((step, values))
        else:
            runs.append([(step, values)])
    return runs


def merge_steps(rows: Rows) -> dict[int, dict[str, float]]:
    """One dict per step; a step logged twice (several lines, or re-logged after a resume) is merged,
    later values winning."""
    out: dict[int, dict[str, float]] = {}
    for step, values in rows:
        out.setdefault(step, {}).update(values)
    return out


def digits_written(text: str) -> tuple[int, int]:
    """How many digits a number is written with after its point, and in its exponent (-1: none)."""
    mantissa, e, exponent = text.lower().partition("e")
    return len(mantissa.partition(".")[2]), len(exponent.lstrip("+-")) if e else -1


# Values in one fixed format before a last value is judged cut by its digits: a writer that strips
# trailing zeros (0.900 → 0.9) writes 20 values of one width by chance ~12 % of the time (0.9**20).
_CUT_EVIDENCE = 20


def cut_short(text: str, earlier: Sequence[str]) -> bool:
    """Whether a number at the very end of a log that ends without a newline was cut by a killed job:
    `earlier`, the same values as written before, share one fixed format (verl prints `%.3f`, a logger
    one format per column), and it is written with fewer digits after its point (or in its exponent):
    `0.` or `23` where the others read `237.000`. Fewer than 20 to compare with, formats that vary
    (shortest reprs: `0.25`, `0.125`, `0.5`), or a word (nan, inf): not cut — a log copied whole often
    just lacks its final newline."""
    if len(earlier) < _CUT_EVIDENCE or not any(c.isdigit() for c in text):
        return False
    shapes = {digits_written(t) for t in earlier}
    if len(shapes) > 1:  # not one fixed format (`0.25`, `0.125`, `0.5`: shortest reprs): cannot tell
        return False
    ((after, exponent),) = shapes
    written_after, written_exponent = digits_written(text)
    return written_after < after or written_exponent < exponent


# Keys a trainer writes on every row of a step, evaluation rows too (HF's `epoch`, and its
# `num_input_tokens_seen` with `include_num_input_tokens_seen`; W&B's `train/epoch`, `train/global_step`,
# `_runtime`): logged again at one step, they are not a resume.
_BOOKKEEPING = frozenset(
    {"epoch", "step", "global_step", "_step", "_runtime", "_timestamp", "timestamp", "num_input_tokens_seen"}
)


def resumed_note(rows: Rows) -> str | None:
    """The note a run carries when some of its steps log a key twice: a resume from a checkpoint re-logs
    the steps after it (`merge_steps` keeps the later values). Several lines of one step that log other
    keys (verl's validation lines, HF's evaluation rows, which repeat only `epoch`) are not a repeat."""
    seen: dict[int, set[str]] = {}
    repeated = []
    for step, values in rows:
        keys = {k for k in values if k.rpartition("/")[2] not in _BOOKKEEPING}
        if keys & seen.get(step, set()):
            repeated.append(step)
        seen.setdefault(step, set()).update(keys)
    if not repeated:
        return None
    return (
        f"{len(repeated)} step(s) logged twice (resumed from a checkpoint), first {repeated[0]}: "
        "later values kept"
    )


def restart_note(i: int, n: int, first: int) -> str:
    return f"run {i} of {n} in this file: the step counter started over at step {first}"


def runs_of_log(
    path: Path,
    logged: Rows,
    notes: list[str],
    *,
    format: str,
    framework: str | None,
    wall_of: dict[int, float] | None = None,
    config: dict[str, Any] | None = None,
) -> list[ImportedRun]:
    """The runs of one log's (step, values) rows in file order: split where the step counter starts over
    (`<stem>-run1`, …, each noted), a resume noted, a step's rows merged. `wall_of` maps the id of a row's
    values to its wall time (a step keeps its last row's); every run shares `notes` and `config`."""
    segments = split_restarts(logged)
    digest = sha256_of([path])
    runs = []
    for i, segment in enumerate(segments, 1):
        name = path.stem if len(segments) == 1 else f"{path.stem}-run{i}"
        seg_notes = notes + ([restart_note(i, len(segments), segment[0][0])] if len(segments) > 1 else [])
        if resumed := resumed_note(segment):
            seg_notes.append(resumed)
        rows = merge_steps(segment)
        walls = {step: wall_of[id(v)] for step, v in segment if id(v) in wall_of} if wall_of else {}
        runs.append(
            ImportedRun(
                name=name,
                source=SourceInfo(
                    format=format,
                    framework=framework,
                    paths=[str(path)],
                    sha256=digest + ("" if name == path.stem else f":{name}"),
                    notes=seg_notes,
                ),
                steps=[RawStep(step=s, values=v, wall_time=walls.get(s)) for s, v in sorted(rows.items())],
                config=dict(config or {}),
            )
        )
    return runs


def ends_with_newline(text: str, newlines: tuple[str, ...] = ("\n",)) -> bool:
    """Whether a log's last line was finished (trailing blanks aside): a job killed while writing one
    leaves it without its newline (`newlines`: what ends a line in the format; CSV's reader also takes
    a carriage return)."""
    return text.rstrip(" \t").endswith(newlines)


def json_lines(
    path: Path, skipped: list[str] | None = None, bad: list[str] | None = None
) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-empty line of a JSONL file; one clear error for the first bad
    one. With `skipped`, a bad last line with no newline after it (a job killed mid-write) is left out
    and noted there instead (a bad line that ends with a newline was not cut: it is an error); with
    `bad` (`--skip-bad`), every bad line is left out and described there ("line 7: …")."""
    text = read_text(path)
    lines = text.split("\n")
    last = max(i for i, line in enumerate(lines) if line.strip())
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if bad is not None:
                bad.append(f"line {i + 1}: {exc.msg}")
                continue
            if i == last and skipped is not None and not ends_with_newline(text):
                skipped.append(
                    f"truncated: the last line ({i + 1}) is an incomplete JSON record and was skipped"
                )
                continue
            if i == last and not ends_with_newline(text):
                raise InputError(path, f"truncated: last line {i + 1} is an incomplete JSON record") from None
            raise InputError(path, f"corrupt JSONL at line {i + 1}: {exc.msg}") from None
        if not isinstance(obj, dict):
            if bad is not None:
                bad.append(f"line {i + 1}: a record must be a JSON object")
                continue
            raise InputError(path, f"corrupt JSONL at line {i + 1}: a record must be a JSON object")
        yield i + 1, obj
