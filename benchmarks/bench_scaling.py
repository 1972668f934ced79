"""Wall time of the gradient flow and of GD as the co-occurrence problem grows in n, L and m, with
fitted exponents.

Run ``python benchmarks/bench_scaling.py [--quick]`` from the repository root. The table is printed
and written to ``benchmarks/results_scaling.md``.

What is measured, and how:

* **Sizes**: one of n (training samples), L (sequence length) and m (attention width: rows of W_Q,
  W_K, W_V; the parameter count is m (3d + m1) + m1) is varied over `SIZES` (``--quick``:
  `QUICK_SIZES`), the others at their defaults (n = 60, L = 5, d = 64, m = 128, m1 = 256, float64).
  The horizon is the same for every run: `STEPS` GD steps at lr 0.01, T = `STEPS` x 0.01.
* **Flow**: `flowsim.run_flow(setup)`, as `flowsim run` does it: Tsit5 at the config's rtol 1e-6 /
  atol 1e-9, the system's Phase-1 event located, the default observer on the save grid. Its
  gradient evaluations come from diffrax's step count (`_flow_matching.flow_grad_evals`: accepted +
  rejected steps x 6 + 1 per piece).
* **GD**: `flowsim.run_gd(setup)`: lr 0.01, `STEPS` steps, the same save grid, observer and events.
* **One gradient**: a jitted `lax.fori_loop` of `GRAD_STEPS` plain GD steps / `GRAD_STEPS`
  (`bench_flow.gd_loop`).
* **Wall time**: every program is compiled first (one call), then `ROUNDS` interleaved rounds over
  all sizes call each flow and gradient loop `INNER` times and each GD run once; the fastest call
  counts. The default size is one set of runs, shared by the three fields.
  The flow's evaluation overhead is its wall time per gradient evaluation / one gradient.
* **Exponents**: the least-squares slope a of log(time) against log(size) over the values of one
  parameter (time ~ size^a), for the flow, GD, one gradient and the flow's gradient evaluations.

Other processes may share the machine: compare within one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _bench_timing import Timing, command_line, environment, interleave, now
from _flow_matching import flow_grad_evals
from bench_flow import gd_loop

from flowsim import Config, run_flow, run_gd, setup

RESULTS_PATH = pathlib.Path(__file__).with_name("results_scaling.md")
SIZES = {"n": (60, 120, 240, 480), "L": (5, 10, 20, 40), "m": (64, 128, 256, 512)}
QUICK_SIZES = {"n": (60, 120, 240), "L": (5, 10, 20), "m": (64, 128, 256)}
STEPS = 3000  # GD steps at lr 0.01 (T = 30) for every size
ROUNDS = 3
INNER = 3  # calls per round of every flow and gradient loop (GD: one)
GRAD_STEPS = 300

_gd_loop = eqx.filter_jit(gd_loop)


@final
@dataclasses.dataclass(frozen=True)
class Size:
    """The timed runs of one size: its parameter count, flow, GD and gradient loop."""

    params: int
    flow: Timing
    gd: Timing
    grad: Timing

    @property
    def flow_evals(self) -> int:
        return flow_grad_evals(self.flow.result)

    @property
    def grad_s(self) -> float:
        return self.grad.run_s / GRAD_STEPS


def compile_size(config: Config) -> Size:
    """Set up `config`, compile and run its flow, GD and gradient loop once."""
    s = setup(config)
    params = sum(x.size for x in jax.tree.leaves(s.problem.params0))
    flow = Timing.start(run_flow, s)
    flow.result.check()
    gd = Timing.start(run_gd, s)
    grad = Timing.start(_gd_loop, s.problem, s.problem.params0, jnp.asarray(s.config.lr), GRAD_STEPS)
    return Size(params, flow, gd, grad)


def compile_all(sizes: dict[str, tuple[int, ...]], steps: int) -> list[tuple[str, int, Size]]:
    """(field, value, its runs) for every value of every field; configs that coincide (the default)
    are compiled and timed once and shared."""
    base = Config(steps=steps)
    done: dict[tuple[int, int, int], Size] = {}
    rows = []
    for field, values in sizes.items():
        for v in values:
            c = base.replace(**{field: v})
            key = (c.n, c.L, c.m)
            if key not in done:
                print(f"  n, L, m = {key} ...", flush=True)
                done[key] = compile_size(c)
            rows.append((field, v, done[key]))
    return rows


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(ys) against log(xs)."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def tables(rows: list[tuple[str, int, Size]]) -> str:
    """The per-size table and the fitted exponents."""
    lines = [
        "| varied | value | params | flow grad evals | flow run s | GD run s | GD / flow | one grad ms "
        "| flow per eval / one grad | flow compile s | GD compile s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for field, v, p in rows:
        per_eval = p.flow.run_s / p.flow_evals / p.grad_s
        lines.append(
            f"| {field} | {v} | {p.params} | {p.flow_evals} | {p.flow.run_s:.3f} | {p.gd.run_s:.3f} "
            f"| {p.gd.run_s / p.flow.run_s:.1f} | {p.grad_s * 1e3:.3f} | {per_eval:.2f} | {p.flow.compile_s:.1f} "
            f"| {p.gd.compile_s:.1f} |"
        )
    fits = [
        "| varied | values | flow wall a | GD wall a | one grad a | flow grad evals a |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for field in dict.fromkeys(f for f, _, _ in rows):
        xs = [float(v) for f, v, _ in rows if f == field]
        pts = [p for f, _, p in rows if f == field]
        cols = [
            slope(xs, [q.flow.run_s for q in pts]),
            slope(xs, [q.gd.run_s for q in pts]),
            slope(xs, [q.grad_s for q in pts]),
            slope(xs, [float(q.flow_evals) for q in pts]),
        ]
        values = ", ".join(f"{x:g}" for x in xs)
        fits.append(f"| {field} | {values} | " + " | ".join(f"{a:.2f}" for a in cols) + " |")
    return "\n".join(lines) + "\n\nFitted exponents (time ~ size^a):\n\n" + "\n".join(fits)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Flow and GD wall time against n, L and m.")
    parser.add_argument("--quick", action="store_true", help="three values per parameter, 1000 steps")
    args = parser.parse_args(argv)
    sizes, steps = (QUICK_SIZES, 1000) if args.quick else (SIZES, STEPS)
    load_start = os.getloadavg()[0]
    print(f"{environment()}, load {load_start:.2f}; compiling ...", flush=True)
    rows = compile_all(sizes, steps)
    unique = list({id(p): p for _, _, p in rows}.values())
    interleave([(t, k) for p in unique for t, k in ((p.flow, INNER), (p.gd, 1), (p.grad, INNER))], ROUNDS)
    body = tables(rows)
    report = (
        f"# Flow and GD wall time against problem size\n\nCommand: `{command_line()}`  \nDate: {now()}  \n"
        f"Problem: `Config(steps={steps}, <field>=<value>)` (co-occurrence, one of n, L, m varied, the others at "
        f"n = 60, L = 5, d = 64, m = 128, m1 = 256; float64), T = {steps * 0.01:g} for flow and GD  \n"
        f"Machine: {environment()}; load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end "
        f"(other processes share the machine: compare within these tables)\n\n{body}\n\n"
        f"Flow: `run_flow(setup)` (Tsit5 rtol 1e-6, Phase-1 event, default observer); GD: `run_gd(setup)` (lr "
        f"0.01, {steps} steps); one grad: jitted fori_loop of {GRAD_STEPS} GD steps / {GRAD_STEPS}. Run s: "
        f"fastest call over {ROUNDS} interleaved rounds (flows and gradient loops {INNER} calls a round, GD "
        f"one; the default size is one set of runs, shared by the three fields), compilation excluded; compile "
        f"s: first call − fastest. "
        f"a: least-squares slope in log-log over the values of one field.\n"
    )
    print("\n" + report)
    RESULTS_PATH.write_text(report)
    print(f"written to {RESULTS_PATH}")


if __name__ == "__main__":
    main()
