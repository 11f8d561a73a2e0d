"""CLIP consistency and LPIPS through the real open_clip / lpips code with tiny random weights."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from adabench.chunk import Chunk
from adabench.errors import MissingWeightsError, UserError
from adabench.metrics.drift import vbench_consistency
from adabench.metrics.learned import ClipConsistency, ClipImageEncoder, LpipsDistance, load_state_dict
from adabench.registry import METRICS

open_clip = pytest.importorskip("open_clip")
lpips = pytest.importorskip("lpips")

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


def stream(metric, video: torch.Tensor, size: int = 3):
    for i, s in enumerate(range(0, video.shape[0], size)):
        metric.update(Chunk(i, s, video[s:s + size], 16.0))
    return metric.compute()


@pytest.fixture(scope="module")
def tiny_clip() -> torch.nn.Module:
    torch.manual_seed(0)
    return open_clip.model.CLIP(**TINY_CLIP).eval()


@pytest.fixture(scope="module")
def tiny_lpips() -> torch.nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lpips.LPIPS(pretrained=False, pnet_rand=True, net="alex", verbose=False)


@pytest.fixture
def no_weights(monkeypatch, tmp_path):
    """No env vars and empty framework caches: nothing to find."""
    monkeypatch.delenv("ADABENCH_CLIP_WEIGHTS", raising=False)
    monkeypatch.delenv("ADABENCH_LPIPS_WEIGHTS", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def video(frames: int = 8, size: int = 40) -> torch.Tensor:
    return torch.rand(frames, 3, size, size, generator=torch.Generator().manual_seed(1))


# --- CLIP -----------------------------------------------------------------------------------

def test_tiny_open_clip_runs_through_encode_image(tiny_clip):
    metric = ClipConsistency(network=tiny_clip, fps=4.0)
    result = stream(metric, video(10))
    value = result.scalars["clip_consistency"]
    assert 0.0 <= value <= 1.0 and value < 1.0
    assert len(result.series["clip_consistency"]) == 3
    assert result.info["clip_consistency"].direction == "higher"


def test_clip_streaming_equals_vbench_on_the_whole_video(tiny_clip):
    frames = video(11)
    features = ClipImageEncoder(tiny_clip)(frames)                       # [11, 16]
    assert features.shape == (11, 16) and torch.isfinite(features).all()
    result = stream(ClipConsistency(network=tiny_clip), frames)
    assert result.scalars["clip_consistency"] == pytest.approx(vbench_consistency(features), abs=1e-6)


def test_frozen_video_has_clip_consistency_one(tiny_clip):
    frozen = video(1).expand(7, -1, -1, -1)
    result = stream(ClipConsistency(network=tiny_clip), frozen)
    assert result.scalars["clip_consistency"] == pytest.approx(1.0, abs=1e-5)


def test_clip_accepts_any_feature_callable():
    means = lambda frames: frames.mean(dim=(2, 3))                     # noqa: E731  [N, 3]
    frames = video(6)
    result = stream(ClipConsistency(network=means), frames)
    assert result.scalars["clip_consistency"] == pytest.approx(vbench_consistency(means(frames)), abs=1e-6)


def test_clip_loads_a_local_checkpoint_through_open_clip_factory(tiny_clip, tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "adabench-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(tmp_path / "cfg")
    ckpt = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_clip.state_dict().items()}, str(ckpt))
    metric = ClipConsistency(weights=str(ckpt), model="adabench-tiny-clip")
    frames = video(4)
    assert torch.allclose(metric.embed(frames), ClipImageEncoder(tiny_clip)(frames), atol=1e-5)
    assert metric.info.backend == "clip=adabench-tiny-clip"


def test_missing_clip_weights_say_how_to_provide_them(no_weights, tmp_path):
    for build in (lambda: ClipConsistency(), lambda: METRICS.build("clip-consistency", fps=16)):
        with pytest.raises(MissingWeightsError, match="ADABENCH_CLIP_WEIGHTS") as err:
            build()
        assert "\n" not in str(err.value)
    with pytest.raises(MissingWeightsError, match="not found"):
        ClipConsistency(weights=str(tmp_path / "nope.safetensors"))


# --- LPIPS ----------------------------------------------------------------------------------

def test_tiny_lpips_runs_through_lpips_forward(tiny_lpips):
    result = stream(LpipsDistance(network=tiny_lpips, fps=4.0), video(9, 64))
    for name in ("lpips_first", "lpips_prev"):
        assert len(result.series[name]) == 3
        assert all(torch.isfinite(torch.tensor(result.series[name])))
    assert result.scalars["lpips_first_mean"] != 0.0
    assert set(result.scalars) == {"lpips_first_mean", "lpips_first_end", "lpips_prev_mean"}


def test_frozen_video_has_zero_lpips(tiny_lpips):
    metric = LpipsDistance(network=tiny_lpips)
    stream(metric, video(1, 64).expand(5, -1, -1, -1))
    assert metric.values("lpips_first") == [0.0] * 5
    assert metric.values("lpips_prev") == [0.0] * 5


def test_lpips_streaming_matches_pairwise_calls(tiny_lpips):
    frames = video(7, 64)
    metric = LpipsDistance(network=tiny_lpips)
    stream(metric, frames)
    with torch.no_grad():
        expect_first = tiny_lpips(frames, frames[:1].expand_as(frames), normalize=True).reshape(-1)
        expect_prev = tiny_lpips(frames[1:], frames[:-1], normalize=True).reshape(-1)
    assert metric.values("lpips_first") == pytest.approx(expect_first.tolist(), abs=1e-6)
    assert metric.values("lpips_prev")[1:] == pytest.approx(expect_prev.tolist(), abs=1e-6)


def test_lpips_loads_local_trunk_and_shipped_linear_layers(tmp_path):
    from torchvision import models as tv

    trunk = {k: v for k, v in tv.alexnet(weights=None).state_dict().items() if k.startswith("features.")}
    path = tmp_path / "alexnet-trunk.pth"
    torch.save(trunk, path)
    metric = LpipsDistance(weights=str(path), net="alex")
    loaded = metric.distance.model.state_dict()
    assert torch.equal(loaded["net.slice1.0.weight"], trunk["features.0.weight"])
    assert torch.equal(loaded["net.slice5.10.weight"], trunk["features.10.weight"])
    shipped = load_state_dict(lpips.__path__[0] + "/weights/v0.1/alex.pth")
    for key, value in shipped.items():
        assert torch.equal(loaded[key], value)
    assert metric.info.backend == "lpips=alex"


def test_missing_lpips_weights_say_how_to_provide_them(no_weights):
    with pytest.raises(MissingWeightsError, match="ADABENCH_LPIPS_WEIGHTS") as err:
        LpipsDistance()
    assert "\n" not in str(err.value) and "alexnet-owt" in str(err.value)


def test_checkpoints_with_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weights": torch.zeros(1), "obj": UserError("x")}, path)
    with pytest.raises(UserError, match="cannot read weights"):
        load_state_dict(path)
