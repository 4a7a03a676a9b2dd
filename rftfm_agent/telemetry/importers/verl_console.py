"""verl console logs: `step:N - key:value - key:value …` lines, usually behind Ray prefixes and colours.

A step may print several lines (validation scores at the same step as the training metrics); they are
merged. A resumed run simply starts at a later step. Validation-only lines are kept as step values so
that `eval/score` lines up with training metrics.
"""

from __future__ import annotations

import re
from pathlib import Path

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry.importers.base import (
    cut_short,
    looks_binary,
    read_text,
    runs_of_log,
    scan,
    strip_terminal,
    to_float,
    unwrap_reprs,
    whole_step,
)
from rftfm_agent.telemetry.schema import ImportedRun

NAME = "verl_console"

_SNIFF = re.compile(rb"step:\d+ - [\w/@().\-]+:[-+0-9.naifNAIF]")
_LINE = re.compile(r"(?:^|[\s)])step:(\S+) - (.*)$")  # the step is checked to be a whole number
_PAIR = re.compile(r"^([^\s:][^:]*):\s*(\S+)$")


def sniff(path: Path, head: bytes) -> bool:
    if looks_binary(head):
        return False
    return bool(_SNIFF.search(head)) or scan(path, _SNIFF)


def read(path: Path) -> list[ImportedRun]:
    text = strip_terminal(unwrap_reprs(read_text(path)))
    lines = text.split("\n")
    matches = [(i, m) for i, line in enumerate(lines) if (m := _LINE.search(line))]
    if not matches:
        raise InputError(path, "no verl 'step:N - key:value' lines")
    last_line = matches[-1][0]
    # The last line has no newline after it: a job killed mid-write may have cut its last value short
    # (`actor/entropy:0.` for 0.512), which still reads as a number. Logs copied or downloaded whole
    # often lack the final newline too (one of verl's in ../shared/realruns does), so the value is taken
    # for cut only when it is written shorter than the values before it (`base.cut_short`).
    unterminated = last_line == len(lines) - 1
    written: dict[str, list[str]] = {}  # each key's values as written, on the lines before the last
    notes: list[str] = []
    logged: list[tuple[int, dict[str, float]]] = []
    for i, m in matches:
        whole = whole_step(m.group(1))
        if whole is None:
            raise InputError(
                path, f"line {i + 1}: step {m.group(1)[:40]!r} is not a whole number in the 64-bit range"
            )
        step = whole
        values: dict[str, float] = {}
        pairs = re.sub(r"\s+-\s*$", "", m.group(2).rstrip()).split(" - ")
        for j, pair in enumerate(pairs):
            pm = _PAIR.match(pair.strip())
            value = to_float(pm.group(2)) if pm else None
            if pm is None or value is None:
                if i == last_line and j == len(pairs) - 1:
                    # A job killed mid-write: the complete entries of its last line are kept.
                    notes.append(
                        f"truncated: step {step} (line {i + 1}) ends mid-record; its last entry was skipped"
                    )
                    break
                raise InputError(path, f"corrupt: line {i + 1} has a malformed entry {pair.strip()[:40]!r}")
            key, text = pm.group(1).strip(), pm.group(2)
            # Compared with the key's own earlier values, or for a key new on this line with all of them.
            if (
                i == last_line
                and unterminated
                and j == len(pairs) - 1
                and cut_short(text, written.get(key) or [t for texts in written.values() for t in texts])
            ):
                notes.append(
                    f"truncated: step {step} (line {i + 1}) ends without a newline and its last entry "
                    f"({key[:40]}:{text[:20]}) is written shorter than on earlier lines: cut, skipped"
                )
                break
            if i != last_line:
                written.setdefault(key, []).append(text)
            values[key] = value
        if values:
            logged.append((step, values))
    if not logged:
        raise InputError(path, "truncated: the only step record is incomplete")
    return runs_of_log(path, logged, notes, format=NAME, framework="verl")
