"""Errors a user can act on: each names the file and what is wrong, in one line."""

from __future__ import annotations

from pathlib import Path


class RftfmError(Exception):
    """Base class for errors that the CLI prints as one line and exits non-zero on (no traceback)."""


class InputError(RftfmError):
    """A file or folder that rftfm cannot read as a run: empty, truncated, corrupt, binary or foreign."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class StoreError(RftfmError):
    """The store was asked for something it does not hold, or cannot be written."""


class NotFittedError(RftfmError):
    """An estimator (detector, diagnoser) was used before `fit` (or `load`) gave it its fitted state."""
