"""``adabench train``: run a recipe with checkpoints, resume, a loss log and a manifest."""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch

from adabench.checkpoints import read_metadata
from adabench.errors import UserError
from adabench.training.checkpointing import load_training_state, save_training_state
from adabench.training.objectives import objective_class
from adabench.training.recipe import Recipe

LAST = "last.safetensors"


def learning_rate(recipe: Recipe, step: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train(recipe: Recipe, out: Path, device: str = "cpu", init_dir: Path | None = None,
          progress: bool = True) -> Path:
    """Train ``recipe`` into ``out``; resumes from ``out/last.safetensors`` if it belongs to this recipe.

    Writes ``out/<name>.safetensors`` (final weights), ``out/<name>.log.jsonl`` (losses),
    ``out/<name>.loss.png`` and updates ``out/manifest.json``. Returns the weights' path.
    """
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    objective = objective_class(recipe.kind).build(recipe, init_dir or out)
    modules = objective.modules()
    for module in modules.values():
        module.to(dev).train()
    optimizer = torch.optim.AdamW(objective.trainable(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    meta = {"recipe": recipe.name, "recipe_digest": recipe.digest()}
    if recipe.kind in ("base", "policy"):         # the sampler pyramid it was trained on (adabench.sampler)
        meta["sampler_stagger"] = str(recipe.sampler_stagger)

    last, log_path = out / f"{recipe.name}.{LAST}", out / f"{recipe.name}.log.jsonl"
    start = 0
    if last.is_file():
        if read_metadata(last).get("recipe_digest") != recipe.digest():
            raise UserError(f"{last} belongs to another version of recipe {recipe.name!r}; delete it or use another --out")
        start = load_training_state(last, modules, optimizer)
        kept = [l for l in log_path.read_text().splitlines() if json.loads(l)["step"] < start] if log_path.exists() else []
        log_path.write_text("".join(k + "\n" for k in kept))
        print(f"resuming {recipe.name} at step {start}", file=sys.stderr)
    elif log_path.exists():
        log_path.unlink()

    t0 = time.perf_counter()
    terms: dict[str, float] = {}
    with tqdm(total=recipe.steps, initial=start, desc=recipe.name, file=sys.stderr, disable=not progress) as bar:
        for step in range(start, recipe.steps):
            torch.manual_seed(recipe.seed * 1_000_003 + step)       # noise depends on the step only: exact resume
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(recipe, step)
            loss, terms = objective.loss(step, dev)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(objective.trainable(), recipe.grad_clip)
            optimizer.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % recipe.log_every == 0 or step + 1 == recipe.steps:
                with log_path.open("a") as f:
                    f.write(json.dumps({"step": step, "loss": loss.item(), **terms, "grad_norm": float(grad_norm),
                                        "lr": learning_rate(recipe, step),
                                        "seconds": round(time.perf_counter() - t0, 2)}) + "\n")
            if (step + 1) % recipe.checkpoint_every == 0 and step + 1 < recipe.steps:
                save_training_state(last, modules, optimizer, step + 1, meta)

    final = out / f"{recipe.name}.safetensors"
    objective.save_final(final, {**meta, "steps": str(recipe.steps), "data_seed": str(recipe.data_seed),
                                 "final_losses": json.dumps(terms)})
    last.unlink(missing_ok=True)
    plot_losses(log_path, out / f"{recipe.name}.loss.png", recipe.name)
    update_manifest(out / "manifest.json", recipe, final, terms, time.perf_counter() - t0, device)
    return final


def update_manifest(path: Path, recipe: Recipe, weights: Path, terms: dict, seconds: float, device: str) -> None:
    manifest = json.loads(path.read_text()) if path.exists() else {}
    manifest[recipe.name] = {"file": weights.name, "sha256": sha256(weights), "format": read_metadata(weights).get("format"),
                             "recipe": recipe.name, "recipe_version": recipe.version, "recipe_digest": recipe.digest(),
                             "kind": recipe.kind, "init": recipe.init, "data_seed": recipe.data_seed,
                             "steps": recipe.steps, "final_losses": terms, "train_seconds_this_run": round(seconds, 1),
                             "device": device, "torch": torch.__version__}
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def plot_losses(log_path: Path, png: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(l) for l in log_path.read_text().splitlines()] if log_path.exists() else []
    if not rows:
        return
    keys = [k for k in rows[0] if k.endswith(("mse", "loss")) and isinstance(rows[0][k], float)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in keys:
        ax.plot([r["step"] for r in rows], [r[k] for r in rows], label=k)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(f"{title}: training losses")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
