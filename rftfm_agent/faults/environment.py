"""TE — tool/environment faults: the calculator the tool task's policy calls starts failing or lying.

Injected by reconfiguring the run's `Calculator` at the onset step; the policy sees an error marker
("E|") or a wrong number where the result should be. Only the `tool` task has an environment. A
completion is labelled injected when its own tool call failed or lied because of the fault.
"""

from __future__ import annotations

from typing import Any

from rftfm_agent.errors import RftfmError
from rftfm_agent.faults.base import Injector, OnsetCallback
from rftfm_agent.hooks import RunContext


class _ToolFault(Injector):
    """Sets one of the calculator's rates (`setting`) at the onset step."""

    tasks = ("tool",)
    setting = ""

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.tool_stats: dict[str, list] = {}

    def rate(self) -> float:
        return 0.6 if self.easy else 0.15

    def settings(self) -> dict[str, Any]:
        return {self.setting: self.rate()}

    def attach(self, trainer: Any, run: RunContext) -> None:
        calculator = run.calculator
        if calculator is None:
            raise RftfmError("tool faults need the tool task's calculator (task 'tool')")
        self.tool_stats = run.tool_stats
        rate = self.rate()
        trainer.add_callback(OnsetCallback(self.runtime, lambda t: setattr(calculator, self.setting, rate)))

    def label_columns(self, n: int) -> dict[str, list]:
        cols = super().label_columns(n)
        if self.runtime.active:
            cols["fault_injected"] = list(self.tool_stats.get("tool_fault", cols["fault_injected"]))
        return cols


class ToolError(_ToolFault):
    type, family = "te_tool_error", "TE"
    setting = "error_rate"
    description = "the calculator fails (returns an error) for a share of calls (easy 60%, hard 15%)"
    key_metrics = ("traj/tool_error_rate", "reward", "heldout/accuracy")


class ToolCorrupt(_ToolFault):
    type, family = "te_tool_corrupt", "TE"
    setting = "corrupt_rate"
    description = "the calculator returns a wrong number for a share of calls (easy 60%, hard 15%)"
    key_metrics = ("reward", "heldout/accuracy")
