"""Copy trained weights into the package (``adabench/weights/``) as float16 safetensors,
with a manifest (recipe, data seed, steps, final losses, checksum) and the training logs
in ``reports/reference/training/``.

    python -m adabench.training.ship --runs runs/train --codec runs/train/codec-decoder.safetensors \
        adastate-alpha2=adastate ff-anchor sliding-window base

``--codec`` grafts the decoder of a codec trained with ``freeze_encoder`` into each model:
only if its encoder and latent normalisation are bit-identical to the model's own, so the
DiT reads exactly the latents it was trained on and only how they are rendered changes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from adabench.atomic import atomic_path, write_text
from adabench.checkpoints import read_metadata, save_modules
from adabench.errors import UserError
from adabench.training.loop import read_manifest

PACKAGE_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
LOGS = Path(__file__).resolve().parents[2] / "reports" / "reference" / "training"


DECODER = "codec.decoder."


def graft_decoder(tensors: dict, codec: dict, source: str, codec_path: str) -> dict:
    """``tensors`` with their codec's decoder replaced by ``codec``'s; refused unless every other
    codec tensor (encoder, latent normalisation) is identical, i.e. the latents are unchanged."""
    keep = sorted(k for k in tensors if k.startswith("codec.") and not k.startswith(DECODER))
    changed = [k for k in keep if k not in codec or not torch.equal(tensors[k], codec[k])]
    if changed or not any(k.startswith(DECODER) for k in codec):
        raise UserError(f"cannot graft the decoder of {codec_path} into {source}: its encoder or latent normalisation "
                        f"differs ({', '.join(changed[:3]) or 'no decoder'}); accepted: a codec trained with "
                        f"freeze_encoder from the codec {source} was trained on")
    return {**tensors, **{k: v for k, v in codec.items() if k.startswith(DECODER)}}


@dataclass(frozen=True)
class DecoderSource:
    """A codec checkpoint whose decoder is grafted into every model shipped in one run, read once."""

    path: Path
    tensors: dict
    record: dict          # the manifest's "decoder" entry of every model it is grafted into

    @classmethod
    def load(cls, path: Path) -> "DecoderSource":
        meta = read_metadata(path)
        record = {"recipe": meta.get("recipe", path.stem), "steps": int(meta.get("steps", -1)),
                  "final_losses": json.loads(meta.get("final_losses", "{}")),
                  "trained_fp32_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        return cls(path, load_file(str(path)), record)


def copy_logs(runs: Path, recipe: str) -> None:
    LOGS.mkdir(parents=True, exist_ok=True)
    for suffix in (".log.jsonl", ".loss.png"):
        if (runs / f"{recipe}{suffix}").exists():
            with atomic_path(LOGS / f"{recipe}{suffix}") as tmp:
                shutil.copyfile(runs / f"{recipe}{suffix}", tmp)


def ship(runs: Path, recipe: str, target: str, decoder: DecoderSource | None = None) -> dict:
    source = runs / f"{recipe}.safetensors"
    meta = read_metadata(source)
    tensors = load_file(str(source))
    grafted = {}
    if decoder is not None:
        tensors = graft_decoder(tensors, decoder.tensors, str(source), str(decoder.path))
        meta = {**meta, "decoder": decoder.record["recipe"]}
        grafted = {"decoder": decoder.record}
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    dest = PACKAGE_WEIGHTS / f"{target}.safetensors"
    save_modules(dest, {}, {**meta, "stored_dtype": "float16"}, extra_tensors=tensors)
    copy_logs(runs, recipe)
    run_manifest = read_manifest(runs / "manifest.json").get(recipe, {})
    return {**grafted, "file": dest.name, "sha256": hashlib.sha256(dest.read_bytes()).hexdigest(), "recipe": recipe,
            "data_seed": int(meta.get("data_seed", -1)), "steps": int(meta.get("steps", -1)),
            "final_losses": json.loads(meta.get("final_losses", "{}")), "format": meta.get("format"),
            "stored_dtype": "float16", "trained_fp32_sha256": run_manifest.get("sha256"),
            "train_seconds": run_manifest.get("train_seconds_this_run"), "torch": run_manifest.get("torch"),
            "init": run_manifest.get("init"),      # the run it continued (its own manifest entry: the lineage)
            **({"heldout_accuracy": json.loads(meta["heldout_accuracy"])} if "heldout_accuracy" in meta else {})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m adabench.training.ship", description=__doc__)
    p.add_argument("--runs", default="runs/train", help="folder that `adabench train` wrote")
    p.add_argument("--codec", type=Path, default=None,
                   help="a codec checkpoint trained with freeze_encoder whose decoder replaces each model's")
    p.add_argument("items", nargs="+", help="RECIPE or RECIPE=NAME (NAME: the file name in adabench/weights)")
    args = p.parse_args(argv)
    manifest_path = PACKAGE_WEIGHTS / "manifest.json"
    try:
        manifest = read_manifest(manifest_path)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.codec is not None and not args.codec.is_file():
        print(f"error: codec checkpoint {args.codec} not found; accepted: the .safetensors that "
              f"`adabench train codec-decoder` writes", file=sys.stderr)
        return 2
    decoder = None
    if args.codec is not None:
        decoder = DecoderSource.load(args.codec)
        copy_logs(args.codec.parent, args.codec.stem)
    for item in args.items:
        recipe, _, target = item.partition("=")
        try:
            manifest[target or recipe] = ship(Path(args.runs), recipe, target or recipe, decoder)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        write_text(manifest_path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")   # after each: none lost
        print(f"shipped {recipe} -> {manifest[target or recipe]['file']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
