"""User-facing errors: one clear line, exit code 2, never a traceback."""

from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in what the user asked for (bad name, bad value, unwritable path).

    The CLI prints ``adabench: error: <message>`` and exits with code 2. The message
    must say what was wrong and what is accepted.
    """


class MissingWeightsError(UserError):
    """Pretrained weights (RAFT, CLIP, LPIPS, a shipped checkpoint) are not available locally."""
