"""Weight-free frame measures, drift forms, lock-in and VBench consistency against known truth."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adabench.chunk import Chunk
from adabench.errors import UserError
from adabench.metrics.drift import (AnchorLockIn, Drift, first_last_window_contrast, start_end_contrast,
                                    vbench_consistency, video_drift_error, window_means)
from adabench.metrics.frame_measures import MEASURES, PSNR_CAP_DB, measure_frames
from adabench.registry import METRICS


def chunks_of(video: torch.Tensor, size: int = 3, fps: float = 16.0) -> list[Chunk]:
    """Cut a video [T, 3, H, W] into chunks of ``size`` frames (the last may be shorter)."""
    return [Chunk(i, s, video[s:s + size], fps) for i, s in enumerate(range(0, video.shape[0], size))]


def stream(metric, video: torch.Tensor, size: int = 3):
    for chunk in chunks_of(video, size):
        metric.update(chunk)
    return metric.compute()


def gray_video(levels: list[float], size: int = 16) -> torch.Tensor:
    """Constant-gray frames whose luminance is exactly ``levels`` [T, 3, size, size]."""
    return torch.tensor(levels).view(-1, 1, 1, 1).expand(-1, 3, size, size).clone()


def checkerboard(amplitude: float, size: int = 32) -> torch.Tensor:
    """Gray checkerboard 0.5 +- amplitude/2 [3, size, size]: Laplacian is +-4*amplitude."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = ((x + y) % 2).float()
    return (0.5 - amplitude / 2 + amplitude * c).expand(3, -1, -1).clone()


def texture(h: int, w: int, seed: int = 0, cell: int = 4) -> torch.Tensor:
    """A smooth random RGB texture [3, h, w] in [0, 1], features about ``cell`` px wide."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 3, h // cell, w // cell, generator=g)
    return F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)[0]


# --- frame measures -------------------------------------------------------------------------

def test_sharpness_of_checkerboard_is_hand_computed_and_blur_lowers_it():
    board = checkerboard(0.5).unsqueeze(0)
    assert measure_frames("sharpness", board).item() == pytest.approx(16 * 0.5 ** 2, rel=1e-5)
    sharp = texture(64, 64).unsqueeze(0) + 0.2 * checkerboard(1.0, 64).unsqueeze(0) - 0.1
    blurred = F.avg_pool2d(sharp, 3, stride=1, padding=1, count_include_pad=False)
    assert measure_frames("sharpness", blurred).item() < 0.2 * measure_frames("sharpness", sharp).item()


def test_exposure_saturation_clipping_on_known_frames():
    gray = gray_video([0.3, 0.7])
    assert measure_frames("exposure", gray).tolist() == pytest.approx([0.3, 0.7], abs=1e-6)
    assert measure_frames("saturation", gray).tolist() == [0.0, 0.0]
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 0.8
    assert measure_frames("saturation", red).item() == pytest.approx(1.0)
    assert measure_frames("exposure", red).item() == pytest.approx(0.2126 * 0.8)
    half_white = torch.full((1, 3, 8, 8), 0.5)
    half_white[..., :4, :] = 1.0
    assert measure_frames("clipping", half_white).item() == 0.5
    one_channel_black = torch.full((1, 3, 8, 8), 0.5)
    one_channel_black[:, 2, :2, :] = 0.0            # a quarter of the pixels clip in one channel
    assert measure_frames("clipping", one_channel_black).item() == 0.25


def test_ssim_and_psnr_of_identical_and_known_frames():
    frame = texture(32, 32)
    video = frame.expand(4, -1, -1, -1)
    for name in ("ssim_first", "ssim_prev"):
        assert measure_frames(name, video).tolist() == pytest.approx([1.0] * 4, abs=1e-6)
    for name in ("psnr_first", "psnr_prev"):
        assert measure_frames(name, video).tolist() == [PSNR_CAP_DB] * 4
    a, b = torch.full((1, 3, 16, 16), 0.5), torch.full((1, 3, 16, 16), 0.6)
    # MSE 0.01 -> PSNR = 10 log10(1 / 0.01) = 20 dB
    assert measure_frames("psnr_first", torch.cat([a, b]))[1].item() == pytest.approx(20.0, abs=1e-4)


def test_reference_measures_use_the_given_first_and_previous_frames():
    video = torch.stack([texture(32, 32, seed) for seed in range(6)])
    whole = measure_frames("psnr_prev", video)
    tail = measure_frames("psnr_prev", video[3:], first=video[0], prev=video[2])
    assert torch.allclose(whole[3:], tail)
    assert torch.allclose(measure_frames("ssim_first", video)[3:],
                          measure_frames("ssim_first", video[3:], first=video[0], prev=video[2]))


def test_unknown_measure_is_a_user_error():
    with pytest.raises(UserError, match="known: sharpness"):
        Drift(measure="sharpnes")


# --- drift forms ----------------------------------------------------------------------------

LEVELS = [0.1 + 0.02 * t for t in range(20)]   # exposure of frame t


def test_drift_forms_on_a_hand_computed_series():
    # start-end: k = round(0.15 * 20) = 3 -> |mean(0.10, 0.12, 0.14) - mean(0.44, 0.46, 0.48)| = 0.34
    assert start_end_contrast(LEVELS) == pytest.approx(0.34)
    # 5 s at 2 fps = 10 frames: |mean(g0..g9) - mean(g10..g19)| = |0.19 - 0.39| = 0.20
    assert first_last_window_contrast(LEVELS, fps=2.0) == pytest.approx(0.20)
    # shorter than two 5 s windows at 16 fps: halves, the same 0.20
    assert first_last_window_contrast(LEVELS, fps=16.0) == pytest.approx(0.20)
    # VDE, N = 10 chunks of 2: M_i = 0.11 + 0.04 (i - 1); sum_{j=1..9} (10 - j) j = 165
    # -> 165 * 0.04 / 0.11 = 60
    assert video_drift_error(LEVELS) == pytest.approx(60.0)
    # LV-Bench trims the remainder: 5 extra frames at the end change nothing
    assert video_drift_error(LEVELS + [1.0] * 5) == pytest.approx(60.0)
    assert math.isnan(video_drift_error(LEVELS[:9]))
    assert window_means(LEVELS[:5], 2) == pytest.approx([0.11, 0.15, 0.18])


def test_streaming_drift_of_exposure_matches_hand_computed_numbers():
    result = stream(Drift(measure="exposure", fps=2.0), gray_video(LEVELS))
    assert result.scalars["drift_exposure_start_end"] == pytest.approx(0.34, abs=1e-6)
    assert result.scalars["drift_exposure_first_last"] == pytest.approx(0.20, abs=1e-6)
    assert result.scalars["drift_exposure_vde"] == pytest.approx(60.0, rel=1e-5)
    assert result.series["exposure"] == pytest.approx([0.11 + 0.04 * i for i in range(10)], abs=1e-6)
    assert result.info["drift_exposure_vde"].direction == "lower"


@pytest.mark.parametrize("measure", sorted(MEASURES))
def test_repeated_frame_has_zero_drift(measure):
    frame = texture(32, 32)
    frame[:, :4] = 1.0                               # some clipped pixels too
    result = stream(Drift(measure=measure, fps=4.0), frame.expand(23, -1, -1, -1))
    for form in ("start_end", "first_last", "vde"):
        assert result.scalars[f"drift_{measure}_{form}"] == 0.0


@pytest.mark.parametrize("measure", sorted(MEASURES))
def test_streaming_in_chunks_of_3_equals_the_whole_video(measure):
    video = torch.stack([texture(32, 32, seed) * (0.6 + 0.02 * seed) for seed in range(23)])
    metric = Drift(measure=measure, fps=4.0)
    result = stream(metric, video, size=3)
    whole = measure_frames(measure, video)
    assert torch.allclose(torch.tensor(metric.values(measure), dtype=torch.float64), whole.double(), rtol=1e-5, atol=1e-6)
    assert result.scalars[f"drift_{measure}_start_end"] == pytest.approx(start_end_contrast(whole), rel=1e-5, abs=1e-7)
    assert result.scalars[f"drift_{measure}_first_last"] == pytest.approx(
        first_last_window_contrast(whole, fps=4.0), rel=1e-5, abs=1e-7)
    assert result.scalars[f"drift_{measure}_vde"] == pytest.approx(video_drift_error(whole), rel=1e-5, abs=1e-7)
    assert len(result.series[measure]) == math.ceil(23 / 4)


def test_merge_of_contiguous_parts_equals_one_pass_and_order_is_checked():
    video = torch.stack([texture(32, 32, seed) for seed in range(12)])
    one, a, b = (Drift(measure="ssim_prev") for _ in range(3))
    chunks = chunks_of(video)
    for c in chunks:
        one.update(c)
    for c in chunks[:2]:
        a.update(c)
    b.update(chunks[0])
    b.reset()                                        # reset clears values and references
    assert b.num_frames == 0
    a.merge(b)
    for c in chunks[2:]:
        a.update(c)
    assert a.values("ssim_prev") == one.values("ssim_prev")
    with pytest.raises(ValueError, match="in order"):
        a.update(chunks[1])


def test_registry_builds_drift_and_lockin_with_context_defaults():
    drift = METRICS.build("drift:measure=ssim_first", fps=8)
    assert drift.measure.name == "ssim_first" and drift.fps == 8.0
    result = stream(METRICS.build("drift", fps=8), torch.rand(10, 3, 16, 16))
    assert set(result.scalars) >= {"drift_sharpness_start_end", "drift_sharpness_first_last", "drift_sharpness_vde"}
    lock = stream(METRICS.build("lockin", fps=8), torch.rand(10, 3, 16, 16))
    assert set(lock.scalars) == {"lockin_end", "lockin_mean"}


# --- lock-in --------------------------------------------------------------------------------

def test_lockin_of_a_frozen_video_stays_at_one():
    result = stream(AnchorLockIn(fps=4.0), texture(32, 32).expand(16, -1, -1, -1))
    assert result.series["lockin"] == pytest.approx([1.0] * 4, abs=1e-6)
    assert result.scalars["lockin_end"] == pytest.approx(1.0, abs=1e-6)


def test_lockin_of_a_translating_texture_decays():
    world = texture(32, 128, seed=3, cell=8)
    video = torch.stack([world[:, :, t:t + 32] for t in range(32)])      # pan 1 px/frame, 4 fps
    result = stream(AnchorLockIn(fps=4.0), video)
    series = result.series["lockin"]
    assert len(series) == 8
    assert series[0] > series[1] > series[2]          # decays while the first view leaves the frame
    assert result.scalars["lockin_end"] < 0.3 < 0.8 < series[0]
    assert result.scalars["lockin_mean"] == pytest.approx(sum(series) / len(series))


# --- VBench consistency ---------------------------------------------------------------------

def test_vbench_consistency_on_hand_built_features():
    e1, e2 = torch.eye(2)
    assert vbench_consistency(torch.stack([e1, e1, 3 * e1])) == pytest.approx(1.0)
    # i=1: 0.5 (cos(e1,e2)+cos(e1,e2)) = 0; i=2: 0.5 (cos(e2,e1) + cos(e1,e1)) = 0.5 -> mean 0.25
    assert vbench_consistency(torch.stack([e1, e2, e1])) == pytest.approx(0.25)
    # negative cosines count as 0
    assert vbench_consistency(torch.stack([e1, -e1])) == pytest.approx(0.0)
    # 45 degrees: i=1 -> cos = 1/sqrt(2) for both terms
    assert vbench_consistency(torch.stack([e1, e1 + e2])) == pytest.approx(1 / math.sqrt(2))
    assert vbench_consistency(e1.unsqueeze(0)) == 1.0
