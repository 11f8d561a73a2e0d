"""The flow sampler, plain and staggered, against hand-written schedules and exact flows."""

from __future__ import annotations

import pytest
import torch

from adabench.errors import UserError
from adabench.sampler import FlowSampler, frame_lags
from adabench.training.objectives import sample_times


def test_staggered_times_follow_the_hand_written_pyramid():
    sampler = FlowSampler(steps=2, shift=1.0, stagger=1)         # times 1, 0.5, 0
    lags = frame_lags(1, 3, 1)                                   # a state frame, then 3 content frames
    assert lags.tolist() == [0, 0, 1, 2]
    assert sampler.passes(3) == 4
    table = torch.stack(sampler.frame_times(lags)).tolist()
    assert table == [[1.0, 1.0, 1.0, 1.0],       # before pass 0: everything is noise
                     [0.5, 0.5, 1.0, 1.0],       # frame 1 starts one step after frame 0 (and the state)
                     [0.0, 0.0, 0.5, 1.0],
                     [0.0, 0.0, 0.0, 0.5],
                     [0.0, 0.0, 0.0, 0.0]]       # after the last pass: all clean


@pytest.mark.parametrize("steps,stagger", [(1, 0), (4, 0), (4, 1), (3, 2)])
def test_every_frame_follows_an_exact_flow_to_its_own_target(steps, stagger):
    """For the straight path x_t = (1 - t) x0 + t noise the exact velocity is (x - x0) / t and
    Euler is exact on any schedule, so each frame must land on its x0 whatever its lag."""
    x0 = torch.randn(2, 4, 3, 2, 2)
    noise = torch.randn_like(x0)
    seen = []

    def velocity(x, t):
        t = torch.as_tensor(t, dtype=x.dtype).reshape(1, -1, 1, 1, 1).expand(1, x.shape[1], 1, 1, 1)
        seen.append((x.clone(), t.flatten().clone()))
        return torch.where(t > 0, (x - x0) / t.clamp(min=1e-6), torch.zeros_like(x))

    out = FlowSampler(steps, 3.0, stagger).sample(velocity, noise, state_frames=1)
    torch.testing.assert_close(out, x0, rtol=1e-5, atol=1e-5)
    assert len(seen) == steps + 2 * stagger
    for x, t in seen:                     # a frame still at t = 1 has not been touched: it is its noise
        untouched = t == 1.0
        torch.testing.assert_close(x[:, untouched], noise[:, untouched])


def test_invalid_stagger_is_a_user_error():
    for bad in (-1, 1.5, True):
        with pytest.raises(UserError, match="stagger"):
            FlowSampler(4, 3.0, bad)


def test_training_times_walk_the_same_pyramid():
    torch.manual_seed(0)
    lags = frame_lags(1, 3, 1).float() / 4                      # stagger 1 of 4 steps
    t = sample_times(4096, 3.0, lags)                            # [B, 4]
    assert t.shape == (4096, 4) and t.min() >= 0 and t.max() <= 1
    assert torch.equal(t[:, 0], t[:, 1])                         # the state starts with the first frame
    assert (t[:, 1:].diff(dim=1) >= 0).all()                     # later frames are never cleaner
    assert (t[:, 1] == 0).any() and (t[:, 3] == 1).any()         # both ends of the pyramid are trained
    assert ((t[:, 1] < t[:, 3]) & (t[:, 3] < 1) & (t[:, 1] > 0)).any()
    assert sample_times(8, 3.0, torch.zeros(4)).shape == (8, 1)  # no stagger: one time per block
