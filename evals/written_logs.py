"""Logs written with the dynamics of real GRPO runs, healthy and broken, in four formats: how rftfm judges
runs it has no healthy band for (other people's logs), on failures whose step is known.

Run with `python -m rftfm_agent.evals.written_logs --out DIR`: it writes the logs, imports each as a user
would (`importers.load`), detects and diagnoses it, and prints one row per log with what was expected.

The series follow what real logs show (../shared/realruns): a reward rising on a logistic curve with
noise, KL growing from ~0, entropy declining slowly, grad-norm noise with single-step spikes, a
warm-up-and-cosine learning rate; the broken ones change one thing at a known step. A helper wrote the
first version to probe the scale-free rules from outside (2026-12-03); two of its findings (a reward
collapse and a length running into the cap, both called healthy) set the bars of `reward_collapse` and
`truncation_most`, so this is a regression check, not an out-of-sample estimate.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rftfm_agent.diagnose.api import diagnose_runs
from rftfm_agent.telemetry import importers
from rftfm_agent.telemetry.store import Store

Series = dict[str, np.ndarray]

# Canonical series name → the key TRL (0.2x) logs it under, and verl's.
TRL_KEYS = {
    "loss": "loss",
    "grad_norm": "grad_norm",
    "learning_rate": "learning_rate",
    "completion_length": "completions/mean_length",
    "clipped_ratio": "completions/clipped_ratio",
    "reward": "reward",
    "reward_std": "reward_std",
    "frac_reward_zero_std": "frac_reward_zero_std",
    "kl": "kl",
    "entropy": "entropy",
}
VERL_KEYS = {
    "reward": "critic/score/mean",
    "kl": "actor/kl_loss",
    "entropy": "actor/entropy",
    "completion_length": "response_length/mean",
    "clipped_ratio": "response_length/clip_ratio",
    "grad_norm": "actor/grad_norm",
    "learning_rate": "actor/lr",
    "loss": "actor/pg_loss",
}


def healthy(n: int, seed: int, r_lo: float = 0.2, r_hi: float = 0.7, len1: float = 400.0) -> Series:
    """A GRPO run that learns: the reward rises on a logistic curve, KL from ~0 to 0.05, entropy and length
    drift, grad-norm noise with three 2-3× spikes, warm-up then cosine learning rate."""
    rng = np.random.default_rng(seed)
    s = np.arange(1, n + 1)
    reward = r_lo + (r_hi - r_lo) / (1 + np.exp(-(s - 0.4 * n) / (0.12 * n))) + rng.normal(0, 0.06, n)
    length = 200 + (len1 - 200) * s / n + rng.normal(0, 15, n)
    grad = 0.25 * np.exp(rng.normal(0, 0.3, n))
    grad[rng.choice(np.arange(10, n), size=3, replace=False)] *= 2.5
    kl = 0.05 * (s / n) ** 1.3 * np.exp(rng.normal(0, 0.25, n)) + 1e-5
    warm = np.minimum(1.0, s / 10)
    return {
        "reward": np.clip(reward, 0, 1),
        "reward_std": np.clip(0.35 - 0.1 * s / n + rng.normal(0, 0.03, n), 0.05, 0.5),
        "frac_reward_zero_std": np.clip(0.2 + rng.normal(0, 0.05, n), 0, 0.95),
        "kl": kl,
        "entropy": 0.6 - 0.15 * s / n + rng.normal(0, 0.02, n),
        "completion_length": length,
        "clipped_ratio": np.clip(0.005 + 0.03 * (length / 1024) ** 3 + rng.normal(0, 0.005, n), 0, 1),
        "grad_norm": grad,
        "loss": 0.04 * kl + rng.normal(0, 0.004, n),
        "learning_rate": 1e-6 * warm * 0.5 * (1 + np.cos(math.pi * s / n)),
    }


def saturating(n: int, seed: int) -> Series:
    """A healthy run on data it masters: the reward rises to 1.0 within the first third and stays there,
    and the prompt groups whose samples all succeed (identical rewards, no GRPO signal) come with it."""
    d = healthy(n, seed, r_lo=0.3, r_hi=1.05)
    s = np.arange(1, n + 1)
    rng = np.random.default_rng(seed + 100)
    solved = 1 / (1 + np.exp(-(s - 0.15 * n) / (0.04 * n)))
    d["reward"] = np.clip(0.3 + 0.66 * solved + rng.normal(0, 0.02, n), 0, 1)
    d["frac_reward_zero_std"] = np.clip(0.2 + 0.77 * solved + rng.normal(0, 0.01, n), 0, 0.99)
    d["reward_std"] = np.clip(0.35 * (1 - solved) + rng.normal(0, 0.01, n), 0, 0.5)
    return d


def slow_start(n: int, seed: int, until: int = 20) -> Series:
    """A healthy run whose model earns nothing at first: every group all 0 and, with β = 0, a gradient of
    exactly 0 for its first `until` steps; then it learns."""
    d = healthy(n, seed)
    d["reward"][:until] = 0.0
    d["reward_std"][:until] = 0.0
    d["frac_reward_zero_std"][:until] = 1.0
    d["grad_norm"][:until] = 0.0
    return d


def lr_too_high(n: int, seed: int, at: int = 1) -> Series:
    """A learning rate far too high from step 1: grad norm and KL high from the first steps, entropy
    rising, the reward only falling (0.40 → 0.07)."""
    d = healthy(n, seed)
    rng = np.random.default_rng(seed + 100)
    s = np.arange(1, n + 1)
    d["reward"] = np.clip(0.07 + 0.33 * np.exp(-s / (0.25 * n)) + rng.normal(0, 0.04, n), 0, 1)
    d["grad_norm"] = 50 * np.exp(rng.normal(0, 0.4, n))
    d["kl"] = 2.0 * np.exp(rng.normal(0, 0.3, n))
    d["entropy"] = 0.45 + 0.6 * s / n + rng.normal(0, 0.02, n)
    return d


def cap_from_start(n: int, seed: int, at: int = 1) -> Series:
    """max_completion_length far too small from step 1: 98 % of completions cut, the reward near 0 and most
    groups all equal."""
    d = healthy(n, seed)
    rng = np.random.default_rng(seed + 100)
    d["clipped_ratio"] = np.clip(0.98 + rng.normal(0, 0.005, n), 0, 1)
    d["completion_length"] = 127 + rng.normal(0, 0.5, n)
    d["reward"] = np.clip(0.05 + rng.normal(0, 0.01, n), 0, 1)
    d["frac_reward_zero_std"] = np.clip(0.8 + rng.normal(0, 0.02, n), 0, 1)
    return d


def _after(n: int, step: int, width: float = 3.0) -> np.ndarray:
    """0 before `step`, 1 after it (a logistic step `width` steps wide)."""
    return 1 / (1 + np.exp(-(np.arange(1, n + 1) - step) / width))


def reward_collapse(n: int, seed: int, at: int) -> Series:
    d = healthy(n, seed, r_hi=0.6)
    fall = _after(n, at)
    noise = np.random.default_rng(seed + 100).normal(0, 0.02, n)
    d["reward"] = np.clip(d["reward"] * (1 - fall) + fall * (0.05 + noise), 0, 1)
    return d


def kl_blowup(n: int, seed: int, at: int) -> Series:
    d = healthy(n, seed)
    d["kl"][at:] = d["kl"][at - 1] * 100 * np.exp(np.linspace(0, 2, n - at))
    return d


def entropy_collapse(n: int, seed: int, at: int) -> Series:
    d = healthy(n, seed)
    d["entropy"][at:] = np.maximum(0.01, 0.5 * np.exp(-np.arange(n - at) / 10))
    return d


def length_to_cap(n: int, seed: int, at: int) -> Series:
    d = healthy(n, seed, len1=350)
    ramp = np.clip((np.arange(1, n + 1) - at) / 30, 0, 1)
    noise = np.abs(np.random.default_rng(seed + 100).normal(0, 0.01, n))
    d["completion_length"] = d["completion_length"] * (1 - ramp) + ramp * 1020
    d["clipped_ratio"] = d["clipped_ratio"] * (1 - ramp) + ramp * (1 - noise)
    return d


def nan_from(n: int, seed: int, at: int) -> Series:
    d = healthy(n, seed)
    d["loss"][at - 1 :] = np.nan
    d["grad_norm"][at - 1 :] = np.nan
    return d


def reward_hacking(n: int, seed: int, at: int) -> Series:
    d = healthy(n, seed)
    hack = _after(n, at, 8)
    d["reward"] = d["reward"] * (1 - hack) + hack * 0.97
    d["completion_length"] = np.maximum(3, d["completion_length"] * (1 - hack) + hack * 4)
    return d


def dead(n: int, seed: int, at: int) -> Series:
    d = healthy(n, seed)
    for key in ("reward", "reward_std", "grad_norm", "kl", "loss"):
        d[key] = np.zeros(n)
    d["frac_reward_zero_std"] = np.ones(n)
    return d


# --------------------------------------------------------------------------------------------- writers
def _steps(d: Series, every: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(d["reward"])
    rows = np.arange(every - 1, n, every)
    return rows, rows + 1


def write_trl_console(path: Path, d: Series, every: int = 1) -> Path:
    """TRL's console: the Trainer's dicts (with `epoch`) after a tqdm bar."""
    n = len(d["reward"])
    lines = []
    for row, step in zip(*_steps(d, every), strict=True):
        items = [f"'{key}': {float(d[name][row])!r}" for name, key in TRL_KEYS.items() if name in d]
        bar = f"\r{100 * step // n:3d}%|#         | {step}/{n} [01:00<10:00, 12.3s/it]"
        lines.append(bar + "{" + ", ".join([*items, f"'epoch': {step / 500}"]) + "}\n" + bar)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_trainer_state(path: Path, d: Series, every: int = 1) -> Path:
    history = [
        {**{key: float(d[name][row]) for name, key in TRL_KEYS.items() if name in d}, "step": int(step)}
        for row, step in zip(*_steps(d, every), strict=True)
    ]
    path.mkdir(parents=True, exist_ok=True)
    (path / "trainer_state.json").write_text(
        json.dumps({"global_step": len(d["reward"]), "log_history": history})
    )
    return path


def write_verl(path: Path, d: Series, every: int = 1) -> Path:
    lines = []
    for row, step in zip(*_steps(d, every), strict=True):
        pairs = [f"{key}:{float(d[name][row]):.6g}" for name, key in VERL_KEYS.items() if name in d]
        lines.append(f"(TaskRunner pid=12345) step:{step} - " + " - ".join(pairs))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_wandb_csv(path: Path, d: Series, every: int = 1) -> Path:
    names = [name for name in TRL_KEYS if name in d]
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["_step", "_runtime", *[f"train/{TRL_KEYS[n]}" for n in names], "train/global_step"])
        for i, (row, step) in enumerate(zip(*_steps(d, every), strict=True)):
            out.writerow([i, 30.0 * step, *[repr(float(d[n][row])) for n in names], int(step)])
    return path


@dataclass(frozen=True)
class Case:
    name: str  # the file or folder written
    series: Callable[[], Series]
    writer: Callable[[Path, Series, int], Path]
    expected: str  # "healthy", or a word the diagnosis's symptom must hold
    says: str = ""  # for a healthy run, words its diagnosis's symptom must hold (a warning it explains)
    broke_at: int | None = None  # the step the failure starts (the first alarm must come within LATE)
    every: int = 1  # logged every this many steps


LATE = 40  # steps after the failure's start by which the first alarm must come …
SOON = 5  # … and before which it may come (a fall that ramps over a few steps shows before its middle)


CASES: tuple[Case, ...] = (
    Case("h01_trl.log", lambda: healthy(200, 1), write_trl_console, "healthy"),
    Case("h02_trainer_state", lambda: healthy(200, 2), write_trainer_state, "healthy"),
    Case("h03_verl.log", lambda: healthy(300, 3, len1=400), write_verl, "healthy"),
    Case("h04_wandb.csv", lambda: healthy(200, 4), write_wandb_csv, "healthy"),
    Case("h05_plateau.log", lambda: healthy(250, 5, r_lo=0.3, r_hi=0.55), write_trl_console, "healthy"),
    Case("h06_every10", lambda: healthy(1000, 6), write_trainer_state, "healthy", every=10),
    Case(
        "h07_saturates.log",
        lambda: saturating(200, 7),
        write_trl_console,
        "healthy",
        says="solved its prompts",
    ),
    Case(
        "h08_slow_start.log",
        lambda: slow_start(200, 8),
        write_trl_console,
        "healthy",
        says="(a slow start)",
    ),
    Case(
        "b01_collapse.log", lambda: reward_collapse(200, 21, 120), write_trl_console, "reward collapse", 120
    ),
    Case("b02_collapse_verl.log", lambda: reward_collapse(200, 22, 120), write_verl, "reward collapse", 120),
    Case("b03_kl_blowup", lambda: kl_blowup(200, 23, 100), write_trainer_state, "KL runaway", 100),
    Case("b04_entropy.log", lambda: entropy_collapse(200, 24, 80), write_verl, "entropy collapse", 80),
    Case("b05_to_cap.log", lambda: length_to_cap(200, 25, 100), write_trl_console, "ran into the cap", 100),
    Case("b06_nan.csv", lambda: nan_from(200, 26, 151), write_wandb_csv, "numerical failure", 151),
    Case("b07_hacking.log", lambda: reward_hacking(200, 27, 90), write_trl_console, "reward hacking", 90),
    Case("b08_dead.log", lambda: dead(200, 28, 1), write_verl, "no learning signal", 1),
    Case(
        "b09_lr_too_high", lambda: lr_too_high(200, 29), write_trainer_state, "reward fell from the start", 1
    ),
    Case(
        "b10_cap_from_start.csv",
        lambda: cap_from_start(200, 30),
        write_wandb_csv,
        "length cap from the start",
        1,
    ),
)


def evaluate(out: Path, cases: tuple[Case, ...] = CASES) -> list[dict[str, object]]:
    """Write every case's log under `out`, import, detect and diagnose it; one row per case."""
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out / "store")
    rows = []
    for case in cases:
        path = case.writer(out / case.name, case.series(), case.every)
        (run,) = importers.load(path)
        run_id = store.write_run(run)[0].run_id
        ((diagnosis, verdict),) = diagnose_runs(store, [run_id])
        symptom = diagnosis.symptom or ""
        first = verdict.first_alarm_step
        ok = (
            verdict.verdict == "healthy"
            and not symptom.startswith(("unknown", "anomalous"))
            and case.says in symptom
            if case.expected == "healthy"
            else verdict.verdict == "anomalous"
            and case.expected in symptom
            and first is not None
            and (case.broke_at is None or case.broke_at - SOON <= first <= case.broke_at + LATE)
        )
        rows.append(
            {
                "log": case.name,
                "expected": case.expected,
                "verdict": verdict.verdict,
                "first_alarm": first,
                "symptom": symptom,
                "ok": ok,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the logs (default: a temporary one)"
    )
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="rftfm-written-logs-"))
    rows = evaluate(out)
    for r in rows:
        mark = "ok " if r["ok"] else "BAD"
        print(f"{mark} {r['log']:32s} {r['verdict']:9s} {r['first_alarm']!s:>5s}  {r['symptom']}")
    print(f"{sum(bool(r['ok']) for r in rows)} / {len(rows)} as expected; logs in {out}")


if __name__ == "__main__":
    main()
