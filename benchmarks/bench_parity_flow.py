"""PARITY gradient flow to the target loss: Tsit5 vs RKC, exact vector-field evaluation counts.

    python benchmarks/bench_parity_flow.py N SEED SOLVER RTOL      # prints one JSON line

The `sensitivity` system at its defaults (2-layer post-LN transformer, d = 16, GELU, MSE on the full
table of n bits), gradient flow stopped by the terminal target event (loss < 1e-3), float64, with
the top Hessian eigenvalue recorded at the save points. Evaluations are counted by a host callback
in the vector field (rejected steps included). Results: `benchmarks/results_parity_flow.md`.
"""

from __future__ import annotations

import json
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import flowsim  # noqa: E402

COUNT = [0]


def _tick() -> None:
    COUNT[0] += 1


class CountingFlow(flowsim.AbstractFlow):
    """dθ/dt = -∇L, counting its evaluations on the host."""

    def vector_field(self, t, params, problem):
        jax.debug.callback(_tick)
        return jax.tree.map(lambda g: -g, jax.grad(problem.loss)(params))


def main(n: int, seed: int, solver: str, rtol: float) -> dict:
    c = flowsim.Config(
        "sensitivity", target="parity", n=n, seed=seed, stop_loss=1e-3, fit_loss=1e-3, sharpness=1,
        lr=1e-3, steps=400_000, batch_size=1, solver=solver, rtol=rtol, atol=rtol * 1e-3,
        max_steps=40_000, n_save_log=30, n_save_lin=30, precision="float64",
    )  # fmt: skip
    s = flowsim.setup(c)
    t0 = time.perf_counter()
    flow = flowsim.run_flow(s, dynamics=CountingFlow())
    wall = time.perf_counter() - t0
    st = flow.step_stats
    assert st is not None
    lam = flow.obs["lambda_max"]
    return dict(
        n=n, seed=seed, solver=solver, rtol=rtol, result=flow.result, stopped_by=flow.stopped_by,
        t_reached=flow.t_reached, evals=COUNT[0], accepted=st.accepted, rejected=st.rejected,
        escape=flow.events["escape"].time, lambda_max=float(np.max(lam[np.isfinite(lam)])),
        h_lambda_median=float(np.nanmedian(st.h_lambda(flow.ts, lam))), wall_s=round(wall, 1),
    )  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4]))))
