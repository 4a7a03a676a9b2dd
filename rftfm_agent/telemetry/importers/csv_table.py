"""CSV / TSV metric exports: plain step tables, W&B run-history exports and W&B panel exports.

People share runs as whatever their dashboard lets them download. Three shapes are read:

* a plain table with a step column (`step`, `global_step`, `train/global_step`, `_step`) and metric columns,
  e.g. `pd.DataFrame(trainer.state.log_history).to_csv()` or TensorBoard's "Wall time,Step,Value" CSV;
* a W&B run-history export (`_step`, `_runtime`, `_timestamp`, `train/reward`, …): `_timestamp` becomes the
  wall time and the trainer's `train/global_step`, when present, is preferred over W&B's own `_step`;
* a W&B panel export (`Step`, `<run> - <metric>`, `<run> - <metric>__MIN`, `<run> - <metric>__MAX`): one run
  per run name; the `__MIN`/`__MAX` columns are smoothing envelopes, not data, and are ignored.

A CSV without a step column is not a training log (names and addresses, a data set) and is not claimed.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry import vocabulary
from rftfm_agent.telemetry.importers.base import (
    HEAD_BYTES,
    bad_rows_note,
    cut_short,
    ends_with_newline,
    is_summary,
    looks_binary,
    read_text,
    sha256_of,
    to_float,
)
from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo

NAME = "csv_export"

_DELIMITERS = (",", "\t", ";", "|")
# Step columns in order of preference: the trainer's own step beats W&B's log-call counter `_step`.
_STEP_COLUMNS = ("step", "global_step", "train/global_step", "trainer/global_step", "_step")
_WALL_COLUMNS = ("_timestamp", "wall time", "wall_time", "walltime", "timestamp")
_ABSENT = {"", "none", "null", "no log", "-"}
_PANEL_COLUMN = re.compile(r"^(?P<run>.+?) - (?P<metric>.+?)(?P<env>__MIN|__MAX)?$")
_WANDB_MARKERS = {"_step", "_runtime", "_timestamp"}

csv.field_size_limit(1 << 24)  # W&B history cells can hold long JSON (tables, histograms)


@dataclass(frozen=True)
class _Column:
    """One column's cells read once: `value` (NaN where absent or text), `absent` (an empty cell or a
    word for none), `text` (present but not a number)."""

    value: np.ndarray
    absent: np.ndarray
    text: np.ndarray


@dataclass
class _Table:
    header: list[str]
    rows: list[tuple[int, list[str]]]  # (line number, cells)
    delimiter: str
    unterminated: bool = False  # the file ends without a newline: its last row may have been cut
    _columns: dict[int, _Column] = field(default_factory=dict)
    _cells: list[tuple[str, ...]] | None = None  # the cells by column (transposed once, when first asked)

    def column(self, i: int) -> _Column:
        """Column `i` parsed as `to_float` parses a cell, all cells at once: numpy reads the numbers
        (as Python's float() does); a column it cannot read whole (a word, a numpy repr) is read cell by
        cell. A 20 MB W&B export took ~2.4 s cell by cell."""
        held = self._columns.get(i)
        if held is not None:
            return held
        if self._cells is None:
            self._cells = list(zip(*(cells for _, cells in self.rows), strict=True))
        cells = np.array(list(map(str.strip, self._cells[i])) if self._cells else [], dtype=object)
        absent = np.fromiter(map(_ABSENT.__contains__, map(str.lower, cells)), dtype=bool, count=len(cells))
        value = np.full(len(cells), math.nan)
        text = np.zeros(len(cells), dtype=bool)
        present = np.flatnonzero(~absent)
        try:  # objects, not a fixed-width string array: one long JSON cell would size every cell
            value[present] = cells[present].astype(np.float64)
        except ValueError:
            parsed = [to_float(c) for c in cells[present]]
            value[present] = [math.nan if v is None else v for v in parsed]
            text[present] = [v is None for v in parsed]
        value[np.isnan(value)] = math.nan  # float("-nan") keeps a sign bit; to_float's NaN has none
        column = self._columns[i] = _Column(value=value, absent=absent, text=text)
        return column


def _split(text: str, delimiter: str, limit: int | None = None) -> list[tuple[int, list[str]]]:
    """Rows with the line each starts on; blank lines are dropped."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    out: list[tuple[int, list[str]]] = []
    line = 1
    for row in reader:
        if any(cell.strip() for cell in row):
            out.append((line, row))
            if limit is not None and len(out) >= limit:
                break
        line = reader.line_num + 1
    return out


def _delimiter(text: str) -> str | None:
    """The delimiter that splits the most of the next rows like the header, the widest header on ties.

    One malformed row early on must not change the delimiter, so that read() can name that row's line.
    """
    best: tuple[int, int, str] | None = None
    for d in _DELIMITERS:
        try:
            rows = _split(text, d, limit=6)
        except csv.Error:
            continue
        if not rows or len(rows[0][1]) < 2:
            continue
        width = len(rows[0][1])
        matches = sum(1 for _, r in rows[1:] if len(r) == width)
        if best is None or (matches, width) > best[:2]:
            best = (matches, width, d)
    return best[2] if best else None


def _step_index(header: list[str]) -> list[int]:
    """Indexes of the step-like columns, most preferred first."""
    lowered = [h.strip().lower() for h in header]
    return [lowered.index(name) for name in _STEP_COLUMNS if name in lowered]


def _metric_header(header: list[str]) -> bool:
    """At least two columns the vocabulary knows as metrics (reward, kl, loss …): a metrics table even
    without a step column, unlike a CSV of names and addresses."""
    known = [h for h in header if h and vocabulary.resolve(h)[0] in vocabulary.METRIC_NAMES]
    return len(known) >= 2


def sniff(path: Path, head: bytes) -> bool:
    """A delimited header with a step column, and a first data row with a numeric step and a number."""
    try:
        if not head.strip() or looks_binary(head):
            return False
        # The usual head only: a head read on to the end of a long JSON line (`read_head`) is not a table,
        # and splitting tens of MB of it took seconds.
        text = head[:HEAD_BYTES].decode("utf-8", errors="replace").lstrip("\ufeff")
        delimiter = _delimiter(text)
        if delimiter is None:
            return False
        rows = _split(text, delimiter, limit=2)
        header = [h.strip() for h in rows[0][1]]
        steps = _step_index(header)
        if not steps and _metric_header(header):
            steps = []  # a table of known metrics without a step column: rows are steps
        elif not steps or len([h for h in header if h]) < 2:
            return False
        if len(rows) < 2:
            return True  # a header alone: ours, and read() says that it holds no rows
        cells = rows[1][1]
        if len(cells) != len(header):
            return False
        if steps and not any(to_float(cells[i]) is not None for i in steps):
            return False
        return any(to_float(c) is not None for i, c in enumerate(cells) if i not in steps and header[i])
    except Exception:  # sniffing must never raise on arbitrary bytes
        return False


def _table(path: Path) -> _Table:
    """The file as a table, rows as split (`_check_widths` then checks their field counts)."""
    text = read_text(path).lstrip("\ufeff")
    delimiter = _delimiter(text)
    if delimiter is None:
        raise InputError(path, "not a delimited table: the first line has a single column")
    try:
        rows = _split(text, delimiter)
    except csv.Error as exc:
        raise InputError(path, f"malformed CSV: {exc}") from None
    header = [h.strip() for h in rows[0][1]]
    named = [h for h in header if h]
    duplicates = sorted({h for h in named if named.count(h) > 1})
    if duplicates:
        raise InputError(path, f"duplicate column name(s) in the header: {', '.join(duplicates)}")
    return _Table(
        header=header,
        rows=rows[1:],
        delimiter=delimiter,
        unterminated=not ends_with_newline(text, ("\n", "\r")),
    )


def _without_cut_row(table: _Table) -> tuple[_Table, str | None]:
    """A job killed while writing its log leaves the last row without a newline, short of fields or with
    its last number written shorter than the column's others (`base.cut_short`): that row is left out,
    with a note, as the JSON-lines importers leave out a cut last line. (A short row that ends with a
    newline, or a quoted field running over lines, is a malformed row instead.)"""
    if not table.unterminated or not table.rows:
        return table, None
    line, cells = table.rows[-1]
    if len(table.rows) == 1 or any("\n" in cell or "\r" in cell for cell in cells):
        return table, None  # the only data row: the field-count check names it
    if len(cells) < len(table.header):
        note = f"truncated: the last line ({line}) has {len(cells)} of {len(table.header)} fields: skipped"
    elif len(cells) == len(table.header) and cut_short(
        last := cells[-1].strip(),
        [c[-1].strip() for _, c in table.rows[:-1] if len(c) == len(cells) and c[-1].strip()],
    ):
        note = (
            f"truncated: the last line ({line}) ends without a newline and its last value ({last[:20]}) is "
            "written shorter than the column's others: cut, skipped"
        )
    else:
        return table, None
    return _Table(table.header, table.rows[:-1], table.delimiter), note


def _check_widths(path: Path, table: _Table, bad: list[tuple[int, str]] | None) -> _Table:
    """A row with more or fewer fields than the header is an error; with `bad` (`--skip-bad`) it is
    left out and described there."""
    width = len(table.header)
    kept: list[tuple[int, list[str]]] = []
    for line, cells in table.rows:
        if len(cells) != width:
            problem = f"line {line}: {len(cells)} fields but the header has {width} (file cut or malformed)"
            if (spans := 1 + sum(cell.count("\n") for cell in cells)) > 1:  # what --skip-bad would leave out
                problem += f"; a quoted field runs over {spans} lines (a quote never closed?)"
            if bad is None:
                raise InputError(path, problem)
            bad.append((line, problem))
            continue
        kept.append((line, cells))
    return table if len(kept) == len(table.rows) else _Table(table.header, kept, table.delimiter)


# Steps are stored as 64-bit integers: a step at or past 2**63 cannot be stored as logged.
_STEP_LIMIT = 2.0**63


def _not_whole(line: int, column: str, cell: str) -> str:
    return f"line {line}: step {cell.strip()!r} in column '{column}' is not a whole number"


def _not_a_number(table: _Table, row: int, column: int) -> str:
    line, cells = table.rows[row]
    return f"line {line}: {cells[column].strip()[:40]!r} is not a number (column '{table.header[column]}')"


def _whole_number(path: Path, line: int, column: str, cell: str) -> int:
    value = to_float(cell)
    if value is None or not 0 <= value < _STEP_LIMIT or not value.is_integer():
        raise InputError(path, _not_whole(line, column, cell))
    return int(value)


def _numeric_columns(path: Path, table: _Table, columns: list[int], notes: list[str]) -> list[int]:
    """Columns holding numbers. All-text columns (names, JSON) are skipped; a stray word in a number column
    is an error, because it means the row was not read the way it was written."""
    keep: list[int] = []
    text_columns: list[str] = []
    for i in columns:
        col = table.column(i)
        if not col.text.any():
            keep.append(i)
        elif _mostly_numbers(col):
            raise InputError(path, _not_a_number(table, int(np.argmax(col.text)), i))
        else:
            text_columns.append(table.header[i])
    if text_columns:
        notes.append(f"non-numeric column(s) skipped: {', '.join(text_columns)}")
    return keep


def _mostly_numbers(col: _Column) -> bool:
    """A column whose cells are mostly numbers: a word there is a stray, not a column of names."""
    return int((~col.absent & ~col.text).sum()) > int((~col.absent).sum()) // 2


def _wall_column(header: list[str]) -> int | None:
    lowered = [h.lower() for h in header]
    return next((lowered.index(w) for w in _WALL_COLUMNS if w in lowered), None)


def _without_bad_rows(table: _Table, bad: list[tuple[int, str]]) -> _Table:
    """`--skip-bad`: the table without the rows `read` would refuse, each described in `bad`: a stray
    word in a number column, or a step that is empty or not a whole number on a row that logs values.
    The step column is chosen as `read` chooses it, from the rows that are left."""
    reasons: dict[int, str] = {}  # row → the first thing wrong with it
    wall_col, step_candidates = _wall_column(table.header), _step_index(table.header)
    metric_cols = []
    for i, name in enumerate(table.header):
        if not name or i == wall_col or i in step_candidates:
            continue
        col = table.column(i)
        if not col.text.any() or _mostly_numbers(col):
            metric_cols.append(i)
            for r in np.flatnonzero(col.text).tolist():
                reasons.setdefault(r, _not_a_number(table, r, i))
    if step_candidates:
        ok = np.ones(len(table.rows), dtype=bool)
        ok[list(reasons)] = False
        logged = _logged(table, metric_cols) & ok
        step = next(
            (i for i in step_candidates if not (table.column(i).absent & logged).any()), step_candidates[0]
        )
        col, name = table.column(step), table.header[step]
        for r in np.flatnonzero(col.absent & logged).tolist():
            reasons[r] = f"line {table.rows[r][0]}: the step column '{name}' is empty"
        whole = (col.value >= 0) & (col.value < _STEP_LIMIT)  # False for NaN
        whole[whole] &= col.value[whole] == np.floor(col.value[whole])
        for r in np.flatnonzero(~whole & ~col.absent & logged).tolist():
            line, cells = table.rows[r]
            reasons[r] = _not_whole(line, name, cells[step])
    bad.extend((table.rows[r][0], problem) for r, problem in reasons.items())
    if not reasons:
        return table
    rows = [row for r, row in enumerate(table.rows) if r not in reasons]
    return _Table(header=table.header, rows=rows, delimiter=table.delimiter)


def _logged(table: _Table, columns: list[int]) -> np.ndarray:
    """Rows where any of these columns holds a cell (absent cells aside)."""
    out = np.zeros(len(table.rows), dtype=bool)
    for j in columns:
        out |= ~table.column(j).absent
    return out


def _choose_step(path: Path, table: _Table, metric_columns: list[int]) -> int:
    """The preferred step column that is filled on every row holding a value (W&B's own `_runtime` is
    not one: W&B logs rows of media, a table of completions, with its counters and no step of the
    trainer's, and those rows must not make its `_step` the step)."""
    candidates = _step_index(table.header)
    logged = _logged(table, [c for c in metric_columns if table.header[c] not in _WANDB_MARKERS])
    for i in candidates:
        if not (table.column(i).absent & logged).any():
            return i
    first = candidates[0]
    empty = table.column(first).absent & logged
    if empty.any():
        line = table.rows[int(np.argmax(empty))][0]
        raise InputError(path, f"line {line}: the step column '{table.header[first]}' is empty")
    return first


def _whole_numbers(path: Path, table: _Table, column: int, rows: np.ndarray) -> np.ndarray:
    """The step column on these rows as whole numbers; the first that is not one is an error."""
    value = table.column(column).value[rows]
    whole = (value >= 0) & (value < _STEP_LIMIT)  # False for NaN
    whole[whole] &= value[whole] == np.floor(value[whole])
    if not whole.all():
        line, cells = table.rows[int(rows[np.argmax(~whole)])]
        _whole_number(path, line, table.header[column], cells[column])  # raises, naming the cell
    return value.astype(np.int64)


def _step_rows(
    table: _Table,
    rows: np.ndarray,
    steps: np.ndarray,
    walls: list[float | None],
    columns: list[tuple[int, str]],
) -> list[tuple[int, float | None, dict[str, float]]]:
    """(step, wall time, {name: value}) for these rows: each row's present cells of `columns`."""
    names = [name for _, name in columns]
    values = np.column_stack([table.column(i).value[rows] for i, _ in columns]) if columns else None
    present = (
        np.column_stack([~table.column(i).absent[rows] & ~table.column(i).text[rows] for i, _ in columns])
        if columns
        else None
    )
    out: list[tuple[int, float | None, dict[str, float]]] = []
    for k, (step, wall) in enumerate(zip(steps.tolist(), walls, strict=True)):
        row_values = values[k].tolist() if values is not None else []
        mask = present[k].tolist() if present is not None else []
        out.append((step, wall, {n: v for n, v, m in zip(names, row_values, mask, strict=True) if m}))
    return out


def _framework(keys: list[str]) -> str | None:
    """Guess the trainer from its metric names (TRL's `rewards/…`, verl's `actor/…`)."""
    stripped = [k.removeprefix("train/") for k in keys]
    if any(k.startswith(("actor/", "critic/", "response_length/", "timing_s/")) for k in stripped):
        return "verl"
    if any(
        k in {"reward", "kl", "completion_length"} or k.startswith(("rewards/", "completions/"))
        for k in stripped
    ):
        return "trl"
    return None


def _merge(rows: list[tuple[int, float | None, dict[str, float]]], notes: list[str]) -> list[RawStep]:
    """One RawStep per step, in step order. W&B logs train and eval rows at one global step: they merge."""
    by_step: dict[int, RawStep] = {}
    repeats = 0
    for step, wall, values in rows:
        held = by_step.get(step)
        if held is None:
            by_step[step] = RawStep(step=step, values=dict(values), wall_time=wall)
        else:
            repeats += 1
            held.values.update(values)
            if held.wall_time is None:
                held.wall_time = wall
    if repeats:
        notes.append(f"{repeats} row(s) repeated an earlier step and were merged into it (later values win)")
    return [by_step[s] for s in sorted(by_step)]


PANEL_NOTE = "W&B panel export"
PANEL_AXIS = "panel x-axis: "  # a panel's run rows are merged with the same run's other panels on one axis
TB_SCALAR_NOTE = "TensorBoard scalar CSV"  # one tag per file, merged with the run's other tags like panels

# TensorBoard's "download CSV" names a scalar's file after its run and tag, the tag's '/' written as '_':
# `run-.-tag-train_kl.csv` (run "." is the log folder itself), `run_PPO_1-tag-rollout_ep_rew_mean.csv`.
_TB_FILE = re.compile(r"^run[-_](?P<run>.*?)-tag-(?P<tag>.+)$")
_BROWSER_COPY = re.compile(r"\s*\(\d+\)$")  # a browser's name for a second download: `… (1).csv`
_MAX_TAG_SPLITS = 10  # underscores tried as '/' in a tag's name (2^10 spellings at most)


def tensorboard_tag(stem: str) -> tuple[str, str] | None:
    """(run, tag) from a TensorBoard CSV's file name, the tag spelled back with '/' where that makes a
    name the vocabulary knows (`train_completions_mean_length` → `train/completions/mean_length`); the
    name as written when no spelling is known. None for a file not named the way TensorBoard names it."""
    m = _TB_FILE.match(_BROWSER_COPY.sub("", stem))
    if m is None:
        return None
    run, tag = m.group("run"), m.group("tag")
    parts = tag.split("_")
    if len(parts) - 1 > _MAX_TAG_SPLITS:
        return run, tag
    known: list[tuple[int, int, str]] = []  # (how specifically known, slashes, spelling)
    for mask in range(1 << (len(parts) - 1)):
        spelled = parts[0]
        for i, part in enumerate(parts[1:]):
            spelled += ("/" if mask >> i & 1 else "_") + part
        if (rank := vocabulary.alias_rank(spelled)) is not None:
            known.append((rank, bin(mask).count("1"), spelled))
    return run, (min(known)[2] if known else tag)


def _panel_runs(path: Path, table: _Table, step_col: int) -> list[ImportedRun] | None:
    """W&B panel export: every other column is '<run> - <metric>' (with __MIN/__MAX envelopes)."""
    columns: dict[str, list[tuple[int, str]]] = {}
    envelopes = 0
    for i, name in enumerate(table.header):
        if i == step_col or not name:
            continue
        m = _PANEL_COLUMN.match(name)
        if m is None:
            return None
        if m.group("env"):
            envelopes += 1
            continue
        run, metric = name.rsplit(" - ", 1)
        columns.setdefault(run, []).append((i, metric))
    if not columns:
        return None
    notes_common = [PANEL_NOTE, f"{PANEL_AXIS}{table.header[step_col]!r}"]
    if envelopes:
        notes_common.append(f"{envelopes} __MIN/__MAX smoothing-envelope column(s) ignored")
    runs: list[ImportedRun] = []
    sha = sha256_of([path])
    for run, cols in columns.items():
        notes = list(notes_common)
        keep = set(_numeric_columns(path, table, [i for i, _ in cols], notes))
        kept = [(i, metric) for i, metric in cols if i in keep]
        logged = np.flatnonzero(_logged(table, [i for i, _ in kept]))
        step = _whole_numbers(path, table, step_col, logged)
        steps = _merge(_step_rows(table, logged, step, [None] * len(logged), kept), notes)
        source = SourceInfo(
            format=NAME,
            framework=_framework([m for _, m in cols]),
            paths=[str(path)],
            sha256=sha,
            notes=notes,
        )
        runs.append(ImportedRun(name=run, source=source, steps=steps))
    return runs


def read(path: Path, skip_bad: bool = False) -> list[ImportedRun]:
    """The runs in a CSV/TSV export: one for a table or history export, one per run for a panel export.

    With `skip_bad`, a malformed row (a field count unlike the header's, a stray word in a number
    column, a step that is empty or not a whole number) is left out and counted in the runs' notes."""
    table, cut = _without_cut_row(_table(path))
    stepless = not _step_index(table.header)
    if stepless:
        if not _metric_header(table.header):
            raise InputError(
                path, "CSV without a step column (step, global_step, train/global_step or _step)"
            )
        table = _Table(  # numbered before bad rows are left out: a row's step is its place in the file
            header=["step", *table.header],
            rows=[(line, [str(n), *cells]) for n, (line, cells) in enumerate(table.rows, 1)],
            delimiter=table.delimiter,
        )
    bad: list[tuple[int, str]] | None = [] if skip_bad else None
    table = _check_widths(path, table, bad)
    if bad is not None:
        table = _without_bad_rows(table, bad)
        bad.sort()
        if bad and not table.rows:
            raise InputError(path, f"no readable row ({len(bad)} malformed, first: {bad[0][1]})")
    runs = _read_table(path, table, stepless)
    notes = ([cut] if cut else []) + ([bad_rows_note(path, [problem for _, problem in bad])] if bad else [])
    for run in runs:
        run.source.notes.extend(notes)
    return runs


def _read_table(path: Path, table: _Table, stepless: bool) -> list[ImportedRun]:
    if not table.rows:
        raise InputError(path, "CSV has a header but no data rows")
    lowered = [h.lower() for h in table.header]

    panel_step = _step_index(table.header)[0]
    panel = _panel_runs(path, table, panel_step)
    if panel is not None:
        return panel

    notes: list[str] = []
    if _WANDB_MARKERS & set(lowered):
        notes.append("W&B run-history export")
    elif lowered == ["wall time", "step", "value"]:
        named_tag = tensorboard_tag(path.stem)
        if named_tag is None:
            notes.append("TensorBoard scalar CSV: one metric per file, kept under the name 'Value'")
        else:
            tag = named_tag[1]
            table.header[2] = tag
            notes += [f"{TB_SCALAR_NOTE} of tag {tag!r} (from the file name)", f"{PANEL_AXIS}'Step'"]
    else:
        notes.append("CSV metrics table")
    if stepless:
        notes.append("steps are row numbers: no step column")
    if table.delimiter != ",":
        notes.append(f"delimiter {table.delimiter!r}")
    wall_col = _wall_column(table.header)
    others = [i for i, h in enumerate(table.header) if h and i != wall_col]
    if "" in table.header:
        notes.append("unnamed index column skipped")

    step_candidates = set(_step_index(table.header))
    metric_cols = _numeric_columns(path, table, [i for i in others if i not in step_candidates], notes)
    step_col = _choose_step(path, table, metric_cols)
    value_cols = metric_cols
    if len(step_candidates) > 1:
        dropped = [table.header[i] for i in sorted(step_candidates) if i != step_col]
        notes.append(
            f"step taken from column '{table.header[step_col]}'; "
            f"step counter column(s) not kept as metrics: {', '.join(dropped)}"
        )
    if wall_col is not None and table.column(wall_col).text.any():
        notes.append(f"wall-time column '{table.header[wall_col]}' is not numeric and was skipped")
        wall_col = None

    # Rows with a value and a step; the end-of-training summary rows (TRL's train_runtime …) go to the
    # config, the others are steps.
    logged = _logged(table, value_cols) & ~table.column(step_col).absent
    summary_cols = [i for i in value_cols if is_summary([table.header[i].removeprefix("train/")])]
    summary = logged & _logged(table, summary_cols)
    config: dict[str, float] = {}
    for r in np.flatnonzero(summary).tolist():
        line = table.rows[r][0]
        for i in value_cols:
            col = table.column(i)
            if not col.absent[r] and not col.text[r]:
                config[f"summary/{table.header[i].removeprefix('train/')}"] = float(col.value[r])
        notes.append(f"line {line}: the end-of-training summary row went to the config")
    rows = np.flatnonzero(logged & ~summary)
    step = _whole_numbers(path, table, step_col, rows)
    if wall_col is None:
        walls: list[float | None] = [None] * len(rows)
    else:
        wall = table.column(wall_col)
        walls = [
            None if a else v
            for v, a in zip(wall.value[rows].tolist(), wall.absent[rows].tolist(), strict=True)
        ]
    named = [(i, table.header[i]) for i in value_cols]
    steps = _merge(_step_rows(table, rows, step, walls, named), notes)
    if not any(s.values for s in steps):
        raise InputError(path, "CSV has a step column but no numeric metric columns")
    keys = [table.header[i] for i in value_cols]
    source = SourceInfo(
        format=NAME, framework=_framework(keys), paths=[str(path)], sha256=sha256_of([path]), notes=notes
    )
    name = path.stem
    if TB_SCALAR_NOTE in " ".join(notes) and (named := tensorboard_tag(path.stem)) is not None:
        name = named[0] if named[0] not in ("", ".") else path.parent.name or path.stem
    return [ImportedRun(name=name, source=source, steps=steps, config=dict(config))]
