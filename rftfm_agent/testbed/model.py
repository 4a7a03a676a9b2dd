"""The testbed's policy: a character tokenizer and a ~1M-parameter Llama, built in code and warmed up.

Nothing is downloaded. `warm_model()` trains the random-init model with supervised next-token loss on the
warm-up tasks, saves it under the cache folder keyed by every setting that changes the weights, and
returns the folder. A second call finds the folder and returns at once; concurrent callers (a process
pool) wait on a lock file and find it made.

What the warm-up teaches: the answers (greedy decoding gets nearly all of them right), and — on
`junk_rate` of the targets — a spurious continuation after the answer ("42+17"), as a base model rambles
on. So the warmed-up policy samples a clean answer less than a third of the time (greedy decoding,
which follows the likelier continuation, almost never stops), and a healthy GRPO run has a skill to
learn that carries over to problems it never trained on: stop after answering.

Determinism: the warm-up fixes torch's seed, its thread count and the data order, so one seed gives the
same weights on one machine. (Different CPUs may round differently; the cache key names the torch
version.)
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from rftfm_agent.testbed.tasks import TASKS, WARMUP_TASKS, Problem, is_correct

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
CHARACTERS = "0123456789+-*=[]|E"


def build_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A character-level tokenizer over digits, operators and the tool markers (no hub download)."""
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *CHARACTERS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()  # characters join back without spaces
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


@dataclass(frozen=True)
class WarmupConfig:
    """Everything that decides the warmed-up weights (the cache key is a hash of it)."""

    seed: int = 0
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    steps: int = 1000
    batch_size: int = 96
    learning_rate: float = 4e-3
    tasks: tuple[str, ...] = WARMUP_TASKS
    task_weights: tuple[float, ...] = (1.0, 1.0, 1.5)
    junk_rate: float = 0.7  # share of targets followed by a spurious continuation (see the module doc)
    # (the tool task's targets are longest, so it gets a larger share of the warm-up batches)
    threads: int = 2
    version: int = 2  # bump when the warm-up code changes what it produces
    extra: dict[str, str] = field(default_factory=dict)

    def key(self) -> str:
        # The CPU's kernel set is part of what decides the weights: the same seed trained with AVX-512
        # kernels and with AVX2 ones (ATEN_CPU_CAPABILITY=avx2) gave different models, whose healthy runs
        # learn to different levels (control held-out 27.9 % → 79.1 % vs 20.9 % → 49.8 %, 2026-12-03).
        payload = {**asdict(self), "torch": torch.__version__, "cpu": cpu_kernels()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def cpu_kernels() -> str:
    """The vector instruction set torch's CPU kernels use here ("AVX512", "AVX2", …): float results, and so
    the warmed-up weights, differ between them."""
    return str(torch.backends.cpu.get_cpu_capability())


def model_config(
    tokenizer: transformers.PreTrainedTokenizerFast, cfg: WarmupConfig
) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )


def cache_root() -> Path:
    """Where warmed-up models live: $RFTFM_CACHE, else ~/.cache/rftfm."""
    return Path(os.environ.get("RFTFM_CACHE") or Path.home() / ".cache" / "rftfm")


def with_junk(problem: Problem, rng: random.Random, rate: float) -> Problem:
    """With probability `rate`, the problem's target followed by a spurious continuation (an operator and
    two digits, as if the model went on to write another problem); otherwise the problem unchanged."""
    if rng.random() >= rate:
        return problem
    junk = rng.choice("+-") + str(rng.randrange(10, 100))
    return dataclasses.replace(problem, target=problem.target + junk)


def supervised_batch(
    tokenizer: transformers.PreTrainedTokenizerFast, problems: Sequence[Problem]
) -> dict[str, torch.Tensor]:
    """Right-padded prompt+target+EOS ids with labels on the completion only.

    The calculator's output (between "]" and "|" inclusive of the bar) is the environment's text, not the
    policy's: it is in the input but carries no loss, as in the GRPO runner's tool mask.
    """
    rows, labels = [], []
    for p in problems:
        prompt_ids = tokenizer(p.prompt, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(p.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        target_labels = list(target_ids)
        if "]" in p.target:
            start = p.target.index("]") + 1
            end = p.target.index("|") + 1
            for i in range(start, end):
                target_labels[i] = -100
        rows.append(prompt_ids + target_ids)
        labels.append([-100] * len(prompt_ids) + target_labels)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def warm_model(cfg: WarmupConfig | None = None, *, quiet: bool = True) -> Path:
    """The folder of the warmed-up model and tokenizer for `cfg`, training it first if it is not cached."""
    cfg = cfg or WarmupConfig()
    folder = cache_root() / "testbed" / f"tiny-llama-{cfg.key()}"
    if (folder / "warmup.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / "warmup.json").is_file():  # another process made it while we waited
            return folder
        staging = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        report = _train(cfg, staging, quiet=quiet)
        (staging / "warmup.json").write_text(json.dumps(report, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    return folder


def _train(cfg: WarmupConfig, out: Path, *, quiet: bool) -> dict:
    from rftfm_agent.testbed.heldout import heldout_accuracy

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        started = time.perf_counter()
        torch.manual_seed(cfg.seed)
        tokenizer = build_tokenizer()
        model = transformers.LlamaForCausalLM(model_config(tokenizer, cfg))
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.learning_rate, total_steps=cfg.steps, pct_start=0.1
        )
        rng = random.Random(cfg.seed)
        tasks = [TASKS[name] for name in cfg.tasks]
        model.train()
        for step in range(cfg.steps):
            chosen = rng.choices(tasks, weights=cfg.task_weights, k=cfg.batch_size)
            problems = [with_junk(task.sample(rng, 1)[0], rng, cfg.junk_rate) for task in chosen]
            loss = model(**supervised_batch(tokenizer, problems)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if not quiet and (step + 1) % 250 == 0:
                print(f"warm-up step {step + 1}/{cfg.steps}  loss {loss.item():.3f}", flush=True)
        model.eval()
        out.mkdir(parents=True)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        greedy = {t.name: heldout_accuracy(model, tokenizer, t.name, greedy=True) for t in tasks}
        sampled = {
            t.name: heldout_accuracy(model, tokenizer, t.name, greedy=False, seed=cfg.seed) for t in tasks
        }
        return {
            "config": asdict(cfg),
            "parameters": sum(p.numel() for p in model.parameters()),
            "seconds": round(time.perf_counter() - started, 1),
            "final_loss": float(loss.item()),
            "heldout_accuracy_greedy": greedy,
            "heldout_accuracy_sampled": sampled,
            "torch": torch.__version__,
            "cpu": cpu_kernels(),
        }
    finally:
        torch.set_num_threads(threads)


def warmup_report(folder: Path) -> dict:
    return json.loads((folder / "warmup.json").read_text())


def load_policy(folder: Path) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerFast]:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return model, tokenizer


__all__ = ["WarmupConfig", "build_tokenizer", "is_correct", "load_policy", "warm_model", "warmup_report"]
