"""A run's configuration: the system's own fields plus the engine's run and solver settings.

[`RunConfig`][flowsim.RunConfig] holds what every system shares (seed, step size, steps, SGD batch
and seeds, flow solver and tolerances, save grid, precision). A system declares its own fields
(task and model) as a frozen dataclass. [`Config`][flowsim.Config] pairs the two under one flat
namespace: `Config(n=12, lr=0.05)` routes each name to the part that declares it, `config.n` and
`config.lr` read either part, and `to_dict()` / `from_dict()` give the flat table that config files,
sweep specs and results folders use.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping
from typing import Any, final

from ._fields import ConfigError, check_fields, check_values, field, read_table, require

SOLVERS = ("tsit5", "dopri5", "dopri8", "heun", "euler", "kvaerno5", "rkc", "tsit5-unrolled")
PRECISIONS = ("float64", "float32")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop")
RESOLUTION = {"float64": (2.220446049250313e-16, 2.2250738585072014e-308), "float32": (1.1920929e-07, 1.1754944e-38)}


@final
@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Settings shared by every system: randomness, discrete comparators, flow solver, recording.

    **Fields:** see each field's help (`flowsim run --help` lists them with their ranges).
    """

    seed: int = field(0, "the run's seed: every random stream is split from PRNGKey(seed)", low=0, high=2**31 - 1)
    lr: float = field(0.01, "GD/SGD step size; the flow runs to T = lr * steps", low=0.0, low_open=True, high=1e4)
    steps: int = field(30000, "GD/SGD steps", low=1, high=10**8, shape=True)
    batch_size: int = field(12, "SGD minibatch size (at most the training-set size)", low=1, high=10**6, shape=True)
    sgd_seeds: int = field(8, "SGD runs (vmapped over seeds)", low=1, high=1024, shape=True)
    optimizer: str = field(
        "sgd",
        "the minibatch comparator: plain SGD, or an optax optimizer (momentum 0.9, adam, adamw, rmsprop) at opt_lr",
        choices=OPTIMIZERS,
        shape=True,
    )
    opt_lr: float = field(0.0, "step size of the optax optimizer (0: lr)", low=0.0, high=1e4)
    solver: str = field("tsit5", "diffrax solver of the flow", choices=SOLVERS, shape=True)
    rtol: float = field(
        1e-6, "relative tolerance of the adaptive flow solve", low=0.0, high=1.0, low_open=True, high_open=True
    )
    atol: float = field(1e-9, "absolute tolerance of the adaptive flow solve", low=0.0, high=1.0, low_open=True)
    max_steps: int = field(200_000, "step budget of one flow solve", low=1, high=10**7, shape=True)
    n_save_log: int = field(120, "log-spaced save points on the step grid", low=2, high=100_000, shape=True)
    n_save_lin: int = field(60, "linear save points on the step grid", low=2, high=100_000, shape=True)
    precision: str = field("float64", "floating-point precision", choices=PRECISIONS, shape=True)
    stop_loss: float = field(
        0.0, "stop the flow and GD/SGD once the training loss falls below this (0: run to T)", low=0.0, high=1e6
    )
    sharpness: int = field(
        0, "top Hessian eigenvalues recorded at each save point (0: none; Lanczos on HVPs)", low=0, high=16, shape=True
    )

    def __post_init__(self) -> None:
        check_fields(self)
        eps, tiny = RESOLUTION[self.precision]
        require(self.rtol >= eps, "rtol", f">= {eps:g} (the resolution of {self.precision})", self.rtol)
        require(self.atol >= tiny, "atol", f">= {tiny:g} (the smallest normal {self.precision})", self.atol)

    @property
    def t_final(self) -> float:
        """Flow time matched by the discrete runs: T = lr * steps."""
        return self.lr * self.steps


def _registry():
    from . import _registry

    return _registry


@final
class Config:
    """A system's fields and the engine's run settings, validated together at construction.

    **Arguments:** `system`: a registered system name (default: the registry's default system,
    co-occurrence); `**fields`: any field of that system's config or of `RunConfig`, by name.

    Unknown names, values out of range and inconsistent combinations (e.g. a batch larger than the
    training set) raise `ConfigError` naming the field and its allowed range. A `Config` is immutable;
    `replace(**changes)` returns a validated copy.
    """

    __slots__ = ("run", "system", "task")
    system: str
    task: Any
    run: RunConfig

    def __init__(self, system: str | None = None, **fields: Any) -> None:
        reg = _registry()
        name = reg.default_system() if system is None else system
        sys_ = reg.get_system(name)
        task_names = {f.name for f in dataclasses.fields(sys_.config_type)}
        run_names = {f.name for f in dataclasses.fields(RunConfig)}
        unknown = sorted(set(fields) - task_names - run_names)
        if unknown:
            raise ConfigError(
                f"unknown config field(s) {unknown} for system {name!r}; known fields: {sorted(task_names | run_names)}"
            )
        # Raw values (from files, the CLI, sweep specs) are validated and ints widened to floats before the
        # dataclasses are built, so each part is constructed with its fields' declared types.
        task = sys_.config_type(**check_values(sys_.config_type, {k: v for k, v in fields.items() if k in task_names}))
        run = RunConfig(**check_values(RunConfig, {k: v for k, v in fields.items() if k in run_names}))
        size = sys_.train_size(task)
        require(run.batch_size <= size, "batch_size", f"in [1, n={size}] (the training-set size)", run.batch_size)
        object.__setattr__(self, "system", name)
        object.__setattr__(self, "task", task)
        object.__setattr__(self, "run", run)

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}: a Config is immutable")

    def __getattr__(self, name: str) -> Any:
        for part in ("task", "run"):
            obj = object.__getattribute__(self, part)
            if name in {f.name for f in dataclasses.fields(obj)} or hasattr(type(obj), name):
                return getattr(obj, name)
        raise AttributeError(f"Config of system {self.system!r} has no field {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self.to_dict().items())))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"Config({inner})"

    def __reduce__(self):
        return (_from_flat, (self.to_dict(),))

    @property
    def t_final(self) -> float:
        """Flow time matched by the discrete runs: T = lr * steps."""
        return self.run.t_final

    def field_names(self) -> tuple[str, ...]:
        """The system's field names, then the run settings' names."""
        return tuple(f.name for part in (self.task, self.run) for f in dataclasses.fields(part))

    def to_dict(self) -> dict[str, Any]:
        """The flat table: `system`, then every field of the system and of the run settings."""
        return {"system": self.system, **dataclasses.asdict(self.task), **dataclasses.asdict(self.run)}

    def replace(self, **changes: Any) -> Config:
        """A validated copy with some fields changed (`system` may not change)."""
        data = self.to_dict()
        if "system" in changes and changes["system"] != self.system:
            raise ConfigError(f"invalid system={changes['system']!r}: replace() keeps the system {self.system!r}")
        data.update(changes)
        return Config.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Build from a flat table (`system` optional); unknown keys raise `ConfigError`."""
        data = dict(_table(data))
        system = data.pop("system", None)
        if system is not None and not isinstance(system, str):
            raise ConfigError(f"invalid system={system!r}: system must be a registered system name")
        return cls(system, **data)

    @classmethod
    def from_file(cls, path: str | pathlib.Path, system: str | None = None) -> Config:
        """Load a `.json`, `.toml` or `.yaml` file (a flat table of fields; `system` overrides the
        file's own `system` key when given)."""
        data = _table(read_table(path, "config file"))
        if system is not None:
            data = {**data, "system": system}
        return cls.from_dict(data)


def _table(data: object) -> Mapping[str, Any]:
    """`data` if it is a table (a mapping), else `ConfigError`: parsed files may hold any JSON value."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config must be a table of field = value pairs, got {type(data).__name__}")
    return data


def _from_flat(data: Mapping[str, Any]) -> Config:
    return Config.from_dict(data)
