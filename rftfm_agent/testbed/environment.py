"""The tool task's environment: a calculator the policy calls by writing "[37*46]", and the generation
loop that runs it (used by GRPO rollouts and by the held-out evaluation alike).

The environment is where TE faults live: `Calculator.error_rate` makes a call fail ("E|" instead of a
result) and `Calculator.corrupt_rate` makes it return a wrong number. Both are set by the fault injectors
in `rftfm_agent.faults.environment` at the fault's onset; the held-out evaluation uses its own healthy
calculator, so held-out accuracy measures the policy, not the environment.
"""

from __future__ import annotations

import copy
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import transformers

from rftfm_agent.hooks import ToolCallPolicy
from rftfm_agent.testbed.tasks import TOOL_CLOSE, TOOL_END, TOOL_ERROR, TOOL_OPEN

_CALL = re.compile(r"^(\d{1,4})([+\-*])(\d{1,4})$")


@dataclass
class Calculator:
    """Evaluates "a op b". With `error_rate` a call fails; with `corrupt_rate` it returns a wrong number."""

    seed: int = 0
    error_rate: float = 0.0
    corrupt_rate: float = 0.0
    calls: int = 0
    errors: int = 0
    last_perturbed: bool = False  # did the newest call fail or lie because of error/corrupt_rate
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.rng.seed(f"calculator-{self.seed}")

    def __call__(self, expression: str) -> tuple[str, bool]:
        """(text the environment appends, whether the call failed)."""
        self.calls += 1
        self.last_perturbed = False
        match = _CALL.match(expression)
        injected_error = bool(self.error_rate) and self.rng.random() < self.error_rate
        if match is None or injected_error:
            self.errors += 1
            self.last_perturbed = injected_error
            return f"{TOOL_ERROR}{TOOL_END}", True
        a, op, b = int(match[1]), match[2], int(match[3])
        value = a + b if op == "+" else a - b if op == "-" else a * b
        if self.corrupt_rate and self.rng.random() < self.corrupt_rate:
            value += self.rng.choice([-1, 1]) * self.rng.randint(1, max(9, abs(value) // 4))
            self.last_perturbed = True
        return f"{value}{TOOL_END}", False


@dataclass
class Rollout:
    """Completions of one batch: token ids, the environment mask (0 = tool output) and tool counts."""

    completion_ids: list[list[int]]
    env_mask: list[list[int]]
    tool_calls: list[int]
    tool_errors: list[int]
    tool_faults: list[bool]  # the call failed or lied because of an injected rate (a label only)


def _generate(
    model: Any,
    contexts: list[list[int]],
    config: transformers.GenerationConfig,
    stop_ids: list[int],
    max_new_tokens: list[int],
    pad_id: int,
) -> list[list[int]]:
    """Sample continuations of left-padded contexts; each is cut after its first stop token or budget."""
    width = max(len(c) for c in contexts)
    ids = torch.tensor([[pad_id] * (width - len(c)) + c for c in contexts])
    mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts])
    config = copy.deepcopy(config)
    config.eos_token_id = stop_ids
    config.max_new_tokens = max(max_new_tokens)
    config.pad_token_id = pad_id
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    rows = []
    for row, budget in zip(out[:, width:].tolist(), max_new_tokens, strict=True):
        cut = []
        for token in row[:budget]:
            cut.append(token)
            if token in stop_ids:
                break
        rows.append(cut)
    return rows


def rollout_with_tools(
    model: Any,
    tokenizer: transformers.PreTrainedTokenizerFast,
    prompt_ids: list[list[int]],
    config: transformers.GenerationConfig,
    calculator: Calculator,
    max_completion_length: int,
    tool_policy: ToolCallPolicy | None = None,
) -> Rollout:
    """Generate; where a completion closes a tool call, append the calculator's answer and continue.

    One call per completion. The policy's own tokens count against `max_completion_length`; the tool's
    output does not (as in TRL's tool loop), and is masked out of the loss by `env_mask`.
    """
    eos = tokenizer.eos_token_id
    close = tokenizer.convert_tokens_to_ids(TOOL_CLOSE)
    pad = tokenizer.pad_token_id
    first = _generate(model, prompt_ids, config, [eos, close], [max_completion_length] * len(prompt_ids), pad)
    completions = [list(c) for c in first]
    masks = [[1] * len(c) for c in first]
    calls = [0] * len(first)
    errors = [0] * len(first)
    faults = [False] * len(first)
    pending: list[int] = []
    for i, ids in enumerate(first):
        if not ids or ids[-1] != close or len(ids) >= max_completion_length:
            continue
        text = tokenizer.decode(ids)
        expression = text.rsplit(TOOL_OPEN, 1)[1][:-1] if TOOL_OPEN in text else ""
        reply, failed = call_with_retry(calculator, expression, tool_policy)
        reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
        completions[i] += reply_ids
        masks[i] += [0] * len(reply_ids)
        calls[i], errors[i], faults[i] = 1, int(failed), calculator.last_perturbed
        pending.append(i)
    if pending:
        contexts = [prompt_ids[i] + completions[i] for i in pending]
        budgets = [max_completion_length - sum(masks[i]) for i in pending]
        second = _generate(model, contexts, config, [eos], budgets, pad)
        for i, ids in zip(pending, second, strict=True):
            completions[i] += ids
            masks[i] += [1] * len(ids)
    return Rollout(completions, masks, calls, errors, faults)


def call_with_retry(
    calculator: Calculator, expression: str, policy: ToolCallPolicy | None
) -> tuple[str, bool]:
    """One tool call, retried on failure as `policy` says (a remediation may turn retries on mid-run)."""
    reply, failed = calculator(expression)
    attempt = 0
    while failed and policy is not None and attempt < policy.retries:
        if policy.backoff_s > 0:
            time.sleep(policy.backoff_s * 2**attempt)
        reply, failed = calculator(expression)
        attempt += 1
    return reply, failed


def make_rollout_func(
    calculator: Calculator, stats: dict[str, Any], tool_policy: ToolCallPolicy | None = None
) -> Any:
    """A TRL `rollout_func` for the tool task (HF generation on the trainer's own model).

    TRL passes the batch's prompts (one entry per completion to make) and the trainer; the current
    `trainer.generation_config` is used, so temperature or length changes made at run time apply. The tool
    counts of the newest batch are left in `stats` for the recorder.
    """

    def rollout(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        tokenizer = trainer.processing_class
        prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        try:
            result = rollout_with_tools(
                model,
                tokenizer,
                prompt_ids,
                trainer.generation_config,
                calculator,
                trainer.max_completion_length,
                tool_policy,
            )
        finally:
            model.train(was_training)
        stats["tool_call_count"] = result.tool_calls
        stats["tool_error_count"] = result.tool_errors
        stats["tool_fault"] = result.tool_faults
        made = sum(result.tool_calls)
        failed = sum(result.tool_errors)
        trainer._metrics["train"]["tools/call_frequency"].append(made / max(1, len(prompts)))
        trainer._metrics["train"]["tools/failure_frequency"].append(failed / made if made else 0.0)
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": result.completion_ids,
            "logprobs": None,
            "env_mask": result.env_mask,
        }

    return rollout
