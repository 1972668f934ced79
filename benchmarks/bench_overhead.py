"""Flow evaluation overhead: wall time per vector-field evaluation inside a flow solve, divided by
the time of one jitted loss-and-gradient, on the paper's default problem (`Config()`, float64).

Run ``python benchmarks/bench_overhead.py [--repeats R]`` from the repository root. Every variant is
compiled first, then the timed calls are interleaved (one call of each variant per round, R rounds,
fastest kept), so all rows see the same machine load. Each variant runs with diffrax's `Tsit5`
and with flowsim's `UnrolledTsit5` (same method, stages unrolled over the PyTree; "unrolled"):

* **step only**: a jitted `lax.fori_loop` of the solver's `step` at a fixed step (no controller, no
  saving, no diffeqsolve): the cost of the step itself;
* **minimal**: a bare `diffrax.diffeqsolve` (PID rtol 1e-6 / atol 1e-9, saving only the end);
* **no observers**: `flowsim.integrate` of `GradientFlow()` with an observer that records only t;
* **state sum**: the same with an observer that sums the state (nearly free itself, but it needs the
  state interpolated at every save time: the cost of diffrax's dense output and saving);
* **observer**: `flowsim.integrate` with the system's observer at the save times, no event;
* **observer + event**: as `flowsim.run_flow` (observer and the system's Phase-1 event).

Evaluations per solve: new Tsit5 stages per attempted step (6) times `num_steps`, plus one first
stage per piece (FSAL; a piece after an event adds one more). One gradient: a jitted
`lax.fori_loop` of 500 GD steps / 500, timed in the same rounds. Results are printed and written to
``benchmarks/results_overhead.md``. Compare numbers within one run only.
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
from flowsim._tsit5 import UnrolledTsit5

jax.config.update("jax_enable_x64", True)

Call = Callable[[], tuple[Any, int]]
GRADIENTS = "500 gradients"
OBSERVER = "500 observer calls"
STEPS_ONLY = 60  # steps of the "step only" loop (the default flow takes about 55)


def _gradients(problem: flowsim.Problem) -> Call:
    """500 tiny GD steps in a jitted fori_loop: the reference unit (one gradient = its time / 500)."""
    loop = jax.jit(
        lambda y: jax.lax.fori_loop(
            0, 500, lambda i, y: jax.tree.map(lambda a, b: a - 1e-9 * b, y, jax.grad(problem.loss)(y)), y
        )
    )
    return lambda: (loop(problem.params0), 500)


def _observer_calls(s: flowsim.Setup) -> Call:
    """500 calls of the system's observer in a jitted fori_loop (the parameters move by a tiny amount
    that depends on the last call's outputs, so nothing is hoisted out of the loop): the observer's own
    cost per call, in the same unit as one gradient."""
    p = s.problem

    def body(i: jax.Array, y: Any) -> Any:
        out = s.observer(jnp.asarray(i, jnp.float64), y, p)
        total = sum(jnp.sum(jnp.asarray(x, jnp.float64)) for x in jax.tree.leaves(out))
        return jax.tree.map(lambda a: a + 1e-300 * total, y)

    loop = jax.jit(lambda y: jax.lax.fori_loop(0, 500, body, y))
    return lambda: (loop(p.params0), 500)


def _term() -> diffrax.ODETerm:
    """The gradient flow's vector field as a diffrax term."""
    return diffrax.ODETerm(lambda t, y, args: GradientFlow().vector_field(jnp.asarray(t), y, args))


def _step_only(problem: flowsim.Problem, solver: diffrax.AbstractSolver) -> Call:
    """`STEPS_ONLY` solver steps of size 1e-3 from params0 in a jitted fori_loop, nothing else."""
    term = _term()

    @jax.jit
    def loop(y0: Any) -> Any:
        state = solver.init(term, 0.0, 1e-3, y0, problem)

        def body(i: jax.Array, carry: tuple[Any, Any]) -> tuple[Any, Any]:
            y, state = carry
            t0 = i * 1e-3
            y, _, _, state, _ = solver.step(term, t0, t0 + 1e-3, y, problem, state, False)
            return y, state

        return jax.lax.fori_loop(0, STEPS_ONLY, body, (y0, state))[0]

    return lambda: (loop(problem.params0), 6 * STEPS_ONLY + 1)


def _minimal(problem: flowsim.Problem, ts: jax.Array, solver: diffrax.AbstractSolver) -> Call:
    """A bare diffeqsolve of the gradient flow over [ts[0], ts[-1]], saving only the end."""
    term = _term()

    @jax.jit
    def minimal(y0: Any) -> tuple[Any, jax.Array]:
        sol = diffrax.diffeqsolve(
            term, solver, ts[0], ts[-1], None, y0, args=problem, saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-9), max_steps=100_000, throw=False,
        )  # fmt: skip
        return sol.ys, sol.stats["num_steps"]

    def call() -> tuple[Any, int]:
        ys, n = minimal(problem.params0)
        return ys, 6 * int(n) + 1

    return call


def _flow(problem: flowsim.Problem, ts: jax.Array, solver: diffrax.AbstractSolver, observer: Any, event: Any) -> Call:
    """`flowsim.integrate` of the gradient flow with `observer` and `event`."""

    def call() -> tuple[Any, int]:
        sol = integrate(GradientFlow(), problem, ts, observer, event=event, solver=solver, rtol=1e-6, atol=1e-9)
        pieces = 1 + sum(h.fired for h in sol.events.values())
        return sol.obs, 6 * sol.num_steps + pieces

    return call


def variants(s: flowsim.Setup, ts: jax.Array) -> dict[str, Call]:
    """name -> a call returning (output, vector-field evaluations); each variant with both solvers."""
    p = s.problem
    t_only = lambda t, params, problem: t
    state_sum = lambda t, params, problem: sum(jnp.sum(x) for x in jax.tree.leaves(params))
    out: dict[str, Call] = {}
    for suffix, solver in (("", diffrax.Tsit5()), (", unrolled", UnrolledTsit5())):
        out["step only" + suffix] = _step_only(p, solver)
        out["minimal diffeqsolve" + suffix] = _minimal(p, ts, solver)
        out["integrate, no observers" + suffix] = _flow(p, ts, solver, t_only, None)
        out["integrate, state sum" + suffix] = _flow(p, ts, solver, state_sum, None)
        out["integrate, observer" + suffix] = _flow(p, ts, solver, s.observer, None)
        out["integrate, observer + event" + suffix] = _flow(p, ts, solver, s.observer, s.events or None)
    return out


def time_interleaved(calls: dict[str, Call], repeats: int) -> dict[str, tuple[int, float, float]]:
    """name -> (evaluations, first call s, fastest of `repeats` later calls s); the later calls run in
    rounds of one call per variant."""
    first: dict[str, float] = {}
    evals: dict[str, int] = {}
    for name, call in calls.items():
        t = time.perf_counter()
        out, evals[name] = call()
        jax.block_until_ready(out)
        first[name] = time.perf_counter() - t
    best = dict.fromkeys(calls, np.inf)
    for _ in range(repeats):
        for name, call in calls.items():
            t = time.perf_counter()
            jax.block_until_ready(call()[0])
            best[name] = min(best[name], time.perf_counter() - t)
    return {name: (evals[name], first[name], best[name]) for name in calls}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds after the compiling call (fastest kept)")
    args = ap.parse_args()
    c = flowsim.Config("cooccurrence")
    s = setup(c)
    ts = jnp.asarray(save_steps(c.steps, c.n_save_log, c.n_save_lin) * c.lr)
    timed = time_interleaved(
        {GRADIENTS: _gradients(s.problem), OBSERVER: _observer_calls(s), **variants(s, ts)}, args.repeats
    )
    tg = timed.pop(GRADIENTS)[2] / 500
    obs = timed.pop(OBSERVER)[2] / 500 / tg  # one observer call, in gradients
    evals = timed["integrate, observer, unrolled"][0]
    bare_evals, _, bare = timed["integrate, no observers, unrolled"]
    floor = bare / bare_evals / tg + ts.size * obs / evals
    names = [n for n in timed if not n.endswith(", unrolled")]  # diffrax's row, then the unrolled one
    names = [m for n in names for m in (n, n + ", unrolled")]
    load = open("/proc/loadavg").read().split()[0]
    lines = [
        "# Flow evaluation overhead",
        "",
        "Command: `python benchmarks/bench_overhead.py`  ",
        f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}; {platform.machine()}, jax {jax.__version__}, "
        f"diffrax {diffrax.__version__}; load {load}; one gradient {tg * 1e3:.3f} ms  ",
        f"Problem: `Config()` (cooccurrence), T = {float(ts[-1]):g}, {ts.size} save times, float64, Tsit5 rtol 1e-6; "
        f"'unrolled': `flowsim._tsit5.UnrolledTsit5`; 'step only': {STEPS_ONLY} fixed steps, no diffeqsolve",
        "",
        "| variant | evaluations | run s (fastest) | compile s (1st - fastest) | per evaluation / one gradient |",
        "|---|---:|---:|---:|---:|",
        *(f"| {n} | {e} | {b:.4f} | {f - b:.1f} | {b / e / tg:.2f} |" for n in names for e, f, b in [timed[n]]),
        "",
        f"The observer alone (500 calls in a jitted loop) costs {obs:.2f} gradients per call. Called at the "
        f"{ts.size} save times of a solve of {evals} evaluations, it adds {ts.size * obs / evals:.2f} per "
        f"evaluation to the unrolled solve without observers: a floor of {floor:.2f} for 'integrate, "
        "observer, unrolled' with no interpolation or saving cost at all (the event comes on top).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (pathlib.Path(__file__).parent / "results_overhead.md").write_text(text)


if __name__ == "__main__":
    main()
