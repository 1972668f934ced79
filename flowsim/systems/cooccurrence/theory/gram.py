"""The exact reduced system of the co-occurrence transformer: gradient flow on the Gram matrix.

With one-hot embeddings the loss depends on the weights only through S = W_K^T W_Q (d, d) and
G = u^T W_V (d,), u = W^T a. With `a` fixed, the gradient flow on (W_Q, W_K, W_V, W) moves the
columns C = [W_Q, W_K, W_V, u] (m, 3d+1) by dC/dt = C B(A, g), where A = dL/dS and g = dL/dG, so
their Gram matrix M = C^T C obeys the closed ODE

    dM/dt = M B + (M B)^T,   B[K,Q] = -A, B[Q,K] = -A^T, B[u,V] = -g^T, B[V,u] = -m1 g

(m1 = a^T a). Its size, (3d+1)^2, does not depend on the widths m and m1: m enters only through
the softmax scale 1/sqrt(m), m1 only through the constant above, and both through the law of M(0)
(`wishart_gram`). Derivation: `theory/reduced_system.md`.

Ordering of the 3d+1 columns (index blocks of M): Q = [0, d), K = [d, 2d), V = [2d, 3d), u = 3d.
So S = M[K, Q] (key a, query b, as `CooccurrenceTransformer.scores`), G = M[u, V],
v_ab = M[V_a, V_b], N = M[u, u].

Usage (same `integrate`, observables compared name by name with `CooccurrenceObserver`):

    >>> rp = reduce_problem(s.problem)                          # or gram_problem(wishart_gram(...), ...)
    >>> sol = integrate(ReducedGramFlow(), rp, ts, GramObserver.at_init(rp, s.data.kind))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
from jaxtyping import Array, Float, Int, PyTree

from ...._dynamics import AbstractFlow
from ...._losses import logistic_loss
from ...._problem import Problem
from ..model import CooccurrenceTransformer
from ..observables import SCORE_PAIRS, VALUE_PAIRS, CooccurrenceObserver


def blocks(d: int) -> tuple[slice, slice, slice, int]:
    """Index blocks (Q, K, V, u) of the (3d+1) columns of C = [W_Q, W_K, W_V, u]."""
    return slice(0, d), slice(d, 2 * d), slice(2 * d, 3 * d), 3 * d


def gram_of(model: CooccurrenceTransformer) -> Float[Array, "p p"]:
    """M = C^T C with C = [W_Q, W_K, W_V, u] (m, 3d+1), u = W^T a (ordering: module docstring)."""
    C = jnp.concatenate([model.W_Q, model.W_K, model.W_V, model.u()[:, None]], axis=1)
    return _sym(C.T @ C)


def _sym(M: Array) -> Array:
    """(M + M^T)/2: exactly symmetric in floating point (a matmul C^T C need not be)."""
    return 0.5 * (M + M.T)


def surrogate(S: Float[Array, "d d"], G: Float[Array, " d"], m: int | float | Array) -> CooccurrenceTransformer:
    """A width-d `CooccurrenceTransformer` with the same outputs as any width-m model with scores S and
    MLP function G, so the reduced loss runs through the model's own forward pass (no copy of it).

    W_Q = sqrt(d/m) I and W_K = S^T give scores sqrt(d/m) S, which the model divides by sqrt(d):
    S / sqrt(m). W_V = [G; 0] (d, d), W = [e_1^T] (1, d), a = [1] give u = e_1 and u^T W_V = G exactly
    (the model's widths: m = d for W_Q, W_K, W_V and W's columns, m1 = 1).
    """
    d = S.shape[0]
    W_V = jnp.zeros((d, d), S.dtype).at[0].set(G)
    e1 = jnp.zeros((1, d), S.dtype).at[0, 0].set(1.0)
    return CooccurrenceTransformer(
        W_Q=jnp.sqrt(d / m) * jnp.eye(d, dtype=S.dtype), W_K=S.T, W_V=W_V, W=e1, a=jnp.ones((1,), S.dtype)
    )


def loss_from_SG(
    S: Float[Array, "d d"],
    G: Float[Array, " d"],
    tokens: Int[Array, "n L"],
    y: Float[Array, " n"],
    m: int | float | Array,
    loss_fn: Callable[[Array, Array], Array] = logistic_loss,
) -> Float[Array, ""]:
    """Empirical loss (1/n) sum_i loss_fn(F(X_i), y_i) as a function of S = W_K^T W_Q and G = u^T W_V only."""
    out = jax.vmap(surrogate(S, G, m))(tokens)
    return jnp.mean(jax.vmap(loss_fn)(out, y))


@final
class GramModel(eqx.Module):
    """The reduced model: Gram matrix `M` (3d+1, 3d+1) plus the widths `m` and `m1` (= a^T a).

    `m` and `m1` are arrays (kept in the problem's frozen part), so one compiled solve serves every
    width. Calling it on tokens gives the same F(X) as the full model it reduces.
    """

    M: Float[Array, "p p"]
    m: Float[Array, ""]
    m1: Float[Array, ""]

    @property
    def d(self) -> int:
        return (self.M.shape[0] - 1) // 3

    def S(self) -> Float[Array, "d d"]:
        Q, K, _, _ = blocks(self.d)
        return self.M[K, Q]

    def G(self) -> Float[Array, " d"]:
        _, _, V, u = blocks(self.d)
        return self.M[u, V]

    def surrogate(self) -> CooccurrenceTransformer:
        return surrogate(self.S(), self.G(), self.m)

    def __call__(self, tokens: Int[Array, " L"]) -> Float[Array, ""]:
        return self.surrogate()(tokens)

    def trainable(self) -> PyTree[bool]:
        """Filter spec of the reduced problem: M is trained, the widths m and m1 are frozen."""
        return eqx.tree_at(lambda g: g.M, jax.tree.map(lambda _: False, self), replace=True)


def gram_problem(
    M0: Float[Array, "p p"],
    m: int | float | Array,
    m1: int | float | Array,
    tokens: Int[Array, "n L"],
    y: Float[Array, " n"],
    loss_fn: Callable[[Array, Array], Array] = logistic_loss,
) -> Problem:
    """A `Problem` over the reduced model: `params0` holds M0 (the only trained leaf), `frozen` the widths
    m, m1 (= a^T a; numbers or 0-d arrays, stored as arrays of M0's dtype)."""
    M0 = jnp.asarray(M0)
    if M0.ndim != 2 or M0.shape[0] != M0.shape[1] or (M0.shape[0] - 1) % 3:
        raise ValueError(f"M0 must be square of size 3d+1, got shape {M0.shape}")
    model = GramModel(M0, jnp.asarray(m, M0.dtype), jnp.asarray(m1, M0.dtype))
    params, frozen = eqx.partition(model, model.trainable())
    return Problem(params, frozen, jnp.asarray(tokens), jnp.asarray(y, M0.dtype), loss_fn)


def reduce_problem(problem: Problem) -> Problem:
    """The reduced problem of a full co-occurrence `Problem` (same data, loss, and initial point).

    Raises `ValueError` if `a` is trainable (the reduction needs `a` fixed).
    """
    if problem.params0.a is not None:
        raise ValueError("the Gram reduction needs `a` fixed (train_a=False); got a trainable `a`")
    model = problem.model(problem.params0)
    return gram_problem(gram_of(model), model.m, model.a @ model.a, problem.inputs, problem.targets, problem.loss_fn)


@final
class ReducedGramFlow(AbstractFlow):
    """dM/dt = M B + (M B)^T: the full gradient flow in Gram coordinates (exact, not an approximation).

    Integrate it on a problem from [`reduce_problem`][] or [`gram_problem`][]; the state is the
    problem's trainable part, a `GramModel` whose only leaf is M (so `initial_state` and `params` are
    the defaults: the state is M0, and observers receive it).
    """

    def vector_field(self, t: float | Array, state: GramModel, problem: Problem) -> GramModel:
        model = problem.model(state)
        M, d = model.M, model.d
        Q, K, V, u = blocks(d)
        A, g = jax.grad(loss_from_SG, argnums=(0, 1))(
            model.S(), model.G(), problem.inputs, problem.targets, model.m, problem.loss_fn
        )
        B = jnp.zeros_like(M)
        B = B.at[K, Q].set(-A).at[Q, K].set(-A.T).at[u, V].set(-g).at[V, u].set(-model.m1 * g)
        MB = M @ B
        return eqx.tree_at(lambda s: s.M, state, MB + MB.T)


@final
class GramObserver(eqx.Module):
    """The tracked quantities of `flowsim.systems.cooccurrence.observables` computed from M, under the same names.

    Everything that depends on the outputs and attention (losses, margins, S_k, R, p_*, attn_*, G*)
    is `CooccurrenceObserver` applied to the width-d surrogate model; N, score_ab and v_ab are read
    from M (the surrogate does not carry them).
    """

    inner: CooccurrenceObserver

    @classmethod
    def at_init(cls, problem: Problem, kind: Array) -> GramObserver:
        return cls(CooccurrenceObserver.at_init(_surrogate_problem(problem, problem.params0), kind))

    def __call__(self, t: float | Array, params: GramModel, problem: Problem) -> dict[str, Array]:
        sp = _surrogate_problem(problem, params)
        obs = self.inner(t, sp.params0, sp)
        model = problem.model(params)
        M, S = model.M, model.S()
        _, _, V, u = blocks(model.d)
        obs["N"] = M[u, u]
        for a, b in SCORE_PAIRS:
            obs[f"score_{a}{b}"] = S[a - 1, b - 1]
        vv = M[V, V]
        for a, b in VALUE_PAIRS:
            obs[f"v_{a}{b}"] = vv[a - 1, b - 1]
        return obs


def _surrogate_problem(problem: Problem, params: PyTree) -> Problem:
    sur = problem.model(params).surrogate()
    return Problem(sur, jax.tree.map(lambda _: None, sur), problem.inputs, problem.targets, problem.loss_fn)


def wishart_gram(
    key: Array, d: int, m: int, m1: int, sigma0: float, sigma1: float, dtype: DTypeLike = jnp.float64
) -> Float[Array, "p p"]:
    """Draw M(0) = C^T C from its law under the theory init, at a cost independent of m.

    W_Q, W_K, W_V iid N(0, sigma0^2) and W iid N(0, sigma1^2) with a in {+-1}^m1 make C (m, 3d+1)
    Gaussian with independent columns, variances sigma0^2 (3d columns) and sigma1^2 m1 (u = W^T a).
    So M = D Z^T Z D with D = diag of the column scales and Z^T Z ~ Wishart_p(I, m), p = 3d+1, drawn by
    the Bartlett decomposition Z^T Z = T T^T (T lower triangular, T_ii^2 ~ chi^2(m - i), i = 0..p-1,
    T_ij ~ N(0, 1) below the diagonal): O(p^3) work. Needs m >= p (`ValueError` otherwise).
    """
    p = 3 * d + 1
    if m < p:
        raise ValueError(f"wishart_gram needs m >= 3d+1 = {p} (the Bartlett draw), got m={m}")
    kc, kn = jax.random.split(key)
    df = jnp.asarray(m, dtype) - jnp.arange(p, dtype=dtype)
    diag = jnp.sqrt(2.0 * jax.random.gamma(kc, df / 2, dtype=dtype))
    T = jnp.tril(jax.random.normal(kn, (p, p), dtype), -1) + jnp.diag(diag)
    scale = jnp.concatenate([jnp.full((3 * d,), sigma0, dtype), jnp.full((1,), sigma1 * m1**0.5, dtype)])
    return _sym(scale[:, None] * (T @ T.T) * scale[None, :])
