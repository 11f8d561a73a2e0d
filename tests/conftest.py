"""Shared fixtures: a tiny deterministic model whose every layer matters."""

from __future__ import annotations

import pytest
import torch

from adabench.config import ModelConfig
from adabench.models import random_init

TINY = ModelConfig(width=64, depth=2, heads=2, latent_size=8, patch=2)
TINY_PIXEL = ModelConfig(width=64, depth=2, heads=2, codec="identity", latent_channels=3, latent_size=32, patch=8)


@pytest.fixture(scope="session")
def tiny_model():
    model, codec = random_init(TINY, seed=1)
    return model.eval(), codec.eval()


@pytest.fixture(scope="session")
def tiny_pixel_model():
    """Pixel-space twin of ``tiny_model``: frames are the sampler's output, not an untrained decoder's."""
    model, codec = random_init(TINY_PIXEL, seed=1)
    return model.eval(), codec.eval()


def fixed_tokens(text: str) -> list[int]:
    """Prompt tokens that need no grammar (engine tests are about the cache, not the world)."""
    return [1, 2, 3, 4, 5]


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
