"""``adabench compare``: models side by side on the same prompts, seeds and device (the main job)."""

from __future__ import annotations

import argparse

from adabench.harness.plan import DEFAULT_METRICS


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare", help="run models on the same prompts, seeds and device; store, aggregate and compare",
        description="Run every model on the same prompts, seeds, init modes and device, one rollout per job scored "
                    "at every horizon; results go to a store in --out (resumable), then results.json (means with "
                    "95%% bootstrap intervals, paired comparisons against the first model) and samples.parquet. "
                    "Scale out with `torchrun --nproc_per_node N -m adabench compare ...` or --shard K/N.")
    p.add_argument("--models", default="adastate,ff-anchor,sliding-window",
                   help="comma list of models, each optionally name:key=value (default: adastate,ff-anchor,"
                        "sliding-window; the first is the baseline of the paired comparisons)")
    p.add_argument("--prompts", default="panworld-default", help="a prompt suite (see 'adabench list') or a prompt "
                   "file, one prompt per line (default: panworld-default)")
    p.add_argument("--frames", default="21,51,126", help="horizons, comma-separated (default 21,51,126): one rollout "
                   "to the longest, every horizon scored on its prefix")
    p.add_argument("--seeds", default="2", help="a count N (seeds 0..N-1) or a comma list (0,3,7; one seed: 7,)")
    p.add_argument("--init", default="gt", help="gt (image-to-video from PanWorld's true first frame), none "
                   "(text-to-video), or gt,none (default gt)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:LOCAL_RANK per rank under torchrun)")
    p.add_argument("--metrics", default=None, help=f"comma list of metrics (default: {DEFAULT_METRICS})")
    p.add_argument("--out", default="runs/compare", help="results folder (default runs/compare)")
    p.add_argument("--resume", action="store_true", help="reuse the finished jobs of --out even if the plan changed")
    p.add_argument("--save-videos", action="store_true", help="also write each rollout to OUT/videos/HASH.mp4 "
                   "(and the exact frames as .npz)")
    p.add_argument("--shard", default=None, help="run only shard K of N (K/N, from 1), e.g. one Slurm array task "
                   "each; join the folders with 'adabench merge'")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    from adabench.harness.compare import run_compare

    return run_compare(args, args._argv)
