"""The testbed: tasks, the calculator environment, the warmed-up model, and real GRPO runs with the runner
(checkpoint and resume with a new learning rate, determinism, any HF causal LM)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from rftfm_agent.faults.registry import hooks_for
from rftfm_agent.hooks import RewardFn, RunContext, TrainerHook
from rftfm_agent.telemetry.store import Store
from rftfm_agent.testbed.environment import Calculator, rollout_with_tools
from rftfm_agent.testbed.model import WarmupConfig, build_tokenizer, warm_model, warmup_report
from rftfm_agent.testbed.runner import RunSpec, parse_fault, run
from rftfm_agent.testbed.tasks import HELDOUT_SIZE, TASKS, final_answer, is_correct


def test_tasks_have_disjoint_heldout_and_right_answers() -> None:
    import random

    for name, task in TASKS.items():
        heldout = task.heldout()
        assert len(heldout) == HELDOUT_SIZE
        held_prompts = {p.prompt for p in heldout}
        drawn = task.sample(random.Random(0), 500)
        assert not held_prompts & {p.prompt for p in drawn}, name
        for p in drawn[:50]:
            expression = p.prompt.rstrip("=")
            assert str(eval(expression)) == p.answer
            assert is_correct(p.target, p.answer)


def test_final_answer_reads_after_the_tool_bar() -> None:
    assert final_answer("[12*34]408|411") == "411"
    assert final_answer(" 82 ") == "82"
    assert not is_correct("[12*34]408|410", "411")


def test_calculator_errors_and_corruption_are_rates() -> None:
    healthy = Calculator(seed=1)
    assert healthy("12*34") == ("408|", False)
    assert healthy("12*") == ("E|", True) and not healthy.last_perturbed  # a malformed call is not a fault
    failing = Calculator(seed=1, error_rate=1.0)
    assert failing("12*34") == ("E|", True) and failing.last_perturbed
    lying = Calculator(seed=1, corrupt_rate=1.0)
    text, failed = lying("12*34")
    assert not failed and text != "408|" and lying.last_perturbed
    half = Calculator(seed=3, error_rate=0.5)
    fails = sum(half("10+10")[1] for _ in range(400))
    assert 150 < fails < 250


@pytest.fixture(scope="module")
def warm_folder() -> Path:
    return warm_model(WarmupConfig())


def test_warm_model_is_about_a_million_parameters_and_cached(warm_folder: Path) -> None:
    report = warmup_report(warm_folder)
    assert 700_000 <= report["parameters"] <= 1_300_000
    assert set(report["heldout_accuracy_sampled"]) == {"arith_a", "arith_b", "tool"}
    # Warmed up to know answers but to ramble on after most of them: RL has something to learn everywhere.
    # The warm-up is not bit-identical across CPUs (kernels differ): the same config gave the tool task
    # 22.5 % on one machine and 7.2 % on another (arith_a 27.9 % / 25.4 %). What matters is room to learn.
    for task, accuracy in report["heldout_accuracy_sampled"].items():
        assert 0.05 <= accuracy <= 0.5, (task, accuracy)
    assert warm_model(WarmupConfig()) == warm_folder  # a second call finds the cache
    assert report["cpu"] == str(torch.backends.cpu.get_cpu_capability())


def test_warm_model_cache_key_names_the_cpu_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    # Trained with AVX-512 kernels and with AVX2 ones, the same config gave different weights: a cache
    # shared between two kinds of CPU must not hand one machine's model to the other.
    import rftfm_agent.testbed.model as model

    keys = set()
    for kernels in ("AVX512", "AVX2"):
        monkeypatch.setattr(model, "cpu_kernels", lambda kernels=kernels: kernels)
        keys.add(WarmupConfig().key())
    assert len(keys) == 2


def test_tool_rollout_masks_the_environment_text(warm_folder: Path) -> None:
    model = transformers.AutoModelForCausalLM.from_pretrained(warm_folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(warm_folder)
    problems = TASKS["tool"].heldout()[:16]
    ids = [tokenizer(p.prompt, add_special_tokens=False)["input_ids"] for p in problems]
    config = transformers.GenerationConfig(do_sample=False, max_new_tokens=16)
    result = rollout_with_tools(model, tokenizer, ids, config, Calculator(error_rate=1.0), 16)
    assert sum(result.tool_calls) >= 8  # the warmed-up policy calls the tool
    for completion, mask, called, errors in zip(
        result.completion_ids, result.env_mask, result.tool_calls, result.tool_errors, strict=True
    ):
        assert len(completion) == len(mask)
        text = tokenizer.decode(completion)
        if called:
            assert errors == 1 and "E|" in text
            masked = tokenizer.decode([t for t, m in zip(completion, mask, strict=True) if m == 0])
            assert masked == "E|"  # exactly the environment's reply carries no loss


@pytest.mark.slow
def test_run_records_heldout_accuracy_and_trajectory_fields(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    spec = RunSpec(name="tool-run", task="tool", steps=3, batch_size=16, eval_every=2)
    result = run(spec, store, tmp_path / "work")
    assert result.steps == 3 and not result.recorder_errors
    steps = store.steps(result.run_id)
    assert steps["heldout/accuracy"].notna().sum() == 3  # steps 1, 2 and the last
    traj = store.trajectories(result.run_id)
    assert len(traj) == 3 * 16
    for column in (
        "reward",
        "advantage",
        "advantage_mean",
        "advantage_std",
        "return",
        "response_length",
        "repetition_ratio",
        "unique_token_ratio",
        "tool_call_count",
        "tool_error_count",
        "empty_response",
        "short_response",
        "long_response",
    ):
        assert traj[column].notna().all(), column
    assert (traj["return"] == traj["reward"]).all()
    assert traj["tool_call_count"].sum() > 0
    manifest = store.manifest(result.run_id)
    assert manifest.label == "control" and manifest.status == "finished"


@pytest.mark.slow
def test_same_spec_gives_the_same_records(tmp_path: Path) -> None:
    spec = RunSpec(name="det", task="arith_a", steps=3, batch_size=16, fault=parse_fault("rf_noise:easy@2"))
    tables = []
    for i in range(2):
        store = Store(tmp_path / f"s{i}")
        run_id = run(spec, store, tmp_path / f"w{i}", hooks=hooks_for(spec.fault)).run_id
        traj = store.trajectories(run_id).drop(columns=["run_id"])
        steps = store.steps(run_id).drop(columns=["wall_time", "step_time"], errors="ignore")
        tables.append((traj, steps))
    assert tables[0][0].equals(tables[1][0])
    assert tables[0][1].equals(tables[1][1])


@pytest.mark.slow
def test_resume_from_checkpoint_with_a_new_learning_rate(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    first = RunSpec(
        name="lr-run",
        task="arith_b",
        steps=4,
        batch_size=16,
        learning_rate=5e-5,
        warmup_steps=0,
        save_steps=2,
    )
    run(first, store, tmp_path / "work")
    checkpoint = tmp_path / "work" / "checkpoint-2"
    assert (checkpoint / "optimizer.pt").is_file()
    resumed = first.model_copy(update={"learning_rate": 2e-4, "steps": 5, "save_steps": None})
    result = run(resumed, store, tmp_path / "work2", resume_from=checkpoint)
    steps = store.steps(result.run_id)
    assert list(steps["step"]) == [3, 4, 5]  # numbered on from the checkpoint
    assert steps["learning_rate"].tolist() == pytest.approx([2e-4] * 3)
    assert store.manifest(result.run_id).config["resumed_from"] == str(checkpoint)


@pytest.mark.slow
def test_a_resume_in_the_warm_up_goes_on_warming_up_at_the_new_rate(tmp_path: Path) -> None:
    """The new rate is imposed where the schedule is: the step after a checkpoint at step 2 of a 4-step
    warm-up runs at half the new rate (and is logged so), not at the full rate for one step."""
    store = Store(tmp_path / "store")
    first = RunSpec(name="warm-run", task="arith_b", steps=4, batch_size=16, warmup_steps=4, save_steps=2)
    run(first, store, tmp_path / "work")
    resumed = first.model_copy(update={"learning_rate": 1e-4, "steps": 6, "save_steps": None})
    result = run(resumed, store, tmp_path / "work2", resume_from=tmp_path / "work" / "checkpoint-2")
    steps = store.steps(result.run_id)
    assert list(steps["step"]) == [3, 4, 5, 6]
    assert steps["learning_rate"].tolist() == pytest.approx([1e-4 * k for k in (2 / 4, 3 / 4, 1, 1)])


@pytest.mark.slow
def test_runner_takes_any_hf_causal_lm(tmp_path: Path) -> None:
    """A GPT-2 architecture (not the testbed's Llama) built in code and saved like a hub model."""
    tokenizer = build_tokenizer()
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    folder = tmp_path / "gpt2-tiny"
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    store = Store(tmp_path / "store")
    spec = RunSpec(name="gpt2", task="arith_a", steps=2, batch_size=8, model=str(folder))
    result = run(spec, store, tmp_path / "work")
    assert result.steps == 2
    assert store.manifest(result.run_id).model == str(folder)


class _Probe(TrainerHook):
    """A hook that is no fault: pays every completion, labels every row, reports one setting."""

    name = "probe"

    def __init__(self) -> None:
        self.run: RunContext | None = None
        self.trainer: Any = None

    def wrap_reward(self, fn: RewardFn) -> RewardFn:
        @functools.wraps(fn)
        def paid(completions: list[Any], **kwargs: Any) -> list[float]:
            return [1.0] * len(completions)

        return paid

    def install(self, trainer: Any, run: RunContext) -> None:
        self.trainer, self.run = trainer, run

    def settings(self) -> dict[str, Any]:
        return {"paid": 1.0}

    def label_columns(self, n: int) -> dict[str, list]:
        return {"fault_injected": [True] * n, "not_a_trajectory_column": [0] * n}


@pytest.mark.slow
def test_runner_applies_every_part_of_a_hook(tmp_path: Path) -> None:
    store, probe = Store(tmp_path / "store"), _Probe()
    spec = RunSpec(name="probe", task="arith_b", steps=2, batch_size=8, seed=3)
    result = run(spec, store, tmp_path / "work", hooks=[probe])
    assert probe.run == RunContext(task="arith_b", seed=3, num_generations=4)  # no tool: no calculator
    assert probe.trainer is not None
    traj = store.trajectories(result.run_id)
    assert (traj["reward"] == 1.0).all() and traj["fault_injected"].all()
    assert "not_a_trajectory_column" not in traj.columns
    manifest = store.manifest(result.run_id)
    assert manifest.config["probe/paid"] == 1.0 and manifest.label == "control"


class _PaysStopping(TrainerHook):
    """A trivially learnable reward: 1 for a completion of at most three characters (it stopped early)."""

    name = "stop"

    def wrap_reward(self, fn: RewardFn) -> RewardFn:
        def short(completions: list[Any], **kwargs: Any) -> list[float]:
            return [1.0 if len(str(c)) <= 3 else 0.0 for c in completions]

        return short


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_a_trivially_learnable_reward_rises_under_the_runner(tmp_path: Path) -> None:
    """Guards the policy-gradient path (reward → advantages → loss → optimizer → sampling): if any link
    breaks, a reward that one decision earns stops rising."""
    store = Store(tmp_path / "store")
    spec = RunSpec(name="stop", task="arith_a", steps=16, batch_size=32, learning_rate=3e-4, eval_every=100)
    result = run(spec, store, tmp_path / "work", hooks=[_PaysStopping()])
    reward = store.steps(result.run_id)["reward"].tolist()
    assert _mean(reward[-4:]) - _mean(reward[:4]) >= 0.2, reward


@pytest.mark.slow
def test_a_healthy_default_run_learns(tmp_path: Path) -> None:
    """`rftfm testbed train`'s defaults: training reward and held-out accuracy both rise clearly."""
    store = Store(tmp_path / "store")
    result = run(RunSpec(name="healthy"), store, tmp_path / "work")
    reward = store.steps(result.run_id)["reward"].tolist()
    assert _mean(reward[-3:]) - _mean(reward[:3]) >= 0.2, reward
    assert result.heldout[-1][1] - result.heldout[0][1] >= 0.1, result.heldout
