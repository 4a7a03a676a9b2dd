"""Held-out accuracy: the ground truth beside the training reward.

A fixed set of `HELDOUT_SIZE` problems per task (never trained on; see `tasks.py`), each answered
`SAMPLES` times by sampling at temperature 1 — what the policy actually does, which is what GRPO trains —
and graded by exact match with a healthy calculator. Reward faults, tool faults and hacked verifiers
change what the trainer *sees*; this number says what the policy can actually do.

Precision: 256 problems × 2 samples = 512 graded answers, so the standard error is at most
√(0.25 / 512) = 2.2 points (binomial; `heldout_standard_error` gives the one of a measurement, with the
two samples of a problem treated as a cluster). Greedy decoding is kept for the warm-up report: the
warmed-up policy knows nearly every answer, so greedy accuracy is near 1 and says little about a run.
Sampling uses its own seeded random stream and restores the training run's afterwards.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import transformers
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rftfm_agent.testbed.environment import Calculator, rollout_with_tools
from rftfm_agent.testbed.tasks import TASKS, is_correct

HELDOUT_METRIC = "heldout/accuracy"
SAMPLES = 2  # sampled answers per held-out problem


def heldout_correct(
    model: Any,
    tokenizer: transformers.PreTrainedTokenizerFast,
    task: str,
    *,
    greedy: bool = False,
    seed: int = 0,
    samples: int = SAMPLES,
    max_completion_length: int = 24,
) -> list[list[bool]]:
    """Per held-out problem, whether each of its answers was exactly right (one answer when greedy)."""
    problems = TASKS[task].heldout()
    prompt_ids = [tokenizer(p.prompt, add_special_tokens=False)["input_ids"] for p in problems]
    config = transformers.GenerationConfig(
        do_sample=not greedy, temperature=1.0, top_p=1.0, max_new_tokens=max_completion_length
    )
    was_training = model.training
    model.eval()
    state = torch.random.get_rng_state()
    graded: list[list[bool]] = [[] for _ in problems]
    try:
        for k in range(1 if greedy else samples):
            torch.manual_seed(seed + k)
            rollout = rollout_with_tools(
                model, tokenizer, prompt_ids, config, Calculator(seed + k), max_completion_length
            )
            texts = tokenizer.batch_decode(rollout.completion_ids, skip_special_tokens=True)
            for answers, text, p in zip(graded, texts, problems, strict=True):
                answers.append(is_correct(text, p.answer))
    finally:
        torch.random.set_rng_state(state)  # evaluation must not shift the training run's sampling
        model.train(was_training)
    return graded


def heldout_accuracy(
    model: Any, tokenizer: transformers.PreTrainedTokenizerFast, task: str, **kwargs: Any
) -> float:
    """Share of the task's held-out answers that are exactly right (sampled unless `greedy=True`)."""
    graded = heldout_correct(model, tokenizer, task, **kwargs)
    return sum(map(sum, graded)) / sum(map(len, graded))


def heldout_standard_error(graded: list[list[bool]]) -> float:
    """Standard error of the accuracy, problems as clusters (their answers are not independent)."""
    per_problem = [sum(a) / len(a) for a in graded]
    n = len(per_problem)
    mean = sum(per_problem) / n
    return math.sqrt(sum((x - mean) ** 2 for x in per_problem) / (n - 1) / n)


class HeldOutEval(TrainerCallback):
    """Every `every` optimizer steps (and at step 1 and the last step), log sampled held-out accuracy.

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
