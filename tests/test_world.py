"""PanWorld: grammar, ground-truth motion of the renderer, determinism, suites."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adabench.config import ModelConfig
from adabench.errors import UserError
from adabench.world.panworld import render_batch, render_clip
from adabench.world.prompts import (VOCAB, VOCAB_SIZE, attribute_classes, grammar_summary, make_prompt,
                                    parse_prompt)
from adabench.world.suites import panworld_default, panworld_smoke, read_prompt_file

FAST_LEFT = "a fast pan left over a desert with red circles"
SLOW_UP = "a slow pan up over a forest with blue squares"
STILL = "a still shot of a city with green triangles"


# --- grammar -----------------------------------------------------------------------------

def test_example_prompts_parse_to_their_attributes_and_velocities():
    s = parse_prompt(FAST_LEFT)
    assert (s.speed, s.direction, s.scene, s.color, s.shape) == ("fast", "left", "desert", "red", "circles")
    assert s.velocity == (1.5, 0.0) and s.camera_velocity == (-1.5, 0.0)   # camera left, content right
    assert s.velocity_at(64) == (3.0, 0.0) and s.motion == "fast-left"
    s = parse_prompt(SLOW_UP)
    assert (s.speed, s.direction, s.scene, s.color, s.shape) == ("slow", "up", "forest", "blue", "squares")
    assert s.velocity == (0.0, 0.5) and s.camera_velocity == (0.0, -0.5)   # camera up, content down
    s = parse_prompt(STILL)
    assert (s.speed, s.direction, s.scene, s.color, s.shape) == ("still", None, "city", "green", "triangles")
    assert s.velocity == (0.0, 0.0) and s.motion == "still"
    assert parse_prompt("a slow pan right over a city with red circles").velocity == (-0.5, 0.0)
    assert parse_prompt("a fast pan down over a city with red circles").velocity == (0.0, -1.5)


def test_normalisation_case_whitespace_and_articles():
    s = parse_prompt("  A  Fast PAN left\tover AN desert with Red circles ")
    assert s == parse_prompt(FAST_LEFT) and s.text == FAST_LEFT
    assert parse_prompt("a still shot of a ocean with white squares").text == \
        "a still shot of an ocean with white squares"


def test_tokens_share_one_vocabulary():
    classes = attribute_classes()
    assert set(classes) == {"motion", "scene", "color", "shape"} and len(classes["motion"]) == 9
    seen = set()
    for motion in classes["motion"]:
        for scene in classes["scene"]:
            for color in classes["color"]:
                for shape in classes["shape"]:
                    spec = parse_prompt(make_prompt(motion, scene, color, shape))
                    assert spec.motion == motion and len(spec.tokens) == 5
                    assert [VOCAB[i] for i in spec.tokens] == \
                        [spec.speed, spec.direction or "none", scene, color, shape]
                    seen.add(spec.tokens)
    assert len(seen) == 9 * 4 * 5 * 3                       # distinct prompts, distinct tokens
    assert VOCAB_SIZE == len(VOCAB) == len(set(VOCAB)) <= ModelConfig().vocab_size
    assert any("still shot" in line for line in grammar_summary())


@pytest.mark.parametrize("prompt, word, accepted", [
    ("a fast pan left over a jungle with red circles", "'jungle'", "city, desert, forest, ocean"),
    ("a medium pan left over a desert with red circles", "'medium'", "fast, slow"),
    ("a fast pan sideways over a desert with red circles", "'sideways'", "down, left, right, up"),
    ("a still shot of a city with pink triangles", "'pink'", "blue, green, red, white, yellow"),
    ("a still shot of a city with green circle", "'circle'", "circles, squares, triangles"),
])
def test_unknown_word_names_the_word_and_the_vocabulary(prompt, word, accepted):
    with pytest.raises(UserError) as err:
        parse_prompt(prompt)
    msg = str(err.value)
    assert word in msg and accepted in msg and "\n" not in msg


@pytest.mark.parametrize("prompt", ["", "a fast pan left", "fast pan left over a desert with red circles",
                                    "a fast pan left over a big desert with red circles",
                                    "a still shot over a city with green triangles",
                                    "a fast zoom left over a desert with red circles"])
def test_bad_structure_shows_both_patterns(prompt):
    with pytest.raises(UserError) as err:
        parse_prompt(prompt)
    msg = str(err.value)
    assert "a {slow|fast} pan {left|right|up|down} over a {scene}" in msg
    assert "a still shot of a {scene}" in msg and "\n" not in msg


# --- ground-truth motion -----------------------------------------------------------------

def _integer_shift_matches(a: torch.Tensor, b: torch.Tensor, dx: int, dy: int) -> float:
    """Max |b - a shifted by (dx, dy)| on the overlap; a, b [3, H, W]."""
    h, w = a.shape[-2:]
    sa = a[:, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    sb = b[:, max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
    return float((sa - sb).abs().max())


@pytest.mark.parametrize("prompt, size, step", [
    (FAST_LEFT, 64, 1),                                               # 3 px/frame right
    ("a fast pan up over an ocean with yellow triangles", 64, 1),   # 3 px/frame down
    ("a slow pan right over a city with white squares", 64, 1),     # 1 px/frame left
    ("a slow pan down over a forest with green circles", 32, 2),    # 0.5 px/frame up, 1 px per 2
])
def test_integer_velocity_is_an_exact_shift(prompt, size, step):
    spec = parse_prompt(prompt)
    vx, vy = spec.velocity_at(size)
    dx, dy = round(vx * step), round(vy * step)
    assert (dx, dy) == (vx * step, vy * step) and (dx, dy) != (0, 0)
    frames = render_clip(spec, seed=7, num_frames=6, start=3, size=size)
    for t in range(6 - step):
        assert _integer_shift_matches(frames[t], frames[t + step], dx, dy) < 1e-5
        # the opposite shift must not match: the test can fail
        assert _integer_shift_matches(frames[t], frames[t + step], -dx, -dy) > 0.05


def _shifted(a: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """a [C, H, W] translated by each (sx, sy) in shifts [S, 2] (bilinear) -> [S, C, H, W]."""
    h, w = a.shape[-2:]
    base = torch.stack(torch.meshgrid(torch.arange(w) + 0.5, torch.arange(h) + 0.5, indexing="xy"), dim=-1)
    src = base[None] - shifts.float()[:, None, None, :]                # [S, H, W, 2] source pixel (x, y)
    grid = 2 * src / torch.tensor([w, h]) - 1                            # grid_sample's [-1, 1] coordinates
    return torch.nn.functional.grid_sample(a.expand(len(shifts), -1, -1, -1), grid, align_corners=False)


def _least_squares_shift(a: torch.Tensor, b: torch.Tensor, reach: int = 8, margin: int = 9) -> np.ndarray:
    """Translation (x, y) of b relative to a minimising the squared error on the central crop.

    Integer search within ``reach`` px, then a 0.05 px search within +-0.5 px of the best.
    """
    a, b = a.mean(0, keepdim=True), b.mean(0, keepdim=True)       # grey [1, H, W]

    def best(shifts: torch.Tensor) -> torch.Tensor:
        crop = (slice(None), slice(None), slice(margin, -margin), slice(margin, -margin))
        err = (_shifted(a, shifts)[crop] - b[None][crop]).pow(2).mean(dim=(1, 2, 3))
        return shifts[err.argmin()]
    grid = torch.arange(-reach, reach + 1, dtype=torch.float64)
    coarse = best(torch.cartesian_prod(grid, grid))
    fine = torch.arange(-0.5, 0.5001, 0.05, dtype=torch.float64)
    return best(coarse + torch.cartesian_prod(fine, fine)).numpy()


@pytest.mark.parametrize("prompt, k", [(FAST_LEFT, 3), (SLOW_UP, 5),
                                       ("a slow pan left over an ocean with red squares", 7),
                                       ("a fast pan down over a city with white triangles", 5)])
def test_subpixel_velocity_measured_by_least_squares(prompt, k):
    """Sub-pixel velocities at size 32: the measured shift over k frames (half-integer px) is k * velocity."""
    spec = parse_prompt(prompt)
    true = k * np.array(spec.velocity)
    errors = []
    for seed in range(4):
        frames = render_clip(spec, seed, num_frames=k + 1)
        errors.append(np.linalg.norm(_least_squares_shift(frames[0], frames[k]) - true) / np.linalg.norm(true))
    assert np.median(errors) < 0.05, errors


def test_still_prompt_frames_are_identical():
    frames = render_clip(parse_prompt(STILL), seed=3, num_frames=8, start=100)
    assert torch.equal(frames, frames[:1].expand_as(frames))


def test_frames_are_rgb_in_unit_range_with_texture():
    frames = render_batch([parse_prompt(p) for p in (FAST_LEFT, SLOW_UP, STILL)], [0, 1, 2], 5, size=48)
    assert frames.shape == (3, 5, 3, 48, 48) and frames.dtype == torch.float32
    assert frames.min() >= 0 and frames.max() <= 1
    assert (frames.flatten(2).std(dim=2) > 0.03).all()    # never a flat view


# --- determinism and consistency ---------------------------------------------------------

def test_seeds_set_the_content():
    spec = parse_prompt(SLOW_UP)
    a, b = render_clip(spec, 1, 4), render_clip(spec, 1, 4)
    assert torch.equal(a, b)
    assert (a - render_clip(spec, 2, 4)).abs().mean() > 0.02


def test_range_render_equals_slice_of_longer_render():
    spec = parse_prompt(FAST_LEFT)
    long = render_clip(spec, 5, 30)
    torch.testing.assert_close(render_clip(spec, 5, 10, start=17), long[17:27], atol=1e-6, rtol=0)


def test_render_batch_equals_stacked_render_clip():
    prompts = [FAST_LEFT, SLOW_UP, STILL, "a fast pan down over an ocean with yellow triangles"]
    specs, seeds, starts = [parse_prompt(p) for p in prompts], [11, 12, 13, 14], [0, 5, 9, 40]
    batch = render_batch(specs, seeds, 6, starts)
    single = torch.stack([render_clip(s, sd, 6, start=st) for s, sd, st in zip(specs, seeds, starts)])
    torch.testing.assert_close(batch, single, atol=1e-6, rtol=0)


def _best_shift_mad(a: torch.Tensor, b: torch.Tensor, reach: int = 12) -> float:
    """Smallest mean |a - b| over integer shifts within reach (overlap at least 20x20)."""
    h, w = a.shape[-2:]
    best = float("inf")
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            sa = a[:, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
            sb = b[:, max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
            best = min(best, float((sa - sb).abs().mean()))
    return best


def test_panning_far_reveals_new_content():
    for prompt in (FAST_LEFT, "a fast pan up over an ocean with white circles"):
        spec = parse_prompt(prompt)
        first = render_clip(spec, 21, 1)[0]
        near = render_clip(spec, 21, 1, start=4)[0]                 # 6 px away: a shifted copy
        assert _best_shift_mad(first, near) < 1e-3
        for frames in (134, 1000, 20000):                            # >= 200 px away
            far = render_clip(spec, 21, 1, start=frames)[0]
            assert _best_shift_mad(first, far) > 0.03, frames


def test_bad_size_is_a_user_error():
    with pytest.raises(UserError, match="frame size"):
        render_clip(parse_prompt(STILL), 0, 2, size=4)


# --- suites ------------------------------------------------------------------------------

def test_shipped_suites():
    default, smoke = panworld_default(), panworld_smoke()
    assert len(default) == 16 and len(set(default)) == 16 and len(smoke) == 3
    specs = [parse_prompt(p) for p in default]
    assert all(parse_prompt(p).text == p for p in default + smoke)
    assert {s.speed for s in specs} == {"still", "slow", "fast"}
    for speed in ("slow", "fast"):
        assert {s.direction for s in specs if s.speed == speed} == {"left", "right", "up", "down"}
    classes = attribute_classes()
    for attr in ("scene", "color", "shape"):
        assert {getattr(s, attr) for s in specs} == set(classes[attr])
    assert sorted(parse_prompt(p).speed for p in smoke) == ["fast", "slow", "still"]


def test_prompt_file_comments_and_blank_lines(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text(f"# my prompts\n\n{FAST_LEFT}\n   \n  {STILL.upper()}   # trailing comment\n")
    assert read_prompt_file(path) == [FAST_LEFT, STILL]


def test_prompt_file_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text(f"# header\n{FAST_LEFT}\n\na fast pan left over a jungle with red circles\n")
    with pytest.raises(UserError) as err:
        read_prompt_file(path)
    msg = str(err.value)
    assert str(path) in msg and "line 4" in msg and "'jungle'" in msg and "\n" not in msg
    with pytest.raises(UserError, match="cannot read"):
        read_prompt_file(tmp_path / "missing.txt")
