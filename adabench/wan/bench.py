"""Time the Wan DiT under each cache policy: ``python -m adabench.wan.bench``.

One prepared run for a GPU machine: builds the model once (``random=1.3b`` by default: the real
Wan2.1-T2V-1.3B configuration, randomly initialised, bf16, so no download is needed), then for
each variant runs a warm-up rollout and a timed rollout of ``--frames`` pixel frames, and
writes per-chunk latency, DiT-only and end-to-end FPS in latent and pixel frames, first-chunk
latency, p50/p95 and their trend (definitions: :mod:`adabench.wan.throughput`), and peak GPU
memory with its breakdown (DiT weights, text encoder, VAE, KV cache, the rest = activations
and workspace), plus the GPU's name, to ``OUT/wan_bench.json`` and ``OUT/wan_bench.md``.
The same command runs on a CPU with ``--model random=tiny --device cpu`` (a test does).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import torch

from adabench.atomic import write_json, write_text
from adabench.errors import UserError

VARIANTS = ("preset=self-forcing", "preset=causvid", "preset=longlive", "policy=adastate",
            "policy=sliding-window,window=6,pos=relative")
PROMPT = "A red fox runs through fresh snow in a pine forest, tracking shot"
MB = 1e6


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m adabench.wan.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="random=1.3b", help="wan arguments that pick the weights (default random=1.3b)")
    p.add_argument("--variants", default=";".join(VARIANTS), help="';'-separated wan arguments, one row each")
    p.add_argument("--frames", type=int, default=81, help="pixel frames per timed rollout (default 81 = 21 latent)")
    p.add_argument("--warmup-frames", type=int, default=9, help="pixel frames of the untimed warm-up rollout")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--out", default="reports/wan-bench", help="output folder")
    return p.parse_args(argv)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from adabench.harness.compare import host_cpu
    return host_cpu()


def run_variant(parts, variant: str, args: argparse.Namespace, dev: torch.device) -> dict:
    from adabench.registry import parse_spec
    from adabench.wan import generator as wan_gen

    _, kwargs = parse_spec(f"wan:{variant}")
    preset = kwargs.pop("preset", "self-forcing")
    settings = {k: kwargs.pop(k, None) for k in ("policy", "steps", "shift", "warp")}
    chunk = kwargs.pop("chunk", 3)
    sampler, policy = wan_gen.sampler_and_policy(preset, settings["policy"], settings["steps"], settings["shift"],
                                                 settings["warp"], kwargs.pop("context_noise", 0.0), chunk, kwargs)
    gen = wan_gen.WanGenerator(f"wan[{variant}]", parts, policy, sampler, args.geometry, chunk, dev,
                               wan_gen.DTYPES[args.dtype_name], "offload", preset)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    gen.check_prompt(PROMPT)
    encode_peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else 0
    for _ in gen.stream(PROMPT, 0, args.warmup_frames):
        pass
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    from adabench.wan.throughput import summarize
    t0 = time.perf_counter()
    chunks = [c for c in gen.stream(PROMPT, 1, args.frames)]
    wall = time.perf_counter() - t0
    summary = summarize(chunks)
    resident = gen.memory()
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else 0
    memory = {k: v / MB for k, v in resident.items()}
    memory["text_encoder_peak_while_encoding"] = encode_peak / MB
    memory["peak_rollout"] = peak / MB
    memory["activations_and_workspace"] = (peak - sum(resident.values())) / MB if peak else float("nan")
    return {"variant": variant, "policy": policy.spec(), "timesteps": list(sampler.timesteps),
            "wall_s": wall, "memory_mb": memory, **summary}


def finite(obj):
    """JSON-safe: NaN and infinities become None (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def markdown(rows: list[dict], info: dict) -> str:
    head = (f"Wan2.1 DiT ({info['model']}, {info['dtype']}) on {info['device_name']}; {info['frames']} pixel frames "
            f"per rollout, chunks of 3 latent frames; after 1 warm-up chunk; memory in MB (10^6 bytes).\n\n"
            "| variant | policy | DiT ms/chunk p50 (p95) | end-to-end ms/chunk p50 (p95) | trend ms/chunk | "
            "first chunk ms | FPS latent DiT / e2e | FPS pixel DiT / e2e | peak MB | DiT / text / VAE / KV MB |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        m = r["memory_mb"]
        lines.append(f"| {r['variant']} | {r['policy']} | {r['dit_p50_ms']:.1f} ({r['dit_p95_ms']:.1f}) | "
                     f"{r['end_to_end_p50_ms']:.1f} ({r['end_to_end_p95_ms']:.1f}) | "
                     f"{r['end_to_end_trend_ms_per_chunk']:.2f} | {r['first_chunk_latency_ms']:.1f} | "
                     f"{r['dit_fps_latent']:.2f} / {r['end_to_end_fps_latent']:.2f} | "
                     f"{r['dit_fps_pixel']:.2f} / {r['end_to_end_fps_pixel']:.2f} | {m['peak_rollout']:.1f} | "
                     f"{m['dit_weights']:.1f} / {m['text_encoder']:.1f} / {m['vae']:.1f} / {m['kv_cache']:.1f} |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from adabench.models import resolve_device
    from adabench.registry import parse_spec
    from adabench.wan.config import Geometry
    from adabench.wan.generator import DEFAULT_SIZE, DTYPES, WAN_SIZE
    from adabench.wan.loader import load_parts

    args = parse_args(argv)
    try:
        dev = resolve_device(args.device, "--device")
        _, model_args = parse_spec(f"wan:{args.model}")
        args.dtype_name = ("bfloat16" if dev.type == "cuda" else "float32") if args.dtype == "auto" else args.dtype
        if args.dtype_name not in DTYPES:
            raise UserError(f"--dtype {args.dtype!r} is invalid; accepted: auto, {', '.join(DTYPES)}")
        h, w = DEFAULT_SIZE.get(str(model_args.get("random")), WAN_SIZE)
        args.geometry = Geometry(int(model_args.pop("height", h)), int(model_args.pop("width", w)))
        parts = load_parts(model_args.get("path"), model_args.get("checkpoint"), model_args.get("lora"),
                           model_args.get("lora_alpha"), model_args.get("random"), bool(model_args.get("ema", True)),
                           dev, DTYPES[args.dtype_name])
        rows = [run_variant(parts, v.strip(), args, dev) for v in args.variants.split(";") if v.strip()]
    except UserError as exc:
        print(f"adabench.wan.bench: error: {exc}", file=sys.stderr)
        return 2
    info = {"model": args.model, "dtype": args.dtype_name, "device": str(dev), "device_name": device_name(dev),
            "frames": args.frames, "torch": torch.__version__, "python": platform.python_version(),
            "timing": "per chunk in the generator (synchronised on CUDA); definitions: adabench/wan/throughput.py"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "wan_bench.json", finite({"info": info, "rows": rows}))
    table = markdown(rows, info)
    write_text(out / "wan_bench.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
