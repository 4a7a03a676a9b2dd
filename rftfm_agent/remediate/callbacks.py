"""The trainer-side pieces of remediation actions: callbacks and tensor helpers (torch, transformers).

Kept apart from `actions.py` so that reading, checking and planning actions (the policy, the agent's
tools) never imports torch: only installing one in a trainer does.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


class Pin(TrainerCallback):
    """Applies `apply(trainer)` when training (re)starts and at the start of every step."""

    def __init__(self, trainer: Any, apply: Any) -> None:
        self.trainer = trainer
        self.apply = apply

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.apply(self.trainer)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.apply(self.trainer)


class Rewarm(TrainerCallback):
    def __init__(self, trainer: Any, steps: int, on_loss: bool) -> None:
        self.trainer, self.steps, self.on_loss = trainer, steps, on_loss
        self.left = 0
        self.seen_state = False

    def _optimizer(self) -> Any:
        return getattr(self.trainer.optimizer, "optimizer", self.trainer.optimizer)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._optimizer().state.clear()
        self.left = self.steps

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        optimizer = self._optimizer()
        if optimizer.state:
            self.seen_state = True
        elif self.on_loss and self.seen_state and self.left == 0:
            self.left = self.steps  # the state was thrown away since the last step: warm up again
            self.seen_state = False
        if self.left > 0:
            factor = (self.steps - self.left + 1) / (self.steps + 1)
            for group in optimizer.param_groups:
                group["lr"] = group.get("initial_lr", group["lr"]) * factor
            self.left -= 1


def repetitive(ids: torch.Tensor, mask: torch.Tensor, pad: int | None) -> torch.Tensor:
    """Completions of at least 6 tokens whose distinct tokens are under a third of their tokens."""
    out = []
    for row, m in zip(ids.tolist(), mask.tolist(), strict=True):
        tokens = [t for t, keep in zip(row, m, strict=True) if keep and t != pad]
        out.append(len(tokens) >= 6 and len(set(tokens)) < len(tokens) / 3)
    return torch.tensor(out, dtype=torch.bool, device=mask.device)
