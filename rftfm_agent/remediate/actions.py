"""Remediation actions: typed, JSON-able changes to a training run, applied through the hook seam.

An action is a frozen pydantic record (`kind` tells which). It says what it changes (`changes()`: knob →
new value, what the safety policy checks), what kind of change it is (`category`: a hyperparameter, the
data the loss trains on, the reward function, the environment, or control of the run), and how it is
applied (`install(trainer, run)`). The supervisor applies a plan by resuming the run from a checkpoint
with an `ActionHook` holding its actions, so every action is reversible the same way: resume from the
same checkpoint without it. Nothing an action does deletes anything.

Knob actions are *pinned*: they are applied when training (re)starts, after the trainer restored the
checkpoint's optimizer and scheduler, and re-asserted at every step's start, so that whatever changed the
knob before (a bad resume script, a config reloaded mid-run) does not silently undo the fix. Guards
(gradient, advantage, trajectory filters) act on every training batch through `telemetry.trl_batch` or
around the optimizer step. No action reads which fault was injected: each is a generic mechanism that
does the same thing on a healthy run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from rftfm_agent.hooks import RewardFn, RunContext, TrainerHook
from rftfm_agent.knobs import pin_learning_rate, set_beta, set_generation, set_max_grad_norm
from rftfm_agent.telemetry.trl_batch import add_batch_handler

if TYPE_CHECKING:
    from rftfm_agent.remediate.guards import UpdateGuard

Category = Literal["hyperparameter", "data", "reward", "environment", "control"]


class _Action(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    category: ClassVar[Category] = "hyperparameter"

    def changes(self) -> dict[str, Any]:
        """Knob → new value, for the safety policy (an action without knobs returns {})."""
        return {}

    def absorbs(self) -> tuple[str, ...]:
        """Metrics that stay abnormal by design while the action works (a guard that skips spiking updates
        still logs the spikes): verification judges the run by the other metrics."""
        return ()

    def summary(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.model_dump(exclude={"kind"}).items() if v is not None)
        return f"{self.kind}({fields})"  # type: ignore[attr-defined]

    def install(self, trainer: Any, run: RunContext) -> None:
        """Apply to a built trainer (before `train()` resumes it)."""


class SetLearningRate(_Action):
    """Set the learning rate (divergence: lower it; a stall: raise it)."""

    kind: Literal["set_learning_rate"] = "set_learning_rate"
    value: float = Field(gt=0)

    def changes(self) -> dict[str, Any]:
        return {"learning_rate": self.value}

    def absorbs(self) -> tuple[str, ...]:
        return ("learning_rate",)  # the rate it sets is a jump in the logged rate, by design

    def install(self, trainer: Any, run: RunContext) -> None:
        from rftfm_agent.remediate.callbacks import Pin

        trainer.add_callback(Pin(trainer, lambda t: pin_learning_rate(t, self.value)))


class SetKLCoefficient(_Action):
    """Set β, the KL penalty's coefficient (a run built with β = 0 has no reference model to turn it on)."""

    kind: Literal["set_kl_coefficient"] = "set_kl_coefficient"
    beta: float = Field(ge=0)

    def changes(self) -> dict[str, Any]:
        return {"beta": self.beta}

    def install(self, trainer: Any, run: RunContext) -> None:
        from rftfm_agent.remediate.callbacks import Pin

        set_beta(trainer, self.beta)  # raises now, not mid-training, when β cannot be turned on
        trainer.add_callback(Pin(trainer, lambda t: set_beta(t, self.beta)))


class SetSampling(_Action):
    """Sampling settings: temperature, top-p, and clearing token suppression or biases on the sampler."""

    kind: Literal["set_sampling"] = "set_sampling"
    temperature: float | None = Field(default=None, gt=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    clear_token_bias: bool = False

    def changes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.top_p is not None:
            out["top_p"] = self.top_p
        if self.clear_token_bias:
            out["token_bias"] = "cleared"
        return out

    def _apply(self, trainer: Any) -> None:
        settings: dict[str, Any] = {}
        if self.temperature is not None:
            settings["temperature"] = self.temperature
        if self.top_p is not None:
            settings["top_p"] = self.top_p
        if self.clear_token_bias:
            settings.update(suppress_tokens=None, sequence_bias=None, bad_words_ids=None)
        set_generation(trainer, **settings)

    def install(self, trainer: Any, run: RunContext) -> None:
        from rftfm_agent.remediate.callbacks import Pin

        trainer.add_callback(Pin(trainer, self._apply))


# A sample left out of the loss gets no advantage (`guards.mask_rows`), so its group's advantages no longer
# average 0: the group statistics move by design while a masking fix works (a kept `mask_truncated` fix
# raised a "critical" jump of traj/advantage_group_mean_abs, a new incident that ended in an escalation).
MASKED_ADVANTAGES = ("traj/advantage_group_mean_abs", "traj/advantage_group_std_mean")


class SetCompletionLength(_Action):
    """Cap or raise `max_completion_length`, and/or leave truncated completions out of the loss (DAPO's
    overlong filtering; TRL's `mask_truncated_completions`)."""

    kind: Literal["set_completion_length"] = "set_completion_length"
    max_completion_length: int | None = Field(default=None, ge=1)
    mask_truncated: bool = False

    def changes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.max_completion_length is not None:
            out["max_completion_length"] = self.max_completion_length
        return out

    def absorbs(self) -> tuple[str, ...]:
        if self.mask_truncated:
            return ("completions/clipped_ratio", "traj/truncated_frac", *MASKED_ADVANTAGES)
        return ()

    def install(self, trainer: Any, run: RunContext) -> None:
        import torch

        from rftfm_agent.remediate.callbacks import Pin
        from rftfm_agent.remediate.guards import mask_rows

        if self.max_completion_length is not None:
            length = self.max_completion_length
            trainer.add_callback(Pin(trainer, lambda t: set_generation(t, max_new_tokens=length)))
        if self.mask_truncated:
            eos = trainer.processing_class.eos_token_id

            def edit(_trainer: Any, output: dict[str, Any]) -> None:
                ids: torch.Tensor = output["completion_ids"]
                mask_rows(output, ~(ids == eos).any(dim=1))

            add_batch_handler(trainer, "edit", edit, key="remedy:mask_truncated")


class GradientGuard(_Action):
    """Clip gradients to `max_grad_norm`; skip an update whose gradient is not finite, or whose norm
    before clipping is more than `spike_factor` times the lower quartile of the last accepted ones
    (`guards.UpdateGuard`)."""

    kind: Literal["gradient_guard"] = "gradient_guard"
    max_grad_norm: float = Field(default=1.0, gt=0)
    skip_nonfinite: bool = True
    spike_factor: float | None = Field(default=10.0, gt=1)

    def changes(self) -> dict[str, Any]:
        return {"max_grad_norm": self.max_grad_norm}

    def absorbs(self) -> tuple[str, ...]:
        return ("grad_norm",)

    def install(self, trainer: Any, run: RunContext) -> None:
        from rftfm_agent.remediate.callbacks import Pin
        from rftfm_agent.remediate.guards import update_guard

        guard = update_guard(trainer)
        guard.skip_nonfinite = guard.skip_nonfinite or self.skip_nonfinite
        guard.spike_factor = self.spike_factor
        trainer.add_callback(Pin(trainer, lambda t: set_max_grad_norm(t, self.max_grad_norm)))


class SkipUpdates(_Action):
    """Make no optimizer update at the given 1-based steps: after a rollback, the offending batch comes
    back at the same step (the data order is replayed), and would reproduce a deterministic NaN."""

    kind: Literal["skip_updates"] = "skip_updates"
    category: ClassVar[Category] = "data"
    steps: list[int] = Field(min_length=1)

    def install(self, trainer: Any, run: RunContext) -> None:
        from rftfm_agent.remediate.guards import update_guard

        update_guard(trainer).skip_steps.update(self.steps)


class ResetOptimizer(_Action):
    """Drop the optimizer's moment estimates and warm the learning rate up again over `warmup_steps`;
    with `rewarm_on_state_loss`, warm up again whenever the optimizer's state is found empty mid-run."""

    kind: Literal["reset_optimizer"] = "reset_optimizer"
    warmup_steps: int = Field(default=5, ge=1)
    rewarm_on_state_loss: bool = True

    def changes(self) -> dict[str, Any]:
        return {"warmup_steps": self.warmup_steps}

    def install(self, trainer: Any, run: RunContext) -> None:
        from rftfm_agent.remediate.callbacks import Rewarm

        trainer.add_callback(Rewarm(trainer, self.warmup_steps, self.rewarm_on_state_loss))


class AdvantageGuard(_Action):
    """Check every group's advantages against its rewards (they must sum to about zero, be finite, bounded,
    and ordered like the rewards); recompute a broken group's from its rewards as GRPO defines them."""

    kind: Literal["advantage_guard"] = "advantage_guard"
    tolerance: float = Field(default=1e-3, gt=0)

    def install(self, trainer: Any, run: RunContext) -> None:
        from rftfm_agent.remediate.guards import batch_rewards, repair_advantages

        g, tol = run.num_generations, self.tolerance

        def edit(t: Any, output: dict[str, Any]) -> None:
            rewards = batch_rewards(t, output["advantages"].shape[0])
            if rewards is not None:
                output["advantages"] = repair_advantages(output["advantages"], rewards, g, tol, t)

        add_batch_handler(trainer, "edit", edit, key="remedy:advantage_guard")


class TrajectoryFilter(_Action):
    """Leave samples out of the loss: those whose tool call failed, empty ones, degenerate (repetitive)
    ones, and groups whose rewards are all equal (no learning signal, only KL and noise)."""

    kind: Literal["trajectory_filter"] = "trajectory_filter"
    category: ClassVar[Category] = "data"
    tool_errors: bool = False
    empty: bool = False
    degenerate: bool = False
    zero_variance_groups: bool = False

    def absorbs(self) -> tuple[str, ...]:
        out: tuple[str, ...] = ()
        if self.tool_errors:
            out += ("traj/tool_error_rate", "tools/failure_frequency")
        if self.degenerate:
            out += ("traj/repetition_ratio_mean", "traj/unique_token_ratio_mean", "completion_length")
        if self.zero_variance_groups:
            out += ("frac_reward_zero_std", "traj/zero_std_group_frac")
        if self.tool_errors or self.empty or self.degenerate or self.zero_variance_groups:
            out += MASKED_ADVANTAGES
        return out

    def install(self, trainer: Any, run: RunContext) -> None:
        import torch

        from rftfm_agent.remediate.callbacks import repetitive
        from rftfm_agent.remediate.guards import batch_rewards, mask_rows

        g = run.num_generations
        pad = trainer.processing_class.pad_token_id

        def edit(t: Any, output: dict[str, Any]) -> None:
            mask = output["completion_mask"]
            n = mask.shape[0]
            drop = torch.zeros(n, dtype=torch.bool, device=mask.device)
            if self.tool_errors:
                errors = run.tool_stats.get("tool_error_count") or []
                if len(errors) == n:
                    drop |= torch.tensor([e > 0 for e in errors], device=mask.device)
            if self.empty:
                drop |= mask.sum(dim=1) <= 1  # nothing, or the end-of-sequence token alone
            if self.degenerate:
                drop |= repetitive(output["completion_ids"], mask, pad)
            if self.zero_variance_groups and n % g == 0:
                rewards = batch_rewards(t, n)
                if rewards is not None:
                    std = rewards.view(-1, g).std(dim=1)
                    drop |= (std == 0).repeat_interleave(g).to(mask.device)
            mask_rows(output, drop)

        add_batch_handler(trainer, "edit", edit, key="remedy:trajectory_filter")


class ToolRetry(_Action):
    """Retry a failed tool call up to `retries` times with exponential backoff."""

    kind: Literal["tool_retry"] = "tool_retry"
    category: ClassVar[Category] = "environment"
    retries: int = Field(default=3, ge=1)
    backoff_s: float = Field(default=0.0, ge=0)

    def changes(self) -> dict[str, Any]:
        return {"tool_retries": self.retries}

    def install(self, trainer: Any, run: RunContext) -> None:
        run.tool_policy.retries = self.retries
        run.tool_policy.backoff_s = self.backoff_s


class FallbackReward(_Action):
    """Switch to a reward function the user registered as a fallback (e.g. a stricter verifier)."""

    kind: Literal["fallback_reward"] = "fallback_reward"
    category: ClassVar[Category] = "reward"
    name: str


class Escalate(_Action):
    """Stop automatic remediation and hand the incident to a person, with the evidence."""

    kind: Literal["escalate"] = "escalate"
    category: ClassVar[Category] = "control"
    reason: str


class Observe(_Action):
    """Change nothing; watch `steps` more steps before deciding."""

    kind: Literal["observe"] = "observe"
    category: ClassVar[Category] = "control"
    steps: int = Field(default=3, ge=1)
    reason: str = ""


Action = Annotated[
    SetLearningRate
    | SetKLCoefficient
    | SetSampling
    | SetCompletionLength
    | GradientGuard
    | SkipUpdates
    | ResetOptimizer
    | AdvantageGuard
    | TrajectoryFilter
    | ToolRetry
    | FallbackReward
    | Escalate
    | Observe,
    Field(discriminator="kind"),
]
ACTION_ADAPTER: TypeAdapter[Action] = TypeAdapter(Action)
ACTION_KINDS: tuple[str, ...] = tuple(
    cls.model_fields["kind"].default
    for cls in (
        SetLearningRate,
        SetKLCoefficient,
        SetSampling,
        SetCompletionLength,
        GradientGuard,
        SkipUpdates,
        ResetOptimizer,
        AdvantageGuard,
        TrajectoryFilter,
        ToolRetry,
        FallbackReward,
        Escalate,
        Observe,
    )
)


def parse_action(data: dict[str, Any] | str) -> Action:
    """An action from its JSON (dict or text)."""
    if isinstance(data, str):
        return ACTION_ADAPTER.validate_json(data)
    return ACTION_ADAPTER.validate_python(data)


def is_control(action: Action) -> bool:
    return action.category == "control"


class ActionHook(TrainerHook):
    """A set of actions as one trainer hook: install it in the trainer the run resumes with.

    `fallbacks` are the reward functions the user registered (name → function); a `FallbackReward`
    action's `wrap_reward` returns the named one in place of everything inside it (the reward code).
    """

    name = "remediation"
    reward_layer = "selection"

    def __init__(self, actions: Sequence[Action], fallbacks: dict[str, RewardFn] | None = None) -> None:
        self.actions = [a for a in actions if not is_control(a)]
        self.fallbacks = dict(fallbacks or {})
        for action in self.actions:
            if isinstance(action, FallbackReward) and action.name not in self.fallbacks:
                known = ", ".join(self.fallbacks) or "none"
                raise ValueError(
                    f"no fallback reward named {action.name!r} is registered (registered: {known})"
                )

    def wrap_reward(self, fn: RewardFn) -> RewardFn:
        for action in self.actions:
            if isinstance(action, FallbackReward):
                fallback = self.fallbacks[action.name]

                def switched(*args: Any, _fallback: RewardFn = fallback, **kwargs: Any) -> list[float]:
                    return _fallback(*args, **kwargs)

                switched.__name__ = getattr(fn, "__name__", "reward")  # logged metric names stay the same
                return switched
        return fn

    def install(self, trainer: Any, run: RunContext) -> None:
        for action in self.actions:
            action.install(trainer, run)
        trainer._rftfm_actions_installed = True

    def settings(self) -> dict[str, Any]:
        return {"actions": [a.model_dump() for a in self.actions]}


def guard_of(trainer: Any) -> UpdateGuard | None:
    """The trainer's update guard, if an action installed one (for tests and the journal)."""
    return getattr(trainer, "_rftfm_update_guard", None)
