"""Symmetric matrices with prescribed eigenvalue distributions (Charton 2022's generators) and their
encoding as tokens and targets.

**Generators** (`sample_matrices`): `wigner` M = tril(a) + tril(a, -1)^T with a ~ U[-A, A]^{n x n};
every other distribution keeps the eigenvectors V of a Wigner matrix and replaces its eigenvalues,
M = V diag(lambda) V^T, with sigma = sqrt(n) A / sqrt(3): `uniform` sigma sqrt(3) U[-1, 1],
`gaussian` sigma N(0, 1), `laplace` Laplace(0, sigma / sqrt(2)) (standard deviation sigma), `positive`
|lambda_Wigner|, `positive2` |Laplace(0, sigma / sqrt(2))|; `marcenko` M = B^T B with
B ~ U[-sqrt(A), sqrt(A)]^{n x n} (Marchenko-Pastur; its own eigenvectors).

**Encoding** (`features`): token k is the k-th upper-triangle entry (i <= j, row-major) with features
[M_ij / A, onehot(i), onehot(j)]. **Targets** (`targets`): the eigenvalues of `eigh`, ascending,
divided by sigma; for the eigenvector task followed by the eigenvectors q_1..q_n (columns of `eigh`'s
Q, same order) made sign-canonical (the entry of largest magnitude positive), each contiguous.
"""

from __future__ import annotations

import functools
import math
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .config import DISTS, SpectraConfig


def sigma(n: int, scale_a: float) -> float:
    """sqrt(n) A / sqrt(3): the eigenvalue scale of the paper's generators (and the target scale)."""
    return math.sqrt(n) * scale_a / math.sqrt(3)


def _wigner(key: Array, N: int, n: int, scale_a: float, dtype: Any) -> Float[Array, "N n n"]:
    a = jax.random.uniform(key, (N, n, n), dtype, -scale_a, scale_a)
    low = jnp.tril(a)
    return low + jnp.swapaxes(jnp.tril(a, -1), 1, 2)


def _eigenvalues(dist: str, key: Array, lam_w: Array, s: float, dtype: Any) -> Array:
    shape = lam_w.shape
    if dist == "uniform":
        return s * math.sqrt(3) * jax.random.uniform(key, shape, dtype, -1.0, 1.0)
    if dist == "gaussian":
        return s * jax.random.normal(key, shape, dtype)
    if dist in ("laplace", "positive2"):
        lap = (s / math.sqrt(2)) * jax.random.laplace(key, shape, dtype)
        return lap if dist == "laplace" else jnp.abs(lap)
    if dist == "positive":
        return jnp.abs(lam_w)
    raise ValueError(f"dist must be one of {DISTS}, got {dist!r}")


@functools.partial(jax.jit, static_argnames=("N", "n", "dist", "scale_a", "dtype"))
def sample_matrices(key: Array, N: int, n: int, dist: str, scale_a: float, dtype: Any = jnp.float64) -> Array:
    """`N` symmetric n x n matrices of the generator `dist` (see the module docstring)."""
    k_w, k_l = jax.random.split(key)
    if dist == "marcenko":
        r = math.sqrt(scale_a)
        b = jax.random.uniform(k_w, (N, n, n), dtype, -r, r)
        return jnp.swapaxes(b, 1, 2) @ b
    m = _wigner(k_w, N, n, scale_a, dtype)
    if dist == "wigner":
        return m
    lam_w, v = jnp.linalg.eigh(m)
    lam = _eigenvalues(dist, k_l, lam_w, sigma(n, scale_a), dtype)
    out = jnp.einsum("bik,bk,bjk->bij", v, lam, v)
    return (out + jnp.swapaxes(out, 1, 2)) / 2


def upper_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each token: the upper triangle i <= j, row-major."""
    i, j = np.triu_indices(n)
    return i, j


def features(m: Float[Array, "N n n"], scale_a: float) -> Float[Array, "N L F"]:
    """Token features [M_ij / A, onehot(i), onehot(j)] of each upper-triangle entry (L = n(n+1)/2,
    F = 1 + 2n)."""
    n = m.shape[-1]
    i, j = upper_indices(n)
    vals = m[:, i, j] / jnp.asarray(scale_a, m.dtype)
    pos = np.concatenate([np.eye(n)[i], np.eye(n)[j]], axis=1)
    pos_b = jnp.broadcast_to(jnp.asarray(pos, m.dtype)[None], (m.shape[0], *pos.shape))
    return jnp.concatenate([vals[..., None], pos_b], axis=-1)


def sign_canonical(q: Float[Array, "*b n k"]) -> Float[Array, "*b n k"]:
    """Each column flipped so that its entry of largest magnitude is positive."""
    idx = jnp.argmax(jnp.abs(q), axis=-2, keepdims=True)
    s = jnp.sign(jnp.take_along_axis(q, idx, axis=-2))
    return q * jnp.where(s == 0, jnp.ones_like(s), s)


def targets(m: Float[Array, "N n n"], task: str, scale: float) -> Float[Array, "N out"]:
    """The scaled targets of `task` for matrices `m` (see the module docstring); `scale` is sigma."""
    lam, q = jnp.linalg.eigh(m)
    lam = lam / jnp.asarray(scale, m.dtype)
    if task == "eigenvalues":
        return lam
    q = sign_canonical(q)
    return jnp.concatenate([lam, jnp.swapaxes(q, 1, 2).reshape(m.shape[0], -1)], axis=1)


@final
class SpectraData(eqx.Module):
    """A set of matrices and their encoding.

    **Fields:** `m` (N, n, n) the matrices; `x` (N, L, F) token features; `y` (N, out) scaled targets.
    """

    m: Float[Array, "N n n"]
    x: Float[Array, "N L F"]
    y: Float[Array, "N out"]


@functools.partial(jax.jit, static_argnames=("task",))
def encode(m: Float[Array, "N n n"], task: SpectraConfig) -> SpectraData:
    """The features and targets of matrices `m` under `task`."""
    return SpectraData(m, features(m, task.scale_a), targets(m, task.task, sigma(task.n, task.scale_a)))


@functools.partial(jax.jit, static_argnames=("task", "N", "dtype", "dist"))
def make_data(
    task: SpectraConfig, key: Array, N: int, dtype: Any = jnp.float64, dist: str | None = None
) -> SpectraData:
    """`N` matrices of `task` (of `dist` when given, else the task's) drawn from `key`, encoded."""
    m = sample_matrices(key, N, task.n, dist or task.dist, task.scale_a, dtype)
    return encode(m, task)
