"""Throughput of a Wan rollout, with a definition for every number.

From the generator's own per-chunk timings (GPU synchronised by the generator):

- **DiT time** of a chunk: its sampler passes plus the commit pass (``denoise + commit``),
  no VAE; **end-to-end time**: DiT time plus the streaming VAE decode (``total``); the text
  encoder runs once per prompt before the rollout and is not in either;
- **FPS** = frames / time over the chunks after ``warmup`` chunks, in **latent frames** (what
  the DiT makes) and in **pixel frames** (what is shown; a latent frame decodes to 4 pixel
  frames, the first one to 1), each for DiT time and for end-to-end time;
- **first-chunk latency**: end-to-end time of chunk 0 (warm-up included, as a viewer waits it);
- per-chunk **p50 / p95** after warm-up and their **trend** (least-squares slope in ms per
  chunk: 0 = no slow-down as the rollout grows).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from adabench.chunk import Chunk
from adabench.metrics.throughput import percentile, slope


def latent_index(pixel_frame: int) -> int:
    """The latent frame a pixel frame decodes from (frame 0 from latent 0, then 4 per latent)."""
    return 0 if pixel_frame == 0 else 1 + (pixel_frame - 1) // 4


def latent_frames(chunk: Chunk) -> int:
    """Latent frames a chunk decoded (the last one may be trimmed to the asked pixel frames)."""
    return latent_index(chunk.start_frame + chunk.num_frames - 1) - latent_index(chunk.start_frame) + 1


def summarize(chunks: Iterable[Chunk], warmup: int = 1) -> dict[str, Any]:
    """Per-chunk records and the figures defined above (ms, frames/s)."""
    records = [{"chunk": c.index, "latent_frames": latent_frames(c), "pixel_frames": c.num_frames,
                "dit_ms": (c.timings.get("denoise", 0.0) + c.timings.get("commit", 0.0)) * 1e3,
                "decode_ms": c.timings.get("decode", 0.0) * 1e3, "end_to_end_ms": c.timings["total"] * 1e3}
               for c in chunks]
    steady = records[warmup:]

    def fps(frames: str, time: str) -> float:
        seconds = sum(r[time] for r in steady) / 1e3
        return sum(r[frames] for r in steady) / seconds if seconds > 0 else math.nan

    out: dict[str, Any] = {"chunks": records, "warmup_chunks": warmup,
                           "first_chunk_latency_ms": records[0]["end_to_end_ms"] if records else math.nan}
    for kind in ("dit", "end_to_end"):
        times = [r[f"{kind}_ms"] for r in steady]
        out[f"{kind}_p50_ms"] = percentile(times, 50)
        out[f"{kind}_p95_ms"] = percentile(times, 95)
        out[f"{kind}_trend_ms_per_chunk"] = slope([float(r["chunk"]) for r in steady], times)
        out[f"{kind}_fps_latent"] = fps("latent_frames", f"{kind}_ms")
        out[f"{kind}_fps_pixel"] = fps("pixel_frames", f"{kind}_ms")
    return out
