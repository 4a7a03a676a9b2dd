"""Held-out accuracy: the ground truth beside the training reward.

A fixed set of problems per task (never trained on; see `tasks.py`) answered greedily (or sampled, for
the warm-up report) and graded by exact match with a healthy calculator. Reward faults, tool faults and
hacked verifiers change what the trainer *sees*; this number says what the policy can actually do.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rftfm_agent.testbed.environment import Calculator, rollout_with_tools
from rftfm_agent.testbed.tasks import TASKS, is_correct

HELDOUT_METRIC = "heldout/accuracy"


def heldout_accuracy(
    model: Any,
    tokenizer: transformers.PreTrainedTokenizerFast,
    task: str,
    *,
    greedy: bool = True,
    seed: int = 0,
    max_completion_length: int = 24,
) -> float:
    """Share of the task's held-out problems answered exactly right."""
    problems = TASKS[task].heldout()
    prompt_ids = [tokenizer(p.prompt, add_special_tokens=False)["input_ids"] for p in problems]
    config = transformers.GenerationConfig(
        do_sample=not greedy, temperature=1.0, top_p=1.0, max_new_tokens=max_completion_length
    )
    was_training = model.training
    model.eval()
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        rollout = rollout_with_tools(
            model, tokenizer, prompt_ids, config, Calculator(seed), max_completion_length
        )
    finally:
        torch.random.set_rng_state(state)  # evaluation must not shift the training run's sampling
        model.train(was_training)
    texts = tokenizer.batch_decode(rollout.completion_ids, skip_special_tokens=True)
    return sum(is_correct(t, p.answer) for t, p in zip(texts, problems, strict=True)) / len(problems)


class HeldOutEval(TrainerCallback):
    """Every `every` optimizer steps (and at step 1 and the last step), log greedy held-out accuracy.

    The value is appended to the trainer's metric window, so it lands in the same logged row as the step's
    TRL metrics under `heldout/accuracy`.
    """

    def __init__(self, trainer: Any, task: str, every: int = 5) -> None:
        self.trainer = trainer
        self.task = task
        self.every = max(1, every)
        self.history: list[tuple[int, float]] = []

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        step = state.global_step
        if step == 1 or step % self.every == 0 or step == state.max_steps:
            model = self.trainer.accelerator.unwrap_model(self.trainer.model)
            accuracy = heldout_accuracy(model, self.trainer.processing_class, self.task)
            self.history.append((step, accuracy))
            self.trainer._metrics["train"][HELDOUT_METRIC].append(accuracy)
