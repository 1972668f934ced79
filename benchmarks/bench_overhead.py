"""Flow evaluation overhead: wall time per vector-field evaluation inside a flow solve, divided by
the time of one jitted loss-and-gradient, on the paper's default problem (`Config()`, float64).

Run ``python benchmarks/bench_overhead.py [--repeats R]`` from the repository root. Variants, timed
side by side in one process (calls interleaved, fastest of R after a compiling call):

* **minimal**: a bare `diffrax.diffeqsolve` (Tsit5, PID rtol 1e-6 / atol 1e-9, saving only the end);
* **no observers**: `flowsim.integrate` of `GradientFlow()` with an observer that records only t;
* **observer**: `flowsim.integrate` with the system's observer at the save times, no event;
* **observer + event**: as `flowsim.run_flow` (observer and the system's Phase-1 event).

Evaluations per solve: new Tsit5 stages per attempted step (6) times `num_steps`, plus one first
stage per piece (FSAL). One gradient: a jitted `lax.fori_loop` of 500 GD steps / 500. Results are
printed and written to ``benchmarks/results_overhead.md``. Compare numbers within one run only.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import platform
import time
from collections.abc import Callable
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import flowsim
from flowsim import GradientFlow, integrate, save_steps, setup

jax.config.update("jax_enable_x64", True)


def _best(fn: Callable[[], Any], repeats: int) -> tuple[Any, float, float]:
    """(output, first call s, fastest of `repeats` later calls s)."""
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return out, first, best


def grad_time(problem: flowsim.Problem, repeats: int) -> float:
    """Seconds per gradient: a jitted fori_loop of 500 tiny GD steps, / 500."""
    loop = jax.jit(
        lambda y: jax.lax.fori_loop(
            0, 500, lambda i, y: jax.tree.map(lambda a, b: a - 1e-9 * b, y, jax.grad(problem.loss)(y)), y
        )
    )
    return _best(lambda: loop(problem.params0), repeats)[2] / 500


def variants(s: flowsim.Setup, ts: jax.Array) -> dict[str, Callable[[], tuple[Any, int]]]:
    """name -> a call returning (output, vector-field evaluations)."""
    p = s.problem
    term = diffrax.ODETerm(GradientFlow().vector_field)

    @jax.jit
    def minimal(y0: Any) -> tuple[Any, jax.Array]:
        sol = diffrax.diffeqsolve(
            term, diffrax.Tsit5(), ts[0], ts[-1], None, y0, args=p, saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-9), max_steps=100_000, throw=False,
        )  # fmt: skip
        return sol.ys, sol.stats["num_steps"]

    def flow(observer: Any, event: Any) -> Callable[[], tuple[Any, int]]:
        def call() -> tuple[Any, int]:
            sol = integrate(GradientFlow(), p, ts, observer, event=event, rtol=1e-6, atol=1e-9)
            return sol.obs, 6 * sol.num_steps + 1 + len(sol.events) * 0

        return call

    def mini() -> tuple[Any, int]:
        ys, n = minimal(p.params0)
        return ys, 6 * int(n) + 1

    return {
        "minimal diffeqsolve": mini,
        "integrate, no observers": flow(lambda t, params, problem: t, None),
        "integrate, observer": flow(s.observer, None),
        "integrate, observer + event": flow(s.observer, s.events or None),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed calls after the compiling one (fastest kept)")
    args = ap.parse_args()
    c = flowsim.Config("cooccurrence")
    s = setup(c)
    ts = jnp.asarray(save_steps(c.steps, c.n_save_log, c.n_save_lin) * c.lr)
    tg = grad_time(s.problem, args.repeats)
    rows = []
    for name, call in variants(s, ts).items():
        (_, evals), first, best = _best(call, args.repeats)
        rows.append((name, evals, best, first - best, best / evals / tg))
    load = open("/proc/loadavg").read().split()[0]
    lines = [
        "# Flow evaluation overhead",
        "",
        "Command: `python benchmarks/bench_overhead.py`  ",
        f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}; {platform.machine()}, jax {jax.__version__}, "
        f"diffrax {diffrax.__version__}; load {load}; one gradient {tg * 1e3:.3f} ms  ",
        f"Problem: `Config()` (cooccurrence), T = {float(ts[-1]):g}, {ts.size} save times, float64, Tsit5 rtol 1e-6",
        "",
        "| variant | evaluations | run s (fastest) | compile s (1st - fastest) | per evaluation / one gradient |",
        "|---|---:|---:|---:|---:|",
        *(f"| {n} | {e} | {b:.4f} | {c:.1f} | {r:.2f} |" for n, e, b, c, r in rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (pathlib.Path(__file__).parent / "results_overhead.md").write_text(text)


if __name__ == "__main__":
    main()
