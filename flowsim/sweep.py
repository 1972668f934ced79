"""Resumable parameter sweeps: a validated spec, one JSON file per finished point, a worker pool.

A sweep spec (TOML, or YAML when `pyyaml` is importable) names

    base     = {L = 5, steps = 3000}                       # Config fields shared by every point
    axes     = {init_scale = {log = [1e-3, 1], num = 7},   # field -> list, or {log|lin = [lo, hi], num = k}
                m = [16, 32, 64]}
    seeds    = 2                                            # a count (0..k-1) or a list of seeds
    measures = ["T1", "attn_disp_T1", "phase1.attention_frozen"]

The points are the cartesian product of the axes times the seeds. Everything is validated before any
work: unknown fields, empty axes, values outside a field's range (each point's `Config` is built up
front) and unknown measures raise `SweepSpecError` (a `ConfigError`) naming the axis.

**Results folder**: `spec.json` (the normalised spec) and `points/<key>.json`, one file per finished
point, keyed by a hash of the point's full config and written atomically the moment the point ends
(`flowsim.results.write_json`): config, seed, axis values, status ("ok" / "failed" + reason),
measures, package versions, wall and compile time. A rerun skips every point that has a file, so a
sweep killed at any moment (even `kill -9`) loses nothing finished; a rerun with a different spec
refuses to write into the folder (`SpecMismatchError`) unless asked for a new folder.

**Measures** (`MEASURES`) are computed from the flow, GD and SGD of a point; `run_point` runs only
the pieces the requested measures need (most measures need the flow alone, which skips SGD, the
dominant cost of a full experiment).

**Speed.** Values that do not change array shapes (lr, init_scale, seed, rtol, atol) are traced
arguments of the core's compiled solves, so a worker compiles each solve once per shape group and
reuses it for every later point (`tests/test_sweep.py` checks that no XLA compilation happens after
the first point). Points run one after the other inside a worker, in a plain loop: the anchors
measured vmap over 8 adaptive solves on this CPU at 3.56 s against 1.27 s for a loop (lanes step in
lockstep, so every lane pays for the slowest), and the flow's event handling branches on the host;
SGD seeds inside a point are vmapped by `flowsim.sgd` already. Parallelism is across points: one
single-process pool per core ("lane"), each shape group pinned to one lane when there are enough
groups, so each lane compiles only its own shapes; or a Dask cluster (`use_dask=True`, a
`LocalCluster` unless a scheduler address is given; the optional extra `flowsim[dask]`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import pathlib
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .config import Config, ConfigError, read_table
from .results import package_versions, write_json

# ---------------------------------------------------------------------------------------- measures

PIECES = ("flow", "gd", "sgd")


@dataclasses.dataclass(frozen=True)
class _Run:
    """What a point produced: the solutions that were run (others None) and the verdicts by name."""

    flow: Any
    gd: Any
    sgd: Any
    verdicts: dict[str, Any]

    @property
    def t1(self) -> float | None:
        t = self.flow.event_time
        return None if np.isnan(t) else float(t)


def _fig(verdict: str, figure: str) -> Callable[[_Run], Any]:
    def get(r: _Run) -> Any:
        v = r.verdicts.get(verdict)
        return None if v is None else v.figures.get(figure)
    return get


def _status(verdict: str) -> Callable[[_Run], bool | None]:
    def get(r: _Run) -> bool | None:
        v = r.verdicts.get(verdict)
        if v is None:  # not evaluated: Phase 1 never ended, so the claims that need T1 do not hold
            return False if r.t1 is None else None
        return None if v.status == "INFO" else v.status == "PASS"
    return get


@dataclasses.dataclass(frozen=True)
class Measure:
    """A named scalar of one point: `needs` the pieces it is computed from, `fn` reads it off a run."""

    name: str
    needs: frozenset[str]
    fn: Callable[[_Run], Any]
    doc: str


def _m(name: str, needs: str, fn: Callable[[_Run], Any], doc: str) -> Measure:
    return Measure(name, frozenset(needs.split()), fn, doc)


_FLOW = "flow"
_VERDICT_NEEDS = {"phase1": _FLOW, "phase2": _FLOW, "balance": _FLOW, "compare.flow_gd": "flow gd",
                  "compare.flow_sgd": "flow gd sgd"}
VERDICT_NAMES = ("phase1.end", "phase1.loss_order_one", "phase1.all_correct", "phase1.mlp_aligned",
                 "phase1.attention_frozen", "phase1.change_by_T1", "phase2.directions", "phase2.mlp_signs",
                 "phase2.loss_1_over_t", "balance.S2_S3", "balance.R", "balance.within_type",
                 "compare.flow_gd", "compare.flow_sgd")

MEASURES: dict[str, Measure] = {m.name: m for m in [
    _m("T1", _FLOW, lambda r: r.t1, "end of Phase 1 (min-margin event time); null if it never fires before T"),
    _m("loss_T", _FLOW, lambda r: r.flow.obs["loss"][-1], "flow training loss at T"),
    _m("min_margin_T", _FLOW, lambda r: r.flow.obs["min_margin"][-1], "flow min margin at T"),
    _m("attn_disp_T1", _FLOW, lambda r: None if r.flow.event_obs is None else r.flow.event_obs["attn_disp"],
       "max |p(T1) - p(0)| of the attention weights"),
    _m("attn_disp_T", _FLOW, lambda r: r.flow.obs["attn_disp"][-1], "max |p(T) - p(0)|"),
    _m("S2_S3_worst_ratio", _FLOW, _fig("balance.S2_S3", "worst_max_ratio"),
       "max over Phase 2 of max(S2/S3, S3/S2) (1 = perfect balance)"),
    _m("R_in_12_fraction", _FLOW, _fig("balance.R", "fraction_in_(1,2)"), "fraction of Phase 2 with 1 < R < 2"),
    _m("flow_steps", _FLOW, lambda r: r.flow.num_steps, "adaptive steps of the flow solve"),
    _m("flow_gd_gap", "flow gd", _fig("compare.flow_gd", "max_rel_gap_loss"),
       "max pointwise relative gap between the GD and flow losses"),
    _m("flow_sgd_gap", "flow gd sgd", _fig("compare.flow_sgd", "max_rel_gap_loss_sgd_mean"),
       "max pointwise relative gap between the SGD seed-mean loss and the flow loss"),
    _m("sgd_envelope_fraction", "flow gd sgd", _fig("compare.flow_sgd", "fraction_inside_sgd_envelope"),
       "fraction of save times with the flow loss inside the SGD seed envelope"),
    _m("gd_diverged", "gd", lambda r: bool(r.gd.diverged), "GD reached a non-finite loss"),
    _m("sgd_diverged", "sgd", lambda r: bool(r.sgd.diverged), "some SGD seed reached a non-finite loss"),
    *(_m(v, _VERDICT_NEEDS.get(v) or _VERDICT_NEEDS[v.split(".")[0]], _status(v),
         f"verdict {v} (true = PASS); false when Phase 1 never ends") for v in VERDICT_NAMES),
]}


def needed_pieces(measures: Sequence[str]) -> frozenset[str]:
    """The runs (flow / gd / sgd) that `measures` need."""
    return frozenset().union(*(MEASURES[m].needs for m in measures))


# ------------------------------------------------------------------------------------- one point


def _verdicts(flow, gd, sg, t1: float | None) -> dict[str, Any]:
    """The verdicts computable from the pieces that ran (`flowsim.verdicts.evaluate`)."""
    from . import verdicts

    obs = lambda sol: None if sol is None else {"t": sol.ts, **sol.obs}  # noqa: E731
    return {v.name: v for v in verdicts.evaluate(obs(flow), obs(gd), obs(sg), t1, flow.event_obs)}


def _failure(run: _Run) -> str | None:
    """Why a point counts as failed (None if it did not): flow stopped early, divergence, non-finite."""
    if run.flow is not None:
        if not run.flow.ok:
            return f"flow stopped with diffrax result '{run.flow.result}' at t = {run.flow.t_reached:.6g}"
        if not np.isfinite(run.flow.obs["loss"][-1]):
            return "flow loss at T is not finite"
    for name, sol in (("GD", run.gd), ("SGD", run.sgd)):
        if sol is not None and sol.diverged:
            return f"{name} diverged (non-finite loss) at step(s) {np.atleast_1d(sol.diverged_step).tolist()}"
    return None


def _value(x: Any) -> Any:
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if x is None:
        return None
    x = float(x) if np.ndim(x) == 0 else x
    return x


def run_point(config: Config, measures: Sequence[str]) -> dict[str, Any]:
    """Run the pieces of `config`'s experiment that `measures` need and return a result record.

    The record has `status` ("ok" or "failed"), `reason` (why it failed, else None), `measures`
    (name -> value; what could be computed is kept even for a failed point), `ran` (pieces run),
    `wall_s` and `compile_s`. Divergence, an unsuccessful flow and non-finite values mark a point
    failed; an exception inside a solve is caught and recorded the same way.
    """
    from . import experiment
    from ._timing import timed_call

    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise SweepSpecError(f"unknown measure(s) {unknown}; known: {sorted(MEASURES)}")
    need = needed_pieces(measures)
    t0 = time.perf_counter()
    compile_s = 0.0

    def timed(fn, *args, **kwargs):
        nonlocal compile_s
        out, _, c = timed_call(fn, *args, **kwargs)
        compile_s += c
        return out

    record: dict[str, Any] = {"ran": sorted(need, key=PIECES.index), "measures": {}}
    try:
        s = timed(experiment.setup, config)
        flow = timed(experiment.run_flow, s)
        gd = timed(experiment.run_gd, s) if "gd" in need else None
        sg = timed(experiment.run_sgd, s) if "sgd" in need else None
        run = _Run(flow, gd, sg, {})
        run = dataclasses.replace(run, verdicts=_verdicts(flow, gd, sg, run.t1))
        reason = _failure(run)
        for name in measures:
            try:
                record["measures"][name] = _value(MEASURES[name].fn(run))
            except Exception as e:  # noqa: BLE001 - a measure that cannot be read on a broken run
                record["measures"][name] = None
                reason = reason or f"measure {name}: {type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - a point's failure must not stop the sweep
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    record.update(status="failed" if reason else "ok", reason=reason,
                  wall_s=time.perf_counter() - t0, compile_s=compile_s)
    return record


# ------------------------------------------------------------------------------------------ spec


class SweepSpecError(ConfigError):
    """A sweep spec is invalid; the message names the axis or key at fault."""


class SpecMismatchError(ConfigError):
    """A results folder holds a different sweep; use a new folder (`--new`)."""


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_SPEC_KEYS = ("name", "description", "base", "axes", "seeds", "measures")


def _coerce(field: str, value: Any, where: str) -> Any:
    """A value of the field's type (ints from lin/log spacing are rounded; ints widen to floats)."""
    kind = type(_FIELDS[field].default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SweepSpecError(f"{where}: value {value!r} is not a {kind.__name__}")
    return value


def _axis_values(field: str, spec: Any) -> list[Any]:
    where = f"axis {field!r}"
    if field not in _FIELDS:
        raise SweepSpecError(f"{where}: unknown config field; known fields: {sorted(_FIELDS)}")
    if field == "seed":
        raise SweepSpecError(f"{where}: give seeds with the top-level `seeds` key, not as an axis")
    if isinstance(spec, Mapping):
        kinds = [k for k in ("log", "lin") if k in spec]
        extra = sorted(set(spec) - {"log", "lin", "num"})
        if len(kinds) != 1 or extra or "num" not in spec:
            raise SweepSpecError(f"{where}: a range is {{log = [lo, hi], num = k}} or {{lin = [lo, hi], num = k}}, "
                                 f"got {dict(spec)!r}")
        lohi, num = spec[kinds[0]], spec["num"]
        if (not isinstance(num, int) or isinstance(num, bool) or num < 1 or not isinstance(lohi, list)
                or len(lohi) != 2 or not all(isinstance(v, (int, float)) for v in lohi)):
            raise SweepSpecError(f"{where}: needs {kinds[0]} = [lo, hi] (numbers) and num = a positive integer")
        lo, hi = map(float, lohi)
        if kinds[0] == "log":
            if lo <= 0 or hi <= 0:
                raise SweepSpecError(f"{where}: log range needs lo, hi > 0, got [{lo:g}, {hi:g}]")
            raw = np.logspace(math.log10(lo), math.log10(hi), num)
        else:
            raw = np.linspace(lo, hi, num)
        is_int = type(_FIELDS[field].default) is int
        values = [int(round(v)) if is_int else float(v) for v in raw]
    elif isinstance(spec, list):
        values = spec
    else:
        raise SweepSpecError(f"{where}: give a list of values or a {{log|lin = [lo, hi], num = k}} range")
    values = list(dict.fromkeys(_coerce(field, v, where) for v in values))  # dedupe, keep order
    if not values:
        raise SweepSpecError(f"{where}: no values (an axis needs at least one)")
    return values


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: `base` config fields, `axes` (field -> tuple of values, in order; an axis
    overrides the same field in `base`), `seeds`,
    `measures`; `name`/`description` are free text. Build with `from_dict` or `from_file`."""

    base: Mapping[str, Any]
    axes: Mapping[str, tuple[Any, ...]]
    seeds: tuple[int, ...]
    measures: tuple[str, ...]
    name: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        for f in self.base:
            if f not in _FIELDS:
                raise SweepSpecError(f"base: unknown config field {f!r}; known fields: {sorted(_FIELDS)}")
        if not self.seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in self.seeds):
            raise SweepSpecError(f"seeds: need a positive count or a non-empty list of integers >= 0, "
                                 f"got {list(self.seeds)!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise SweepSpecError(f"seeds: repeated seeds in {list(self.seeds)!r}")
        if not self.measures:
            raise SweepSpecError(f"measures: name at least one of {sorted(MEASURES)}")
        unknown = [m for m in self.measures if m not in MEASURES]
        if unknown:
            raise SweepSpecError(f"measures: unknown {unknown}; known: {sorted(MEASURES)}")
        self.configs()  # every point's Config is built (and validated) before any work

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepSpec:
        if not isinstance(data, Mapping):
            raise SweepSpecError(f"a sweep spec must be a table, got {type(data).__name__}")
        extra = sorted(set(data) - set(_SPEC_KEYS))
        if extra:
            raise SweepSpecError(f"unknown spec key(s) {extra}; allowed: {list(_SPEC_KEYS)}")
        base = data.get("base", {})
        axes = data.get("axes", {})
        if not isinstance(base, Mapping) or not isinstance(axes, Mapping):
            raise SweepSpecError("base and axes must be tables")
        base = {k: (_coerce(k, v, f"base field {k!r}") if k in _FIELDS else v) for k, v in base.items()}
        seeds = data.get("seeds", 1)
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            if seeds < 1:
                raise SweepSpecError(f"seeds: a count must be >= 1, got {seeds}")
            seeds = list(range(seeds))
        if not isinstance(seeds, list):
            raise SweepSpecError(f"seeds: a count or a list of integers, got {seeds!r}")
        measures = data.get("measures", [])
        if isinstance(measures, str) or not isinstance(measures, list):
            raise SweepSpecError(f"measures: a list of names, got {measures!r}")
        return cls(dict(base), {f: tuple(_axis_values(f, v)) for f, v in axes.items()}, tuple(seeds),
                   tuple(measures), str(data.get("name", "")), str(data.get("description", "")))

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
                out.append(Config.from_dict({**self.base, **point}))
            except ConfigError as e:
                m = re.match(r"invalid (\w+)=", str(e))
                field = m.group(1) if m else None
                who = f"axis {field!r}" if field in self.axes else (
                    f"base field {field!r}" if field in self.base else "spec")
                at = ", ".join(f"{k}={v!r}" for k, v in point.items() if k != "seed")
                raise SweepSpecError(f"{who} at point ({at}): {e}") from None
        return out

    def to_dict(self) -> dict[str, Any]:
        """The normalised spec (ranges expanded to values), stored as `spec.json`."""
        return {"name": self.name, "description": self.description, "base": dict(self.base),
                "axes": {k: list(v) for k, v in self.axes.items()}, "seeds": list(self.seeds),
                "measures": list(self.measures)}


def point_key(config: Config) -> str:
    """Stable 16-hex-digit key of a point: sha256 of its full config as canonical JSON."""
    text = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------- running

SHAPE_FIELDS = ("n", "L", "d", "m", "m1", "steps", "batch_size", "sgd_seeds", "solver", "max_steps",
                "n_save_log", "n_save_lin", "n_test", "precision", "init", "train_a")
"""Config fields that change array shapes or static arguments, i.e. force a new compilation."""


def _shape_group(config: Config) -> tuple:
    return tuple(getattr(config, f) for f in SHAPE_FIELDS)


@functools.cache
def _versions() -> dict[str, str]:
    return package_versions()


def _task(config: Config, measures: tuple[str, ...]) -> dict[str, Any]:
    """What a worker runs for one point: `run_point` plus where and with what versions it ran."""
    import socket

    rec = run_point(config, measures)
    rec.update(versions=_versions(), host=socket.gethostname(), pid=os.getpid())
    return rec


def _worker_init(xla_flags: str | None, jax_options: dict[str, Any]) -> None:
    """Start of a worker process (before JAX's backend exists): one CPU device (unless `xla_flags`
    is None: a remote worker keeps its own), float64, the parent's compilation-cache settings."""
    if xla_flags is not None:
        os.environ["XLA_FLAGS"] = xla_flags
    import jax

    for k, v in jax_options.items():
        jax.config.update(k, v)


def _jax_options() -> dict[str, Any]:
    import jax

    return {"jax_enable_x64": True,
            "jax_compilation_cache_dir": jax.config.jax_compilation_cache_dir,
            "jax_persistent_cache_min_compile_time_secs": jax.config.jax_persistent_cache_min_compile_time_secs}


_WORKER_FLAGS = "--xla_force_host_platform_device_count=1"


def _lanes(todo: list[tuple[str, Config]], workers: int) -> list[list[tuple[str, Config]]]:
    """Split the points over `workers` lanes: whole shape groups per lane (largest first, onto the
    least loaded lane) when there are at least 2 groups per lane, else round-robin points."""
    groups: dict[tuple, list[tuple[str, Config]]] = {}
    for item in todo:
        groups.setdefault(_shape_group(item[1]), []).append(item)
    lanes: list[list[tuple[str, Config]]] = [[] for _ in range(workers)]
    if len(groups) >= 2 * workers:
        for g in sorted(groups.values(), key=len, reverse=True):
            min(lanes, key=len).extend(g)
    else:
        ordered = [p for g in groups.values() for p in g]
        for i, item in enumerate(ordered):
            lanes[i % workers].append(item)
    return [lane for lane in lanes if lane]


def resolve_out(out: str | os.PathLike, spec: SweepSpec, new: bool = False) -> pathlib.Path:
    """The results folder to use: `out` if empty or holding this spec; with `new`, the first free
    `out-2`, `out-3`, ... when `out` holds a different sweep. Otherwise `SpecMismatchError`."""
    out = pathlib.Path(out)
    want = spec.to_dict()

    def matches(p: pathlib.Path) -> bool | None:  # None: nothing there yet
        f = p / "spec.json"
        if not f.is_file():
            return None if not p.exists() or not any(p.iterdir()) else False
        return json.loads(f.read_text())["spec"] == want

    ok = matches(out)
    if ok is None or ok:
        return out
    if not new:
        raise SpecMismatchError(f"results folder {str(out)!r} holds a different sweep (or other files); "
                                "pass --new for a fresh folder next to it, or another --out")
    for i in itertools.count(2):
        cand = out.with_name(f"{out.name}-{i}")
        if matches(cand) is not False:
            return cand
    raise AssertionError("unreachable")


@dataclasses.dataclass(frozen=True)
class SweepReport:
    """Outcome of `run_sweep`: results `folder`, `total` points, `skipped` (already done),
    `done` and `failed` in this run, `wall_s`."""

    folder: pathlib.Path
    total: int
    skipped: int
    done: int
    failed: int
    wall_s: float


def run_sweep(spec: SweepSpec, out: str | os.PathLike, *, workers: int | None = None, new: bool = False,
              use_dask: bool = False, scheduler: str | None = None, progress: bool = True) -> SweepReport:
    """Run every point of `spec` that has no result file in `out` yet and write each as it ends.

    `workers`: worker processes; 1 runs the points in this process. The default is one per core but
    at most one per shape group, since a second worker on the same shapes compiles them again (on
    this 2-core CPU a one-shape 64-point grid ran at 2.0 points/s on 1 worker and 1.1 on 2, see
    benchmarks/results_sweep.md); pass `workers` to split a single shape group anyway (worth it
    when each point runs much longer than a compilation).
    `use_dask`: run on Dask distributed instead: a `LocalCluster` with `workers` processes, or the
    cluster at `scheduler`. The driver (this process) writes every result file, so a remote cluster
    needs no access to `out`.
    """
    t0 = time.perf_counter()
    folder = resolve_out(out, spec, new)
    points_dir = folder / "points"
    points_dir.mkdir(parents=True, exist_ok=True)
    if not (folder / "spec.json").is_file():
        write_json(folder / "spec.json", {"spec": spec.to_dict(), "versions": _versions()})
    configs = spec.configs()
    axis_names = list(spec.axes)
    todo = [(point_key(c), c) for c in configs]
    done_keys = {p.stem for p in points_dir.glob("*.json")}
    skipped = sum(k in done_keys for k, _ in todo)
    todo = [(k, c) for k, c in todo if k not in done_keys]
    if workers is None:  # one per core, but never more than shape groups: no compile is done twice
        workers = max(1, min(os.cpu_count() or 1, len({_shape_group(c) for _, c in todo})))
    counts = {"done": 0, "failed": 0}

    from tqdm.auto import tqdm

    bar = tqdm(total=len(configs), initial=skipped, desc=f"sweep {spec.name or folder.name}", unit="pt",
               disable=not progress, dynamic_ncols=True)

    def record(key: str, config: Config, rec: dict[str, Any]) -> None:
        rec = {"key": key, "axes": {a: getattr(config, a) for a in axis_names}, "seed": config.seed,
               "config": config.to_dict(), **rec}
        write_json(points_dir / f"{key}.json", rec)
        counts["done"] += 1
        counts["failed"] += rec["status"] != "ok"
        bar.set_postfix(done=skipped + counts["done"], failed=counts["failed"], refresh=False)
        bar.update(1)

    try:
        if not todo:
            pass
        elif use_dask:
            _run_dask(todo, spec.measures, workers, scheduler, record)
        elif workers == 1:
            for key, config in todo:
                record(key, config, _task(config, spec.measures))
        else:
            _run_pool(todo, spec.measures, workers, record)
    finally:
        bar.close()
    return SweepReport(folder, len(configs), skipped, counts["done"], counts["failed"], time.perf_counter() - t0)


def _collect(futures: dict[concurrent.futures.Future, tuple[str, Config]], record) -> None:
    """Record each point as its future completes. `run_point` catches a point's own failures, so an
    exception here is the infrastructure's (a worker process died): those points get no file (a
    rerun retries them) and the sweep stops with one error once the rest is in."""
    errors: list[str] = []
    for fut in concurrent.futures.as_completed(futures):
        key, config = futures[fut]
        try:
            rec = fut.result()
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}")
            continue
        record(key, config, rec)
    if errors:
        raise RuntimeError(f"{len(errors)} point(s) not run (a worker failed; rerun to retry them): {errors[0]}")


def _run_pool(todo, measures, workers, record) -> None:
    ctx = multiprocessing.get_context("spawn")
    lanes = _lanes(todo, workers)
    pools = [concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx, initializer=_worker_init,
                                                    initargs=(_WORKER_FLAGS, _jax_options())) for _ in lanes]
    try:
        futures = {pool.submit(_task, c, measures): (k, c) for pool, lane in zip(pools, lanes) for k, c in lane}
        _collect(futures, record)
    finally:
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)


def _run_dask(todo, measures, workers, scheduler, record) -> None:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as e:
        raise ConfigError('the Dask path needs dask.distributed: pip install "flowsim[dask]"') from e
    opts = _jax_options()
    if scheduler:
        client, cluster = Client(scheduler), None
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, env={"XLA_FLAGS": _WORKER_FLAGS})
        client = Client(cluster)
    try:
        client.run(_worker_init, None if scheduler else _WORKER_FLAGS, opts)
        executor = client.get_executor(pure=False)
        futures = {executor.submit(_task, c, measures): (k, c) for k, c in todo}
        _collect(futures, record)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
