"""Validated run configuration: every knob of an experiment in one frozen dataclass.

The defaults are the paper's experiment (App. A of Yang et al., NeurIPS 2024): n = 60, L = 5,
d = 64, m = 128, m1 = 256, Kaiming init, full-batch GD with lr 0.01 for 30000 steps.
Invalid values raise `ConfigError` naming the field and its allowed range, so a bad input never
reaches JAX.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import tomllib
from typing import Any, Literal

SOLVERS = ("tsit5", "dopri5", "dopri8", "heun", "euler", "kvaerno5")
INITS = ("kaiming", "theory")
PRECISIONS = ("float64", "float32")


class ConfigError(ValueError):
    """A configuration value is outside its allowed range; the message names the field."""


def _require(cond: bool, field: str, allowed: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"invalid {field}={value!r}: {field} must be {allowed}")


def n_random_slots(n: int, L: int) -> int:
    """Positions filled by random tokens in a training set with exact type counts n/2, n/6, n/6, n/6."""
    return (n // 2) * (L - 3) + 2 * (n // 6) * (L - 2) + (n // 6) * (L - 1)


@dataclasses.dataclass(frozen=True)
class Config:
    """Configuration of one flowsim run (task, model, flow solver and discrete comparators).

    **Task:** `n` samples (divisible by 6: types 1-4 get n/2, n/6, n/6, n/6), sequence length `L`,
    vocabulary/embedding size `d`; `distinct_tokens` draws random tokens without replacement
    across the whole training set (the theory's Assumption 2.3, needs enough vocabulary), else
    with replacement (the paper's experiment).

    **Model:** widths `m` (attention) and `m1` (MLP); `init` is "kaiming" (U(+-1/sqrt(fan_in)))
    or "theory" (N(0, 1/(L m)) for W_Q, W_K, W_V and N(0, 1/m1) for W), both multiplied by
    `init_scale`; `train_a` also trains the fixed +-1 read-out `a`.

    **Flow:** `solver`, `rtol`, `atol`, `max_steps` for the adaptive diffrax solve over [0, lr*steps].

    **Discrete:** full-batch GD and minibatch SGD with `lr`, `steps`, `batch_size`, `sgd_seeds`.

    **Recording:** `n_save_log` log-spaced and `n_save_lin` linear save points on the GD step
    grid; `n_test` fresh samples for the generalization loss; `precision` float64 or float32.
    """

    n: int = 60
    L: int = 5
    d: int = 64
    m: int = 128
    m1: int = 256
    init: Literal["kaiming", "theory"] = "kaiming"
    init_scale: float = 1.0
    train_a: bool = False
    distinct_tokens: bool = False
    seed: int = 0
    lr: float = 0.01
    steps: int = 30000
    batch_size: int = 12
    sgd_seeds: int = 8
    solver: str = "tsit5"
    rtol: float = 1e-6
    atol: float = 1e-9
    max_steps: int = 200_000
    n_save_log: int = 120
    n_save_lin: int = 60
    n_test: int = 3000
    precision: Literal["float64", "float32"] = "float64"

    def __post_init__(self) -> None:
        for name in ("n", "L", "d", "m", "m1", "steps", "batch_size", "sgd_seeds", "max_steps"):
            v = getattr(self, name)
            _require(isinstance(v, int) and not isinstance(v, bool) and v > 0, name, "a positive integer", v)
        _require(self.n % 6 == 0, "n", "a positive multiple of 6 (type counts n/2, n/6, n/6, n/6)", self.n)
        _require(self.L >= 3, "L", "an integer >= 3 (mu_1, mu_2 and mu_3 must fit in one sequence)", self.L)
        _require(self.d >= 4, "d", "an integer >= 4 (3 special tokens plus at least one random token)", self.d)
        _require(isinstance(self.train_a, bool), "train_a", "true or false", self.train_a)
        _require(isinstance(self.distinct_tokens, bool), "distinct_tokens", "true or false", self.distinct_tokens)
        if self.distinct_tokens:
            need = n_random_slots(self.n, self.L) + 3
            _require(
                self.d >= need,
                "d",
                f">= {need} for distinct_tokens=True with n={self.n}, L={self.L} "
                "(3 special tokens + one vocabulary entry per random-token slot)",
                self.d,
            )
        _require(self.init in INITS, "init", f"one of {INITS}", self.init)
        for name in ("init_scale", "lr", "rtol", "atol"):
            v = getattr(self, name)
            _require(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0,
                name,
                "a finite number > 0",
                v,
            )
        _require(self.rtol < 1, "rtol", "in (0, 1)", self.rtol)
        _require(isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
                 "seed", "an integer >= 0", self.seed)
        _require(self.batch_size <= self.n, "batch_size", f"in [1, n={self.n}]", self.batch_size)
        _require(self.solver in SOLVERS, "solver", f"one of {SOLVERS}", self.solver)
        _require(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}", self.precision)
        for name in ("n_save_log", "n_save_lin", "n_test"):
            v = getattr(self, name)
            _require(isinstance(v, int) and not isinstance(v, bool) and v >= 2, name, "an integer >= 2", v)

    @property
    def t_final(self) -> float:
        """Flow time matched by the discrete runs: T = lr * steps."""
        return self.lr * self.steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build from a mapping; unknown keys raise `ConfigError` listing the known fields."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a table of field = value pairs, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | pathlib.Path) -> Config:
        """Load a `.json` or `.toml` file (a flat table of config fields)."""
        return cls.from_dict(read_table(path, "config file"))


def read_table(path: str | pathlib.Path, what: str, error: type[ConfigError] = ConfigError) -> Any:
    """Parse a `.toml`, `.json` or (with pyyaml) `.yaml`/`.yml` file; any failure raises `error`
    with one line naming the file (`what` says what kind of file it is)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise error(f"{what} {str(path)!r} does not exist")
    text = path.read_text()
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
    except Exception as e:  # noqa: BLE001 - any parser error becomes one line
        raise error(f"{what} {str(path)!r} is not valid {path.suffix[1:] or 'json'}: {e}") from e
