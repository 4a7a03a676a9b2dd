"""Change a built GRPOTrainer's hyperparameters while it trains or before it resumes.

Fault injectors use these to break a run at its onset step; the runner uses `set_learning_rate` to
resume from a checkpoint with a new learning rate (TRL restores the old one from the optimizer and
scheduler state otherwise); remediation will use them to apply a fix. Each function changes every place
TRL 1.16 reads the setting from, so the change really takes effect.
"""

from __future__ import annotations

from typing import Any

from rftfm_agent.errors import RftfmError


def _optimizer(trainer: Any) -> Any:
    """The torch optimizer (accelerate wraps it; None before the trainer made one)."""
    optimizer = getattr(trainer, "optimizer", None)
    return getattr(optimizer, "optimizer", optimizer)


def _scheduler(trainer: Any) -> Any:
    """The torch learning-rate scheduler (accelerate wraps it; None before the trainer made one)."""
    scheduler = getattr(trainer, "lr_scheduler", None)
    return getattr(scheduler, "scheduler", scheduler)


def set_learning_rate(trainer: Any, lr: float) -> None:
    """New learning rate for the optimizer and, through its base rates, for the scheduler's next steps."""
    for group in _optimizer(trainer).param_groups:
        group["lr"] = lr
        group["initial_lr"] = lr
    scheduler = _scheduler(trainer)
    if scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
        if hasattr(scheduler, "_last_lr"):
            scheduler._last_lr = [lr] * len(scheduler.base_lrs)
    trainer.args.learning_rate = lr


def schedule_factor(trainer: Any) -> float:
    """Where the scheduler is in its shape (warm-up, decay) at the coming step, as a factor of its base rate.

    Read from the schedule itself where it has one (`LambdaLR`, which every schedule the HF Trainer builds
    is): the rate the optimizer holds may have been overwritten flat (by a bug, or by `set_learning_rate`
    on resume), and a factor inferred from it would then be 1 in the middle of a warm-up. Otherwise
    inferred from that rate over the scheduler's base rate."""
    from torch.optim.lr_scheduler import LambdaLR  # here: importing torch is slow for the commands without it

    optimizer, scheduler = _optimizer(trainer), _scheduler(trainer)
    if isinstance(scheduler, LambdaLR):  # not MultiplicativeLR, whose lambdas multiply the last step's rate
        return float(scheduler.lr_lambdas[0](scheduler.last_epoch))
    base = list(getattr(scheduler, "base_lrs", None) or [])
    if base and base[0] > 0 and optimizer.param_groups:
        return float(optimizer.param_groups[0]["lr"]) / float(base[0])
    return 1.0


def pin_learning_rate(trainer: Any, lr: float) -> None:
    """`set_learning_rate`, keeping where the scheduler is in its shape (warm-up, decay): the step's rate
    becomes `lr` × the schedule's factor (`schedule_factor`), not `lr` flat."""
    optimizer, scheduler = _optimizer(trainer), _scheduler(trainer)
    factor = schedule_factor(trainer)
    set_learning_rate(trainer, lr)
    for group in optimizer.param_groups:
        group["lr"] = lr * factor
    if hasattr(scheduler, "_last_lr"):  # what the Trainer logs as the step's rate: the rate the step uses
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def set_generation(trainer: Any, **changes: Any) -> None:
    """Change sampling settings (HF generation path) in every place TRL reads them.

    TRL keeps them in `trainer.generation_config` (used to sample), `trainer.generation_kwargs`
    (re-applied to the model's generation config while it generates) and trainer attributes. The
    temperature TRL divides logits by when it computes training log-probabilities is captured when the
    trainer is built (TRL 1.16), so a run-time change affects sampling only.
    """
    for key, value in changes.items():
        setattr(trainer.generation_config, key, value)
        if isinstance(getattr(trainer, "generation_kwargs", None), dict):
            trainer.generation_kwargs[key] = value
    if "temperature" in changes:
        trainer.temperature = changes["temperature"]
        trainer.args.temperature = changes["temperature"]
    if "max_new_tokens" in changes:
        trainer.max_completion_length = changes["max_new_tokens"]
        trainer.args.max_completion_length = changes["max_new_tokens"]


def set_beta(trainer: Any, beta: float) -> None:
    """New KL coefficient. The reference model must exist (the run started with beta != 0)."""
    if beta != 0.0 and getattr(trainer, "ref_model", None) is None and trainer.beta == 0.0:
        raise RftfmError("cannot turn on a KL penalty in a run built with beta=0 (no reference model)")
    trainer.beta = beta
    trainer.args.beta = beta


def set_max_grad_norm(trainer: Any, value: float) -> None:
    trainer.args.max_grad_norm = value


def get_learning_rate(trainer: Any) -> float:
    """The base learning rate (the scheduler's, before warm-up or decay scale it): what `set_learning_rate`
    sets and what a user configures."""
    scheduler = _scheduler(trainer)
    if scheduler is not None and getattr(scheduler, "base_lrs", None):
        return float(scheduler.base_lrs[0])
    optimizer = _optimizer(trainer)
    if optimizer is not None and optimizer.param_groups:
        group = optimizer.param_groups[0]
        return float(group.get("initial_lr", group["lr"]))
    return float(trainer.args.learning_rate)


def current_settings(trainer: Any) -> dict[str, Any]:
    """The knobs remediation may change, as the built trainer uses them now (JSON-able values)."""
    config = getattr(trainer, "generation_config", None)
    bias = getattr(config, "sequence_bias", None)
    return {
        "learning_rate": get_learning_rate(trainer),
        "beta": float(getattr(trainer, "beta", trainer.args.beta)),
        "temperature": float(getattr(trainer, "temperature", trainer.args.temperature)),
        "top_p": float(getattr(config, "top_p", None) or getattr(trainer.args, "top_p", 1.0) or 1.0),
        "max_completion_length": int(
            getattr(trainer, "max_completion_length", trainer.args.max_completion_length)
        ),
        "max_grad_norm": float(trainer.args.max_grad_norm or 0.0),
        "suppress_tokens": list(getattr(config, "suppress_tokens", None) or []),
        "sequence_bias": bool(bias),
    }
