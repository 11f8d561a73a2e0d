"""The plan of a comparison: frozen, hashable job specs, built and validated before anything runs.

A job is one rollout: (model, prompt, seed, init mode) to the longest horizon, every
horizon scored on its prefix. Its identity in the store is the content hash of its
:class:`JobSpec`: the model's *canonical* spec (every factory default filled in, so
``adastate`` and ``adastate:state=1,window=3`` are one job), the weights' content hash,
prompt, seed, horizons, init mode, device type, dtype, metric specs and package version.
Changing any of them changes the hash, so a stale result is never reused.

Jobs are ordered model-interleaved (prompt by prompt, seed by seed, every model in turn),
so slow drift of the machine does not favour one model.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adabench import __version__
from adabench.errors import UserError
from adabench.generator import MAX_FRAMES
from adabench.registry import GENERATORS, METRICS, SUITES, Registry, parse_spec, split_specs

INIT_MODES = ("gt", "none")          # image-to-video from PanWorld's true first frame / text-to-video
REFERENCE_MODEL = "panworld-gt"
DEFAULT_METRICS = ("flow,motion-fidelity,dynamic-degree,retention,drift,lockin,adherence,frechet,appearance,"
                   "attention,throughput")
MAX_SEED = 2 ** 63 - 1


@dataclass(frozen=True)
class JobSpec:
    """One rollout; ``model`` is the display name and not part of the identity."""

    model: str
    model_spec: str                 # canonical: name:key=value,... with every default
    weights: str                    # content hash of the weights (or what the generator says they are)
    generator: str                  # hash of the generator's describe() (its settings as it reports them)
    prompt: str
    seed: int
    init: str                       # "gt" | "none"
    frames: tuple[int, ...]         # horizons, ascending; the rollout goes to the last
    device: str                     # device type: "cpu", "cuda"
    dtype: str
    metrics: tuple[str, ...]
    version: str = __version__

    @property
    def hash(self) -> str:
        identity = {k: v for k, v in asdict(self).items() if k != "model"}
        text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "frames": list(self.frames), "metrics": list(self.metrics), "hash": self.hash}


@dataclass
class ModelEntry:
    """A model of the run: its display name, canonical spec and the built generator."""

    name: str
    spec: str
    generator: Any
    describe: dict[str, Any]
    capabilities: frozenset[str]


@dataclass
class Plan:
    models: list[ModelEntry]
    prompts: list[str]
    seeds: list[int]
    inits: list[str]
    frames: tuple[int, ...]
    metrics: tuple[str, ...]
    device: str
    panworld: bool                  # every prompt is a PanWorld prompt (ground truth exists)
    baseline: str                   # the first model named: every other model is compared with it
    reference: str | None           # the ground-truth row (plain panworld-gt: joined by itself or named), if any
    jobs: list[JobSpec] = field(default_factory=list)

    @property
    def hash(self) -> str:
        """Identity of the whole plan: its jobs, in order."""
        return hashlib.sha256(",".join(j.hash for j in self.jobs).encode()).hexdigest()[:16]

    def model(self, name: str) -> ModelEntry:
        return next(m for m in self.models if m.name == name)


# --- parsing the command line's lists ------------------------------------------------------------

def parse_frames(text: str) -> tuple[int, ...]:
    """``"21,51,126"`` -> (21, 51, 126): positive integers, sorted, duplicates dropped."""
    values = []
    for piece in (p.strip() for p in str(text).split(",")):
        if not piece.isdigit() or not 1 <= int(piece) <= MAX_FRAMES:
            raise UserError(f"--frames {str(text)[:60]!r} is invalid; accepted: integers from 1 to {MAX_FRAMES} "
                            "separated by commas, e.g. 21,51,126")
        values.append(int(piece))
    return tuple(sorted(set(values)))


def parse_seeds(text: str) -> list[int]:
    """``"2"`` -> seeds 0 and 1 (a count); ``"0,3,7"`` -> those seeds; ``"7,"`` -> seed 7 alone."""
    text = str(text).strip()
    pieces = [p.strip() for p in text.split(",")]
    accepted = "accepted: a count N (seeds 0..N-1) or a comma list of seeds, e.g. 0,3,7 (a single seed: 7,)"
    numbers = []
    for piece in (p for p in pieces if p):
        if not piece.isdigit() or int(piece) > MAX_SEED:
            raise UserError(f"--seeds {text!r} is invalid ({piece!r} is not an integer in 0..2^63-1); {accepted}")
        numbers.append(int(piece))
    if not numbers:
        raise UserError(f"--seeds {text!r} is empty; {accepted}")
    if len(pieces) == 1:
        if numbers[0] < 1:
            raise UserError(f"--seeds {text!r} asks for no seed; {accepted}")
        return list(range(numbers[0]))
    if len(set(numbers)) != len(numbers):
        raise UserError(f"--seeds {text!r} names a seed twice; {accepted}")
    return numbers


def parse_inits(text: str) -> list[str]:
    modes = [p.strip() for p in str(text).split(",") if p.strip()]
    if not modes or any(m not in INIT_MODES for m in modes) or len(set(modes)) != len(modes):
        raise UserError(f"--init {text!r} is invalid; accepted: gt (image-to-video from the true first frame), "
                        "none (text-to-video), or both: gt,none")
    return modes


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"2/4"`` -> (2, 4): shard 2 of 4, counted from 1."""
    if text is None:
        return None
    index, slash, count = str(text).partition("/")
    if not slash or not index.strip().isdigit() or not count.strip().isdigit():
        raise UserError(f"--shard {text!r} is invalid; accepted: K/N with 1 <= K <= N, e.g. 1/4")
    k, n = int(index), int(count)
    if not 1 <= k <= n:
        raise UserError(f"--shard {text!r} is invalid: shard {k} of {n} does not exist; accepted: K/N with 1 <= K <= N")
    return k, n


# --- prompts ---------------------------------------------------------------------------------------

def read_prompts(source: str) -> tuple[list[str], str]:
    """Prompts of a registered suite or of a prompt file (one per line, '#' comments) -> (prompts, label).

    PanWorld prompts are put in canonical form; other text is kept as written (outside
    generators need no PanWorld). Whether a model can read them is checked per model.
    """
    from adabench.world.prompts import parse_prompt

    if source in SUITES:
        prompts = [str(p) for p in SUITES.entry(source).load()()]
        label = f"suite {source}"
    else:
        path = Path(source)
        if not path.is_file():
            suites = ", ".join(SUITES.names())
            raise UserError(f"--prompts {source!r} is neither a prompt suite ({suites}) nor a prompt file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"cannot read prompt file {source!r}: {type(err).__name__}: {err}; "
                            "accepted: a UTF-8 text file, one prompt per line") from None
        prompts = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        prompts = [p for p in prompts if p]
        label = f"prompt file {source}"
    if not prompts:
        raise UserError(f"{label} holds no prompts (one per line, '#' starts a comment)")
    canonical = []
    for prompt in prompts:
        try:
            canonical.append(parse_prompt(prompt).text)
        except UserError:
            canonical.append(prompt)
    return list(dict.fromkeys(canonical)), label


def panworld_error(prompt: str) -> str | None:
    """Why ``prompt`` is not a PanWorld prompt (the grammar's message), or None when it is one."""
    from adabench.world.prompts import parse_prompt

    try:
        parse_prompt(prompt)
    except UserError as err:
        return str(err)
    return None


def is_panworld(prompt: str) -> bool:
    return panworld_error(prompt) is None


# --- models -----------------------------------------------------------------------------------------

def canonical_spec(registry: Registry, spec: str, leave_out: tuple[str, ...] = ("device",)) -> str:
    """``name:key=value,...`` with every keyword default of the factory filled in, keys sorted.

    ``leave_out`` keys are part of the job elsewhere (the device type is a field of its own).
    """
    name, kwargs = parse_spec(spec)
    factory = registry.entry(name).load()
    values: dict[str, Any] = {}
    for param in inspect.signature(factory).parameters.values():
        if param.default is not inspect.Parameter.empty and param.kind in (param.POSITIONAL_OR_KEYWORD,
                                                                          param.KEYWORD_ONLY):
            values[param.name] = param.default
    for key, value in kwargs.items():               # 5 and 5.0 are one value when the default is a float
        default = values.get(key)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        values[key] = value
    items = [f"{k}={v}" for k, v in sorted(values.items()) if k not in leave_out and v is not None]
    return f"{name}:{','.join(items)}" if items else name


def check_duplicate_keys(spec: str) -> None:
    """``window=3,window=4`` is a mistake, not "the last one wins"."""
    _, _, args = spec.partition(":")
    keys = [item.partition("=")[0].strip() for item in args.split(",") if item.strip()]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise UserError(f"model {spec!r} sets {', '.join(repeated)} more than once; accepted: each key once")


def build_models(names: list[str], device: str) -> list[ModelEntry]:
    """Build every generator once (bad names and arguments fail here, before any job)."""
    from adabench.generator import capabilities

    entries: list[ModelEntry] = []
    seen: dict[str, str] = {}
    for name in names:
        check_duplicate_keys(name)
        spec = canonical_spec(GENERATORS, name)
        if spec in seen:
            raise UserError(f"models {seen[spec]!r} and {name!r} are the same model ({spec}); name each once")
        seen[spec] = name
        generator = GENERATORS.build(name, device=device)
        entries.append(ModelEntry(name, spec, generator, generator.describe(), capabilities(generator)))
    return entries


def device_type(device: str) -> str:
    import torch

    try:
        return torch.device(device).type
    except RuntimeError:
        raise UserError(f"--device {device!r} is invalid; accepted: cpu, cuda, cuda:N") from None


def check_device(device: str) -> None:
    import torch

    kind = device_type(device)
    if kind not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r} is not supported; accepted: cpu, cuda, cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available here; accepted here: cpu")


def weights_identity(describe: dict[str, Any]) -> str:
    return str(describe.get("weights_sha256", describe.get("weights", "unknown")))


def describe_hash(describe: dict[str, Any]) -> str:
    """Hash of what a generator says about itself, less where it runs (ranks differ in device index)."""
    stable = {k: v for k, v in describe.items() if k != "device"}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_metric_names(specs: tuple[str, ...]) -> None:
    """One metric name once: two specs of one metric would write the same scalar names."""
    names = [parse_spec(spec)[0] for spec in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"--metrics names {', '.join(repeated)} more than once; their scalars would share names. "
                        "accepted: each metric once (compare two settings of a metric in two runs)")


# --- the plan -----------------------------------------------------------------------------------------

def build_plan(models: str, prompts: str, frames: str, seeds: str, inits: str, metrics: str | None,
               device: str = "cpu", build_device: str | None = None) -> Plan:
    """Validate everything the user asked for and freeze the jobs; raises :class:`UserError`.

    ``build_device`` is where this process builds its generators (``cuda:LOCAL_RANK`` under
    torchrun); the jobs carry only the device type, so every rank plans the same hashes.
    """
    check_device(device)
    horizons = parse_frames(frames)
    seed_list = parse_seeds(seeds)
    init_list = parse_inits(inits)
    metric_specs = tuple(split_specs(metrics if metrics is not None else DEFAULT_METRICS))
    if not metric_specs:
        raise UserError("--metrics is empty; accepted: a comma list of names from 'adabench list'")
    for spec in metric_specs:
        check_duplicate_keys(spec)
        METRICS.entry(parse_spec(spec)[0])                       # unknown names fail with suggestions
    check_metric_names(metric_specs)
    prompt_list, label = read_prompts(prompts)
    panworld = all(is_panworld(p) for p in prompt_list)
    if "gt" in init_list and not panworld:
        other = next(p for p in prompt_list if not is_panworld(p))
        raise UserError(f"--init gt needs PanWorld prompts (the true first frame comes from PanWorld), but {label} "
                        f"holds {other!r} ({panworld_error(other)}); fix it, or use --init none for other text")
    names = split_specs(models)
    if not names:
        raise UserError("--models is empty; accepted: a comma list of names from 'adabench list'")
    baseline, reference = names[0], None
    if panworld:        # the reference row (plain panworld-gt) joins PanWorld runs, or is the one named
        reference = REFERENCE_MODEL
        if not any(parse_spec(n) == (REFERENCE_MODEL, {}) for n in names):
            names = [REFERENCE_MODEL, *names]
    entries = build_models(names, build_device or device)
    for entry in entries:
        if "gt" in init_list and "init_frames" not in entry.capabilities:
            raise UserError(f"model {entry.name!r} cannot start from given frames (--init gt); use --init none")
        check = getattr(entry.generator, "check_prompt", None)
        for prompt in prompt_list if check is not None else ():
            try:
                check(prompt)
            except UserError as err:
                raise UserError(f"model {entry.name!r} cannot read the prompt {prompt!r} ({label}): {err}") from None
    kind = device_type(device)
    plan = Plan(entries, prompt_list, seed_list, init_list, horizons, metric_specs, kind, panworld, baseline, reference)
    for prompt in prompt_list:
        for seed in seed_list:
            for init in init_list:
                for entry in entries:
                    plan.jobs.append(JobSpec(
                        model=entry.name, model_spec=entry.spec, weights=weights_identity(entry.describe),
                        generator=describe_hash(entry.describe),
                        prompt=prompt, seed=seed, init=init, frames=horizons, device=kind,
                        dtype=str(entry.describe.get("dtype", "float32")), metrics=metric_specs))
    return plan
