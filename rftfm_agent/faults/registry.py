"""Every fault injector by type, and a fault as the trainer hooks that inject it.

    hooks = hooks_for(parse_fault("od_lr:easy@8"))    # [] for None: a healthy control
    run(spec, store, workdir, hooks=hooks)

The list is explicit: importing this module imports every family's module, and nothing registers itself.
"""

from __future__ import annotations

from rftfm_agent.errors import RftfmError
from rftfm_agent.faults.base import Injector
from rftfm_agent.faults.credit import AdvantageSign, Baseline, GroupMisalign
from rftfm_agent.faults.environment import ToolCorrupt, ToolError
from rftfm_agent.faults.generation import Degenerate, Temperature, Truncation
from rftfm_agent.faults.optimization import Gradients, KLCoefficient, LearningRate, OptimizerReset
from rftfm_agent.faults.reward import Hackable, Noise, SignFlip, Sparse
from rftfm_agent.hooks import TrainerHook
from rftfm_agent.telemetry.schema import FaultSpec

INJECTORS: dict[str, type[Injector]] = {
    cls.type: cls
    for cls in (
        SignFlip,
        Noise,
        Hackable,
        Sparse,
        Temperature,
        Truncation,
        Degenerate,
        LearningRate,
        KLCoefficient,
        Gradients,
        OptimizerReset,
        AdvantageSign,
        GroupMisalign,
        Baseline,
        ToolError,
        ToolCorrupt,
    )
}


def make_injector(spec: FaultSpec) -> Injector:
    try:
        return INJECTORS[spec.type](spec)
    except KeyError:
        raise RftfmError(
            f"no injector for fault type {spec.type!r}; known: {', '.join(sorted(INJECTORS))}"
        ) from None


def hooks_for(fault: FaultSpec | None) -> list[TrainerHook]:
    """The hooks that inject `fault` into a run (none for a healthy run)."""
    return [make_injector(fault)] if fault is not None else []
