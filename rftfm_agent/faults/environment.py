"""TE — tool/environment faults: the calculator the tool task's policy calls starts failing or lying.

Injected by reconfiguring the run's `Calculator` at the onset step; the policy sees an error marker
("E|") or a wrong number where the result should be. Only the `tool` task has an environment.
"""

from __future__ import annotations

from typing import Any

from rftfm_agent.errors import RftfmError
from rftfm_agent.faults.base import FaultRuntime, Injector, OnsetCallback, register


def _calculator(runtime: FaultRuntime) -> Any:
    calculator = getattr(runtime, "calculator", None)
    if calculator is None:
        raise RftfmError("tool faults need the tool task's calculator (task 'tool')")
    return calculator


@register
class ToolError(Injector):
    type, family = "te_tool_error", "TE"
    tasks = ("tool",)
    description = "the calculator fails (returns an error) for a share of calls (easy 60%, hard 15%)"
    key_metrics = ("traj/tool_error_rate", "reward", "heldout/accuracy")

    def rate(self) -> float:
        return 0.6 if self.easy else 0.15

    def settings(self) -> dict[str, Any]:
        return {"error_rate": self.rate()}

    def install(self, trainer: Any, runtime: FaultRuntime) -> None:
        calculator = _calculator(runtime)
        rate = self.rate()
        trainer.add_callback(OnsetCallback(runtime, lambda t: setattr(calculator, "error_rate", rate)))


@register
class ToolCorrupt(Injector):
    type, family = "te_tool_corrupt", "TE"
    tasks = ("tool",)
    description = "the calculator returns a wrong number for a share of calls (easy 60%, hard 15%)"
    key_metrics = ("reward", "heldout/accuracy")

    def rate(self) -> float:
        return 0.6 if self.easy else 0.15

    def settings(self) -> dict[str, Any]:
        return {"corrupt_rate": self.rate()}

    def install(self, trainer: Any, runtime: FaultRuntime) -> None:
        calculator = _calculator(runtime)
        rate = self.rate()
        trainer.add_callback(OnsetCallback(runtime, lambda t: setattr(calculator, "corrupt_rate", rate)))
