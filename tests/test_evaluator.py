"""The PanWorld evaluator, its training objective and the metrics built on it.

Everything runs on tiny randomly initialised evaluators or stubs: nothing here needs the
shipped weights.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from adabench.chunk import Chunk
from adabench.errors import MissingWeightsError
from adabench.evaluator import Evaluator, EvaluatorConfig, load_evaluator, save_evaluator
from adabench.metrics.adherence import (EvaluatorFrechet, PromptAdherence, features_from_series, frechet_distance,
                                        frechet_per_window, save_features)
from adabench.training.recipe import Recipe, load_recipe
from adabench.world.prompts import attribute_classes

TINY = EvaluatorConfig(widths=(8, 8, 8), feature_dim=6)
CLASSES = attribute_classes()
PROMPT = "a fast pan left over a city with red circles"
TARGET = {"motion": "fast-left", "scene": "city", "color": "red", "shape": "circles"}


def tiny_net(seed: int = 0) -> Evaluator:
    torch.manual_seed(seed)
    return Evaluator(TINY).eval()


def chunks(frames: torch.Tensor, size: int, fps: float = 16.0):
    """frames [N, 3, H, W] cut into chunks of ``size`` frames."""
    for i, start in enumerate(range(0, frames.shape[0], size)):
        yield Chunk(i, start, frames[start:start + size], fps)


def indexed_frames(n: int) -> torch.Tensor:
    """[n, 3, 8, 8] frames whose value is their index / 1000 (so clips can be checked)."""
    return (torch.arange(n, dtype=torch.float32) / 1000).view(n, 1, 1, 1).expand(n, 3, 8, 8).clone()


class StubPredictor:
    """Returns scripted predictions per clip, and records the clips it saw."""

    def __init__(self, script: list[dict[str, str]]) -> None:
        self.script, self.seen = list(script), []

    def __call__(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {a: torch.zeros(clips.shape[0], len(c)) for a, c in CLASSES.items()}
        for i, clip in enumerate(clips):
            self.seen.append(clip.clone())
            want = self.script.pop(0)
            for a in CLASSES:
                out[a][i, CLASSES[a].index(want[a])] = 1.0
        return out


class StubFeatures:
    """features(clips) -> [N, 2]: mean and first-frame value (any deterministic map will do)."""

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        return torch.stack([clips.mean(dim=(1, 2, 3, 4)), clips[:, 0].mean(dim=(1, 2, 3))], dim=1)


# --- the network ----------------------------------------------------------------------------

def test_forward_shapes_and_resize():
    net = tiny_net()
    clips = torch.rand(2, 8, 3, 32, 32)
    logits = net(clips)
    assert {a: tuple(v.shape) for a, v in logits.items()} == {a: (2, len(c)) for a, c in CLASSES.items()}
    assert net.features(clips).shape == (2, TINY.feature_dim)
    assert net.features(torch.rand(3, 4, 3, 64, 64)).shape == (3, TINY.feature_dim)   # other T and size
    with pytest.raises(ValueError, match="clips"):
        net(torch.rand(2, 3, 32, 32))


def test_checkpoint_round_trip(tmp_path):
    net = tiny_net(3)
    path = tmp_path / "evaluator.safetensors"
    save_evaluator(path, net, {"heldout_accuracy": json.dumps({"motion": 1.0})})
    loaded = load_evaluator(path)
    clips = torch.rand(2, 8, 3, 32, 32)
    assert loaded.config == net.config
    torch.testing.assert_close(loaded.features(clips), net.features(clips))
    assert len(loaded.weights_sha) == 12 and json.loads(loaded.metadata["heldout_accuracy"]) == {"motion": 1.0}


def test_missing_and_corrupted_weights(tmp_path, monkeypatch):
    import adabench.evaluator as ev

    monkeypatch.setattr(ev, "DEFAULT_WEIGHTS", tmp_path / "nowhere" / "evaluator.safetensors")
    with pytest.raises(MissingWeightsError, match=r"nowhere.*not found.*adabench train evaluator --out DIR"):
        load_evaluator()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(MissingWeightsError, match=r"bad.safetensors are corrupted.*adabench train evaluator"):
        load_evaluator(bad)
    from adabench.checkpoints import save_modules
    other = tmp_path / "other.safetensors"
    save_modules(other, {"evaluator": tiny_net()}, {"format": "adabench-model/1"})
    with pytest.raises(MissingWeightsError, match="format"):
        load_evaluator(other)


# --- Fréchet distance -----------------------------------------------------------------------

def cross_set(mean: list[float], half_widths: list[float]) -> np.ndarray:
    """Points mean +- h_k e_k: sample mean ``mean``, unbiased covariance diag(2 h_k^2 / (2D - 1))."""
    d = len(mean)
    pts = [np.array(mean) + s * h * np.eye(d)[k] for k, h in enumerate(half_widths) for s in (1, -1)]
    return np.stack(pts)


def test_frechet_distance_closed_form_diagonal():
    # D = 2, N = 4: covariance diag(2 h^2 / 3); h chosen so the variances are 6 and 1.5 (A), 1.5 and 6 (B)
    a = cross_set([1.0, 2.0], [3.0, math.sqrt(2.25)])           # S_a = diag(6, 1.5)
    b = cross_set([4.0, -2.0], [math.sqrt(2.25), 3.0])          # S_b = diag(1.5, 6)
    # |mu_a - mu_b|^2 = 9 + 16 = 25; sum_k (sqrt(s_ak) - sqrt(s_bk))^2 = 2 (sqrt 6 - sqrt 1.5)^2 = 2 * 1.5 = 3
    assert frechet_distance(a, b) == pytest.approx(28.0, abs=1e-5)
    assert frechet_distance(torch.tensor(a), torch.tensor(a)) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_full_covariance_and_errors():
    gen = np.random.default_rng(0)
    a, b = gen.normal(size=(40, 5)) @ gen.normal(size=(5, 5)), gen.normal(size=(30, 5)) + 0.5
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root_a = v @ np.diag(np.sqrt(w)) @ v.T                      # tr sqrt(S_a S_b) = tr sqrt(root_a S_b root_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)).sum()
    want = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-3)
    assert frechet_distance(a[:3], a[:3]) == pytest.approx(0.0, abs=1e-6)     # N < D: the ridge keeps it sane
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], b)


def test_frechet_per_window():
    gen = torch.Generator().manual_seed(0)
    generated = [list(torch.randn(3, 2, generator=gen)) for _ in range(5)] + [list(torch.randn(1, 2, generator=gen))]
    reference = [list(torch.randn(2, 2, generator=gen) + 1) for _ in range(4)]
    curve = frechet_per_window(generated, reference)
    assert len(curve) == 3 and math.isnan(curve[2])              # the reference stops after 2 windows
    want0 = frechet_distance(torch.stack([v[0] for v in generated]), torch.stack([v[0] for v in reference]))
    assert curve[0] == pytest.approx(want0)
    assert math.isnan(frechet_per_window(generated, reference, min_clips=10)[0])


# --- metrics --------------------------------------------------------------------------------

def test_adherence_hand_computed():
    wrong_motion = {**TARGET, "motion": "slow-left"}
    wrong_color_shape = {**TARGET, "color": "blue", "shape": "squares"}
    stub = StubPredictor([TARGET, wrong_motion, wrong_color_shape, TARGET])
    metric = PromptAdherence(prompt=PROMPT.upper(), network=stub)
    for chunk in chunks(torch.rand(33, 3, 32, 32), 5):          # 4 clips of 8 frames, 1 frame left over
        metric.update(chunk)
    result = metric.compute()
    assert result.scalars == {"adherence_motion": 0.75, "adherence_scene": 1.0, "adherence_color": 0.75,
                              "adherence_shape": 0.75, "adherence_all": 0.5}
    assert result.series["adherence_all"] == [1.0, 0.0, 0.0, 1.0]
    assert result.series["adherence_motion"] == [1.0, 0.0, 1.0, 1.0]
    assert result.info["adherence_all"].backend == "evaluator=custom" and metric.info.direction == "higher"


def test_window_buffering_across_chunks():
    stub = StubPredictor([TARGET] * 3)
    metric = PromptAdherence(prompt=PROMPT, clip_frames=8, network=stub)
    frames = indexed_frames(26)
    for chunk in chunks(frames, 3):                              # 9 chunks: 26 frames -> 3 clips, 2 buffered
        metric.update(chunk)
    assert len(stub.seen) == 3 and len(metric.compute().series["adherence_all"]) == 3
    for k, clip in enumerate(stub.seen):                        # clip k = frames 8k .. 8k + 7, in order
        torch.testing.assert_close(clip, frames[8 * k:8 * k + 8])
    assert metric._buffer is not None and metric._buffer.shape[0] == 2
    with pytest.raises(ValueError, match="in order"):
        metric.update(Chunk(9, 0, frames[:3], 16.0))
    metric.reset()
    assert metric.compute().series["adherence_all"] == [] and math.isnan(metric.compute().scalars["adherence_all"])


def test_adherence_without_prompt_reports_nothing(tmp_path, monkeypatch):
    import adabench.evaluator as ev

    monkeypatch.setattr(ev, "DEFAULT_WEIGHTS", tmp_path / "missing.safetensors")   # no weights needed
    metric = PromptAdherence(fps=16.0)
    metric.update(Chunk(0, 0, torch.rand(9, 3, 32, 32), 16.0))
    assert metric.compute().scalars == {} and metric.compute().series == {}
    with pytest.raises(MissingWeightsError):
        PromptAdherence(prompt=PROMPT)


def test_adherence_with_tiny_evaluator_runs():
    metric = PromptAdherence(prompt=PROMPT, network=tiny_net())
    for chunk in chunks(torch.rand(16, 3, 32, 32), 3):
        metric.update(chunk)
    result = metric.compute()
    assert len(result.series["adherence_motion"]) == 2
    assert all(0.0 <= v <= 1.0 for v in result.scalars.values())


def _video_features(seed: int, n_frames: int = 24, offset: float = 0.0) -> EvaluatorFrechet:
    metric = EvaluatorFrechet(network=StubFeatures())
    gen = torch.Generator().manual_seed(seed)
    for chunk in chunks((torch.rand(n_frames, 3, 4, 4, generator=gen) + offset), 3):
        metric.update(chunk)
    return metric


def test_frechet_metric_single_video_and_merge(tmp_path):
    one = _video_features(0)
    result = one.compute()
    assert "frechet" not in result.series and result.scalars == {}
    feats = features_from_series(result.series)                  # how features travel through the store
    assert len(feats) == 3 and feats[0].shape == (2,)
    torch.testing.assert_close(torch.stack(feats), torch.stack(one.window_features()[0]))

    generated = _video_features(0)
    for seed in range(1, 6):
        generated.merge(_video_features(seed))
    reference = _video_features(100, offset=0.5)
    for seed in range(101, 106):
        reference.merge(_video_features(seed, offset=0.5))
    assert len(generated.window_features()) == 6
    scored = EvaluatorFrechet(reference=reference, network=StubFeatures())
    scored.merge(generated)
    result = scored.compute()
    want = frechet_per_window(generated.window_features(), reference.window_features())
    assert result.series["frechet"] == pytest.approx(want) and len(want) == 3
    assert result.scalars["frechet_last"] == pytest.approx(want[-1]) and want[-1] > 0.1
    assert not any(k.startswith("frechet_feature_") for k in result.series)   # only per single video

    path = tmp_path / "ref.safetensors"
    save_features(path, reference.window_features())
    from_file = EvaluatorFrechet(reference=str(path), network=StubFeatures())
    from_file.merge(generated)
    assert from_file.compute().series["frechet"] == pytest.approx(want, rel=1e-3)


# --- training -------------------------------------------------------------------------------

def test_recipe_loads():
    recipe = load_recipe("evaluator")
    assert recipe.kind == "evaluator" and recipe.name == "evaluator"


def tiny_recipe(**kw) -> Recipe:
    return Recipe(name="evaluator", kind="evaluator", batch=8, steps=3, warmup=1, lr=3e-3, log_every=1,
                  model={"widths": [8, 8, 8], "feature_dim": 8}, **kw)


def test_objective_loss_decreases_on_a_fixed_batch(tmp_path):
    from adabench.training.evaluator_objective import EvaluatorObjective

    objective = EvaluatorObjective.build(tiny_recipe(), tmp_path)
    optimizer = torch.optim.AdamW(objective.trainable(), lr=1e-2)
    losses = []
    for _ in range(20):
        torch.manual_seed(0)                                     # same batch, same augmentation
        loss, terms = objective.loss(0, torch.device("cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert set(terms) >= {"motion_loss", "shape_acc"}
    assert losses[-1] < 0.7 * losses[0]


def test_training_loop_writes_a_loadable_evaluator(tmp_path, monkeypatch):
    from adabench.training import evaluator_objective, loop

    monkeypatch.setattr(evaluator_objective, "HELDOUT_CLIPS", 16)
    final = loop.train(tiny_recipe(), tmp_path, progress=False)
    net = load_evaluator(final)
    accuracy = json.loads(net.metadata["heldout_accuracy"])
    assert set(accuracy) == {"motion", "scene", "color", "shape", "all"}
    assert all(0.0 <= v <= 1.0 for v in accuracy.values())
    assert json.loads((tmp_path / "manifest.json").read_text())["evaluator"]["format"] == "adabench-evaluator/1"
