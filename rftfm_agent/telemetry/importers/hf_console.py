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
    infer_steps_from_epochs,
    is_summary,
    looks_binary,
    merge_steps,
    numeric_items,
    read_text,
    restart_note,
    resumed_note,
    scan,
    sha256_of,
    split_restarts,
    strip_terminal,
    unwrap_reprs,
    whole_step,
)
from rftfm_agent.telemetry.schema import ImportedRun, RawStep, SourceInfo

NAME = "hf_console"

# The key a Trainer's dict starts with; TRL's PPOTrainer / RLOOTrainer put `eps` (episodes per second) first,
# then `objective/kl` (trl ppo_trainer.py: `metrics["eps"] = …`).
_METRIC_KEYS = (
    r"loss|grad_norm|learning_rate|reward|kl|completion_length|epoch|train_runtime|eval_loss"
    r"|eps|objective/\w+"
)
# Python's repr of a dict, as the Trainer prints it: single quotes (a JSON object is another format's).
_SNIFF = re.compile(rb"\{'(?:" + _METRIC_KEYS.encode() + rb")'\s*:")
_DICT_START = re.compile(r"\{'(?:" + _METRIC_KEYS + r")'\s*:")
_BARE = re.compile(r"(?<=[:\[,]\s)(-?)(nan|inf)(?=\s*[,}\]])")
# A tqdm bar at the start of a line, or behind a launcher's prefix (torchrun --tee's `[default0]:`, Ray's
# `(pid=…)`); a bar with a description (`Map: 100%|`) is another loop's.
_BAR = re.compile(
    r"(?m)^\s*(?:(?:\[[^\]\n]*\]|\([^)\n]*\)):?\s*)*(?:Train:\s*)?\d+%\|[^|\n]*\|\s*(\d+)/(\d+) \["
)  # ms-swift's ProgressCallbackNew describes its training bar `Train` (tqdm(desc='Train')); others not
# The Trainer's header (`Total optimization steps = 936`) and Unsloth's banner (`Num Epochs = 1 | Total
# steps = 60`, `Gradient accumulation steps = 5`).
_HEADER = {
    "max_steps": re.compile(r"Total (?:optimization )?steps = ([\d,]+)"),
    "steps_per_epoch": re.compile(r"Num update steps per epoch = ([\d,]+)"),
    "num_epochs": re.compile(r"Num Epochs = ([\d,]+)"),
    "num_examples": re.compile(r"Num examples = ([\d,]+)"),
    "train_batch_size": re.compile(r"Total train batch size \(w\. parallel.*?\) = ([\d,]+)"),
    "gradient_accumulation_steps": re.compile(r"Gradient [Aa]ccumulation steps = ([\d,]+)"),
    "trainable_parameters": re.compile(r"Number of trainable parameters = ([\d,]+)"),
}


def sniff(path: Path, head: bytes) -> bool:
    if looks_binary(head):
        return False
    return bool(_SNIFF.search(head)) or scan(path, _SNIFF)


def _literal(text: str) -> dict:
    """A printed Python dict, with bare nan/inf quoted so that literal_eval accepts them. Python's parser
    gives up on a very deeply nested text with MemoryError or RecursionError: not a dict either."""
    try:
        value = ast.literal_eval(_BARE.sub(lambda m: f"'{m.group(1)}{m.group(2)}'", text))
    except (MemoryError, RecursionError):
        raise ValueError("nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError("not a dict")
    return value


def _printed_again(a: dict, b: dict, between: str, bars: bool, prefixes: tuple[str, str]) -> bool:
    """Whether dict `b` is dict `a` printed again (by a user's callback, or by a second process), not the
    next logged step: the same values (the epoch compared as the Trainer's ProgressCallback prints it, 2
    digits) and no progress bar drawn between them. In a log without bars (stdout alone: tqdm draws on
    stderr) a run that logs the same values at two steps (a dead one, epoch rounded alike) is two steps, so
    there the repeat must also show: its epoch printed with other digits, or unrounded and equal (two steps
    never share an unrounded epoch), or its line behind another prefix (`[rank1]:`, `[step 5]`)."""
    if a.keys() != b.keys() or (bars and _BAR.search(between)):
        return False
    for key, x in a.items():
        y = b[key]
        if key == "epoch" and isinstance(x, float | int) and isinstance(y, float | int):
            x, y = round(x, 2), round(y, 2)
        if x != y and not (x != x and y != y):  # NaN (x != x) equals NaN here
            return False
    if bars:
        return True
    ea, eb = a.get("epoch"), b.get("epoch")
    return prefixes[0] != prefixes[1] or (
        isinstance(ea, float) and isinstance(eb, float) and (ea != eb or _decimals(ea) > 2)
    )


def _decimals(x: float) -> int:
    """Digits after the point in a float's shortest repr (1e-05: many)."""
    text = repr(x)
    return 17 if "e" in text else len(text.partition(".")[2])


_RANK = re.compile(r"\[(?:rank|default)(\d+)\]")  # torchrun --tee's `[default0]:`, `[rank0]:` prefixes


def _rank(prefix: str) -> int | None:
    match = _RANK.search(prefix)
    return int(match.group(1)) if match else None


def _line_prefix(text: str, start: int) -> str:
    """What precedes a dict on its line (`[rank1]:`, `[step 5] `), stripped."""
    return text[text.rfind("\n", 0, start) + 1 : start].strip()


def _dicts(path: Path, text: str, notes: list[str]) -> list[tuple[int, int, dict]]:
    """(offset, line number, dict) for every metrics dict in the log.

    A job killed mid-write leaves its last dict incomplete: that one is skipped with a note and the
    records before it are kept. An incomplete or unparseable dict with complete ones after it is
    corruption, not a crash, and an error. A dict printed again right after itself (a user's callback that
    prints the logs in `on_log`: `print(f"[step {step}] {logs}")`; the Trainer's own copy has its epoch
    rounded to 2 digits) is the same step: kept once, noted.
    """
    found: list[tuple[int, int, dict]] = []
    repeats, bars, previous_end = 0, _BAR.search(text) is not None, 0
    starts = list(_DICT_START.finditer(text))
    for n, match in enumerate(starts):
        start = match.start()
        end = text.find("}", start)
        newline = text.find("\n", start)
        line_no = text.count("\n", 0, start) + 1
        is_last = n == len(starts) - 1
        problem = None
        if end == -1 or (newline != -1 and newline < end):
            problem = "is incomplete"
        else:
            try:
                logged = _literal(text[start : end + 1])
            except (ValueError, SyntaxError):
                problem = "does not parse"
            else:
                prefixes = (_line_prefix(text, found[-1][0]) if found else "", _line_prefix(text, start))
                if found and _printed_again(found[-1][2], logged, text[previous_end:start], bars, prefixes):
                    repeats += 1
                    continue
                found.append((start, line_no, logged))
                previous_end = end
        if problem is None:
            continue
        if is_last:
            notes.append(f"truncated: the last logged dict (line {line_no}) {problem} and was skipped")
            if not found:
                raise InputError(path, f"truncated: the only logged dict (line {line_no}) {problem}")
        elif problem == "is incomplete":
            raise InputError(path, f"corrupt: unterminated metrics dict at line {line_no}")
        else:
            raise InputError(path, f"corrupt: metrics dict at line {line_no} does not parse")
    if repeats:
        notes.append(f"{repeats} dict(s) printed twice in a row (a callback printing the logs) kept once")
    ranks = [_rank(_line_prefix(text, start)) for start, _, _ in found]
    if len({r for r in ranks if r is not None}) > 1:
        # Every process of a launch prints the same dicts (`[rank0]:` … `[rank1]:`, torchrun's `--tee`),
        # interleaved as they come: the first rank's are the log.
        first = min(r for r in ranks if r is not None)
        kept = [f for f, r in zip(found, ranks, strict=True) if r in (first, None)]
        notes.append(f"dicts printed by {len(set(ranks) - {None})} ranks: rank {first}'s kept")
        found = kept
    return found


def _bar_steps(
    text: str, offsets: list[int], lo: int = 0, epochs: list[float | None] | None = None
) -> tuple[list[int], str] | None:
    """Steps of the logged dicts from the training progress bar (bars from offset `lo` on: a phase's own
    bar), and how they were taken; None when the bar does not give them.

    HF's ProgressCallback prints a dict with `tqdm.write`, which redraws the bar right after it with the
    count at logging time; the bar drawn before it may be stale (tqdm redraws at most every 0.1 s, and
    skips redraws after a jump, as on a resume), one logging interval early. The redraw is used where
    the dicts' `epoch` agrees with it better (epoch ∝ step), the bar before otherwise, as a log printed
    without redraws has the next step's bar after each dict. Steps must rise, except where the counter
    starts over (a new run) or a new bar was started (a resume appended to the log)."""
    found = [(m.start(), int(m.group(1)), int(m.group(2))) for m in _BAR.finditer(text) if m.start() >= lo]
    drawn = [b for b in found if b[0] < offsets[-1]] if offsets else found
    if not drawn:
        return None
    total = max(b[2] for b in drawn)
    bars = [b for b in found if b[2] == total]  # the training bar, not dataset-map or shard bars
    positions = [b[0] for b in bars]
    starts = [m.start() for m in _DICT_START.finditer(text)]
    before, after = [], []
    for off in offsets:
        i = bisect_right(positions, off)  # bars[i]: the first drawn after the dict
        if i == 0:
            return None
        k = bisect_right(starts, off)
        following = starts[k] if k < len(starts) else len(text)
        before.append(bars[i - 1][1])
        after.append(bars[i][1] if i < len(bars) and positions[i] < following else bars[i - 1][1])
    valid = {
        name: steps
        for name, steps in (("before", before), ("after", after))
        if min(steps) >= 1 and _rising(steps, offsets, bars)
    }
    if not valid:
        return None
    choice = "before" if "before" in valid else "after"
    if len(valid) == 2 and before != after and _epoch_spread(after, epochs) < _epoch_spread(before, epochs):
        choice = "after"
    how = "redrawn after" if choice == "after" else "drawn before"
    return valid[choice], f"steps from the training progress bar {how} each logged dict"


def _rising(steps: list[int], offsets: list[int], bars: list[tuple[int, int, int]]) -> bool:
    """Steps rise within each run (`split_restarts`), except after a bar that starts over: the progress
    bar of a resumed job appended to the same log."""
    for segment in split_restarts([(s, {"i": i}) for i, s in enumerate(steps)]):
        for (a, ia), (b, ib) in itertools.pairwise(segment):
            if b > a:
                continue
            between = [c for p, c, _ in bars if offsets[ia["i"]] < p < offsets[ib["i"]]]
            if not between or min(between) >= a:
                return False
    return True


def _epoch_spread(steps: list[int], epochs: list[float | None] | None) -> float:
    """How far the dicts' epoch / step ratios spread (0: epoch exactly proportional to step, as the
    Trainer logs it); infinity without two epochs to compare."""
    ratios = [
        math.log(e / s)
        for s, e in zip(steps, epochs or [], strict=False)
        if e is not None and math.isfinite(e) and e > 0 and s > 0
    ]
    if len(ratios) < 2:
        return math.inf
    middle = sorted(ratios)[len(ratios) // 2]
    return sum(abs(r - middle) for r in ratios)


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


# Keys only an RL trainer logs: rows without any of them, before the first row with one, are a
# supervised warm-up (SFT) phase of the same script.
_RL_KEYS = frozenset(
    {"reward", "reward_std", "kl", "completion_length", "completions/mean_length", "frac_reward_zero_std"}
)


def _is_rl(values: dict[str, float]) -> bool:
    return bool(_RL_KEYS & values.keys()) or any(k.startswith(("rewards/", "objective/")) for k in values)


def _phases(
    train: list[tuple[int, dict[str, float]]],
) -> list[tuple[str, list[tuple[int, dict[str, float]]]]]:
    """('sft', rows), ('rl', rows): an SFT prefix split from the RL rows after it; else one phase."""
    first_rl = next((i for i, (_, v) in enumerate(train) if _is_rl(v)), None)
    if not first_rl:
        return [("", train)]
    return [("sft", train[:first_rl]), ("", train[first_rl:])]


def _steps(
    text: str,
    rows: list[tuple[int, dict[str, float]]],
    lo: int,
    header: dict[str, int],
    last_epoch: float | None,
) -> tuple[list[int], str]:
    offsets = [off for off, _ in rows]
    if all("step" in v for _, v in rows):
        return [int(v.pop("step")) for _, v in rows], "steps from the logged 'step' key"
    if (bar := _bar_steps(text, offsets, lo, [v.get("epoch") for _, v in rows])) is not None:
        return bar
    spe = _steps_per_epoch(header, text, last_epoch)
    by_epoch = infer_steps_from_epochs([v.get("epoch") for _, v in rows], spe)
    if by_epoch is not None:
        return by_epoch, f"steps from epoch × {spe:g} update steps per epoch"
    return (
        list(range(1, len(rows) + 1)),
        "steps are row numbers: the log gives no step, progress bar or epoch to infer them",
    )


def read(path: Path) -> list[ImportedRun]:
    text = strip_terminal(unwrap_reprs(read_text(path)))
    notes: list[str] = []
    found = _dicts(path, text, notes)
    train: list[tuple[int, dict[str, float]]] = []
    evals: list[tuple[int, dict[str, float]]] = []
    summary: dict[str, float] = {}
    for offset, _line, d in found:
        values = numeric_items(d)
        if is_summary(values):
            summary.update(values)
        elif any(k.startswith("eval_") for k in values):
            evals.append((offset, values))
        elif values:
            train.append((offset, values))
    if not train:
        raise InputError(path, "console log without any training metrics dict")
    header = _header(text)
    config: dict[str, float | int] = dict(header)
    config.update({f"summary/{k}": v for k, v in summary.items()})
    pieces: list[tuple[str, str, list[tuple[int, int, dict[str, float]]]]] = []  # (name, how, rows)
    lo = 0
    for offset, values in train:  # a logged step must be a whole number (int() would truncate 1.5)
        if "step" in values and whole_step(values["step"]) is None:
            line = text.count("\n", 0, offset) + 1
            raise InputError(path, f"line {line}: 'step' {values['step']!r} is not a whole number")
    for phase, rows in _phases(train):
        last_epoch = summary.get("epoch", rows[-1][1].get("epoch"))
        steps, how = _steps(text, rows, lo, header, last_epoch)
        lo = rows[-1][0]
        offset_of = {id(v): off for off, v in rows}
        segments = split_restarts([(s, v) for s, (_, v) in zip(steps, rows, strict=True)])
        for i, segment in enumerate(segments, 1):
            name = path.stem + (f"-{phase}" if phase else "") + (f"-run{i}" if len(segments) > 1 else "")
            extra = [how]
            if phase == "sft":
                extra.append("supervised (SFT) rows logged before the RL rows of the same log")
            if len(segments) > 1:
                extra.append(restart_note(i, len(segments), segment[0][0]))
            if resumed := resumed_note(segment):
                extra.append(resumed)
            pieces.append((name, "; ".join(extra), [(offset_of[id(v)], s, v) for s, v in segment]))
    merged = [merge_steps([(s, v) for _, s, v in rows]) for _, _, rows in pieces]
    # Evaluation results belong to the last training step logged before them.
    order = sorted((off, k, s) for k, (_, _, rows) in enumerate(pieces) for off, s, _ in rows)
    before_training = False
    for offset, values in evals:
        j = bisect_right([o for o, _, _ in order], offset) - 1
        if j >= 0:
            _, k, s = order[j]
            merged[k][s].update(values)
        else:  # the Trainer's `eval_on_start`: the initial model, at step 0 of the first run
            merged[0].setdefault(0, {}).update(values)
            before_training = True
    if before_training:
        name, how, rows = pieces[0]
        pieces[0] = (name, how + "; an evaluation logged before the first training step is at step 0", rows)
    runs = []
    for (name, how, _), rows_by_step in zip(pieces, merged, strict=True):
        keys = {k for v in rows_by_step.values() for k in v}
        framework = (
            "trl"
            if keys & {"reward", "kl", "completion_length", "completions/mean_length"}
            else ("transformers")
        )
        runs.append(
            ImportedRun(
                name=name,
                source=SourceInfo(
                    format=NAME,
                    framework=framework,
                    paths=[str(path)],
                    sha256=sha256_of([path]) + ("" if name == path.stem else f":{name}"),
                    notes=[*notes, *how.split("; ")],
                ),
                steps=[RawStep(step=s, values=v) for s, v in sorted(rows_by_step.items())],
                config=config,
            )
        )
    return runs
