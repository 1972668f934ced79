"""Config fields that carry their own help text, allowed range and choices.

A system's config (and the engine's `RunConfig`) is a frozen dataclass whose fields are declared with
[`field`][flowsim.field]: the CLI builds its options, help text and choices from this metadata, and
[`check_fields`][flowsim.check_fields] validates every value against it, so a bad value is refused
with one line naming the field and its allowed range before any work.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any


class ConfigError(ValueError):
    """A configuration value is outside its allowed range; the message names the field."""


def require(cond: bool, name: str, allowed: str, value: Any) -> None:
    """Raise `ConfigError("invalid NAME=VALUE: NAME must be ALLOWED")` unless `cond`."""
    if not cond:
        raise ConfigError(f"invalid {name}={value!r}: {name} must be {allowed}")


def field(
    default: Any,
    help: str,
    *,
    low: int | float | None = None,
    high: int | float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: Sequence[str] | None = None,
    shape: bool = False,
) -> Any:
    """A dataclass field with metadata for validation and the CLI.

    **Arguments:** `default`: the default value (its type is the field's type: bool, int, float or
    str); `help`: one line for `--help`; `low`, `high`: bounds (inclusive unless `low_open`,
    `high_open`); `choices`: allowed strings; `shape`: whether changing the field changes array shapes
    or static arguments of the compiled programs (sweeps group points by these fields).

    **Returns:** a `dataclasses.field`.
    """
    meta = {
        "help": help,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "choices": tuple(choices) if choices is not None else None,
        "shape": shape,
    }
    return dataclasses.field(default=default, metadata=meta)


def kind(f: dataclasses.Field) -> type:
    """The Python type of a field (that of its default)."""
    return type(f.default)


def allowed(f: dataclasses.Field) -> str:
    """The allowed values of field `f`, in words (used in error messages and `--help`)."""
    m, k = f.metadata, kind(f)
    if k is bool:
        return "true or false"
    if m.get("choices") is not None:
        return f"one of {m['choices']}"
    lo, hi = m.get("low"), m.get("high")
    noun = "an integer" if k is int else "a finite number"
    if k is int and lo == 1:
        noun, lo = "a positive integer", None
    if lo is None and hi is None:
        return noun
    num = (lambda x: str(int(x))) if k is int else (lambda x: f"{x:g}")  # ints exactly: 2147483647, not 2.14748e+09
    if lo is not None and hi is not None:
        left, right = "(" if m.get("low_open") else "[", ")" if m.get("high_open") else "]"
        return f"{noun} in {left}{num(lo)}, {num(hi)}{right}"
    if lo is not None:
        return f"{noun} {'>' if m.get('low_open') else '>='} {num(lo)}"
    return f"{noun} {'<' if m.get('high_open') else '<='} {num(hi)}"


def _ok(f: dataclasses.Field, v: Any) -> bool:
    m, k = f.metadata, kind(f)
    if k is bool:
        return isinstance(v, bool)
    if k is str:
        return isinstance(v, str) and (m.get("choices") is None or v in m["choices"])
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    if k is int and not isinstance(v, int):
        return False
    if not math.isfinite(v):
        return False
    lo, hi = m.get("low"), m.get("high")
    if lo is not None and (v <= lo if m.get("low_open") else v < lo):
        return False
    return not (hi is not None and (v >= hi if m.get("high_open") else v > hi))


def _checked(f: dataclasses.Field, v: Any) -> Any:
    """`v` validated against field `f` (an int widened to float for a float field); else `ConfigError`."""
    if kind(f) is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    require(_ok(f, v), f.name, allowed(f), v)
    return v


def check_values(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """Validate raw `values` (e.g. parsed from a file or the command line) for fields of the dataclass
    `cls` against their metadata, before `cls(**values)` is built.

    **Returns:** the values with ints widened to floats for float fields, so that they have the
    fields' declared types. Raises `ConfigError` naming the first bad field in declaration order;
    names that are not fields of `cls` are passed through unchanged.
    """
    out = dict(values)
    for f in dataclasses.fields(cls):
        if f.name in out:
            out[f.name] = _checked(f, out[f.name])
    return out


def check_fields(obj: Any) -> None:
    """Validate every field of the dataclass instance `obj` against its metadata.

    Raises `ConfigError` naming the first field whose value has the wrong type, is not finite, is
    outside its range or not one of its choices.
    """
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        w = _checked(f, v)
        if w is not v:
            object.__setattr__(obj, f.name, w)


def shape_fields(cls: type) -> tuple[str, ...]:
    """Names of the fields of dataclass `cls` declared with `shape=True`."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("shape"))


def read_table(path: str | os.PathLike[str], what: str, error: type[ConfigError] = ConfigError) -> Any:
    """Parse a `.toml`, `.json` or (with pyyaml) `.yaml`/`.yml` file; any failure raises `error`
    with one line naming the file (`what` says what kind of file it is)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise error(f"{what} {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as e:
        raise error(f"{what} {str(path)!r} cannot be read as UTF-8 text: {e}") from None
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:
            raise error(f"YAML files need pyyaml (pip install pyyaml); or write TOML: {str(path)!r}") from e
        parse = yaml.safe_load
    else:
        parse = tomllib.loads if path.suffix == ".toml" else json.loads
    try:
        return parse(text)
    except Exception as e:  # any parser error becomes one line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise error(f"{what} {str(path)!r} is not valid {path.suffix[1:] or 'json'}: {first}") from None
