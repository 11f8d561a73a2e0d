"""Wan2.1's VAE (diffusers' ``AutoencoderKLWan``) decoding chunk by chunk.

diffusers decodes a whole latent video in one call, one latent frame at a time, with a causal
temporal feature cache that it resets at every call. Here the cache lives in a
:class:`StreamingDecode` per rollout and is carried from chunk to chunk, so decoding chunk by
chunk gives the frames of a one-shot decode of the whole latent video. The first latent frame
decodes to 1 pixel frame, every later one to 4.
"""

from __future__ import annotations

import torch


def random_vae(size: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised Wan2.1 VAE: its real configuration (``1.3b``) or a tiny twin (``tiny``)."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    kwargs = {} if size == "1.3b" else dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                            temperal_downsample=[False, True, True])
    with torch.device(device):
        vae = AutoencoderKLWan(**kwargs)
    # torch's own cast: diffusers' ModelMixin.to warns about float32 modules that AutoencoderKLWan does not have
    return torch.nn.Module.to(vae, dtype=dtype).eval().requires_grad_(False)


class StreamingDecode:
    """One rollout's decoder state: latent frames in (normalised, as the DiT makes them), pixel frames out."""

    def __init__(self, vae: torch.nn.Module) -> None:
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

        if getattr(vae.config, "patch_size", None):
            raise ValueError("a patchified Wan VAE (Wan2.2); accepted: Wan2.1's AutoencoderKLWan")
        self.vae = vae
        self.feat_cache: list = [None] * sum(isinstance(m, WanCausalConv3d) for m in vae.decoder.modules())
        param = next(vae.parameters())
        self.mean = torch.tensor(vae.config.latents_mean, dtype=param.dtype, device=param.device).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(vae.config.latents_std, dtype=param.dtype, device=param.device).view(1, -1, 1, 1, 1)
        self.frames_in = 0

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [n, C, h, w] -> pixel frames [P, 3, 8h, 8w] float32 in [0, 1] on the CPU."""
        param = next(self.vae.parameters())
        z = latents.to(param.device, param.dtype).transpose(0, 1)[None]           # [1, C, n, h, w]
        z = z * self.std + self.mean                                               # undo the DiT's normalisation
        x = self.vae.post_quant_conv(z)
        outs = []
        for i in range(x.shape[2]):
            first = self.frames_in == 0
            outs.append(self.vae.decoder(x[:, :, i:i + 1], feat_cache=self.feat_cache, feat_idx=[0], first_chunk=first))
            self.frames_in += 1
        video = torch.cat(outs, dim=2).clamp(-1.0, 1.0)                            # [1, 3, P, H, W]
        return ((video[0].transpose(0, 1).float() + 1.0) * 0.5).cpu()             # [P, 3, H, W] in [0, 1]

