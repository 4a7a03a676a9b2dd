"""Hugging Face Trainer / TRL console logs: the `{'loss': ..., 'reward': ...}` dicts printed each log step.

Real console logs wrap those dicts in tqdm redraws, ANSI colours, warnings and tracebacks; values are
sometimes printed as strings ('1e-05'); `nan`/`inf` appear as bare words. The dicts carry no step, so
the step is recovered, in order of trust, from: a `step` key; the training progress bar (`20/936 [`)
printed just before the dict, when that gives strictly rising steps; `epoch` × update steps per epoch
from the Trainer's header; and lastly the row's position. The method used is written to the run's notes.
"""

from __future__ import annotations

import ast
import itertools
import math
import re
from bisect import bisect_right
from pathlib import Path

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry.importers.base import (
    SUMMARY_KEYS,
    infer_steps_from_epochs,
    looks_binary,
    numeric_items,
    read_text,
    scan,
    sha256_of,
    strip_terminal,
)
from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo

NAME = "hf_console"

_METRIC_KEYS = r"loss|grad_norm|learning_rate|reward|kl|completion_length|epoch|train_runtime|eval_loss"
_SNIFF = re.compile(rb"\{['\"](?:" + _METRIC_KEYS.encode() + rb")['\"]\s*:")
_DICT_START = re.compile(r"\{'(?:" + _METRIC_KEYS + r")'\s*:")
_BARE = re.compile(r"(?<=[:\[,]\s)(-?)(nan|inf)(?=\s*[,}\]])")
_BAR = re.compile(r"(?m)^\s*\d+%\|[^|\n]*\|\s*(\d+)/(\d+) \[")
_HEADER = {
    "max_steps": re.compile(r"Total optimization steps = ([\d,]+)"),
    "steps_per_epoch": re.compile(r"Num update steps per epoch = ([\d,]+)"),
    "num_epochs": re.compile(r"Num Epochs = ([\d,]+)"),
    "num_examples": re.compile(r"Num examples = ([\d,]+)"),
    "train_batch_size": re.compile(r"Total train batch size \(w\. parallel.*?\) = ([\d,]+)"),
    "gradient_accumulation_steps": re.compile(r"Gradient Accumulation steps = ([\d,]+)"),
    "trainable_parameters": re.compile(r"Number of trainable parameters = ([\d,]+)"),
}


def sniff(path: Path, head: bytes) -> bool:
    if looks_binary(head):
        return False
    return bool(_SNIFF.search(head)) or scan(path, _SNIFF)


def _literal(text: str) -> dict:
    """A printed Python dict, with bare nan/inf quoted so that literal_eval accepts them."""
    value = ast.literal_eval(_BARE.sub(lambda m: f"'{m.group(1)}{m.group(2)}'", text))
    if not isinstance(value, dict):
        raise ValueError("not a dict")
    return value


def _dicts(path: Path, text: str) -> list[tuple[int, int, dict]]:
    """(offset, line number, dict) for every metrics dict in the log."""
    found = []
    for match in _DICT_START.finditer(text):
        start = match.start()
        end = text.find("}", start)
        newline = text.find("\n", start)
        line_no = text.count("\n", 0, start) + 1
        if end == -1 or (newline != -1 and newline < end):
            if text[start:].strip().count("\n") == 0:
                raise InputError(path, f"truncated: the last logged dict (line {line_no}) is incomplete")
            raise InputError(path, f"corrupt: unterminated metrics dict at line {line_no}")
        try:
            found.append((start, line_no, _literal(text[start : end + 1])))
        except (ValueError, SyntaxError):
            raise InputError(path, f"corrupt: metrics dict at line {line_no} does not parse") from None
    return found


def _bar_steps(text: str, offsets: list[int]) -> list[int] | None:
    """Step shown by the training progress bar most recently drawn before each dict."""
    bars = [(m.start(), int(m.group(1)), int(m.group(2))) for m in _BAR.finditer(text)]
    if not bars:
        return None
    total = max(b[2] for b in bars)
    bars = [b for b in bars if b[2] == total]  # the training bar, not dataset-map or shard bars
    positions = [b[0] for b in bars]
    steps = []
    for off in offsets:
        i = bisect_right(positions, off) - 1
        if i < 0:
            return None
        steps.append(bars[i][1])
    if steps and steps[0] >= 1 and all(b > a for a, b in itertools.pairwise(steps)):
        return steps
    return None


def _steps_per_epoch(header: dict[str, int], text: str, last_epoch: float | None) -> float | None:
    """Update steps per epoch: from the Trainer header, else the progress bar's total over the epochs run."""
    if "steps_per_epoch" in header:
        return float(header["steps_per_epoch"])
    if "max_steps" in header and header.get("num_epochs"):
        return header["max_steps"] / header["num_epochs"]
    totals = [int(m.group(2)) for m in _BAR.finditer(text)]
    if totals and last_epoch and math.isfinite(last_epoch) and last_epoch > 0:
        # Past a full epoch, the bar total (max steps) over the epochs run gives steps per epoch.
        return max(totals) / last_epoch if last_epoch >= 1 else None
    return None


def _header(text: str) -> dict[str, int]:
    out = {}
    for key, pattern in _HEADER.items():
        m = pattern.search(text)
        if m:
            out[key] = int(m.group(1).replace(",", ""))
    return out


def read(path: Path) -> list[ImportedRun]:
    text = strip_terminal(read_text(path))
    found = _dicts(path, text)
    train: list[tuple[int, dict[str, float]]] = []
    evals: list[tuple[int, dict[str, float]]] = []
    summary: dict[str, float] = {}
    for offset, _line, d in found:
        values = numeric_items(d)
        if SUMMARY_KEYS & values.keys():
            summary.update(values)
        elif any(k.startswith("eval_") for k in values):
            evals.append((offset, values))
        elif values:
            train.append((offset, values))
    if not train:
        raise InputError(path, "console log without any training metrics dict")
    header = _header(text)
    offsets = [off for off, _ in train]
    notes: list[str] = []
    if all("step" in v for _, v in train):
        steps = [int(v.pop("step")) for _, v in train]
        notes.append("steps from the logged 'step' key")
    elif (bar := _bar_steps(text, offsets)) is not None:
        steps = bar
        notes.append("steps from the training progress bar drawn before each logged dict")
    else:
        spe = _steps_per_epoch(header, text, summary.get("epoch", train[-1][1].get("epoch")))
        by_epoch = infer_steps_from_epochs([v.get("epoch") for _, v in train], spe)
        if by_epoch is not None:
            steps = by_epoch
            notes.append(f"steps from epoch × {spe:g} update steps per epoch")
        else:
            steps = list(range(1, len(train) + 1))
            notes.append("steps are row numbers: the log gives no step, progress bar or epoch to infer them")
    rows: dict[int, dict[str, float]] = {}
    for step, (_, values) in zip(steps, train, strict=True):
        rows.setdefault(step, {}).update(values)
    for offset, values in evals:  # evaluation results belong to the last training step before them
        i = bisect_right(offsets, offset) - 1
        if i >= 0:
            rows[steps[i]].update(values)
    config: dict[str, float | int] = dict(header)
    config.update({f"summary/{k}": v for k, v in summary.items()})
    keys = {k for v in rows.values() for k in v}
    trl_keys = {"reward", "kl", "completion_length", "completions/mean_length"}
    framework = "trl" if keys & trl_keys else "transformers"
    return [
        ImportedRun(
            name=path.stem,
            source=SourceInfo(
                format=NAME, framework=framework, paths=[str(path)], sha256=sha256_of([path]), notes=notes
            ),
            steps=[RawStep(step=s, values=v) for s, v in sorted(rows.items())],
            config=config,
        )
    ]
