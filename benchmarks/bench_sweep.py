"""Sweep throughput: points per second, sequential-naive vs `flowsim.run_sweep`, side by side in one run.

    python benchmarks/bench_sweep.py [--steps 300] [--naive-points 6]

Grid: 64 points = 8 lr values (log 0.005..0.02) x 8 init_scale values (log 0.5..2), one seed, on the
default model (n = 60, L = 5, d = 64, m = 128, m1 = 256, float64) with a short horizon (`steps`,
default 300, so T = lr * 300 in 1.5..6), measures T1, loss_T, attn_disp_T1 (the flow only: the
measures decide what runs). The persistent XLA cache is off in every row, so each process compiles.

* **naive**: a loop over points, each `jax.clear_caches()` then `run_point` (setup + flow with the
  Phase-1 event), i.e. a fresh jit per point, as a script calling the library per point would do in
  a new process. Timed on the first `--naive-points` points of the grid (each costs the same
  compilation), reported as points per second.
* **flowsim sweep, 1 worker**: `run_sweep(workers=1)` in this process after `jax.clear_caches()`:
  compiles once, then loops (lr and init_scale are traced values).
* **flowsim sweep, 2 workers**: `run_sweep(workers=2)`, one worker process per core, each compiling
  once; wall time includes starting the workers and writing the 64 result files.

Writes benchmarks/results_sweep.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import shlex
import sys
import tempfile
import time

import jax

jax.config.update("jax_enable_x64", True)

from flowsim import SweepSpec, run_point, run_sweep  # noqa: E402

MEASURES = ["T1", "loss_T", "attn_disp_T1"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--naive-points", type=int, default=6)
    args = p.parse_args()
    spec = SweepSpec.from_dict(
        {
            "name": "bench",
            "base": {"steps": args.steps},
            "axes": {"lr": {"log": [0.005, 0.02], "num": 8}, "init_scale": {"log": [0.5, 2.0], "num": 8}},
            "seeds": 1,
            "measures": MEASURES,
        }
    )
    configs = spec.configs()
    rows = []
    load0 = os.getloadavg()[0]

    t0 = time.perf_counter()
    naive = configs[: args.naive_points]
    for c in naive:
        jax.clear_caches()
        rec = run_point(c, MEASURES)
        assert rec["status"] == "ok", rec
    dt = time.perf_counter() - t0
    rows.append(("naive: clear_caches + run_point per point", len(naive), dt))
    print(rows[-1], flush=True)

    for workers in (1, 2):
        jax.clear_caches()
        with tempfile.TemporaryDirectory() as tmp:
            rep = run_sweep(spec, pathlib.Path(tmp) / "s", workers=workers, progress=False)
        assert rep.done == 64 and rep.failed == 0, rep
        rows.append((f"flowsim sweep, {workers} worker{'s' * (workers > 1)}", 64, rep.wall_s))
        print(rows[-1], flush=True)

    rate = {name: n / dt for name, n, dt in rows}
    naive_rate = rows[0][1] / rows[0][2]
    lines = [
        "# Sweep benchmark",
        "",
        f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`  ",
        f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}  ",
        f"Grid: 64 points = lr (8, log 0.005..0.02) x init_scale (8, log 0.5..2), default model "
        f"(n=60, L=5, d=64, m=128, m1=256, float64), steps={args.steps}, measures {MEASURES} (flow with the "
        "Phase-1 event; GD and SGD skipped because no measure needs them)  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}; load average "
        f"{load0:.2f} at start, {os.getloadavg()[0]:.2f} at end",
        "",
        "| method | points | wall s | points / s | vs naive |",
        "|---|---:|---:|---:|---:|",
        *(f"| {name} | {n} | {dt:.1f} | {n / dt:.3f} | {n / dt / naive_rate:.1f}x |" for name, n, dt in rows),
        "",
        f"Speed-up of the 2-worker sweep over naive: **{rate[rows[2][0]] / naive_rate:.1f}x** (target >= 10x). "
        "Naive is timed on its first points only (each costs one full compilation, so its rate does not "
        "depend on how many are timed); the sweep rows include compiling once per worker, starting the "
        "worker processes and writing every result file.",
    ]
    out = pathlib.Path(__file__).with_name("results_sweep.md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
