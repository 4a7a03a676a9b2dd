"""The one home of rftfm's hook into TRL's training batch: `GRPOTrainer._generate_and_score_completions`.

TRL (1.x) builds each training batch in that private method: it generates completions, scores them with
the reward functions and returns the dict the loss trains on (`advantages`, `completion_ids`, …). Three
kinds of rftfm code need that batch: fault injectors and remediation actions *edit* it (negate or
recompute advantages), the recorder and the supervisor *observe* it. The order matters: observers must
see the batch the loss actually trains on, so every edit runs before any observation.

Instead of each component wrapping the method in turn (an order kept by the order of `install` calls),
the method is wrapped once per trainer by `add_batch_handler`, which keeps two ordered lists:

    output = original(...)
    for edit in edits:      output = edit(trainer, output) or output
    for observe in observers: observe(trainer, output)

Handlers run only while the model is training (evaluation batches are left alone). A handler added twice
(same `key`) is replaced, not doubled, so re-attaching a recorder is harmless.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

BatchStage = Literal["edit", "observe"]
BatchHandler = Callable[[Any, dict[str, Any]], "dict[str, Any] | None"]

METHOD = "_generate_and_score_completions"  # TRL GRPOTrainer (1.x); RLOOTrainer has the same method


@dataclass
class _Pipeline:
    original: Callable[..., dict[str, Any]]
    edits: dict[object, BatchHandler] = field(default_factory=dict)
    observers: dict[object, BatchHandler] = field(default_factory=dict)


def has_batch_method(trainer: Any) -> bool:
    """Whether `trainer` builds its training batch where rftfm can hook it."""
    return callable(getattr(trainer, METHOD, None))


def add_batch_handler(trainer: Any, stage: BatchStage, handler: BatchHandler, key: object = None) -> None:
    """Run `handler(trainer, output)` on every training batch, edits before observers.

    An `edit` handler may change `output` in place or return a replacement dict; an `observe` handler's
    return value is ignored. `key` identifies the handler (default: the handler itself); adding a handler
    with a key already present replaces it in place. Raises AttributeError when the trainer has no batch
    method (check with `has_batch_method`).
    """
    if stage not in ("edit", "observe"):
        raise ValueError(f"batch handler stage must be 'edit' or 'observe', not {stage!r}")
    pipeline = _pipeline(trainer)
    handlers = pipeline.edits if stage == "edit" else pipeline.observers
    handlers[handler if key is None else key] = handler


def remove_batch_handler(trainer: Any, key: object) -> None:
    """Remove a handler by its key (no-op when absent): a reversible remediation undoes itself this way."""
    pipeline: _Pipeline | None = getattr(trainer, "_rftfm_batch_pipeline", None)
    if pipeline is not None:
        pipeline.edits.pop(key, None)
        pipeline.observers.pop(key, None)


def _pipeline(trainer: Any) -> _Pipeline:
    pipeline: _Pipeline | None = getattr(trainer, "_rftfm_batch_pipeline", None)
    if pipeline is not None:
        return pipeline
    original = getattr(trainer, METHOD)
    pipeline = _Pipeline(original)

    @functools.wraps(original)
    def generate_and_score(*args: Any, **kwargs: Any) -> dict[str, Any]:
        output = pipeline.original(*args, **kwargs)
        if not trainer.model.training:  # evaluation batches are neither edited nor recorded
            return output
        for edit in list(pipeline.edits.values()):
            changed = edit(trainer, output)
            if changed is not None:
                output = changed
        for observe in list(pipeline.observers.values()):
            observe(trainer, output)
        return output

    setattr(trainer, METHOD, generate_and_score)
    trainer._rftfm_batch_pipeline = pipeline
    return pipeline
