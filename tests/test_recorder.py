"""The live recorder: a real (tiny, CPU) GRPO run recorded into the store, plus its building blocks."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import TrainerCallback, TrainerControl, TrainerState

from rftfm_agent.telemetry.aggregates import AGGREGATE_NAMES, aggregate_trajectories
from rftfm_agent.telemetry.recorder import RunRecorder, logged_float, message_text, token_statistics
from rftfm_agent.telemetry.store import Store

BATCH = 8
GROUP = 4
STEPS = 4
MAX_LEN = 8


# ---------------------------------------------------------------------------------------------- real run
class _CommittedWatcher(TrainerCallback):
    """Added after the recorder, so at each log it sees what the recorder has committed by then."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.recorder: RunRecorder | None = None
        self.seen: list[tuple[int, int, int, str]] = []  # (global step, steps committed, traj rows, status)

    def on_log(self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        assert self.recorder is not None and self.recorder.run_id is not None
        if "loss" not in (kwargs.get("logs") or {}):
            return
        self.recorder.wait()  # writes are asynchronous: wait for what was handed over so far
        m = self.store.manifest(self.recorder.run_id)
        self.seen.append((state.global_step, m.n_steps, m.n_trajectories, m.status))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Train the benchmark's tiny GRPO setup for 4 steps with a recorder that flushes every 2 steps."""
    from rftfm_agent.evals.bench_recorder import tiny_grpo_trainer

    tmp = tmp_path_factory.mktemp("grpo")
    store = Store(tmp / "store")
    trainer = tiny_grpo_trainer(
        tmp / "out", max_steps=STEPS, batch_size=BATCH, num_generations=GROUP, max_completion_length=MAX_LEN
    )
    recorder = RunRecorder(
        store, "tiny grpo", task="arithmetic", flush_every_steps=2, flush_every_seconds=1e9
    ).attach(trainer)
    watcher = _CommittedWatcher(store)
    watcher.recorder = recorder
    trainer.add_callback(watcher)
    trainer.train()
    return {"store": store, "recorder": recorder, "trainer": trainer, "watcher": watcher}


def test_run_is_recorded_and_finished(recorded: dict[str, Any]) -> None:
    store, recorder = recorded["store"], recorded["recorder"]
    assert recorder.errors == []
    m = store.manifest(store.resolve("tiny grpo"))
    assert m.run_id == recorder.run_id
    assert m.status == "finished"
    assert m.source.format == "rftfm_recorder" and m.source.framework == "trl"
    assert m.task == "arithmetic" and m.seed == 0
    assert m.config["learning_rate"] == pytest.approx(1e-3)
    assert m.config["beta"] == pytest.approx(0.04)
    assert m.config["num_generations"] == GROUP
    assert m.config["per_device_train_batch_size"] == BATCH
    assert m.config["max_completion_length"] == MAX_LEN
    assert m.config["reward_funcs"] == ["digit_match"]
    assert {"trl", "transformers", "torch", "rftfm"} <= set(m.versions)
    assert (m.n_steps, m.first_step, m.last_step, m.n_trajectories) == (STEPS, 1, STEPS, STEPS * BATCH)
    assert m.config["total_steps"] == STEPS  # what the scheduler was built for (the schedule check's)


def test_the_logged_rate_is_the_configured_schedule_at_each_step(recorded: dict[str, Any]) -> None:
    """What `lr_off_schedule` relies on: TRL logs base rate × the schedule's factor, at the logged step or
    the one before (transformers 5 logs the rate the step used, 4.x the one after it)."""
    from rftfm_agent.detect.schedule import LrSchedule

    store, recorder = recorded["store"], recorded["recorder"]
    schedule = LrSchedule.from_config(store.manifest(recorder.run_id).config)
    assert schedule is not None and schedule.exact
    wide = store.steps(recorder.run_id)
    for step, rate in zip(wide["step"], wide["learning_rate"], strict=True):
        used = schedule.learning_rate * (schedule.factor(int(step) - 1) or 0.0)
        after = schedule.learning_rate * (schedule.factor(int(step)) or 0.0)
        assert rate == pytest.approx(used, rel=1e-6) or rate == pytest.approx(after, rel=1e-6)
        low, high = schedule.bounds(int(step))
        assert low is not None and low * (1 - 1e-9) <= rate <= high * (1 + 1e-9)


def test_step_metrics_use_canonical_names(recorded: dict[str, Any]) -> None:
    store, recorder = recorded["store"], recorded["recorder"]
    wide = store.steps(recorder.run_id)
    assert list(wide["step"]) == list(range(1, STEPS + 1))
    for metric in ("reward", "kl", "entropy", "grad_norm", "learning_rate", "completion_length", "loss"):
        assert metric in wide.columns, metric
        assert wide[metric].notna().all(), metric
    assert store.manifest(recorder.run_id).metric_sources["completion_length"] == "completions/mean_length"
    # The end-of-training summary is not a step.
    assert not {"train_runtime", "train_loss", "train_samples_per_second"} & set(wide.columns)
    assert {"train_runtime", "train_loss"} <= set(recorder.summary)
    config = store.manifest(recorder.run_id).config
    assert config["summary/train_loss"] == recorder.summary["train_loss"]  # saved with the final commit
    assert wide["wall_time"].is_monotonic_increasing


def test_trajectories_rows_groups_and_rewards(recorded: dict[str, Any]) -> None:
    from rftfm_agent.evals.bench_recorder import digit_match

    store, recorder = recorded["store"], recorded["recorder"]
    traj = store.trajectories(recorder.run_id)
    assert len(traj) == STEPS * BATCH
    assert traj.groupby("step").size().to_dict() == dict.fromkeys(range(1, STEPS + 1), BATCH)
    assert sorted(traj["group_id"].unique()) == list(range(BATCH // GROUP))
    assert (
        traj.groupby(["step", "group_id"])["sample_index"].apply(sorted)
        == pd.Series([list(range(GROUP))] * (STEPS * BATCH // GROUP), dtype=object).set_axis(
            traj.groupby(["step", "group_id"]).size().index
        )
    ).all()
    # Each group is one prompt; advantages are normalised within the group.
    assert (traj.groupby(["step", "group_id"])["prompt"].nunique() == 1).all()
    sums = traj.groupby(["step", "group_id"])["advantage"].sum()
    assert np.allclose(sums, 0.0, atol=1e-4)
    assert np.allclose(traj["advantage_mean"], 0.0, atol=1e-5)
    # Reward per function, weighted total, and alignment of prompt / completion / reward.
    for _, row in traj.iterrows():
        rewards = dict(row["rewards"])
        assert set(rewards) == {"digit_match"}
        assert row["reward"] == pytest.approx(rewards["digit_match"])
        a, b = row["prompt"].rstrip("=").split("+")
        (expected,) = digit_match([row["completion"]], [str(int(a) + int(b))])
        assert row["reward"] == pytest.approx(expected, abs=1e-6)
    assert traj["prompt_id"].notna().all()


def test_trajectory_token_statistics_agree_with_trl(recorded: dict[str, Any]) -> None:
    store, recorder = recorded["store"], recorded["recorder"]
    traj = store.trajectories(recorder.run_id)
    wide = store.steps(recorder.run_id).set_index("step")
    mean_len = traj.groupby("step")["response_length"].mean()
    assert np.allclose(mean_len, wide.loc[mean_len.index, "completion_length"])
    assert (traj["response_length"].between(0, MAX_LEN)).all()
    # No EOS within max_completion_length tokens means the completion ran to the cap.
    assert (traj.loc[traj["truncated"], "response_length"] == MAX_LEN).all()
    assert (traj["long_response"] == (traj["response_length"] >= 0.95 * MAX_LEN)).all()
    assert (traj["short_response"] == (traj["response_length"] < 2)).all()
    assert traj["repetition_ratio"].between(0, 1).all() and traj["unique_token_ratio"].between(0, 1).all()


def test_traj_aggregates_are_in_the_step_rows(recorded: dict[str, Any]) -> None:
    store, recorder = recorded["store"], recorded["recorder"]
    wide = store.steps(recorder.run_id)
    for name in AGGREGATE_NAMES:
        if name.startswith("traj/tool_"):  # this run has no tool environment
            continue
        assert name in wide.columns, name
        assert wide[name].notna().all(), name
    assert (wide["traj/count"] == BATCH).all()
    assert np.allclose(wide["traj/reward_mean"], wide["reward"], atol=1e-6)
    assert np.allclose(wide["traj/response_length_mean"], wide["completion_length"])
    assert np.allclose(wide["traj/zero_std_group_frac"], wide["frac_reward_zero_std"])


def test_rows_are_flushed_at_the_configured_interval(recorded: dict[str, Any]) -> None:
    seen = recorded["watcher"].seen
    # (step, steps committed, trajectory rows committed, status) at each step's log, after the recorder.
    assert seen == [
        (1, 0, 0, "live"),
        (2, 2, 2 * BATCH, "live"),
        (3, 2, 2 * BATCH, "live"),
        (4, 4, 4 * BATCH, "live"),
    ]


def test_listeners_get_canonical_rows_and_change_no_record(recorded: dict[str, Any], tmp_path: Path) -> None:
    """The fixture's run again, with listeners.

    They see each step row as it is logged, in canonical names, traj/ aggregates included. A listener that
    raises is noted and spares training, the other listener and the records: these equal the fixture's.
    """
    from rftfm_agent.evals.bench_recorder import tiny_grpo_trainer

    store = Store(tmp_path / "store")
    trainer = tiny_grpo_trainer(
        tmp_path / "out",
        max_steps=STEPS,
        batch_size=BATCH,
        num_generations=GROUP,
        max_completion_length=MAX_LEN,
    )
    rows: list[dict[str, float]] = []

    def broken(row: dict[str, float]) -> None:
        raise RuntimeError("detector bug")

    recorder = RunRecorder(
        store,
        "tiny grpo",
        task="arithmetic",
        flush_every_steps=2,
        flush_every_seconds=1e9,
        listeners=[broken],
    )

    recorder.on_row(rows.append)
    recorder.attach(trainer)
    trainer.train()

    assert [e.split(":")[0] for e in recorder.errors] == ["listener"] * STEPS
    assert "detector bug" in recorder.errors[0]
    assert [row["step"] for row in rows] == [float(s) for s in range(1, STEPS + 1)]
    wide = store.steps(recorder.run_id).set_index("step")
    for row in rows:
        assert {"reward", "kl", "completion_length", "traj/count", "loss"} <= set(row)
        assert "completions/mean_length" not in row  # TRL's name, mapped
        assert row["traj/count"] == BATCH
        stored = wide.loc[int(row["step"])]
        for metric, value in row.items():
            if metric != "step":
                assert value == pytest.approx(stored[metric], nan_ok=True), metric

    # The same records as the run without listeners (wall-clock timings apart).
    before, ref = recorded["store"], recorded["recorder"]
    pd.testing.assert_frame_equal(_untimed_steps(store, recorder.run_id), _untimed_steps(before, ref.run_id))
    pd.testing.assert_frame_equal(store.trajectories(recorder.run_id), before.trajectories(ref.run_id))


def _untimed_steps(store: Store, run_id: str) -> pd.DataFrame:
    """A run's stored step rows (long: metric, source key, value) without wall-clock timings."""
    steps = store.steps(run_id, wide=False)
    return steps[steps["metric"] != "step_time"].drop(columns="wall_time").reset_index(drop=True)


def test_listener_rows_from_fake_trainer_keep_nan_and_unknown_keys(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    rows: list[dict[str, float]] = []
    recorder = RunRecorder(store, "fake", record_trajectories=False, flush_every_steps=100)
    recorder.on_row(rows.append)
    trainer = _FakeTrainer()
    recorder.attach(trainer)
    trainer.state.global_step = 3
    trainer._metrics["train"] = {"kl": [math.nan], "reward": [math.nan, 1.0]}
    trainer.log({"loss": 0.5, "completions/mean_length": 7.0, "my/custom": 2.0, "note": "text"})
    assert len(rows) == 1
    row = rows[0]
    assert row["step"] == 3.0 and row["completion_length"] == 7.0 and row["my/custom"] == 2.0
    assert math.isnan(row["kl"]) and row["reward"] == 1.0 and row["nan_frac/reward"] == 0.5
    assert "note" not in row and "completions/mean_length" not in row
    recorder.on_train_end(trainer.args, trainer.state, TrainerControl())
    assert recorder.errors == []


def _sometimes_unscorable(completions: list[str], **kwargs: Any) -> list[float | None]:
    """1 for a short completion, else 0; None (unscorable) for every fourth completion."""
    return [None if i % 4 == 0 else float(len(c) < 4) for i, c in enumerate(completions)]


def test_generation_reused_across_steps_two_rewards_masked_truncation(tmp_path: Path) -> None:
    """steps_per_generation > gradient_accumulation_steps: one generation trains two optimizer steps."""
    from rftfm_agent.evals.bench_recorder import digit_match, tiny_grpo_trainer

    trainer = tiny_grpo_trainer(
        tmp_path / "out",
        max_steps=4,
        batch_size=4,
        gradient_accumulation_steps=2,
        steps_per_generation=4,
        logging_steps=2,
        mask_truncated_completions=True,
        reward_weights=[1.0, 0.5],
        reward_funcs=[digit_match, _sometimes_unscorable],
    )
    store = Store(tmp_path / "s")
    recorder = RunRecorder(store, "reuse", flush_every_steps=1).attach(trainer)
    trainer.train()
    assert recorder.errors == []

    traj = store.trajectories(recorder.run_id)
    assert traj.groupby("step").size().to_dict() == {1: 16, 3: 16}  # generated before steps 1 and 3
    rewards = pd.DataFrame([dict(r) for r in traj["rewards"]])
    assert rewards["_sometimes_unscorable"].isna().sum() == 8  # None kept as NaN per function
    expected = rewards["digit_match"] + 0.5 * rewards["_sometimes_unscorable"].fillna(0.0)
    assert np.allclose(traj["reward"], expected)
    # Truncated completions had their mask zeroed by TRL; their length is recovered all the same.
    assert (traj.loc[traj["truncated"], "response_length"] == MAX_LEN).all()

    wide = store.steps(recorder.run_id)
    assert list(wide["step"]) == [2, 4]
    assert (wide["traj/count"] == 16).all()
    assert np.allclose(wide["traj/reward_mean"], wide["reward"], atol=1e-6)
    assert np.allclose(wide["traj/response_length_mean"], wide["completion_length"])


# ---------------------------------------------------------------------------------------------- no training
class _FakeTrainer:
    """Just enough of a Trainer for `attach()`: TRL's log() NaN filtering and the on_log call."""

    def __init__(self) -> None:
        self.args = SimpleNamespace(learning_rate=1e-6, beta=0.0, num_generations=8, seed=3)
        self.model = SimpleNamespace(training=True, config=SimpleNamespace(name_or_path="tiny/model"))
        self.state = TrainerState()
        self.callbacks: list[Any] = []
        self._metrics: dict[str, dict[str, list[float]]] = {"train": {}, "eval": {}}

    def add_callback(self, callback: Any) -> None:
        self.callbacks.append(callback)

    def is_world_process_zero(self) -> bool:
        return True

    def log(self, logs: dict[str, Any]) -> None:
        for key, window in self._metrics["train"].items():  # as TRL 1.16: NaNs dropped, None if all NaN
            valid = [v for v in window if not math.isnan(v)]
            logs[key] = sum(valid) / len(valid) if valid else None
        self._metrics["train"] = {}
        for cb in self.callbacks:
            cb.on_log(self.args, self.state, TrainerControl(), logs=logs)


def test_nan_none_inf_and_summary_row(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    recorder = RunRecorder(store, "fake", record_trajectories=False, flush_every_steps=100)
    trainer = _FakeTrainer()
    recorder.attach(trainer)
    assert store.manifest(recorder.run_id).status == "live"
    assert store.manifest(recorder.run_id).model == "tiny/model"
    trainer.state.global_step = 1
    trainer._metrics["train"] = {"kl": [math.nan, math.nan], "entropy": [math.inf], "reward": [math.nan, 1.0]}
    trainer.log({"loss": 0.5, "grad_norm": math.nan, "note": "text is skipped"})
    trainer.state.global_step = 2
    trainer._metrics["train"] = {"kl": [0.1], "entropy": [2.0], "reward": [0.5]}
    trainer.log({"loss": 0.4, "grad_norm": 1.0})
    trainer.log({"train_runtime": 1.0, "train_loss": 0.45, "train_samples_per_second": 3.0, "epoch": 1.0})
    recorder.on_train_end(trainer.args, trainer.state, TrainerControl())
    assert recorder.errors == []

    m = store.manifest(recorder.run_id)
    assert m.status == "finished" and m.n_steps == 2 and m.seed == 3
    wide = store.steps(recorder.run_id).set_index("step")
    assert math.isnan(wide.loc[1, "kl"])  # TRL's None (all NaN) → NaN
    assert math.isnan(wide.loc[1, "grad_norm"])
    assert wide.loc[1, "entropy"] == math.inf
    assert wide.loc[1, "reward"] == 1.0  # TRL averaged the NaN away …
    assert wide.loc[1, "nan_frac/reward"] == 0.5  # … the recorder still says half the window was NaN
    assert wide.loc[1, "nan_frac/kl"] == 1.0
    assert math.isnan(wide.loc[2, "nan_frac/kl"])  # no NaN at step 2: not logged
    assert "note" not in wide.columns and "train_runtime" not in wide.columns
    assert recorder.summary == {"train_runtime": 1.0, "train_loss": 0.45, "train_samples_per_second": 3.0}


def test_attach_observes_the_batch_pipeline_or_warns_without_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from rftfm_agent.telemetry.trl_batch import has_batch_method

    class _BatchTrainer(_FakeTrainer):
        def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
            return {}

    with_batch = _BatchTrainer()
    recorder = RunRecorder(Store(tmp_path / "a"), "with batch").attach(with_batch)
    assert list(with_batch._rftfm_batch_pipeline.observers) == [recorder]  # an observer, keyed by recorder

    plain = _FakeTrainer()
    assert not has_batch_method(plain)
    with caplog.at_level("WARNING", logger="rftfm_agent.telemetry.recorder"):
        recorder = RunRecorder(Store(tmp_path / "b"), "no batch").attach(plain)
    assert "recording step metrics only" in caplog.text
    plain.state.global_step = 1
    plain.log({"loss": 0.5})
    recorder.on_train_end(plain.args, plain.state, TrainerControl())
    assert recorder.store.manifest(recorder.run_id).n_steps == 1 and recorder.errors == []


def test_recorder_without_attach_records_steps(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    recorder = RunRecorder(store, "plain callback", seed=7)
    args = SimpleNamespace(learning_rate=2e-6, max_completion_length=64)
    state = TrainerState()
    recorder.on_train_begin(args, state, TrainerControl())
    state.global_step = 1
    recorder.on_log(args, state, TrainerControl(), logs={"loss": 1.0, "rewards/acc/mean": 0.25})
    recorder.on_train_end(args, state, TrainerControl())
    m = store.manifest(recorder.run_id)
    assert m.status == "finished" and m.seed == 7 and m.config["max_completion_length"] == 64
    assert store.steps(recorder.run_id)["rewards/acc/mean"].tolist() == [0.25]


# ---------------------------------------------------------------------------------------------- pieces
def test_aggregate_trajectories_known_answers() -> None:
    df = pd.DataFrame(
        {
            "step": [5] * 6,
            "group_id": [0, 0, 0, 1, 1, 1],
            "reward": [1.0, 0.0, np.nan, 0.5, 0.5, 0.5],
            "advantage": [1.0, -1.0, 0.0, 0.0, 0.0, 0.0],
            "response_length": [10, 20, 30, 0, 40, 20],
            "truncated": [True, False, False, False, True, None],
            "empty_response": [False, False, False, True, False, False],
            "short_response": [False, False, False, True, False, False],
            "long_response": [False, False, True, False, True, False],
            "repetition_ratio": [0.0, 0.5, 1.0, 0.0, 0.25, 0.25],
            "unique_token_ratio": [1.0, 0.5, 0.0, 0.0, 1.0, 0.5],
        }
    )
    agg = aggregate_trajectories(df)
    expected = {
        "traj/count": 6.0,
        "traj/reward_mean": 2.5 / 5,
        "traj/advantage_abs_mean": 2.0 / 6,
        "traj/response_length_mean": 120 / 6,
        "traj/truncated_frac": 2 / 5,  # the null is left out
        "traj/empty_frac": 1 / 6,
        "traj/short_frac": 1 / 6,
        "traj/long_frac": 2 / 6,
        "traj/repetition_ratio_mean": 2.0 / 6,
        "traj/unique_token_ratio_mean": 3.0 / 6,
        "traj/zero_std_group_frac": 0.5,  # group 1 has equal rewards; group 0 does not
        "traj/reward_neg_frac": 0.0,
        "traj/advantage_group_mean_abs": 0.0,  # GRPO's baseline: advantages sum to 0 in each group
        "traj/adv_reward_discord_frac": 0.0,  # group 0's advantages run with its rewards
        "traj/advantage_group_std_mean": 2**0.5,  # std of [1, -1] (the NaN-reward row is left out)
    }
    assert agg.keys() == expected.keys()
    for key, value in expected.items():
        assert agg[key] == pytest.approx(value), key


def test_group_consistency_aggregates_catch_broken_credit() -> None:
    """Same completion, two rewards; advantages against rewards; a group that is all one text."""
    df = pd.DataFrame(
        {
            "step": [1] * 8,
            "group_id": [0, 0, 0, 0, 1, 1, 1, 1],
            "completion": ["12", "12", "13", "14", "7", "7", "7", "7"],
            "reward": [1.0, 0.0, 0.0, 0.0, -1.0, -1.0, -1.0, 0.0],
            "advantage": [-1.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, -1.5],
        }
    )
    agg = aggregate_trajectories(df)
    assert agg["traj/reward_mismatch_frac"] == 1.0  # "12" got 1 and 0; "7" got -1 and 0
    assert agg["traj/reward_neg_frac"] == 3 / 8
    assert agg["traj/adv_reward_discord_frac"] == 1.0  # both groups: advantage falls as reward rises
    assert agg["traj/distinct_completion_frac"] == pytest.approx((3 / 4 + 1 / 4) / 2)


def test_aggregate_trajectories_missing_columns_and_store_dtypes() -> None:
    assert aggregate_trajectories(pd.DataFrame()) == {"traj/count": 0.0}
    only_reward = aggregate_trajectories(pd.DataFrame({"reward": [1.0, 3.0]}))
    assert only_reward == {"traj/count": 2.0, "traj/reward_mean": 2.0, "traj/reward_neg_frac": 0.0}
    # Parquet gives object columns with None for nullable booleans; all-null columns give no key.
    df = pd.DataFrame(
        {
            "truncated": pd.Series([True, None, False, False], dtype=object),
            "empty_response": pd.Series([None] * 4, dtype=object),
            "group_id": [0, 0, 1, 1],
            "step": [1, 1, 2, 2],
            "reward": [np.nan, np.nan, 1.0, 1.0],  # an all-NaN group counts as no signal
        }
    )
    agg = aggregate_trajectories(df)
    assert agg["traj/truncated_frac"] == pytest.approx(1 / 3)
    assert "traj/empty_frac" not in agg
    assert agg["traj/zero_std_group_frac"] == 1.0


def test_token_statistics_definitions() -> None:
    eos, pad = 2, 0
    ids = torch.tensor(
        [
            [5, 6, 5, 6, 5, 6, 5, 6],  # loop, no EOS: truncated, 6 3-grams of which 2 distinct
            [7, 8, 2, 0, 0, 0, 0, 0],  # ends with EOS: 3 tokens
            [2, 0, 0, 0, 0, 0, 0, 0],  # immediate EOS
            [0, 0, 0, 0, 0, 0, 0, 0],  # nothing (all padding)
        ]
    )
    mask = torch.tensor(
        [[1] * 8, [1, 1, 1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0], [0] * 8], dtype=torch.long
    )
    stats = token_statistics(ids, mask, [eos], pad_token_id=pad)
    assert stats["response_length"] == [8, 3, 1, 0]
    assert stats["truncated"] == [True, False, False, True]
    assert stats["repetition_ratio"] == pytest.approx([1 - 2 / 6, 0.0, 0.0, 0.0])
    assert stats["unique_token_ratio"] == pytest.approx([2 / 8, 1.0, 1.0, 0.0])


def test_token_statistics_recovers_rows_masked_by_mask_truncated_completions() -> None:
    ids = torch.tensor([[4, 5, 6, 7], [4, 2, 0, 0]])
    mask = torch.tensor([[0, 0, 0, 0], [1, 1, 0, 0]])  # TRL zeroed the truncated row's mask
    plain = token_statistics(ids, mask, [2], pad_token_id=0)
    recovered = token_statistics(ids, mask, [2], pad_token_id=0, recover_masked_rows=True)
    assert plain["response_length"] == [0, 2]
    assert recovered["response_length"] == [4, 2]
    assert recovered["truncated"] == [True, False]


def test_logged_float_and_message_text() -> None:
    assert math.isnan(logged_float(None))  # type: ignore[arg-type]
    assert logged_float(torch.tensor(2.5)) == 2.5
    assert logged_float(np.float32(0.5)) == 0.5
    assert logged_float(True) == 1.0
    assert logged_float("1e-3") == 0.001
    assert logged_float("abc") is None and logged_float([1, 2]) is None
    assert message_text("12+7=") == "12+7="
    assert message_text([{"role": "user", "content": "hi"}]) == "hi"
    chat = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what?"}]},
    ]
    assert message_text(chat) == "system: be brief\nuser: what?"
