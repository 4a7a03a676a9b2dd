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
    looks_binary,
    read_text,
    scan,
    sha256_of,
    strip_terminal,
    to_float,
)
from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo

NAME = "verl_console"

_SNIFF = re.compile(rb"step:\d+ - [\w/@().\-]+:[-+0-9.naifNAIF]")
_LINE = re.compile(r"(?:^|[\s)])step:(\d+) - (.*)$")
_PAIR = re.compile(r"^([^\s:][^:]*):\s*(\S+)$")


def sniff(path: Path, head: bytes) -> bool:
    if looks_binary(head):
        return False
    return bool(_SNIFF.search(head)) or scan(path, _SNIFF)


def read(path: Path) -> list[ImportedRun]:
    raw = read_text(path)
    text = strip_terminal(raw)
    lines = text.split("\n")
    rows: dict[int, dict[str, float]] = {}
    repeated: list[int] = []
    for i, line in enumerate(lines):
        m = _LINE.search(line)
        if not m:
            continue
        step = int(m.group(1))
        values: dict[str, float] = {}
        pairs = m.group(2).rstrip().split(" - ")
        for j, pair in enumerate(pairs):
            pm = _PAIR.match(pair.strip())
            value = to_float(pm.group(2)) if pm else None
            if pm is None or value is None:
                is_last_line = all(not rest.strip() for rest in lines[i + 1 :])
                if j == len(pairs) - 1 and is_last_line and not raw.endswith("\n"):
                    raise InputError(path, f"truncated: step {step} (line {i + 1}) ends mid-record")
                raise InputError(path, f"corrupt: line {i + 1} has a malformed entry {pair.strip()[:40]!r}")
            values[pm.group(1).strip()] = value
        if step in rows and set(values) & set(rows[step]):
            repeated.append(step)
        rows.setdefault(step, {}).update(values)
    if not rows:
        raise InputError(path, "no verl 'step:N - key:value' lines")
    notes = []
    if repeated:
        notes.append(f"{len(repeated)} step(s) logged twice (restart?), first {repeated[0]}: later kept")
    return [
        ImportedRun(
            name=path.stem,
            source=SourceInfo(
                format=NAME, framework="verl", paths=[str(path)], sha256=sha256_of([path]), notes=notes
            ),
            steps=[RawStep(step=s, values=rows[s]) for s in sorted(rows)],
        )
    ]
