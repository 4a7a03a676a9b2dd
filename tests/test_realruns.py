"""Every real run in ../shared/realruns imports, with its steps and main metrics mapped.

The logs were written by other people with TRL, Unsloth and verl; they are read in place and never
copied into the project. Expected counts were read off the files (see their PROVENANCE.txt).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.store import Store

COMMON = {"reward", "completion_length"}
# run folder: (format, logged rows, first step, last step, main metrics that must be mapped)
EXPECTED = {
    "gemma3_1b_gsm8k_grpo": ("trl_trainer_state", 25, 10, 250, {"kl", "grad_norm", "learning_rate"}),
    "grpo_qwen35_9b_gsm8k_deadrun": ("hf_console", 50, 1, 50, {"kl", "grad_norm", "learning_rate"}),
    "grpo_qwen35_9b_gsm8k_flat": ("hf_console", 200, 1, 200, {"kl", "grad_norm", "learning_rate"}),
    "trl_grpo_qwen25_3b_hotpotqa_kldrift": ("hf_console", 93, 20, 1860, {"kl", "grad_norm", "learning_rate"}),
    "trl_grpo_qwen25_3b_hotpotqa_v2": ("hf_console", 46, 20, 920, {"kl", "grad_norm", "learning_rate"}),
    "trl_grpo_qwen25vl_3b_aokvqa_lengthcollapse": (
        "hf_console",
        49,
        10,
        490,
        {"entropy", "grad_norm", "learning_rate", "completions/clipped_ratio", "clip_ratio"},
    ),
    "unsloth_llama31_8b_gsm8k_grpo": ("trl_trainer_state", 250, 1, 250, {"kl", "grad_norm", "learning_rate"}),
    "unsloth_llama31_8b_gsm8k_grpo_nb": ("hf_notebook_table", 250, 1, 250, {"kl", "loss"}),
    "unsloth_llama31_8b_gsm8k_grpo_nb_stalled": ("hf_notebook_table", 27, 1, 27, {"kl", "loss"}),
    "unsloth_qwen25_15b_gsm8k_grpo_nb": ("hf_notebook_table", 250, 1, 250, {"kl", "loss"}),
    "verl_ppo_gemma2_2b_gsm8k": (
        "verl_console",
        106,
        0,
        105,
        {"kl", "entropy", "grad_norm", "learning_rate", "clip_ratio", "eval/score"},
    ),
    "verl_ppo_qwen25_05b_gsm8k_resp256": (
        "verl_console",
        435,
        0,
        434,
        {"kl", "entropy", "grad_norm", "learning_rate", "clip_ratio"},
    ),
    "verl_ppo_qwen25_05b_gsm8k_resp512": (
        "verl_console",
        435,
        0,
        434,
        {"kl", "entropy", "grad_norm", "learning_rate", "clip_ratio"},
    ),
    "verl_ppo_qwen25_7b_gsm8k_resumed": (
        "verl_console",
        335,
        101,
        435,
        {"entropy", "grad_norm", "learning_rate", "completions/clipped_ratio", "clip_ratio"},
    ),
}


def test_every_real_run_folder_is_covered(realruns: Path) -> None:
    folders = {p.name for p in realruns.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert folders == set(EXPECTED)


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_real_run_imports(realruns: Path, tmp_path: Path, folder: str) -> None:
    fmt, rows, first, last, required = EXPECTED[folder]
    (run,) = importers.load(realruns / folder)
    assert run.name == folder and run.source.format == fmt
    manifest, _ = Store(tmp_path).write_run(run)
    assert (manifest.n_steps, manifest.first_step, manifest.last_step) == (rows, first, last)
    missing = (COMMON | required) - set(manifest.metric_sources)
    assert not missing, f"{folder}: not mapped: {missing}"
    assert manifest.provenance and "repo:" in manifest.provenance


def test_verl_learning_rate_units_and_nan_free_reward(realruns: Path, tmp_path: Path) -> None:
    (run,) = importers.load(realruns / "verl_ppo_qwen25_05b_gsm8k_resp256")
    st = Store(tmp_path)
    m, _ = st.write_run(run)
    steps = st.steps(m.run_id)
    assert steps["learning_rate"].iloc[0] == pytest.approx(1e-6)  # 'actor/lr(1e-4):0.010'
    assert all(math.isfinite(v) for v in steps["reward"])


def test_dead_run_values_are_zero_not_missing(realruns: Path) -> None:
    (run,) = importers.load(realruns / "grpo_qwen35_9b_gsm8k_deadrun")
    assert all(s.values["grad_norm"] == 0.0 and s.values["reward"] == 0.0 for s in run.steps[1:])
