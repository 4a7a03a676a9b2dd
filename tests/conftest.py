"""Shared fixtures: paths to the hand-written fixture logs and to the real runs (when present)."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REALRUNS = Path(__file__).resolve().parents[1].parent / "shared" / "realruns"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def realruns() -> Path:
    if not REALRUNS.is_dir():
        pytest.skip("../shared/realruns is not present on this machine")
    return REALRUNS
