"""Logs as other people's jobs leave them: killed mid-write, numpy reprs, several runs in one file, an SFT
phase before RL, no step key, noise between metric lines, trainers with their own key names. Fixtures are
written here, by hand, one per case; the bad-input cases that must still fail do so in one clear line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rftfm_agent.cli import app
from rftfm_agent.errors import InputError, RftfmError
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.store import Store
from rftfm_agent.telemetry.vocabulary import map_row


def _steps(run: importers.ImportedRun) -> dict[int, dict[str, float]]:
    return {s.step: s.values for s in run.steps}


def _error(path: Path) -> str:
    with pytest.raises(InputError) as info:
        importers.load(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def _hf_dict(step: int, reward: float, **extra: object) -> str:
    row = {"loss": 0.01 * step, "grad_norm": 0.3, "learning_rate": 1e-6, "reward": reward, "kl": 0.001 * step}
    row.update(extra)
    return (
        "{"
        + ", ".join(f"'{k}': {v!r}" if not isinstance(v, str) else f"'{k}': {v}" for k, v in row.items())
        + "}"
    )


# ------------------------------------------------------------------------------------------- truncation
def test_truncated_jsonl_keeps_the_complete_lines(tmp_path: Path) -> None:
    lines = [json.dumps({"step": i, "reward": 0.1 * i, "kl": 0.01}) for i in range(1, 6)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(lines) + '\n{"step": 6, "reward": 0.')
    (run,) = importers.load(path)
    assert run.source.format == "jsonl_metrics" and sorted(_steps(run)) == [1, 2, 3, 4, 5]
    assert any("truncated" in n for n in run.source.notes)


def test_corrupt_jsonl_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    lines = [json.dumps({"step": i, "reward": 0.1 * i, "kl": 0.01}) for i in range(1, 6)]
    lines[2] = lines[2][:-5]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert "corrupt JSONL at line 3" in _error(path)


def test_corrupt_console_dict_with_complete_ones_after_it_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_text(f"{_hf_dict(1, 0.1)}\n{{'loss': 0.2, 'reward': [0.3,\n{_hf_dict(3, 0.3)}\n")
    assert "corrupt" in _error(path)


# ------------------------------------------------------------------------------------- numpy / torch
def test_numpy_and_torch_reprs_are_numbers(tmp_path: Path) -> None:
    verl = tmp_path / "verl.log"
    verl.write_text(
        "step:1 - actor/kl_loss:np.float64(0.0) - actor/grad_norm:np.float32(1.5) - critic/score/mean:0.25\n"
        "step:2 - actor/kl_loss:np.float64(0.001) - actor/grad_norm:np.float64(nan) - critic/score/mean:0.5\n"
    )
    (run,) = importers.load(verl)
    steps = _steps(run)
    assert steps[1]["actor/kl_loss"] == 0.0 and steps[1]["actor/grad_norm"] == 1.5
    assert math.isnan(steps[2]["actor/grad_norm"])
    hf = tmp_path / "hf.log"
    hf.write_text(
        "{'loss': np.float64(0.5), 'reward': tensor(0.25, device='cuda:0'), 'kl': tensor([0.01]), "
        "'grad_norm': numpy.float32(2.0), 'epoch': 0.1}\n"
        "{'loss': np.float64(0.4), 'reward': tensor(0.5), 'kl': tensor(nan), 'grad_norm': 1.0, "
        "'epoch': 0.2}\n"
    )
    (run,) = importers.load(hf)
    rows = list(_steps(run).values())
    assert rows[0] == {"loss": 0.5, "reward": 0.25, "kl": 0.01, "grad_norm": 2.0, "epoch": 0.1}
    assert math.isnan(rows[1]["kl"])


# ------------------------------------------------------------------------------- several runs in a file
def test_jsonl_with_two_runs_appended_is_split(tmp_path: Path) -> None:
    first = [{"step": i, "reward": 0.1 * i, "kl": 0.01} for i in range(1, 8)]
    second = [{"step": i, "reward": 0.2, "kl": 0.02} for i in range(1, 5)]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in first + second) + "\n")
    runs = importers.load(path)
    assert [r.name for r in runs] == ["train-run1", "train-run2"]
    assert sorted(_steps(runs[0])) == list(range(1, 8)) and sorted(_steps(runs[1])) == [1, 2, 3, 4]
    assert "run 2 of 2" in " ".join(runs[1].source.notes)
    store = Store(tmp_path / "store")
    ids = [store.write_run(r)[0].run_id for r in runs]
    assert len(set(ids)) == 2  # two runs, not one merged or one taken for a re-import of the other


def test_a_resume_from_a_checkpoint_stays_one_run(tmp_path: Path) -> None:
    path = tmp_path / "verl.log"
    lines = [f"step:{s} - critic/score/mean:{0.1 * s:.3f} - actor/grad_norm:1.0" for s in range(1, 9)]
    lines += [
        f"step:{s} - critic/score/mean:{0.1 * s + 0.05:.3f} - actor/grad_norm:1.0" for s in range(6, 12)
    ]
    path.write_text("\n".join(lines) + "\n")
    (run,) = importers.load(path)
    steps = _steps(run)
    assert sorted(steps) == list(range(1, 12)) and steps[6]["critic/score/mean"] == 0.65  # later wins
    assert any("resumed" in n for n in run.source.notes)


def test_verl_log_with_a_relaunch_is_split(tmp_path: Path) -> None:
    path = tmp_path / "verl.log"
    job = [f"step:{s} - critic/score/mean:0.5 - actor/grad_norm:1.0" for s in range(0, 5)]
    path.write_text("\n".join(job + job) + "\n")
    assert [r.name for r in importers.load(path)] == ["verl-run1", "verl-run2"]


def test_console_log_with_two_runs_and_progress_bars_is_split(tmp_path: Path) -> None:
    def job(n: int) -> str:
        parts = []
        for s in range(1, n + 1):
            parts.append(f" {100 * s // n}%|##| {s}/{n} [00:01<00:01, 1.0s/it]")
            parts.append(_hf_dict(s, 0.1 * s))
        return "\n".join(parts)

    path = tmp_path / "two.log"
    path.write_text(job(5) + "\n" + job(5) + "\n")
    runs = importers.load(path)
    assert [r.name for r in runs] == ["two-run1", "two-run2"]
    assert all(sorted(_steps(r)) == [1, 2, 3, 4, 5] for r in runs)


# ------------------------------------------------------------------------------------- SFT, then RL
def test_sft_rows_before_rl_rows_become_their_own_run(tmp_path: Path) -> None:
    sft = [
        f" {s * 25}%|##| {s}/4 [00:01<00:01]\n{{'loss': {2.0 - 0.1 * s}, 'grad_norm': 3.0, "
        f"'learning_rate': 2e-5, 'epoch': {0.25 * s}}}"
        for s in range(1, 5)
    ]
    rl = [f" {s * 10}%|##| {s}/10 [00:01<00:01]\n{_hf_dict(s, 0.1 * s)}" for s in range(1, 11)]
    path = tmp_path / "pipeline.log"
    path.write_text("\n".join(sft + rl) + "\n")
    runs = {r.name: r for r in importers.load(path)}
    assert set(runs) == {"pipeline-sft", "pipeline"}
    assert (
        sorted(_steps(runs["pipeline-sft"])) == [1, 2, 3, 4]
        and "reward" not in _steps(runs["pipeline-sft"])[1]
    )
    assert sorted(_steps(runs["pipeline"])) == list(range(1, 11))
    assert runs["pipeline"].source.framework == "trl"


# --------------------------------------------------------------------------- no step key, noisy lines
def test_logging_every_n_steps_without_a_step_key_uses_the_progress_bar(tmp_path: Path) -> None:
    parts = []
    for s in range(1, 21):
        parts.append(f" {5 * s}%|##| {s}/20 [00:01<00:01]")
        if s % 5 == 0:
            parts.append(_hf_dict(s, 0.01 * s))
    path = tmp_path / "every5.log"
    path.write_text("\n".join(parts) + "\n")
    (run,) = importers.load(path)
    assert sorted(_steps(run)) == [5, 10, 15, 20]
    assert any("progress bar" in n for n in run.source.notes)


def test_prefixes_prompt_dumps_and_tracebacks_between_metric_lines(tmp_path: Path) -> None:
    path = tmp_path / "noisy.log"
    path.write_text(
        "[rank0]: " + _hf_dict(1, 0.1) + "\n"
        "Prompt: {'role': 'user', 'content': 'What is 2+2? {answer}'}\n"
        'Traceback (most recent call last):\n  File "reward.py", line 3, in f\nValueError: bad answer\n'
        "2026-01-01 10:00:00 INFO " + _hf_dict(2, 0.2) + "\n"
        "\x1b[32m(main pid=1)\x1b[0m " + _hf_dict(3, 0.3) + "\n"
    )
    (run,) = importers.load(path)
    assert [v["reward"] for v in _steps(run).values()] == [0.1, 0.2, 0.3]


def test_generic_jsonl_without_a_step_key_uses_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "custom.jsonl"
    path.write_text("\n".join(json.dumps({"mean_reward": 0.1 * i, "kl_div": 0.01 * i}) for i in range(1, 5)))
    (run,) = importers.load(path)
    assert sorted(_steps(run)) == [1, 2, 3, 4] and any("line numbers" in n for n in run.source.notes)
    store = Store(tmp_path / "store")
    manifest, _ = store.write_run(run)
    assert {"reward", "kl"} <= set(store.steps(manifest.run_id).columns)  # common custom names are known


# ------------------------------------------------------------------------------------ user key mapping
def test_user_key_map_renames_before_the_vocabulary(tmp_path: Path) -> None:
    path = tmp_path / "custom.jsonl"
    path.write_text(
        "\n".join(json.dumps({"iteration": i, "avg_score": 0.1 * i, "pol_kl": 0.01}) for i in range(1, 4))
    )
    (plain,) = importers.load(path)
    (mapped,) = importers.load(path, {"avg_score": "reward", "pol_kl": "kl"})
    assert set(_steps(mapped)[1]) == {"reward", "kl"} and any("renamed" in n for n in mapped.source.notes)
    assert mapped.source.sha256 != plain.source.sha256  # another mapping is not the same import
    with pytest.raises(InputError, match="does not have: typo"):
        importers.load(path, {"typo": "reward"})
    with pytest.raises(RftfmError, match="KEY=METRIC"):
        importers.parse_key_map(["avg_score"])


def test_cli_ingest_with_map_and_detect_and_diagnose_take_a_path(tmp_path: Path) -> None:
    path = tmp_path / "custom.jsonl"
    rows = [{"iteration": i, "avg_score": 0.0, "reward_sd": 0.0, "pol_kl": 0.001} for i in range(1, 61)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    store = str(tmp_path / "store")
    runner = CliRunner()
    maps = ["--map", "avg_score=reward", "--map", "reward_sd=reward_std", "--map", "pol_kl=kl"]
    result = runner.invoke(app, ["detect", str(path), "--store", store, "--json", *maps])
    assert result.exit_code == 0, result.output
    (verdict,) = json.loads(result.stdout)
    assert verdict["verdict"] == "anomalous"
    assert {"no_signal_most_steps", "reward_never_changes"} <= {e["kind"] for e in verdict["events"]}
    result = runner.invoke(app, ["diagnose", str(path), "--store", store, "--json", *maps])
    assert result.exit_code == 0, result.output
    assert "no learning signal" in json.loads(result.stdout)["symptom"]
    bad = runner.invoke(app, ["ingest", str(path), "--store", store, "--map", "nope"])
    assert bad.exit_code == 1 and "KEY=METRIC" in bad.output


def test_csv_of_metrics_without_a_step_column_uses_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("reward,kl,loss\n0.1,0.01,0.5\n0.2,0.02,0.4\n0.3,0.03,0.3\n")
    (run,) = importers.load(path)
    assert sorted(_steps(run)) == [1, 2, 3] and _steps(run)[2]["kl"] == 0.02
    assert any("row numbers" in n for n in run.source.notes)
    people = tmp_path / "people.csv"  # no step column and no metric a trainer logs: not a training log
    people.write_text("name,city,age\nAda,London,36\nAlan,Wilmslow,41\n")
    assert "unknown format" in _error(people)


def test_the_same_log_given_twice_in_one_ingest_is_stored_once(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps({"step": i, "reward": 0.1 * i, "kl": 0.01}) for i in range(1, 5)))
    store = tmp_path / "store"
    result = CliRunner().invoke(app, ["ingest", str(path), str(path), "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    assert [r["outcome"] for r in json.loads(result.stdout)["runs"]] == ["new"]
    assert Store(store).run_ids() == ["m"]


def test_skip_bad_leaves_a_bad_metrics_line_out_and_counts_it(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"step": s, "reward": 0.1 * s, "kl": 0.01}) for s in range(1, 6)]
    path.write_text("\n".join([*rows[:2], '{"step": 3, "reward": 0.3,', *rows[3:]]) + "\n")
    with pytest.raises(InputError, match="line 3"):
        importers.load(path)
    (run,) = importers.load(path, skip_bad=True)
    assert [s.step for s in run.steps] == [1, 2, 4, 5]
    assert any("1 malformed row(s) of metrics.jsonl" in n and "line 3" in n for n in run.source.notes)


def _bar(n: int, total: int = 60) -> str:
    return f"\r{100 * n // total:3d}%|##        | {n}/{total} [00:02<00:04,  9.04it/s]"


def _progress_log(logged: list[int], shown: dict[int, int] | None = None, prefix: str = "") -> str:
    """A console log as HF's ProgressCallback writes it: the bar each step (`shown` maps a step to the
    stale count tqdm left on screen), and each dict printed by `tqdm.write`, which redraws the bar with the
    count at logging time right after it."""
    out = []
    for step in range(1, max(logged) + 1):
        out.append(prefix + _bar((shown or {}).get(step, step)))
        if step in logged:
            out.append("\n" + prefix + _hf_dict(step, 0.01 * step, epoch=step / 200) + "\n")
            out.append(prefix + _bar(step))
    return "".join(out) + "\n"


def test_steps_come_from_the_bar_tqdm_redraws_after_each_dict(tmp_path: Path) -> None:
    """tqdm redraws at most every 0.1 s, so the bar before a dict can lag (fast steps, or the jump on a
    resume): its values landed one logging interval early. The bar `tqdm.write` redraws right after the
    dict is exact and is taken where the dicts' epoch agrees with it; a log without that redraw keeps the
    bar before (`test_logging_every_n_steps_without_a_step_key_uses_the_progress_bar`)."""
    stale = {s: s - 2 for s in range(10, 61, 10)}  # the bar on screen before every other dict is 2 behind
    path = tmp_path / "fast.log"
    path.write_text(_progress_log(list(range(5, 61, 5)), stale))
    (run,) = importers.load(path)
    assert sorted(_steps(run)) == list(range(5, 61, 5))
    assert _steps(run)[10]["reward"] == 0.1 and "redrawn after" in "; ".join(run.source.notes)

    # Launched with `torchrun --tee 3`: every line behind a `[default0]:` prefix.
    path = tmp_path / "torchrun.log"
    path.write_text(_progress_log(list(range(5, 61, 5)), prefix="[default0]:"))
    (run,) = importers.load(path)
    assert sorted(_steps(run)) == list(range(5, 61, 5)) and _steps(run)[20]["reward"] == 0.2

    # A resume from checkpoint-30 appended to the log of a job that died at step 37: a new bar starts,
    # step 35 is logged again; one run, later values kept (it was row numbers for every step).
    first = _progress_log(list(range(5, 36, 5)))[:-1] + _bar(36) + _bar(37) + "\nKilled\n"
    second = "Resuming training from checkpoint outputs/checkpoint-30\n" + _bar(0) + _bar(30)
    second += "".join(
        _bar(s) + ("\n" + _hf_dict(s, 0.02 * s, epoch=s / 200) + "\n" + _bar(s) if s % 5 == 0 else "")
        for s in range(31, 61)
    )
    path = tmp_path / "appended.log"
    path.write_text(first + second + "\n")
    (run,) = importers.load(path)
    assert sorted(_steps(run)) == list(range(5, 61, 5))
    assert _steps(run)[30]["reward"] == 0.3 and _steps(run)[35]["reward"] == pytest.approx(0.7)  # resumed
    assert any("1 step(s) logged twice (resumed from a checkpoint), first 35" in n for n in run.source.notes)


def test_json_lines_with_nested_groups_of_numbers_are_metrics(tmp_path: Path) -> None:
    """Custom trainers log per-function rewards as a nested group (`"rewards": {"accuracy": 0.5}`) and
    W&B history rows carry W&B's own `_wandb` record: such files were "unknown format" (or, with a `step`
    key, taken for an RFT-FaultBench step file, the nested rewards dropped without a word)."""
    for key in ("iteration", "step"):
        path = tmp_path / f"custom-{key}.jsonl"
        rows = [
            {key: s, "reward": 0.1 * s, "rewards": {"accuracy": 0.5, "format": {"strict": 0.9}}}
            for s in (1, 2)
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run,) = importers.load(path)
        assert run.source.format == "jsonl_metrics", key
        assert _steps(run)[2] == {"reward": 0.2, "rewards/accuracy": 0.5, "rewards/format/strict": 0.9}
        assert any("flattened to group/name keys: rewards" in n for n in run.source.notes)
    history = tmp_path / "wandb-history.jsonl"
    rows = [
        {"train/reward": 0.5, "train/global_step": 10 * s, "_step": s, "_wandb": {"runtime": s}}
        for s in (1, 2)
    ]
    history.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run,) = importers.load(history)
    assert sorted(_steps(run)) == [10, 20] and "_wandb/runtime" not in _steps(run)[10]
    text = tmp_path / "dataset.jsonl"  # text nested in a row: a dataset, not metrics
    text.write_text(
        "".join(json.dumps({"id": i, "score": 0.5, "meta": {"source": "web"}}) + "\n" for i in (1, 2))
    )
    with pytest.raises(InputError, match="unknown format"):
        importers.load(text)


def test_unsloth_banner_log_history_list_and_wandb_eval_names(tmp_path: Path) -> None:
    """Three shapes users share that were read poorly: an Unsloth console log without a progress bar
    (its banner's `Total steps = 60` gives steps from epochs; it was row numbers), the log_history list
    saved alone (`json.dump(trainer.state.log_history, f)`: unknown format), and HF's eval_reward as W&B
    and TensorBoard name it (`eval/reward`, which stayed apart from eval/score)."""
    from rftfm_agent.telemetry.vocabulary import resolve

    banner = "==((====))==  Unsloth - 2x faster free finetuning | Num GPUs used = 1\n"
    banner += "   \\\\   /|    Num examples = 1,200 | Num Epochs = 1 | Total steps = 60\n"
    path = tmp_path / "unsloth.log"
    path.write_text(banner + "".join(_hf_dict(s, 0.1, epoch=s / 60) + "\n" for s in range(5, 61, 5)))
    (run,) = importers.load(path)
    assert sorted(_steps(run)) == list(range(5, 61, 5)) and run.config["max_steps"] == 60

    path = tmp_path / "log_history.json"
    path.write_text(json.dumps([{"loss": 0.5, "step": 10, "epoch": 0.1}, {"eval_loss": 0.4, "step": 10}]))
    (run,) = importers.load(path)
    assert run.source.format == "trl_trainer_state" and _steps(run) == {
        10: {"loss": 0.5, "epoch": 0.1, "eval_loss": 0.4}
    }
    path.write_text(json.dumps([{"step": 1, "loss": 0.5}, 3]))
    with pytest.raises(InputError, match="not all objects: not a log_history"):
        importers.load(path)
    assert resolve("eval/reward")[0] == resolve("eval_reward")[0] == "eval/score"


def test_a_trainer_output_folder_with_checkpoints_is_one_run(tmp_path: Path) -> None:
    """A Trainer saves trainer_state.json in every checkpoint-<step>/ folder, each the history up to then:
    an output folder gave overlapping runs named trainer_state, trainer_state-2, …. Now one run, from the
    longest history, named after the folder; two jobs' folders are two runs named after theirs."""
    history = [{"step": s, "loss": 0.5 - 0.01 * s, "epoch": s / 100} for s in range(5, 151, 5)]
    out = tmp_path / "grpo-out"
    for step in (50, 100, 150):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        state = {"global_step": step, "log_history": [r for r in history if r["step"] <= step]}
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps(state))
        (out / f"checkpoint-{step}" / "rng_state.pth").write_bytes(b"\x80\x02binary")
    (run,) = importers.load(out)
    assert run.name == "grpo-out" and sorted(_steps(run)) == list(range(5, 151, 5))
    assert any("2 earlier checkpoint state(s) of the same history left out" in n for n in run.source.notes)
    (run,) = importers.load(out / "checkpoint-100")  # a checkpoint folder given itself (it raised)
    assert run.name == "checkpoint-100" and max(_steps(run)) == 100
    jobs = tmp_path / "sweep"
    for job, loss in (("lr1e-6", 0.5), ("lr3e-6", 0.4)):
        (jobs / job).mkdir(parents=True)
        rows = [{"step": s, "loss": loss} for s in (1, 2)]
        (jobs / job / "trainer_state.json").write_text(json.dumps({"log_history": rows}))
    assert sorted(r.name for r in importers.load(jobs)) == ["lr1e-6", "lr3e-6"]


def test_an_openrlhf_console_log_is_read_from_its_episode_bar(tmp_path: Path) -> None:
    """OpenRLHF prints its metrics only as the postfix of its episode bar (`pbar.set_postfix(status)`,
    then `pbar.update()`); a run without W&B has nothing else. Written here by tqdm itself, as the
    trainer drives it, with the inner `Train epoch` bars between; it was unknown format."""
    import io

    from tqdm import tqdm

    out = io.StringIO()
    expected = {}
    for episode in (1, 2):
        bar = tqdm(range(5), desc=f"Episode [{episode}/2]", file=out, mininterval=0)
        for count in range(5):
            inner = tqdm(range(2), desc="Train epoch [1/1]", file=out, mininterval=0)
            for _ in inner:
                inner.set_postfix({"pg": 0.5, "rm": 9.0, "glen": 300})
            inner.close()
            step = (episode - 1) * 5 + count + 1
            status = {
                "policy_loss": -0.01 * step,
                "kl": 0.001 * step,
                "reward": 0.1 * step,
                "response_length": 200 + step,
            }
            bar.set_postfix(status)
            bar.update()
            expected[step] = {k: float(f"{v:.3g}") for k, v in status.items()}
        bar.close()
    path = tmp_path / "train_ppo.log"
    path.write_text(out.getvalue())
    (run,) = importers.load(path)
    assert run.source.format == "openrlhf_console" and run.source.framework == "openrlhf"
    assert _steps(run) == expected  # the inner bars' pg / rm / glen are not read

    # Newer trainers start the bar at the global step (`tqdm(initial=steps)`, steps from 1): the count is
    # the step (it was read one step late); a job resumed at step 4 into the same log re-logs steps 4-5.
    out = io.StringIO()
    for start in (1, 4):
        bar = tqdm(range(5), desc="Episode [1/1]", file=out, mininterval=0, initial=start)
        for step in range(start, 6):
            bar.set_postfix({"policy_loss": 0.1, "reward": 0.1 * step + (0.05 if start > 1 else 0)})
            bar.update()
        bar.close()
    path.write_text(out.getvalue())
    (run,) = importers.load(path)
    assert sorted(_steps(run)) == [1, 2, 3, 4, 5] and _steps(run)[2]["reward"] == 0.2
    assert _steps(run)[5]["reward"] == 0.55 and any("logged twice" in n for n in run.source.notes)


def test_an_evaluation_before_training_is_kept_at_step_0(tmp_path: Path) -> None:
    """The Trainer's `eval_on_start` prints an eval dict before any training dict: it was dropped
    without a word; it is the initial model's evaluation, at step 0."""
    path = tmp_path / "evalstart.log"
    text = "{'eval_loss': 0.5, 'eval_reward': 0.25, 'epoch': 0.0}\n"
    text += "".join(f" {s * 33}%|##| {s}/3 [00:01<00:01]\n" + _hf_dict(s, 0.1 * s) + "\n" for s in (1, 2, 3))
    path.write_text(text)
    (run,) = importers.load(path)
    assert _steps(run)[0] == {"eval_loss": 0.5, "eval_reward": 0.25, "epoch": 0.0}
    assert any("evaluation logged before the first training step is at step 0" in n for n in run.source.notes)


def test_a_callback_printing_the_logs_does_not_double_the_steps(tmp_path: Path) -> None:
    """A user's `on_log` that prints `[step N] {logs}` repeats each dict (with the epoch unrounded, where
    the Trainer prints 2 digits): each step once, from the bar (it was every dict a row number)."""
    out = []
    for step in range(1, 61):
        out.append(_bar(step))
        if step % 5 == 0:
            trainer = _hf_dict(step, 0.01 * step, epoch=round(step / 120, 2))
            user = _hf_dict(step, 0.01 * step, epoch=step / 120)
            out.append(f"\n{trainer}\n[step {step}] {user}\n" + _bar(step))
    path = tmp_path / "printed.log"
    path.write_text("".join(out) + "\n")
    (run,) = importers.load(path)
    assert sorted(_steps(run)) == list(range(5, 61, 5))
    assert _steps(run)[40]["reward"] == pytest.approx(0.4)
    assert any("12 dict(s) printed twice in a row" in n for n in run.source.notes)
    # A dead run logs the same values every step (epoch rounded alike): a bar between them, two steps.
    dead = "".join(
        _bar(s) + "\n{'loss': 0.0, 'grad_norm': 0.0, 'learning_rate': 1e-06, 'reward': 0.0, 'epoch': 0.0}\n"
        for s in range(1, 61)
    )
    path = tmp_path / "dead.log"
    path.write_text(dead + _bar(60) + "\n")
    (run,) = importers.load(path)
    assert len(run.steps) == 60 and not any("twice" in n for n in run.source.notes)


def test_dicts_printed_by_every_rank_or_again_in_a_log_without_bars_are_each_step_once(
    tmp_path: Path,
) -> None:
    """`python train.py > log` keeps no bar (tqdm draws on stderr): a user's callback printing the logs, or
    every rank printing them (`[rank0]:`, `[rank1]:`, interleaved as they come), doubled every step (120
    for 60). A dead run's identical dicts (epoch rounded alike, one prefix) stay 60 steps."""

    def row(s: int, epoch: float) -> str:
        return _hf_dict(s, 0.01 * s, epoch=epoch)

    user = "".join(f"{row(s, s / 1000)}\n[step {s}] {row(s, s / 1000)}\n" for s in range(1, 61))
    ranks = "".join(
        f"[rank0]:{row(s, s / 1000)}\n" + (f"[rank1]:{row(s - 1, (s - 1) / 1000)}\n" if s > 1 else "")
        for s in range(1, 61)
    )
    dead = "{'loss': 0.0, 'grad_norm': 0.0, 'learning_rate': 1e-06, 'reward': 0.0, 'epoch': 0.0}\n" * 60
    for name, text, notes in (
        ("user.log", user, "60 dict(s) printed twice"),
        ("ranks.log", ranks, "dicts printed by 2 ranks: rank 0's kept"),
        ("dead.log", dead, None),
    ):
        path = tmp_path / name
        path.write_text(text)
        (run,) = importers.load(path)
        assert len(run.steps) == 60, name
        said = "; ".join(run.source.notes)
        assert (notes in said) if notes else ("twice" not in said and "ranks" not in said), said


def test_trl_ppo_console_dicts_start_with_eps_and_their_score_is_the_reward(tmp_path: Path) -> None:
    """TRL's PPOTrainer / RLOOTrainer print `{'eps': 5, 'objective/kl': …, 'objective/scores': …}`: the
    console reader took no dict starting with `eps` (unknown format), and the score was not the reward."""
    rows = [
        f"{{'eps': 5, 'objective/kl': {0.01 * s}, 'objective/entropy': 40.0, "
        f"'objective/scores': {1 - 0.2 * s}, 'objective/rlhf_reward': {0.9 - 0.2 * s}, 'lr': 3e-06, "
        f"'episode': {64 * s}, 'epoch': {s / 40}}}"
        for s in range(1, 11)
    ]
    path = tmp_path / "ppo.log"
    path.write_text("===training policy===\n" + "\n".join(rows) + "\n")
    (run,) = importers.load(path)
    assert run.source.format == "hf_console" and len(run.steps) == 10
    mapped = {metric: key for metric, key, _ in map_row(run.steps[0].values)}
    assert mapped["reward"] == "objective/scores" and mapped["kl"] == "objective/kl"


def test_ms_swift_and_llama_factory_json_lines_give_their_steps(tmp_path: Path) -> None:
    """ms-swift's logging.jsonl gives the step only as `"global_step/max_steps": "5/100"`, LLaMA-Factory's
    trainer_log.jsonl as `current_steps` (with `total_steps` and `percentage`): both were line numbers."""
    swift = tmp_path / "logging.jsonl"
    swift.write_text(
        "".join(
            json.dumps(
                {
                    "loss": 0.01,
                    "reward": 0.1 * s,
                    "entropy/mean": 0.6,
                    "global_step/max_steps": f"{5 * s}/100",
                    "elapsed_time": "0m 50s",
                }
            )
            + "\n"
            for s in range(1, 6)
        )
    )
    (run,) = importers.load(swift)
    assert sorted(_steps(run)) == [5, 10, 15, 20, 25]
    assert {m for m, _, _ in map_row(run.steps[0].values)} >= {"reward", "entropy"}
    factory = tmp_path / "trainer_log.jsonl"
    factory.write_text(
        "".join(
            json.dumps(
                {
                    "current_steps": 10 * s,
                    "total_steps": 200,
                    "loss": 0.3,
                    "reward": 0.2 + 0.01 * s,
                    "lr": 1e-5,
                    "epoch": 0.03 * s,
                    "percentage": 5.0 * s,
                    "elapsed_time": "0:02:00",
                }
            )
            + "\n"
            for s in range(1, 6)
        )
    )
    (run,) = importers.load(factory)
    assert sorted(_steps(run)) == [10, 20, 30, 40, 50]
    assert not {"total_steps", "percentage", "current_steps"} & set(run.steps[0].values)


def test_ms_swift_console_steps_come_from_its_train_bar(tmp_path: Path) -> None:
    """ms-swift's ProgressCallbackNew draws `tqdm(desc='Train')`: a bar with a description, which the reader
    took for another loop's, so the steps were row numbers (1…20 for 5…100)."""
    out = []
    for step in range(1, 101):
        bar = f"\rTrain: {step:3d}%|#         | {step}/100 [00:05<00:35, 10.05s/it]"
        out.append(bar)
        if step % 5 == 0:
            out.append("\n" + _hf_dict(step, 0.01 * step, epoch=step / 100) + "\n" + bar)
    path = tmp_path / "swift.log"
    path.write_text("".join(out) + "\n")
    (run,) = importers.load(path)
    assert sorted(_steps(run)) == list(range(5, 101, 5)) and _steps(run)[40]["reward"] == pytest.approx(0.4)
