"""Record a running TRL `GRPOTrainer` into the run store, live, while it trains.

    store = Store()
    recorder = RunRecorder(store, "qwen-gsm8k-lr1e-6", task="gsm8k").attach(trainer)
    trainer.train()

Why a callback plus a hook: a `TrainerCallback` sees every logged row (`on_log`) and the checkpoint and
end-of-training events, but never the completions. Those exist only inside the trainer, so `attach()`
also wraps the instance's `_generate_and_score_completions`: the original runs unchanged and the wrapper
reads what it returned (token ids, masks, advantages) and the newest entries of `trainer._logs` (prompt and
completion text, reward per function). No extra forward pass is made; token statistics are a few
vectorised torch ops on tensors that already exist, moved to the CPU once per batch.

Durability: rows are buffered in memory and committed with `Store.append` every `flush_every_steps`
optimizer steps or `flush_every_seconds` (checked at the end of each step and at each log, not by a
timer thread), at every checkpoint save (`on_save`, so the store never lags a checkpoint one could resume
from) and at the end of training (status "finished"). What was flushed is committed atomically and
survives any later crash; rows buffered since the last flush die with the process, and the run then stays
"live" in the store. Call `flush()` yourself (e.g. in an `except` block) to commit them early.

Recording never stops training: an error inside the recorder is logged once per kind as a warning and
kept in `recorder.errors`; the trainer goes on.

TRL behaviour this relies on (TRL 1.16):
- `GRPOTrainer.log()` averages each metric over the logging window after dropping NaN values, and logs
  None when every value was NaN. The recorder therefore stores a None metric as NaN (it means "NaN
  throughout the window"). Because a partial NaN is averaged away by TRL, the recorder also peeks at the
  raw window just before TRL averages it and, for any metric that held NaNs, adds `nan_frac/<key>` (share
  of the window's values that were NaN). ±Inf values pass through TRL and are kept as they are.
- The final summary row of `Trainer.train()` (train_runtime, train_loss, total_flos, …) is not a step:
  it is kept out of the step metrics and exposed as `recorder.summary`.

Limitations:
- Only the main process (`state.is_world_process_zero`) records. TRL gathers prompt/completion text,
  rewards and advantages of all processes into `trainer._logs`, so trajectory rows cover the whole global
  batch, but token-level fields (response_length, truncated, repetition/unique ratios, short/long flags)
  come from the main process's tensors only and are null for rows generated on other processes.
- With `steps_per_generation` > `gradient_accumulation_steps` or `num_iterations` > 1, one generation
  batch trains several optimizer steps; its rows are recorded once, under the first step they train,
  and the `traj/` aggregates appear on the first row logged after the generation.
- Completions generated during evaluation are not recorded (eval metrics are, as logged).
- The trajectory hook needs `attach(trainer)`; a recorder added with `trainer.add_callback()` alone
  records step metrics only.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import math
import numbers
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rftfm_agent.telemetry.aggregates import INPUT_COLUMNS, aggregate_trajectories
from rftfm_agent.telemetry.importers.base import SUMMARY_KEYS, RawStep
from rftfm_agent.telemetry.schema import FaultSpec, RunManifest, SourceInfo
from rftfm_agent.telemetry.store import TRAJECTORY_SCHEMA, Store, slugify

logger = logging.getLogger(__name__)

SOURCE_FORMAT = "rftfm_recorder"

# Bookkeeping keys that alone do not make a step row worth keeping.
_BOOKKEEPING_KEYS = frozenset({"epoch", "num_input_tokens_seen"})

# Arguments copied from `trainer.args` into the manifest's config (missing ones are skipped).
CONFIG_KEYS: tuple[str, ...] = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_ratio",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "optim",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "beta",
    "epsilon",
    "epsilon_high",
    "delta",
    "loss_type",
    "scale_rewards",
    "multi_objective_aggregation",
    "importance_sampling_level",
    "reward_weights",
    "num_generations",
    "num_iterations",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "steps_per_generation",
    "generation_batch_size",
    "max_prompt_length",
    "max_completion_length",
    "mask_truncated_completions",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "use_vllm",
    "vllm_mode",
    "max_steps",
    "num_train_epochs",
    "logging_steps",
    "save_steps",
    "seed",
    "bf16",
    "fp16",
    "gradient_checkpointing",
    "world_size",
)

# Token-statistic thresholds (see `token_statistics`).
NGRAM = 3
SHORT_FRACTION = 0.05
LONG_FRACTION = 0.95
MIN_TOKENS = 2

_TOKEN_FIELDS = ("response_length", "truncated", "repetition_ratio", "unique_token_ratio")


# ---------------------------------------------------------------------------------------------- helpers
def versions() -> dict[str, str]:
    """Installed versions of the libraries a recorded run depends on (for the manifest)."""
    out: dict[str, str] = {}
    for dist in ("rftfm", "trl", "transformers", "torch", "accelerate"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _json_value(value: Any) -> Any:
    """A config value as plain JSON (enums → their value, tuples → lists); None when it cannot be one."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "value") and isinstance(value.value, str | int | float):  # ExplicitEnum, Enum
        return value.value
    if isinstance(value, list | tuple):
        items = [_json_value(v) for v in value]
        return items if all(i is not None for i in items) else None
    return None


def config_from_args(args: Any, keys: Sequence[str] = CONFIG_KEYS) -> dict[str, Any]:
    """The training arguments a diagnosis needs, taken from a `GRPOConfig` (or any TrainingArguments)."""
    config: dict[str, Any] = {}
    for key in keys:
        if not hasattr(args, key):
            continue
        try:
            value = _json_value(getattr(args, key))
        except Exception:  # a property that raises outside a distributed launch
            continue
        if value is not None:
            config[key] = value
    return config


def logged_float(value: Any) -> float | None:
    """A logged value as float, or None when it is not a number.

    None becomes NaN: TRL 1.16's `GRPOTrainer.log()` logs None exactly when every value of a metric in
    the logging window was NaN (it drops NaNs before averaging), so None there means "NaN".
    """
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, np.ndarray) and value.size == 1:
        return float(value.item())
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def message_text(value: Any) -> str:
    """Prompt or completion as text: a string as is; chat messages → their text.

    One message gives its content alone; several give one "role: content" line each. Content given as
    parts keeps only the text parts (images are dropped).
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        texts = []
        for message in value:
            if not isinstance(message, dict):
                texts.append(("", str(message)))
                continue
            content = message.get("content")
            if isinstance(content, list):
                content = "".join(
                    str(part.get("text", "")) for part in content if isinstance(part, dict) and "text" in part
                )
            texts.append((str(message.get("role", "")), "" if content is None else str(content)))
        if len(texts) == 1:
            return texts[0][1]
        return "\n".join(f"{role}: {text}" if role else text for role, text in texts)
    return str(value)


def _distinct_counts(codes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per row, how many distinct non-negative codes sit at valid positions (vectorised: sort, count)."""
    masked = torch.where(valid, codes, torch.full_like(codes, -1))
    ordered, _ = masked.sort(dim=1)
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return (new & (ordered >= 0)).sum(dim=1)


def token_statistics(
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    eos_token_ids: Sequence[int],
    pad_token_id: int | None = None,
    recover_masked_rows: bool = False,
) -> dict[str, list]:
    """Shape statistics of a right-padded batch of completions, computed on the tensors' device.

    - response_length: tokens in the completion (completion_mask; the EOS token counts).
    - truncated: no EOS token among the completion's tokens (it was cut at the length cap). This can
      differ from TRL's `completions/clipped_ratio`, which also counts a completion whose last token is
      the pad token as terminated (a model may sample the pad token).
    - repetition_ratio: 1 − distinct 3-grams / 3-grams over token ids; 0 when there are fewer than 3
      tokens (no 3-gram). Near 1 means a loop.
    - unique_token_ratio: distinct tokens / tokens; 0 for an empty completion.

    `recover_masked_rows` handles TRL's `mask_truncated_completions`, which zeroes the mask of truncated
    completions: a row with an all-zero mask then gets its length from its last non-pad token.
    """
    ids = completion_ids.detach().long()
    mask = completion_mask.detach().bool()
    batch, width = ids.shape
    if recover_masked_rows and pad_token_id is not None and width:
        empty = ~mask.any(dim=1)
        if bool(empty.any()):
            positions = torch.arange(1, width + 1, device=ids.device).expand(batch, width)
            last = torch.where(ids != pad_token_id, positions, torch.zeros_like(positions)).amax(dim=1)
            recovered = positions <= last.unsqueeze(1)
            mask = torch.where(empty.unsqueeze(1), recovered, mask)
    lengths = mask.sum(dim=1)
    eos = torch.tensor(list(eos_token_ids), device=ids.device, dtype=ids.dtype)
    has_eos = (torch.isin(ids, eos) & mask).any(dim=1) if eos.numel() else torch.zeros_like(lengths).bool()

    unique_tokens = _distinct_counts(ids, mask) if width else torch.zeros_like(lengths)
    if width >= NGRAM:
        vocab = int(ids.max().item()) + 1 if ids.numel() else 1
        windows = ids.unfold(1, NGRAM, 1)  # (batch, width - n + 1, n)
        codes = windows[..., 0]
        for k in range(1, NGRAM):
            codes = codes * vocab + windows[..., k]  # exact for vocab ≤ 2M; wraps (rare collisions) above
        valid = mask.unfold(1, NGRAM, 1).all(dim=-1)
        grams = valid.sum(dim=1)
        distinct = _distinct_counts(codes, valid)
    else:
        grams = distinct = torch.zeros_like(lengths)
    lengths_f = lengths.double()
    repetition = torch.where(grams > 0, 1.0 - distinct.double() / grams.clamp(min=1).double(), 0.0)
    unique_ratio = torch.where(lengths > 0, unique_tokens.double() / lengths_f.clamp(min=1.0), 0.0)
    stacked = torch.stack([lengths_f, (~has_eos).double(), repetition, unique_ratio]).cpu()  # one sync
    length, truncated, rep, uniq = stacked.tolist()
    return {
        "response_length": [int(x) for x in length],
        "truncated": [bool(x) for x in truncated],
        "repetition_ratio": rep,
        "unique_token_ratio": uniq,
    }


def _tail(values: Any, n: int) -> list | None:
    """The newest n entries of a deque/list, or None when it holds fewer."""
    if values is None or len(values) < n:
        return None
    items = list(values)
    return items[len(items) - n :]


def _is_short(length: int | None, max_len: int | None) -> bool | None:
    """Short: fewer than 2 tokens, or under 5% of max_completion_length; None when the length is unknown."""
    if length is None:
        return None
    return length < MIN_TOKENS or bool(max_len and length < SHORT_FRACTION * max_len)


def _is_long(length: int | None, max_len: int | None) -> bool | None:
    """Long: at least 95% of max_completion_length; None when the length or the cap is unknown."""
    if length is None or not max_len:
        return None
    return length >= LONG_FRACTION * max_len


def _group_stats(advantages: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the mean and sample std (ddof=1, as TRL's `nanstd`) of its group's advantages.

    Groups are consecutive runs of `group_size` rows, as TRL lays them out; NaNs are left out.
    """
    n = advantages.shape[0]
    padded = np.full(-(-n // group_size) * group_size, np.nan)  # a ragged last group is NaN-padded
    padded[:n] = advantages
    grouped = padded.reshape(-1, group_size)
    valid = ~np.isnan(grouped)
    count = valid.sum(axis=1)
    filled = np.where(valid, grouped, 0.0)
    mean = np.divide(filled.sum(axis=1), count, out=np.full(count.shape, np.nan), where=count > 0)
    squares = np.where(valid, (grouped - mean[:, None]) ** 2, 0.0).sum(axis=1)
    std = np.sqrt(np.divide(squares, count - 1, out=np.full(count.shape, np.nan), where=count > 1))
    return np.repeat(mean, group_size)[:n], np.repeat(std, group_size)[:n]


# ---------------------------------------------------------------------------------------------- recorder
class RunRecorder(TrainerCallback):
    """A `TrainerCallback` that writes a live GRPO run (step metrics and trajectories) into a `Store`.

    Args:
        store: where the run goes.
        name: human name of the run; the run id is its slug, made unique if taken.
        task, model, seed: manifest fields; model defaults to the model's `name_or_path` and seed to
            `args.seed`.
        config: extra config entries for the manifest; they override what is read from `trainer.args`.
        flush_every_steps, flush_every_seconds: commit buffered rows when either many optimizer steps or
            that much time has passed since the last commit (checked at step ends and logs).
        record_trajectories: False records step metrics only (no generation hook).
        label, fault, experiment_id: manifest labels for benchmark runs ("control"/"fault" and the
            injected fault); labels for evaluation only, never features.
        extra_columns: called with the batch size after each generation batch; returns extra trajectory
            columns (e.g. tool_call_count, fault labels), one value per row, that the trainer does not
            keep itself.

    After training, `summary` holds the end-of-training numbers (train_runtime, train_loss, …) and
    `errors` any recording error that was swallowed to keep training alive.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        task: str | None = None,
        model: str | None = None,
        seed: int | None = None,
        config: dict[str, Any] | None = None,
        flush_every_steps: int = 10,
        flush_every_seconds: float = 15.0,
        record_trajectories: bool = True,
        background: bool = True,
        label: str = "unknown",
        fault: FaultSpec | None = None,
        experiment_id: str | None = None,
        extra_columns: Callable[[int], dict[str, list]] | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.task = task
        self.model_name = model
        self.seed = seed
        self.user_config = dict(config or {})
        self.flush_every_steps = max(1, int(flush_every_steps))
        self.flush_every_seconds = float(flush_every_seconds)
        self.record_trajectories = record_trajectories
        self.label = label
        self.fault = fault
        self.experiment_id = experiment_id
        self.extra_columns = extra_columns
        # Writes (aggregation, Parquet, fsync) run on one background thread so that the training loop
        # only pays for copying its buffers; checkpoints and the end of training wait for them.
        self.background = background
        self._writer: ThreadPoolExecutor | None = None
        self._inflight: list[Future[None]] = []
        self._retry: _Batch | None = None  # owned by the writer thread

        self.run_id: str | None = None
        self.summary: dict[str, float] = {}
        self.errors: list[str] = []
        self.flushes = 0
        self._trainer: Any = None
        self._is_main = True
        self._steps: list[RawStep] = []
        self._step_trajectories: list[tuple[RawStep, dict[str, list]]] = []  # aggregated at write time
        self._traj: dict[str, list] = {}  # columns buffered until the next flush
        self._since_log: dict[str, list] = {}  # columns generated since the last logged row
        self._nan_fracs: dict[str, float] = {}
        self._next_status: str | None = None
        self._last_flush_step = 0
        self._last_flush_time = time.monotonic()
        self._warned: set[str] = set()
        self._began = False

    # ------------------------------------------------------------------ wiring
    def attach(self, trainer: Any) -> RunRecorder:
        """Register with `trainer`, hook its generation step, and create the live run in the store."""
        self._trainer = trainer
        trainer.add_callback(self)
        self._is_main = bool(trainer.is_world_process_zero())
        if not self._is_main:
            return self
        self._wrap_log(trainer)
        if self.record_trajectories:
            if hasattr(trainer, "_generate_and_score_completions"):
                self._wrap_generation(trainer)
            else:
                self._warn(
                    "no_hook",
                    f"{type(trainer).__name__} has no _generate_and_score_completions: "
                    "recording step metrics only",
                )
        self._ensure_run(trainer.args, trainer.model)
        return self

    def _wrap_generation(self, trainer: Any) -> None:
        original: Callable[..., dict[str, Any]] = trainer._generate_and_score_completions
        if getattr(original, "_rftfm_recorder", None) is self:
            return

        @functools.wraps(original)
        def generate_and_score(*args: Any, **kwargs: Any) -> dict[str, Any]:
            output = original(*args, **kwargs)
            if trainer.model.training:  # eval completions are not recorded
                self._guard("trajectories", self._capture, trainer, output)
            return output

        generate_and_score._rftfm_recorder = self  # type: ignore[attr-defined]
        trainer._generate_and_score_completions = generate_and_score

    def _wrap_log(self, trainer: Any) -> None:
        """Peek at TRL's raw metric window just before `log()` averages it (NaNs are dropped there)."""
        original: Callable[..., None] = trainer.log
        if getattr(original, "_rftfm_recorder", None) is self:
            return

        @functools.wraps(original)
        def log(logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            self._guard("nan_peek", self._peek_nans, trainer)
            return original(logs, *args, **kwargs)

        log._rftfm_recorder = self  # type: ignore[attr-defined]
        trainer.log = log

    def _ensure_run(self, args: Any, model: Any = None) -> None:
        """Create the live run once; config comes from the training arguments, overridden by `config`."""
        if self.run_id is not None:
            return
        config = config_from_args(args)
        trainer = self._trainer
        if trainer is not None:
            names = getattr(trainer, "reward_func_names", None)
            if names:
                config["reward_funcs"] = list(names)
        config.update(self.user_config)
        model_name = self.model_name
        if model_name is None and model is not None:
            model_config = getattr(model, "config", None)
            model_name = getattr(model_config, "name_or_path", None) or type(model).__name__
        seed = self.seed if self.seed is not None else getattr(args, "seed", None)
        manifest = RunManifest(
            run_id=slugify(self.name),
            name=self.name,
            source=SourceInfo(
                format=SOURCE_FORMAT,
                framework="trl",
                notes=[
                    "recorded live by rftfm RunRecorder on the main process",
                    "a None metric from TRL is stored as NaN (TRL logs None when every value was NaN)",
                    "trajectory step = the optimizer step the generation batch trains first",
                ],
            ),
            task=self.task,
            model=model_name,
            seed=seed,
            config=config,
            versions=versions(),
            status="live",
            label=self.label,  # type: ignore[arg-type]
            fault=self.fault,
            experiment_id=self.experiment_id,
        )
        self.run_id = self.store.create_live_run(manifest).run_id
        self._last_flush_time = time.monotonic()

    # ------------------------------------------------------------------ callbacks
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Create the run if `attach()` was not used; mark a finished run live again on a second train()."""
        if not state.is_world_process_zero:
            return
        if self.run_id is None:
            if self._trainer is None:
                self._warn("no_attach", "RunRecorder added without attach(): recording step metrics only")
            self._guard("create", self._ensure_run, args, kwargs.get("model"))
        elif self._began:  # a second train() (e.g. resumed) on the same recorder: the run is live again
            self._next_status = "live"
        self._began = True
        self._last_flush_step = state.global_step

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Flush when due, unless a log row for this step is about to come (then `on_log` flushes)."""
        if state.is_world_process_zero and not control.should_log:
            self._maybe_flush(state)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Turn one logged row into a step record, with this step's `traj/` aggregates added."""
        if not state.is_world_process_zero or not logs:
            return
        self._guard("step", self._record_step, state, logs)
        self._maybe_flush(state)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Commit everything at a checkpoint, so the store never lags a state one could resume from."""
        if state.is_world_process_zero:
            self.flush(wait=True)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Commit the rest and mark the run finished."""
        if state.is_world_process_zero:
            self.flush(status="finished", wait=True)
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None

    # ------------------------------------------------------------------ step rows
    def _record_step(self, state: TrainerState, logs: dict[str, Any]) -> None:
        nan_fracs, self._nan_fracs = self._nan_fracs, {}
        # The end-of-training row: train_loss and train_runtime together, and no per-step "loss". (Not
        # "total_flos": HF's printer callbacks pop it from the dict before later callbacks see it; and
        # train_runtime alone appears in every row when include_num_input_tokens_seen is on.)
        is_summary = "train_loss" in logs and "train_runtime" in logs and "loss" not in logs
        values: dict[str, float] = {}
        for key, raw in logs.items():
            if is_summary and (key in SUMMARY_KEYS or key.startswith(("train_mem_", "init_mem_"))):
                number = logged_float(raw)
                if number is not None:
                    self.summary[key] = number
                continue
            number = logged_float(raw)
            if number is not None:
                values[str(key)] = number
        for key, frac in nan_fracs.items():
            if key in values:
                values[f"nan_frac/{key}"] = frac
        metric_keys = [k for k in values if k not in _BOOKKEEPING_KEYS]
        is_eval = bool(metric_keys) and all(k.startswith("eval_") for k in metric_keys)
        since_log: dict[str, list] = {}
        if self._since_log and not is_eval:
            since_log = {c: self._since_log[c] for c in INPUT_COLUMNS if c in self._since_log}
            self._since_log = {}
        if set(values) <= _BOOKKEEPING_KEYS and not since_log:  # e.g. the summary row, summary keys taken
            return
        row = RawStep(step=int(state.global_step), values=values, wall_time=time.time())
        self._steps.append(row)
        if since_log:  # the traj/ aggregates are computed by the writer, off the training loop
            self._step_trajectories.append((row, since_log))

    def _peek_nans(self, trainer: Any) -> None:
        metrics = getattr(trainer, "_metrics", None)
        if not isinstance(metrics, dict):
            return
        mode = "train" if trainer.model.training else "eval"
        prefix = "eval_" if mode == "eval" else ""
        fracs: dict[str, float] = {}
        for key, window in metrics.get(mode, {}).items():
            if not isinstance(window, list) or not window:
                continue
            nans = sum(1 for v in window if isinstance(v, float) and math.isnan(v))
            if nans:
                fracs[f"{prefix}{key}"] = nans / len(window)
        self._nan_fracs = fracs

    # ------------------------------------------------------------------ trajectory rows
    def _capture(self, trainer: Any, output: dict[str, Any]) -> None:
        """Build this generation batch's trajectory rows from what the trainer already computed."""
        completion_ids: torch.Tensor = output["completion_ids"]
        completion_mask: torch.Tensor = output["completion_mask"]
        local = int(completion_ids.shape[0])
        num_processes = int(getattr(getattr(trainer, "accelerator", None), "num_processes", 1) or 1)
        group_size = int(getattr(trainer, "num_generations", 1) or 1)
        step = int(trainer.state.global_step) + 1

        tokenizer = getattr(trainer, "processing_class", None)
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a multimodal processor wraps one
        pad_id = getattr(trainer, "pad_token_id", None)
        if pad_id is None:
            pad_id = getattr(tokenizer, "pad_token_id", None)
        eos_ids = getattr(trainer, "eos_token_ids", None)
        if eos_ids is None:
            single = getattr(trainer, "eos_token_id", None)
            single = single if single is not None else getattr(tokenizer, "eos_token_id", None)
            eos_ids = [] if single is None else [single]
        stats = token_statistics(
            completion_ids,
            completion_mask,
            [int(e) for e in eos_ids],
            pad_token_id=pad_id,
            recover_masked_rows=bool(getattr(trainer, "mask_truncated_completions", False)),
        )

        names = list(getattr(trainer, "reward_func_names", []) or [])
        logs = getattr(trainer, "_logs", None) or {}
        n = local * num_processes
        prompts = _tail(logs.get("prompt"), n)
        completions = _tail(logs.get("completion"), n)
        advantages = _tail(logs.get("advantages"), n)
        reward_logs = logs.get("rewards") or {}
        per_func = {name: _tail(reward_logs.get(name), n) for name in names}
        if (
            prompts is None
            or completions is None
            or advantages is None
            or any(v is None for v in per_func.values())
        ):
            # `_logs` is not what TRL 1.16 keeps: fall back to this process's tensors alone.
            self._warn("logs_layout", "trainer._logs lacks this batch: recording local rows without rewards")
            n = local
            prompts = _decode(tokenizer, output.get("prompt_ids"), output.get("prompt_mask"))
            completions = _decode(tokenizer, completion_ids, completion_mask)
            advantages = output["advantages"].detach().float().cpu().tolist()
            per_func = {name: [math.nan] * n for name in names}

        if num_processes == 1 and "advantages" in output:
            # What the loss trains on. TRL logs advantages before returning the batch; a hook that changes
            # them afterwards (a credit-assignment fault, an advantage filter) is only visible here.
            advantages = output["advantages"].detach().double().cpu().tolist()

        reward_matrix = np.array([per_func[k] for k in names], dtype=np.float64).T.reshape(n, len(names))
        weights = getattr(trainer, "reward_weights", None)
        if isinstance(weights, torch.Tensor):
            weights = weights.detach().cpu().tolist()
        weight = np.ones(len(names))
        if weights is not None and len(weights) == len(names):
            weight = np.asarray(weights, dtype=np.float64)
        total = np.nansum(reward_matrix * weight, axis=1)
        total[np.isnan(reward_matrix).all(axis=1)] = np.nan  # unscorable: every function returned None
        adv = np.asarray(advantages, dtype=np.float64)
        index = np.arange(n)
        group_ids = index // group_size
        adv_mean, adv_std = _group_stats(adv, group_size)

        max_len = getattr(trainer.args, "max_completion_length", None)
        prompt_text = [message_text(p) for p in prompts]
        completion_text = [message_text(c) for c in completions]
        lengths: list[int | None] = list(stats["response_length"]) + [None] * (n - local)
        cols: dict[str, list] = {
            "step": [step] * n,
            "prompt_id": [hashlib.blake2b(p.encode(), digest_size=8).hexdigest() for p in prompt_text],
            "group_id": group_ids.tolist(),
            "sample_index": (index % group_size).tolist(),
            "prompt": prompt_text,
            "completion": completion_text,
            "reward": total.tolist(),
            "rewards": [list(zip(names, row, strict=True)) for row in reward_matrix.tolist()],
            "advantage": adv.tolist(),
            "advantage_mean": adv_mean.tolist(),
            "advantage_std": adv_std.tolist(),
            "empty_response": [
                length == 0 or not text.strip() for length, text in zip(lengths, completion_text, strict=True)
            ],
            "short_response": [_is_short(length, max_len) for length in lengths],
            "long_response": [_is_long(length, max_len) for length in lengths],
        }
        for field in _TOKEN_FIELDS:
            cols[field] = list(stats[field]) + [None] * (n - local)
        cols["return"] = list(cols["reward"])  # one outcome reward per completion, undiscounted
        if self.extra_columns is not None:
            for key, values in self.extra_columns(n).items():
                if key in TRAJECTORY_SCHEMA.names and key not in cols and len(values) == n:
                    cols[key] = list(values)
        for store_cols in (self._traj, self._since_log):
            for key, values in cols.items():
                store_cols.setdefault(key, []).extend(values)

    # ------------------------------------------------------------------ flushing
    def _maybe_flush(self, state: TrainerState) -> None:
        due_steps = state.global_step - self._last_flush_step >= self.flush_every_steps
        due_time = time.monotonic() - self._last_flush_time >= self.flush_every_seconds
        if due_steps or due_time:
            self.flush()
            self._last_flush_step = int(state.global_step)

    def flush(self, status: str | None = None, wait: bool = False) -> None:
        """Hand buffered rows (and a status change) to the writer; a no-op off the main process.

        With `wait`, return only once everything handed over so far is committed (or has failed). On a
        store error the rows are kept and retried with the next flush.
        """
        if not self._is_main or self.run_id is None:
            return
        status = status or self._next_status
        trainer = self._trainer
        if trainer is not None:
            self._last_flush_step = int(trainer.state.global_step)
        self._last_flush_time = time.monotonic()
        if self._steps or self._traj or status is not None:
            batch = _Batch(self._steps, self._step_trajectories, self._traj, status)
            if status == "finished":
                batch.config_updates = {f"summary/{k}": v for k, v in self.summary.items()}
            self._steps, self._step_trajectories, self._traj, self._next_status = [], [], {}, None
            if self.background:
                if self._writer is None:
                    self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rftfm-recorder")
                self._inflight = [f for f in self._inflight if not f.done()]
                self._inflight.append(self._writer.submit(self._write, batch))
            else:
                self._write(batch)
        if wait:
            self.wait()

    def wait(self) -> None:
        """Block until every handed-over batch is committed (or has failed and been noted)."""
        for future in self._inflight:
            future.result()
        self._inflight = []

    def _write(self, batch: _Batch) -> None:
        """Aggregate, build the trajectory table and append to the store (on the writer thread)."""
        if self._retry is not None:
            batch = self._retry.merged_with(batch)
            self._retry = None
        try:
            for row, since_log in batch.step_trajectories:
                if "traj/count" not in row.values:
                    row.values.update(aggregate_trajectories(pd.DataFrame(since_log)))
            self.store.append(
                self.run_id,  # type: ignore[arg-type]
                steps=batch.steps,
                trajectories=_trajectory_table(batch.traj),
                status=batch.status,
                config_updates=batch.config_updates,
            )
        except Exception as exc:
            self._note_error("flush", exc)
            self._retry = batch
            return
        self.flushes += 1

    # ------------------------------------------------------------------ errors
    def _guard(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        """Run a recording step; an error is noted, never raised into the training loop."""
        try:
            fn(*args)
        except Exception as exc:
            self._note_error(what, exc)

    def _note_error(self, what: str, exc: BaseException) -> None:
        self.errors.append(f"{what}: {type(exc).__name__}: {exc}")
        self._warn(what, f"rftfm recorder: {what} failed ({type(exc).__name__}: {exc}); training goes on")

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning(message)


@dataclass
class _Batch:
    """Rows handed from the training loop to the writer thread in one flush."""

    steps: list[RawStep]
    step_trajectories: list[tuple[RawStep, dict[str, list]]]
    traj: dict[str, list]
    status: str | None = None
    config_updates: dict[str, Any] | None = None

    def merged_with(self, later: _Batch) -> _Batch:
        n_self, n_later = len(self.traj.get("step", [])), len(later.traj.get("step", []))
        traj = {
            key: list(self.traj.get(key, [None] * n_self)) + list(later.traj.get(key, [None] * n_later))
            for key in {*self.traj, *later.traj}
        }
        return _Batch(
            self.steps + later.steps,
            self.step_trajectories + later.step_trajectories,
            traj,
            later.status or self.status,
            later.config_updates or self.config_updates,
        )


def _trajectory_table(traj: dict[str, list]) -> pa.Table | None:
    if not traj or not traj.get("step"):
        return None
    schema = pa.schema([TRAJECTORY_SCHEMA.field(c) for c in TRAJECTORY_SCHEMA.names if c in traj])
    return pa.table({c: traj[c] for c in schema.names}, schema=schema)


def _decode(tokenizer: Any, ids: torch.Tensor | None, mask: torch.Tensor | None) -> list[str]:
    """Texts of a padded id batch (fallback only; the normal path reads TRL's already-decoded text)."""
    if ids is None or tokenizer is None:
        return [""] * (0 if ids is None else int(ids.shape[0]))
    keep = (mask if mask is not None else torch.ones_like(ids)).bool().cpu()
    rows = [row[m].tolist() for row, m in zip(ids.cpu(), keep, strict=True)]
    return list(tokenizer.batch_decode(rows, skip_special_tokens=True))


__all__ = ["RunRecorder", "config_from_args", "logged_float", "message_text", "token_statistics"]
