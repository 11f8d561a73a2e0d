"""Architecture of a Wan2.1 text-to-video DiT, and the frame geometry a generator runs it at."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from adabench.errors import UserError

VAE_STRIDE = (4, 8, 8)          # Wan2.1's VAE: 4 pixel frames per latent frame (the first: 1), 8x8 pixels


@dataclass(frozen=True)
class WanConfig:
    """What rebuilds the DiT's modules (Wan's own field names)."""

    dim: int = 1536
    ffn_dim: int = 8960
    freq_dim: int = 256
    text_dim: int = 4096
    in_dim: int = 16
    out_dim: int = 16
    num_heads: int = 12
    num_layers: int = 30
    patch: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    text_len: int = 512              # prompts are padded to this many umT5 tokens
    cross_attn_norm: bool = True

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not a multiple of num_heads {self.num_heads}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ValueError(f"head dim {self.head_dim} must be even and >= 6 (3D RoPE)")
        if self.patch[0] != 1:
            raise ValueError(f"temporal patch {self.patch[0]} is not supported; accepted: 1 (Wan2.1)")

    # --- what adabench's Rollout reads ---------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def depth(self) -> int:
        return self.num_layers

    @property
    def heads(self) -> int:
        return self.num_heads

    @property
    def rope_time_dims(self) -> int:
        """Head dims rotated by time: what is left after 2 * (head_dim // 6) for each of y and x (Wan's split)."""
        return self.head_dim - 4 * (self.head_dim // 6)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_diffusers(cls, cfg: dict[str, Any]) -> "WanConfig":
        """From a diffusers ``transformer/config.json`` (``WanTransformer3DModel``)."""
        if cfg.get("image_dim") or cfg.get("added_kv_proj_dim"):
            raise ValueError("an image-to-video Wan transformer (image_dim set); accepted: text-to-video Wan2.1")
        heads, head_dim = int(cfg["num_attention_heads"]), int(cfg["attention_head_dim"])
        in_dim = int(cfg.get("in_channels", 16))
        return cls(dim=heads * head_dim, ffn_dim=int(cfg["ffn_dim"]), freq_dim=int(cfg.get("freq_dim", 256)),
                   text_dim=int(cfg.get("text_dim", 4096)), in_dim=in_dim, out_dim=int(cfg.get("out_channels") or in_dim),
                   num_heads=heads, num_layers=int(cfg["num_layers"]), patch=tuple(cfg.get("patch_size", (1, 2, 2))),
                   eps=float(cfg.get("eps", 1e-6)), cross_attn_norm=bool(cfg.get("cross_attn_norm", True)))


WAN_1_3B = WanConfig()
# A CPU-sized twin for tests (2 layers, 2 heads x 12, text dim 32, as diffusers' own tests use).
TINY = WanConfig(dim=24, ffn_dim=32, freq_dim=16, text_dim=32, num_heads=2, num_layers=2)
SIZES = {"1.3b": WAN_1_3B, "tiny": TINY}


@dataclass(frozen=True)
class Geometry:
    """Pixel frame size -> latent grid -> token grid of one latent frame."""

    height: int
    width: int
    patch: tuple[int, int, int] = (1, 2, 2)

    def __post_init__(self) -> None:
        step = VAE_STRIDE[1] * self.patch[1]
        for name, value in (("height", self.height), ("width", self.width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < step or value % step:
                raise UserError(f"{name}={value!r} is invalid; accepted: a multiple of {step} (VAE 8 x patch 2), "
                                f"at least {step}")

    @property
    def latent(self) -> tuple[int, int]:
        return self.height // VAE_STRIDE[1], self.width // VAE_STRIDE[2]

    @property
    def grid(self) -> tuple[int, int]:
        """Tokens per latent frame as (rows, cols): 30 x 52 = 1,560 at 480 x 832."""
        h, w = self.latent
        return h // self.patch[1], w // self.patch[2]

    @property
    def tokens_per_frame(self) -> int:
        rows, cols = self.grid
        return rows * cols


def latent_frames_for(pixel_frames: int) -> int:
    """Latent frames whose decode covers ``pixel_frames``: the first latent frame decodes to 1
    pixel frame, every other to 4 (81 pixel frames <-> 21 latent frames)."""
    return 1 + -(-(pixel_frames - 1) // VAE_STRIDE[0])


def pixel_frames_of(latent_start: int, latent_count: int) -> int:
    """Pixel frames that latent frames ``latent_start .. latent_start + latent_count - 1`` decode to."""
    return sum(1 if i == 0 else VAE_STRIDE[0] for i in range(latent_start, latent_start + latent_count))
