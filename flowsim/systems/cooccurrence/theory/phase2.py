"""The paper's Phase-2 approximate system (Def. F.1 / Lem. F.6) and its two Phase-2 predictions:
the loss law L(t) = 1/(c N (t - T1) + 1/L(T1)) (Thm. F.8) and automatic balancing (Lem. 4.4/4.5).

In Phase 2 the paper replaces the gradient flow by a small system driven by the per-type gradient
sums S_k = sum_{i in I_k} g_i (g_i = 1/(1 + e^{z_i}), z_i = y_i F_i the margin):

    dG1/dt = (N/n)(S1 - S2),  dG2/dt = (N/n)(S1 - S3),  dG3/dt = (N/n)(S1 - S2 - S3 - S4),
    dz_i/dt = (N/n) c_k(S) for i in I_k, with c = (3S1 - S234 - S23, S234 + S2 - 2S1,
                                                  S234 + S3 - 2S1, S234 - S1),
    dN/dt = (2 m1/n) sum_i g_i z_i            (exact, Lem. F.4),

(S234 = S2 + S3 + S4, S23 = S2 + S3), i.e. uniform attention, the value term m1 W_V^T W_V g and
random tokens dropped. `Phase2System` integrates it with `flowsim.integrate` from the full (or
exact reduced) flow's state at T1 (`phase2_problem`), so it can be laid over the flow after T1
(`compare_phase2`). Derivations: `theory/phase2_system.md`, `theory/loss_law.md`, `theory/balancing.md`.
"""

from __future__ import annotations

from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PyTree

from ...._dynamics import AbstractFlow
from ...._integrate import integrate
from ...._losses import logistic_loss
from ...._problem import Problem, make_problem
from ...._solution import FlowSolution
from ...._verdicts import loglog_slope, rel_gap
from ..model import CooccurrenceTransformer
from ..observables import TYPES, margin_observables, random_token_overlap
from .gram import GramModel, blocks

COMPARED_PHASE2 = ("loss", "min_margin", "G1", "G2", "G3", "N", "S1", "S2", "S3", "S4", "R")


@final
class Phase2Model(eqx.Module):
    """State of the Phase-2 system as a model over sample indices: output `F[i]` for input i.

    Trained leaves: `F` (n,) outputs F(X_i), `G` (3,) = G(mu1), G(mu2), G(mu3), `N` = ||W^T a||^2.
    Frozen: `kind` (n,) sample types 1-4, `m1` = a^T a, and `overlap` (n, n): y_i y_j times the number
    of random-token occurrences samples i and j share (zero for the paper's system). Since the model
    maps index i to F_i, the problem's loss, margins and the `min_margin` event mean what they mean for the full model.
    """

    F: Float[Array, " n"]
    G: Float[Array, " 3"]
    N: Float[Array, ""]
    kind: Int[Array, " n"] | None
    m1: Float[Array, ""] | None
    overlap: Float[Array, "n n"] | None

    def __call__(self, i: Int[Array, ""]) -> Float[Array, ""]:
        return self.F[i]

    def trainable(self) -> PyTree[bool]:
        """Filter spec of the Phase-2 problem: F, G and N are trained; kind, m1 and overlap are frozen."""
        spec = jax.tree.map(lambda _: True, self)
        return eqx.tree_at(lambda p: (p.kind, p.m1, p.overlap), spec, replace=(False, False, False))


def _type_sums(problem: Problem, state: Phase2Model) -> tuple[Array, Array, Array, Phase2Model]:
    model = problem.model(state)
    assert model.kind is not None  # frozen leaf, set by phase2_problem
    z = problem.targets * model.F
    g = jax.nn.sigmoid(-z)
    onehot = (model.kind[:, None] == jnp.asarray(TYPES)[None, :]).astype(z.dtype)
    return z, g, onehot, model


@final
class Phase2System(AbstractFlow):
    """Def. F.1 / Lem. F.6: G1, G2, G3, the margins and N driven by S_k (module docstring).

    Integrate it on a problem from [`phase2_problem`][]; the state is that problem's `Phase2Model`.
    With `phase2_problem(..., random_tokens=True)` the margins also get the term the paper drops as
    o(1): each random token's own G moves at (N/n) sum_{j contains it} g_j y_j, and that moves the
    margin of every sample containing it ((N/n) overlap @ g).
    """

    def vector_field(self, t: float | Array, state: Phase2Model, problem: Problem) -> Phase2Model:
        z, g, onehot, model = _type_sums(problem, state)
        assert model.overlap is not None and model.m1 is not None  # frozen leaves, set by phase2_problem
        S1, S2, S3, S4 = g @ onehot
        S234 = S2 + S3 + S4
        rate = model.N / problem.n
        dG = rate * jnp.stack([S1 - S2, S1 - S3, S1 - S234])
        c = jnp.stack([3 * S1 - S234 - S2 - S3, S234 + S2 - 2 * S1, S234 + S3 - 2 * S1, S234 - S1])
        dz = rate * (onehot @ c + model.overlap @ g)
        dN = 2 * model.m1 / problem.n * (g @ z)
        return Phase2Model(problem.targets * dz, dG, dN, None, None, None)


def _G_N_m1(model: CooccurrenceTransformer | GramModel) -> tuple[Array, Array, Array]:
    """(G(mu1..mu3), N, m1) of a full or exact-reduced co-occurrence model."""
    if isinstance(model, GramModel):
        u = blocks(model.d)[3]
        return model.G()[:3], model.M[u, u], model.m1
    u = model.u()
    return model.G()[:3], u @ u, model.a @ model.a


def phase2_problem(problem: Problem, params: PyTree, kind: Array, random_tokens: bool = False) -> Problem:
    """The Phase-2 system's problem started at `params` (e.g. the flow's state at T1) of a full
    co-occurrence problem or of an exact reduced one (`flowsim.systems.cooccurrence.theory.reduce_problem`).

    F, G(mu1..3) and N are taken from the model at `params`; `kind` gives the sample types;
    `random_tokens` keeps the random tokens' contribution to the margins (see `Phase2System`).
    """
    model = problem.model(params)
    G, N, m1 = _G_N_m1(model)
    F = problem.outputs(params)
    if random_tokens:
        overlap = random_token_overlap(problem.inputs, problem.targets)
    else:
        overlap = jnp.zeros((problem.n, problem.n), F.dtype)
    p2 = Phase2Model(F, G, N, jnp.asarray(kind), jnp.asarray(m1, F.dtype), overlap)
    return make_problem(p2, jnp.arange(problem.n), problem.targets, logistic_loss, p2.trainable())


def phase2_observer(t: float | Array, params: Phase2Model, problem: Problem) -> dict[str, Array]:
    """`flowsim.systems.cooccurrence.observables.margin_observables` plus G1, G2, G3 and N, under the full model's names
    (`R_star_random` is the fixed point of this system: equal to `R_star` without random tokens)."""
    model = problem.model(params)
    obs = margin_observables(problem.targets * model.F, model.kind, model.overlap)
    obs.update(G1=model.G[0], G2=model.G[1], G3=model.G[2], N=model.N)
    return obs


def compare_phase2(
    flow: FlowSolution,
    problem: Problem,
    kind: Array,
    *,
    random_tokens: bool = False,
    rtol: float = 1e-8,
    atol: float = 1e-10,
) -> dict[str, Any]:
    """Run the Phase-2 system from the flow's state at T1 and compare it with the flow after T1.

    `flow` must come from `integrate(..., event=min_margin)` on `problem` (full or exact reduced)
    with an observer that records the names of `COMPARED_PHASE2` (`CooccurrenceObserver` or
    `GramObserver`). Errors are taken at the flow's save times after T1: pointwise relative for the
    positive quantities (loss, N, S_k), relative to the window's max |value| for the signed ones.

    **Returns** a dict: `t1`, `ts` (T1 and the later save times), `approx` and `flow` (observables on
    `ts`), `max_rel_error` per name, `worst` (name and value), `result` (the diffrax result) and
    `value_term_ratio` = m1 mean_k ||W_V mu_k||^2 / N at T1: the size of the dropped value term of
    dG/dt (m1 W_V^T W_V g) relative to the kept one (N g); the system is a good approximation
    only where it is small, i.e. m >> m1/L under the theory init (`theory/phase2_system.md`).
    Raises `ValueError` if the flow's event did not fire.
    """
    event_params, event_obs = flow.event_params, flow.event_obs
    if event_params is None or event_obs is None:
        raise ValueError("compare_phase2 needs a flow whose Phase-1 event (min_margin) fired")
    t1 = float(flow.event_time)
    later = flow.ts > t1
    if later.sum() < 1:
        raise ValueError(f"no save time after T1 = {t1:.4g}")
    ts = np.concatenate([[t1], flow.ts[later]])
    p2 = phase2_problem(problem, event_params, kind, random_tokens)
    sol = integrate(Phase2System(), p2, jnp.asarray(ts), phase2_observer, rtol=rtol, atol=atol)
    ref = {k: np.concatenate([[event_obs[k]], flow.obs[k][later]]) for k in COMPARED_PHASE2}
    approx = {k: sol.obs[k] for k in COMPARED_PHASE2}
    positive = {"loss", "N", "S1", "S2", "S3", "S4"}
    errors = {k: rel_gap(approx[k][1:], ref[k][1:], k in positive) for k in COMPARED_PHASE2}
    worst = max(errors, key=lambda k: errors[k])
    v = np.mean([event_obs[f"v_{k}{k}"] for k in (1, 2, 3)])
    return {
        "t1": t1,
        "ts": ts,
        "approx": approx,
        "flow": ref,
        "max_rel_error": errors,
        "worst": (worst, errors[worst]),
        "result": sol.result,
        "value_term_ratio": float(p2.frozen.m1 * v / event_obs["N"]),
    }


def loss_law_fit(
    t: np.ndarray,
    obs: dict[str, np.ndarray],
    t1: float,
    at_t1: dict[str, Any],
    kind: np.ndarray | Array,
    overlap: np.ndarray | Array | None = None,
) -> dict[str, float]:
    """Fit Thm. F.8's law 1/L(t) = c int_{T1}^t N ds + 1/L(T1) to a run's loss after T1.

    `obs` holds `loss`, `N` and `margin` on the save times `t`; `at_t1` the same names at T1; `kind`
    the sample types. One parameter, c, by least squares through the origin of 1/L(t) - 1/L(T1) on
    X(t) = int N ds (trapezoid on the save grid, from the state at T1); also `c_const` with the paper's
    constant N = N(T1), X = N(T1)(t - T1). The law holds if c is constant: `c_first_half` and
    `c_second_half` are the same fit on each half of the Phase-2 save times; `max_rel_error` is the
    max relative error of the fitted law on the loss. `slope`, `ci95`: log-log slope of L vs t - T1
    on [T/10, T] (predicted -1 once c N (t - T1) >> 1/L(T1), if N is constant).

    Predicted constants from the margins at T (`theory/loss_law.md`): `c_paper_T` = Phi(S) / (n L)^2,
    Phi = (S1-S2)^2 + (S1-S3)^2 + (S1-S2-S3-S4)^2, what the paper's Phase-2 system gives; with
    `overlap` (`random_token_overlap`) also `c_random_T` = (Phi + g^T overlap g) / (n L)^2, which adds
    the random tokens' own G.
    """
    sel = t > t1
    loss_t1, N_t1 = float(at_t1["loss"]), float(at_t1["N"])
    tt = np.concatenate([[t1], t[sel]])
    ll = np.concatenate([[loss_t1], obs["loss"][sel]])
    nn = np.concatenate([[N_t1], obs["N"][sel]])
    X = np.concatenate([[0.0], np.cumsum(0.5 * (nn[1:] + nn[:-1]) * np.diff(tt))])[1:]
    Y = 1.0 / ll[1:] - 1.0 / loss_t1
    X_const = N_t1 * (tt[1:] - t1)

    def fit(x: np.ndarray, y: np.ndarray) -> float:
        return float(x @ y / (x @ x))

    c = fit(X, Y)
    half = len(X) // 2
    pred = 1.0 / (c * X + 1.0 / loss_t1)
    T = float(tt[-1])
    window = tt[1:] >= T / 10
    slope, ci = loglog_slope(tt[1:][window] - t1, ll[1:][window])
    g = 1.0 / (1.0 + np.exp(np.asarray(obs["margin"][-1], float)))
    kind = np.asarray(kind)
    S1, S2, S3, S4 = (g[kind == k].sum() for k in TYPES)
    phi = (S1 - S2) ** 2 + (S1 - S3) ** 2 + (S1 - S2 - S3 - S4) ** 2
    scale = (len(kind) * ll[-1]) ** 2
    out = {
        "c": c,
        "c_const": fit(X_const, Y),
        "c_first_half": fit(X[:half], Y[:half]),
        "c_second_half": fit(X[half:], Y[half:]),
        "c_paper_T": float(phi / scale),
        "max_rel_error": float(np.max(np.abs(pred / ll[1:] - 1.0))),
        "slope": float(slope),
        "ci95": float(ci),
        "loss_T1": loss_t1,
        "loss_T": float(ll[-1]),
        "N_T1": N_t1,
        "N_T": float(nn[-1]),
    }
    if overlap is not None:
        out["c_random_T"] = float((phi + g @ np.asarray(overlap) @ g) / scale)
    return out


def balancing_summary(t: np.ndarray, obs: dict[str, np.ndarray], t1: float) -> dict[str, float]:
    """Lem. 4.4/4.5 and Cor. F.2 on the save times after T1: the range of S2/S3, of R and of its
    fixed point R* (`flowsim.systems.cooccurrence.observables.balance_fixed_point`), R - R* at the end, and the largest
    within-type ratio g_i/g_j. If `obs` has `R_star_random` (the fixed point with the random tokens'
    term): its final value, R - R*_random at the end and max |R - R*_random| over the second half."""
    sel = t > t1
    r23, R, Rs = obs["S2_over_S3"][sel], obs["R"][sel], obs["R_star"][sel]
    extra = {}
    if "R_star_random" in obs:
        Rr = obs["R_star_random"][sel]
        extra = {
            "R_star_random_T": float(Rr[-1]),
            "R_minus_R_star_random_T": float(R[-1] - Rr[-1]),
            "R_minus_R_star_random_max": float(np.nanmax(np.abs(R - Rr)[len(R) // 2 :])),
        }
    return {
        "S2_over_S3_worst": float(np.max(np.maximum(r23, 1 / r23))),
        "R_min": float(np.min(R)),
        "R_max": float(np.max(R)),
        "R_T": float(R[-1]),
        "R_star_min": float(np.min(Rs)),
        "R_star_max": float(np.max(Rs)),
        "R_star_T": float(Rs[-1]),
        "R_minus_R_star_T": float(R[-1] - Rs[-1]),
        "g_ratio_max": float(max(np.max(obs[f"g_ratio_type{k}"][sel]) for k in TYPES)),
        **extra,
    }
