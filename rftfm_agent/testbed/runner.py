"""The GRPO runner: one real TRL `GRPOTrainer` run of the testbed (or any Hugging Face causal LM), with
the recorder, the held-out accuracy evaluation, checkpoints, trainer hooks (an injected fault, …), and
resume with changed hyperparameters.

    spec = RunSpec(name="lr-test", task="arith_a", steps=20, fault=parse_fault("od_lr:easy@8"))
    result = run(spec, Store("bench/store"), "runs/lr-test", hooks=hooks_for(spec.fault))

The runner knows nothing of faults: `spec.fault` is the run's label (manifest, registry), and the hooks
(`testbed/hooks.py`; for a fault, `rftfm_agent.faults.registry.hooks_for`) change the training.

Resume: `run(spec.model_copy(update={"learning_rate": 1e-4}), store, workdir, resume_from=ckpt)` loads the
checkpoint's weights, optimizer and scheduler state and then sets the new learning rate on the optimizer
and the scheduler (TRL would otherwise keep the checkpoint's). The resumed run is a new run in the store,
its steps numbered on from the checkpoint, with `resumed_from` in its config.

On a GPU machine, `use_vllm=True` makes TRL generate with vLLM (colocated) for the arithmetic tasks; the
tool task generates with its own loop on the trainer's model. vLLM is an optional extra (`rftfm[gpu]`)
and is not exercised in CI.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from pydantic import BaseModel, Field
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from rftfm_agent.errors import RftfmError
from rftfm_agent.hooks import REWARD_LAYERS, RunContext, TrainerHook
from rftfm_agent.knobs import pin_learning_rate
from rftfm_agent.telemetry.recorder import RunRecorder
from rftfm_agent.telemetry.schema import FaultSpec
from rftfm_agent.telemetry.store import Store
from rftfm_agent.testbed.environment import Calculator, make_rollout_func
from rftfm_agent.testbed.heldout import HELDOUT_METRIC, HeldOutEval
from rftfm_agent.testbed.model import WarmupConfig, warm_model
from rftfm_agent.testbed.tasks import get_task, is_correct

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


class RunSpec(BaseModel):
    """Everything that decides a run. Same spec, same machine: same records."""

    name: str
    task: str = "arith_a"
    seed: int = 0
    steps: int = Field(default=30, ge=1)
    batch_size: int = Field(default=64, ge=2, description="completions per optimizer step")
    num_generations: int = Field(default=4, ge=2)
    learning_rate: float = Field(default=2e-4, gt=0)
    warmup_steps: int = Field(default=5, ge=0, description="linear learning-rate warm-up, then constant")
    beta: float = 0.04
    temperature: float = Field(default=1.0, gt=0)
    max_completion_length: int | None = Field(default=None, description="default: 8, or 16 for 'tool'")
    eval_every: int = Field(default=5, ge=1)
    save_steps: int | None = Field(default=None, description="checkpoint every N steps (None: none)")
    fault: FaultSpec | None = Field(default=None, description="the run's label; `hooks` inject it")
    experiment_id: str | None = None
    model: str | None = Field(default=None, description="any HF causal LM (path or id); None: the testbed")
    warmup_seed: int = 0
    use_vllm: bool = False
    threads: int = 1

    def completion_cap(self) -> int:
        if self.max_completion_length is not None:
            return self.max_completion_length
        return 16 if get_task(self.task).uses_tool else 8


@dataclass
class RunResult:
    run_id: str
    seconds: float
    steps: int
    heldout: list[tuple[int, float]] = field(default_factory=list)
    output_dir: Path | None = None
    recorder_errors: list[str] = field(default_factory=list)


def parse_fault(text: str) -> FaultSpec:
    """'TYPE:STRENGTH[@ONSET][:VARIANT]' (e.g. 'od_lr:easy@8:high') as a FaultSpec."""
    from rftfm_agent.telemetry.schema import FAULT_TYPES

    parts = text.split(":")
    if len(parts) < 2 or parts[0] not in FAULT_TYPES:
        raise RftfmError(
            f"fault {text!r}: expected TYPE:STRENGTH[@ONSET][:VARIANT] with TYPE one of "
            f"{', '.join(FAULT_TYPES)}"
        )
    kind, rest = parts[0], parts[1]
    strength, _, onset = rest.partition("@")
    if strength not in ("easy", "hard") or (onset and not onset.isdigit()):
        raise RftfmError(f"fault {text!r}: strength must be easy or hard, onset a step number")
    return FaultSpec(
        family=FAULT_TYPES[kind],  # type: ignore[arg-type]
        type=kind,
        strength=strength,  # type: ignore[arg-type]
        onset_step=int(onset) if onset else 1,
        variant=parts[2] if len(parts) > 2 else None,
    )


def correct(completions: list[Any], answer: list[str], **kwargs: Any) -> list[float]:
    """The verifier: 1 for an exactly right final answer, else 0."""
    texts = [c if isinstance(c, str) else str(c) for c in completions]
    return [1.0 if is_correct(t, a) else 0.0 for t, a in zip(texts, answer, strict=True)]


def training_prompts(spec: RunSpec) -> Any:
    """The run's prompts: enough distinct draws for every step, from the task's training pairs."""
    from datasets import Dataset

    per_step = spec.batch_size // spec.num_generations
    problems = get_task(spec.task).sample(
        random.Random(f"data-{spec.task}-{spec.seed}"), per_step * spec.steps
    )
    return Dataset.from_list([{"prompt": p.prompt, "answer": p.answer} for p in problems])


class _LearningRateOverride(TrainerCallback):
    """On resume, after the trainer restored optimizer and scheduler state, impose the new learning rate
    where the schedule is (a resume in the warm-up goes on warming up, not at the full rate for a step)."""

    def __init__(self, trainer: Any, lr: float) -> None:
        self.trainer = trainer
        self.lr = lr

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        pin_learning_rate(self.trainer, self.lr)


def _load_policy(spec: RunSpec) -> tuple[Any, Any, str]:
    if spec.model is None:
        folder = warm_model(WarmupConfig(seed=spec.warmup_seed))
        source = str(folder)
    else:
        source = spec.model
    model = transformers.AutoModelForCausalLM.from_pretrained(source)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, source


def _no_fault_labels(n: int) -> dict[str, list]:
    """The labels of a batch nothing perturbed; a hook that perturbs it says so in its `label_columns`."""
    return {
        "fault_injected": [False] * n,
        "fault_injection_type": [None] * n,
        "fault_injection_strength": [None] * n,
    }


def build(
    spec: RunSpec,
    store: Store,
    workdir: Path,
    *,
    hooks: Sequence[TrainerHook] = (),
    resumed_from: str | None = None,
    run_name: str | None = None,
) -> tuple[Any, Any, Any]:
    """The trainer with every hook installed; returns (trainer, recorder, held-out callback).
    `run_name` names the store run (default: the spec's name)."""
    from trl import GRPOConfig, GRPOTrainer

    task = get_task(spec.task)
    if task.uses_tool and spec.use_vllm:
        raise RftfmError("the tool task generates with its own loop; run it without use_vllm")
    if spec.use_vllm and any(hook.needs_hf_sampler for hook in hooks):
        raise RftfmError("a hook changes TRL's HF sampler at run time (a generation fault): no use_vllm")
    if spec.fault is not None and not hooks:
        raise RftfmError(f"{spec.name}: labelled with fault {spec.fault.type}, given no hooks to inject it")
    model, tokenizer, source = _load_policy(spec)

    context = RunContext(
        task=spec.task,
        seed=spec.seed,
        num_generations=spec.num_generations,
        calculator=Calculator(seed=spec.seed) if task.uses_tool else None,
    )
    reward_fn = correct
    for hook in sorted(hooks, key=lambda h: REWARD_LAYERS.index(h.reward_layer)):  # stable: hook order kept
        reward_fn = hook.wrap_reward(reward_fn)
    rollout = (
        make_rollout_func(context.calculator, context.tool_stats, context.tool_policy)
        if task.uses_tool
        else None
    )

    config = GRPOConfig(
        output_dir=str(workdir),
        max_steps=spec.steps,
        per_device_train_batch_size=spec.batch_size,
        num_generations=spec.num_generations,
        max_completion_length=spec.completion_cap(),
        learning_rate=spec.learning_rate,
        # A short warm-up: Adam's first steps move every weight by about the learning rate whatever its
        # gradient's noise, which on a policy gradient scrambles a small model before the signal builds up.
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=spec.warmup_steps,
        beta=spec.beta,
        temperature=spec.temperature,
        logging_steps=1,
        save_strategy="steps" if spec.save_steps else "no",
        save_steps=spec.save_steps or 500,
        report_to=[],
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=not torch.cuda.is_available(),
        use_vllm=spec.use_vllm,
        vllm_mode="colocate",
        seed=spec.seed,
        data_seed=spec.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward_fn],
        args=config,
        train_dataset=training_prompts(spec),
        processing_class=tokenizer,
        rollout_func=rollout,
    )
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    for hook in hooks:
        hook.install(trainer, context)  # before the recorder attaches: it records what the hooks changed
    heldout = HeldOutEval(trainer, spec.task, every=spec.eval_every)
    trainer.add_callback(heldout)

    def extra_columns(n: int) -> dict[str, list]:
        cols = _no_fault_labels(n)
        if task.uses_tool:
            cols["tool_call_count"] = context.tool_stats.get("tool_call_count", [])
            cols["tool_error_count"] = context.tool_stats.get("tool_error_count", [])
        else:
            cols["tool_call_count"] = [0] * n
            cols["tool_error_count"] = [0] * n
        for hook in hooks:
            cols.update(hook.label_columns(n))
        return cols

    run_config: dict[str, Any] = {
        "task": spec.task,
        "batch_size": spec.batch_size,
        "heldout_metric": HELDOUT_METRIC,
        "model_source": source,
        "testbed": spec.model is None,
    }
    if resumed_from:
        run_config["resumed_from"] = resumed_from
    for hook in hooks:
        run_config.update({f"{hook.name}/{k}": v for k, v in hook.settings().items()})
    recorder = RunRecorder(
        store,
        run_name or spec.name,
        task=spec.task,
        model="rftfm-testbed-tiny-llama" if spec.model is None else spec.model,
        seed=spec.seed,
        config=run_config,
        label="fault" if spec.fault else "control",
        fault=spec.fault,
        experiment_id=spec.experiment_id,
        extra_columns=extra_columns,
        flush_every_steps=10,
        flush_every_seconds=60.0,
    ).attach(trainer)
    return trainer, recorder, heldout


@contextlib.contextmanager
def _quiet(enabled: bool) -> Any:
    """Silence transformers/TRL chatter (warnings, info lines) for bench workers."""
    if not enabled:
        yield
        return
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("trl").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            transformers.logging.set_verbosity(level)


def run(
    spec: RunSpec,
    store: Store,
    workdir: str | Path,
    *,
    hooks: Sequence[TrainerHook] = (),
    resume_from: str | Path | None = None,
    keep_checkpoint_lr: bool = False,
    quiet: bool = True,
) -> RunResult:
    """Train one run to `spec.steps` (from `resume_from` if given) with `hooks` installed and record it.

    On resume, `spec.learning_rate` replaces the checkpoint's, unless `keep_checkpoint_lr`. The prompt
    order depends on `spec.steps` (TRL shuffles the run's dataset, whose size is steps × prompts per step):
    resume with the same `steps` to continue the original data stream exactly.
    """
    workdir = Path(workdir)
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    started = time.perf_counter()
    try:
        with _quiet(quiet):
            trainer, recorder, heldout = build(
                spec, store, workdir, hooks=hooks, resumed_from=str(resume_from) if resume_from else None
            )
            if resume_from is not None and not keep_checkpoint_lr:
                trainer.add_callback(_LearningRateOverride(trainer, spec.learning_rate))
            try:
                trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
            finally:
                recorder.flush(wait=True)
    finally:
        torch.set_num_threads(threads)
    return RunResult(
        run_id=recorder.run_id or "",
        seconds=time.perf_counter() - started,
        steps=int(trainer.state.global_step),
        heldout=heldout.history,
        output_dir=workdir,
        recorder_errors=list(recorder.errors),
    )
