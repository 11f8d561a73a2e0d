"""``adabench train``: run a recipe with checkpoints, resume, a loss log and a manifest.

Nothing a finished run wrote is destroyed before its replacement exists: a run in progress
logs to ``NAME.running.log.jsonl`` and checkpoints to ``NAME.last.safetensors`` (the one
before kept as ``NAME.previous.safetensors``); the weights, log, plot and manifest are each
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from adabench.atomic import atomic_path, remove_stale_parts, write_text
from adabench.checkpoints import read_metadata
from adabench.errors import UserError
from adabench.training.checkpointing import load_training_state, save_training_state
from adabench.training.objectives import objective_class
from adabench.training.recipe import Recipe, check_file_name, check_recipe

LAST = "last.safetensors"
UNREADABLE = (SafetensorError, OSError, ValueError, KeyError, RuntimeError)   # a damaged or foreign checkpoint


@dataclass(frozen=True)
class RunFiles:
    """Where one recipe's run lives: plain file names inside ``out`` (the name is checked, so no
    path can leave ``out`` or be another recipe's file)."""

    out: Path
    name: str

    def __post_init__(self) -> None:
        check_file_name("recipe name", self.name)

    def _file(self, suffix: str) -> Path:
        return self.out / f"{self.name}{suffix}"

    @property
    def final(self) -> Path:
        return self._file(".safetensors")

    @property
    def last(self) -> Path:
        return self._file(f".{LAST}")

    @property
    def previous(self) -> Path:
        return self._file(".previous.safetensors")

    @property
    def running_log(self) -> Path:
        return self._file(".running.log.jsonl")

    @property
    def log(self) -> Path:
        return self._file(".log.jsonl")

    @property
    def plot(self) -> Path:
        return self._file(".loss.png")

    @property
    def manifest(self) -> Path:
        return self.out / "manifest.json"

    def remove_stale_parts(self) -> None:
        """Delete the temporaries a killed run left of these files (other recipes' runs, and live
        writers, may be writing into the same folder: theirs are left alone)."""
        targets = (self.final, self.last, self.previous, self.running_log, self.log, self.plot, self.manifest)
        remove_stale_parts(self.out, [p.name for p in targets])


def learning_rate(recipe: Recipe, step: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def training_device(device: str) -> torch.device:
    """``device`` as a torch device, refused unless it is the CPU or a CUDA GPU that exists here."""
    from adabench.harness.plan import check_device

    check_device(device)
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: there is no GPU {dev.index} here; accepted: cuda:0 to "
                        f"cuda:{torch.cuda.device_count() - 1}")
    return dev


def refuse_file_out(out: Path) -> None:
    """Refuse an ``out`` that is (or lies inside) a file."""
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        where = "" if blocker == out else f": {blocker}"
        raise UserError(f"--out {out}{where} is a file, not a folder; accepted: a folder (created if missing)")


def prepare_out(out: Path) -> list[Path]:
    """Create ``out`` and prove it writable, or say what is wrong with it; returns the folders it created
    (deepest first), so that a run refused right after can remove them (:func:`remove_empty`)."""
    refuse_file_out(out)
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UserError(f"--out {out} is not writable ({exc.strerror or exc}); accepted: a folder you can "
                        f"write in") from None
    return created


def remove_empty(folders: list[Path]) -> None:
    """Remove folders (deepest first) that are still empty: a refused run leaves nothing behind."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def read_manifest(path: Path) -> dict:
    """The finished runs in a folder (``{}`` if none yet); a damaged manifest is refused with the way out."""
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or not all(isinstance(v, dict) for v in manifest.values()):
            raise ValueError("not a JSON object of one object per recipe")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"manifest {path} is damaged ({exc}); it only indexes the finished runs beside it: repair it, "
                        f"or rename it (e.g. to {path.name}.damaged) and a new one is started; no weights, logs or "
                        f"checkpoints are touched") from None
    return manifest


def finished_run(files: RunFiles, recipe: Recipe, retrain: bool) -> bool:
    """True if ``out`` already holds this recipe's finished weights (nothing to do); refuses to train
    over a finished run of another version unless ``retrain``."""
    if retrain or not files.final.exists() or files.last.exists() or files.previous.exists():
        return False
    try:
        meta = read_metadata(files.final)
    except UNREADABLE as exc:
        raise UserError(f"finished weights {files.final} are damaged ({first_line(exc)}); pass --retrain to train "
                        f"{recipe.name} again (they are replaced only when the new run completes), or delete them") \
            from None
    if meta.get("recipe_digest") == recipe.digest():
        return True
    raise UserError(f"{files.final} holds a finished run of another version of recipe {recipe.name!r} "
                    f"({meta.get('steps', '?')} steps); pass --retrain to train this version (the finished files are "
                    f"replaced only when the new run completes), or use another --out")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def train(recipe: Recipe, out: Path, device: str = "cpu", init_dir: Path | None = None,
          progress: bool = True, retrain: bool = False) -> Path:
    """Train ``recipe`` into ``out``; resumes from ``out/<name>.last.safetensors`` if it belongs to this recipe.

    Writes ``out/<name>.safetensors`` (final weights), ``out/<name>.log.jsonl`` (losses),
    ``out/<name>.loss.png`` and updates ``out/manifest.json``. Returns the weights' path.
    A folder that already holds this recipe's finished weights is left as it is (``retrain``:
    train again; the finished files are replaced only when the new run completes).
    """
    from tqdm import tqdm

    check_recipe(recipe)
    files = RunFiles(out, recipe.name)
    dev = training_device(device)
    refuse_file_out(out)
    read_manifest(files.manifest)
    if finished_run(files, recipe, retrain):
        print(f"{recipe.name} is already trained in {out} ({files.final.name}); nothing to do "
              f"(--retrain trains it again)", file=sys.stderr)
        return files.final
    created = prepare_out(out)                    # before the init checkpoints: an unwritable --out is the error
    try:
        objective = objective_class(recipe.kind).build(recipe, init_dir or out)
        if not objective.trainable():
            raise UserError(f"recipe {recipe.name}: its model has no parameters to train (e.g. codec = \"identity\" "
                            f"in a codec recipe); accepted: a model with trainable parameters")
    except UserError:
        remove_empty(created)
        raise
    files.remove_stale_parts()
    modules = objective.modules()
    for module in modules.values():
        module.to(dev).train()
    optimizer = torch.optim.AdamW(objective.trainable(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    meta = {"recipe": recipe.name, "recipe_digest": recipe.digest()}
    if recipe.kind in ("base", "policy"):         # the sampler pyramid it was trained on (adabench.sampler)
        meta["sampler_stagger"] = str(recipe.sampler_stagger)

    start = resume(files, recipe, modules, optimizer)
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
                with files.running_log.open("a") as f:
                    f.write(json.dumps({"step": step, "loss": loss.item(), **terms, "grad_norm": float(grad_norm),
                                        "lr": learning_rate(recipe, step),
                                        "seconds": round(time.perf_counter() - t0, 2)}) + "\n")
            if (step + 1) % recipe.checkpoint_every == 0 and step + 1 < recipe.steps:
                if files.last.exists():
                    os.replace(files.last, files.previous)        # kept until the new checkpoint is complete
                save_training_state(files.last, modules, optimizer, step + 1, meta)

    objective.save_final(files.final, {**meta, "steps": str(recipe.steps), "data_seed": str(recipe.data_seed),
                                       "final_losses": json.dumps(terms)})
    os.replace(files.running_log, files.log)
    plot_losses(files.log, files.plot, recipe.name)
    update_manifest(files.manifest, recipe, files.final, terms, time.perf_counter() - t0, device)
    files.last.unlink(missing_ok=True)
    files.previous.unlink(missing_ok=True)
    return files.final


def resume(files: RunFiles, recipe: Recipe, modules: dict, optimizer: torch.optim.Optimizer) -> int:
    """Restore the newest checkpoint of a run in progress (if any) and start its running log with the
    rows before it; returns the step to continue from. Damage is refused with the way to recover."""
    checkpoint = next((p for p in (files.last, files.previous) if p.exists()), None)
    if checkpoint is None:
        write_text(files.running_log, "")
        return 0
    try:
        digest = read_metadata(checkpoint).get("recipe_digest")
    except UNREADABLE as exc:
        raise damaged_checkpoint(files, checkpoint, exc) from None
    if digest != recipe.digest():
        raise UserError(f"{checkpoint} belongs to another version of recipe {recipe.name!r}; delete it or use "
                        f"another --out")
    try:
        start = load_training_state(checkpoint, modules, optimizer)
        if not 0 < start < recipe.steps:
            raise ValueError(f"its step {start} is outside 1..{recipe.steps - 1}")
    except UNREADABLE as exc:
        raise damaged_checkpoint(files, checkpoint, exc) from None
    rows = log_rows_before(log_to_resume(files, recipe), start, checkpoint)
    write_text(files.running_log, "".join(json.dumps(r) + "\n" for r in rows))
    print(f"resuming {recipe.name} at step {start}", file=sys.stderr)
    return start


def damaged_checkpoint(files: RunFiles, checkpoint: Path, exc: BaseException) -> UserError:
    if checkpoint == files.last and files.previous.exists():
        way = f"delete it and training resumes from the checkpoint before it ({files.previous.name})"
    else:
        way = "delete it to train the recipe again from step 0 (no earlier checkpoint is kept)"
    return UserError(f"checkpoint {checkpoint} is damaged ({first_line(exc)}); {way}")


def log_to_resume(files: RunFiles, recipe: Recipe) -> Path | None:
    """The running log; else the finished log if this very run already moved it there (interrupted
    after its final weights were written) or no finished weights exist (a run from before running logs)."""
    if files.running_log.exists():
        return files.running_log
    if not files.log.exists():
        return None
    if files.final.exists():
        try:
            if read_metadata(files.final).get("recipe_digest") != recipe.digest():
                return None
        except UNREADABLE:
            return None
    return files.log


def log_rows_before(path: Path | None, start: int, checkpoint: Path) -> list[dict]:
    """The log's rows of steps before ``start``; a last line cut short by an interruption is dropped."""
    if path is None:
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("no integer step")
        except ValueError as exc:
            if number == len(lines) and not text.endswith("\n"):
                break                                  # a half-written last row: the step after the checkpoint
            raise UserError(f"loss log {path} is damaged at line {number} ({first_line(exc)}); rename or delete it "
                            f"to resume from {checkpoint.name} at step {start} (the log then restarts there; no "
                            f"training is lost)") from None
        if row["step"] < start:
            rows.append(row)
    return rows


def update_manifest(path: Path, recipe: Recipe, weights: Path, terms: dict, seconds: float, device: str) -> None:
    manifest = read_manifest(path)
    manifest[recipe.name] = {"file": weights.name, "sha256": sha256(weights), "format": read_metadata(weights).get("format"),
                             "recipe": recipe.name, "recipe_version": recipe.version, "recipe_digest": recipe.digest(),
                             "kind": recipe.kind, "init": recipe.init, "data_seed": recipe.data_seed,
                             "steps": recipe.steps, "final_losses": terms, "train_seconds_this_run": round(seconds, 1),
                             "device": device, "torch": torch.__version__}
    write_text(path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


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
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
