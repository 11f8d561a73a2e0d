"""Training: every recipe kind runs end to end on a tiny model, learns, checkpoints and resumes
exactly; AdaState's state learns through the recurrence."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from adabench.adastate import AdaptiveState
from adabench.checkpoints import load_model
from adabench.errors import MissingWeightsError, UserError
from adabench.rollout import Rollout
from adabench.sampler import shifted_schedule
from adabench.training import loop
from adabench.training.objectives import OBJECTIVES, edge_error, horizon_weights, initial_modules
from adabench.training.recipe import load_recipe, recipe_names
from tests.conftest import TINY, fixed_tokens

TINY_MODEL = {"width": 32, "depth": 1, "heads": 2, "rope_time_dims": 4}


def tiny(name: str, **overrides):
    r = load_recipe(name)
    return dataclasses.replace(r, batch=2, clip_chunks=2, warmup=2, checkpoint_every=3, log_every=1,
                               model=TINY_MODEL, **overrides)


def held_out_loss(recipe, out) -> float:
    """The objective on a fixed batch with fixed noise, for before/after comparisons."""
    model, codec, _ = load_model(out / f"{recipe.name}.safetensors")
    torch.manual_seed(123)
    with torch.no_grad():
        return OBJECTIVES[recipe.kind](recipe, model, codec).loss(10_000, torch.device("cpu"))[0].item()


def test_every_shipped_recipe_loads():
    names = recipe_names()
    assert {"codec", "base", "ff-anchor", "sliding-window", "adastate-alpha0", "adastate-alpha2",
            "adastate-alpha4"} <= set(names)
    alphas = {load_recipe(f"adastate-alpha{a}").horizon_alpha for a in (0, 2, 4)}
    assert alphas == {0.0, 2.0, 4.0}
    with pytest.raises(UserError, match="unknown recipe"):
        load_recipe("nope")


def test_a_negative_truncation_is_refused(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[recipe]\nname = "bad"\nkind = "policy"\nbptt_chunks = -1\n')
    with pytest.raises(UserError, match="bptt_chunks -1 is invalid; accepted: an integer >= 0"):
        load_recipe(str(path))


def test_horizon_weights():
    assert torch.allclose(horizon_weights(4, 0.0), torch.ones(4))
    w = horizon_weights(4, 2.0)                    # 1 + 2 * i / 4 = 1, 1.5, 2, 2.5 -> mean 1.75
    assert torch.allclose(w, torch.tensor([1, 1.5, 2, 2.5]) / 1.75)


def test_model_overrides_build_a_fresh_dit_on_the_inits_codec(tmp_path):
    codec_recipe = tiny("codec", steps=1)
    loop.train(codec_recipe, tmp_path, progress=False)
    _, trained_codec, _ = load_model(tmp_path / "codec.safetensors")
    model, codec = initial_modules(dataclasses.replace(tiny("base"), model={**TINY_MODEL, "patch": 1}), tmp_path)
    assert model.config.patch == 1 and model.config.width == TINY_MODEL["width"]
    assert all(torch.equal(a, b) for a, b in zip(codec.state_dict().values(), trained_codec.state_dict().values()))
    same, _ = initial_modules(tiny("base"), tmp_path)                     # no change: the init's DiT as it is
    trained_dit, _, _ = load_model(tmp_path / "codec.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), trained_dit.state_dict().values()))
    with pytest.raises(UserError, match="latent_channels belong to the codec"):
        initial_modules(dataclasses.replace(tiny("base"), model={"latent_channels": 8}), tmp_path)
    with pytest.raises(UserError, match="a fine-tune keeps the DiT"):
        initial_modules(dataclasses.replace(tiny("ff-anchor"), init="codec", model={**TINY_MODEL, "patch": 1}), tmp_path)


def test_codec_base_and_policies_train_end_to_end(tmp_path):
    """Tiny versions of the real recipes: losses go down and checkpoints round-trip."""
    chain = [tiny("codec", steps=30, lr=3e-3), tiny("base", steps=12, lr=2e-3),
             tiny("adastate-alpha2", steps=4, lr=1e-3), tiny("ff-anchor", steps=2, bptt_chunks=1), tiny("sliding-window", steps=2),
             tiny("adastate-alpha0", steps=3, lr=1e-3, sampler_stagger=1)]      # the staggered sampler unrolled
    for recipe in chain:
        before = None
        if recipe.init:
            before = held_out_loss(dataclasses.replace(recipe, name=recipe.init), tmp_path) \
                if recipe.kind == "policy" else None
        path = loop.train(recipe, tmp_path, progress=False)
        model, codec, meta = load_model(path)
        assert meta["recipe"] == recipe.name and int(meta["steps"]) == recipe.steps
        assert meta.get("sampler_stagger") == (str(recipe.sampler_stagger) if recipe.kind != "codec" else None)
        logged = [json.loads(l) for l in (tmp_path / f"{recipe.name}.log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in logged] == list(range(recipe.steps))
        if recipe.kind == "codec":
            assert sum(r["loss"] for r in logged[-5:]) < 0.8 * sum(r["loss"] for r in logged[:5])
        if before is not None:
            after = held_out_loss(recipe, tmp_path)
            assert after < before, (recipe.name, before, after)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest) == {r.name for r in chain}
    assert all(len(m["sha256"]) == 64 for m in manifest.values())


def test_decoder_recipe_retrains_the_decoder_and_leaves_the_latents_bit_identical(tmp_path):
    loop.train(tiny("codec", steps=3, lr=3e-3), tmp_path, progress=False)
    _, init_codec, _ = load_model(tmp_path / "codec.safetensors")
    recipe = tiny("codec-decoder", steps=12, lr=3e-3)
    before = held_out_loss(dataclasses.replace(recipe, name="codec"), tmp_path)
    _, codec, meta = load_model(loop.train(recipe, tmp_path, progress=False))
    old, new = init_codec.state_dict(), codec.state_dict()
    kept = [k for k in old if not k.startswith("decoder.")]
    assert "latent_std" in kept and any(k.startswith("encoder.") for k in kept)
    assert all(torch.equal(old[k], new[k]) for k in kept)
    assert any(not torch.equal(old[k], new[k]) for k in old if k.startswith("decoder."))
    assert held_out_loss(recipe, tmp_path) < before
    assert meta["recipe"] == "codec-decoder"


def test_edge_error_against_hand_computed_differences():
    frames = torch.tensor([0.0, 0.0, 1.0, 1.0]).repeat(1, 3, 2, 1)            # [1, 3, 2, 4]: a vertical step edge
    blurred = torch.tensor([0.0, 0.25, 0.75, 1.0]).repeat(1, 3, 2, 1)
    # horizontal differences 0.25, 0.5, 0.25 against 0, 1, 0: mean |error| 1/3; vertical ones all zero
    assert torch.isclose(edge_error(blurred, frames), torch.tensor(1 / 3))
    assert edge_error(frames + 0.1, frames) < 1e-6           # a brightness offset leaves every edge exact
    assert edge_error(frames, frames) == 0


def test_freeze_encoder_outside_a_codec_fine_tune_is_refused(tmp_path):
    for body in ('kind = "base"\ninit = "codec"', 'kind = "codec"'):
        path = tmp_path / "bad.toml"
        path.write_text(f'[recipe]\nname = "bad"\n{body}\nfreeze_encoder = true\n')
        with pytest.raises(UserError, match="freeze_encoder needs kind = \"codec\" and an init codec"):
            load_recipe(str(path))


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    recipe = tiny("codec", steps=7, lr=3e-3)
    straight = load_model(loop.train(recipe, tmp_path / "a", progress=False))[1].state_dict()

    real_loss = OBJECTIVES["codec"].loss

    def crash_at_5(self, step, device):
        if step == 5:
            raise KeyboardInterrupt
        return real_loss(self, step, device)

    monkeypatch.setattr(OBJECTIVES["codec"], "loss", crash_at_5)
    with pytest.raises(KeyboardInterrupt):
        loop.train(recipe, tmp_path / "b", progress=False)
    assert (tmp_path / "b" / "codec.last.safetensors").is_file()       # checkpoint at step 3
    monkeypatch.setattr(OBJECTIVES["codec"], "loss", real_loss)
    resumed = load_model(loop.train(recipe, tmp_path / "b", progress=False))[1].state_dict()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    steps = [json.loads(l)["step"] for l in (tmp_path / "b" / "codec.log.jsonl").read_text().splitlines()]
    assert steps == list(range(7))


def test_missing_and_corrupted_checkpoints_name_the_file_and_the_command(tmp_path):
    with pytest.raises(MissingWeightsError, match=r"base.safetensors not found.*adabench train base"):
        load_model(tmp_path / "base.safetensors", rebuild_hint="adabench train base --out x")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(MissingWeightsError, match="corrupted"):
        load_model(bad, rebuild_hint="adabench train adastate-alpha2 --out x")


@pytest.mark.parametrize("truncate", [False, True])
def test_state_learns_through_the_recurrence(tiny_model, truncate):
    """A later chunk's loss reaches the state produced two chunks earlier, and the state's
    embedding parameter, only through the cache; cutting the cache's history after the first
    commit (truncated back-propagation, recipe key ``bptt_chunks``) leaves that state no gradient."""
    model, _ = tiny_model
    policy = AdaptiveState(state=1, window=3)
    rollout = Rollout(model, policy, batch=1)
    prompt = torch.tensor([fixed_tokens("")])
    times = shifted_schedule(2, 3.0).tolist()
    model.zero_grad()
    with torch.enable_grad():
        first_state, loss = None, None
        for c in range(3):
            layout = rollout.layout(3)
            ctx = rollout.context(layout)
            x = torch.randn(1, 4, TINY.latent_channels, 8, 8)
            for t_now, t_next in zip(times[:-1], times[1:]):
                x = x + (t_next - t_now) * model(x, torch.full((1, 1), t_now), prompt, None, context=ctx,
                                                 state_frames=1, rope=ctx.rope)
            if c == 0:
                first_state = x[:, :1]
                first_state.retain_grad()
                # content of chunk 0 enters the cache detached: only the state can carry gradient forward
                x = torch.cat([first_state, x[:, 1:].detach()], dim=1)
            if c == 2:
                loss = (x[:, 1:] ** 2).mean()
            else:
                rollout.commit(layout, x, prompt, ctx)
                if truncate and c == 0:
                    rollout.cache.detach()
        loss.backward()
    assert model.state_embed.grad is not None and model.state_embed.grad.abs().sum() > 0   # via later chunks' own states
    if truncate:
        assert first_state.grad is None
    else:
        assert first_state.grad is not None and first_state.grad.abs().sum() > 0
    model.zero_grad()


def test_state_kv_changes_from_chunk_to_chunk(tiny_model, monkeypatch):
    from adabench.cache import FrameCache
    from adabench.generator import CausalGenerator
    from adabench.sampler import FlowSampler

    states = []
    real_write = FrameCache.write

    def spy(self, items, layer_kv):
        real_write(self, items, layer_kv)
        if items and items[0].kind == "state":
            slot = self.policy.slot(items[0])
            states.append(self.k[-1][:, :, slot].clone())

    monkeypatch.setattr(FrameCache, "write", spy)
    model, codec = tiny_model
    gen = CausalGenerator("t", model, codec, AdaptiveState(), FlowSampler(2, 3.0), fixed_tokens)
    list(gen.stream("p", 0, 15))
    assert len(states) == 4                       # 5 chunks, the last one is not committed
    for a, b in zip(states, states[1:]):
        assert (a - b).abs().max() > 1e-4


# Recipe digests before the teacher and prompt-dropout keys existed (git a7d5ad3): finished runs of the
# shipped recipes must still be recognised as finished.
DIGESTS_BEFORE_TEACHER_KEYS = {
    "codec": "f25d4af5f36ddfc1", "codec-decoder": "92bdcb28c667a822", "base": "f6e97be6eddd7d89",
    "ff-anchor": "8fab8d4e6307b3d4", "sliding-window": "ef717c6cf5525521", "adastate-alpha0": "4e1cc26b3db974bb",
    "adastate-alpha2": "01d3c30d1c9f0f2d", "adastate-alpha4": "cdaf5fa33ae05bb8", "evaluator": "650fadb88fb6ed69"}


def test_recipes_without_a_teacher_keep_their_digests():
    for name, digest in DIGESTS_BEFORE_TEACHER_KEYS.items():
        assert load_recipe(name).digest() == digest, name
    r = load_recipe("ff-anchor")
    assert dataclasses.replace(r, teacher="base").digest() != r.digest()


def distilled(tmp_path, **overrides):
    """A tiny base (its own teacher) and a distillation recipe whose student starts from it."""
    loop.train(tiny("codec", steps=1), tmp_path, progress=False)
    loop.train(tiny("base", steps=6, lr=5e-3), tmp_path, progress=False)
    keys = dict(teacher="base", teacher_policy="sliding-window:window=4,pos=absolute", teacher_steps=4,
                teacher_shift=3.0, sampler_steps=4, sampler_shift=3.0, sampler_stagger=0, self_rollout=0.0,
                flow_weight=0.0)
    return dataclasses.replace(tiny("sliding-window"), **{**keys, **overrides})


def test_a_student_that_is_its_teacher_has_nothing_to_learn(tmp_path):
    """Known truth: student = teacher (same weights, cache and sampler) reproduces the teacher's sample
    from the same noise exactly, so the distillation error is zero; a teacher that integrates with
    more steps gives another sample, and the error is not."""
    from adabench.training.objectives import PolicyObjective

    same = distilled(tmp_path)
    for seed in range(3):                          # image-to-video and text-to-video batches alike
        torch.manual_seed(seed)
        assert PolicyObjective.build(same, tmp_path).loss(seed, torch.device("cpu"))[1]["x0_mse"] < 1e-10
    torch.manual_seed(0)
    other = PolicyObjective.build(dataclasses.replace(same, teacher_steps=16), tmp_path)
    assert other.loss(0, torch.device("cpu"))[1]["x0_mse"] > 1e-6


def test_distilled_fine_tune_trains_end_to_end(tmp_path):
    recipe = distilled(tmp_path, name="distilled", steps=3, teacher_steps=8, sampler_stagger=1, self_rollout=0.5,
                       flow_weight=0.5, policy="adastate:state=1,window=3,pos=relative,gap=14")
    model, _, meta = load_model(loop.train(recipe, tmp_path, progress=False))
    assert meta["recipe"] == "distilled" and int(meta["steps"]) == 3
    with pytest.raises(UserError, match="teacher needs kind"):
        path = tmp_path / "bad.toml"
        path.write_text('[recipe]\nname = "bad"\nkind = "base"\nteacher = "base"\n')
        load_recipe(str(path))
    with pytest.raises(UserError, match="has state frames"):
        from adabench.training.objectives import PolicyObjective
        PolicyObjective.build(dataclasses.replace(recipe, teacher_policy="adastate"), tmp_path)


def test_prompt_dropout_shows_clips_the_null_prompt(tmp_path):
    from adabench.backbone import null_prompt
    from adabench.training.objectives import BaseObjective

    loop.train(tiny("codec", steps=1), tmp_path, progress=False)
    shares = {}
    for p in (0.0, 0.5, 1.0):
        objective = BaseObjective.build(dataclasses.replace(tiny("base"), batch=64, prompt_dropout=p), tmp_path)
        torch.manual_seed(0)
        batch, _, _ = objective.clip(0, torch.device("cpu"))
        null = null_prompt(batch.tokens, objective.model.config.vocab_size)
        dropped = (batch.tokens == null).all(1)
        assert ((batch.tokens == null).any(1) == dropped).all()          # a clip keeps its prompt or loses all of it
        shares[p] = dropped.float().mean().item()
    assert shares[0.0] == 0.0 and shares[1.0] == 1.0 and 0.3 < shares[0.5] < 0.7


def test_first_chunk_weight_weighs_the_text_to_video_first_chunk(tmp_path):
    """The weighted loss against its hand formula (W l0 + sum of the other chunks) / (W + n - 1), from the
    same forward passes; image-to-video clips are left unweighted."""
    from adabench.training.objectives import BaseObjective

    loop.train(tiny("codec", steps=1), tmp_path, progress=False)
    base = dataclasses.replace(tiny("base"), clip_chunks=3, i2v_fraction=0.0)
    runs = {}
    for w in (1.0, 5.0):
        objective = BaseObjective.build(dataclasses.replace(base, first_chunk_weight=w), tmp_path)
        torch.manual_seed(0)
        runs[w] = objective.loss(0, torch.device("cpu"))
    (plain, terms1), (weighted, terms5) = runs[1.0], runs[5.0]
    assert terms1["flow_mse"] == pytest.approx(terms5["flow_mse"], rel=1e-6)   # same forward passes
    l0, n = terms5["first_chunk_mse"], 3
    assert weighted.item() == pytest.approx((5 * l0 + (n * plain.item() - l0)) / (5 + n - 1), rel=1e-5)
    objective = BaseObjective.build(dataclasses.replace(base, i2v_fraction=1.0, first_chunk_weight=5.0), tmp_path)
    assert "first_chunk_mse" not in objective.loss(0, torch.device("cpu"))[1]
