"""Generic JSONL metric logs: one flat JSON object of metrics per line, as custom trainers write them.

    {"iteration": 1, "mean_reward": 0.31, "kl_div": 0.002, "loss": 0.41}
    {"iteration": 2, "mean_reward": 0.35, "kl_div": 0.004, "loss": 0.39}

The step comes from the first step-like key (`step`, `global_step`, `iteration`, `iter`, `update`,
`train/global_step`, `_step`, `epoch_step`), else from the line's position (noted). Several runs appended to
one file (the step counter starts over) become separate runs. W&B history rows (`wandb-history.jsonl`,
`scan_history()` dumps) are such rows too: their media entries (`{"_type": "histogram", …}`) are left
out, with a note; W&B's own `_step` counter beside the trainer's step (and any other step-like key
beside the one chosen) is not kept as a metric, as in the CSV importer. A job killed mid-write leaves
an incomplete last line: it is skipped with a note; a bad line with good ones after it is an error that
names it.
verl's file logger (`{"step": 3, "data": {…}}`) is read from each row's `data`.
Nested rows (`{"metadata": …, "metrics": …}`) and trajectory rows are RFT-FaultBench's (see
`faultbench`); so are flat rows keyed by `rollout_step` or `train_step`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry.importers.base import (
    bad_rows_note,
    is_summary,
    json_lines,
    looks_binary,
    numeric_items,
    runs_of_log,
    to_float,
    whole_step,
)
from rftfm_agent.telemetry.schema import ImportedRun

NAME = "jsonl_metrics"

STEP_KEYS = (
    "step",
    "global_step",
    "train/global_step",
    "trainer/global_step",
    "iteration",
    "iter",
    "update",
    "_step",
    "epoch_step",
    "current_steps",  # LLaMA-Factory's trainer_log.jsonl (train/callbacks.py LogCallback)
)
# Progress counters beside the step, not metrics: LLaMA-Factory's `total_steps` and `percentage`, ms-swift's
# `global_step/max_steps` ("5/100": its step is read from it, `swift/trainers/patcher.py`).
_PROGRESS_KEYS = frozenset({"total_steps", "percentage", "max_steps"})
_SWIFT_PROGRESS = "global_step/max_steps"
_FAULTBENCH_KEYS = {"rollout_step", "train_step", "metadata", "metrics", "flags"}
_WALL_KEYS = ("wall_time", "_timestamp", "timestamp", "time")


def _is_media(value: Any) -> bool:
    """A W&B media entry in a history row (`{"_type": "histogram", …}`, a table, an image): not a number
    to keep, and no reason to refuse the row (W&B's `wandb-history.jsonl` and `scan_history()` dumps)."""
    return isinstance(value, dict) and isinstance(value.get("_type"), str)


_VERL_ROW = frozenset({"step", "data"})  # verl's FileLogger: json.dumps({"step": step, "data": data})


def _is_verl_row(obj: Any) -> bool:
    return isinstance(obj, dict) and set(obj) == _VERL_ROW and isinstance(obj["data"], dict)


def _lifted(obj: Any) -> Any:
    """verl's file logger (`trainer.logger=[..., 'file']`, VERL_FILE_LOGGER_PATH) writes each step as
    `{"step": 3, "data": {"actor/pg_loss": …}}`, and nothing else: its metrics, lifted beside the step
    (which a `step` inside `data` does not replace). ms-swift's `logging.jsonl` gives its step only as
    `"global_step/max_steps": "5/100"`: lifted to `global_step`. Other rows are left as they are."""
    if _is_verl_row(obj):
        return {**obj["data"], "step": obj["step"]}
    if isinstance(obj, dict) and isinstance(progress := obj.get(_SWIFT_PROGRESS), str):
        done = progress.partition("/")[0].strip()
        if done.isdigit() and "global_step" not in obj:
            return {**{k: v for k, v in obj.items() if k != _SWIFT_PROGRESS}, "global_step": int(done)}
    return obj


_BOOKKEEPING = frozenset({"_step", "_runtime", "_timestamp"})  # W&B's own, in every row it logs
_WANDB_INTERNAL = "_wandb"  # W&B's own record in a history row (`{"runtime": …}`): not the run's metrics


def _numbers_only(value: Any) -> bool:
    """A dict whose leaves are all numbers (nested dicts of numbers too): a group of metrics."""
    return all(
        _numbers_only(v) if isinstance(v, dict) else isinstance(v, int | float) and not isinstance(v, bool)
        for v in value.values()
    )


def _flattened(obj: Any, numbers: frozenset[str] = frozenset()) -> Any:
    """A metrics row whose nested groups of numbers (`"rewards": {"accuracy": 0.5}`, as custom trainers
    log per-function rewards) are flattened to `rewards/accuracy`, without W&B's internal `_wandb` record.
    RFT-FaultBench rows (`metadata`, `metrics`, …), media entries, groups holding text (a row with text or
    lists nested in it is not a metrics row) and a group under a key that other rows log a number under
    (`numbers`: a stray value, noted as not a number) are left as they are."""
    if not isinstance(obj, dict) or _FAULTBENCH_KEYS & obj.keys():
        return obj
    if not any(isinstance(v, dict) for v in obj.values()):
        return obj
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key == _WANDB_INTERNAL:
            continue
        if (
            isinstance(value, dict)
            and value
            and key not in numbers
            and not _is_media(value)
            and _numbers_only(value)
        ):
            for sub, leaf in _flattened(value).items():
                out[f"{key}/{sub}"] = leaf
        else:
            out[key] = value
    return out


def _media_only(obj: dict) -> bool:
    """A W&B row that logs media and no metric beside W&B's own counters and a step."""
    if not any(_is_media(v) for v in obj.values()):
        return False
    return not (set(numeric_items(obj)) - _BOOKKEEPING - set(STEP_KEYS) - set(_WALL_KEYS))


def _flat_metrics(obj: Any) -> bool:
    """A flat dict with at least two numeric values and no nested objects but W&B media: a metrics row."""
    if not isinstance(obj, dict) or _FAULTBENCH_KEYS & obj.keys():
        return False
    if any(isinstance(v, dict | list) and not _is_media(v) for v in obj.values()):
        return False
    return len(numeric_items(obj)) >= 2


def sniff(path: Path, head: bytes) -> bool:
    if looks_binary(head):
        return False
    for line in head.split(b"\n")[:5]:  # the first line that parses decides (a corrupt first line is
        if line.strip():  # then the reader's to name, or to leave out with --skip-bad)
            try:
                raw = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                continue
            obj = _flattened(_lifted(raw))
            return _flat_metrics(obj) and not _lone_object(path, head, raw)
    return False


def _lone_object(path: Path, head: bytes, obj: Any) -> bool:
    """A file of one JSON object that is a config or a summary, not a log of steps: one without a step
    (`{"learning_rate": 1e-06, "beta": 0.04}`), or W&B's `wandb-summary.json` (its `_wandb` record; it
    holds the run's last values, beside the history or console log of the same run). Both were read as
    one-step runs."""
    if len(head) < path.stat().st_size or sum(1 for line in head.split(b"\n") if line.strip()) != 1:
        return False
    return isinstance(obj, dict) and (_WANDB_INTERNAL in obj or not any(k in obj for k in STEP_KEYS))


def _objects(path: Path, notes: list[str], bad: list[str] | None) -> tuple[list[tuple[int, dict]], bool]:
    """The file's objects, and whether they are verl's file-logger rows (read from their `data`); with
    `bad` (`--skip-bad`) malformed lines are left out and described there."""
    out = list(json_lines(path, skipped=notes, bad=bad))
    verl = any(_is_verl_row(obj) for _, obj in out)
    if verl:
        notes.append("verl file-logger rows: the metrics under each row's 'data'")
    if verl or any(isinstance(obj, dict) and _SWIFT_PROGRESS in obj for _, obj in out):
        out = [(line, _lifted(obj)) for line, obj in out]
    numbers = frozenset(
        k
        for _, obj in out
        if isinstance(obj, dict)
        for k, v in obj.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    )
    flat = [(line, _flattened(obj, numbers)) for line, obj in out]
    changed = [(a, b) for (_, a), (_, b) in zip(out, flat, strict=True) if a is not b]
    if changed:
        nested = sorted({k for a, b in changed for k in set(a) - set(b)} - {_WANDB_INTERNAL})
        if nested:
            notes.append(f"nested groups of numbers flattened to group/name keys: {', '.join(nested[:5])}")
        out = flat
    if not out:
        raise InputError(path, "truncated: the only record is incomplete" if not bad else "no readable row")
    return out, verl


def _not_numbers(objects: list[tuple[int, dict]], numeric: set[str]) -> str | None:
    """A note on values left out because they are not numbers, under keys that hold numbers in other
    rows (`"loss": "oops"`): a stray word, not a text field such as a mode name."""
    odd: dict[str, list[int]] = {}  # key → [count, first line]
    for line, obj in objects:
        for key, value in obj.items():
            if key in numeric and value is not None and to_float(value) is None:
                odd.setdefault(key, [0, line])[0] += 1
    if not odd:
        return None
    said = ", ".join(f"{key!r} ×{count} (first: line {first})" for key, (count, first) in odd.items())
    return f"values that are not numbers left out: {said}"


def read(path: Path, skip_bad: bool = False) -> list[ImportedRun]:
    """Flat metric dicts, one per line; `skip_bad` leaves malformed lines out (counted in the notes)."""
    notes: list[str] = []
    bad: list[str] | None = [] if skip_bad else None
    objects, verl = _objects(path, notes, bad)
    # W&B logs media (a table of completions) in rows of their own, with its counters and no metric:
    # such rows say nothing about the run's steps, and would otherwise make `_step` the step key.
    kept = [(line, obj) for line, obj in objects if not _media_only(obj)]
    if len(kept) < len(objects):
        notes.append(f"{len(objects) - len(kept)} W&B row(s) of media only (no metric) left out")
    objects = kept
    rows = [(line, obj) for line, obj in objects if not is_summary(numeric_items(obj))]
    # The step key: the first that every row logs, else one that some rows log (a row without it is then
    # malformed: numbering lines instead would shift every step and store the real ones as a metric).
    step_key = next((k for k in STEP_KEYS if all(k in obj for _, obj in rows)), None) or next(
        (k for k in STEP_KEYS if any(k in obj for _, obj in rows)), None
    )
    logged: list[tuple[int, dict[str, float]]] = []
    wall_of: dict[int, float] = {}  # id of a row's values → the row's wall time (W&B's `_timestamp`, …)
    summary: dict[str, float] = {}
    counters = sorted(
        {k for _, obj in rows for k in obj if (k in STEP_KEYS or k in _PROGRESS_KEYS) and k != step_key}
    )
    for n, (line, obj) in enumerate(objects, 1):
        values = numeric_items(obj, skip=lambda k: k == step_key or k in _WALL_KEYS or k in counters)
        if is_summary(values):
            summary.update(values)
            continue
        if step_key is None:
            step = n
        else:
            whole = whole_step(to_float(obj.get(step_key)))
            if whole is None:
                why = f"line {line}: " + (
                    f"{step_key} is not a whole number ({obj[step_key]!r})"
                    if step_key in obj
                    else f"no {step_key}"
                )
                if bad is None:
                    raise InputError(path, why)
                bad.append(why)
                continue
            step = whole
        if values:
            logged.append((step, values))
            wall = next((to_float(obj[k]) for k in _WALL_KEYS if k in obj), None)
            if wall is not None:
                wall_of[id(values)] = wall
    if bad:
        notes.append(
            bad_rows_note(path, sorted(bad, key=lambda b: int(b.split(":")[0].removeprefix("line "))))
        )
    if not logged:
        raise InputError(path, "JSONL without any metrics row")
    if odd := _not_numbers(objects, {k for _, values in logged for k in values}):
        notes.append(odd)
    if media := sorted({k for _, obj in objects for k, v in obj.items() if _is_media(v)}):
        notes.append(f"W&B media left out (histograms, tables, images): {', '.join(media[:10])}")
    notes.append(f"steps from the '{step_key}' key" if step_key else "steps are line numbers: no step key")
    if counters:
        notes.append(f"step counter key(s) not kept as metrics: {', '.join(counters)}")
    config = {f"summary/{k}": v for k, v in summary.items()}
    framework = "verl" if verl else None
    return runs_of_log(path, logged, notes, format=NAME, framework=framework, wall_of=wall_of, config=config)
