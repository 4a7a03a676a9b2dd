"""A supervised testbed run: the GRPO testbed, its injected fault (which stays in the world across every
resume), and the supervisor in charge. What `rftfm supervise`, the demo and `rftfm eval remediate` run.

    result = supervised_testbed_run(spec, store, workdir, Policy.load(mode="auto"))

Each segment is a fresh trainer built by the testbed runner with the fault's hooks (made anew, so the
fault acts after a resume exactly as before) plus the supervisor's fixes. The user's registered fallback
reward is the testbed's exact verifier (`runner.correct`): a reward bug lives in the reward code, and the
fallback is other code (see `hooks.REWARD_LAYERS`). Without `fallback`, none is registered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rftfm_agent.detect.api import load_detector
from rftfm_agent.detect.detector import Detector
from rftfm_agent.diagnose.diagnoser import Diagnoser
from rftfm_agent.diagnose.hypothesis import Diagnosis
from rftfm_agent.diagnose.library import Library
from rftfm_agent.faults.registry import hooks_for
from rftfm_agent.remediate.actions import Action
from rftfm_agent.remediate.planner import Plan, PlanContext, make_plan
from rftfm_agent.supervise.policy import Policy
from rftfm_agent.supervise.supervisor import START, SupervisedResult, Supervisor
from rftfm_agent.telemetry.store import Store
from rftfm_agent.testbed.heldout import heldout_accuracy
from rftfm_agent.testbed.runner import RunSpec, _quiet, build, correct

CHECKPOINT_EVERY = 3  # steps between checkpoints in a supervised run (the rollback's granularity)


@dataclass
class SupervisedTestbedRun:
    result: SupervisedResult
    final_step: int
    final_heldout: float | None
    heldout: list[tuple[int, float]] = field(default_factory=list)  # (step, accuracy) of the kept timeline
    steps_trained: int = 0  # optimizer steps over every segment (wasted ones included)
    supervisor: Supervisor | None = None


_SHARED: dict[str, Any] = {}


def shared_models(
    detector_path: Path | None = None, library_path: Path | None = None
) -> tuple[Detector, Diagnoser]:
    """The detector and diagnoser, loaded once per process (the forest fits lazily and is reused)."""
    key = f"{detector_path}|{library_path}"
    if key not in _SHARED:
        _SHARED[key] = (load_detector(detector_path), Diagnoser(Library.load(library_path)))
    return _SHARED[key]


def supervised_testbed_run(
    spec: RunSpec,
    store: Store,
    workdir: str | Path,
    policy: Policy,
    *,
    fallback: bool = True,
    planner: Any = make_plan,
    resume_from: str | None = None,
    actions: list[Action] | None = None,
    detector_path: Path | None = None,
    library_path: Path | None = None,
    quiet: bool = True,
    prepare: Callable[[Supervisor], None] | None = None,
) -> SupervisedTestbedRun:
    """Train `spec` (its fault injected) under a supervisor with `policy`; `prepare(supervisor)` runs before
    training (e.g. `restore` after a person approved a fix)."""
    detector, diagnoser = shared_models(detector_path, library_path)
    spec = spec.model_copy(update={"save_steps": spec.save_steps or CHECKPOINT_EVERY})
    supervisor = Supervisor(
        policy=policy,
        detector=detector,
        diagnoser=diagnoser,
        store=store,
        task=spec.task,
        fallback_rewards={"exact_verifier": correct} if fallback else {},
        run_name=spec.name,
        planner=planner,
    )
    if prepare is not None:
        prepare(supervisor)
    last: dict[str, Any] = {}
    trained = [0]

    def make_trainer(segment: Any) -> Any:
        if "trainer" in last and last.get("counted") != segment.index:  # a retried build counts once
            trained[0] += int(last["trainer"].state.global_step) - last["start"]
            last["counted"] = segment.index
        name = spec.name if segment.index == 0 else f"{spec.name}-s{segment.index}"
        trainer, recorder, heldout = build(
            spec,
            store,
            segment.output_dir,
            hooks=[*hooks_for(spec.fault), segment.hook],
            resumed_from=None if segment.resume_from == START else segment.resume_from,
            run_name=name,
        )
        segment.recorder = recorder
        last.update(trainer=trainer, heldout=heldout, start=_step_of(segment.resume_from))
        return trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)  # as `runner.run` does: the spec's thread count, not the machine's
    try:
        with _quiet(quiet):
            result = supervisor.run(make_trainer, workdir, resume_from=resume_from, actions=actions)
    finally:
        torch.set_num_threads(threads)
    trainer, heldout = last["trainer"], last["heldout"]
    final_step = int(trainer.state.global_step)
    trained[0] += final_step - last["start"]
    history = [(s, a) for s, a in _kept_heldout(supervisor)]
    final = heldout.history[-1][1] if heldout.history and heldout.history[-1][0] == final_step else None
    if final is None:  # stopped early: measure the model it stopped with
        started = time.perf_counter()
        model = trainer.accelerator.unwrap_model(trainer.model)
        final = heldout_accuracy(model, trainer.processing_class, spec.task)
        result.seconds += time.perf_counter() - started
        history.append((final_step, final))
    return SupervisedTestbedRun(result, final_step, final, history, trained[0], supervisor)


def _step_of(checkpoint: str | None) -> int:
    if not checkpoint or checkpoint == START:
        return 0
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])


def _kept_heldout(supervisor: Supervisor) -> list[tuple[int, float]]:
    return [
        (int(r["step"]), float(r["heldout/accuracy"]))
        for r in supervisor.timeline
        if isinstance(r.get("heldout/accuracy"), float)
    ]


def oracle_planner(true_type: str) -> Any:
    """The playbook given the true fault type: separates a wrong diagnosis from a wrong repair."""

    def plan(diagnosis: Diagnosis, context: PlanContext) -> Plan:
        from rftfm_agent.diagnose.hypothesis import Hypothesis
        from rftfm_agent.telemetry.schema import FAULT_TYPES

        truth = Hypothesis(family=FAULT_TYPES[true_type], type=true_type, probability=1.0)
        return make_plan(diagnosis.model_copy(update={"unknown": False, "hypotheses": [truth]}), context)

    return plan
