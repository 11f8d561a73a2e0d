"""Codecs: frames to latent frames and back, one frame at a time.

The backbone never sees pixels: it works on whatever latent a codec produces. ``identity``
keeps pixel space (rescaled to [-1, 1]); ``conv-ae`` is a small per-frame convolutional
autoencoder (32x32x3 -> 8x8x4 by default), the embedded stand-in for a real model's VAE.

Like a real VAE's latent scaling factor, the conv-AE normalises its latents to zero mean and
unit variance per channel (statistics measured on PanWorld frames after training): flow
matching mixes data with unit-variance noise, and raw latents with a std of ~0.26 would be
drowned by noise at t ~ 0.2, leaving the sampler's few steps nothing to resolve detail with.
"""

from __future__ import annotations

import torch
from torch import nn

from adabench.config import ModelConfig


class IdentityCodec(nn.Module):
    """Pixel space: latents are the frames mapped to [-1, 1]."""

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return frames * 2.0 - 1.0                      # [N, 3, H, W]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return ((latents + 1.0) * 0.5).clamp(0.0, 1.0)  # [N, 3, H, W] in [0, 1]


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.SiLU())


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.SiLU())


class ConvAutoencoder(nn.Module):
    """Per-frame conv autoencoder; downsampling by 2 per stage until latent_size is reached."""

    def __init__(self, frame_size: int, latent_size: int, latent_channels: int, hidden: int = 48) -> None:
        super().__init__()
        stages = (frame_size // latent_size).bit_length() - 1
        if latent_size << stages != frame_size:
            raise ValueError(f"frame_size {frame_size} must be latent_size {latent_size} times a power of two")
        enc: list[nn.Module] = [nn.Conv2d(3, hidden, 3, padding=1), nn.SiLU()]
        dec: list[nn.Module] = [nn.Conv2d(latent_channels, hidden, 3, padding=1), nn.SiLU()]
        for _ in range(stages):
            enc.append(_down(hidden, hidden))
            dec.append(_up(hidden, hidden))
        enc.append(nn.Conv2d(hidden, latent_channels, 3, padding=1))
        dec.append(nn.Conv2d(hidden, 3, 3, padding=1))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        # per-channel statistics of the raw (tanh) latent; identity until calibrate() runs
        self.register_buffer("latent_mean", torch.zeros(latent_channels, 1, 1))
        self.register_buffer("latent_std", torch.ones(latent_channels, 1, 1))

    def raw_encode(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.encoder(frames * 2.0 - 1.0))         # [N, C, h, w] in (-1, 1)

    def raw_decode(self, raw: torch.Tensor) -> torch.Tensor:
        return ((self.decoder(raw) + 1.0) * 0.5).clamp(0.0, 1.0)    # [N, 3, H, W]

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return (self.raw_encode(frames) - self.latent_mean) / self.latent_std   # [N, C, h, w] ~ unit variance

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.raw_decode(latents * self.latent_std + self.latent_mean)

    @torch.no_grad()
    def calibrate(self, frames: torch.Tensor) -> None:
        """Set the latent normalisation from frames [N, 3, H, W] (per channel, over N, h, w)."""
        raw = self.raw_encode(frames)                                # [N, C, h, w]
        self.latent_mean.copy_(raw.mean(dim=(0, 2, 3))[:, None, None])
        self.latent_std.copy_(raw.std(dim=(0, 2, 3))[:, None, None].clamp(min=1e-4))


def build_codec(config: ModelConfig) -> nn.Module:
    if config.codec == "identity":
        if config.latent_channels != 3 or config.latent_size != config.frame_size:
            raise ValueError("the identity codec needs latent_channels=3 and latent_size=frame_size")
        return IdentityCodec()
    if config.codec == "conv-ae":
        return ConvAutoencoder(config.frame_size, config.latent_size, config.latent_channels)
    raise ValueError(f"unknown codec {config.codec!r}; accepted: identity, conv-ae")
