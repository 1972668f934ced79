"""Cost and accuracy of the gradient flow against full-batch GD (and SGD) on the paper's experiment.

Run ``python benchmarks/bench_flow.py [--quick] [--check-counts]`` from the repository root. The
problem is `Config()` (n=60, L=5, d=64, m=128, m1=256, float64, T = lr * steps = 300); ``--quick``
uses steps=3000 (T=30). The final table is printed and written to ``benchmarks/results_flow.md``.

What is measured, and how:

* **Reference**: the flow solved by Dopri8 at rtol 1e-12 / atol 1e-14, no event, on the GD save grid
  ts = save_steps(steps, n_save_log, n_save_lin) * lr (`run_flow(..., event=None)`, which is
  `integrate(GradientFlow(), problem, ts, observer, ...)` on that grid).
* **Errors** of a run against the reference, on the same save grid: loss = max over save times of
  |loss - loss_ref| / |loss_ref|; observables = max over G1, G2, G3, score_12, score_31 of
  max_t |x - x_ref| / max_t |x_ref|.
* **Gradient evaluations**. GD: one per step. Flow: from diffrax's stats, since a Python counter
  cannot run under jit: `FlowSolution.num_steps` (accepted + rejected steps, summed over the pieces
  before and after the Phase-1 event) times the new vector-field evaluations per step (stages,
  minus one for FSAL tableaus, read from the diffrax tableau: Tsit5 6, Dopri8 13; Euler 1), plus,
  per piece, the first-stage evaluation of an FSAL solver (1). The PID controller's initial step
  selection costs nothing here: in diffrax 0.7.2 `diffeqsolve` wraps the term (`WrapTerm`), and
  `_select_initial_step` then returns a fixed 0.01 without evaluating the vector field. The formula
  is exact up to one extra evaluation per rejected *first* step of a piece (diffrax re-evaluates the
  first stage while its `first_step` flag is set), which the stats do not expose; it is therefore a
  lower bound, off by 0-3 evaluations here. ``--check-counts`` compares it with an exact count taken
  by a `jax.debug.callback` inside the vector field (an extra compile per solver, not timed).
  The event condition (min margin) and the observers at the save times are forward passes only and
  are not counted as gradient evaluations; their cost is in the wall time.
* **SGD** (batch 12, 8 seeds, vmapped) is timed over 3000 steps (save grid save_steps(3000, ...))
  in both modes, since one call at 30000 steps takes 50-100 s here; its cost per step does not
  depend on the horizon, nor its compile time on the number of steps. It has no error column.
* **Wall time** ("run"): every call goes through one helper, `measure`, which calls the function
  once (trace + compile + run), then `repeats` more times, and reports the fastest later call. The
  library functions return numpy observables (a device sync); the helper also blocks on every JAX
  array in the result. "compile" is first call minus run; "compile (jax)" is the compile time that
  `jax.monitoring` reported during the first call (`flowsim._timing.timed_call`).
* **Solver overhead**: flow wall time per gradient evaluation divided by the time of one gradient
  evaluation, measured as a jitted `lax.fori_loop` of K GD steps divided by K (and, for comparison,
  a plain `jax.jit(problem.loss_and_grad)` call timed over many calls, which includes dispatch).
  The ratio is also given with the observer recordings subtracted (one observer call per save time,
  timed as a jitted `lax.map` over the save grid), since GD records the same observer.
  The fixed-step Euler flow with dt = lr has an exact evaluation count and performs the same
  arithmetic as GD, so its wall time against GD's is the diffrax loop overhead per step.

Other processes may share the machine: compare numbers within one run (ratios), not across runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import pathlib
import platform
import shlex
import sys
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from flowsim import (
    AbstractFlow,
    Config,
    DiscreteSolution,
    FlowSolution,
    GradientFlow,
    Problem,
    Setup,
    gradient_descent,
    integrate,
    min_margin,
    run_flow,
    save_steps,
    setup,
    sgd,
)
from flowsim._integrate import SOLVERS
from flowsim._timing import timed_call

OBSERVABLES = ("G1", "G2", "G3", "score_12", "score_31")
RESULTS_PATH = pathlib.Path(__file__).with_name("results_flow.md")
SGD_STEPS = 3000  # SGD horizon in both modes (see the module docstring)


# ----------------------------------------------------------------------------- timing


@dataclasses.dataclass(frozen=True)
class Timing:
    """`result` of the last call; `first_s` first call (compile + run); `run_s` fastest later call;
    `compile_jax_s` compile seconds reported by jax.monitoring during the first call."""

    result: Any
    first_s: float
    run_s: float
    compile_jax_s: float

    @property
    def compile_s(self) -> float:
        return self.first_s - self.run_s


def _block(out: Any) -> Any:
    """Wait for every JAX array in `out` (dataclass results are walked through their fields)."""
    return jax.block_until_ready(vars(out) if dataclasses.is_dataclass(out) else out)


def measure(fn: Callable[..., Any], *args: Any, repeats: int = 1, **kwargs: Any) -> Timing:
    """Call `fn(*args, **kwargs)` once to compile, then `repeats` times; keep the fastest later call."""

    def call() -> Any:
        out = fn(*args, **kwargs)
        _block(out)
        return out

    out, first, compile_jax = timed_call(call)
    best = np.inf
    for _ in range(repeats):
        out, seconds, _ = timed_call(call)
        best = min(best, seconds)
    return Timing(out, first, best, compile_jax)


# ----------------------------------------------------------------------------- counting


def evals_per_step(solver: str) -> tuple[int, bool]:
    """(new vector-field evaluations per attempted step, FSAL?) for a solver name in `SOLVERS`."""
    s = SOLVERS[solver]()
    tableau = getattr(s, "tableau", None)
    if tableau is None:  # Euler: one evaluation per step
        return 1, False
    stages = len(tableau.c) + 1
    return stages - int(tableau.fsal), bool(tableau.fsal)


def flow_grad_evals(sol: FlowSolution, solver: str) -> int:
    """Gradient evaluations of a flow solve from diffrax's step count (a lower bound, exact up to
    rejected first steps; see the module docstring)."""
    per_step, fsal = evals_per_step(solver)
    pieces = 1 if np.isnan(sol.event_time) else 2
    return per_step * sol.num_steps + int(fsal) * pieces


_COUNT = [0]


def _bump() -> None:
    _COUNT[0] += 1


class CountingFlow(AbstractFlow):
    """Gradient flow whose every vector-field evaluation increments a host counter (not for timing)."""

    flow: GradientFlow = GradientFlow()

    def vector_field(self, t: jax.Array, params: Any, problem: Problem) -> Any:
        jax.debug.callback(_bump)
        return self.flow.vector_field(t, params, problem)


def counted_run(s: Setup, ts: np.ndarray, **kw: Any) -> tuple[FlowSolution, int]:
    """`integrate` with `CountingFlow` on `ts`; returns the solution and the exact number of evaluations."""
    _COUNT[0] = 0
    sol = integrate(CountingFlow(), s.problem, ts, s.observer, **kw)
    jax.effects_barrier()
    return sol, _COUNT[0]


# ----------------------------------------------------------------------------- accuracy


def errors(obs: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> tuple[float, float]:
    """(max relative loss error over save times, max normalized error over `OBSERVABLES`)."""
    loss = float(np.max(np.abs(obs["loss"] - ref["loss"]) / np.abs(ref["loss"])))
    observable = max(float(np.max(np.abs(obs[k] - ref[k])) / np.max(np.abs(ref[k]))) for k in OBSERVABLES)
    return loss, observable


# ----------------------------------------------------------------------------- gradient cost


def gd_loop(problem: Problem, params: Any, lr: jax.Array, num: int) -> Any:
    """`num` plain GD steps in a `lax.fori_loop` (each step depends on the last, so none is hoisted)."""

    def body(_: int, p: Any) -> Any:
        return jax.tree.map(lambda x, g: x - lr * g, p, problem.loss_and_grad(p)[1])

    return jax.lax.fori_loop(0, num, body, params)


_gd_loop = eqx.filter_jit(gd_loop)


def repeated_calls(fn: Callable[[Any], Any], params: Any, num: int) -> Any:
    """`num` separately dispatched calls `fn(params)`, each waited for."""
    out = None
    for _ in range(num):
        out = jax.block_until_ready(fn(params))
    return out


@eqx.filter_jit
def observe_all(observer: Callable[..., Any], ts: jax.Array, params: Any, problem: Problem) -> Any:
    """The observer at every save time, one after the other (what a solve records along the way).

    The parameters are rescaled by (1 + 1e-12 t) at each time so that XLA cannot hoist the
    (time-independent) observer out of the loop and evaluate it once."""

    def at(t: jax.Array) -> Any:
        return observer(t, jax.tree.map(lambda x: x * (1 + 1e-12 * t), params), problem)

    return jax.lax.map(at, ts)


# ----------------------------------------------------------------------------- benchmark


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the results table; `errs` = (loss rel err, observable err) or None."""

    method: str
    grad_evals: str
    timing: Timing
    errs: tuple[float, float] | None
    compile_note: str = ""


def fmt_err(x: float | None) -> str:
    return "—" if x is None else f"{x:.2e}"


def table(rows: list[Row]) -> str:
    head = (
        "| method | grad evals | run wall s | compile s (1st − 2nd call) | compile s (jax) "
        "| loss rel err | observable err |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        comp = r.compile_note or f"{r.timing.compile_s:.1f}"
        comp_jax = r.compile_note or f"{r.timing.compile_jax_s:.1f}"
        le, oe = r.errs if r.errs is not None else (None, None)
        lines.append(
            f"| {r.method} | {r.grad_evals} | {r.timing.run_s:.3f} | {comp} | {comp_jax} "
            f"| {fmt_err(le)} | {fmt_err(oe)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="steps=3000 (T=30) instead of 30000 (T=300)")
    parser.add_argument(
        "--check-counts",
        action="store_true",
        help="verify the gradient-evaluation formula with an exact callback count",
    )
    args = parser.parse_args(argv)

    config = Config(steps=3000) if args.quick else Config()
    load_start = os.getloadavg()
    s = setup(config)
    c = s.config
    steps = save_steps(c.steps, c.n_save_log, c.n_save_lin)
    lr = c.lr
    print(
        f"T = {c.t_final:g} ({c.steps} GD steps), {len(steps)} save times, {c.precision}, "
        f"jax {jax.__version__}, diffrax {diffrax.__version__}, {jax.devices()[0].platform}, "
        f"{os.cpu_count()} cores, load {load_start[0]:.2f}",
        flush=True,
    )

    def flow(label: str, repeats: int, **kw: Any) -> Timing:
        t = measure(run_flow, s, repeats=repeats, **kw)
        t.result.check()
        print(f"  {label}: {t.result.num_steps} steps, run {t.run_s:.3f} s, first call {t.first_s:.1f} s", flush=True)
        return t

    # 1. Reference, adaptive flow (with and without event), Euler flow = GD in diffrax, GD, SGD.
    print("reference Dopri8 1e-12 ...", flush=True)
    ref = flow("reference", 1, solver="dopri8", rtol=1e-12, atol=1e-14, event=None)
    ref_obs = ref.result.obs
    print("flows ...", flush=True)
    tsit = flow("tsit5 1e-6 + event", 10)
    tsit_noev = flow("tsit5 1e-6, no event", 10, event=None)
    sweep = {rtol: flow(f"tsit5 {rtol:g} + event", 10, rtol=rtol, atol=rtol * 1e-3) for rtol in (1e-4, 1e-8)}
    euler = flow("euler dt=lr", 1, solver="euler", dt0=lr, event=None)
    print("GD ...", flush=True)
    gd = measure(gradient_descent, s.problem, lr, steps, s.observer)
    print(f"  GD: run {gd.run_s:.3f} s, first call {gd.first_s:.1f} s", flush=True)
    sgd_steps = save_steps(min(c.steps, SGD_STEPS), c.n_save_log, c.n_save_lin)
    print(f"SGD ({sgd_steps[-1]} steps) ...", flush=True)
    sg = measure(
        sgd,
        s.problem,
        lr,
        sgd_steps,
        s.observer,
        batch_size=c.batch_size,
        seeds=c.sgd_seeds,
        key=jax.random.PRNGKey(c.seed + 1),
    )
    print(f"  SGD: run {sg.run_s:.3f} s, first call {sg.first_s:.1f} s", flush=True)
    gd_sol: DiscreteSolution = gd.result
    assert np.allclose(gd_sol.ts, ref.result.ts, rtol=1e-12, atol=0)

    # 2. Cost of one gradient evaluation and of the observer recordings.
    k_loop, k_calls = 2000, 500
    print("gradient cost ...", flush=True)
    loop = measure(_gd_loop, s.problem, s.problem.params0, jnp.asarray(lr), k_loop, repeats=7)
    plain = jax.jit(lambda p: s.problem.loss_and_grad(p))
    calls = measure(repeated_calls, plain, s.problem.params0, k_calls, repeats=3)
    obs_all = measure(observe_all, s.observer, jnp.asarray(ref.result.ts), s.problem.params0, s.problem, repeats=5)
    t_grad, t_call, t_obs = loop.run_s / k_loop, calls.run_s / k_calls, obs_all.run_s

    n_tsit, n_noev, n_ref, n_euler = (
        flow_grad_evals(x.result, n)
        for x, n in ((tsit, "tsit5"), (tsit_noev, "tsit5"), (ref, "dopri8"), (euler, "euler"))
    )
    n_gd = int(steps[-1])
    err_tsit, err_gd = errors(tsit.result.obs, ref_obs), errors(gd_sol.obs, ref_obs)
    rows = [
        Row("reference Dopri8 rtol 1e-12, no event", str(n_ref), ref, None),
        Row("flow Tsit5 rtol 1e-6 + Phase-1 event", str(n_tsit), tsit, err_tsit),
        Row("flow Tsit5 rtol 1e-6, no event", str(n_noev), tsit_noev, errors(tsit_noev.result.obs, ref_obs)),
        *(
            Row(
                f"flow Tsit5 rtol {r:g} + event",
                str(flow_grad_evals(t.result, "tsit5")),
                t,
                errors(t.result.obs, ref_obs),
                "shared with row 2",
            )
            for r, t in sweep.items()
        ),
        Row("flow Euler dt = lr (GD inside diffrax), no event", str(n_euler), euler, errors(euler.result.obs, ref_obs)),
        Row(f"GD lr {lr:g}", str(n_gd), gd, err_gd),
        Row(
            f"SGD batch {c.batch_size}, {c.sgd_seeds} seeds, first {sgd_steps[-1]} steps",
            f"{sgd_steps[-1]} × {c.sgd_seeds} (batch {c.batch_size}/{c.n})",
            sg,
            None,
        ),
    ]

    euler_vs_gd = errors(euler.result.obs, gd_sol.obs)
    better = err_tsit[0] <= err_gd[0] and err_tsit[1] <= err_gd[1]
    ratio_lines = [
        f"- GD grad evals / flow grad evals: {n_gd / n_tsit:.1f}x (with event), {n_gd / n_noev:.1f}x (no event)",
        f"- GD wall / flow wall: {gd.run_s / tsit.run_s:.1f}x (with event), "
        f"{gd.run_s / tsit_noev.run_s:.1f}x (no event)",
        f"- accuracy, flow (with event) vs GD: loss err {err_tsit[0]:.1e} vs {err_gd[0]:.1e}, observable err "
        f"{err_tsit[1]:.1e} vs {err_gd[1]:.1e}: the flow is {'equally or more' if better else 'LESS'} accurate",
        f"- cost of the Phase-1 event: wall {tsit.run_s / tsit_noev.run_s:.2f}x the flow without it "
        f"({n_tsit - n_noev:+d} grad evals; event at t = {tsit.result.event_time:.4f}); compile "
        f"{tsit.compile_s:.1f} s vs {tsit_noev.compile_s:.1f} s",
        f"- Euler flow (dt = lr) vs GD, the same arithmetic: max difference loss {euler_vs_gd[0]:.1e}, "
        f"observables {euler_vs_gd[1]:.1e}; wall Euler / GD = {euler.run_s / gd.run_s:.2f}",
    ]
    overhead = [
        "| run | wall s | grad evals | per grad eval | / one grad | / one grad, observers excluded | / GD per step |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, wall, n in (
        ("flow Tsit5 1e-6 + event", tsit.run_s, n_tsit),
        ("flow Tsit5 1e-6, no event", tsit_noev.run_s, n_noev),
        ("flow Euler dt = lr, no event", euler.run_s, n_euler),
        (f"GD lr {lr:g} (flowsim.discrete)", gd.run_s, n_gd),
    ):
        overhead.append(
            f"| {name} | {wall:.3f} | {n} | {wall / n * 1e3:.3f} ms | {wall / n / t_grad:.2f} "
            f"| {(wall - t_obs) / n / t_grad:.2f} | {wall / n / (gd.run_s / n_gd):.2f} |"
        )
    overhead_text = "\n".join(overhead) + (
        f"\n\nOne gradient evaluation: {t_grad * 1e3:.3f} ms (jitted fori_loop of {k_loop} GD steps / "
        f"{k_loop}); {t_call * 1e3:.3f} ms as a plain `jax.jit(problem.loss_and_grad)` call ({k_calls} "
        f"calls, dispatch included). The observer at all {len(steps)} save times: {t_obs * 1e3:.1f} ms "
        f"({t_obs / len(steps) * 1e3:.3f} ms each; the event run records the ones before the event twice). "
        f"GD per step is the same observer-recording loop, timed over {n_gd} steps in "
        f"this run. Target for the flow: <= 1.5."
    )

    count_text = ""
    if args.check_counts:
        print("checking gradient-evaluation counts ...", flush=True)
        ts = steps * lr
        checks = []
        for label, solver, kw in (
            ("Tsit5 rtol 1e-6 + event", "tsit5", dict(rtol=c.rtol, atol=c.atol, event=min_margin)),
            ("Dopri8 rtol 1e-12, no event", "dopri8", dict(rtol=1e-12, atol=1e-14)),
            ("Euler dt = lr, no event", "euler", dict(dt0=lr)),
        ):
            sol, exact = counted_run(s, ts, solver=solver, **kw)
            checks.append(f"- {label}: formula {flow_grad_evals(sol, solver)}, exact callback count {exact}")
        count_text = "\nGradient-evaluation count check (`--check-counts`):\n\n" + "\n".join(checks) + "\n"

    load_end = os.getloadavg()
    cmd = " ".join(["python", *map(shlex.quote, [os.path.relpath(sys.argv[0]), *sys.argv[1:]])])
    report = (
        f"# Flow vs GD benchmark\n\n"
        f"Command: `{cmd}`  \nDate: {datetime.datetime.now().isoformat(timespec='seconds')}  \n"
        f"Problem: `Config({'steps=3000' if args.quick else ''})`, T = {c.t_final:g}, {len(steps)} save "
        f"times, {c.precision}  \nMachine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
        f"({jax.devices()[0].platform}), diffrax {diffrax.__version__}; load average {load_start[0]:.2f} at "
        f"start, {load_end[0]:.2f} at end (other processes share the machine: compare within this table)\n\n"
        f"{table(rows)}\n\nRun wall: fastest of the calls after the first (10 for the Tsit5 rows, 1 otherwise). "
        f"Errors: "
        f"against the reference on the GD save grid. Grad evals of the flows: diffrax num_steps x new "
        f"evaluations per step + 1 per piece (see the docstring of benchmarks/bench_flow.py).\n\n"
        f"Ratios:\n\n" + "\n".join(ratio_lines) + "\n\nSolver overhead per gradient evaluation:\n\n"
        f"{overhead_text}\n{count_text}"
    )
    print("\n" + report)
    RESULTS_PATH.write_text(report)
    print(f"written to {RESULTS_PATH}")


if __name__ == "__main__":
    main()
