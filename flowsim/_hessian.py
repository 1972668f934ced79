"""Curvature of the loss along a run: Hessian-vector products, top-k Hessian eigenvalues by Lanczos,
and [`Sharpness`][flowsim.Sharpness], an observer wrapper that records the sharpness (largest Hessian
eigenvalue) next to any observer's quantities.

Everything is pure JAX with static sizes (a `lax.fori_loop` of fixed length, no host callbacks), so
it runs inside diffrax's `SaveAt(fn=...)`, inside the discrete runs' `lax.scan` and under `vmap` over
SGD seeds. No P x P matrix is formed except by [`dense_hessian`][flowsim.dense_hessian] (for tests
and small models).

**Lanczos.** On the raveled parameter vector (`jax.flatten_util.ravel_pytree`, P entries), with
m = min(iters, P) steps (static) and full reorthogonalisation (classical Gram-Schmidt, twice, against
every stored vector), which keeps the basis orthonormal to rounding, so the Ritz values are the
Rayleigh-Ritz values of the Hessian on the Krylov space. The start vector is deterministic: the
pseudo-random vector `_hash_vector(P, seed * (m + 1))` (an integer hash of the index, uniform in
[-1/2, 1/2); `seed` = 0 by default), normalised. Breakdown: when the new residual is at rounding
level (its norm <= m * eps * |H v|: the Krylov space is exhausted, or H v = 0), the next basis vector
is the hashed vector of seed * (m + 1) + j + 1 orthogonalised against the basis (a restart), and the
tridiagonal entry is the exact coupling `<w, v_next>` (~ 0): the Ritz values stay Rayleigh-Ritz
values (to within that residual's norm) and nothing is divided by zero. With m = P this returns the
whole spectrum to rounding. A repeated eigenvalue shows up once per Krylov space (a second copy only
after a restart or through rounding). Memory: the (m + 1, P) basis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Int, PyTree

from ._problem import Problem

SHARPNESS_KEYS = ("lambda_max", "hessian_top", "hessian_residual", "eos_ratio")


def hvp(problem: Problem, params: PyTree, v: PyTree, idx: Int[Array, " b"] | None = None) -> PyTree:
    """The Hessian-vector product H(params) v of `problem.loss`, forward-over-reverse (`jax.jvp` of
    `jax.grad`): one gradient's cost, no Hessian formed.

    **Arguments:** `problem`: the `Problem`; `params`: its trainable PyTree (frozen leaves `None`);
    `v`: a PyTree of `params`' structure, shapes and dtypes; `idx`: optional minibatch indices (the
    Hessian of the minibatch loss `problem.loss(params, idx)`).

    **Returns:** H v, a PyTree like `params`.
    """

    def grad(p: PyTree) -> PyTree:
        return jax.grad(problem.loss)(p, idx)

    return jax.jvp(grad, (params,), (v,))[1]


def dense_hessian(problem: Problem, params: PyTree, idx: Int[Array, " b"] | None = None) -> Float[Array, "P P"]:
    """The full Hessian of `problem.loss` in the raveled parameters (`ravel_pytree` order), with
    `jax.hessian`. P x P memory and P Hessian-vector products: for tests and small models only.

    **Arguments:** `problem`, `params`, `idx` as for [`hvp`][flowsim.hvp].

    **Returns:** the symmetric (P, P) Hessian.
    """
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda f: problem.loss(unravel(f), idx))(flat)


def _project_out(basis: Float[Array, "m P"], x: Float[Array, " P"]) -> Float[Array, " P"]:
    """x minus its projection on the rows of `basis` (orthonormal or zero rows), twice."""
    x = x - basis.T @ (basis @ x)
    return x - basis.T @ (basis @ x)


def _hash_vector(n: int, seed: Int[Array, ""], dtype: Any) -> Float[Array, " n"]:
    """A deterministic pseudo-random vector, uniform in [-1/2, 1/2): the integer hash "lowbias32"
    of (index + seed * 0x9E3779B9 + 0x632BE5AB) in uint32 arithmetic (cheap to compile, unlike a
    counter-based PRNG)."""
    x = jnp.arange(n, dtype=jnp.uint32) + seed.astype(jnp.uint32) * jnp.uint32(0x9E3779B9) + jnp.uint32(0x632BE5AB)
    x = (x ^ (x >> 16)) * jnp.uint32(0x7FEB352D)
    x = (x ^ (x >> 15)) * jnp.uint32(0x846CA68B)
    return (x ^ (x >> 16)).astype(dtype) * 2.0**-32 - 0.5


def _lanczos(
    matvec: Callable[[Array], Array], n: int, m: int, seed: int, dtype: Any
) -> tuple[Float[Array, " m"], Float[Array, " m"], Float[Array, ""], Float[Array, "m1 n"]]:
    """m Lanczos steps with full reorthogonalisation from a hashed start vector (module docstring).

    Returns `alpha` (m,) the diagonal, `beta` (m,) where beta[j] couples basis vectors j and j + 1
    (beta[m - 1] is unused), `resid` the norm of the last step's residual (for the Ritz residuals)
    and the basis `V` (m + 1, n), orthonormal rows (the last one only meaningful when m < n).
    """
    eps = jnp.finfo(dtype).eps
    base = seed * (m + 1)
    v0 = _hash_vector(n, jnp.asarray(base), dtype)
    V = jnp.zeros((m + 1, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0))

    def body(j, carry):
        V, alpha, beta, _ = carry
        v = V[j]
        hv = matvec(v)
        w = _project_out(V, hv)  # rows > j are still zero
        b = jnp.linalg.norm(w)
        r = _project_out(V, _hash_vector(n, base + j + 1, dtype))
        u = jnp.where(b <= m * eps * jnp.linalg.norm(hv), r, w)
        norm_u = jnp.linalg.norm(u)
        u = u / jnp.where(norm_u > 0, norm_u, jnp.ones((), dtype))
        return V.at[j + 1].set(u), alpha.at[j].set(v @ hv), beta.at[j].set(w @ u), b

    zeros = jnp.zeros((m,), dtype)
    V, alpha, beta, resid = jax.lax.fori_loop(0, m, body, (V, zeros, zeros, jnp.zeros((), dtype)))
    return alpha, beta, resid, V


def _tridiagonal(alpha: Float[Array, " m"], beta: Float[Array, " m"]) -> Float[Array, "m m"]:
    """The symmetric tridiagonal matrix with diagonal `alpha` and off-diagonal `beta[:-1]`."""
    i, j = jnp.arange(alpha.shape[0])[:, None], jnp.arange(alpha.shape[0])[None, :]
    zero = jnp.zeros((), alpha.dtype)
    upper = jnp.where(j == i + 1, beta[:, None], zero)
    return jnp.where(i == j, alpha[:, None], zero) + upper + upper.T


def _check_sizes(k: int, iters: int, n: int) -> int:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not isinstance(iters, int) or iters < k:
        raise ValueError(f"iters must be an int >= k = {k}, got {iters!r}")
    if k > n:
        raise ValueError(f"k = {k} eigenvalues asked of a Hessian of size {n}")
    return min(iters, n)


def _ritz(
    problem: Problem,
    params: PyTree,
    k: int,
    iters: int,
    by_magnitude: bool,
    seed: int,
    idx: Int[Array, " b"] | None,
) -> tuple[Float[Array, " k"], Float[Array, " k"], Callable[[], PyTree]]:
    """Lanczos + the tridiagonal's eigh: top-k Ritz values, residuals and (lazily) Ritz vectors."""
    flat, unravel = ravel_pytree(params)
    m = _check_sizes(k, iters, flat.shape[0])

    def matvec(x: Array) -> Array:
        return ravel_pytree(hvp(problem, params, unravel(x), idx))[0]

    alpha, beta, resid, V = _lanczos(matvec, flat.shape[0], m, seed, flat.dtype)
    theta, S = jnp.linalg.eigh(_tridiagonal(alpha, beta), symmetrize_input=False)
    order = jnp.argsort(-jnp.abs(theta) if by_magnitude else -theta)[:k]
    values, S_k = theta[order], S[:, order]
    residuals = jnp.abs(resid * S_k[m - 1])
    return values, residuals, lambda: jax.vmap(unravel)(S_k.T @ V[:m])


@final
class HessianEigs(eqx.Module):
    """Output of [`hessian_eigs`][flowsim.hessian_eigs].

    **Fields:** `values` (k,) the Ritz values, largest first (by value, or by magnitude with signs
    kept); `residuals` (k,) the Ritz residual norms |H y - lambda y| = |beta_m s_m| (some eigenvalue
    lies within it of each value; ~0 when converged); `vectors` a PyTree like `params` whose leaves
    have a leading axis k: the unit-norm Ritz vectors y in the raveled parameters (`None` unless
    asked for).
    """

    values: Float[Array, " k"]
    residuals: Float[Array, " k"]
    vectors: PyTree | None = None


def hessian_eigs(
    problem: Problem,
    params: PyTree,
    k: int = 1,
    *,
    iters: int = 20,
    by_magnitude: bool = False,
    seed: int = 0,
    idx: Int[Array, " b"] | None = None,
    vectors: bool = False,
) -> HessianEigs:
    """The top-k eigenvalues of the Hessian of `problem.loss` at `params`, by Lanczos with full
    reorthogonalisation (see the module docstring for the start vector and breakdown handling).

    **Arguments:** `problem`, `params`, `idx` as for [`hvp`][flowsim.hvp]; `k`: how many
    eigenvalues; `iters`: Lanczos steps m >= k (static; clipped to the parameter count P, where the
    result is exact to rounding); `by_magnitude`: rank by |lambda| instead of lambda (the extremes at
    both ends converge alike); `seed`: picks the (hashed, deterministic) start and restart vectors:
    the result is a deterministic function of `params`; `vectors`: also return the Ritz vectors.

    **Returns:** a [`HessianEigs`][flowsim.HessianEigs] (`values`, `residuals`, `vectors`).
    """
    values, residuals, vecs = _ritz(problem, params, k, iters, by_magnitude, seed, idx)
    return HessianEigs(values, residuals, vecs() if vectors else None)


def hessian_top_eigs(
    problem: Problem,
    params: PyTree,
    k: int = 1,
    *,
    iters: int = 20,
    by_magnitude: bool = False,
    seed: int = 0,
    idx: Int[Array, " b"] | None = None,
) -> Float[Array, " k"]:
    """The top-k Hessian eigenvalues, largest first: [`hessian_eigs`][flowsim.hessian_eigs]'s
    values alone (same arguments, without `vectors`).

    **Returns:** (k,) the eigenvalues, largest first (by value, or by magnitude with `by_magnitude`).
    """
    return _ritz(problem, params, k, iters, by_magnitude, seed, idx)[0]


def sharpness(
    problem: Problem,
    params: PyTree,
    *,
    iters: int = 20,
    seed: int = 0,
    idx: Int[Array, " b"] | None = None,
) -> Float[Array, ""]:
    """The sharpness: the largest (algebraic) eigenvalue of the Hessian of `problem.loss` at
    `params`, by `iters` Lanczos steps ([`hessian_eigs`][flowsim.hessian_eigs], k = 1).

    **Returns:** the scalar lambda_max.
    """
    return hessian_top_eigs(problem, params, 1, iters=iters, seed=seed, idx=idx)[0]


def _as_array(x: ArrayLike | None) -> Array | None:
    return None if x is None else jnp.asarray(x)


@final
class Sharpness(eqx.Module):
    """An observer recording the Hessian's top eigenvalues next to another observer's quantities.

    `Sharpness(observer, k=1, iters=20, lr=None)(t, params, problem)` returns the dict of
    `observer(t, params, problem)` plus `"lambda_max"` (scalar, = `hessian_top[0]`), `"hessian_top"`
    (k,) the top-k eigenvalues of the full-batch loss's Hessian, largest first, `"hessian_residual"`
    (k,) their Ritz residual norms (~0 when `iters` sufficed), and with `lr` also `"eos_ratio"` =
    lr * lambda_max / 2 (1 is GD's edge of stability: GD on a quadratic diverges above it).

    **Fields:** `observer`: an observer returning a dict (`None`: record the sharpness alone); `k`,
    `iters`, `by_magnitude`: as in [`hessian_eigs`][flowsim.hessian_eigs] (static); `lr`: the step
    size of a discrete run (stored as an array, so that runs at other step sizes reuse the compiled
    program), or `None`. Cost at every save point: `iters` Hessian-vector products (a few gradients
    each), O(iters^2 P) for the reorthogonalisation and an (iters + 1, P) basis in memory.

    Raises `TypeError` when the wrapped observer's output is not a dict, `ValueError` when it already
    records one of the names above.
    """

    observer: Callable[..., Any] | None
    k: int = eqx.field(static=True, default=1)
    iters: int = eqx.field(static=True, default=20)
    lr: Array | None = eqx.field(default=None, converter=_as_array)
    by_magnitude: bool = eqx.field(static=True, default=False)

    def __check_init__(self) -> None:
        if self.observer is not None and not callable(self.observer):
            raise TypeError(f"observer must be a callable (t, params, problem) -> dict, got {self.observer!r}")
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive int, got {self.k!r}")
        if not isinstance(self.iters, int) or self.iters < self.k:
            raise ValueError(f"iters must be an int >= k = {self.k}, got {self.iters!r}")

    def _wrapped(self, t: float | Array, params: PyTree, problem: Problem) -> dict[str, Any]:
        if self.observer is None:
            return {}
        out = self.observer(t, params, problem)
        if not isinstance(out, dict):
            raise TypeError(
                f"Sharpness needs an observer that returns a dict of arrays; {type(self.observer).__name__} "
                f"returned a {type(out).__name__}"
            )
        clash = sorted(set(out) & set(SHARPNESS_KEYS))
        if clash:
            raise ValueError(f"the wrapped observer already records {clash}, which Sharpness adds")
        return out

    def __call__(self, t: float | Array, params: PyTree, problem: Problem) -> dict[str, Any]:
        """The wrapped observer's quantities plus the sharpness (they do not depend on `t`)."""
        out = dict(self._wrapped(t, params, problem))
        values, residuals, _ = _ritz(problem, params, self.k, self.iters, self.by_magnitude, 0, None)
        out.update(lambda_max=values[0], hessian_top=values, hessian_residual=residuals)
        if self.lr is not None:
            out["eos_ratio"] = jnp.asarray(self.lr, values.dtype) * values[0] / 2
        return out
