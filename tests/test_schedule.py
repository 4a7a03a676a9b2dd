"""The configured learning-rate schedule and the rule that compares the logged rate with it."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import TrainingArguments
from transformers.optimization import get_scheduler

from rftfm_agent.detect.api import load_detector
from rftfm_agent.detect.scale_free import ScaleFreeRules
from rftfm_agent.detect.schedule import EXACT, LrSchedule
from rftfm_agent.supervise.policy import Policy
from rftfm_agent.supervise.supervisor import Supervisor
from rftfm_agent.telemetry.run_config import config_from_args

BASE = 3e-4


def _library_rates(scheduler: str, warmup: int, total: int, kwargs: dict | None = None) -> list[float]:
    """transformers' own scheduler: its rate after each optimizer step (what 4.x's Trainer logged at that
    step; 5.x logs the one before, the rate the step used); `kwargs` as the Trainer passes on
    `lr_scheduler_kwargs`."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE)
    schedule = get_scheduler(
        scheduler,
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=total,
        scheduler_specific_kwargs=kwargs,
    )
    rates = []
    for _ in range(total + 2):
        optimizer.step()
        schedule.step()
        rates.append(schedule.get_last_lr()[0])
    return rates  # rates[i] is the rate logged at step i + 1


@pytest.mark.parametrize("scheduler", EXACT)
@pytest.mark.parametrize(("warmup", "total"), [(0, 20), (5, 12), (10, 200)])
def test_the_schedule_reproduces_the_transformers_schedulers(scheduler: str, warmup: int, total: int) -> None:
    schedule = LrSchedule.from_config(
        {"learning_rate": BASE, "lr_scheduler_type": scheduler, "warmup_steps": warmup, "max_steps": total}
    )
    assert schedule is not None and schedule.exact
    for step, rate in enumerate(_library_rates(scheduler, warmup, total), start=1):
        factor = schedule.factor(step)
        assert factor is not None
        assert math.isclose(BASE * factor, rate, rel_tol=1e-9, abs_tol=1e-15), (scheduler, step)


def test_what_the_config_does_not_say_is_judged_by_the_cap_only_or_not_at_all() -> None:
    assert LrSchedule.from_config({}) is None
    assert LrSchedule.from_config({"learning_rate": 0.0}) is None
    assert LrSchedule.from_config({"learning_rate": BASE, "lr_scheduler_type": "greedy"}) is None
    no_total = LrSchedule.from_config({"learning_rate": BASE, "lr_scheduler_type": "linear", "max_steps": -1})
    assert no_total is not None and not no_total.exact and no_total.bounds(50) == (None, BASE)
    shaped = LrSchedule.from_config(
        {"learning_rate": BASE, "lr_scheduler_type": "cosine", "max_steps": 100, "lr_scheduler_kwargs": True}
    )
    assert shaped is not None and not shaped.exact
    ratio = LrSchedule.from_config(
        {"learning_rate": BASE, "lr_scheduler_type": "linear", "warmup_ratio": 0.1, "max_steps": 100}
    )
    assert ratio is not None and ratio.warmup_steps == 10
    share = LrSchedule.from_config(  # transformers 5: warmup_steps under 1 is a share of the total
        {"learning_rate": BASE, "lr_scheduler_type": "linear", "warmup_steps": 0.05, "total_steps": 200}
    )
    assert share is not None and share.warmup_steps == 10


def _fired(config: dict, rates: list[float], start: int = 1) -> dict[str, dict]:
    rules = ScaleFreeRules(online=True, whole_run=False, schedule=LrSchedule.from_config(config))
    fired = {}
    for step, rate in enumerate(rates, start=start):
        for event in rules.update(step, {"learning_rate": rate}):
            fired[event.check] = {"step": event.step, **event.evidence}
    return fired


TESTBED = {"learning_rate": BASE, "lr_scheduler_type": "linear", "warmup_steps": 5, "max_steps": 40}


@pytest.mark.parametrize("scheduler", [*EXACT, "reduce_lr_on_plateau"])
def test_a_run_at_its_configured_rate_is_quiet(scheduler: str) -> None:
    config = {**TESTBED, "lr_scheduler_type": scheduler}
    library = "constant" if scheduler == "reduce_lr_on_plateau" else scheduler
    assert _fired(config, _library_rates(library, 5, 40)) == {}
    # a console log that rounds to one significant digit, and one that logs before the scheduler steps
    rounded = [float(f"{r:.0e}") for r in _library_rates(library, 5, 40)]
    assert _fired(config, rounded) == {}
    assert _fired(config, [0.0, *_library_rates(library, 5, 40)[:-1]]) == {}


@pytest.mark.parametrize(
    ("factor", "way"), [(0.1, "below"), (0.01, "below"), (8.0, "above"), (100.0, "above")]
)
def test_a_rate_off_its_schedule_from_step_1_fires_within_three_steps(factor: float, way: str) -> None:
    rates = [r * factor for r in _library_rates("linear", 5, 40)]
    fired = _fired(TESTBED, rates)
    assert set(fired) == {"lr_off_schedule"}
    event = fired["lr_off_schedule"]
    assert event["way"] == way and event["step"] <= 4
    assert event["configured"] == BASE


def test_a_rate_cut_during_warm_up_fires_where_no_jump_rule_can() -> None:
    rates = _library_rates("linear", 5, 12)
    cut = rates[:5] + [r * 0.01 for r in rates[5:]]  # the od_lr fault at step 6 of a 5-step warm-up
    fired = _fired({**TESTBED, "max_steps": 12}, cut)
    assert fired["lr_off_schedule"]["way"] == "below" and fired["lr_off_schedule"]["step"] == 8


def test_without_a_schedule_the_rule_never_runs_and_a_logged_zero_is_not_its() -> None:
    rates = [r * 0.1 for r in _library_rates("linear", 5, 40)]
    assert _fired({}, rates) == {}
    assert _fired(TESTBED, [0.0] * 10) == {}
    # the end of a decay: the expected rate is near 0, any ratio there is noise
    end = _library_rates("linear", 5, 40)
    assert _fired(TESTBED, end[:-4] + [r * 0.1 for r in end[-4:]]) == {}


def _args(**overrides: Any) -> TrainingArguments:
    """Training arguments of a 40-step cosine run with a 5-step warm-up, as a recorded run's trainer has."""
    settings = {"learning_rate": BASE, "lr_scheduler_type": "cosine", "warmup_steps": 5, "max_steps": 40}
    return TrainingArguments(output_dir="unused", report_to=[], **{**settings, **overrides})


def test_a_recorded_run_with_scheduler_kwargs_is_judged_by_the_cap_not_a_shape_it_does_not_have() -> None:
    """The recorder's config carries `lr_scheduler_kwargs`: without them a cosine of 1.5 cycles, which
    climbs back up, was compared with the plain cosine and called off its schedule."""
    shaped = {"num_cycles": 1.5}
    config = config_from_args(_args(lr_scheduler_kwargs=shaped))
    assert config["lr_scheduler_kwargs"] == shaped
    rates = _library_rates("cosine", 5, 40, shaped)[:40]
    assert _fired(config, rates) == {}
    without = {k: v for k, v in config.items() if k != "lr_scheduler_kwargs"}
    assert "lr_off_schedule" in _fired(without, rates)  # the false alarm the kwargs prevent
    # transformers' default, {}: the scheduler's own defaults, judged exactly
    plain = config_from_args(_args())
    assert "lr_scheduler_kwargs" not in plain
    assert LrSchedule.from_config(plain).exact  # type: ignore[union-attr]
    opaque = config_from_args(_args(lr_scheduler_kwargs={"fn": object()}))  # kept as text: still counts
    assert opaque["lr_scheduler_kwargs"]["fn"].startswith("<object")


@pytest.mark.parametrize(("kwargs", "exact"), [({}, True), ({"num_cycles": 1.5}, False)])
def test_the_supervisor_takes_the_schedule_and_its_kwargs_from_the_trainer(kwargs: dict, exact: bool) -> None:
    supervisor = Supervisor(policy=Policy.load(mode="auto"), detector=load_detector(), diagnoser=None)  # type: ignore[arg-type]
    supervisor.set_schedule(SimpleNamespace(args=_args(lr_scheduler_kwargs=kwargs)), total_steps=40)
    schedule = supervisor.lr_schedule()
    assert schedule is not None and schedule.exact is exact and schedule.total_steps == 40
