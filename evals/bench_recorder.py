"""What does live recording cost a training step? Train a tiny GRPO run with and without the recorder.

    python -m rftfm_agent.evals.bench_recorder [--steps 30] [--rounds 2]

Both variants train the same tiny Llama (built in code, no downloads) on the same prompts with the same
seed, so they do the same work; the only difference is the `RunRecorder` attached to one of them. Step
time is measured from one `on_step_begin` to the next, so it includes what the recorder does after the
optimizer step (turning the log row into a record, aggregating trajectories, flushing to the store).
The tiny model makes a step take milliseconds, so the overhead shown here is an upper bound on the
relative cost: with a real model the same absolute cost disappears into seconds-long steps.

The tiny-setup builders here are also what `tests/test_recorder.py` trains, so the test and the benchmark
exercise the same run.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from datasets import Dataset
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from rftfm_agent.testbed.model import build_tokenizer  # the testbed's character tokenizer


def build_model(tokenizer: transformers.PreTrainedTokenizerFast, folder: Path, seed: int = 0) -> Any:
    """A 2-layer Llama with random weights, saved to `folder` and loaded back.

    The round trip gives the model a local `name_or_path`, which GRPOTrainer needs to build its reference
    model when beta > 0.
    """
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return transformers.LlamaForCausalLM.from_pretrained(folder)


def arithmetic_dataset(n: int = 16, seed: int = 0) -> Dataset:
    """n prompts "a+b=" with their answers (a, b in 0..20)."""
    rng = random.Random(seed)
    pairs = [(rng.randint(0, 20), rng.randint(0, 20)) for _ in range(n)]
    return Dataset.from_list([{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in pairs])


def digit_match(completions: list[str], answer: list[str], **kwargs: Any) -> list[float]:
    """Share of the answer's digits in place, minus a small penalty per extra character.

    Graded (not 0/1) so that a random tiny model still gets reward differences within a group.
    """
    rewards = []
    for completion, target in zip(completions, answer, strict=True):
        text = completion.strip()
        hits = sum(1 for got, want in zip(text, target, strict=False) if got == want)
        rewards.append(hits / len(target) - 0.1 * max(0, len(text) - len(target)) / 8)
    return rewards


def tiny_grpo_trainer(
    output_dir: str | Path,
    *,
    max_steps: int = 4,
    seed: int = 0,
    batch_size: int = 8,
    num_generations: int = 4,
    max_completion_length: int = 8,
    beta: float = 0.04,
    reward_funcs: list[Any] | None = None,
    eval_dataset: Dataset | None = None,
    **config: Any,
) -> Any:
    """A GRPOTrainer on CPU over the tiny Llama and arithmetic prompts.

    Extra keyword arguments go to GRPOConfig and override the defaults set here (e.g. logging_steps).
    """
    from trl import GRPOConfig, GRPOTrainer

    output_dir = Path(output_dir)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, output_dir / "init-model", seed=seed)
    settings: dict[str, Any] = {
        "output_dir": str(output_dir),
        "max_steps": max_steps,
        "per_device_train_batch_size": batch_size,
        "num_generations": num_generations,
        "max_completion_length": max_completion_length,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "bf16": False,
        "gradient_checkpointing": False,
        "use_cpu": True,
        "beta": beta,
        "seed": seed,
        "disable_tqdm": True,
    }
    settings.update(config)
    return GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs or [digit_match],
        args=GRPOConfig(**settings),
        train_dataset=arithmetic_dataset(seed=seed),
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
    )


class StepTimer(TrainerCallback):
    """Wall time between consecutive step starts (so it includes logging and flushing after a step)."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.end: float | None = None

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.end = time.perf_counter()

    def step_times(self, skip: int = 1) -> list[float]:
        """Seconds per step, without the first `skip` steps (warm-up)."""
        marks = [*self.starts, *([self.end] if self.end is not None else [])]
        return [b - a for a, b in itertools.pairwise(marks)][skip:]


def run_once(steps: int, seed: int, record: bool, workdir: Path) -> tuple[list[float], list[float]]:
    """Train once; returns (step times in seconds, logged losses)."""
    from rftfm_agent.telemetry.recorder import RunRecorder
    from rftfm_agent.telemetry.store import Store

    workdir.mkdir(parents=True, exist_ok=True)
    trainer = tiny_grpo_trainer(workdir / "out", max_steps=steps, seed=seed)
    trainer.remove_callback(PrinterCallback)  # keep the benchmark's output to its own numbers
    timer = StepTimer()
    trainer.add_callback(timer)
    if record:
        recorder = RunRecorder(Store(workdir / "store"), "bench").attach(trainer)
    trainer.train()
    if record and recorder.errors:
        raise RuntimeError(f"recorder errors: {recorder.errors}")
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return timer.step_times(), losses


def main(argv: list[str] | None = None) -> None:
    """Alternate baseline and recorded runs (A B B A …) so that drift hits both alike; print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per training run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args(argv)
    transformers.logging.set_verbosity_error()

    times: dict[bool, list[float]] = {False: [], True: []}
    losses: dict[bool, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="rftfm-bench-") as tmp:
        run_once(3, opts.seed, False, Path(tmp) / "warmup")  # imports, allocator, first-call costs
        order = [v for r in range(opts.rounds) for v in ((False, True) if r % 2 == 0 else (True, False))]
        for i, record in enumerate(order):
            step_times, run_losses = run_once(opts.steps, opts.seed, record, Path(tmp) / f"run{i}")
            times[record].extend(step_times)
            losses.setdefault(record, run_losses)

    base_med, rec_med = statistics.median(times[False]), statistics.median(times[True])
    base_mean, rec_mean = statistics.fmean(times[False]), statistics.fmean(times[True])
    threads = torch.get_num_threads()
    print(f"steps per run: {opts.steps}, runs per variant: {opts.rounds}, torch threads: {threads}")
    print(f"without recorder: median {base_med * 1e3:8.2f} ms/step   mean {base_mean * 1e3:8.2f} ms/step")
    print(f"with recorder:    median {rec_med * 1e3:8.2f} ms/step   mean {rec_mean * 1e3:8.2f} ms/step")
    med_pct, mean_pct = (rec_med / base_med - 1) * 100, (rec_mean / base_mean - 1) * 100
    print(
        f"overhead:         median {(rec_med - base_med) * 1e3:+8.2f} ms ({med_pct:+.1f}%)"
        f"   mean {(rec_mean - base_mean) * 1e3:+8.2f} ms ({mean_pct:+.1f}%)"
    )
    print(f"same training with and without recorder (logged losses equal): {losses[False] == losses[True]}")


if __name__ == "__main__":
    main()
