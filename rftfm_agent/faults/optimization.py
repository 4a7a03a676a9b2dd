"""OD — optimization-dynamics faults: learning rate, KL coefficient, gradients, optimizer state.

Each is applied to the live trainer at the onset step: the optimizer's learning rate is changed, the KL
coefficient the loss uses is changed, gradient hooks corrupt `.grad` before clipping and the optimizer
step, or the optimizer's moment estimates are thrown away.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rftfm_agent.errors import RftfmError
from rftfm_agent.faults.base import FaultRuntime, Injector, OnsetCallback
from rftfm_agent.hooks import RunContext
from rftfm_agent.knobs import set_beta, set_learning_rate, set_max_grad_norm


class LearningRate(Injector):
    type, family = "od_lr", "OD"
    variants = ("high", "low")
    description = "learning rate far too high (easy ×100, hard ×8) or far too low (easy ×0.01, hard ×0.1)"
    key_metrics = ("learning_rate", "entropy", "kl", "heldout/accuracy")

    def factor(self) -> float:
        if self.variant == "high":
            return 100.0 if self.easy else 8.0
        return 0.01 if self.easy else 0.1

    def settings(self) -> dict[str, Any]:
        return {"lr_factor": self.factor()}

    def attach(self, trainer: Any, run: RunContext) -> None:
        lr = trainer.args.learning_rate * self.factor()
        trainer.add_callback(OnsetCallback(self.runtime, lambda t: set_learning_rate(t, lr)))


class KLCoefficient(Injector):
    type, family = "od_kl", "OD"
    variants = ("sign", "frozen")
    description = "KL coefficient with a sign bug (easy −0.5, hard −0.1) or far too large (easy 50, hard 5)"
    key_metrics = ("kl", "entropy", "reward")

    def beta(self) -> float:
        if self.variant == "sign":
            return -0.5 if self.easy else -0.1
        return 50.0 if self.easy else 5.0

    def settings(self) -> dict[str, Any]:
        return {"beta": self.beta()}

    def attach(self, trainer: Any, run: RunContext) -> None:
        if trainer.beta == 0.0:
            raise RftfmError("od_kl needs a run with a KL penalty (beta > 0)")
        beta = self.beta()
        trainer.add_callback(OnsetCallback(self.runtime, lambda t: set_beta(t, beta)))


class _StepGate(TrainerCallback):
    """Decides at each step's start whether this step's gradients are corrupted."""

    def __init__(self, runtime: FaultRuntime, rate: float) -> None:
        self.runtime = runtime
        self.rate = rate
        self.corrupt = False

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.corrupt = self.runtime.active and self.runtime.rng.random() < self.rate
        if self.runtime.active:
            self.runtime.step_injected = self.corrupt  # only the corrupted steps' rows are labelled


class Gradients(Injector):
    type, family = "od_grad", "OD"
    description = (
        "corrupted gradients: easy: half the steps get random gradients 100× the true norm with clipping "
        "disabled; hard: a fifth of the steps get random noise 3× the true norm added, clipping kept (the "
        "update's size stays bounded, its direction is corrupted)"
    )
    key_metrics = ("grad_norm", "entropy", "heldout/accuracy")

    def settings(self) -> dict[str, Any]:
        if self.easy:
            return {"rate": 0.5, "noise_scale": 100.0, "clipping": "disabled"}
        return {"rate": 0.2, "added_noise_scale": 3.0, "clipping": "kept"}

    def attach(self, trainer: Any, run: RunContext) -> None:
        gate = _StepGate(self.runtime, 0.5 if self.easy else 0.2)
        trainer.add_callback(gate)
        generator = torch.Generator().manual_seed(run.seed)
        easy = self.easy

        def hook(grad: torch.Tensor) -> torch.Tensor:
            if not gate.corrupt:
                return grad
            # Drawn on the CPU (a seeded CPU generator), then moved to the gradient's device.
            noise = torch.randn(grad.shape, generator=generator, dtype=grad.dtype).to(grad.device)
            noise = noise / noise.norm().clamp(min=1e-12)
            if easy:
                return noise * (100.0 * grad.norm())
            return grad + noise * (3.0 * grad.norm())

        model = trainer.accelerator.unwrap_model(trainer.model)
        for param in model.parameters():
            if param.requires_grad:
                param.register_hook(hook)
        if easy:
            trainer.add_callback(OnsetCallback(self.runtime, lambda t: set_max_grad_norm(t, 1e12)))


class _ResetOptimizer(TrainerCallback):
    """From the onset, every `every` steps: drop the optimizer's state (moments and step counts).

    With `defaults`, the optimizer is also re-initialised with torch's AdamW defaults (lr 1e-3, betas
    (0.9, 0.999), eps 1e-8, weight decay 0.01), as when a resume script rebuilds the optimizer by hand
    without the run's settings; the scheduler follows the new base rate.
    """

    def __init__(self, runtime: FaultRuntime, every: int, defaults: bool) -> None:
        self.runtime = runtime
        self.every = every
        self.defaults = defaults
        self.resets = 0

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        runtime = self.runtime
        if not runtime.active or (runtime.current_step - runtime.spec.onset_step) % self.every:
            return
        optimizer = runtime.trainer.optimizer
        optimizer = getattr(optimizer, "optimizer", optimizer)
        optimizer.state.clear()
        if self.defaults and self.resets == 0:
            defaults = torch.optim.AdamW([torch.zeros(1)]).defaults
            for group in optimizer.param_groups:
                for key in ("betas", "eps", "weight_decay"):
                    group[key] = defaults[key]
            set_learning_rate(runtime.trainer, float(defaults["lr"]))
        self.resets += 1


class OptimizerReset(Injector):
    type, family = "od_optimizer_reset", "OD"
    description = (
        "optimizer state lost, as after a bad resume: easy: once, and the optimizer rebuilt with torch's "
        "AdamW defaults (lr 1e-3); hard: moments dropped every 5th step, settings kept"
    )
    key_metrics = ("learning_rate", "kl", "entropy", "heldout/accuracy")

    def every(self) -> int:
        return 10_000 if self.easy else 5

    def settings(self) -> dict[str, Any]:
        if self.easy:
            return {"reset": "once at onset", "rebuilt_with": "torch AdamW defaults"}
        return {"reset_every_steps": self.every()}

    def attach(self, trainer: Any, run: RunContext) -> None:
        trainer.add_callback(_ResetOptimizer(self.runtime, self.every(), defaults=self.easy))
