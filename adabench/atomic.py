"""Atomic outputs: everything is written under a temporary name beside its target, then renamed.

An interruption (Ctrl-C, kill -9, a full disk) at any moment leaves either the old file or
the new one, never a partial file where a good one was. Temporaries are hidden files in the
target's folder (a rename within one file system is atomic), named ``.NAME.part-PID<suffix>``
so that tools which pick a format from the suffix (ffmpeg) still see it, and so that
:func:`remove_stale_parts` can clean up after a killed run.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

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


def remove_stale_parts(folder: str | os.PathLike, names: Iterable[str] | None = None) -> int:
    """Delete temporaries left in ``folder`` by killed writers (any process); returns how many.

    Without ``names``: every temporary in ``folder``; only call this where no other process is
    writing into it at the same time. With ``names``: only the temporaries of those targets
    (``.NAME.part-PID...``) whose writer PID is no longer running, so a live writer's are kept.
    """
    removed = 0
    patterns = [f".*{PART}*"] if names is None else [f".{glob.escape(name)}{PART}*" for name in names]
    for item in (item for pattern in patterns for item in Path(folder).glob(pattern)):
        if item.is_file() and (names is None or not writer_alive(item)):
            item.unlink(missing_ok=True)
            removed += 1
    return removed


def writer_alive(part: Path) -> bool:
    """Whether the process whose PID is in the temporary's name (``...part-PID...``) still runs."""
    digits = "".join(itertools.takewhile(str.isdigit, part.name.rpartition(PART)[2]))
    if not digits:
        return False
    try:
        os.kill(int(digits), 0)
    except PermissionError:                         # alive, under another user
        return True
    except (ProcessLookupError, OverflowError):     # gone, or no PID at all
        return False
    return True
