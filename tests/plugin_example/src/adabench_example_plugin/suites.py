"""A prompt suite of plain text: a suite is a callable with no arguments returning prompts."""

from __future__ import annotations


def texture_smoke() -> list[str]:
    """Three plain-text prompts (not PanWorld: ground-truth metrics are not applicable to them)."""
    return ["a drifting marble texture", "slow clouds of colour", "a field of soft ripples"]
