"""Read a generated benchmark's registry: its labelled runs, one row each, in registry order."""

from __future__ import annotations

from pathlib import Path

from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry.importers.faultbench import read_registries


def registry_rows(bench: Path) -> list[dict[str, str]]:
    """Rows of `BENCH/metadata/registries/*.csv` (the importer's reader); an error when there are none."""
    rows = list(read_registries(Path(bench)).values())
    if not rows:
        raise RftfmError(f"{bench}: no metadata/registries/*.csv (not a generated benchmark)")
    return rows
