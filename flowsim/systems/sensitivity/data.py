"""The Boolean task of Hahn & Rofin (ACL 2024): the full table {0,1}^n, the targets and a training subset.

**Order of the table.** Row i of `bit_table(n)` holds the binary digits of i, most significant
first: x_1 is bit n-1 of i, x_n bit 0 (the order of `itertools.product((0, 1), repeat=n)`). Flipping
x_j maps row i to row i XOR 2^(n-j). The Walsh-Hadamard transform of `metrics` uses this order.

**Targets** (values in {0, 1} except MEAN): PARITY = sum x mod 2, MAJORITY = 1 iff sum x > n/2 (a tie,
possible for even n only, gives 0; odd n has none), FIRST = x_1, MEAN = sum x / n (real), RANDOM = an
independent fair coin per row, drawn from the data key as integer bits (`random_coins`: the same table
in float32 and float64 runs).
"""

from __future__ import annotations

import functools
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .config import TARGETS, SensitivityConfig

TOKEN_DTYPE = jnp.int32


def bit_table(n: int) -> Int[Array, "N n"]:
    """All 2^n inputs, row i = the binary digits of i, most significant first (int32 tokens 0/1)."""
    i = jnp.arange(2**n, dtype=TOKEN_DTYPE)
    shifts = jnp.arange(n - 1, -1, -1, dtype=TOKEN_DTYPE)
    return (i[:, None] >> shifts[None, :]) & jnp.asarray(1, TOKEN_DTYPE)


def random_coins(key: Array, rows: int) -> Int[Array, " N"]:
    """`rows` independent fair coins (0/1 tokens) from `key`: the top bit of 32 random bits per row.

    Integer bits do not depend on the float precision or on whether 64-bit types are enabled
    (`jax.random.bernoulli` compares a uniform draw of the default float width, a different number in
    a float32 process than in a float64 one): a float32 run trains on the float64 run's table.
    """
    bits = jax.random.bits(key, (rows,), jnp.uint32)
    return (bits >> jnp.uint32(31)).astype(TOKEN_DTYPE)


def target_table(target: str, bits: Int[Array, "N n"], key: Array, dtype: Any = jnp.float64) -> Float[Array, " N"]:
    """The target's value on every row of `bits` (see the module docstring); `key` draws RANDOM.

    **Arguments:** `target` one of `TARGETS`; `bits` (N, n) 0/1 tokens; `key` a PRNG key (used by
    RANDOM only); `dtype` the float dtype of the values.
    """
    n = bits.shape[1]
    ones = jnp.sum(bits, axis=1, dtype=TOKEN_DTYPE)
    if target == "parity":
        y = ones % 2
    elif target == "majority":
        y = (2 * ones > n).astype(TOKEN_DTYPE)
    elif target == "first":
        y = bits[:, 0]
    elif target == "mean":
        return ones.astype(dtype) / jnp.asarray(n, dtype)
    elif target == "random":
        y = random_coins(key, bits.shape[0])
    else:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    return y.astype(dtype)


@final
class SensitivityData(eqx.Module):
    """The full table, its target values and the training rows.

    **Fields:** `bits` (N, n) every input, N = 2^n (int32 tokens); `y` (N,) the target on every
    input; `train_idx` (m,) the training rows, increasing (all N rows for the full table).
    """

    bits: Int[Array, "N n"]
    y: Float[Array, " N"]
    train_idx: Int[Array, " m"]

    @property
    def full(self) -> bool:
        """Whether the training set is the whole table (in table order)."""
        return self.train_idx.shape[0] == self.bits.shape[0]

    @property
    def x_train(self) -> Int[Array, "m n"]:
        return self.bits[self.train_idx]

    @property
    def y_train(self) -> Float[Array, " m"]:
        return self.y[self.train_idx]


@functools.partial(jax.jit, static_argnames=("task", "dtype"))
def make_data(task: SensitivityConfig, key: Array, dtype: Any = jnp.float64) -> SensitivityData:
    """The table, target and training rows of `task`, from the run's data key.

    The key is split in two: the first draws a RANDOM table, the second the training subset (the
    first `n_train` entries of a random permutation of the rows, sorted); `n_train = 0` trains on
    every row.
    """
    k_table, k_subset = jax.random.split(key)
    bits = bit_table(task.n)
    y = target_table(task.target, bits, k_table, dtype)
    N = bits.shape[0]
    if task.n_train == 0:
        idx = jnp.arange(N, dtype=TOKEN_DTYPE)
    else:
        idx = jnp.sort(jax.random.permutation(k_subset, N)[: task.n_train]).astype(TOKEN_DTYPE)
    return SensitivityData(bits, y, idx)
