"""Atomic outputs: everything is written under a temporary name beside its target, then renamed.

An interruption (Ctrl-C, kill -9, a full disk) at any moment leaves either the old file or
the new one, never a partial file where a good one was. Temporaries are hidden files in the
target's folder (a rename within one file system is atomic), named ``.NAME.part-PID<suffix>``
so that tools which pick a format from the suffix (ffmpeg) still see it, and so that
:func:`remove_stale_parts` can clean up after a killed run.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

PART = ".part-"


def part_path(path: Path) -> Path:
    """The temporary name for ``path``: hidden, beside it, with the same suffix."""
    return path.with_name(f".{path.name}{PART}{os.getpid()}{path.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` when the block ends normally and is
    removed when the block raises (``path`` is then untouched)."""
    target = Path(path)
    tmp = part_path(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Strict JSON (``NaN`` and infinities refused: give ``None`` for numbers that do not exist)."""
    write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


def remove_stale_parts(folder: str | os.PathLike) -> int:
    """Delete temporaries left in ``folder`` by killed writers (any process); returns how many.

    Only call this where no other process is writing into ``folder`` at the same time.
    """
    removed = 0
    for item in Path(folder).glob(f".*{PART}*"):
        if item.is_file():
            item.unlink(missing_ok=True)
            removed += 1
    return removed
