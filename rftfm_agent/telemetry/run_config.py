"""What a recorded run's manifest says about how it was trained: config, model name, library versions.

The recorder reads these once, when it creates the live run. They live apart from the callback because
they depend only on TRL's `TrainingArguments` / `GRPOConfig` fields and the model object, not on the
training loop, and other code (a supervisor, an exporter) may describe a trainer the same way.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

# Arguments copied from `trainer.args` into the manifest's config (missing ones are skipped).
CONFIG_KEYS: tuple[str, ...] = (
    "learning_rate",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",  # num_cycles, power, min_lr_rate …: they change the schedule's shape
    "warmup_ratio",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "optim",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "beta",
    "epsilon",
    "epsilon_high",
    "delta",
    "loss_type",
    "scale_rewards",
    "multi_objective_aggregation",
    "importance_sampling_level",
    "reward_weights",
    "num_generations",
    "num_iterations",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "steps_per_generation",
    "generation_batch_size",
    "max_prompt_length",
    "max_completion_length",
    "mask_truncated_completions",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "use_vllm",
    "vllm_mode",
    "max_steps",
    "num_train_epochs",
    "logging_steps",
    "save_steps",
    "seed",
    "bf16",
    "fp16",
    "gradient_checkpointing",
    "world_size",
)


def versions() -> dict[str, str]:
    """Installed versions of the libraries a recorded run depends on (for the manifest)."""
    out: dict[str, str] = {}
    for dist in ("rftfm", "trl", "transformers", "torch", "accelerate"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _json_value(value: Any) -> Any:
    """A config value as plain JSON (enums → their value, tuples → lists); None when it cannot be one.

    A mapping (`lr_scheduler_kwargs`) keeps every entry: one that is not plain JSON is kept as its repr,
    so that a mapping that holds anything is never recorded as empty (an empty one reads as "defaults")."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            plain = _json_value(item)
            out[str(key)] = plain if plain is not None or item is None else repr(item)
        return out
    if isinstance(value, Enum):  # ExplicitEnum (a str subclass too): its value, as JSON would write it
        return _json_value(value.value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "value") and isinstance(value.value, str | int | float):
        return value.value
    if isinstance(value, list | tuple):
        items = [_json_value(v) for v in value]
        return items if all(i is not None for i in items) else None
    return None


def config_from_args(args: Any, keys: Sequence[str] = CONFIG_KEYS) -> dict[str, Any]:
    """The training arguments a diagnosis needs, taken from a `GRPOConfig` (or any TrainingArguments)."""
    config: dict[str, Any] = {}
    for key in keys:
        if not hasattr(args, key):
            continue
        try:
            value = _json_value(getattr(args, key))
        except Exception:  # a property that raises outside a distributed launch
            continue
        if value is not None and value != {}:  # {}: transformers' default kwargs, the same as none given
            config[key] = value
    return config


def run_config(
    args: Any, reward_func_names: Sequence[str] | None, overrides: dict[str, Any]
) -> dict[str, Any]:
    """The manifest's config: training arguments, the reward functions' names, then `overrides` on top."""
    config = config_from_args(args)
    if reward_func_names:
        config["reward_funcs"] = list(reward_func_names)
    config.update(overrides)
    return config


def model_name(model: Any) -> str | None:
    """The model's `config.name_or_path`, else its class name; None without a model."""
    if model is None:
        return None
    model_config = getattr(model, "config", None)
    return getattr(model_config, "name_or_path", None) or type(model).__name__


__all__ = ["CONFIG_KEYS", "config_from_args", "model_name", "run_config", "versions"]
