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
