"""Copy trained weights into the package (``adabench/weights/``) as float16 safetensors,
with a manifest (recipe, data seed, steps, final losses, checksum) and the training logs
in ``reports/reference/training/``.

    python -m adabench.training.ship --runs runs/train adastate-alpha2=adastate ff-anchor sliding-window base
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file

from adabench.checkpoints import read_metadata, save_modules

PACKAGE_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
LOGS = Path(__file__).resolve().parents[2] / "reports" / "reference" / "training"


def ship(runs: Path, recipe: str, target: str) -> dict:
    source = runs / f"{recipe}.safetensors"
    meta = read_metadata(source)
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(source)).items()}
    dest = PACKAGE_WEIGHTS / f"{target}.safetensors"
    save_modules(dest, {}, {**meta, "stored_dtype": "float16"}, extra_tensors=tensors)
    LOGS.mkdir(parents=True, exist_ok=True)
    for suffix in (".log.jsonl", ".loss.png"):
        if (runs / f"{recipe}{suffix}").exists():
            shutil.copy(runs / f"{recipe}{suffix}", LOGS / f"{recipe}{suffix}")
    run_manifest = json.loads((runs / "manifest.json").read_text()).get(recipe, {})
    return {"file": dest.name, "sha256": hashlib.sha256(dest.read_bytes()).hexdigest(), "recipe": recipe,
            "data_seed": int(meta.get("data_seed", -1)), "steps": int(meta.get("steps", -1)),
            "final_losses": json.loads(meta.get("final_losses", "{}")), "format": meta.get("format"),
            "stored_dtype": "float16", "trained_fp32_sha256": run_manifest.get("sha256"),
            "train_seconds": run_manifest.get("train_seconds_this_run"), "torch": run_manifest.get("torch"),
            **({"heldout_accuracy": json.loads(meta["heldout_accuracy"])} if "heldout_accuracy" in meta else {})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m adabench.training.ship", description=__doc__)
    p.add_argument("--runs", default="runs/train", help="folder that `adabench train` wrote")
    p.add_argument("items", nargs="+", help="RECIPE or RECIPE=NAME (NAME: the file name in adabench/weights)")
    args = p.parse_args(argv)
    manifest_path = PACKAGE_WEIGHTS / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for item in args.items:
        recipe, _, target = item.partition("=")
        manifest[target or recipe] = ship(Path(args.runs), recipe, target or recipe)
        print(f"shipped {recipe} -> {manifest[target or recipe]['file']}", file=sys.stderr)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
