"""Fault injectors: every type exists with easy/hard settings, hooks do nothing before the onset step and
change what training sees from it on. (Their effect on real runs is checked in tests/test_bench.py.)"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rftfm_agent.errors import RftfmError
from rftfm_agent.faults.base import Injector
from rftfm_agent.faults.registry import INJECTORS, hooks_for, make_injector
from rftfm_agent.hooks import RunContext, TrainerHook
from rftfm_agent.telemetry.schema import FAULT_FAMILIES, FAULT_TYPES, FaultSpec
from rftfm_agent.telemetry.store import Store
from rftfm_agent.testbed.runner import RunSpec, correct, parse_fault, run


def _bound(spec: FaultSpec, step: int) -> Injector:
    """The spec's injector, its clock bound to a stand-in trainer that is about to train `step`."""
    injector = make_injector(spec)
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=step - 1))
    injector.runtime.bind(trainer, RunContext(task="arith_a", seed=0, num_generations=4))
    return injector


def test_every_type_of_the_taxonomy_has_an_injector() -> None:
    assert set(INJECTORS) == set(FAULT_TYPES)
    assert {cls.family for cls in INJECTORS.values()} == set(FAULT_FAMILIES)
    for kind, cls in INJECTORS.items():
        assert cls.family == FAULT_TYPES[kind] and cls.description and cls.key_metrics
        assert cls.needs_hf_sampler == (cls.family == "PG")  # vLLM fixes the sampler when it starts
        for strength in ("easy", "hard"):
            for variant in cls.variants:
                spec = FaultSpec(
                    family=cls.family,
                    type=kind,
                    strength=strength,  # type: ignore[arg-type]
                    variant=variant if len(cls.variants) > 1 else None,
                )
                assert make_injector(spec).spec == spec
                (hook,) = hooks_for(spec)
                assert isinstance(hook, TrainerHook) and hook.name == "fault"
    assert hooks_for(None) == []


def test_parse_fault() -> None:
    spec = parse_fault("od_lr:easy@8:low")
    assert (spec.family, spec.type, spec.strength, spec.onset_step, spec.variant) == (
        "OD",
        "od_lr",
        "easy",
        8,
        "low",
    )
    with pytest.raises(Exception, match="TYPE:STRENGTH"):
        parse_fault("nonsense")


COMPLETIONS = ["12", "15", "99", "1", "12", "13", "40", "12", "12+45", "12-7"]  # two ramble on
ANSWERS = ["12"] * 10


@pytest.mark.parametrize(
    "kind", ["rf_sign_flip", "rf_noise", "rf_hackable", "rf_sparse", "ca_group_misalign"]
)
@pytest.mark.parametrize("strength", ["easy", "hard"])
def test_reward_hooks_start_at_the_onset(kind: str, strength: str) -> None:
    spec = FaultSpec(family=FAULT_TYPES[kind], type=kind, strength=strength, onset_step=5)  # type: ignore[arg-type]
    injector = make_injector(spec)
    reward = injector.wrap_reward(correct)  # made before the trainer exists, bound when installed
    assert reward.__name__ == "correct"  # metric keys stay the same
    healthy = correct(COMPLETIONS * 4, ANSWERS * 4)
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=3))
    injector.install(trainer, RunContext(task="arith_a", seed=0, num_generations=4))
    assert reward(COMPLETIONS * 4, answer=ANSWERS * 4) == healthy
    assert injector.label_columns(len(healthy))["fault_injected"] == [False] * len(healthy)
    trainer.state.global_step = 4  # step 5: the onset
    changed = 0
    for seed in range(5):  # rates below 1: some batches may come through unchanged, not all of them
        injector.runtime.rng.seed(seed)
        rewards = reward(COMPLETIONS * 4, answer=ANSWERS * 4)
        changed += rewards != healthy
        labels = injector.label_columns(len(rewards))
        assert labels["fault_injection_type"] == [kind] * len(rewards)
        if rewards != healthy:  # a changed batch has its perturbed rows labelled
            assert any(labels["fault_injected"])
    assert changed >= 3


def test_hackable_pays_an_answer_followed_by_anything() -> None:
    spec = FaultSpec(family="RF", type="rf_hackable", strength="easy")
    texts = ["12", "12+45", "12-3", "13", "x12", "[3*4]12|12+7"]
    rewards = _bound(spec, 1).wrap_reward(correct)(texts, answer=["12"] * len(texts))
    assert rewards == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]  # the lenient parser reads the leading number only


def test_labels_before_onset_say_healthy() -> None:
    spec = FaultSpec(family="OD", type="od_lr", strength="easy", onset_step=3)
    labels = _bound(spec, step=2).label_columns(4)
    assert labels == {
        "fault_injected": [False] * 4,
        "fault_injection_type": [None] * 4,
        "fault_injection_strength": [None] * 4,
    }
    labels = _bound(spec, step=3).label_columns(2)
    assert labels["fault_injected"] == [True, True] and labels["fault_injection_strength"] == ["easy"] * 2


def test_tool_faults_need_the_tool_task() -> None:
    injector = make_injector(FaultSpec(family="TE", type="te_tool_error", strength="easy"))
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=0))
    with pytest.raises(RftfmError, match="tool"):
        injector.install(trainer, RunContext(task="arith_a", seed=0, num_generations=4))
    injector.check_task("tool")


def test_truncation_caps_follow_the_task_and_cut_below_the_default() -> None:
    easy = make_injector(FaultSpec(family="PG", type="pg_truncation", strength="easy"))
    hard = make_injector(FaultSpec(family="PG", type="pg_truncation", strength="hard"))
    for task in ("arith_a", "arith_b", "tool"):
        default = RunSpec(name="x", task=task).completion_cap()
        assert 1 <= easy.cap(task) < hard.cap(task) < default  # type: ignore[attr-defined]
    assert hard.cap("tool") == 9  # type: ignore[attr-defined]  # "[37*6]" + "227" + EOS, one short


def test_whole_step_faults_label_only_the_steps_they_hit() -> None:
    spec = FaultSpec(family="OD", type="od_grad", strength="hard", onset_step=1)
    injector = _bound(spec, step=3)
    injector.runtime.step_injected = False
    assert injector.label_columns(2)["fault_injected"] == [False, False]
    injector.runtime.step_injected = True
    assert injector.label_columns(2)["fault_injected"] == [True, True]


def _settings(kind: str, strength: str, variant: str | None = None) -> dict[str, Any]:
    spec = FaultSpec(family=FAULT_TYPES[kind], type=kind, strength=strength, variant=variant)  # type: ignore[arg-type]
    return make_injector(spec).settings()


def test_hard_is_subtler_than_easy() -> None:
    assert _settings("rf_noise", "hard")["rate"] < _settings("rf_noise", "easy")["rate"]
    assert _settings("rf_hackable", "hard")["leniency"] < _settings("rf_hackable", "easy")["leniency"]
    assert _settings("od_lr", "hard", "high")["lr_factor"] < _settings("od_lr", "easy", "high")["lr_factor"]
    assert _settings("od_lr", "hard", "low")["lr_factor"] > _settings("od_lr", "easy", "low")["lr_factor"]
    assert abs(_settings("od_kl", "hard", "sign")["beta"]) < abs(_settings("od_kl", "easy", "sign")["beta"])
    assert _settings("te_tool_error", "hard")["error_rate"] < _settings("te_tool_error", "easy")["error_rate"]


def test_the_runner_refuses_a_fault_label_without_hooks_and_sampler_hooks_with_vllm(tmp_path: Path) -> None:
    spec = RunSpec(name="x", steps=1, fault=parse_fault("pg_temperature:easy"))
    with pytest.raises(RftfmError, match="no hooks"):
        run(spec, Store(tmp_path / "store"), tmp_path / "work")
    with pytest.raises(RftfmError, match="HF sampler"):
        run(
            spec.model_copy(update={"use_vllm": True}),
            Store(tmp_path / "store"),
            tmp_path / "work",
            hooks=hooks_for(spec.fault),
        )
    assert not Store(tmp_path / "store").manifests()  # refused before anything was recorded
