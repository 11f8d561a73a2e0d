"""The Wan generator end to end on tiny random parts: frame counts, streaming VAE, state, cache, seeds, text,
the sampler's loop, and the CLI (generate, compare with a prompt file, the GPU bench script on CPU)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("diffusers")

from adabench.cli import main  # noqa: E402
from adabench.registry import GENERATORS  # noqa: E402
from adabench.wan.config import latent_frames_for  # noqa: E402
from adabench.wan.sampler import DistilledSampler  # noqa: E402
from adabench.wan.vae import StreamingDecode, random_vae  # noqa: E402

PROMPT = "a red fox runs through fresh snow"


@pytest.fixture(scope="module")
def adastate():
    return GENERATORS.build("wan:random=tiny,policy=adastate,height=32,width=32", device="cpu")


@torch.no_grad()
def test_streaming_decode_equals_one_shot_decode():
    vae = random_vae("tiny", torch.device("cpu"), torch.float32, seed=4)
    latents = torch.randn(6, 16, 4, 6, generator=torch.Generator().manual_seed(0))      # [n, C, h, w]
    stream = StreamingDecode(vae)
    parts = [stream.decode(latents[a:b]) for a, b in ((0, 1), (1, 3), (3, 6))]
    assert [p.shape[0] for p in parts] == [1, 8, 12]                    # 1 pixel frame, then 4 per latent frame
    z = latents.transpose(0, 1)[None] * stream.std + stream.mean                         # [1, C, n, h, w]
    once = ((vae.decode(z).sample[0].transpose(0, 1) + 1) * 0.5)                         # diffusers' own decode
    assert once.shape == (21, 3, 32, 48)
    assert (torch.cat(parts) - once).abs().max().item() < 1e-5


@pytest.mark.parametrize("frames", [1, 4, 9, 10, 22])
def test_exactly_the_asked_pixel_frames(adastate, frames):
    chunks = list(adastate.stream(PROMPT, 0, frames))
    assert sum(c.num_frames for c in chunks) == frames
    assert [c.start_frame for c in chunks] == [sum(c.num_frames for c in chunks[:i]) for i in range(len(chunks))]
    assert all(c.frames.shape[1:] == (3, 32, 32) and 0 <= c.frames.min() and c.frames.max() <= 1 for c in chunks)


def test_state_never_decoded_and_cache_constant_over_40_chunks(monkeypatch):
    gen = GENERATORS.build("wan:random=tiny,policy=adastate,chunk=1,height=16,width=16", device="cpu")
    decoded: list[int] = []
    original = StreamingDecode.decode
    monkeypatch.setattr(StreamingDecode, "decode", lambda self, z: decoded.append(z.shape[0]) or original(self, z))
    frames = 1 + 4 * 39                                                   # 40 latent frames, 40 chunks of 1
    chunks = list(gen.stream(PROMPT, 0, frames))
    assert len(chunks) == 40 and gen.policy.state == 1
    assert sum(decoded) == latent_frames_for(frames) == 40              # content latents only: no state frame
    held = [c.cache_bytes for c in chunks[3:-1]]
    assert len(set(held)) == 1 and held[0] == gen.kv_cache_bytes()      # full from the 4th chunk on, never more


def test_same_seed_same_frames_other_seed_other_frames(adastate):
    a = torch.cat([c.frames for c in adastate.stream(PROMPT, 5, 13)])
    b = torch.cat([c.frames for c in adastate.stream(PROMPT, 5, 13)])
    c = torch.cat([c.frames for c in adastate.stream(PROMPT, 6, 13)])
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_prompt_encoded_once_padded_with_zeros_and_released():
    gen = GENERATORS.build("wan:random=tiny,encoder=release,height=16,width=16", device="cpu")
    calls = []
    gen.text.encoder.register_forward_hook(lambda *a: calls.append(1))
    gen.check_prompt(PROMPT)
    gen.check_prompt("  a   red fox runs through fresh snow ")           # the same prompt once cleaned
    emb = gen.text.encode(PROMPT)
    assert len(calls) == 1 and emb.shape == (1, 512, 32)
    length = len(PROMPT) + 1                                             # one token a character, then </s>
    assert emb[0, length:].abs().max() == 0 and emb[0, :length].abs().min(dim=-1).values.gt(0).all()
    list(gen.stream(PROMPT, 0, 1))
    assert gen.text.encoder is None                                      # released at the first rollout
    with pytest.raises(Exception, match="was not encoded before the text encoder was released"):
        list(gen.stream("another prompt", 0, 1))


def test_sampler_predicts_x0_and_renoises_to_the_next_timestep():
    """With a flow that is exact for a known x0 (v = noise - x0), every step returns that x0."""
    sampler = DistilledSampler((1000, 750, 500, 250), 5.0, True)
    x0 = torch.randn(1, 2, 3)
    seen = []

    def flow(x, t):
        s = sampler.sigma(t)
        seen.append(t)
        return (x - x0) / s                                              # x = (1 - s) x0 + s noise -> noise - x0

    g = torch.Generator().manual_seed(0)
    out = sampler.sample(flow, lambda: torch.randn(1, 2, 3, generator=g))
    assert torch.allclose(out, x0, atol=1e-5) and seen == list(sampler.timesteps)


def test_generate_cli_adastate(tmp_path, capsys):
    out = tmp_path / "fox.mp4"
    code = main(["generate", "--model", "wan:random=tiny,policy=adastate", "--prompt", PROMPT, "--frames", "13",
                 "--out", str(out), "--raw", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and out.exists()
    assert sum(c["frames"] for c in report["chunks"]) == 13 and report["model"]["policy"] == "adastate"
    assert report["model"]["weights"].startswith("random-init(seed=0, tiny): untrained")
    assert {"denoise", "decode", "total"} <= set(report["chunks"][0]["timings_s"])


def test_compare_two_wan_variants_on_a_prompt_file(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox runs through fresh snow\na paper boat drifts down a rainy street\n")
    out = tmp_path / "run"
    code = main(["compare", "--models", "wan:random=tiny,preset=longlive,wan:random=tiny,policy=adastate",
                 "--prompts", str(prompts), "--init", "none", "--frames", "9", "--seeds", "1",
                 "--metrics", "flow,attention,throughput,motion-fidelity", "--out", str(out), "--quiet"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    models = results["models"]
    assert len(models) == 2
    for entry in models.values():
        assert "motion-fidelity" in entry["not_applicable"]
        assert "attention" not in entry["not_applicable"]


def test_gpu_bench_script_runs_on_cpu(tmp_path):
    from adabench.wan.bench import main as bench

    code = bench(["--model", "random=tiny", "--device", "cpu", "--frames", "13", "--warmup-frames", "1",
                  "--variants", "preset=self-forcing;policy=adastate", "--out", str(tmp_path)])
    assert code == 0
    rows = json.loads((tmp_path / "wan_bench.json").read_text())["rows"]
    assert [r["policy"].split(":")[0] for r in rows] == ["sliding-window", "adastate"]
    for r in rows:
        assert sum(c["pixel_frames"] for c in r["chunks"]) == 13
        assert sum(c["latent_frames"] for c in r["chunks"]) == latent_frames_for(13)
        assert r["end_to_end_fps_pixel"] > 0 and r["dit_fps_latent"] > 0 and r["memory_mb"]["kv_cache"] > 0
    assert "| preset=self-forcing |" in (tmp_path / "wan_bench.md").read_text()


def test_bfloat16_keeps_time_embedding_modulation_and_norms_in_float32():
    gen = GENERATORS.build("wan:random=tiny,dtype=bfloat16,height=16,width=16", device="cpu")
    m = gen.model
    assert m.blocks[0].self_attn.q.weight.dtype == torch.bfloat16 and m.head.head.weight.dtype == torch.bfloat16
    assert m.time_embedding[0].weight.dtype == m.time_projection[1].weight.dtype == torch.float32
    assert m.blocks[0].modulation.dtype == m.head.modulation.dtype == m.blocks[0].norm3.weight.dtype == torch.float32
    frames = torch.cat([c.frames for c in gen.stream(PROMPT, 0, 9)])
    assert frames.shape == (9, 3, 16, 16) and torch.isfinite(frames).all()
