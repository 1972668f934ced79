"""Tracked quantities of the co-occurrence transformer (spec sections 4-5), recorded along any run.

An observer is any callable `(t, params, problem) -> dict[str, Array]`; the flow records it through
`diffrax.SaveAt(fn=...)` and the discrete runs call the same function at the same times, so every
comparison is between identical definitions.

Names (all scalars unless noted): `loss`, `loss_type1..4`, `per_sample_loss` (n,), `margin` (n,),
`min_margin`; `G1, G2, G3` = G(mu_k) = u^T W_V mu_k, `G_rand_max`, `G_rand_min` over random tokens;
`N` = ||W^T a||^2; `score_ab` = mu_a^T W_K^T W_Q mu_b (key a, query b) for a, b in 1..3; `v_ab` =
mu_a^T W_V^T W_V mu_b for a <= b; `p_q1_k2`, `p_q2_k1` (mean softmax weight from the query at one
target to the key at the other, over type-1 samples), `p_k3` (mean weight on the mu_3 key),
`attn_dev` = max |p - 1/L|, `attn_disp` = max |p(t) - p(0)|; `S1..S4` = sum of g_i over each type
(g = 1/(1+e^margin)), `S2_over_S3`, `R` = (S2+S3+S4-S1)/(S1-S2), `g_ratio_type1..4` = max/min of
g_i within a type; `R_star` the fixed point R is pulled to (`balance_fixed_point`).
"""

from __future__ import annotations

from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree

from ..._problem import Problem
from .data import MU1, MU2, MU3, N_SPECIAL

TYPES = (1, 2, 3, 4)
SCORE_PAIRS = tuple((a, b) for a in (1, 2, 3) for b in (1, 2, 3))
VALUE_PAIRS = ((1, 1), (1, 2), (1, 3), (2, 2), (2, 3), (3, 3))


def _attention(model, tokens: Int[Array, "n L"]) -> Float[Array, "n L L"]:
    return jax.vmap(model.attention)(tokens)


_attention_jit = eqx.filter_jit(_attention)


@final
class CooccurrenceObserver(eqx.Module):
    """Computes every tracked quantity of the co-occurrence transformer.

    **Fields:** `kind` (n,) sample types 1-4 of the training set; `p0` (n, L, L) attention weights at
    t = 0 (for `attn_disp`); `overlap` (n, n) the random-token overlap of the training set (for
    `R_star_random`; `random_token_overlap`). Build with [`CooccurrenceObserver.at_init`][].
    """

    kind: Int[Array, " n"]
    p0: Float[Array, "n L L"]
    overlap: Float[Array, "n n"]

    @classmethod
    def at_init(cls, problem: Problem, kind: Array) -> CooccurrenceObserver:
        """The observer of `problem`, holding its initial model's attention patterns and the random-token
        overlap of its samples; `kind`: each sample's type (1-4)."""
        model = problem.model(problem.params0)
        p0 = _attention_jit(model, problem.inputs)
        overlap = random_token_overlap(problem.inputs, problem.targets, model.W_V.shape[1])
        return cls(jnp.asarray(kind), p0, overlap)

    def __call__(self, t: float | Array, params: PyTree, problem: Problem) -> dict[str, Array]:
        """The tracked quantities at `params` (they do not depend on the time `t`)."""
        model = problem.model(params)
        tokens = problem.inputs
        obs = margin_observables(problem.targets * problem.outputs(params), self.kind, self.overlap)
        Gv = model.G()
        obs.update(
            G1=Gv[MU1], G2=Gv[MU2], G3=Gv[MU3], G_rand_max=jnp.max(Gv[N_SPECIAL:]), G_rand_min=jnp.min(Gv[N_SPECIAL:])
        )
        u = model.u()
        obs["N"] = u @ u
        sc = model.scores()
        for a, b in SCORE_PAIRS:
            obs[f"score_{a}{b}"] = sc[a - 1, b - 1]
        V3 = model.W_V[:, :3]
        vv = V3.T @ V3
        for a, b in VALUE_PAIRS:
            obs[f"v_{a}{b}"] = vv[a - 1, b - 1]
        p = _attention(model, tokens)
        L = tokens.shape[1]
        is1, is2, is3 = ((tokens == mu).astype(p.dtype) for mu in (MU1, MU2, MU3))
        both = (self.kind == 1).astype(p.dtype)
        q1k2 = jnp.einsum("nlh,nl,nh->n", p, is1, is2)
        q2k1 = jnp.einsum("nlh,nl,nh->n", p, is2, is1)
        obs["p_q1_k2"] = (q1k2 @ both) / both.sum()
        obs["p_q2_k1"] = (q2k1 @ both) / both.sum()
        obs["p_k3"] = jnp.mean(jnp.einsum("nlh,nh->nl", p, is3))
        obs["attn_dev"] = jnp.max(jnp.abs(p - 1.0 / L))
        obs["attn_disp"] = jnp.max(jnp.abs(p - self.p0))
        return obs


def margin_observables(
    margin: Float[Array, " n"], kind: Int[Array, " n"], overlap: Float[Array, "n n"] | None = None
) -> dict[str, Array]:
    """Everything that depends on the margins y_i F(X_i) and sample types alone: `loss`,
    `loss_type1..4`, `per_sample_loss`, `margin`, `min_margin`, `S1..S4`, `S2_over_S3`, `R`,
    `R_star` (the paper's balancing fixed point, `balance_fixed_point`), `g_ratio_type1..4`; with the
    random-token `overlap` (`random_token_overlap`) also `R_star_random`, the fixed point with the
    random tokens' own G counted.

    Shared by the full model's observer and the reduced systems of `flowsim.systems.cooccurrence.theory`, whose states
    carry margins but no weights.
    """
    ell = jax.nn.softplus(-margin)
    g = jax.nn.sigmoid(-margin)
    onehot = _onehot(kind, margin.dtype)
    count = onehot.sum(0)
    S = g @ onehot
    obs: dict[str, Array] = {
        "loss": jnp.mean(ell),
        "per_sample_loss": ell,
        "margin": margin,
        "min_margin": jnp.min(margin),
    }
    for k in TYPES:
        obs[f"loss_type{k}"] = (ell @ onehot[:, k - 1]) / count[k - 1]
    for k in TYPES:
        obs[f"S{k}"] = S[k - 1]
        gk = jnp.where(onehot[:, k - 1] > 0, g, jnp.nan)
        obs[f"g_ratio_type{k}"] = jnp.nanmax(gk) / jnp.nanmin(gk)
    obs["S2_over_S3"] = S[1] / S[2]
    obs["R"] = (S[1] + S[2] + S[3] - S[0]) / (S[0] - S[1])
    obs["R_star"] = balance_fixed_point(margin, kind)
    if overlap is not None:
        obs["R_star_random"] = balance_fixed_point(margin, kind, overlap)
    return obs


def _onehot(kind: Int[Array, " n"], dtype) -> Float[Array, "n 4"]:
    return (kind[:, None] == jnp.asarray(TYPES)[None, :]).astype(dtype)


def balance_fixed_point(
    margin: Float[Array, " n"], kind: Int[Array, " n"], overlap: Float[Array, "n n"] | None = None
) -> Float[Array, ""]:
    """R*: the positive root of a R^2 + b R + c (Lem. 4.5/F.6), the value R(t) is pulled towards.

    With D_k = sum over type k of |g'(z_i)| = g_i (1 - g_i): a = D1 + D2, b = D3 + D4 - D1,
    c = -(2 D1 + D2 + D3) (derivation: `theory/balancing.md`). c < 0 < a, so the root is unique;
    it lies in (1, 2) iff D4 < 2 D1. With the random-token `overlap` Omega the margins also move by
    (N/n) Omega g, which adds E_k = sum over type k of g_i (1 - g_i) (Omega g)_i: b -= (E1 - E2)/Q and
    c += (E2 + E3 + E4 - E1)/Q with Q = S1 - S2 (nan if that leaves no positive root).
    """
    g = jax.nn.sigmoid(-margin)
    onehot = _onehot(kind, margin.dtype)
    w = g * (1 - g)
    D = w @ onehot
    a, b, c = D[0] + D[1], D[2] + D[3] - D[0], -(2 * D[0] + D[1] + D[2])
    if overlap is not None:
        E = (w * (overlap @ g)) @ onehot
        S = g @ onehot
        Q = S[0] - S[1]
        b = b - (E[0] - E[1]) / Q
        c = c + (E[1] + E[2] + E[3] - E[0]) / Q
    root = (-b + jnp.sqrt(b * b - 4 * a * c)) / (2 * a)
    return jnp.where(root > 0, root, jnp.nan)


def random_token_overlap(tokens: Int[Array, "n L"], y: Float[Array, " n"], d: int | None = None) -> Float[Array, "n n"]:
    """Omega_ij = y_i y_j sum_r count_i(r) count_j(r) over the random tokens r (diagonal for distinct
    tokens): how sample j's gradient moves sample i's margin through the random tokens they share.
    `d` is the vocabulary size (default: the largest token + 1, which needs concrete tokens)."""
    d = int(jnp.max(tokens)) + 1 if d is None else d
    counts = jax.nn.one_hot(tokens, d, dtype=y.dtype).sum(1)[:, N_SPECIAL:]
    return (y[:, None] * y[None, :]) * (counts @ counts.T)
