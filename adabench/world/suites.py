"""PanWorld prompt suites: shipped prompt files plus a reader for user prompt files."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from adabench.errors import UserError
from adabench.world.prompts import parse_prompt


def parse_prompt_lines(text: str, source: str) -> list[str]:
    """Prompts from file text: one per line, '#' starts a comment, blank lines skipped.

    Each prompt is validated and returned in canonical form; an error names ``source``
    and the line number.
    """
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            prompts.append(parse_prompt(line).text)
        except UserError as err:
            raise UserError(f"{source}, line {number}: {err}") from None
    return prompts


def read_prompt_file(path: str | Path) -> list[str]:
    """Validated prompts of a prompt file (see ``parse_prompt_lines``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read prompt file {str(path)!r}: {err.__class__.__name__}: {err}") from None
    prompts = parse_prompt_lines(text, str(path))
    if not prompts:
        raise UserError(f"prompt file {str(path)!r} holds no prompts (one per line, '#' starts a comment)")
    return prompts


def _shipped(name: str) -> list[str]:
    text = resources.files("adabench.world").joinpath("suites", f"{name}.txt").read_text(encoding="utf-8")
    return parse_prompt_lines(text, f"suite {name}")


def panworld_default() -> list[str]:
    """16 prompts: still, slow and fast; all directions, scenes, colours and shapes."""
    return _shipped("panworld-default")


def panworld_smoke() -> list[str]:
    """3 prompts for CI: one still, one slow, one fast."""
    return _shipped("panworld-smoke")
