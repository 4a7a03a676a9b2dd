"""Benchmark presets: which runs to make, each with its labels, deterministic from (preset, seed).

A preset is a list of *cells* (one healthy control each, with its own honest knobs: task, seed, batch size,
learning rate, KL coefficient, run length) and fault runs placed in cells. A fault run trains exactly its
cell's configuration plus one injected fault, so its cell's control is its matched healthy twin, and the
controls vary the knobs a detector must not mistake for a fault.

- `mini`: 16 cells and every fault type × strength × onset style once (64 faults): 80 short runs.
- `mid`: 48 cells of 30 steps and every type × strength × onset style twice (128 faults): 176 runs, for
  the remediation evaluation.
- `full`: 204 cells and every type × strength × onset style nine times (576 faults): 780 runs,
  23,400 optimizer steps, ~1.6M trajectories — at least the paper's scale (779 runs, 22,549 step
  records, 1,457,288 trajectory records).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rftfm_agent.errors import RftfmError
from rftfm_agent.faults.registry import INJECTORS
from rftfm_agent.telemetry.schema import FAULT_TYPES, FaultSpec
from rftfm_agent.testbed.runner import RunSpec

ONSET_STYLES = ("step1", "midrun")
STRENGTHS = ("easy", "hard")
PAPER_SCALE = {"runs": 779, "steps": 22_549, "trajectories": 1_457_288}


@dataclass(frozen=True)
class RunPlan:
    """One run to make and its labels."""

    experiment_id: str
    spec: RunSpec
    control_or_fault: str  # "control" | "fault"
    cell: str  # the cell whose control is this run's matched healthy twin
    onset_style: str  # "step1" | "midrun" | "" for controls

    @property
    def fault(self) -> FaultSpec | None:
        return self.spec.fault

    def registry_row(self) -> dict[str, object]:
        fault = self.spec.fault
        return {
            "experiment_id": self.experiment_id,
            "control_or_fault": self.control_or_fault,
            "fault_type": fault.type if fault else "",
            "fault_family": fault.family if fault else "",
            "task_group": self.spec.task,
            "onset_step": fault.onset_step if fault else "",
            "strength": fault.strength if fault else "",
            "seed": self.spec.seed,
            "onset_style": self.onset_style,
            "variant": (fault.variant or "") if fault else "",
            "cell": self.cell,
            "steps": self.spec.steps,
            "batch_size": self.spec.batch_size,
            "learning_rate": self.spec.learning_rate,
            "beta": self.spec.beta,
        }


EVAL_EVERY = 10  # held-out evaluations at step 1, every 10 steps and the last: enough for the lost gain


@dataclass(frozen=True)
class PresetShape:
    name: str
    cells: int
    repeats: int  # fault runs per type × strength × onset style
    steps: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    learning_rates: tuple[float, ...]
    betas: tuple[float, ...]
    tool_share: int  # every n-th cell is a tool-task cell (TE faults need one)


PRESETS: dict[str, PresetShape] = {
    "mini": PresetShape("mini", 16, 1, (12,), (32,), (2e-4, 3e-4), (0.04,), 2),
    # Learning rates around the testbed's default (2e-4): every one of them learns within 20 steps.
    # For the remediation evaluation: full-length runs (so a fault costs a visible share of the gain and a
    # fix has steps left to recover in), every type × strength × onset style twice. Generate it with a seed
    # other than full's (e.g. --seed 7) so that its cells are not the ones the shipped models were fitted on.
    "mid": PresetShape("mid", 48, 2, (30,), (48, 64), (1e-4, 2e-4, 3e-4), (0.02, 0.04, 0.08), 3),
    "full": PresetShape(
        "full", 204, 9, (20, 30, 40), (48, 64, 96), (1e-4, 2e-4, 3e-4), (0.02, 0.04, 0.08), 3
    ),
}


def plan(preset: str, seed: int = 0) -> list[RunPlan]:
    """Every run of a preset, in a fixed order (shuffled by `seed`, so ids carry no label)."""
    try:
        shape = PRESETS[preset]
    except KeyError:
        raise RftfmError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}") from None
    rng = random.Random(f"preset-{preset}-{seed}")
    arith = ("arith_a", "arith_b")
    cells: list[RunSpec] = []
    for i in range(shape.cells):
        task = "tool" if i % shape.tool_share == 0 else arith[(i // shape.tool_share + i) % 2]
        cells.append(
            RunSpec(
                name=f"cell{i}",
                task=task,
                seed=seed * 100_000 + i,
                steps=shape.steps[i % len(shape.steps)],
                batch_size=shape.batch_sizes[(i // len(shape.steps)) % len(shape.batch_sizes)],
                learning_rate=shape.learning_rates[(i // 2) % len(shape.learning_rates)],
                beta=shape.betas[(i // 3) % len(shape.betas)],
                eval_every=EVAL_EVERY,
            )
        )
    tool_cells = [i for i, c in enumerate(cells) if c.task == "tool"]
    items: list[tuple[str, RunSpec, str, str]] = [("control", c, f"cell{i}", "") for i, c in enumerate(cells)]
    for kind in sorted(FAULT_TYPES):
        injector_cls = INJECTORS[kind]
        for strength in STRENGTHS:
            for style in ONSET_STYLES:
                for rep in range(shape.repeats):
                    choices = tool_cells if injector_cls.tasks == ("tool",) else range(len(cells))
                    index = rng.choice(list(choices))
                    cell = cells[index]
                    onset = 1 if style == "step1" else rng.randint(cell.steps // 3, cell.steps // 2)
                    variants = injector_cls.variants
                    variant = variants[(rep + (style == "midrun") + (strength == "hard")) % len(variants)]
                    fault = FaultSpec(
                        family=FAULT_TYPES[kind],  # type: ignore[arg-type]
                        type=kind,
                        strength=strength,  # type: ignore[arg-type]
                        onset_step=onset,
                        variant=variant if len(variants) > 1 else None,
                    )
                    items.append(("fault", cell.model_copy(update={"fault": fault}), f"cell{index}", style))
    rng.shuffle(items)
    plans = []
    for n, (kind, spec, cell, style) in enumerate(items):
        experiment_id = f"{preset}-s{seed}-{n:04d}"
        spec = spec.model_copy(update={"name": experiment_id, "experiment_id": experiment_id})
        plans.append(RunPlan(experiment_id, spec, kind, cell, style))
    return plans


def scale(plans: list[RunPlan]) -> dict[str, int]:
    """Runs, optimizer steps and trajectory records a plan will produce."""
    return {
        "runs": len(plans),
        "steps": sum(p.spec.steps for p in plans),
        "trajectories": sum(p.spec.steps * p.spec.batch_size for p in plans),
        "controls": sum(p.control_or_fault == "control" for p in plans),
        "faults": sum(p.control_or_fault == "fault" for p in plans),
    }
