"""One lazy registry for generators, cache policies, metrics and prompt suites.

Entries are registered by import path ("module:attribute") so that nothing heavy is
imported until it is used. Specs are ``name`` or ``name:key=value,key=value``; unknown
names and unknown keys raise :class:`UserError` with suggestions. Third parties register
through the entry-point groups ``adabench.generators``, ``adabench.policies``,
``adabench.metrics`` and ``adabench.suites`` (see docs/extending.md); a built-in name wins
over a plug-in of the same name.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

from adabench.errors import UserError


@dataclass(frozen=True)
class Entry:
    name: str
    target: str | Callable[..., Any]   # "package.module:attr" or the factory itself
    help: str = ""

    def load(self) -> Callable[..., Any]:
        if callable(self.target):
            return self.target
        module, _, attr = self.target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


def parse_value(text: str) -> Any:
    """Turn an argument-string value into bool, int, float or str.

    Numbers must be finite: ``nan``, ``inf`` and floats too large for a double (``1e999``)
    raise ValueError, so that no parameter of any registry ever receives one.
    """
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        if not math.isfinite(value):
            raise ValueError(f"{text[:40]!r} is not a finite number")
        return value
    return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"ff-anchor:sink=3,window=9"`` -> ``("ff-anchor", {"sink": 3, "window": 9})``.

    Every key appears once with a non-empty value; numbers are finite (:func:`parse_value`).
    """
    name, _, args = spec.strip().partition(":")
    kwargs: dict[str, Any] = {}
    if args:
        for item in args.split(","):
            key, eq, value = (part.strip() for part in item.partition("="))
            if not eq or not key:
                raise UserError(f"bad argument {item!r} in {spec!r}: expected key=value pairs separated by commas")
            if not value:
                raise UserError(f"bad argument {item!r} in {spec!r}: {key} has no value; accepted: {key}=VALUE")
            if key in kwargs:
                raise UserError(f"{spec!r} sets {key} more than once; accepted: each key once")
            try:
                kwargs[key] = parse_value(value)
            except ValueError as exc:
                raise UserError(f"bad value for {key} in {spec[:80]!r}: {exc}; accepted: a finite number") from None
    return name.strip(), kwargs


def split_specs(text: str) -> list[str]:
    """A comma-separated list of specs, whose own arguments may hold commas:
    ``"base:checkpoint=a.safetensors,chunk=1,ff-anchor"`` -> ``["base:checkpoint=a.safetensors,chunk=1",
    "ff-anchor"]``. A piece with ``=`` before any ``:`` is an argument of the spec before it."""
    specs: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        key, eq, _ = piece.partition("=")
        if eq and ":" not in key and specs:
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    return specs


class Registry:
    """A named collection of lazily imported factories."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry] = {}
        self._plugins_loaded = False

    def register(self, name: str, target: str | Callable[..., Any], help: str = "") -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, target, help)

    def _load_plugins(self) -> None:
        if self._plugins_loaded or not self.entry_point_group:
            return
        self._plugins_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name not in self._entries:
                self._entries[ep.name] = Entry(ep.name, ep.value, f"plugin ({ep.value})")

    def entries(self) -> list[Entry]:
        self._load_plugins()
        return [self._entries[k] for k in sorted(self._entries)]

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries

    def entry(self, name: str) -> Entry:
        self._load_plugins()
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise UserError(f"unknown {self.kind} {name!r}{hint}; known: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def build(self, spec: str, **defaults: Any) -> Any:
        """Instantiate ``spec`` (``name:key=value,...``); ``defaults`` fill keys the spec leaves out."""
        name, kwargs = parse_spec(spec)
        factory = self.entry(name).load()
        check_kwargs(factory, kwargs, f"{self.kind} {name!r}")
        accepted = accepted_kwargs(factory)
        merged = {k: v for k, v in defaults.items() if accepted is None or k in accepted}
        merged.update(kwargs)
        return factory(**merged)


def accepted_kwargs(factory: Callable[..., Any]) -> set[str] | None:
    """Keyword names the factory accepts; None when it takes ``**kwargs``."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    accepted = accepted_kwargs(factory)
    if accepted is None:
        return
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{what} has no parameter {key!r}{hint}; accepted: {', '.join(sorted(accepted))}")


GENERATORS = Registry("model", "adabench.generators")
POLICIES = Registry("cache policy", "adabench.policies")
METRICS = Registry("metric", "adabench.metrics")
SUITES = Registry("prompt suite", "adabench.suites")


def _load_builtins() -> None:
    import adabench.builtins  # noqa: F401  (registers by import path)


_load_builtins()
