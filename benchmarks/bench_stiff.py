"""Stiff gradient flow: Runge–Kutta–Chebyshev (`flowsim._rkc.RKC`) against Tsit5, gradient evaluations
to the same accuracy.

Run ``python benchmarks/bench_stiff.py [--quick] [--L 80]`` from the repository root (a few minutes on
2 cores; ``--quick``: fewer tolerances, one timing repeat, no second reference). The table is printed
and written to ``benchmarks/results_stiff.md`` (``--out`` to change).

Problem: the co-occurrence system at sequence length L = 80, otherwise `Config()` (n = 60, d = 64,
m = 128, m1 = 256, 57 344 parameters, float64), gradient flow dθ/dt = -∇L(θ) on [0, T = 300] from the
setup's initial parameters, driven through `diffrax.diffeqsolve` directly (vector field
`GradientFlow().vector_field`, args the problem, `PIDController(rtol, atol = 1e-3 rtol)`, `dt0=None`,
no event, saving the final state only). Its Hessian's top eigenvalue falls from ~3.5e3 (t ≈ 0.01) to
~0.4 (t = 300) roughly as the loss does, and Tsit5 (rtol 1e-6) runs at h·λmax ≈ 3.2–3.9, its
stability limit, on the whole interval (measured while preparing this benchmark: power iteration at
25 log-spaced times along the Tsit5 solution, against its step sizes there).

Solvers: Tsit5; `RKC()` ("rkc": power iteration by difference quotients, one vector-field call each);
`RKC(jvp="autodiff")` ("rkc-jvp": by `jax.jvp` of the vector field, a forward-over-reverse
Hessian-vector product).

What is measured, and how:

* **Reference**: Tsit5 at rtol 1e-10 / atol 1e-13 (without ``--quick`` also checked against Dopri8 at
  rtol 1e-11; their difference is reported).
* **Errors** of a run: ‖θ(T) - θ_ref(T)‖ / ‖θ_ref(T)‖ over all parameters, and |L(θ(T)) - L_ref| / L_ref.
* **Gradient evaluations**: exact, counted on the host by a `jax.debug.callback` inside the vector
  field, in a compiled solve of its own (rtol is a traced argument: one compile per solver). Every
  call counts once: Tsit5's stages, RKC's stages and the vector field at each new point, and each
  Jacobian-vector product of RKC's power iteration (a difference quotient calls the vector field once;
  `jax.jvp` traces it once and the callback fires once per product). Rejected steps are included.
  The JVP share is given separately (from RKC's solver state, accepted steps only), and a "weighted"
  count charges each `jax.jvp` product its measured cost in gradients (jitted, at θ(0)).
* **Wall time**: a separate compiled solve without the callback per solver; every run is called once
  per round, rounds alternating the solvers (side by side), and the fastest of ``--repeats`` rounds is
  kept (compilation excluded: one warm-up call per solver first).
* **Equal accuracy**: for each target on the parameter error (and, separately, on the loss error), the
  cheapest run of Tsit5 and of `RKC()` (fewest weighted evaluations) whose error is at most the target,
  and the ratios.

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
import time
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from flowsim import Config, GradientFlow, Problem, setup
from flowsim._rkc import RKC, RKCState

RESULTS_PATH = pathlib.Path(__file__).parent / "results_stiff.md"
TARGETS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
_COUNT = [0]


def _bump() -> None:
    _COUNT[0] += 1


def make_solve(solver: diffrax.AbstractSolver, t_final: float, counted: bool) -> Callable[..., Any]:
    """A compiled `(rtol, y0, problem) -> (θ(T), accepted, rejected, solver state)`; with `counted`, the
    vector field bumps the host counter `_COUNT` on every call."""
    flow = GradientFlow()

    def vector_field(t: Any, y: Any, problem: Problem) -> Any:
        if counted:
            jax.debug.callback(_bump)
        return flow.vector_field(t, y, problem)

    @eqx.filter_jit
    def solve(rtol: jax.Array, y0: Any, problem: Problem) -> Any:
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vector_field),
            solver,
            0.0,
            t_final,
            None,
            y0,
            args=problem,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=1e-3 * rtol),
            saveat=diffrax.SaveAt(t1=True, solver_state=True),
            max_steps=100_000,
        )
        assert sol.ys is not None
        y1 = jax.tree.map(lambda x: x[-1], sol.ys)
        return y1, sol.stats["num_accepted_steps"], sol.stats["num_rejected_steps"], sol.solver_state

    return solve


def flat(params: Any) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(params)])


@dataclasses.dataclass
class Run:
    solver: str
    rtol: float
    evals: int
    jvps: int | None
    accepted: int
    rejected: int
    param_err: float
    loss_err: float
    jvp_units: float = 1.0  # gradients per JVP: 1 for difference quotients, the measured cost for jax.jvp
    wall: float = np.inf

    @property
    def weighted(self) -> float:
        return self.evals + (self.jvp_units - 1) * (self.jvps or 0)


def counted_run(solve: Callable[..., Any], name: str, rtol: float, problem: Problem, ref: np.ndarray) -> Run:
    """One counted solve at `rtol`, its errors against `ref` (final parameters, flattened)."""
    _COUNT[0] = 0
    y1, acc, rej, state = solve(jnp.asarray(rtol), problem.params0, problem)
    jax.block_until_ready(y1)
    jax.effects_barrier()
    y = flat(y1)
    loss, loss_ref = float(problem.loss(y1)), _ref_loss(problem, ref)
    return Run(
        solver=name,
        rtol=rtol,
        evals=_COUNT[0],
        jvps=int(state.num_jvps) if isinstance(state, RKCState) else None,
        accepted=int(acc),
        rejected=int(rej),
        param_err=float(np.linalg.norm(y - ref) / np.linalg.norm(ref)),
        loss_err=abs(loss - loss_ref) / abs(loss_ref),
    )


def _unflat(problem: Problem, vec: np.ndarray) -> Any:
    leaves, treedef = jax.tree.flatten(problem.params0)
    sizes = np.cumsum([x.size for x in leaves])[:-1]
    parts = np.split(vec, sizes)
    return jax.tree.unflatten(treedef, [jnp.asarray(p.reshape(x.shape), x.dtype) for p, x in zip(parts, leaves)])


def _ref_loss(problem: Problem, ref: np.ndarray) -> float:
    return float(problem.loss(_unflat(problem, ref)))


def jvp_cost(problem: Problem, calls: int = 20) -> tuple[float, float]:
    """(seconds per jitted gradient-flow vector field, seconds per jitted JVP of it) at θ(0)."""
    flow, p0 = GradientFlow(), problem.params0
    f = jax.jit(lambda p: flow.vector_field(0.0, p, problem))
    g = jax.jit(lambda p, v: jax.jvp(lambda q: flow.vector_field(0.0, q, problem), (p,), (v,))[1])
    out = []
    for fn, args in ((f, (p0,)), (g, (p0, p0))):
        jax.block_until_ready(fn(*args))
        best = np.inf
        for _ in range(calls):
            t = time.perf_counter()
            jax.block_until_ready(fn(*args))
            best = min(best, time.perf_counter() - t)
        out.append(best)
    return out[0], out[1]


def time_runs(solves: dict[str, Callable[..., Any]], runs: list[Run], problem: Problem, repeats: int) -> None:
    """Fill `Run.wall`: fastest of `repeats` rounds; each round calls every run once, alternating the
    solvers (Tsit5 run, RKC run, Tsit5 run, ...) so that they see the same machine load."""
    for solve in solves.values():  # compile (and warm up) each timed solve once
        jax.block_until_ready(solve(jnp.asarray(1e-4), problem.params0, problem)[0])
    by_solver = [[r for r in runs if r.solver == name] for name in solves]
    order = [r for i in range(max(map(len, by_solver))) for group in by_solver for r in group[i : i + 1]]
    for _ in range(repeats):
        for run in order:
            t = time.perf_counter()
            jax.block_until_ready(solves[run.solver](jnp.asarray(run.rtol), problem.params0, problem)[0])
            run.wall = min(run.wall, time.perf_counter() - t)


def runs_table(runs: list[Run], ref_row: str) -> str:
    head = (
        "| solver | rtol | grad evals (exact) | of which JVPs | weighted evals | steps acc. / rej. | "
        "param rel. err | loss rel. err | wall s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = [
        f"| {r.solver} | {r.rtol:.0e} | {r.evals} | {'—' if r.jvps is None else r.jvps} | {r.weighted:.0f} | "
        f"{r.accepted} / {r.rejected} | {r.param_err:.2e} | {r.loss_err:.2e} | {r.wall:.2f} |"
        for r in runs
    ]
    return head + ref_row + "\n".join(rows)


def equal_accuracy_table(runs: list[Run], error: str, rkc: str = "rkc") -> str:
    """For each target, the cheapest Tsit5 and `rkc` runs whose `error` ("param_err" or "loss_err") is
    at most the target."""
    head = (
        "| err ≤ | Tsit5: rtol, evals, wall s | RKC: rtol, evals (weighted), wall s | "
        "evals Tsit5 / RKC | weighted | wall Tsit5 / RKC |\n|---:|---|---|---:|---:|---:|\n"
    )
    lines = []
    for target in TARGETS:
        best = {}
        for name in ("tsit5", rkc):
            ok = [r for r in runs if r.solver == name and getattr(r, error) <= target]
            best[name] = min(ok, key=lambda r: r.weighted) if ok else None
        t, k = best["tsit5"], best[rkc]
        cell_t = f"{t.rtol:.0e}, {t.evals}, {t.wall:.2f}" if t else "none of the runs"
        cell_k = f"{k.rtol:.0e}, {k.evals} ({k.weighted:.0f}), {k.wall:.2f}" if k else "none of the runs"
        ratios = (
            f"{t.evals / k.evals:.1f}x | {t.evals / k.weighted:.1f}x | {t.wall / k.wall:.1f}x"
            if t and k
            else "— | — | —"
        )
        lines.append(f"| {target:.0e} | {cell_t} | {cell_k} | {ratios} |")
    return head + "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Stiff gradient flow: RKC vs Tsit5, gradient evaluations to equal accuracy."
    )
    p.add_argument("--quick", action="store_true", help="fewer tolerances, 1 timing round, one reference")
    p.add_argument("--L", type=int, default=80, help="sequence length of the co-occurrence task")
    p.add_argument("--repeats", type=int, default=None, help="timing rounds (default 2, 1 with --quick)")
    p.add_argument("--out", type=pathlib.Path, default=RESULTS_PATH, help="where to write the markdown table")
    return p.parse_args(argv)


def reference(problem: Problem, t_final: float, check: bool) -> tuple[np.ndarray, str, str]:
    """(flattened θ_ref(T), its table row, the Dopri8 check line)."""
    t = time.perf_counter()
    solve = make_solve(diffrax.Tsit5(), t_final, counted=True)
    _COUNT[0] = 0
    y1, acc, rej, _ = solve(jnp.asarray(1e-10), problem.params0, problem)
    jax.block_until_ready(y1)
    jax.effects_barrier()
    ref, evals, wall = flat(y1), _COUNT[0], time.perf_counter() - t
    steps = f"{int(acc)} / {int(rej)}"
    row = f"| reference Tsit5 | 1e-10 | {evals} | — | — | {steps} | — | — | {wall:.1f} (incl. compile) |\n"
    note = "Reference not cross-checked (`--quick`)."
    if check:
        y2 = make_solve(diffrax.Dopri8(), t_final, counted=False)(jnp.asarray(1e-11), problem.params0, problem)[0]
        diff = np.linalg.norm(flat(y2) - ref) / np.linalg.norm(ref)
        note = f"Reference check: Dopri8 at rtol 1e-11 differs from it by {diff:.1e} (relative norm of θ(T))."
    return ref, row, note


SOLVERS: dict[str, diffrax.AbstractSolver] = {"tsit5": diffrax.Tsit5(), "rkc": RKC(), "rkc-jvp": RKC(jvp="autodiff")}


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    repeats = args.repeats or (1 if args.quick else 2)
    load_start = os.getloadavg()
    config = Config(L=args.L)
    problem = setup(config).problem
    t_final = config.t_final
    n_params = sum(x.size for x in jax.tree.leaves(problem.params0))
    print(f"co-occurrence L={args.L}, {n_params} parameters, T={t_final:g}", flush=True)
    ref, ref_row, ref_note = reference(problem, t_final, check=not args.quick)
    grad_s, jvp_s = jvp_cost(problem)
    rtols = {
        "tsit5": [1e-4, 1e-6] if args.quick else [1e-3, 1e-4, 1e-5, 1e-6, 1e-8],
        "rkc": [1e-3, 1e-4, 1e-5] if args.quick else [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7],
        "rkc-jvp": [1e-3] if args.quick else [1e-3, 1e-4, 1e-5],
    }
    runs = []
    for name, solver in SOLVERS.items():
        solve = make_solve(solver, t_final, counted=True)
        for rtol in rtols[name]:
            runs.append(counted_run(solve, name, rtol, problem, ref))
            runs[-1].jvp_units = jvp_s / grad_s if name == "rkc-jvp" else 1.0
            print(f"{name} rtol {rtol:.0e}: {runs[-1].evals} evals, err {runs[-1].param_err:.2e}", flush=True)
    time_runs({n: make_solve(s, t_final, counted=False) for n, s in SOLVERS.items()}, runs, problem, repeats)
    loads = (load_start[0], os.getloadavg()[0])
    head = header(args, config, n_params, loads)
    report = head + body(runs, ref_row, ref_note, (grad_s, jvp_s), repeats)
    print("\n" + report)
    args.out.write_text(report)
    print(f"written to {args.out}")


def header(args: argparse.Namespace, config: Config, n_params: int, loads: tuple[float, float]) -> str:
    cmd = " ".join(["python", *map(shlex.quote, [os.path.relpath(sys.argv[0]), *sys.argv[1:]])])
    return (
        "# Stiff gradient flow: RKC vs Tsit5\n\n"
        f"Command: `{cmd}`  \nDate: {datetime.datetime.now().isoformat(timespec='seconds')}  \n"
        f"Problem: co-occurrence `Config(L={args.L})` ({n_params} parameters, {config.precision}), gradient "
        f"flow on [0, {config.t_final:g}] from the setup's initial parameters, `PIDController(rtol, atol=1e-3 "
        "rtol)`, `dt0=None`, no event (see the docstring of benchmarks/bench_stiff.py)  \n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
        f"({jax.devices()[0].platform}), diffrax {diffrax.__version__}; load average {loads[0]:.2f} at start, "
        f"{loads[1]:.2f} at end (other processes share the machine: compare within this table)\n\n"
    )


def body(runs: list[Run], ref_row: str, ref_note: str, secs: tuple[float, float], repeats: int) -> str:
    cost = secs[1] / secs[0]
    return (
        f"{runs_table(runs, ref_row)}\n\n"
        "rkc: `RKC()` (power iteration by difference quotients, one vector-field call each); rkc-jvp: "
        '`RKC(jvp="autodiff")` (`jax.jvp` of the vector field). Grad evals: exact host count of vector-field '
        "calls (a `jax.debug.callback` in the vector field), rejected steps included, each JVP counted once; "
        "of which JVPs: power-iteration products of the accepted steps (RKC's solver state). Weighted: "
        f"rkc-jvp's JVPs charged {cost:.1f} gradients each, their measured cost (jitted at θ(0): gradient "
        f"{secs[0] * 1e3:.2f} ms, `jax.jvp` of the gradient {secs[1] * 1e3:.2f} ms); equal to grad evals "
        f"otherwise. Wall: fastest of {repeats} side-by-side round(s), without the counter, compilation "
        f"excluded. {ref_note}\n\n"
        "## Equal accuracy\n\nFor each target, the cheapest run (fewest weighted evaluations) of Tsit5 and "
        "of `RKC()` whose error is at most the target.\n\nFinal parameters, ‖θ(T) - θ_ref(T)‖ / ‖θ_ref(T)‖:\n\n"
        f"{equal_accuracy_table(runs, 'param_err')}\n\nFinal loss, |L(θ(T)) - L_ref| / L_ref:\n\n"
        f"{equal_accuracy_table(runs, 'loss_err')}\n"
    )


if __name__ == "__main__":
    main()
