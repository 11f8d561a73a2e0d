"""The conv-AE codec's latent normalisation: unit variance per channel on unseen frames, and
exactly inverted by decode; the shift-equivariance error behind the codec recipe."""

from __future__ import annotations

import torch

from adabench.codec import ConvAutoencoder
from adabench.training.data import clip_batch
from adabench.training.objectives import equivariance_errors, translate


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


def test_translate_moves_content_by_known_subpixel_shifts():
    """Bilinear translation is exact on a linear ramp: content moved by (dx, dy) reads ramp(x - dx, y - dy)."""
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    ramp = (2 * xs + 3 * ys)[None, None].repeat(2, 1, 1, 1)                 # [2, 1, 8, 8]
    shift = torch.tensor([[0.5, 0.0], [-1.5, 0.25]])
    moved = translate(ramp, shift)
    for i, (dx, dy) in enumerate(shift.tolist()):
        truth = 2 * (xs - dx) + 3 * (ys - dy)
        assert torch.allclose(moved[i, 0, 2:-2, 2:-2], truth[2:-2, 2:-2], atol=1e-5)
    assert torch.equal(translate(ramp, torch.zeros(2, 2)), ramp)


class _PixelCodec(torch.nn.Module):
    """A codec whose latent is the frame itself: shift-equivariant by construction."""

    def raw_decode(self, raw):
        return raw


def test_equivariance_errors_vanish_only_for_an_equivariant_codec():
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    velocity = torch.tensor([[1.5, 0.0], [0.0, -0.5]])
    frame0 = (0.02 * xs + 0.03 * ys)[None, None].repeat(2, 3, 1, 1)          # [2, 3, 16, 16]
    frame1 = torch.stack([0.02 * (xs - vx) + 0.03 * (ys - vy) for vx, vy in velocity.tolist()])[:, None].repeat(1, 3, 1, 1)
    frames = torch.stack([frame0, frame1], dim=1)                            # [2, 2, 3, 16, 16]
    lat, dec = equivariance_errors(_PixelCodec(), frames, frames, velocity)  # latent = pixels
    assert lat.item() < 1e-10 and dec.item() < 1e-10
    frozen = torch.stack([frame0, frame0], dim=1)                            # frame 1's latent does not move
    assert equivariance_errors(_PixelCodec(), frozen, frames, velocity)[0].item() > 1e-3
    ahead = torch.stack([frame1, frame1], dim=1)                             # frame 0's latent is already moved
    assert equivariance_errors(_PixelCodec(), ahead, frames, velocity)[1].item() > 1e-5
