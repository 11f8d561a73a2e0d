"""Flow backends and flow metrics against known truth: textures moved by known offsets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from adabench.chunk import Chunk
from adabench.errors import MissingWeightsError, UserError
from adabench.metrics.dynamic_degree import (DynamicDegree, dynamic_degree, dynamic_degree_decision,
                                             frame_interval)
from adabench.metrics.flow import RAFTFlow, get_flow_backend
from adabench.metrics.flow_magnitude import FlowMagnitude, flow_magnitude, magnitude_stats
from adabench.metrics.motion_fidelity import MotionFidelity
from adabench.metrics.retention import DynamicsRetention, dynamics_retention
from adabench.registry import METRICS

SIZE = 64
_rng = np.random.default_rng(7)
# smooth colour texture at twice the frame resolution: 2x2 averaging of integer crops gives exact half-pixel shifts
TEXTURE = gaussian_filter(_rng.random((2 * 600, 2 * 600, 3)), sigma=(8, 8, 0))
TEXTURE = (TEXTURE - TEXTURE.min()) / (TEXTURE.max() - TEXTURE.min())


def video(offsets: list[tuple[float, float]], size: int = SIZE) -> torch.Tensor:
    """Frame t shows the texture's content moved by offsets[t] (px, x right / y down): [T, 3, size, size]."""
    frames = []
    for ox, oy in offsets:
        x0, y0 = 600 - round(2 * ox), 600 - round(2 * oy)
        crop = TEXTURE[y0:y0 + 2 * size, x0:x0 + 2 * size]                              # [2s, 2s, 3]
        frames.append(crop.reshape(size, 2, size, 2, 3).mean((1, 3)))
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()


def constant(v: tuple[float, float], frames: int) -> list[tuple[float, float]]:
    return [(v[0] * t, v[1] * t) for t in range(frames)]


def cumulative(steps: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out = [(0.0, 0.0)]
    for dx, dy in steps:
        out.append((out[-1][0] + dx, out[-1][1] + dy))
    return out


def stream(metric, frames: torch.Tensor, chunk: int = 3, fps: float = 16.0):
    for i, start in enumerate(range(0, frames.shape[0], chunk)):
        metric.update(Chunk(index=i, start_frame=start, frames=frames[start:start + chunk], fps=fps))
    return metric.compute()


VELOCITIES = [(0.5, 0), (1, 0), (2, 0), (3, 0), (0, -2), (2, 2), (-1.5, 1), (0, 3), (-3, -0.5)]


@pytest.mark.parametrize("backend", ["dis", "farneback"])
@pytest.mark.parametrize("v", VELOCITIES)
def test_translation_gives_true_magnitude_and_direction(backend, v):
    frames = video(constant(v, 3))
    flow = get_flow_backend(backend)(frames[:-1], frames[1:])                           # [2, 2, H, W]
    assert flow.shape == (2, 2, SIZE, SIZE)
    interior = flow[..., 8:-8, 8:-8]
    speed = math.hypot(*v)
    assert magnitude_stats(interior).mean == pytest.approx([speed, speed], rel=0.05)
    measured = interior.flatten(2).median(2).values                                    # [2, 2]
    assert (measured - torch.tensor(v, dtype=torch.float32)).norm(dim=1).max() < 0.05 * speed


def test_magnitude_stats_on_a_known_field():
    flow = torch.zeros(1, 2, 10, 10)
    flow[0, 0] = torch.arange(100, dtype=torch.float32).reshape(10, 10)                # magnitudes 0..99
    s = magnitude_stats(flow)
    assert s.mean.item() == pytest.approx(49.5)
    assert s.median.item() == pytest.approx(49.5)
    assert s.p95.item() == pytest.approx(np.percentile(np.arange(100), 95))
    assert s.top5.item() == pytest.approx(np.mean([95, 96, 97, 98, 99]))               # int(100 * 0.05) = 5 largest


def test_vbench_worked_example_exactly():
    # 832x480, 16 fps, 81 frames -> every 2nd frame, 41 kept, 40 pairs, threshold 11.25 px, 10 pairs needed
    assert frame_interval(16) == 2
    kept = len(range(0, 81, frame_interval(16)))
    assert kept == 41
    ten = [11.3] * 10 + [11.25] * 30                   # 11.25 itself does not exceed (VBench: score > thres)
    d = dynamic_degree_decision(ten, 480, 832, kept)
    assert d.threshold == 11.25 and d.count_needed == 10 and d.count_exceeding == 10 and d.dynamic
    nine = [11.3] * 9 + [11.0] * 31
    assert not dynamic_degree_decision(nine, 480, 832, kept).dynamic
    assert dynamic_degree_decision(ten, 832, 480, kept).threshold == 11.25             # min(H, W) either way
    assert dynamic_degree_decision([20.0] * 40, 480, 832, kept, threshold_scale=2.0).threshold == 22.5
    assert not dynamic_degree_decision([], 480, 832, 1).dynamic


@pytest.mark.parametrize("fps,interval", [(16, 2), (8, 1), (30, 4), (24, 3), (4, 1), (60, 8)])
def test_frame_subsampling(fps, interval):
    assert frame_interval(fps) == interval


def test_subsampling_in_the_stream():
    # content jumps 3 px forward on even->odd frames and back on odd->even: kept frames at 16 fps are identical
    frames = video(cumulative([(3, 0), (-3, 0)] * 16))                                 # 33 frames
    at16 = stream(DynamicDegree(), frames, fps=16).scalars
    assert at16["dynamic"] == 0.0 and at16["dynamic_pairs_exceeding"] == 0
    assert at16["dynamic_pairs_needed"] == round(4 * 17 / 16)                        # N = 17 kept frames
    at8 = stream(DynamicDegree(), frames, fps=8).scalars
    assert at8["dynamic"] == 1.0 and at8["dynamic_pairs_exceeding"] == 32 and at8["dynamic_pairs_needed"] == 8
    # N counts kept frames, not pairs: 21 frames at 16 fps -> 11 kept -> round(2.75) = 3 (pairs would give 2)
    assert stream(DynamicDegree(), frames[:21], fps=16).scalars["dynamic_pairs_needed"] == 3


def test_static_and_flicker_are_not_dynamic_and_motion_is():
    still = video(constant((0, 0), 33))
    flicker = still * torch.tensor([1.0 if t % 2 else 0.7 for t in range(33)])[:, None, None, None]
    moving = video(constant((3, 1), 33))
    for backend in ("dis", "farneback"):
        assert stream(DynamicDegree(backend), still).scalars["dynamic"] == 0.0
        assert stream(DynamicDegree(backend), flicker).scalars["dynamic"] == 0.0
        result = stream(DynamicDegree(backend), moving)
        assert result.scalars["dynamic"] == 1.0 and result.scalars["dynamic_degree_clips"] == 1.0


def test_clips_of_two_seconds():
    # 16 fps: first 2-second clip moves at 2 px/frame, the second is still
    frames = video(cumulative([(2, 0)] * 32 + [(0, 0)] * 31))                           # 64 frames
    result = stream(DynamicDegree(), frames, chunk=5)
    assert result.series["dynamic_per_clip"] == [1.0, 0.0]
    assert result.scalars["dynamic_degree_clips"] == 0.5
    assert result.scalars["dynamic"] == 1.0            # 16 of 31 pairs exceed, 8 needed


def test_streaming_equals_batch():
    frames = video(cumulative([(3, 1)] * 14 + [(1, 0)] * 20 + [(0, 0)] * 6))           # 41 frames, motion dies
    flow = stream(FlowMagnitude(), frames).scalars
    assert flow == pytest.approx(flow_magnitude(frames), rel=1e-9)
    dd = stream(DynamicDegree(), frames).scalars
    assert {k: dd[k] for k in ("dynamic", "dynamic_degree_clips")} == pytest.approx(dynamic_degree(frames, 16.0))
    assert stream(DynamicsRetention(), frames).scalars["dynamics_retention"] == pytest.approx(
        dynamics_retention(frames, 16.0), rel=1e-9)


def test_flow_magnitude_series_norm_and_info():
    frames = video(cumulative([(1, 0)] * 16 + [(2, 0)] * 16))                          # 33 frames, 16 fps
    result = stream(FlowMagnitude(), frames, chunk=8)
    # a pair belongs to the window of its later frame: pair (15, 16) moved 1 px and falls in second 1 / chunk 2
    assert result.series["flow_magnitude_mean_per_second"] == pytest.approx([1, (1 + 15 * 2) / 16, 2], rel=0.02)
    assert result.series["flow_magnitude_mean_per_chunk"] == pytest.approx([1, 1, (1 + 7 * 2) / 8, 2, 2], rel=0.02)
    s = result.scalars
    assert s["flow_magnitude_mean"] == pytest.approx(1.5, rel=0.05)
    assert s["flow_magnitude_mean_norm"] == pytest.approx(s["flow_magnitude_mean"] / (SIZE / 256))
    assert result.info["flow_magnitude_top5"].backend == "flow=dis"
    assert METRICS.build("flow:backend=farneback").info.backend == "flow=farneback"
    assert METRICS.build("dynamic-degree").info.name == "dynamic_degree[flow=dis]"


def test_retention_reads_the_decay():
    frames = video(cumulative([(2, 0)] * 16 + [(1.5, 0)] * 16 + [(1, 0)] * 16))       # 3 s at 16 fps
    s = stream(DynamicsRetention(), frames).scalars
    assert s["flow_first_window"] == pytest.approx(2.0, rel=0.05)
    assert s["flow_last_window"] == pytest.approx(1.0, rel=0.05)
    assert s["dynamics_retention"] == pytest.approx(0.5, rel=0.05)
    quarter = stream(DynamicsRetention(window="25%"), frames).scalars                  # 12 of 48 pairs
    assert quarter["dynamics_retention"] == pytest.approx(0.5, rel=0.05)
    with pytest.raises(UserError):
        DynamicsRetention(window="soon")


def test_motion_fidelity_against_true_velocity():
    frames = video(constant((2, 1), 20))
    ok = stream(MotionFidelity(true_velocity=(2, 1)), frames).scalars
    assert ok["motion_ratio"] == pytest.approx(1.0, abs=0.03) and ok["motion_error"] < 0.05
    damped = stream(MotionFidelity(true_velocity=(4, 2)), frames).scalars
    assert damped["motion_ratio"] == pytest.approx(0.5, abs=0.02)
    assert damped["motion_error"] == pytest.approx(math.hypot(2, 1), rel=0.03)
    still = stream(MotionFidelity(true_velocity="0;0"), frames)
    assert still.scalars["still_motion"] == pytest.approx(math.hypot(2, 1), rel=0.03)
    assert "motion_ratio" not in still.scalars and len(still.series["still_motion_per_window"]) == 2


def test_raft_with_a_tiny_random_network(tmp_path, monkeypatch):
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    net = raft_small(weights=None)
    frames = torch.rand(2, 3, 36, 44)                  # padded to 128x128 inside, cropped back
    flow = RAFTFlow(size="small", model=net, iters=1)(frames[:-1], frames[1:])
    assert flow.shape == (1, 2, 36, 44) and torch.isfinite(flow).all()

    path = tmp_path / "raft.pth"                       # a local weights file: a plain state dict
    torch.save(net.state_dict(), path)
    loaded = get_flow_backend(f"raft-small:weights={path},iters=1")
    assert loaded.name == "raft-small"
    assert torch.allclose(loaded(frames[:-1], frames[1:]), flow, atol=1e-4)

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))           # an empty cache
    with pytest.raises(MissingWeightsError) as err:
        get_flow_backend("raft")
    message = str(err.value)
    assert "weights=" in message and str(tmp_path / "hub" / "checkpoints") in message and "\n" not in message
    with pytest.raises(MissingWeightsError):
        get_flow_backend("raft-small:weights=/no/such/file.pth")


def test_unknown_backend_lists_names():
    with pytest.raises(UserError, match="dis, farneback, raft-small, raft-large"):
        get_flow_backend("lucas-kanade")
