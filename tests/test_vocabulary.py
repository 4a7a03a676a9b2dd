import math

import numpy as np
import pytest

from rftfm_agent.telemetry import vocabulary as v


def test_aliases_map_framework_names_to_one_vocabulary() -> None:
    assert v.resolve("completions/mean_length")[0] == "completion_length"
    assert v.resolve("completion_length")[0] == "completion_length"
    assert v.resolve("critic/score/mean")[0] == "reward"
    assert v.resolve("actor/entropy")[0] == "entropy"
    assert v.resolve("actor/entropy_loss")[0] == "entropy"
    assert v.resolve("critic/kl")[0] == "kl"
    assert v.resolve("objective/kl")[0] == "kl"
    assert v.resolve("train/reward")[0] == "reward"  # W&B / TensorBoard prefix
    assert v.resolve("Training Loss")[0] == "loss"  # notebook table header
    assert v.resolve("rewards / xmlcount_reward_func")[0] == "rewards/xmlcount_reward_func/mean"
    assert v.resolve("rewards/acc/mean")[0] == "rewards/acc/mean"
    assert v.resolve("test_score/openai/gsm8k")[0] == "eval/score"


@pytest.mark.parametrize(
    ("key", "metric"),
    [
        ("objective/scores", "reward"),  # TRL PPOTrainer / RLOOTrainer
        ("actor/reward_kl_penalty", "kl"),  # verl with KL in the reward
        ("train/approx_entropy", "entropy"),  # NeMo-RL
        ("train/kl_penalty", "kl"),
        ("train/mean_gen_tokens_per_sample", "completion_length"),
        ("train/truncation_rate", "completions/clipped_ratio"),
        ("train/actor_grad_norm", "grad_norm"),  # OpenRLHF
        ("train/entropy_loss", "entropy"),
        ("entropy/mean", "entropy"),  # ms-swift
        ("val-core/openai/gsm8k/acc/mean@1", "eval/score"),  # verl
    ],
)
def test_other_trainers_names_map_to_the_vocabulary(key: str, metric: str) -> None:
    """Names other RL trainers log (found in their sources by an outside tester, 2026-12-03): a broken run
    logged under them was `healthy`, its KL, entropy or reward 'not logged'."""
    assert v.resolve(key)[0] == metric


def test_scaled_alias_converts_units() -> None:
    metric, scale, _ = v.resolve("actor/lr(1e-4)")
    assert metric == "learning_rate" and scale == 1e-4


def test_unknown_keys_are_kept_under_their_own_name() -> None:
    assert v.resolve("attention/early/mdi")[0] == "attention/early/mdi"


def test_clash_keeps_both_values_and_prefers_the_primary_key() -> None:
    rows = v.map_row({"actor/kl_loss": 0.5, "critic/kl": 0.1, "critic/score/mean": 0.3})
    by_metric = {m: (k, val) for m, k, val in rows}
    assert by_metric["kl"] == ("critic/kl", 0.1)
    assert by_metric["actor/kl_loss"] == ("actor/kl_loss", 0.5)
    assert by_metric["reward"] == ("critic/score/mean", 0.3)
    assert len(rows) == 3


def test_canonical_row_names_a_trl_logs_dict() -> None:
    logs = {
        "rewards/correct/mean": 0.25,
        "completions/mean_length": 7.5,
        "kl": 0.01,
        "reward": 0.25,
        "train/entropy": 1.5,  # a logger's prefix
        "epoch": 1,  # ints become floats
    }
    assert v.canonical_row(logs) == {
        "rewards/correct/mean": 0.25,
        "completion_length": 7.5,
        "kl": 0.01,
        "reward": 0.25,
        "entropy": 1.5,
        "epoch": 1.0,
    }


def test_canonical_row_names_a_verl_row_with_scale_and_clash() -> None:
    row = {
        "critic/score/mean": 0.4,
        "actor/entropy": 0.9,
        "response_length/mean": 120.0,
        "actor/lr(1e-4)": 2.0,  # verl's old unit: 1e-4
        "actor/kl_loss": 0.5,  # clashes with critic/kl and loses: kept under its own name
        "critic/kl": 0.1,
    }
    out = v.canonical_row(row)
    assert out["reward"] == 0.4 and out["entropy"] == 0.9 and out["completion_length"] == 120.0
    assert out["learning_rate"] == pytest.approx(2e-4)
    assert out["kl"] == 0.1 and out["actor/kl_loss"] == 0.5
    assert all(isinstance(value, float) for value in out.values())


def test_canonical_row_keeps_unknown_keys_nan_and_inf_drops_non_numbers() -> None:
    out = v.canonical_row(
        {"attention/early/mdi": 3, "kl": math.nan, "grad_norm": math.inf, "note": "text", "x": None, "y": [1]}
    )
    assert out.keys() == {"attention/early/mdi", "kl", "grad_norm"}
    assert out["attention/early/mdi"] == 3.0 and math.isnan(out["kl"]) and out["grad_norm"] == math.inf
    assert v.canonical_row({"reward": np.float32(0.5), "flag": True}) == {"reward": 0.5, "flag": 1.0}
