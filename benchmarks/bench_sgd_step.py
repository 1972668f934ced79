"""Cost of one SGD step against one full-batch GD step, on the paper's default problem (`Config()`,
n = 60, float64).

Run ``python benchmarks/bench_sgd_step.py [--steps K] [--repeats R]`` from the repository root. Each
run is `flowsim.gradient_descent` / `flowsim.sgd` over K steps saved only at 0 and K (the observer
records the loss), timed side by side in one process: fastest of R calls after a compiling one.
Per-seed SGD cost: the wall time of S vmapped seeds divided by S. Target (issue 16): a batch-B step
costs at most (B/n + 0.3) full-batch steps. Results are printed and written to
``benchmarks/results_sgd_step.md``. Compare numbers within one run only.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import platform
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import flowsim
from flowsim import gradient_descent, setup, sgd

jax.config.update("jax_enable_x64", True)


def _best(fn: Callable[[], Any], repeats: int) -> float:
    jax.block_until_ready(fn())
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


def gradient_costs(p: flowsim.Problem, batch: int, steps: int, repeats: int) -> dict[str, float]:
    """Seconds per step of a jitted fori_loop of tiny gradient steps: on the full batch, on `batch`
    fixed samples, and on `batch` samples sliced from the epoch's shuffle drawn at every step."""
    key, nb = jax.random.PRNGKey(0), p.n // batch
    upd = lambda y, g: jax.tree.map(lambda a, b: a - 1e-9 * b, y, g)
    fixed = jnp.arange(batch)

    def shuffled(i: jax.Array) -> jax.Array:
        perm = jax.random.permutation(jax.random.fold_in(key, i // nb), p.n)
        return jax.lax.dynamic_slice(perm, ((i % nb) * batch,), (batch,))

    steps_of = {
        "gradient, full batch": lambda i, y: upd(y, jax.grad(p.loss)(y)),
        f"gradient, {batch} fixed samples": lambda i, y: upd(y, jax.grad(p.loss)(y, fixed)),
        f"gradient, {batch} of a per-step shuffle": lambda i, y: upd(y, jax.grad(p.loss)(y, shuffled(i))),
    }
    out = {}
    for name, step in steps_of.items():
        loop = jax.jit(lambda y, step=step: jax.lax.fori_loop(0, steps, step, y))
        out[name] = _best(lambda loop=loop: loop(p.params0), repeats) / steps
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000, help="steps per timed run")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls after the compiling one (fastest kept)")
    args = ap.parse_args()
    c = flowsim.Config("cooccurrence")
    p = setup(c).problem
    grid = np.array([0, args.steps])
    obs = lambda t, params, problem: {"loss": problem.loss(params)}
    key = jax.random.PRNGKey(0)
    gd = _best(lambda: gradient_descent(p, c.lr, grid, obs).params, args.repeats) / args.steps
    rows = [(f"GD, full batch (n = {p.n})", 1, gd)]
    for batch, seeds in ((12, 1), (12, 8), (4, 8), (30, 8)):
        run = lambda: sgd(p, c.lr, grid, obs, key=key, seeds=seeds, batch_size=batch).params
        rows.append((f"SGD batch {batch}, {seeds} seed(s)", seeds, _best(run, args.repeats) / args.steps / seeds))
    grads = gradient_costs(p, 12, args.steps, args.repeats)
    load = open("/proc/loadavg").read().split()[0]
    lines = [
        "# SGD step cost",
        "",
        f"Command: `python benchmarks/bench_sgd_step.py --steps {args.steps}`  ",
        f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}; {platform.machine()}, jax {jax.__version__}; "
        f"load {load}  ",
        f"Problem: `Config()` (cooccurrence), n = {p.n}, float64, {args.steps} steps per run",
        "",
        "| run | per-seed step µs | / full-batch step | target (B/n + 0.3) |",
        "|---|---:|---:|---:|",
    ]
    for name, _, t in rows:
        b = int(name.split("batch ")[1].split(",")[0]) if name.startswith("SGD") else p.n
        target = "—" if b == p.n else f"{b / p.n + 0.3:.2f}"
        lines.append(f"| {name} | {t * 1e6:.1f} | {t / gd:.2f} | {target} |")
    lines += ["", "Where the cost is (jitted fori_loop of bare gradient steps, no observer, no divergence check):", ""]
    lines += ["| step | µs | / full batch |", "|---|---:|---:|"]
    full = grads["gradient, full batch"]
    lines += [f"| {name} | {t * 1e6:.1f} | {t / full:.2f} |" for name, t in grads.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    (pathlib.Path(__file__).parent / "results_sgd_step.md").write_text(text)


if __name__ == "__main__":
    main()
