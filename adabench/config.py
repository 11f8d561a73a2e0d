"""Architecture of the embedded causal video DiT and its codec."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's modules (stored in every checkpoint)."""

    frame_size: int = 32          # rendered frames are frame_size x frame_size RGB
    codec: str = "conv-ae"        # "identity" (pixel space) or "conv-ae" (learned per-frame autoencoder)
    latent_channels: int = 4      # channels of a latent frame (3 for identity)
    latent_size: int = 8          # latent frames are latent_size x latent_size
    patch: int = 2                # latent pixels per token side
    width: int = 128              # transformer width
    depth: int = 4                # transformer blocks
    heads: int = 4                # attention heads; head_dim = width // heads
    vocab_size: int = 64          # prompt token vocabulary (PanWorld grammar words)
    prompt_tokens: int = 5        # prompt token ids per prompt
    mlp_ratio: int = 4
    rope_time_dims: int = 8       # head dims rotated by the time position; the rest split between y and x

    def __post_init__(self) -> None:
        if self.latent_size % self.patch:
            raise ValueError(f"latent_size {self.latent_size} is not a multiple of patch {self.patch}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        space = self.head_dim - self.rope_time_dims
        if self.rope_time_dims % 2 or space % 4:
            raise ValueError("head_dim - rope_time_dims must split into two even halves and rope_time_dims be even")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def grid(self) -> int:
        """Tokens per side of one latent frame."""
        return self.latent_size // self.patch

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid

    @property
    def token_dim(self) -> int:
        return self.latent_channels * self.patch * self.patch

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

