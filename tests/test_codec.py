"""The conv-AE codec's latent normalisation: unit variance per channel on unseen frames, and
exactly inverted by decode."""

from __future__ import annotations

import torch

from adabench.codec import ConvAutoencoder
from adabench.training.data import clip_batch


def test_calibrated_latents_have_unit_variance_on_held_out_frames():
    torch.manual_seed(0)
    codec = ConvAutoencoder(32, 8, 4).eval()
    calibration = clip_batch(5, 0, 256, 2).frames.flatten(0, 1)       # [512, 3, 32, 32]
    held_out = clip_batch(6, 0, 256, 2).frames.flatten(0, 1)
    raw = codec.raw_encode(held_out)
    assert raw.std(dim=(0, 2, 3)).max() < 0.5          # the premise: raw latents are far from unit scale
    codec.calibrate(calibration)
    with torch.no_grad():
        z = codec.encode(held_out)                                     # [512, 4, 8, 8]
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=0.1)
    assert torch.allclose(z.std(dim=(0, 2, 3)), torch.ones(4), atol=0.1)


def test_normalisation_is_inverted_exactly_by_decode():
    torch.manual_seed(0)
    codec = ConvAutoencoder(32, 8, 4).eval()
    frames = clip_batch(5, 1, 64, 2).frames.flatten(0, 1)
    codec.calibrate(frames)
    assert not torch.allclose(codec.latent_std, torch.ones_like(codec.latent_std))
    with torch.no_grad():
        assert torch.allclose(codec.decode(codec.encode(frames)), codec.raw_decode(codec.raw_encode(frames)), atol=1e-5)
