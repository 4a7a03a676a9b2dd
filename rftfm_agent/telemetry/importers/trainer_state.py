"""Hugging Face / TRL `trainer_state.json`: the `log_history` a Trainer saves with every checkpoint (or
that list saved alone, `json.dump(trainer.state.log_history, f)`).

Training rows carry `step`; evaluation rows (`eval_*`) are merged into the step they were logged at;
the closing summary row (`train_runtime`, `train_loss`) describes the run and goes to its config.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry.importers.base import (
    is_summary,
    merge_steps,
    numeric_items,
    read_text,
    resumed_note,
    sha256_of,
    whole_step,
)
from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo

NAME = "trl_trainer_state"

_CONFIG_KEYS = (
    "global_step",
    "max_steps",
    "logging_steps",
    "eval_steps",
    "save_steps",
    "train_batch_size",
    "num_train_epochs",
    "epoch",
)
# JSON allows NaN / Infinity only as Python's json writes them; both are kept as floats.
_CONSTANTS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


# `json.dump(trainer.state.log_history, f)`: the list alone, `[{"loss": …, "step": 10}, …]`.
_ROWS_ARRAY = re.compile(rb'\A\s*\[\s*\{[^{}\[\]]*"(?:step|loss|learning_rate|epoch)"\s*:')


def sniff(path: Path, head: bytes) -> bool:
    text = head.lstrip()
    if text.startswith(b"\xef\xbb\xbf"):
        text = text[3:].lstrip()
    return (text.startswith(b"{") and b'"log_history"' in head) or bool(_ROWS_ARRAY.match(text))


def _parse(path: Path) -> dict:
    text = read_text(path)
    try:
        doc = json.loads(text, parse_constant=lambda c: _CONSTANTS[c])
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()) - 1:
            problem = f"truncated JSON: the document ends at line {exc.lineno} before it is complete"
            raise InputError(path, problem) from None
        raise InputError(path, f"corrupt JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if isinstance(doc, list):  # the log_history list saved alone
        if not all(isinstance(row, dict) for row in doc):
            raise InputError(path, "JSON list of rows that are not all objects: not a log_history")
        return {"log_history": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("log_history"), list):
        raise InputError(path, "JSON without a 'log_history' list: not a trainer_state.json")
    return doc


def read(path: Path) -> list[ImportedRun]:
    doc = _parse(path)
    logged: list[tuple[int, dict[str, float]]] = []
    summary: dict[str, float] = {}
    for i, entry in enumerate(doc["log_history"]):
        if not isinstance(entry, dict):
            raise InputError(path, f"log_history[{i}] is not an object")
        values = numeric_items(entry)
        if is_summary(values):
            summary.update(values)
            continue
        step = whole_step(values.pop("step", None))
        if step is None or step < 0:
            raise InputError(path, f"log_history[{i}] has no valid 'step' (a whole number from 0)")
        logged.append((step, values))
    rows = merge_steps(logged)  # a step logged twice (a state written after a resume) keeps its later values
    if not rows:
        raise InputError(path, "log_history holds no training rows")
    keys = {k for row in rows.values() for k in row}
    framework = (
        "trl"
        if keys & {"reward", "kl", "completion_length", "completions/mean_length"}
        or any(re.match(r"rewards/", k) for k in keys)
        else "transformers"
    )
    config = {k: doc[k] for k in _CONFIG_KEYS if k in doc}
    config.update({f"summary/{k}": v for k, v in summary.items()})
    note = resumed_note(logged)
    return [
        ImportedRun(
            name=path.stem,
            source=SourceInfo(
                format=NAME,
                framework=framework,
                paths=[str(path)],
                sha256=sha256_of([path]),
                notes=[note] if note else [],
            ),
            steps=[RawStep(step=s, values=v) for s, v in sorted(rows.items())],
            config=config,
        )
    ]
