"""The metrics of Hahn & Rofin (ACL 2024), exact where the paper's code is exact, all jit/vmap-able.

**Average sensitivity** of f: {0,1}^n -> {0,1} given on the whole table (order of `data.bit_table`):
f~ = 2f - 1, f^(S) = E_x f~(x) chi_S(x) with chi_S(x) = (-1)^(sum_{j in S} x_j), and
as(f) = sum_S |S| f^(S)^2 = E_x sum_i 1[f(x) != f(x^(i))] (x^(i): bit i flipped), computed with the
fast Walsh-Hadamard transform in O(n 2^n). PARITY has n, FIRST 1, MAJORITY (odd n)
n C(n-1, (n-1)/2) / 2^(n-1). The real-valued version of a real g is
(1/4) sum_i E_x (g(x) - g(x^(i)))^2 = sum_S |S| g^(S)^2 (g^ the transform of g itself), which equals
as(f) for g = 2f - 1.

**Perturbation sharpness** (the paper's `hessian_norm_proxy`): S = E_D[L(theta + D)] - L(theta) with
D ~ N(0, eps^2 I) on the entries selected by a mask (the paper leaves out positional embeddings),
estimated with a fixed number of draws from a given key (vmapped over draws). For a quadratic loss
its expectation is (eps^2 / 2) tr(H).

**LayerNorm blow-up** (the paper's `inspect_one_batch`): per input and LayerNorm, the mean over
positions of 1 / std of the LN's input (std with Bessel's correction, no eps, as `torch.std`; in the
last block only the last position); `blowup` = mean over inputs of the product over LayerNorms,
`blowup_max` the same with the max over positions, `blowup_sum` the mean of the sum.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, PyTree


def _log2(N: int) -> int:
    n = N.bit_length() - 1
    if N < 1 or 2**n != N:
        raise ValueError(f"a function on {{0,1}}^n is given by 2^n values, got {N}")
    return n


@jax.jit
def walsh_hadamard(values: Float[Array, " N"]) -> Float[Array, " N"]:
    """The unnormalised Walsh-Hadamard transform F[s] = sum_i values[i] (-1)^popcount(i & s), N = 2^n."""
    N = values.shape[0]
    v = values
    for k in range(_log2(N)):
        v = v.reshape(2**k, 2, N // 2 ** (k + 1))
        v = jnp.stack([v[:, 0] + v[:, 1], v[:, 0] - v[:, 1]], axis=1).reshape(N)
    return v


def subset_sizes(N: int, dtype: Any) -> Float[Array, " N"]:
    """|S| = popcount(s) for every subset index s < N (as `dtype`)."""
    _log2(N)
    return jax.lax.population_count(jnp.arange(N, dtype=jnp.int32)).astype(dtype)


@jax.jit
def fourier_weights(values: Float[Array, " N"]) -> Float[Array, " N"]:
    """f^(S)^2 for every S: the squared Fourier coefficients E_x f(x) chi_S(x) of the table `values`."""
    return jnp.square(walsh_hadamard(values) / jnp.asarray(values.shape[0], values.dtype))


@jax.jit
def real_sensitivity(values: Float[Array, " N"]) -> Float[Array, ""]:
    """(1/4) sum_i E_x (g(x) - g(x^(i)))^2 of the real table `values` (by its Fourier weights)."""
    return jnp.sum(subset_sizes(values.shape[0], values.dtype) * fourier_weights(values))


@functools.partial(jax.jit, static_argnames=("dtype",))
def average_sensitivity(f: Bool[Array, " N"], dtype: Any = jnp.float64) -> Float[Array, ""]:
    """as(f) = sum_S |S| f~^(S)^2 of the Boolean table `f` (True = 1), f~ = 2f - 1, in `dtype`."""
    signs = jnp.where(f, jnp.asarray(1, dtype), jnp.asarray(-1, dtype))
    return real_sensitivity(signs)


@functools.partial(jax.jit, static_argnames=("dtype",))
def completion_sensitivity(
    known: Bool[Array, " N"], f: Bool[Array, " N"], dtype: Any = jnp.float64
) -> Float[Array, ""]:
    """E[as(g)] over random completions g of f: g = f on the rows marked `known`, independent fair
    coins elsewhere (exact: an edge (x, x^(i)) with both ends known counts 1[f(x) != f(x^(i))],
    any other edge 1/2)."""
    N = f.shape[0]
    n = _log2(N)
    i = jnp.arange(N, dtype=jnp.int32)
    total = jnp.zeros((), dtype)
    for k in range(n):
        j = i ^ (1 << k)
        both = known & known[j]
        differ = (f != f[j]).astype(dtype)
        total = total + jnp.sum(jnp.where(both, differ, jnp.asarray(0.5, dtype)))
    return total / jnp.asarray(N, dtype)


def _masked_flat(params: PyTree, mask: PyTree[bool]) -> tuple[Array, Array, Callable[[Array], PyTree]]:
    flat, unravel = ravel_pytree(params)
    ones = jax.tree.map(lambda p, m: jnp.full(jnp.shape(p), m, flat.dtype), params, mask)
    return flat, ravel_pytree(ones)[0], unravel


def perturbation_draws(
    params: PyTree, mask: PyTree[bool], key: Array, eps: float | Array, draws: int
) -> Float[Array, "draws P"]:
    """The noise vectors D_k (in `ravel_pytree(params)` order) of `perturbation_sharpness`: eps times
    `jax.random.normal(key, (draws, P))`, zero where `mask` is False."""
    flat, keep, _ = _masked_flat(params, mask)
    z = jax.random.normal(key, (draws, flat.shape[0]), flat.dtype)
    return jnp.asarray(eps, flat.dtype) * z * keep[None, :]


def perturbation_sharpness(
    loss: Callable[[PyTree], Array],
    params: PyTree,
    mask: PyTree[bool],
    key: Array,
    eps: float | Array,
    draws: int,
    *,
    antithetic: bool = False,
) -> Float[Array, ""]:
    """(1/K) sum_k L(theta + D_k) - L(theta): the perturbation sharpness with the draws of
    `perturbation_draws` (K = `draws`; with `antithetic` also -D_k, K = 2 `draws`, which cancels the
    gradient term exactly and leaves the expectation unchanged).

    **Arguments:** `loss` maps a PyTree like `params` to a scalar; `mask` a PyTree of bools like
    `params` (False: not perturbed); `key` the PRNG key of the draws; `eps` the noise scale.
    """
    flat, _, unravel = _masked_flat(params, mask)
    D = perturbation_draws(params, mask, key, eps, draws)
    if antithetic:
        D = jnp.concatenate([D, -D])
    noisy = jax.vmap(lambda d: loss(unravel(flat + d)))(D)
    return jnp.mean(noisy) - loss(params)


def masked_sq_norm(params: PyTree, mask: PyTree[bool]) -> Float[Array, ""]:
    """||theta||^2 over the entries where `mask` is True."""
    flat, keep, _ = _masked_flat(params, mask)
    return jnp.sum(keep * jnp.square(flat))


def ln_blowup(inputs: Sequence[Float[Array, "B L d"]], last_only: Sequence[bool]) -> dict[str, Float[Array, ""]]:
    """The LayerNorm blow-up of a batch (see the module docstring).

    **Arguments:** `inputs` what enters each LayerNorm, (B, L, d) per LN for a batch of B inputs;
    `last_only` per LN whether only its last position counts (the last block's).

    **Returns:** `blowup` (product of per-LN position means), `blowup_max` (product of position
    maxima), `blowup_sum` (sum of position means), each averaged over the batch.
    """
    if len(inputs) != len(last_only) or not inputs:
        raise ValueError(f"need one last_only flag per LayerNorm input, got {len(inputs)} and {len(last_only)}")
    prod_mean = prod_max = sum_mean = None
    for x, last in zip(inputs, last_only):
        inv = 1 / jnp.std(x, axis=-1, ddof=1)
        if last:
            inv = inv[:, -1:]
        mean, top = jnp.mean(inv, axis=1), jnp.max(inv, axis=1)
        prod_mean = mean if prod_mean is None else prod_mean * mean
        prod_max = top if prod_max is None else prod_max * top
        sum_mean = mean if sum_mean is None else sum_mean + mean
    assert prod_mean is not None and prod_max is not None and sum_mean is not None
    return {"blowup": jnp.mean(prod_mean), "blowup_max": jnp.mean(prod_max), "blowup_sum": jnp.mean(sum_mean)}
