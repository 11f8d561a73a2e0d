"""The appearance metric, the codec round-trip and seed-offset ground-truth rows, the quality table
and the contact sheets, against known truth: ground-truth renders, colours that no PanWorld prompt
uses, known noise and blur, the shipped codec applied by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adabench.chunk import Chunk
from adabench.errors import UserError
from adabench.metrics.appearance import Appearance, colour_cells, widen
from adabench.metrics.frame_measures import sharpness
from adabench.registry import GENERATORS, METRICS
from adabench.world.panworld import render_clip
from adabench.world.prompts import parse_prompt

PROMPT = "a fast pan left over a desert with red circles"
SEED = 4


def truth(frames: int = 12, seed: int = SEED, prompt: str = PROMPT) -> torch.Tensor:
    return render_clip(parse_prompt(prompt), seed, frames)                      # [T, 3, 32, 32]


def scores(video: torch.Tensor, metric: Appearance | None = None, size: int = 3) -> dict[str, float]:
    metric = metric or Appearance(PROMPT, SEED)
    for i, s in enumerate(range(0, video.shape[0], size)):
        metric.update(Chunk(i, s, video[s:s + size], 16.0))
    result = metric.compute()
    return {**result.scalars, "psnr_gt": result.series["psnr_gt"]}


def test_ground_truth_is_on_palette_as_sharp_as_the_world_and_exact():
    s = scores(truth())
    assert s["appearance_off_palette"] < 0.005
    assert 0.5 < s["appearance_sharpness_ratio"] < 2.0
    assert s["appearance_colour_distance"] < 0.4            # another seed of the same prompt, not 0
    assert s["appearance_psnr_start"] == 100.0 and s["psnr_gt"] == [100.0] * 12


def test_a_colour_no_frame_of_the_prompt_shows_is_off_palette_in_proportion():
    video = truth()
    magenta = torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand_as(video)
    half = video.clone()
    half[..., :16] = magenta[..., :16]                      # the left half of every frame
    whole = scores(magenta.clone())
    assert whole["appearance_off_palette"] == 1.0
    assert whole["appearance_colour_distance"] == pytest.approx(1.0)
    assert scores(half)["appearance_off_palette"] == pytest.approx(0.5, abs=0.005)


def test_skip_leaves_the_given_first_frame_out():
    video = truth()
    video[0] = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)   # an off-palette frame 0
    assert scores(video, Appearance(PROMPT, SEED, skip=1))["appearance_off_palette"] < 0.005
    assert scores(video, Appearance(PROMPT, SEED, skip=0))["appearance_off_palette"] == pytest.approx(1 / 12, abs=0.005)


def test_psnr_is_that_of_known_noise_and_blur_lowers_sharpness():
    video = truth()
    g = torch.Generator().manual_seed(0)
    sigma = 0.02
    noisy = video + sigma * torch.randn(video.shape, generator=g)     # unclamped: the noise is exact
    s = scores(noisy)
    mse = ((noisy[1:4] - video[1:4]) ** 2).flatten(1).mean(1)
    assert s["appearance_psnr_start"] == pytest.approx(float((-10 * torch.log10(mse)).mean()), abs=1e-3)
    assert s["appearance_psnr_start"] == pytest.approx(-20 * math.log10(sigma), abs=0.3)
    blurred = torch.nn.functional.avg_pool2d(video, 3, stride=1, padding=1, count_include_pad=False)
    ratio = scores(blurred)["appearance_sharpness_ratio"] / scores(video)["appearance_sharpness_ratio"]
    expected = float(sharpness(blurred[1:]).mean() / sharpness(video[1:]).mean())
    assert ratio == pytest.approx(expected, rel=1e-6) and ratio < 0.5


def test_chunks_and_merged_shards_give_the_same_scores():
    video = truth(15)
    whole = scores(video, size=5)
    a, b = Appearance(PROMPT, SEED), Appearance(PROMPT, SEED)
    for i, s in enumerate(range(0, 15, 3)):
        (a if s < 9 else b).update(Chunk(i, s, video[s:s + 3], 16.0))
    a.merge(b)
    merged = {**a.compute().scalars, "psnr_gt": a.compute().series["psnr_gt"]}
    for key, value in whole.items():
        assert merged[key] == pytest.approx(value)


def test_widen_and_cells_by_hand():
    cells = colour_cells(torch.tensor([[[[0.0]], [[0.5]], [[0.99]]]]), 4)        # one pixel (0, 2, 3)
    assert cells.tolist() == [(0 * 4 + 2) * 4 + 3]
    occupied = torch.zeros(64, dtype=torch.bool)
    occupied[cells] = True
    wide = widen(occupied, 4).reshape(4, 4, 4)
    assert wide.sum() == 2 * 3 * 2 and wide[1, 3, 2] and not wide[2, 2, 3]


@pytest.mark.parametrize("kwargs", [{"skip": -1}, {"palette_levels": 1}, {"reference_frames": 1, "skip": 1},
                                    {"reference_seeds": True}])
def test_bad_options_are_user_errors(kwargs):
    with pytest.raises(UserError):
        METRICS.build("appearance", prompt=PROMPT, seed=SEED, **kwargs)


def test_seed_offset_renders_another_seed_and_the_codec_row_is_the_codec_by_hand():
    from adabench.checkpoints import load_model
    from adabench.models import WEIGHTS_DIR

    frames = torch.cat([c.frames for c in GENERATORS.build("panworld-gt:seed_offset=3").stream(PROMPT, 1, 7)])
    assert torch.equal(frames, truth(7, seed=4))
    _, codec, _ = load_model(WEIGHTS_DIR / "base.safetensors")
    with torch.no_grad():
        by_hand = codec.float().decode(codec.float().encode(truth(7)))
    codec_row = torch.cat([c.frames for c in GENERATORS.build("panworld-codec").stream(PROMPT, SEED, 7)])
    assert torch.allclose(codec_row, by_hand, atol=1e-6)
    assert 25 < scores(codec_row)["appearance_psnr_start"] < 40        # close to, not equal to, the truth
    with pytest.raises(UserError, match="seed_offset"):
        GENERATORS.build("panworld-gt:seed_offset=-1")
    with pytest.raises(UserError, match="size"):
        GENERATORS.build("panworld-codec:size=64")


def test_named_reference_row_stays_the_reference_beside_seed_offset_rows():
    from adabench.harness.plan import build_plan

    plan = build_plan("panworld-gt:seed_offset=10,panworld-gt", "panworld-smoke", "9", "0,", "gt", "appearance")
    assert plan.reference == "panworld-gt" and [e.name for e in plan.models] == ["panworld-gt:seed_offset=10",
                                                                                  "panworld-gt"]
    plan = build_plan("panworld-gt:seed_offset=10", "panworld-smoke", "9", "0,", "gt", "appearance")
    assert plan.reference == "panworld-gt" and [e.name for e in plan.models][0] == "panworld-gt"


def test_quality_table_of_ground_truth_rows(tmp_path):
    from adabench.cli import main
    from adabench.training.quality import markdown, quality_rows

    out = tmp_path / "run"
    assert main(["compare", "--models", "panworld-gt:seed_offset=1000,panworld-codec:seed_offset=1000,panworld-codec",
                 "--prompts", "panworld-smoke", "--frames", "16", "--seeds", "0,1", "--init", "gt,none",
                 "--metrics", "adherence,frechet,appearance", "--out", str(out), "--quiet"]) == 0
    rows = {(r["init"], r["model"]): r for r in quality_rows(out, 16)}
    codec = rows[("gt", "panworld-codec:seed_offset=1000")]
    assert codec["frechet_over_codec"] == 1.0 and len(codec["frechet_windows"]) == 2
    gt = rows[("gt", "panworld-gt")]
    assert gt["colour_in_range"] == 1.0 and gt["sharpness_in_range"] == 1.0 and gt["off_palette"] == 0.0
    assert gt["recognised_first_window"] == 1.0 and math.isnan(gt["frechet_over_codec"])
    same_seed = rows[("gt", "panworld-codec")]
    assert same_seed["psnr_start"] > 25 and same_seed["frechet_mean"] < codec["frechet_mean"]
    assert "| none | panworld-codec |" in markdown(list(rows.values()))
    with pytest.raises(UserError, match="no .panworld-codec:seed_offset=7. row"):
        quality_rows(out, 16, codec_row="panworld-codec:seed_offset=7")
    # a later run into the same folder (other seeds, the store keeps the first run's jobs): its jobs only
    assert main(["compare", "--models", "panworld-gt:seed_offset=1000,panworld-codec:seed_offset=1000,panworld-codec",
                 "--prompts", "panworld-smoke", "--frames", "16", "--seeds", "2,", "--init", "gt,none",
                 "--metrics", "adherence,frechet,appearance", "--out", str(out), "--quiet", "--resume"]) == 0
    later = {(r["init"], r["model"]): r for r in quality_rows(out, 16)}
    assert later[("gt", "panworld-codec")]["videos"] * 2 == same_seed["videos"]


def test_contact_sheet_holds_the_truth_in_its_first_column():
    from adabench.harness.report_media import GAP
    from adabench.training.sheets import SCALE, sheet

    image = sheet("panworld-codec", [PROMPT], SEED, [0, 5])
    rows, cols = 2, 3
    assert image.shape[1] == cols * 32 * SCALE + (cols - 1) * GAP * SCALE
    first = image[-32 * SCALE:, :32 * SCALE][::SCALE, ::SCALE]          # last row, truth column, native pixels
    expected = (truth(6)[5].permute(1, 2, 0) * 255).round().byte().numpy()
    assert np.array_equal(first, expected) and rows == 2
