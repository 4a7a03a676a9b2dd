"""Hugging Face notebook progress tables: what Jupyter shows while `trainer.train()` runs.

transformers' `NotebookProgressCallback` renders a `<progress>` bar labelled `[250/250 3:47:51, Epoch 0/1]`
and a `<table class="dataframe">` with one row per logged step (`Step`, `Training Loss`, then whatever
else the trainer logs, e.g. TRL's `reward` and `rewards / <fn>`). Often that table, saved from a notebook
output, is the only record of a run. Values are kept under the header text as printed; the vocabulary
maps them later. A table cut mid-way keeps the rows that were complete and says so in the notes.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry.importers.base import (
    infer_steps_from_epochs,
    looks_binary,
    read_text,
    sha256_of,
    to_float,
)
from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo

NAME = "hf_notebook_table"

# Header texts that give the row's step; 'Epoch' is the first column when eval_strategy="epoch".
_STEP_HEADERS = ("step", "global step", "global_step")
_EPOCH_HEADERS = ("epoch",)
# What the callback prints in a cell it has no value for ('No log' and 'No Log' both occur).
_ABSENT = {"", "no log", "none", "null", "-", "—"}
# TRL's GRPO/PPO columns; their presence says the table came from a TRL trainer.
_TRL_HINT = re.compile(r"^(reward|reward_std|kl|completion_length|rewards\s*/|completions\s*/|entropy)", re.I)

_LABEL_STEPS = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)")
_LABEL_TIMES = re.compile(r"\[\s*\d+\s*/\s*\d+\s+((?:\d+:)?\d+:\d\d)(?:\s*<\s*((?:\d+:)?\d+:\d\d))?")
_LABEL_EPOCH = re.compile(r"Epoch\s+([0-9.]+)\s*/\s*([0-9.]+)")


@dataclass
class _Row:
    cells: list[str] = field(default_factory=list)
    open_cell: bool = False
    ended: bool = False
    line: int = 0


@dataclass
class _Table:
    header: list[str] | None = None
    rows: list[_Row] = field(default_factory=list)
    closed: bool = False
    line: int = 0


class _TableParser(HTMLParser):
    """Collects top-level tables cell by cell, remembering which rows and cells were finished.

    Finished-ness is what lets a file cut mid-table keep its complete rows and drop only the last one.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[_Table] = []
        self.progress: dict[str, str] = {}
        self.progress_label: str | None = None
        self._table: _Table | None = None
        self._row: _Row | None = None
        self._depth = 0  # nesting depth of <table>, so that nested tables are not mixed into ours
        self._in_progress_div = False
        self._label_parts: list[str] = []
        self._row_is_header = True

    # --- rows and cells -----------------------------------------------------------------------------
    def _end_cell(self) -> None:
        if self._row is not None and self._row.open_cell:
            self._row.open_cell = False

    def _end_row(self) -> None:
        row, table = self._row, self._table
        if row is None or table is None:
            return
        self._end_cell()
        row.ended = True
        self._row = None
        if table.header is None and self._row_is_header and row.cells:
            table.header = [c.strip() for c in row.cells]
        elif row.cells:
            table.rows.append(row)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "progress" and not self.progress:
            self.progress = {k: v for k, v in attrs if v is not None}
            self._in_progress_div = True
            self._label_parts = []
            return
        if tag == "table":
            self._depth += 1
            if self._depth == 1:
                self._table = _Table(line=self.getpos()[0])
                self.tables.append(self._table)
            return
        if self._depth != 1 or self._table is None:
            return
        if tag == "tr":
            self._end_row()
            self._row = _Row(line=self.getpos()[0])
            self._row_is_header = True
        elif tag in ("td", "th"):
            if self._row is None:  # a cell outside any <tr>: HTML lets the row tag be omitted
                self._row = _Row(line=self.getpos()[0])
                self._row_is_header = True
            self._end_cell()
            self._row.cells.append("")
            self._row.open_cell = True
            if tag == "td":
                self._row_is_header = False

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._in_progress_div:
            self._in_progress_div = False
            self.progress_label = " ".join("".join(self._label_parts).split())
            return
        if tag == "table":
            if self._depth == 1 and self._table is not None:
                self._end_row()
                self._table.closed = True
                self._table = None
            self._depth = max(0, self._depth - 1)
            return
        if self._depth != 1 or self._table is None:
            return
        if tag in ("td", "th"):
            self._end_cell()
        elif tag in ("tr", "thead", "tbody", "tfoot"):
            self._end_row()

    def handle_data(self, data: str) -> None:
        if self._in_progress_div:
            self._label_parts.append(data)
        if self._row is not None and self._row.open_cell and self._depth == 1:
            self._row.cells[-1] += data


def _parse(text: str) -> _TableParser:
    parser = _TableParser()
    parser.feed(text)
    parser.close()
    if parser._row is not None and parser._table is not None and parser._row.cells:
        parser._table.rows.append(parser._row)  # unfinished at end of file: kept so that read() can say so
    if parser._in_progress_div and parser._label_parts:  # cut inside the progress div
        parser.progress_label = " ".join("".join(parser._label_parts).split())
    return parser


def _step_column(header: list[str]) -> tuple[int, bool] | None:
    """Index of the column that orders the rows, and whether it holds epochs rather than steps."""
    lowered = [h.strip().lower() for h in header]
    for names, is_epoch in ((_STEP_HEADERS, False), (_EPOCH_HEADERS, True)):
        for i, h in enumerate(lowered):
            if h in names:
                return i, is_epoch
    return None


def sniff(path: Path, head: bytes) -> bool:
    """A table with a Step/Epoch header and either the progress bar, HF's loss headers or a numeric row."""
    try:
        if looks_binary(head):
            return False
        text = head.decode("utf-8", errors="replace")
        lowered = text.lower()
        if "<table" not in lowered or "<th" not in lowered:
            return False
        parser = _parse(text)
        for table in parser.tables:
            if table.header is None:
                continue
            found = _step_column(table.header)
            if found is None:
                continue
            headers = {h.lower() for h in table.header}
            if parser.progress or {"training loss", "validation loss"} & headers:
                return True
            for row in table.rows:
                if row.ended and len(row.cells) == len(table.header):
                    step = to_float(row.cells[found[0]])
                    others = (to_float(c) for i, c in enumerate(row.cells) if i != found[0])
                    return step is not None and any(v is not None for v in others)
        return False
    except Exception:  # sniffing must never raise on arbitrary bytes
        return False


def _seconds(clock: str) -> int:
    parts = [int(p) for p in clock.split(":")]
    total = 0
    for p in parts:
        total = total * 60 + p
    return total


def _progress_config(parser: _TableParser) -> dict[str, Any]:
    """What the progress bar says about the run: how far it got, of how many steps, in how long."""
    config: dict[str, Any] = {}
    label = parser.progress_label or ""
    m = _LABEL_STEPS.search(label)
    if m:
        config["progress_step"] = int(m.group(1))
        config["max_steps"] = int(m.group(2))
    else:
        value, total = to_float(parser.progress.get("value")), to_float(parser.progress.get("max"))
        if value is not None and math.isfinite(value):
            config["progress_step"] = int(value)
        if total is not None and math.isfinite(total):
            config["max_steps"] = int(total)
    m = _LABEL_TIMES.search(label)
    if m:
        config["elapsed_s"] = _seconds(m.group(1))
        if m.group(2):
            config["remaining_s"] = _seconds(m.group(2))
    m = _LABEL_EPOCH.search(label)
    if m:
        epoch, n_epochs = to_float(m.group(1)), to_float(m.group(2))
        if epoch is not None:
            config["progress_epoch"] = epoch
        if n_epochs is not None:
            config["num_train_epochs"] = int(n_epochs) if n_epochs.is_integer() else n_epochs
    if label:
        config["progress_label"] = label
    return config


def _whole_number(path: Path, text: str, what: str, line: int) -> int:
    value = to_float(text)
    if value is None or not math.isfinite(value) or value < 0 or not value.is_integer():
        raise InputError(path, f"line {line}: {what} {text.strip()[:40]!r} is not a whole number")
    return int(value)


def read(path: Path) -> list[ImportedRun]:
    """The logged rows of every step table in the file, merged into one run."""
    text = read_text(path)
    parser = _parse(text)
    tables = [t for t in parser.tables if t.header is not None and _step_column(t.header) is not None]
    if not tables:
        if any(t.header is None and not t.closed for t in parser.tables):
            raise InputError(path, "the file is cut off before the table header is complete")
        if parser.tables:
            raise InputError(path, "HTML tables without a 'Step' or 'Epoch' column: not a training-log table")
        raise InputError(path, "no HTML table: not a notebook training-log table")
    notes: list[str] = ["HF notebook progress-callback table"]
    config = _progress_config(parser)
    skipped = len(parser.tables) - len(tables)
    if skipped:
        notes.append(f"{skipped} other HTML table(s) without a Step/Epoch column ignored")

    parsed: list[tuple[float, dict[str, float]]] = []  # (step or epoch, values)
    step_is_epoch = False
    text_columns: set[str] = set()
    headers_seen: list[str] = []
    for table in tables:
        header = table.header or []
        found = _step_column(header)
        if found is None:
            continue
        col, is_epoch = found
        named = [h.strip() for h in header if h.strip()]  # unnamed columns (an index) are left out below
        if len(named) < len(header):
            notes.append(f"the table from line {table.line} has column(s) without a name: left out")
        if duplicates := sorted({h for h in named if named.count(h) > 1}):  # one would overwrite the other
            raise InputError(
                path, f"line {table.line}: duplicate column name(s) in the header: {', '.join(duplicates)}"
            )
        step_is_epoch = step_is_epoch or is_epoch
        headers_seen.extend(h for h in header if h not in headers_seen)
        if not table.closed:
            notes.append(f"the table from line {table.line} has no closing </table>: the file is cut off")
        for row in table.rows:
            if not row.ended:
                notes.append(f"the unfinished last row (line {row.line}) was dropped: the file ends mid-row")
                continue
            if len(row.cells) != len(header):
                raise InputError(
                    path,
                    f"line {row.line}: table row has {len(row.cells)} cells but the header has {len(header)}",
                )
            key_text = row.cells[col].strip()
            if is_epoch:
                order = to_float(key_text)
                if order is None or not math.isfinite(order) or order < 0:
                    raise InputError(path, f"line {row.line}: epoch {key_text[:40]!r} is not a number")
            else:
                order = float(_whole_number(path, key_text, "step", row.line))
            values: dict[str, float] = {}
            for i, (name, cell) in enumerate(zip(header, row.cells, strict=True)):
                if (i == col and not is_epoch) or not name.strip():
                    continue
                s = cell.strip()
                if s.lower() in _ABSENT:
                    continue
                v = to_float(s)
                if v is None:
                    text_columns.add(name)
                    continue
                values[name] = v
            parsed.append((order, values))
    if not parsed:
        raise InputError(path, "the training-log table has a header but no complete rows")
    if not any(values for _o, values in parsed):
        raise InputError(path, "the table has a Step/Epoch column but no numeric values")
    notes[0] += f": {len(parsed)} complete row(s)"
    if text_columns:
        notes.append(f"non-numeric cells skipped in column(s): {', '.join(sorted(text_columns))}")

    steps = _steps_for(parsed, step_is_epoch, config, notes)
    raw = _merge([(s, vals) for s, (_o, vals) in zip(steps, parsed, strict=True)], notes)
    framework = "trl" if any(_TRL_HINT.match(h) for h in headers_seen) else "transformers"
    source = SourceInfo(
        format=NAME, framework=framework, paths=[str(path)], sha256=sha256_of([path]), notes=notes
    )
    return [ImportedRun(name=path.stem, source=source, steps=raw, config=config)]


def _steps_for(
    parsed: list[tuple[float, dict[str, float]]],
    step_is_epoch: bool,
    config: dict[str, Any],
    notes: list[str],
) -> list[int]:
    """Steps for each row: the Step column, or steps inferred from epochs when only 'Epoch' is printed."""
    if not step_is_epoch:
        return [int(o) for o, _ in parsed]
    epochs: list[float | None] = [o for o, _ in parsed]
    max_steps, n_epochs = config.get("max_steps"), config.get("num_train_epochs")
    per_epoch = max_steps / n_epochs if max_steps and n_epochs else None
    inferred = infer_steps_from_epochs(epochs, per_epoch)
    if inferred is not None:
        notes.append(f"steps inferred from the Epoch column at {per_epoch:g} steps per epoch (progress bar)")
        return inferred
    orders = [o for o, _ in parsed]
    if all(o.is_integer() for o in orders) and all(b > a for a, b in itertools.pairwise(orders)):
        notes.append("the table has no Step column: steps are the epoch numbers")
        return [int(o) for o, _ in parsed]
    notes.append("the table has no Step column and epochs are fractional: steps are row numbers from 1")
    return list(range(1, len(parsed) + 1))


def _merge(rows: list[tuple[int, dict[str, float]]], notes: list[str]) -> list[RawStep]:
    """One RawStep per step, in step order; a repeated step (two tables, a resumed run) merges, later wins."""
    by_step: dict[int, dict[str, float]] = {}
    repeats = 0
    for step, values in rows:
        if step in by_step:
            repeats += 1
            by_step[step].update(values)
        else:
            by_step[step] = dict(values)
    if repeats:
        notes.append(f"{repeats} row(s) repeated an earlier step and were merged into it (later values win)")
    return [RawStep(step=s, values=by_step[s]) for s in sorted(by_step)]
