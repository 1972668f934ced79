"""Running sweeps: one JSON file per finished point, a worker pool or Dask, resumable.

**Results folder**: `spec.json` (the normalised spec) and `points/<key>.json`, one file per finished
point, keyed by a hash of the point's full config and written atomically the moment the point ends:
config, seed, axis values, status ("ok" / "failed" + reason), measures, package versions, wall and
compile time. A rerun skips every point that has a file, so a sweep killed at any moment (even
`kill -9`) loses nothing finished; a rerun with a different spec refuses to write into the folder
(`SpecMismatchError`) unless asked for a new folder.

`run_point` runs only the pieces the requested measures need (most need the flow alone).

**Speed.** Values that do not change array shapes (lr, init scale, seed, tolerances) are traced
arguments of the compiled solves, so a worker compiles each solve once per shape group (fields
declared with `shape=True`) and reuses it for every later point. Points run one after the other inside
a worker (vmap of adaptive solves steps every lane in lockstep); SGD seeds inside a point are vmapped.
Parallelism is across points: one single-process pool per core ("lane"), each shape group pinned to
one lane when there are enough groups; or a Dask cluster (`use_dask=True`, extra `flowsim[dask]`).
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import dataclasses
import functools
import multiprocessing
import os
import pathlib
import time
from collections.abc import Sequence
from typing import Any, final

import numpy as np

from ._config import Config
from ._fields import ConfigError
from ._measures import measures_of, needed_pieces, value
from ._registry import get_system
from ._results import package_versions, write_json
from ._sweep_folder import SweepLockedError as SweepLockedError, _locked, _remove_stale_temporaries, resolve_out
from ._sweep_spec import SweepSpec, SweepSpecError, point_key, shape_group
from ._system import PIECES, RunRecord


def _failure(run: RunRecord) -> str | None:
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


def run_point(config: Config, measures: Sequence[str]) -> dict[str, Any]:
    """Run the pieces of `config`'s experiment that `measures` need and return a result record.

    The record has `status` ("ok" or "failed"), `reason` (why it failed, else None), `measures`
    (name -> value; what could be computed is kept even for a failed point), `ran` (pieces run),
    `wall_s` and `compile_s`. Divergence, an unsuccessful flow and non-finite values mark a point
    failed; an exception inside a solve is caught and recorded the same way.
    """
    from ._experiment import run_flow, run_gd, run_sgd, setup
    from ._timing import timed_call

    system = get_system(config.system)
    table = measures_of(system)
    unknown = [m for m in measures if m not in table]
    if unknown:
        raise SweepSpecError(f"unknown measure(s) {unknown}; known: {sorted(table)}")
    need = needed_pieces(system, measures)
    t0 = time.perf_counter()
    compile_s = 0.0

    def timed(fn, *args, **kwargs):
        nonlocal compile_s
        out, _, c = timed_call(fn, *args, **kwargs)
        compile_s += c
        return out

    record: dict[str, Any] = {"ran": sorted(need, key=PIECES.index), "measures": {}}
    try:
        s = timed(setup, config)
        flow = timed(run_flow, s)
        gd = timed(run_gd, s) if "gd" in need else None
        sg = timed(run_sgd, s) if "sgd" in need else None
        run = RunRecord(config, flow, gd, sg)
        reason = _failure(run)
        for name in measures:
            try:
                record["measures"][name] = value(table[name].fn(run))
            except Exception as e:
                record["measures"][name] = None
                reason = reason or f"measure {name}: {type(e).__name__}: {e}"
    except Exception as e:
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    record.update(
        status="failed" if reason else "ok", reason=reason, wall_s=time.perf_counter() - t0, compile_s=compile_s
    )
    return record


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
    import signal

    if xla_flags is not None:
        os.environ["XLA_FLAGS"] = xla_flags
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent handles it
    _exit_with_parent()
    import jax

    for k, v in jax_options.items():
        jax.config.update(k, v)


def _exit_with_parent(poll_s: float = 0.5) -> None:
    """End this worker when the process that started it dies (even by SIGKILL, which gives the pool
    no chance to stop its workers): a daemon thread watches the parent's pid."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="flowsim-exit-with-parent", daemon=True).start()


def _jax_options() -> dict[str, Any]:
    import jax

    return {
        "jax_enable_x64": True,
        "jax_compilation_cache_dir": jax.config.values["jax_compilation_cache_dir"],
        "jax_persistent_cache_min_compile_time_secs": jax.config.values["jax_persistent_cache_min_compile_time_secs"],
    }


_WORKER_FLAGS = "--xla_force_host_platform_device_count=1"


def _lanes(todo: list[tuple[str, Config]], workers: int) -> list[list[tuple[str, Config]]]:
    """Split the points over `workers` lanes: whole shape groups per lane (largest first, onto the
    least loaded lane) when there are at least 2 groups per lane, else round-robin points."""
    groups: dict[tuple, list[tuple[str, Config]]] = {}
    for item in todo:
        groups.setdefault(shape_group(item[1]), []).append(item)
    lanes: list[list[tuple[str, Config]]] = [[] for _ in range(workers)]
    if len(groups) >= 2 * workers:
        for g in sorted(groups.values(), key=len, reverse=True):
            min(lanes, key=len).extend(g)
    else:
        ordered = [p for g in groups.values() for p in g]
        for i, item in enumerate(ordered):
            lanes[i % workers].append(item)
    return [lane for lane in lanes if lane]


@final
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


def run_sweep(
    spec: SweepSpec,
    out: str | os.PathLike,
    *,
    workers: int | None = None,
    new: bool = False,
    use_dask: bool = False,
    scheduler: str | None = None,
    progress: bool = True,
) -> SweepReport:
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
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        return _run_locked(spec, folder, t0, workers, use_dask, scheduler, progress)


def _run_locked(spec, folder, t0, workers, use_dask, scheduler, progress) -> SweepReport:
    points_dir = folder / "points"
    points_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(folder)
    if not (folder / "spec.json").is_file():
        write_json(folder / "spec.json", {"spec": spec.to_dict(), "versions": _versions()})
    configs = spec.configs()
    axis_names = list(spec.axes)
    todo = [(point_key(c), c) for c in configs]
    done_keys = {p.stem for p in points_dir.glob("*.json")}
    skipped = sum(k in done_keys for k, _ in todo)
    todo = [(k, c) for k, c in todo if k not in done_keys]
    if workers is None:  # one per core, but never more than shape groups: no compile is done twice
        workers = max(1, min(os.cpu_count() or 1, len({shape_group(c) for _, c in todo})))
    counts = {"done": 0, "failed": 0}

    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(configs),
        initial=skipped,
        desc=f"sweep {spec.name or folder.name}",
        unit="pt",
        disable=not progress,
        dynamic_ncols=True,
    )

    def record(key: str, config: Config, rec: dict[str, Any]) -> None:
        rec = {
            "key": key,
            "axes": {a: getattr(config, a) for a in axis_names},
            "seed": config.seed,
            "config": config.to_dict(),
            **rec,
        }
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
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
            continue
        record(key, config, rec)
    if errors:
        raise RuntimeError(f"{len(errors)} point(s) not run (a worker failed; rerun to retry them): {errors[0]}")


WORKER_DEATHS = 2  # a point whose worker process dies this many times is recorded as failed


def _died(deaths: int) -> dict[str, Any]:
    return {
        "ran": [],
        "measures": {},
        "status": "failed",
        "reason": f"the worker process died {deaths} times on this point (killed, or out of memory)",
        "wall_s": 0.0,
        "compile_s": 0.0,
    }


def _run_pool(todo, measures, workers, record, task=_task) -> None:
    """One single-process pool per lane. A worker that dies (killed, out of memory) breaks only its
    lane's pool: the lane gets a fresh pool and its unfinished points are resubmitted; the point
    that was running is retried until it has killed `WORKER_DEATHS` workers, then recorded failed."""
    ctx = multiprocessing.get_context("spawn")

    def new_pool():
        return concurrent.futures.ProcessPoolExecutor(
            1, mp_context=ctx, initializer=_worker_init, initargs=(_WORKER_FLAGS, _jax_options())
        )

    lanes = _lanes(todo, workers)
    pools = [new_pool() for _ in lanes]
    waiting: list[list[tuple[str, Config]]] = [list(lane) for lane in lanes]  # unfinished, in order
    pending: dict[concurrent.futures.Future, tuple[int, str, Config]] = {}
    deaths: dict[str, int] = {}

    def submit(i: int) -> None:
        for key, config in waiting[i]:
            pending[pools[i].submit(task, config, measures)] = (i, key, config)

    try:
        for i in range(len(lanes)):
            submit(i)
        while pending:
            done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            broken = set()
            for fut in done:
                i, key, config = pending.pop(fut)
                try:
                    rec = fut.result()
                except concurrent.futures.process.BrokenProcessPool:
                    broken.add(i)
                    continue
                except Exception as e:  # not the point's own failure (run_point catches those): e.g. pickling
                    rec = {**_died(0), "reason": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
                waiting[i].remove((key, config))
                record(key, config, rec)
            for i in broken:
                for fut in [f for f, v in pending.items() if v[0] == i]:  # the dead pool's other futures
                    pending.pop(fut)
                pools[i].shutdown(wait=False, cancel_futures=True)
                key, config = waiting[i][0]  # one worker per lane: the first unfinished point was running
                deaths[key] = deaths.get(key, 0) + 1
                if deaths[key] >= WORKER_DEATHS:
                    waiting[i].pop(0)
                    record(key, config, _died(deaths[key]))
                pools[i] = new_pool()
                submit(i)
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
        # None disables the dashboard (documented; the stub says str)
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,  # pyright: ignore[reportArgumentType]
            env={"XLA_FLAGS": _WORKER_FLAGS},
        )
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
