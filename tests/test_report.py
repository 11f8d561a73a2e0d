"""``adabench report``: rendered from a real (tiny) results folder and from doctored copies of it whose
truth is known: the stored frames in the contact sheet, the best mark only where intervals separate,
a hostile prompt shown as text, the significant differences in summary.md, and the page in headless
Chromium (no console errors, every image loads, a screenshot)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adabench.cli import main
from adabench.harness.report import FILES_DIR, render_report
from adabench.harness.report_media import GAP, LABEL_HEIGHT, read_frames, stored_videos, upscale
from adabench.harness.report_plots import chunk_ends
from adabench.harness.report_tables import best_model
from adabench.video_io import iter_video

HOSTILE = "<script>alert(1)</script>"
SECTIONS = ("run", "headline", "comparisons", "plots", "videos", "metrics")
PLOTS = ("flow", "retention", "drift", "frechet", "lockin", "anchor_mass", "latency", "memory", "profile_gt")
SCALE = 3


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real results folder: two models and the ground truth, 3 prompts x 2 seeds, 9 frames, with videos."""
    out = tmp_path_factory.mktemp("run")
    assert main(["compare", "--models", "adastate,ff-anchor", "--prompts", "panworld-smoke", "--frames", "9",
                 "--seeds", "2", "--save-videos", "--quiet", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def rendered(run_dir) -> Path:
    assert main(["report", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def doctored(run_dir, tmp_path_factory) -> Path:
    """A copy with known truth: a hostile prompt and spec, ff-anchor's fps separable from adastate's and
    its latency not, one significant comparison, and ff-anchor's stored frames of the last prompt damaged."""
    out = tmp_path_factory.mktemp("doctored") / "run"
    shutil.copytree(run_dir, out, ignore=shutil.ignore_patterns("report*"))
    plan, results = json.loads((out / "plan.json").read_text()), json.loads((out / "results.json").read_text())
    first = results["run"]["prompts"][0]
    for job in plan["jobs"]:
        job["prompt"] = HOSTILE if job["prompt"] == first else job["prompt"]
    results["run"]["prompts"][0] = HOSTILE
    results["run"]["command"] += f" --note {HOSTILE}"
    models = results["models"]
    models["ff-anchor"]["spec"] += HOSTILE
    for name, mean in (("adastate", 30.0), ("ff-anchor", 50.0)):
        models[name]["metrics"]["fps@9/gt"].update(mean=mean, ci_low=mean - 5, ci_high=mean + 5)
    for name, mean in (("adastate", 40.0), ("ff-anchor", 41.0)):
        models[name]["metrics"]["chunk_latency_p50_ms@9/gt"].update(mean=mean, ci_low=mean - 3, ci_high=mean + 3)
    results["comparisons"] = [{"model": "ff-anchor", "baseline": "adastate", "metric": "fps@9/gt", "scalar": "fps",
                               "frames": 9, "init": "gt", "direction": "higher", "unit": "frames/s", "n": 6,
                               "mean_diff": 20.0, "ci_low": 15.0, "ci_high": 25.0, "p_value": 0.01, "p_holm": 0.02,
                               "verdict": "better"}]
    last = results["run"]["prompts"][-1]
    damaged = next(j for j in plan["jobs"] if j["prompt"] == last and j["model"] == "ff-anchor" and j["seed"] == 0)
    (out / "videos" / f"{damaged['hash']}.npz").write_bytes(b"not a zip")
    (out / "plan.json").write_text(json.dumps(plan))
    (out / "results.json").write_text(json.dumps(results))
    render_report(out)
    return out


def sources(html: str) -> list[str]:
    return re.findall(r'<(?:img|video|source)\b[^>]*\bsrc="([^"]*)"', html) + re.findall(r'<a\b[^>]*\bhref="([^"#][^"]*)"', html)


def test_report_has_every_section_and_every_source_resolves(rendered):
    html = (rendered / "report.html").read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    for plot in PLOTS:
        assert f'src="{FILES_DIR}/{plot}.png"' in html
    srcs = sources(html)
    assert len(srcs) >= len(PLOTS) + 3 * 4                # plots; per prompt: labels, gif, sheet, mp4 link
    for src in srcs:
        assert not re.match(r"[a-z]+:|//", src), f"not self-contained: {src}"
        assert (rendered / src).is_file(), src
    assert not re.search(r"<script|<link|@import|url\(|https?://", html), "the page must load nothing external"
    for name in ("panworld-gt", "adastate", "ff-anchor"):
        assert f"<b>{name}</b>" in html


def test_contact_sheet_and_strip_hold_the_stored_frames(rendered):
    """Sheet tile (row r, column j) is model j's stored frame at row r's index, upscaled: pixel for pixel."""
    videos = stored_videos(rendered)
    prompt = json.loads((rendered / "results.json").read_text())["run"]["prompts"][0]
    paths = videos[(prompt, 0, "gt")]
    names = ["panworld-gt", "adastate", "ff-anchor"]                                 # ground truth first
    frames = [read_frames(paths[n]) for n in names]                                  # each [9, 32, 32, 3]
    sheet = np.asarray(Image.open(rendered / FILES_DIR / "p00-gt-s0-sheet.png").convert("RGB"))
    tile = 32 * SCALE
    assert sheet.shape[1] == 3 * tile + 2 * GAP * SCALE
    top = LABEL_HEIGHT + GAP * SCALE                                                 # one row: frame 9 (index 8)
    for j, video in enumerate(frames):
        x = j * (tile + GAP * SCALE)
        assert np.array_equal(sheet[top:top + tile, x:x + tile], upscale(video[8:9], SCALE)[0]), names[j]
    gif = Image.open(rendered / FILES_DIR / "p00-gt-s0.gif")
    assert gif.n_frames == 9 and gif.size == (3 * 32 + 2 * GAP, 32)                # native pixels, page upscales
    gif.seek(4)
    shown = np.asarray(gif.convert("RGB")).astype(int)
    assert np.abs(shown[:, 32 + GAP:64 + GAP] - frames[1][4]).mean() < 8           # 64-colour palette
    fps, chunks = iter_video(rendered / FILES_DIR / "p00-gt-s0.mp4")
    assert fps == 16 and sum(c.shape[0] for c in chunks) == 9


def test_hostile_text_shows_as_text(doctored):
    html = (doctored / "report.html").read_text()
    assert HOSTILE not in html and "<script" not in html
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert html.count(escaped) >= 4                  # command, spec, prompt list, video heading
    assert f"<h3>{escaped}</h3>" in html             # its videos were found and shown under it


def test_damaged_video_is_listed_as_missing(doctored):
    html = (doctored / "report.html").read_text()
    assert html.count("no stored video for ff-anchor") == 1
    assert re.search(r"<h3>a fast pan[^<]*</h3>(?:(?!<h3>).)*no stored video for ff-anchor", html, re.S)
    summary = (doctored / "summary.md").read_text()
    assert HOSTILE not in re.sub(r"`[^`]*`", "", summary)    # Markdown shows a code span's text as it is


def test_best_is_marked_only_where_intervals_separate(doctored):
    html = (doctored / "report.html").read_text()
    assert "50 [45, 55] ★" in html                    # fps: ff-anchor's interval above adastate's
    assert "41 [38, 44] ★" not in html and "40 [37, 43] ★" not in html   # latency: intervals overlap
    base = {"mean": 1.0, "ci_low": 0.9, "ci_high": 1.1, "applicable": True}
    high = {"mean": 2.0, "ci_low": 1.8, "ci_high": 2.2, "applicable": True}
    close = {"mean": 1.15, "ci_low": 1.05, "ci_high": 1.25, "applicable": True}
    assert best_model({"a": base, "b": high}, "higher") == "b"
    assert best_model({"a": base, "b": high}, "lower") == "a"
    assert best_model({"a": base, "b": close}, "higher") is None
    assert best_model({"a": base, "b": high}, "none") is None
    assert best_model({"a": base, "b": {**high, "ci_low": None}}, "higher") is None     # n = 1: no interval


def test_summary_has_the_headline_table_and_the_significant_differences(doctored):
    text = (doctored / "summary.md").read_text()
    assert "## 9 frames, init gt" in text
    header = next(line for line in text.splitlines() if line.startswith("| model | motion_ratio"))
    assert "fps ↑" in header and "dynamics_retention ↑" in header
    assert "| ff-anchor |" in text and "**50 [45, 55]**" in text
    assert "| ff-anchor | fps@9/gt | +20 [+15, +25] | frames/s | 0.02 | better |" in text
    assert len(text.splitlines()) < 60


def test_folder_without_videos_says_how_to_get_them_and_drops_stale_media(doctored, tmp_path, capsys):
    out = tmp_path / "novideo"
    shutil.copytree(doctored, out, ignore=shutil.ignore_patterns("videos"))
    assert (out / FILES_DIR / "p00-gt-s0.gif").is_file()                              # from the copied render
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "without --save-videos" in html and ".gif" not in html
    assert not list((out / FILES_DIR).glob("*.gif")) and (out / FILES_DIR / "flow.png").is_file()


def test_bad_folder_is_one_line_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    (tmp_path / "plan.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 2
    (tmp_path / "results.json").write_text("{not json")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("adabench: error: report") for line in err)
    assert "is not a folder" in err[0] and "adabench aggregate" in err[2] and "not readable JSON" in err[3]


def test_chunk_ends_of_known_layouts():
    assert chunk_ends(43, 126, 3).tolist()[:3] == [1, 4, 7] and chunk_ends(43, 126, 3)[-1] == 126  # given frame 0
    assert chunk_ends(42, 126, 3).tolist()[:2] == [3, 6] and chunk_ends(42, 126, 3)[-1] == 126      # generated all


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHECKER = ("<script>addEventListener('load',function(){var b=[];for(const i of document.images)"
           "{if(!(i.complete&&i.naturalWidth>0))b.push(i.getAttribute('src'));}"
           "document.body.setAttribute('data-broken',b.join(' '));"
           "document.body.setAttribute('data-images',document.images.length);"
           "if(b.length)console.error('broken images: '+b.join(' '));});</script>")


def chromium(page: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--enable-logging=stderr", "--v=0", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def broken_images(report: Path) -> tuple[list[str], int, str]:
    """Load a copy of the page (beside it, so paths resolve) with a checker that lists images that did not load."""
    probe = report.with_name("probe.html")
    probe.write_text(report.read_text().replace("</body>", CHECKER + "</body>"))
    done = chromium(probe, "--virtual-time-budget=10000", "--dump-dom")
    body = re.search(r"<body([^>]*)>", done.stdout).group(1)
    broken = re.search(r'data-broken="([^"]*)"', body).group(1).split()
    return broken, int(re.search(r'data-images="(\d+)"', body).group(1)), done.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="headless check needs Debian's chromium (apt-get install chromium); "
                                             "absent here")
def test_page_in_headless_chromium(rendered, tmp_path):
    page = tmp_path / "site"
    shutil.copytree(rendered, page, ignore=shutil.ignore_patterns("store", "videos"))
    shot = tmp_path / "report.png"
    done = chromium(page / "report.html", f"--screenshot={shot}", "--window-size=1400,3000")
    assert shot.is_file() and shot.stat().st_size > 50_000, done.stderr[-2000:]
    assert not re.search(r"CONSOLE|Uncaught", done.stderr), done.stderr[-2000:]        # the page logs nothing
    broken, count, log = broken_images(page / "report.html")
    assert broken == [] and count >= len(PLOTS) + 3 * 3, log[-2000:]
    (page / FILES_DIR / "flow.png").unlink()                                        # the check can fail
    broken, _, log = broken_images(page / "report.html")
    assert broken == [f"{FILES_DIR}/flow.png"] and "broken images" in log
    print(f"screenshot: {shot}")
