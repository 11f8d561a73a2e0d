"""Attention-sink statistics: an exact, memory-bounded attention probe and its streaming metric.

Fused attention kernels never return probabilities, so the probe recomputes what it needs
from the exact softmax inputs that :func:`adabench.attention.attend` hands it (post-RoPE q
and k, the model's scale and mask). For a subset S of keys and one query row,

    mass(S) = exp(LSE over keys in S - LSE over all visible keys),

with every LSE accumulated in float64 from float32 score blocks of at most
``max_queries x key_chunk`` entries per (batch, head): the full score matrix never exists.
Entropy is exact the same way: ``H = LSE - sum_j p_j s_j``, the sum kept as a running,
rescaled accumulator. The probe only reads detached inputs, so frames stay bit-identical.

Per chunk, layer and head (queries: a fixed, evenly spaced subset of the CURRENT frames'
tokens; optionally, separately, of the STATE frames being denoised):

- ``anchor_mass``: mass on the anchor keys. The anchor is the ANCHOR segment (first-frame
  sink) if the cache holds one, else the cached STATE frames (never the query block's own
  state frames), else the oldest cached WINDOW frame. NaN when nothing is cached (first
  chunk of a text-to-video rollout). ``anchor_mass_rel`` divides it, per query, by the
  anchor's uniform share ``|anchor keys| / |visible keys|`` (1 = no preference);
- ``profile``: mass per key frame in key order (cached frames, then the query block),
  summing to 1 per query: the U-shape of the literature is anchors high, middle low,
  recent frames high;
- ``recency_mass``: mass on the ``recency_frames`` newest cached WINDOW frames (NaN if none);
- ``self_mass``: mass on the query block (the state frames being denoised + the chunk);
- ``entropy``: entropy / log(number of visible keys), in [0, 1];
- ``sink_head_rate``: fraction of (layer, head) whose anchor mass exceeds 0.3 (Gu et al. 2025);
- ``head_homogenisation``: per layer, the mean pairwise cosine similarity of its heads'
  per-position profiles (1 = all heads attend alike; profiles are non-negative, so the value
  lies in [0, 1]), averaged over layers; NaN with a single head.

Which forward passes count: the probe numbers the passes of a chunk (a pass is a run of
layers 0..L-1; a new pass starts when the layer index does not increase). With
``sampler_steps`` known (:meth:`AttentionProbe.for_generator`), passes from that index on are
the t=0 commit pass and are excluded (and not computed); without it every pass counts, the
commit pass included. ``steps="all"`` averages the counted passes, ``steps="last"`` keeps only
the last one (without ``sampler_steps``: the last pass seen, the commit pass of a committed chunk). The caller closes a chunk
with :meth:`AttentionProbe.pop_chunk` (once per chunk, after it was generated); calls without
a :class:`KeyLayout` (training, full recomputation) are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch

from adabench.attention import KeyLayout, Segment
from adabench.chunk import Chunk
from adabench.errors import UserError
from adabench.metrics.base import MetricInfo, MetricResult, StreamingMetric

SCALARS = ("anchor_mass", "anchor_mass_rel", "recency_mass", "self_mass", "entropy")
SUMMARY = SCALARS + ("sink_head_rate", "head_homogenisation")
QueryGroup = Literal["current", "state"]


# --- exact subset masses ------------------------------------------------------------------
class FrameMasses(NamedTuple):
    """Softmax mass per key frame and normalised entropy, per query row."""

    mass: torch.Tensor        # [B, H, M, F] float64, sums to 1 over F
    entropy: torch.Tensor     # [B, H, M] float64, entropy / log(visible keys)
    largest_block: int        # largest score block computed, in entries per (batch, head)


def _rescale(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """exp(log_a - log_b), with 0 where log_a is -inf (nothing accumulated yet)."""
    return torch.where(torch.isneginf(log_a), torch.zeros_like(log_a), (log_a - log_b).exp())


def frame_masses(q: torch.Tensor, k: torch.Tensor, scale: float, tokens_per_frame: int,
                 mask: torch.Tensor | None = None, key_chunk: int = 1024) -> FrameMasses:
    """Exact per-frame softmax masses of q [B, H, M, Dh] over k [B, H, F*T, Dh] (frame-major).

    ``mask`` [M, F*T] bool, True = visible. Scores are computed in float32 blocks of
    [M, key_chunk] per (batch, head); LSEs and the entropy accumulator are float64.
    """
    b, h, m, _ = q.shape
    nk = k.shape[2]
    tpf = tokens_per_frame
    if nk % tpf:
        raise ValueError(f"{nk} keys are not a whole number of frames of {tpf} tokens")
    nf = nk // tpf
    acc = dict(device=q.device, dtype=torch.float64)
    if nk <= key_chunk:                                                # one block: no running accumulators
        return _frame_masses_one_block(q, k, scale, tpf, mask)
    frame_lse = torch.full((b, h, m, nf), -math.inf, **acc)            # [B, H, M, F]
    lse = torch.full((b, h, m), -math.inf, **acc)                      # running LSE over all keys
    mean_score = torch.zeros((b, h, m), **acc)                         # running sum_j p_j s_j (p w.r.t. lse)
    qf = q.float()
    largest = 0
    for c0 in range(0, nk, key_chunk):
        c1 = min(c0 + key_chunk, nk)
        s = (qf @ k[:, :, c0:c1].float().transpose(-1, -2)) * scale    # [B, H, M, c] float32
        largest = max(largest, s.shape[-2] * s.shape[-1])
        if mask is not None:
            s = s.masked_fill(~mask[:, c0:c1], -math.inf)
        if c0 % tpf == 0 and (c1 - c0) % tpf == 0:                     # whole frames: one reduction
            f0, f1 = c0 // tpf, c1 // tpf
            per_frame = s.unflatten(-1, (f1 - f0, tpf)).logsumexp(-1).double()        # [B, H, M, f1 - f0]
            frame_lse[..., f0:f1] = torch.logaddexp(frame_lse[..., f0:f1], per_frame)
        else:
            for f in range(c0 // tpf, (c1 - 1) // tpf + 1):            # frames touched by this block
                a, z = max(f * tpf, c0) - c0, min((f + 1) * tpf, c1) - c0
                frame_lse[..., f] = torch.logaddexp(frame_lse[..., f], s[..., a:z].logsumexp(-1).double())
        hidden = torch.isneginf(s)
        block_lse32 = s.logsumexp(-1)                                  # [B, H, M]
        p = torch.where(hidden, 0.0, (s - block_lse32[..., None]).exp())   # block-local probabilities
        block_mean = (p * s.masked_fill(hidden, 0.0)).sum(-1).double()
        block_lse = block_lse32.double()
        new_lse = torch.logaddexp(lse, block_lse)
        mean_score = mean_score * _rescale(lse, new_lse) + block_mean * _rescale(block_lse, new_lse)
        lse = new_lse
    mass = _rescale(frame_lse, frame_lse.logsumexp(-1, keepdim=True))   # [B, H, M, F], sums to 1 in float64
    visible = torch.full((m,), float(nk), **acc) if mask is None else mask.sum(-1).double()   # [M]
    entropy = (lse - mean_score) / visible.log()                       # NaN/inf where one key is visible
    return FrameMasses(mass, entropy, largest)


def _frame_masses_one_block(q: torch.Tensor, k: torch.Tensor, scale: float, tpf: int,
                            mask: torch.Tensor | None) -> FrameMasses:
    """:func:`frame_masses` when all keys fit one block: the same sums, without running rescales."""
    m, nk = q.shape[2], k.shape[2]
    s = (q.float() @ k.float().transpose(-1, -2)) * scale               # [B, H, M, N] float32
    if mask is not None:
        s = s.masked_fill(~mask, -math.inf)
    frame_lse = s.unflatten(-1, (nk // tpf, tpf)).logsumexp(-1).double()   # [B, H, M, F]
    lse32 = s.logsumexp(-1)                                            # [B, H, M]
    hidden = torch.isneginf(s)
    p = torch.where(hidden, 0.0, (s - lse32[..., None]).exp())         # probabilities
    mean_score = (p * s.masked_fill(hidden, 0.0)).sum(-1).double()     # sum_j p_j s_j
    mass = _rescale(frame_lse, frame_lse.logsumexp(-1, keepdim=True))  # [B, H, M, F], sums to 1 in float64
    visible = torch.full((m,), float(nk), device=q.device, dtype=torch.float64) if mask is None \
        else mask.sum(-1).double()                                     # [M]
    return FrameMasses(mass, (lse32.double() - mean_score) / visible.log(), m * nk)


# --- which frames are what ----------------------------------------------------------------
@dataclass(frozen=True)
class FrameRoles:
    """Key-frame indices of the anchor, the recent frames and the query block, for one layout."""

    anchor: tuple[int, ...]
    anchor_kind: str | None            # "anchor", "state", "oldest-window" or None (empty cache)
    recent: tuple[int, ...]
    query_block: tuple[int, ...]


def frame_roles(layout: KeyLayout, recency_frames: int = 1) -> FrameRoles:
    """Anchor: ANCHOR frames, else cached STATE frames, else the oldest cached WINDOW frame."""
    cached = list(enumerate(layout.segments[:layout.cached_frames]))
    anchor: tuple[int, ...] = ()
    kind = None
    for segment, name in ((Segment.ANCHOR, "anchor"), (Segment.STATE, "state")):
        anchor = tuple(i for i, s in cached if s == segment)
        if anchor:
            kind = name
            break
    window = [i for i, s in cached if s == Segment.WINDOW]
    if not anchor and window:
        anchor, kind = (window[0],), "oldest-window"
    recent = tuple(window[-recency_frames:]) if recency_frames > 0 else ()
    return FrameRoles(anchor, kind, recent, tuple(range(layout.cached_frames, layout.num_frames)))


def query_rows(layout: KeyLayout, group: QueryGroup, max_queries: int) -> torch.Tensor:
    """Fixed, evenly spaced token indices (into the query block) of the group's frames, at most ``max_queries``."""
    want = Segment.CURRENT if group == "current" else Segment.STATE
    tpf = layout.tokens_per_frame
    frames = [i for i, s in enumerate(layout.segments[layout.cached_frames:]) if s == want]
    tokens = torch.tensor([f * tpf + t for f in frames for t in range(tpf)], dtype=torch.long)
    if tokens.numel() <= max_queries:
        return tokens
    pick = torch.linspace(0, tokens.numel() - 1, max_queries, dtype=torch.float64).round().long().unique()
    return tokens[pick]


# --- per-head and per-layer statistics ----------------------------------------------------
def head_stats(fm: FrameMasses, roles: FrameRoles, frame_visible: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-head statistics [H] (and ``profile`` [H, F]) averaged over batch and query rows.

    ``frame_visible`` [M, F]: visible key tokens per frame for each query row.
    """
    mass = fm.mass                                                      # [B, H, M, F]
    nan = torch.full(mass.shape[1:2], math.nan, dtype=mass.dtype, device=mass.device)

    def subset(frames: tuple[int, ...]) -> torch.Tensor:               # [B, H, M]
        return mass[..., list(frames)].sum(-1)

    out = {"profile": mass.mean((0, 2)), "self_mass": subset(roles.query_block).mean((0, 2)),
           "entropy": fm.entropy.mean((0, 2)), "anchor_mass": nan, "anchor_mass_rel": nan,
           "recency_mass": subset(roles.recent).mean((0, 2)) if roles.recent else nan}
    if roles.anchor:
        visible = frame_visible.to(mass)
        share = visible[:, list(roles.anchor)].sum(-1) / visible.sum(-1)   # [M]
        anchor = subset(roles.anchor)
        out["anchor_mass"] = anchor.mean((0, 2))
        out["anchor_mass_rel"] = (anchor / share).mean((0, 2))
    return out


def sink_head_rate(anchor_mass: torch.Tensor, threshold: float = 0.3) -> float:
    """Fraction of (layer, head) entries of ``anchor_mass`` [L, H] above ``threshold``; NaN if undefined."""
    if anchor_mass.numel() == 0 or torch.isnan(anchor_mass).any():
        return math.nan
    return float((anchor_mass > threshold).double().mean())


def head_homogenisation(profiles: torch.Tensor) -> torch.Tensor:
    """Per layer, mean pairwise cosine similarity of the heads' profiles [L, H, F] -> [L] (NaN if H < 2)."""
    n_layers, n_heads, _ = profiles.shape
    if n_heads < 2:
        return torch.full((n_layers,), math.nan, dtype=profiles.dtype)
    unit = torch.nn.functional.normalize(profiles, dim=-1)
    gram = unit @ unit.transpose(-1, -2)                                 # [L, H, H]
    off = gram.sum((-1, -2)) - gram.diagonal(dim1=-2, dim2=-1).sum(-1)
    return off / (n_heads * (n_heads - 1))


def _nanmean(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else math.nan


def summarise(per_head: dict[str, torch.Tensor], threshold: float = 0.3) -> dict[str, Any]:
    """Chunk summary from per-(layer, head) statistics ([L, H], ``profile`` [L, H, F])."""
    out: dict[str, Any] = {name: _nanmean(per_head[name]) for name in SCALARS}
    out["sink_head_rate"] = sink_head_rate(per_head["anchor_mass"], threshold)
    out["head_homogenisation"] = _nanmean(head_homogenisation(per_head["profile"]))
    out["profile"] = per_head["profile"].mean((0, 1)).tolist()
    out["per_head"] = {name: value.cpu() for name, value in per_head.items()}
    return out


# --- the probe ----------------------------------------------------------------------------
class AttentionProbe:
    """Collects attention-sink statistics from :func:`adabench.attention.attend` calls, per chunk.

    Usage: ``probe = AttentionProbe.for_generator(gen)``; ``for chunk in gen.stream(..., probe=probe):
    stats = probe.pop_chunk()``. Memory per call: one [B, H, max_queries, key_chunk] float32 block.
    """

    def __init__(self, max_queries: int = 64, key_chunk: int = 1024, steps: str = "all",
                 sampler_steps: int | None = None, recency_frames: int = 1, state_queries: bool = False,
                 sink_threshold: float = 0.3) -> None:
        for name, value in (("max_queries", max_queries), ("key_chunk", key_chunk)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"attention probe {name}={value!r} is invalid; accepted: an integer >= 1")
        if steps not in ("all", "last"):
            raise UserError(f"attention probe steps={steps!r} is invalid; accepted: all, last")
        if sampler_steps is not None and (not isinstance(sampler_steps, int) or sampler_steps < 1):
            raise UserError(f"attention probe sampler_steps={sampler_steps!r} is invalid; accepted: an integer >= 1")
        self.max_queries, self.key_chunk, self.steps = max_queries, key_chunk, steps
        self.sampler_steps, self.recency_frames = sampler_steps, int(recency_frames)
        self.groups: tuple[QueryGroup, ...] = ("current", "state") if state_queries else ("current",)
        self.sink_threshold = sink_threshold
        self.largest_block = 0        # largest score block computed so far (entries per batch and head)
        self._reset_chunk()

    @classmethod
    def for_generator(cls, generator: Any, **kwargs: Any) -> "AttentionProbe":
        """A probe that knows the generator's denoising passes per chunk, so that commit passes are excluded."""
        return cls(sampler_steps=int(generator.sampler.passes(generator.chunk_frames)), **kwargs)

    def _reset_chunk(self) -> None:
        self._pass, self._last_layer = -1, None
        self._layout: KeyLayout | None = None
        self._roles: tuple[KeyLayout, FrameRoles, dict[str, torch.Tensor]] | None = None   # per-layout cache
        # group -> pass -> layer -> per-head stats
        self._calls: dict[str, dict[int, dict[int, dict[str, torch.Tensor]]]] = {g: {} for g in self.groups}

    def _wanted(self, pass_index: int) -> bool:
        if self.sampler_steps is None:
            return True
        if pass_index >= self.sampler_steps:                              # t=0 commit pass
            return False
        return self.steps == "all" or pass_index == self.sampler_steps - 1

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, scale: float,
                 layout: KeyLayout | None, mask: torch.Tensor | None) -> None:
        if layout is None:
            return
        if self._last_layer is None or layer <= self._last_layer:
            self._pass += 1
        self._last_layer = layer
        if not self._wanted(self._pass):
            return
        tpf = layout.tokens_per_frame
        if k.shape[2] != layout.num_frames * tpf or q.shape[2] != layout.query_frames * tpf:
            raise ValueError(f"q {tuple(q.shape)} / k {tuple(k.shape)} do not match the layout "
                             f"({layout.query_frames} query frames of {layout.num_frames}, {tpf} tokens each)")
        self._layout = layout
        if self._roles is None or self._roles[0] is not layout:          # one layout serves a chunk's passes
            self._roles = (layout, frame_roles(layout, self.recency_frames),
                           {g: query_rows(layout, g, self.max_queries).to(q.device) for g in self.groups})
        _, roles, group_rows = self._roles
        for group in self.groups:
            rows = group_rows[group]                                            # [M]
            if rows.numel() == 0:
                continue
            sub_mask = None if mask is None else mask[rows]                      # [M, Nk]
            fm = frame_masses(q[:, :, rows], k, scale, tpf, sub_mask, self.key_chunk)
            self.largest_block = max(self.largest_block, fm.largest_block)
            visible = (torch.full((rows.numel(), layout.num_frames), tpf, device=q.device) if sub_mask is None
                       else sub_mask.view(rows.numel(), layout.num_frames, tpf).sum(-1))   # [M, F]
            self._calls[group].setdefault(self._pass, {})[layer] = head_stats(fm, roles, visible)

    def pop_chunk(self) -> dict[str, Any] | None:
        """Statistics of the chunk since the last pop (None if nothing was probed), then start afresh.

        Returns ``{group: summary}`` for "current" (and "state" if enabled), plus ``segments``
        and ``positions`` of the profile's key frames, ``anchor`` (which kind) and ``passes``.
        """
        calls, layout = self._calls, self._layout
        self._reset_chunk()
        if layout is None:
            return None
        roles = frame_roles(layout, self.recency_frames)
        out: dict[str, Any] = {"segments": [int(s) for s in layout.segments], "positions": list(layout.positions),
                               "anchor": roles.anchor_kind}
        for group, passes in calls.items():
            if not passes:
                continue
            chosen = sorted(passes)[-1:] if self.steps == "last" else sorted(passes)
            layers = sorted(passes[chosen[0]])
            per_head = {name: torch.stack([torch.stack([passes[p][l][name] for l in layers]) for p in chosen]).mean(0)
                        for name in passes[chosen[0]][layers[0]]}             # [L, H] / [L, H, F]
            out[group] = summarise(per_head, self.sink_threshold)
            out["passes"] = len(chosen)
        return out


# --- the streaming metric -----------------------------------------------------------------
INFO = {
    "anchor_mass": ("fraction", "softmax mass of the chunk's queries on the anchor keys (sink, cached state, "
                                "or oldest window frame)"),
    "anchor_mass_rel": ("ratio", "anchor mass over the anchor's uniform share |anchor keys| / |visible keys|"),
    "recency_mass": ("fraction", "softmax mass on the newest cached window frame(s)"),
    "self_mass": ("fraction", "softmax mass on the query block (current chunk and its state frames)"),
    "entropy": ("1", "attention entropy / log(number of visible keys)"),
    "sink_head_rate": ("fraction", "fraction of (layer, head) with anchor mass > 0.3 (Gu et al. 2025)"),
    "head_homogenisation": ("1", "mean pairwise cosine similarity of a layer's heads' per-frame profiles"),
}


# scalar names: the anchor's two headline numbers by name, the rest as attn_<statistic>
NAMES = {"anchor_mass": "anchor_attention_mass", "anchor_mass_rel": "anchor_attention_ratio"}


class AttentionSinkStats(StreamingMetric):
    """Averages the probe's per-chunk summaries (``chunk.attention``) over chunks.

    Chunks without attention statistics (prefill, unprobed runs) are ignored. Scalars are
    means over chunks of the per-chunk means over layers and heads (NaN chunks skipped):
    ``anchor_attention_mass``, ``anchor_attention_ratio`` (anchor mass over its uniform
    share) and ``attn_<statistic>`` for the others; ``attn_profile`` is the mean per-frame
    profile over the chunks with the longest (steady-state) key layout,
    ``attn_profile_segments`` its segment codes (0 anchor, 1 state, 2 window, 3 current).
    With ``queries="state"`` every name is prefixed ``state_``.
    """

    needs = frozenset({"probe"})

    def __init__(self, queries: QueryGroup = "current") -> None:
        super().__init__()
        if queries not in ("current", "state"):
            raise UserError(f"attention metric queries={queries!r} is invalid; accepted: current, state")
        self.queries = queries
        self.group_prefix = "" if queries == "current" else "state_"
        self.add_state("records", [], "cat")     # per chunk: (index, {name: value}, profile, segments)

    def probe_options(self) -> dict[str, Any]:
        return {"state_queries": True} if self.queries == "state" else {}

    def key(self, statistic: str) -> str:
        """Output name of a probe statistic (``anchor_mass`` -> ``anchor_attention_mass``)."""
        return self.group_prefix + NAMES.get(statistic, f"attn_{statistic}")

    @property
    def info(self) -> MetricInfo:
        return MetricInfo(self.key("anchor_mass"), "fraction", "none", "probe=exact-lse", INFO["anchor_mass"][1])

    def update(self, chunk: Chunk) -> None:
        stats = chunk.attention
        if not stats or self.queries not in stats:
            return
        group = stats[self.queries]
        self.records.append((chunk.index, {n: float(group[n]) for n in SUMMARY},
                             list(group["profile"]), list(stats.get("segments", []))))

    def compute(self) -> MetricResult:
        result = MetricResult()
        for name in SUMMARY:
            key = self.key(name)
            values = [r[1][name] for r in self.records]
            result.scalars[key] = _nanmean(torch.tensor(values, dtype=torch.float64))
            result.series[key + "_per_chunk"] = values
            unit, text = INFO[name]
            result.info[key] = result.info[key + "_per_chunk"] = MetricInfo(key, unit, "none", "probe=exact-lse", text)
        longest = max((len(r[2]) for r in self.records), default=0)
        steady = [r for r in self.records if len(r[2]) == longest and longest]
        profile = torch.tensor([r[2] for r in steady], dtype=torch.float64).mean(0).tolist() if steady else []
        result.series[self.key("profile")] = profile
        result.series[self.key("profile_segments")] = [float(s) for s in steady[-1][3]] if steady else []
        result.info[self.key("profile")] = MetricInfo(
            self.key("profile"), "fraction", "none", "probe=exact-lse",
            "mean softmax mass per key frame (cached frames in key order, then the query block)")
        result.info[self.key("profile_segments")] = MetricInfo(
            self.key("profile_segments"), "code", "none", "probe=exact-lse",
            "segment of each profile frame: 0 anchor, 1 state, 2 window, 3 current")
        return result
