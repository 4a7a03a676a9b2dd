"""What every command shares: consoles, the error decorator, JSON output, the store option, reports."""

from __future__ import annotations

import functools
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from rftfm_agent.errors import RftfmError
from rftfm_agent.telemetry import io
from rftfm_agent.telemetry.store import Store, default_store_path

# Piped output (CI logs, `| less`) gets a wide table instead of rich's 80-column default.
console = Console(width=shutil.get_terminal_size((140, 40)).columns)
err_console = Console(stderr=True, width=shutil.get_terminal_size((140, 40)).columns)

StoreOpt = Annotated[
    Path | None, typer.Option("--store", help="store folder (default: $RFTFM_STORE or ~/.rftfm/store)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Turn rftfm's own errors into one line on stderr and exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RftfmError as exc:
            err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def emit_json(payload: Any) -> None:
    """JSON on stdout under rftfm's one NaN/Inf policy (telemetry.io: "NaN", "Infinity", "-Infinity")."""
    sys.stdout.write(io.dumps(payload) + "\n")


def open_store(path: Path | None) -> Store:
    return Store(path if path is not None else default_store_path())


MapOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--map",
        metavar="KEY=METRIC",
        help="when a PATH is given: rename a logged key before mapping (e.g. --map mean_reward=reward)",
    ),
]


def resolve_runs(store: Store, targets: list[str], key_map: list[str] | None = None) -> list[str]:
    """Store ids for `targets`: each a stored run's id/name/prefix, or a log file/folder, which is imported
    first (importing the same bytes again is a no-op, so asking twice is cheap)."""
    from rftfm_agent.telemetry import importers

    mapping = importers.parse_key_map(key_map or [])
    out: list[str] = []
    for target in targets:
        path = Path(target)
        if not path.exists():
            if mapping:
                raise RftfmError(f"--map applies to a log file or folder; {target!r} is not one")
            out.append(store.resolve(target))
            continue
        out.extend(store.write_run(run)[0].run_id for run in importers.load(path, mapping))
    return out


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def write_report(path: Path, write: Callable[[], Any]) -> None:
    """Write a report file, turning an unwritable path into rftfm's one-line error."""
    try:
        write()
    except OSError as exc:
        raise RftfmError(f"{path}: cannot write the report ({exc.strerror or exc})") from None


def deliver_report(payload: Any, text: str, markdown: Path | None, as_json: bool) -> None:
    """What every report command ends with: Markdown to a file on request, then JSON or the text."""
    if markdown is not None:
        write_report(markdown, lambda: markdown.write_text(text))
    if as_json:
        emit_json(payload)
    else:
        console.print(text, markup=False, highlight=False)
