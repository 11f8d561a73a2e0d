"""``adabench merge SHARD_DIR... --out DIR``: join the folders of ``compare --shard K/N`` runs."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from adabench.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("merge", help="join shard folders of 'adabench compare --shard K/N' into one",
                              description="Join the results folders of 'adabench compare --shard K/N' runs of one "
                                          "plan into --out (rows copied, sources untouched), then aggregate.")
    p.add_argument("folders", nargs="+", metavar="SHARD_DIR", help="results folders of the shards")
    p.add_argument("--out", required=True, help="the joined folder (may be one of the shard folders)")
    return p


def plan_hash(folder: Path) -> tuple[str, dict]:
    from adabench.harness.aggregate import read_plan

    plan = read_plan(folder)
    return plan["plan_hash"], plan


def run(args: argparse.Namespace) -> int:
    from adabench import atomic
    from adabench.harness.aggregate import PLAN_FILE, STORE_DIR, aggregate, headline_table
    from adabench.harness.compare import VIDEOS_DIR
    from adabench.harness.store import Store

    folders = [Path(f) for f in args.folders]
    for folder in folders:
        if not folder.is_dir():
            raise UserError(f"{folder} is not a folder; accepted: results folders of 'adabench compare --shard K/N'")
    hashes = {folder: plan_hash(folder) for folder in folders}
    first_hash, first_plan = hashes[folders[0]]
    for folder, (h, _) in hashes.items():
        if h != first_hash:
            raise UserError(f"{folder} holds another plan ({h}) than {folders[0]} ({first_hash}); "
                            "accepted: shards of one 'adabench compare' command")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; accepted: a folder")
    if (out / PLAN_FILE).exists() and plan_hash(out)[0] != first_hash:
        raise UserError(f"--out {out} holds another plan; accepted: a new folder or one of the shard folders")
    out.mkdir(parents=True, exist_ok=True)
    plan = dict(first_plan)
    plan["run"] = {**plan["run"], "merged_from": [str(f) for f in folders]}
    atomic.write_json(out / PLAN_FILE, plan)
    target = Store(out / STORE_DIR)
    sources = [p for f in folders if f.resolve() != out.resolve() for p in sorted((f / STORE_DIR).glob("*.sqlite"))]
    copied = target.merge(sources)
    own = [p for p in sorted((out / STORE_DIR).glob("*.sqlite")) if p.resolve() != target.path.resolve()]
    copied += target.merge(own)
    target.close()
    for folder in folders:
        if folder.resolve() != out.resolve() and (folder / VIDEOS_DIR).is_dir():
            (out / VIDEOS_DIR).mkdir(exist_ok=True)
            for video in (folder / VIDEOS_DIR).iterdir():
                if video.is_file() and not video.name.startswith(".") and not (out / VIDEOS_DIR / video.name).exists():
                    shutil.copy2(video, out / VIDEOS_DIR / video.name)
    results = aggregate(out)
    print(headline_table(results))
    print(f"adabench merge: {copied} job row(s) joined from {len(folders)} folder(s) into {out}; "
          f"{results['run']['jobs_ok']} of {results['run']['jobs_planned']} jobs finished", flush=True)
    return 1 if results["run"]["jobs_failed"] else 0
