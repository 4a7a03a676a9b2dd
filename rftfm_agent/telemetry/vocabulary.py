"""One metric vocabulary for every framework, with the aliases each framework and version uses.

Canonical names follow TRL's current names (https://huggingface.co/docs/trl/logging), because TRL is
what most of our users run.
Every alias says which framework (and, where it changed, which versions) logs it, so that a mapping can
be audited. Keys that match no alias are kept under their own (normalised) name: nothing is dropped.
"""

from __future__ import annotations

import functools
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    """A canonical metric and what it means."""

    name: str
    description: str
    main: bool = False  # shown by `rftfm show` and listed by `rftfm runs`


@dataclass(frozen=True)
class Alias:
    """A framework-specific key that means a canonical metric (times `scale`).

    When several keys of one row map to the same canonical metric, the lowest `priority` wins and the
    others keep their own names, so that no number is lost or silently overwritten.
    """

    key: str
    metric: str
    framework: str
    note: str = ""
    scale: float = 1.0
    priority: int = 0


METRICS: tuple[Metric, ...] = (
    Metric("reward", "mean total reward of the step's completions", main=True),
    Metric("reward_std", "std of total reward across the step's completions"),
    Metric("frac_reward_zero_std", "fraction of prompt groups whose rewards are all equal (no signal)"),
    Metric("kl", "KL divergence of the policy from the reference model", main=True),
    Metric("entropy", "mean token entropy of the policy on its completions", main=True),
    Metric("loss", "training loss as logged"),
    Metric("pg_loss", "policy-gradient loss term"),
    Metric("vf_loss", "value-function (critic) loss"),
    Metric("grad_norm", "gradient norm before clipping (actor)", main=True),
    Metric("critic/grad_norm", "gradient norm of the critic"),
    Metric("learning_rate", "actor learning rate at the step", main=True),
    Metric("completion_length", "mean completion length in tokens", main=True),
    Metric("completions/max_length", "longest completion in tokens"),
    Metric("completions/min_length", "shortest completion in tokens"),
    Metric("completions/clipped_ratio", "fraction of completions cut at the length cap", main=True),
    Metric("clip_ratio", "fraction of tokens whose importance ratio was clipped (PPO clip)"),
    Metric("ppo_kl", "approximate KL between the rollout policy and the updated policy"),
    Metric("kl_coef", "KL penalty coefficient in use"),
    Metric("advantages/mean", "mean advantage"),
    Metric("advantages/max", "max advantage"),
    Metric("advantages/min", "min advantage"),
    Metric("returns/mean", "mean return"),
    Metric("values/mean", "mean critic value"),
    Metric("eval/score", "held-out evaluation score (accuracy or mean reward on a validation set)"),
    Metric("eval/loss", "loss on the evaluation set"),
    Metric("epoch", "fractional epoch"),
    Metric("num_tokens", "tokens seen so far"),
    Metric("step_time", "seconds per optimizer step"),
)

METRIC_NAMES: frozenset[str] = frozenset(m.name for m in METRICS)
MAIN_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.main)

ALIASES: tuple[Alias, ...] = (
    # --- reward -----------------------------------------------------------------------------------
    Alias("reward", "reward", "trl"),
    Alias("rewards/mean", "reward", "generic", priority=1),
    Alias("critic/score/mean", "reward", "verl", "task score before KL penalty"),
    Alias("reward_mean", "reward", "generic", priority=1),
    Alias("avg_reward", "reward", "generic", priority=2),
    Alias("mean_reward", "reward", "generic", "custom trainers", priority=2),
    Alias(
        "objective/scores",
        "reward",
        "trl",
        "PPOTrainer / RLOOTrainer: the reward model's score before the KL penalty (trl ppo_trainer.py), as "
        "verl's critic/score/mean",
        priority=1,
    ),
    Alias("reward_std", "reward_std", "trl"),
    Alias("frac_reward_zero_std", "frac_reward_zero_std", "trl", "TRL ≥ 0.16"),
    # --- KL ---------------------------------------------------------------------------------------
    Alias("kl", "kl", "trl", "only logged when beta > 0"),
    Alias("objective/kl", "kl", "trl", "PPOTrainer / RLOOTrainer"),
    Alias("critic/kl", "kl", "verl", "old verl: KL to reference when KL is in the reward"),
    Alias("actor/kl_loss", "kl", "verl", "KL-loss term (use_kl_loss=True)", priority=1),
    Alias(
        "actor/reward_kl_penalty",
        "kl",
        "verl",
        "KL to the reference when KL is in the reward (use_kl_in_reward; ray_trainer.apply_kl_penalty)",
    ),
    Alias(
        "kl_penalty",
        "kl",
        "nemo-rl",
        "ClippedPGLossFn's KL term (custom trainers log the same name for KL or β·KL: the ratio rules do not "
        "depend on the scale)",
        priority=2,
    ),
    Alias("kl_divergence", "kl", "generic", priority=2),
    Alias("kl_div", "kl", "generic", "custom trainers", priority=2),
    Alias("mean_kl", "kl", "generic", "custom trainers", priority=2),
    # --- entropy ----------------------------------------------------------------------------------
    Alias("entropy", "entropy", "trl", "TRL ≥ 0.18"),
    Alias("objective/entropy", "entropy", "trl", "PPOTrainer / RLOOTrainer"),
    Alias("actor/entropy", "entropy", "verl", "newer verl"),
    Alias("actor/entropy_loss", "entropy", "verl", "old verl name; the value is the entropy", priority=1),
    Alias("policy_entropy", "entropy", "openrlhf", priority=1),
    Alias("mean_entropy", "entropy", "generic", "custom trainers", priority=2),
    Alias("entropy/mean", "entropy", "ms-swift", "GRPO trainer's per-token entropy (log_entropy=True)"),
    Alias(
        "approx_entropy", "entropy", "nemo-rl", "ClippedPGLossFn's estimate from sampled tokens", priority=1
    ),
    Alias(
        "entropy_loss",
        "entropy",
        "openrlhf",
        "ppo_actor: the masked mean entropy (subtracted from the loss times its coefficient)",
        priority=1,
    ),
    # --- losses -----------------------------------------------------------------------------------
    Alias("loss", "loss", "trl"),
    Alias("training_loss", "loss", "hf", "notebook table header 'Training Loss'"),
    Alias("actor/pg_loss", "pg_loss", "verl"),
    Alias("policy_loss", "pg_loss", "openrlhf"),
    Alias("critic/vf_loss", "vf_loss", "verl"),
    Alias("critic_loss", "vf_loss", "openrlhf"),
    # --- gradients, learning rate -----------------------------------------------------------------
    Alias("grad_norm", "grad_norm", "trl"),
    Alias("actor/grad_norm", "grad_norm", "verl"),
    Alias("critic/grad_norm", "critic/grad_norm", "verl"),
    Alias("learning_rate", "learning_rate", "trl"),
    Alias("actor/lr", "learning_rate", "verl", "newer verl"),
    Alias("actor/lr(1e-4)", "learning_rate", "verl", "old verl: value in units of 1e-4", scale=1e-4),
    Alias("actor_lr", "learning_rate", "openrlhf"),
    Alias("lr", "learning_rate", "generic", priority=1),
    Alias("gradient_norm", "grad_norm", "generic", "custom trainers", priority=1),
    Alias("actor_grad_norm", "grad_norm", "openrlhf", "ppo_actor status (newer OpenRLHF)"),
    # --- lengths ----------------------------------------------------------------------------------
    Alias("completions/mean_length", "completion_length", "trl", "TRL ≥ 0.16"),
    Alias("completion_length", "completion_length", "trl", "TRL ≤ 0.15 and Unsloth"),
    Alias("response_length/mean", "completion_length", "verl"),
    Alias("response_length", "completion_length", "openrlhf"),
    Alias("completions/max_length", "completions/max_length", "trl"),
    Alias("response_length/max", "completions/max_length", "verl"),
    Alias("completions/min_length", "completions/min_length", "trl"),
    Alias("response_length/min", "completions/min_length", "verl"),
    Alias("completions/clipped_ratio", "completions/clipped_ratio", "trl", "TRL ≥ 0.16"),
    Alias("response_length/clip_ratio", "completions/clipped_ratio", "verl"),
    Alias("truncated_ratio", "completions/clipped_ratio", "generic", priority=1),
    Alias("mean_gen_tokens_per_sample", "completion_length", "nemo-rl", "rollout metrics", priority=1),
    Alias("truncation_rate", "completions/clipped_ratio", "nemo-rl", "rollout metrics", priority=1),
    # --- PPO clipping, KL coefficient -------------------------------------------------------------
    Alias("clip_ratio/region_mean", "clip_ratio", "trl", "TRL ≥ 0.19"),
    Alias("clip_ratio", "clip_ratio", "trl", "TRL 0.16–0.18 / OpenRLHF"),
    Alias("actor/pg_clipfrac", "clip_ratio", "verl"),
    Alias("actor/ppo_kl", "ppo_kl", "verl"),
    Alias("critic/kl_coeff", "kl_coef", "verl", "old verl"),
    Alias("actor/kl_coef", "kl_coef", "verl"),
    Alias("actor/reward_kl_penalty_coeff", "kl_coef", "verl", "KL in the reward (use_kl_in_reward)"),
    Alias("beta", "kl_coef", "generic", priority=1),
    # --- advantages, returns, values --------------------------------------------------------------
    Alias("critic/advantages/mean", "advantages/mean", "verl"),
    Alias("critic/advantages/max", "advantages/max", "verl"),
    Alias("critic/advantages/min", "advantages/min", "verl"),
    Alias("advantages", "advantages/mean", "openrlhf", priority=1),
    Alias("critic/returns/mean", "returns/mean", "verl"),
    Alias("return", "returns/mean", "openrlhf", priority=1),
    Alias("critic/values/mean", "values/mean", "verl"),
    # --- bookkeeping ------------------------------------------------------------------------------
    Alias("epoch", "epoch", "trl"),
    Alias("training/epoch", "epoch", "verl"),
    Alias("num_tokens", "num_tokens", "trl"),
    Alias("timing_s/step", "step_time", "verl"),
    Alias("perf/time_per_step", "step_time", "verl", priority=1),
    Alias("eval_reward", "eval/score", "trl", priority=1),
    Alias(
        "eval/reward", "eval/score", "wandb", "HF's eval_reward as W&B and TensorBoard name it", priority=1
    ),
    Alias("eval_loss", "eval/loss", "trl"),
    Alias("eval/loss", "eval/loss", "wandb"),
    Alias("validation_loss", "eval/loss", "hf", "notebook table header 'Validation Loss'"),
)

# Pattern aliases: families of keys whose names embed a reward-function or dataset name.
_PATTERNS: tuple[tuple[re.Pattern[str], str, str, str], ...] = (
    # TRL ≥ 0.16 logs rewards/<fn>/mean and /std; older TRL and Unsloth log rewards/<fn>.
    (re.compile(r"^rewards/(?P<fn>[^/]+)/mean$"), "rewards/{fn}/mean", "trl", "TRL ≥ 0.16"),
    (re.compile(r"^rewards/(?P<fn>[^/]+)/std$"), "rewards/{fn}/std", "trl", "TRL ≥ 0.16"),
    (re.compile(r"^rewards/(?P<fn>[^/]+)$"), "rewards/{fn}/mean", "trl", "TRL ≤ 0.15 and Unsloth"),
    (re.compile(r"^test_score/(?P<ds>.+)$"), "eval/score", "verl", "old verl validation score"),
    (re.compile(r"^val-core/(?P<ds>.+)/reward/mean@1$"), "eval/score", "verl", "newer verl validation"),
    (re.compile(r"^val-core/(?P<ds>.+)/acc/mean@1$"), "eval/score", "verl", "newer verl validation accuracy"),
    (re.compile(r"^val/test_score/(?P<ds>.+)$"), "eval/score", "verl", "verl validation score"),
)

_BY_KEY: dict[str, Alias] = {a.key: a for a in ALIASES}
# Table headers and exports capitalise freely ('Epoch', 'Validation Loss'); an exact match wins first.
_BY_LOWER_KEY: dict[str, Alias] = {a.key.lower(): a for a in reversed(ALIASES)}

# Prefixes that loggers put in front of TRL's own names (W&B, TensorBoard, Trackio).
_LOGGER_PREFIXES = ("train/",)


def normalise_key(key: str) -> str:
    """Spell a raw key the way aliases are written: trimmed, ' / ' → '/', spaces → '_', logger prefix off.

    HF notebook tables print 'rewards / xmlcount_reward_func' and 'Training Loss'; W&B and TensorBoard
    prefix TRL's names with 'train/'.
    """
    k = re.sub(r"\s*/\s*", "/", key.strip())
    for prefix in _LOGGER_PREFIXES:
        if k.startswith(prefix) and len(k) > len(prefix):
            k = k[len(prefix) :]
    k = re.sub(r"\s+", "_", k)
    return k


def alias_rank(key: str) -> int | None:
    """How specifically the vocabulary knows `key`: 0 for an alias, 1 + the family's place for a family
    (rewards/<fn>/mean before rewards/<fn>), None for a name it does not know."""
    k = normalise_key(key)
    if k in _BY_KEY:
        return 0
    return next((1 + i for i, (pattern, *_) in enumerate(_PATTERNS) if pattern.match(k)), None)


@functools.lru_cache(maxsize=8192)
def resolve(key: str) -> tuple[str, float, int]:
    """Map a raw key to (canonical name, scale, priority). Unknown keys keep their normalised name.

    Cached: a log repeats the same few dozen keys on every row, and ingest maps every row."""
    k = normalise_key(key)
    alias = _BY_KEY.get(k) or _BY_LOWER_KEY.get(k.lower())
    if alias is not None:
        return alias.metric, alias.scale, alias.priority
    for pattern, template, _framework, _note in _PATTERNS:
        match = pattern.match(k)
        if match:
            return template.format(**match.groupdict()), 1.0, 0
    return k, 1.0, 0


@functools.lru_cache(maxsize=4096)
def map_keys(keys: tuple[str, ...]) -> tuple[tuple[int, str, str, float], ...]:
    """How `map_row` maps a row with these keys, in this order: (position of the key in the row, canonical
    name, source key, scale) for each triple it returns, in its order.

    A log repeats one key set on almost every row, so ingest plans once per key set and applies the plan
    to all the rows' values at once (see `store.step_table`).
    """
    chosen: dict[str, tuple[int, int, str, float]] = {}  # canonical → (priority, position, key, scale)
    losers: list[tuple[int, str, float]] = []  # (position, key, scale) of keys that lost a clash
    for position, key in enumerate(keys):
        metric, scale, priority = resolve(key)
        held = chosen.get(metric)
        if held is None or priority < held[0]:
            if held is not None:
                losers.append((held[1], held[2], held[3]))
            chosen[metric] = (priority, position, key, scale)
        else:
            losers.append((position, key, scale))
    # A loser keeps its normalised key as its name, or where that is taken too (`train/loss` beside
    # `loss`: both normalise to `loss`), its key as logged, else that key with a number: never a taken name.
    taken = set(chosen)
    out: list[tuple[int, str, str, float]] = []
    for position, key, scale in losers:
        name, n = normalise_key(key), 2
        if name in taken:
            name = key
        while name in taken:
            name, n = f"{key}~{n}", n + 1
        taken.add(name)
        out.append((position, name, key, scale))
    out.extend((position, metric, key, scale) for metric, (_p, position, key, scale) in chosen.items())
    return tuple(out)


def map_row(row: dict[str, float]) -> list[tuple[str, str, float]]:
    """Map one logged row to (canonical, source_key, value) triples, resolving clashes by priority.

    When two keys of the row land on the same canonical name, the preferred one takes it and the other
    keeps its own normalised key as its name, so that both values survive.
    """
    values = list(row.values())
    return [(metric, key, values[position] * scale) for position, metric, key, scale in map_keys(tuple(row))]


def canonical_row(raw: Mapping[str, Any]) -> dict[str, float]:
    """One logged row (TRL's `logs`, a verl row, …) as {canonical name: value}, as the store would name it.

    For consumers that want names, not provenance (an online detector fed by the live recorder). The
    mapping is `map_row`'s: scaled aliases, patterns, clashes kept under their own key, unknown keys under
    their normalised name. Only real numbers (bools and numpy scalars included) are kept; anything else
    (None, strings, lists) is dropped; NaN and ±Inf are kept as they are.
    """
    numeric = {
        str(key): float(value)
        for key, value in raw.items()
        if isinstance(value, numbers.Real)  # bool and numpy scalars are Real too
    }
    return {metric: value for metric, _source_key, value in map_row(numeric)}


def describe(metric: str) -> str:
    """One-line meaning of a canonical metric ('' when it is a framework-specific key kept as is)."""
    for m in METRICS:
        if m.name == metric:
            return m.description
    if metric.startswith("rewards/"):
        return "mean (or std) of one reward function"
    return ""
