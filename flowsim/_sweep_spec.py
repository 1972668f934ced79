"""Sweep specs: which system, which base fields, which axes, seeds and measures; validated up front.

A spec (TOML, YAML with pyyaml, or JSON) names

    system   = "cooccurrence"                              # a registered system (default: the default one)
    base     = {L = 5, steps = 3000}                       # fields shared by every point
    axes     = {init_scale = {log = [1e-3, 1], num = 7},   # field -> list, or {log|lin = [lo, hi], num = k}
                m = [16, 32, 64]}
    seeds    = 2                                            # a count (0..k-1) or a list of seeds
    measures = ["T1", "attn_disp_T1", "phase1.attention_frozen"]

The points are the cartesian product of the axes times the seeds. Everything is validated before any
work: unknown fields, empty axes, values outside a field's range (each point's `Config` is built up
front) and unknown measures raise `SweepSpecError` (a `ConfigError`) naming the axis.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any, final

import numpy as np

from ._config import Config, RunConfig
from ._fields import ConfigError, read_table
from ._measures import measures_of
from ._registry import default_system, get_system

MAX_POINTS = 100_000


class SweepSpecError(ConfigError):
    """A sweep spec is invalid; the message names the axis or key at fault."""


class SpecMismatchError(ConfigError):
    """A results folder holds a different sweep; use a new folder (`--new`)."""


_SPEC_KEYS = ("system", "name", "description", "base", "axes", "seeds", "measures")


def fields_of(system: str) -> dict[str, dataclasses.Field]:
    """Every field of `system`'s config and of `RunConfig`, by name."""
    return {f.name: f for cls in (get_system(system).config_type, RunConfig) for f in dataclasses.fields(cls)}


def _coerce(fields: Mapping[str, dataclasses.Field], field: str, value: Any, where: str) -> Any:
    """A value of the field's type (ints from lin/log spacing are rounded; ints widen to floats)."""
    kind = type(fields[field].default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SweepSpecError(f"{where}: value {value!r} is not a {kind.__name__}")
    return value


def _axis_values(fields: Mapping[str, dataclasses.Field], field: str, spec: Any) -> list[Any]:
    where = f"axis {field!r}"
    if field not in fields:
        raise SweepSpecError(f"{where}: unknown config field; known fields: {sorted(fields)}")
    if field == "seed":
        raise SweepSpecError(f"{where}: give seeds with the top-level `seeds` key, not as an axis")
    if isinstance(spec, Mapping):
        kinds = [k for k in ("log", "lin") if k in spec]
        extra = sorted(set(spec) - {"log", "lin", "num"})
        if len(kinds) != 1 or extra or "num" not in spec:
            raise SweepSpecError(
                f"{where}: a range is {{log = [lo, hi], num = k}} or {{lin = [lo, hi], num = k}}, got {dict(spec)!r}"
            )
        lohi, num = spec[kinds[0]], spec["num"]
        if (
            not isinstance(num, int)
            or isinstance(num, bool)
            or not 1 <= num <= MAX_POINTS
            or not isinstance(lohi, list)
            or len(lohi) != 2
            or not all(isinstance(v, (int, float)) for v in lohi)
        ):
            raise SweepSpecError(
                f"{where}: needs {kinds[0]} = [lo, hi] (numbers) and num = an integer in [1, {MAX_POINTS}]"
            )
        lo, hi = map(float, lohi)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise SweepSpecError(f"{where}: range ends must be finite, got [{lo:g}, {hi:g}]")
        if kinds[0] == "log":
            if lo <= 0 or hi <= 0:
                raise SweepSpecError(f"{where}: log range needs lo, hi > 0, got [{lo:g}, {hi:g}]")
            raw = np.logspace(math.log10(lo), math.log10(hi), num)
        else:
            raw = np.linspace(lo, hi, num)
        is_int = type(fields[field].default) is int
        values = [int(round(v)) if is_int else float(v) for v in raw]
    elif isinstance(spec, list):
        values = spec
    else:
        raise SweepSpecError(f"{where}: give a list of values or a {{log|lin = [lo, hi], num = k}} range")
    values = list(dict.fromkeys(_coerce(fields, field, v, where) for v in values))  # dedupe, keep order
    if not values:
        raise SweepSpecError(f"{where}: no values (an axis needs at least one)")
    return values


@final
@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A validated sweep of one `system`: `base` config fields, `axes` (field -> tuple of values, in order; an axis
    overrides the same field in `base`), `seeds`,
    `measures`; `name`/`description` are free text. Build with `from_dict` or `from_file`."""

    base: Mapping[str, Any]
    axes: Mapping[str, tuple[Any, ...]]
    seeds: tuple[int, ...]
    measures: tuple[str, ...]
    name: str = ""
    description: str = ""
    system: str = dataclasses.field(default_factory=default_system)

    def __post_init__(self) -> None:
        try:
            fields = fields_of(self.system)
        except ConfigError as e:
            raise SweepSpecError(f"system: {e}") from None
        for f in self.base:
            if f not in fields:
                raise SweepSpecError(f"base: unknown config field {f!r}; known fields: {sorted(fields)}")
            if f == "system":
                raise SweepSpecError("base: name the system with the top-level `system` key")
        if not self.seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in self.seeds):
            raise SweepSpecError(
                f"seeds: need a positive count or a non-empty list of integers >= 0, got {list(self.seeds)!r}"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise SweepSpecError(f"seeds: repeated seeds in {list(self.seeds)!r}")
        if self.name and (not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name) or self.name in (".", "..")):
            raise SweepSpecError(
                f"name: letters, digits, '_', '-' and '.' only (it names the results folder), got {self.name!r}"
            )
        known = measures_of(get_system(self.system))
        if not self.measures:
            raise SweepSpecError(f"measures: name at least one of {sorted(known)}")
        unknown = [m for m in self.measures if m not in known]
        if unknown:
            raise SweepSpecError(f"measures: unknown {unknown}; known for system {self.system!r}: {sorted(known)}")
        count = math.prod(len(v) for v in self.axes.values()) * len(self.seeds)
        if count > MAX_POINTS:
            raise SweepSpecError(f"the spec has {count} points; a sweep may have at most {MAX_POINTS}")
        self.configs()  # every point's Config is built (and validated) before any work

    @classmethod
    def from_dict(cls, data: object) -> SweepSpec:
        """Build from a parsed table (any parsed value is accepted: a non-table is refused)."""
        if not isinstance(data, Mapping):
            raise SweepSpecError(f"a sweep spec must be a table, got {type(data).__name__}")
        extra = sorted(set(data) - set(_SPEC_KEYS))
        if extra:
            raise SweepSpecError(f"unknown spec key(s) {extra}; allowed: {list(_SPEC_KEYS)}")
        system = data.get("system", default_system())
        if not isinstance(system, str):
            raise SweepSpecError(f"system: a registered system name, got {system!r}")
        try:
            fields = fields_of(system)
        except ConfigError as e:
            raise SweepSpecError(f"system: {e}") from None
        base = data.get("base", {})
        axes = data.get("axes", {})
        if not isinstance(base, Mapping) or not isinstance(axes, Mapping):
            raise SweepSpecError("base and axes must be tables")
        base = {k: (_coerce(fields, k, v, f"base field {k!r}") if k in fields else v) for k, v in base.items()}
        seeds = data.get("seeds", 1)
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            if not 1 <= seeds <= MAX_POINTS:
                raise SweepSpecError(f"seeds: a count must be in [1, {MAX_POINTS}], got {seeds}")
            seeds = list(range(seeds))
        if not isinstance(seeds, list) or any(not isinstance(s, int) or isinstance(s, bool) for s in seeds):
            raise SweepSpecError(f"seeds: a count or a list of integers, got {seeds!r}")
        measures = data.get("measures", [])
        if not isinstance(measures, list) or any(not isinstance(m, str) for m in measures):
            raise SweepSpecError(f"measures: a list of names, got {measures!r}")
        return cls(
            dict(base),
            {f: tuple(_axis_values(fields, f, v)) for f, v in axes.items()},
            tuple(seeds),
            tuple(measures),
            str(data.get("name", "")),
            str(data.get("description", "")),
            system,
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> SweepSpec:
        """Read a `.toml`, `.yaml`/`.yml` (needs pyyaml) or `.json` spec."""
        return cls.from_dict(read_table(path, "sweep spec", SweepSpecError))

    def points(self) -> Iterator[dict[str, Any]]:
        """Axis values of every point (cartesian product, last axis fastest), seed included."""
        names = list(self.axes)
        for values in itertools.product(*self.axes.values()):
            for seed in self.seeds:
                yield {**dict(zip(names, values)), "seed": seed}

    def configs(self) -> list[Config]:
        """Every point's `Config`; a value out of range raises `SweepSpecError` naming its axis."""
        out = []
        for point in self.points():
            try:
                out.append(Config(self.system, **{**self.base, **point}))
            except ConfigError as e:
                m = re.match(r"invalid (\w+)=", str(e))
                field = m.group(1) if m else None
                who = (
                    f"axis {field!r}"
                    if field in self.axes
                    else (f"base field {field!r}" if field in self.base else "spec")
                )
                at = ", ".join(f"{k}={v!r}" for k, v in point.items() if k != "seed")
                raise SweepSpecError(f"{who} at point ({at}): {e}") from None
        return out

    def to_dict(self) -> dict[str, Any]:
        """The normalised spec (ranges expanded to values), stored as `spec.json`."""
        return {
            "system": self.system,
            "name": self.name,
            "description": self.description,
            "base": dict(self.base),
            "axes": {k: list(v) for k, v in self.axes.items()},
            "seeds": list(self.seeds),
            "measures": list(self.measures),
        }


def point_key(config: Config) -> str:
    """Stable 16-hex-digit key of a point: sha256 of its full config as canonical JSON."""
    text = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def shape_group(config: Config) -> tuple[Any, ...]:
    """The values of `config`'s fields that change array shapes or static arguments (declared with
    `shape=True`): points of one group share every compiled program."""
    shape = [f.name for part in (config.task, config.run) for f in dataclasses.fields(part) if f.metadata.get("shape")]
    return (config.system, *(getattr(config, f) for f in shape))
