"""File writing every stage shares: atomic writes, and one policy for NaN and ±Inf in JSON.

Atomic: a file is written under a hidden temporary name in its own folder, flushed to disk, then renamed
over the target (`os.replace`), so a reader sees the old file or the new one, never half of one, and a
crash leaves at most a hidden temporary file behind.

NaN and ±Inf are not JSON. rftfm keeps them (a NaN loss is news), so wherever it writes JSON — CLI output,
reports, stored artifacts — they become the strings "NaN", "Infinity" and "-Infinity", the spellings
Python's `json` module and JavaScript's `Number()` read back. `from_json_safe` turns them back into floats.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def fsync_dir(path: Path) -> None:
    """Flush a folder's entry list, so a rename inside it survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs  # Linux (glibc, musl)
    except (AttributeError, OSError):
        return None


_SYNCFS = _load_syncfs()


def sync_filesystem(path: Path) -> None:
    """Flush every file written to the file system that holds `path`, with one call.

    For a batch of files written without flushing each (a staged ingest of thousands of runs): one
    `syncfs` costs less than an `fsync` per file. Where `syncfs` is missing, `os.sync` (all file systems).
    """
    if _SYNCFS is not None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if _SYNCFS(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_with(path: Path, write: Callable[[Path], Any]) -> None:
    """Atomically create or replace `path` with whatever `write(tmp_path)` writes (e.g. a Parquet writer)."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        write(tmp)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def json_safe(value: Any) -> Any:
    """`value` with NaN/±Inf replaced by their strings and numpy scalars by Python numbers, recursively."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def from_json_safe(value: Any) -> Any:
    """Inverse of `json_safe` for the non-finite strings (other strings are left alone)."""
    if isinstance(value, str) and value in NON_FINITE:
        return NON_FINITE[value]
    if isinstance(value, dict):
        return {k: from_json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json_safe(v) for v in value]
    return value


def dumps(payload: Any, indent: int | None = 2) -> str:
    """JSON text under rftfm's NaN/Inf policy (never the non-standard bare `NaN` token)."""
    return json.dumps(json_safe(payload), indent=indent, allow_nan=False)
