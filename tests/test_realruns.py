"""Every real run in ../shared/realruns imports, with its steps and main metrics mapped.

The logs were written by other people with TRL, Unsloth and verl; they are read in place and never
copied into the project. Expected counts were read off the files (see their PROVENANCE.txt).
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from rftfm_agent.diagnose.api import diagnose_runs
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.store import Store

LABELS = Path(__file__).resolve().parents[1] / "evals" / "realrun_labels.toml"

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


def test_every_real_run_is_labelled(realruns: Path) -> None:
    labels = tomllib.loads(LABELS.read_text())["runs"]
    snippets = {f"_issue_snippets/{p.name}" for p in (realruns / "_issue_snippets").iterdir() if p.is_dir()}
    assert set(labels) == set(EXPECTED) | snippets


def test_real_runs_are_judged_as_we_labelled_them(realruns: Path, tmp_path: Path) -> None:
    """Verdict and plain-language symptom, with the shipped detector and library, against our labels
    (evals/realrun_labels.toml, each with its reason): broken runs are anomalous and their symptom is
    named; healthy runs are healthy with no critical finding; unclear runs say so (unknown)."""
    labels = tomllib.loads(LABELS.read_text())["runs"]
    store = Store(tmp_path)
    wrong = []
    for name, label in sorted(labels.items()):
        run_ids = [store.write_run(r)[0].run_id for r in importers.load(realruns / name)]
        ((d, v),) = diagnose_runs(store, run_ids)
        symptom = d.symptom.lower()
        critical = [f.symptom for f in d.findings if f.severity == "critical"]
        if label["judgement"] == "broken":
            ok = v.verdict == "anomalous" and any(s in symptom for s in label["symptoms"])
        elif label["judgement"] == "healthy":
            ok = v.verdict == "healthy" and not critical and symptom.startswith("healthy")
        else:
            ok = not critical and any(s in symptom for s in label["symptoms"])
        if not ok:
            wrong.append(f"{name}: {label['judgement']} but {v.verdict}, {d.symptom!r}")
    assert not wrong, "\n".join(wrong)
