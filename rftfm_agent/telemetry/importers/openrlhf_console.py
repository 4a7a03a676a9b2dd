"""OpenRLHF console logs: the PPO/GRPO trainer prints its metrics as the postfix of its episode bar.

    Episode [1/1]:   3%|▎   | 1/30 [01:12<35:01, 72.46s/it, policy_loss=-0.00524, kl=0.0003, reward=0.314]

`PPOTrainer.fit` calls `pbar.set_postfix(status)` after each training step (tqdm redraws the bar, count
not yet advanced) and then `pbar.update()`. Older trainers start each episode's bar at 0: a status first
appears with the count of the steps before it, so its step is that count + 1, over the episodes
(`(episode - 1) × total + count + 1`). Newer ones start the bar at the global step (`tqdm(initial=steps)`,
steps counted from 1): the count is the step. A bar's first drawn count tells the two apart.
The inner `Train epoch [k/K]` bars carry abbreviated per-micro-batch figures (`pg`, `rm`, `glen`) and are
not read. A run that logs to W&B or TensorBoard as well is better read from those (exact steps).
"""

from __future__ import annotations

import re
from pathlib import Path

from rftfm_agent.errors import InputError
from rftfm_agent.telemetry.importers.base import (
    looks_binary,
    read_text,
    runs_of_log,
    scan,
    strip_terminal,
    to_float,
)
from rftfm_agent.telemetry.schema import ImportedRun

NAME = "openrlhf_console"

# The episode bar, and its postfix when it has one (`…it/s, key=value, …]`); the description is OpenRLHF's.
_BAR = re.compile(
    r"Episode \[(\d+)/(\d+)\]:\s*\d+%\|[^|\n]*\|\s*(\d+)/(\d+) "
    r"\[(?:([^\]\n]*?,\s*[\w/.@-]+=[^\]\n]*)\]|[^\]\n]*\])"
)
_SNIFF = re.compile(rb"Episode \[\d+/\d+\]:\s*\d+%\|[^|\n]*\|\s*\d+/\d+ \[[^\]\n]*?,\s*[\w/.@-]+=")


def sniff(path: Path, head: bytes) -> bool:
    if looks_binary(head):
        return False
    return bool(_SNIFF.search(head)) or scan(path, _SNIFF)


def _postfix(inside: str) -> dict[str, float]:
    """The numbers of a bar's postfix (`01:12<35:01, 72.46s/it, policy_loss=-0.00524, kl=0.0003`)."""
    values = {}
    for part in inside.split(", "):
        key, eq, text = part.partition("=")
        if eq and (number := to_float(text.strip())) is not None:
            values[key.strip()] = number
    return values


def read(path: Path) -> list[ImportedRun]:
    text = strip_terminal(read_text(path))
    logged: list[tuple[int, dict[str, float]]] = []
    last: tuple[str, str] | None = None  # (episode, postfix) of the status shown last
    previous, first = -1, 0  # the count drawn last, and the count the bar drawn now started from
    for m in _BAR.finditer(text):
        episode, count, total = int(m.group(1)), int(m.group(3)), int(m.group(4))
        if count < previous or (last is not None and m.group(1) != last[0]):
            first = count  # a new bar: a new episode, or a job resumed into the same log
        elif previous < 0:
            first = count
        previous = count
        if m.group(5) is None:
            continue
        shown = m.group(5).split(", ", 2)[-1]  # without the bar's clock and rate, which change each redraw
        if (m.group(1), shown) == last:
            continue  # the same status redrawn (tqdm.update, a refresh): not a new step
        last = (m.group(1), shown)
        values = _postfix(m.group(5))
        if not values:
            continue
        # Newer trainers start the bar at the global step (`tqdm(initial=steps)`, steps from 1): the count
        # is the step; older ones start every episode's bar at 0, the status shown before it advances.
        logged.append((count if first >= 1 else (episode - 1) * total + count + 1, values))
    if not logged:
        raise InputError(path, "OpenRLHF episode bars without any metrics postfix")
    notes = ["steps from the episode bar's count when each status was first shown (its postfix)"]
    return runs_of_log(path, logged, notes, format=NAME, framework="openrlhf")
