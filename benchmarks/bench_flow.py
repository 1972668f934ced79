"""Cost and accuracy of the gradient flow against full-batch GD (and SGD) on the paper's experiment,
at GD's default step size and accuracy-matched.

Run ``python benchmarks/bench_flow.py [--quick] [--check-counts]`` from the repository root. The
problem is `Config()` (n=60, L=5, d=64, m=128, m1=256, float64, T = lr * steps = 300); ``--quick``
uses steps=3000 (T=30). The tables are printed and written to ``benchmarks/results_flow.md``.

What is measured, and how:

* **Reference**: the flow solved by Dopri8 at rtol 1e-12 / atol 1e-14, no event, at the save times
  of the run it is compared with, padded to `_flow_matching.REF_POINTS` times (one compiled
  program for every grid; the filler times are left out of the comparison).
* **Errors** against the reference: loss = max over save times of |loss - loss_ref| / |loss_ref|;
  observables = max over G1, G2, G3, score_12, score_31 of max_t |x - x_ref| / max_t |x_ref|;
  final loss = |loss(T) - loss_ref(T)| / |loss_ref(T)| (the accuracy-matched comparison's measure).
* **Gradient evaluations**. GD: one per step. Flow: from diffrax's stats, since a Python counter
  cannot run under jit: `FlowSolution.num_steps` (accepted + rejected steps, summed over the pieces
  before and after the Phase-1 event) times the new vector-field evaluations per step (stages,
  minus one for FSAL tableaus: Tsit5 6, Dopri8 13; Euler 1), plus one first-stage evaluation per
  piece of an FSAL solver. diffrax's initial step selection evaluates nothing here (the term is
  wrapped, so it returns 0.01). The count is a lower bound, off by one per rejected *first* step of
  a piece; ``--check-counts`` compares it with an exact count by a `jax.debug.callback` in the vector
  field. The event condition and the observers are forward passes, in the wall time, not counted.
* **Wall time**: every program is called once to compile (`Timing.start`; "compile (jax)" is what
  `jax.monitoring` reported then), then the timed calls are **interleaved**: 3 rounds (``--quick``:
  2), each calling every flow `FLOW_INNER` times and every GD/Euler run once, so that load from other
  processes hits all of them alike. "run" is the fastest call; ratios are given from the fastest
  calls, from the medians and as the range of the per-round ratios. SGD (batch 12, 8 seeds,
  vmapped, 3000 steps in both modes) is timed once after the rounds, without an error column.
  The default flow is also run with solver "tsit5-unrolled" (flowsim's Tsit5 with its stages
  unrolled over the PyTree: the same steps, cheaper per step, longer to compile).
* **Accuracy-matched GD** (`_flow_matching.py`): GD over the same horizon T at the step sizes
  `GD_LADDER` (each run computed, T / lr steps); its final-loss error is fitted as C lr^p on the
  ladder's regular part (from the smallest lr up while the error grows with lr, no divergence)
  up to `FIT_MAX_LR`. For each Tsit5 + event flow in `MATCH_RTOLS`, with final-loss error e, the
  lr with error e is interpolated (log-log) between the ladder points around it, computed, and
  refined once by the same interpolation; a lr that would need more than `STEP_CAP` x steps is
  only extrapolated from the fit (its wall time then estimated from GD's measured cost per step,
  and marked so). The other direction, the flow's rtol at GD lr 0.01's errors (final loss; loss
  max over the grid): Tsit5 + event at the quarter-decade rtols `RTOL_SCAN` (atol = rtol / 1000),
  the largest rtol below which every error is at most GD's.
* **Solver overhead**: flow wall time per gradient evaluation / one gradient evaluation (a jitted
  `lax.fori_loop` of K GD steps / K; also a plain jitted call with dispatch), also with the
  observer recordings (a jitted `lax.map` over the save grid) subtracted. Euler with dt = lr does
  GD's arithmetic inside diffrax, so Euler / GD is the diffrax loop overhead per step.

Other processes may share the machine: compare numbers within one run (ratios), not across runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _bench_timing import Timing, command_line, environment, interleave, now, ratios
from _flow_matching import (
    Matched,
    accuracy_matched,
    errors,
    flow_for_table,
    flow_grad_evals,
    flow_key,
    fmt,
    gd_for_table,
    ladder_table,
    reference,
    start_flow,
)

from flowsim import (
    AbstractFlow,
    Config,
    GradientFlow,
    Problem,
    Setup,
    integrate,
    min_margin,
    run_flow,
    save_steps,
    setup,
    sgd,
)

RESULTS_PATH = pathlib.Path(__file__).with_name("results_flow.md")
SGD_STEPS = 3000  # SGD horizon in both modes: its cost per step does not depend on the horizon
FLOW_INNER = 3  # flow calls per round
UNROLLED = "tsit5-unrolled"  # flowsim's unrolled Tsit5 (the same method as "tsit5", diffrax's)
FLOW_RUNS = (  # (rtol, with the event?, solver)
    *((1e-6, True, "tsit5"), (1e-6, False, "tsit5"), (1e-4, True, "tsit5"), (1e-8, True, "tsit5")),
    (1e-6, True, UNROLLED),
)


# ----------------------------------------------------------------------------- counting


_COUNT = [0]


def _bump() -> None:
    _COUNT[0] += 1


@final
class CountingFlow(AbstractFlow):
    """Gradient flow whose every vector-field evaluation increments a host counter (not for timing)."""

    flow: GradientFlow = GradientFlow()

    def vector_field(self, t: jax.Array, params: Any, problem: Problem) -> Any:
        jax.debug.callback(_bump)
        return self.flow.vector_field(t, params, problem)


def count_check(s: Setup, ts: np.ndarray) -> str:
    """The evaluation-count formula against an exact callback count, one line per solver."""
    lines = []
    runs: list[tuple[str, str, dict[str, Any]]] = [
        ("Tsit5 rtol 1e-6 + event", "tsit5", dict(rtol=s.config.rtol, atol=s.config.atol, event=min_margin)),
        ("Dopri8 rtol 1e-12, no event", "dopri8", dict(rtol=1e-12, atol=1e-14)),
        ("Euler dt = lr, no event", "euler", dict(dt0=s.config.lr)),
    ]
    for label, solver, kw in runs:
        _COUNT[0] = 0
        sol = integrate(CountingFlow(), s.problem, ts, s.observer, solver=solver, **kw)
        jax.effects_barrier()
        lines.append(f"- {label}: formula {flow_grad_evals(sol, solver)}, exact callback count {_COUNT[0]}")
    return "\nGradient-evaluation count check (`--check-counts`):\n\n" + "\n".join(lines) + "\n"


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
    The parameters are rescaled by (1 + 1e-12 t) so that XLA cannot hoist the observer out of the loop."""

    def at(t: jax.Array) -> Any:
        return observer(t, jax.tree.map(lambda x: x * (1 + 1e-12 * t), params), problem)

    return jax.lax.map(at, ts)


def overhead_table(s: Setup, ts: np.ndarray, runs: Sequence[tuple[str, Timing, int]]) -> str:
    """Wall time per gradient evaluation of each (name, timing, grad evals) / one gradient evaluation."""
    k_loop, k_calls = 2000, 500
    p0 = s.problem.params0
    loop = Timing.start(_gd_loop, s.problem, p0, jnp.asarray(s.config.lr), k_loop)
    calls = Timing.start(repeated_calls, jax.jit(lambda p: s.problem.loss_and_grad(p)), p0, k_calls)
    obs_all = Timing.start(observe_all, s.observer, jnp.asarray(ts), p0, s.problem)
    interleave([(loop, 1), (calls, 1), (obs_all, 1)], 5)
    t_grad, t_call, t_obs = loop.run_s / k_loop, calls.run_s / k_calls, obs_all.run_s
    gd_step = runs[-1][1].run_s / runs[-1][2]
    lines = [
        "| run | wall s | grad evals | per grad eval | / one grad | / one grad, observers excluded | / GD per step |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, t, n in runs:
        wall = t.run_s
        lines.append(
            f"| {name} | {wall:.3f} | {n} | {wall / n * 1e3:.3f} ms | {wall / n / t_grad:.2f} "
            f"| {(wall - t_obs) / n / t_grad:.2f} | {wall / n / gd_step:.2f} |"
        )
    return "\n".join(lines) + (
        f"\n\nOne gradient evaluation: {t_grad * 1e3:.3f} ms (jitted fori_loop of {k_loop} GD steps / {k_loop}); "
        f"{t_call * 1e3:.3f} ms as a plain `jax.jit(problem.loss_and_grad)` call ({k_calls} calls, dispatch "
        f"included). The observer at all {len(ts)} save times: {t_obs * 1e3:.1f} ms ({t_obs / len(ts) * 1e3:.3f} ms "
        f"each; the event run records the ones before the event twice). GD's last column is its own loop."
    )


# ----------------------------------------------------------------------------- benchmark


def main_table(rows: Sequence[tuple[str, int, Timing, tuple[float, float, float] | None]]) -> str:
    """The cost and accuracy table, one row per (method, grad evals, timing, errors or None)."""
    lines = [
        "| method | grad evals | run wall s (fastest) | median s | compile s (1st − fastest) | compile s (jax) "
        "| loss rel err | observable err | final-loss rel err |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, n, t, e in rows:
        le, oe, fe = e if e is not None else (None, None, None)
        lines.append(
            f"| {name} | {n} | {t.run_s:.3f} | {t.median_s:.3f} | {t.compile_s:.1f} | {t.compile_jax_s:.1f} "
            f"| {fmt(le)} | {fmt(oe)} | {fmt(fe)} |"
        )
    return "\n".join(lines)


@final
@dataclasses.dataclass(frozen=True)
class Runs:
    """Every run of the benchmark: the reference (its timing, observables on the save grid), the
    Tsit5 flows by `flow_key`, the Euler flow, the accuracy-matched comparison (with GD at the
    config's lr), SGD and the save grid."""

    ref: Timing
    ref_obs: dict[str, np.ndarray]
    flows: dict[str, Timing]
    euler: Timing
    matched: Matched
    sgd: Timing
    grid: np.ndarray


def run_all(s: Setup, rounds: int) -> Runs:
    """Every run of the benchmark: compiled and checked first, then timed in interleaved rounds."""
    c = s.config
    grid = save_steps(c.steps, c.n_save_log, c.n_save_lin)
    print("reference Dopri8 1e-12, flows, Euler ...", flush=True)
    ref, ref_obs = reference(s, grid * c.lr)
    flows = {flow_key(*run): start_flow(s, *run) for run in FLOW_RUNS}
    euler = Timing.start(run_flow, s, solver="euler", dt0=c.lr, event=None)
    matched = accuracy_matched(s, flows, ref_obs)
    print("timing ...", flush=True)
    flow_entries = [(t, FLOW_INNER) for t in [*flows.values(), *matched.flow_timings()]]
    interleave([(ref, 1), *flow_entries, *((t, 1) for t in matched.gd_timings()), (euler, 1)], rounds)
    sgd_grid = save_steps(min(c.steps, SGD_STEPS), c.n_save_log, c.n_save_lin)
    print(f"SGD ({sgd_grid[-1]} steps) ...", flush=True)
    key = jax.random.PRNGKey(c.seed + 1)
    sg = Timing.start(sgd, s.problem, c.lr, sgd_grid, s.observer, batch_size=c.batch_size, seeds=c.sgd_seeds, key=key)
    sg.again(1)
    return Runs(ref, ref_obs, flows, euler, matched, sg, grid)


def summary(s: Setup, r: Runs) -> tuple[str, str]:
    """(the main table, the ratio lines)."""
    c, gd = s.config, r.matched.gd
    ev, noev = r.flows[flow_key(1e-6)], r.flows[flow_key(1e-6, False)]
    err = {k: errors(t.result.obs, r.ref_obs) for k, t in r.flows.items()}
    n_sgd = int(r.sgd.result.steps[-1])
    rows = [
        ("reference Dopri8 rtol 1e-12, no event", flow_grad_evals(r.ref.result, "dopri8"), r.ref, None),
        *((k, flow_grad_evals(t.result), t, err[k]) for k, t in r.flows.items()),
        (
            "flow Euler dt = lr (GD inside diffrax), no event",
            r.euler.result.num_steps,
            r.euler,
            errors(r.euler.result.obs, r.ref_obs),
        ),
        (f"GD lr {c.lr:g}", gd.steps, gd.timing, gd.errs),
        (f"SGD batch {c.batch_size}, {c.sgd_seeds} seeds, first {n_sgd} steps", n_sgd, r.sgd, None),
    ]
    n_ev, n_noev = flow_grad_evals(ev.result), flow_grad_evals(noev.result)
    e_ev, same = err[flow_key(1e-6)], errors(r.euler.result.obs, gd.timing.result.obs)
    lines = [
        f"- GD grad evals / flow grad evals: {gd.steps / n_ev:.1f}x (with event), {gd.steps / n_noev:.1f}x (no event)",
        f"- **GD lr {c.lr:g} wall / flow wall** (same horizon): {ratios(gd.timing, ev)} with the event, "
        f"{ratios(gd.timing, noev)} without",
        f"- accuracy, flow (with event) vs GD: loss err {e_ev[0]:.1e} vs {gd.errs[0]:.1e}, observable err "
        f"{e_ev[1]:.1e} vs {gd.errs[1]:.1e}, final-loss err {e_ev[2]:.1e} vs {gd.errs[2]:.1e}",
        f"- cost of the Phase-1 event: wall {ratios(ev, noev)} the flow without it ({n_ev - n_noev:+d} grad evals; "
        f"event at t = {ev.result.event_time:.4f}); compile {ev.compile_s:.1f} s vs {noev.compile_s:.1f} s",
        f"- Euler flow (dt = lr) vs GD, the same arithmetic: max difference loss {same[0]:.1e}, observables "
        f"{same[1]:.1e}; wall Euler / GD = {ratios(r.euler, gd.timing)}",
    ]
    unrolled_key = flow_key(1e-6, True, UNROLLED)
    if unrolled_key in r.flows:
        lines.append(f"- GD wall / flow wall with the unrolled Tsit5: {ratios(gd.timing, r.flows[unrolled_key])}")
    return main_table(rows), "\n".join(lines)


def report(s: Setup, r: Runs, args: argparse.Namespace, rounds: int, loads: tuple[float, float]) -> str:
    """The results file's text."""
    c, gd = s.config, r.matched.gd
    table, ratio_lines = summary(s, r)
    keys = [flow_key(1e-6), flow_key(1e-6, False), flow_key(1e-6, True, UNROLLED)]
    runs = [(k, r.flows[k], flow_grad_evals(r.flows[k].result)) for k in keys if k in r.flows]
    runs += [("flow Euler dt = lr, no event", r.euler, r.euler.result.num_steps)]
    overhead = overhead_table(s, r.grid * c.lr, [*runs, (f"GD lr {c.lr:g} (flowsim.discrete)", gd.timing, gd.steps)])
    counts = count_check(s, r.grid * c.lr) if args.check_counts else ""
    return (
        f"# Flow vs GD benchmark\n\nCommand: `{command_line()}`  \nDate: {now()}  \n"
        f"Problem: `Config({'steps=3000' if args.quick else ''})`, T = {c.t_final:g}, {len(r.grid)} save times, "
        f"{c.precision}  \nMachine: {environment()}; load average {loads[0]:.2f} at start, {loads[1]:.2f} at end "
        f"(other processes share the machine: compare within these tables)\n\n{table}\n\n"
        f"Timed calls interleaved: {rounds} rounds, each calling every flow {FLOW_INNER} times and every other run "
        f"once (SGD: one call after the rounds). A ratio reads 'fastest calls (medians, range of the per-round "
        f"ratios)'. Errors against the reference at the same save times. Grad evals of the flows: diffrax "
        f"num_steps x new evaluations per step + 1 per piece (see the docstring).\n\nRatios:\n\n{ratio_lines}\n\n"
        f"## Accuracy-matched (same horizon T = {c.t_final:g})\n\nGD's lr at the flow's final-loss error:\n\n"
        f"{gd_for_table(r.matched, r.flows, r.ref_obs)}\n\nThe flow's rtol at GD's error:\n\n"
        f"{flow_for_table(r.matched, r.ref_obs)}\n\nEvery GD run computed (the ladder and the matching search):\n\n"
        f"{ladder_table(r.matched)}\n\n## Solver overhead per gradient evaluation\n\n{overhead}\n{counts}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Cost and accuracy of the gradient flow against GD and SGD.")
    parser.add_argument("--quick", action="store_true", help="steps=3000 (T=30) instead of 30000 (T=300)")
    parser.add_argument("--check-counts", action="store_true", help="check the grad-eval formula by exact count")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()[0]
    s = setup(Config(steps=3000) if args.quick else Config())
    c = s.config
    rounds = 2 if args.quick else 3
    print(f"T = {c.t_final:g} ({c.steps} GD steps), {c.precision}, {environment()}, load {load_start:.2f}", flush=True)
    r = run_all(s, rounds)
    text = report(s, r, args, rounds, (load_start, os.getloadavg()[0]))
    print("\n" + text)
    RESULTS_PATH.write_text(text)
    print(f"written to {RESULTS_PATH}")


if __name__ == "__main__":
    main()
