"""Record a running TRL `GRPOTrainer` into the run store, live, while it trains.

    store = Store()
    recorder = RunRecorder(store, "qwen-gsm8k-lr1e-6", task="gsm8k").attach(trainer)
    trainer.train()

Why a callback plus a hook: a `TrainerCallback` sees every logged row (`on_log`) and the checkpoint and
end-of-training events, but never the completions. Those exist only inside the trainer, so `attach()`
also registers an "observe" handler on the trainer's batch pipeline (`telemetry.trl_batch`, the one hook
into `_generate_and_score_completions`): it sees the batch the loss trains on, after any edit (a fault
injector, a remediation), and `telemetry.batch_stats` turns it and the newest entries of `trainer._logs`
into trajectory rows. No extra forward pass is made. The manifest's config comes from
`telemetry.run_config`.

Listeners: `on_row(callback)` subscribes to every step row as it is recorded, in canonical metric names
(`vocabulary.canonical_row`, plus "step"), on the main process, e.g. an online detector run by a
supervisor inside the training job. When there are listeners, a row's `traj/` aggregates are computed
at log time (so that the listener sees them) instead of on the writer thread; the stored values are the
same either way.

Durability: rows are buffered in memory and committed with `Store.append` every `flush_every_steps`
optimizer steps or `flush_every_seconds` (checked at the end of each step and at each log, not by a
timer thread), at every checkpoint save (`on_save`, so the store never lags a checkpoint one could resume
from) and at the end of training (status "finished"). What was flushed is committed atomically and
survives any later crash; rows buffered since the last flush die with the process, and the run then stays
"live" in the store. Call `flush()` yourself (e.g. in an `except` block) to commit them early.

Recording never stops training: an error inside the recorder (or raised by a listener) is logged once per
kind as a warning and kept in `recorder.errors`; the trainer goes on.

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
import logging
import math
import numbers
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rftfm_agent.telemetry.aggregates import INPUT_COLUMNS, aggregate_trajectories
from rftfm_agent.telemetry.batch_stats import message_text, token_statistics, trajectory_columns
from rftfm_agent.telemetry.importers.base import SUMMARY_KEYS
from rftfm_agent.telemetry.run_config import config_from_args, model_name, run_config, versions
from rftfm_agent.telemetry.schema import FaultSpec, RawStep, RunManifest, SourceInfo
from rftfm_agent.telemetry.store import TRAJECTORY_SCHEMA, Store, slugify
from rftfm_agent.telemetry.trl_batch import add_batch_handler, has_batch_method
from rftfm_agent.telemetry.vocabulary import canonical_row

logger = logging.getLogger(__name__)

SOURCE_FORMAT = "rftfm_recorder"

# Bookkeeping keys that alone do not make a step row worth keeping.
_BOOKKEEPING_KEYS = frozenset({"epoch", "num_input_tokens_seen"})

# A listener gets one step row: "step" and each metric under its canonical name, as floats.
RowListener = Callable[[dict[str, float]], None]


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
        listeners: step-row listeners, as if each were passed to `on_row`.

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
        listeners: Iterable[RowListener] = (),
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
        self.listeners: list[RowListener] = list(listeners)
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
        self._config_updates: dict[str, Any] = {}  # merged into the manifest's config at the next flush

    # ------------------------------------------------------------------ wiring
    def on_row(self, listener: RowListener) -> RowListener:
        """Call `listener(row)` with every step row as it is recorded (main process only); returns it.

        `row` maps "step" and each metric's canonical name (see `vocabulary.canonical_row`) to a float,
        `traj/` aggregates of the completions since the previous row included. It is called on the
        training thread, so it should be quick. An exception it raises is noted in `errors` and warned
        about once; it never reaches the training loop, and the listener keeps getting later rows.
        """
        self.listeners.append(listener)
        return listener

    def attach(self, trainer: Any) -> RunRecorder:
        """Register with `trainer`, hook its generation step, and create the live run in the store."""
        self._trainer = trainer
        trainer.add_callback(self)
        self._is_main = bool(trainer.is_world_process_zero())
        if not self._is_main:
            return self
        self._wrap_log(trainer)
        if self.record_trajectories:
            if has_batch_method(trainer):
                add_batch_handler(trainer, "observe", self._observe_batch, key=self)  # re-attach: replaced
            else:
                self._warn(
                    "no_hook",
                    f"{type(trainer).__name__} has no _generate_and_score_completions: "
                    "recording step metrics only",
                )
        self._ensure_run(trainer.args, trainer.model)
        return self

    def _observe_batch(self, trainer: Any, output: dict[str, Any]) -> None:
        """The batch pipeline's observer (training batches only): record, never raise into training."""
        self._guard("trajectories", self._capture, trainer, output)

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
        names = getattr(self._trainer, "reward_func_names", None) if self._trainer is not None else None
        config = run_config(args, names, self.user_config)
        name_of_model = self.model_name if self.model_name is not None else model_name(model)
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
            model=name_of_model,
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
        if state.max_steps and state.max_steps > 0:
            # The optimizer steps the scheduler was built for (max_steps, or epochs × steps per epoch):
            # with the config's warm-up and scheduler type it gives the rate each step should log.
            self._config_updates["total_steps"] = int(state.max_steps)
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
        if self.listeners:
            self._guard("listener", self._notify, row, since_log)

    def _notify(self, row: RawStep, since_log: dict[str, list]) -> None:
        """Hand the row, in canonical names, to every listener; one failing listener spares the others."""
        if since_log and "traj/count" not in row.values:
            # Listeners need the aggregates now; the writer skips rows that already have them.
            row.values.update(aggregate_trajectories(pd.DataFrame(since_log)))
        payload = canonical_row(row.values)
        payload["step"] = float(row.step)  # the optimizer step, whatever the row itself holds
        for listener in list(self.listeners):
            self._guard("listener", listener, dict(payload))

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
        """Buffer this generation batch's trajectory rows (built from what the trainer already computed)."""
        cols = trajectory_columns(trainer, output, self._warn)
        n = len(cols["step"])
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
            updates, self._config_updates = dict(self._config_updates), {}
            if status == "finished":
                updates.update({f"summary/{k}": v for k, v in self.summary.items()})
            batch.config_updates = updates or None
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
            {**(self.config_updates or {}), **(later.config_updates or {})} or None,
        )


def _trajectory_table(traj: dict[str, list]) -> pa.Table | None:
    if not traj or not traj.get("step"):
        return None
    schema = pa.schema([TRAJECTORY_SCHEMA.field(c) for c in TRAJECTORY_SCHEMA.names if c in traj])
    return pa.table({c: traj[c] for c in schema.names}, schema=schema)


# config_from_args (run_config), message_text and token_statistics (batch_stats) stay importable here.
__all__ = [
    "RowListener",
    "RunRecorder",
    "config_from_args",
    "logged_float",
    "message_text",
    "token_statistics",
]
