"""The word co-occurrence task (Def. 2.1 and Assumption 2.3 of Yang et al., NeurIPS 2024).

Tokens are indices into an orthonormal (one-hot) vocabulary of size d: 0 = mu_1, 1 = mu_2 (the two
targets), 2 = mu_3 (the common token, in every sequence), 3..d-1 = random tokens. A sequence has
label +1 iff both targets occur. Types: 1 = both targets (y=+1), 2 = only mu_1, 3 = only mu_2,
4 = neither (y=-1 for types 2-4).
"""

from __future__ import annotations

from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

MU1, MU2, MU3 = 0, 1, 2
N_SPECIAL = 3


@final
class CooccurrenceData(eqx.Module):
    """A labelled set of token sequences.

    **Fields:** `tokens` (n, L) int token indices; `y` (n,) labels in {-1, +1}; `kind` (n,) sample
    type in {1, 2, 3, 4}.
    """

    tokens: Int[Array, "n L"]
    y: Float[Array, " n"]
    kind: Int[Array, " n"]

    @property
    def n(self) -> int:
        return self.tokens.shape[0]

    @property
    def L(self) -> int:
        return self.tokens.shape[1]


def _check_shape(L: int, d: int) -> None:
    if L < 3:
        raise ValueError(f"L must be >= 3 (mu_1, mu_2 and mu_3 must fit in one sequence), got {L}")
    if d < N_SPECIAL + 1:
        raise ValueError(f"d must be >= {N_SPECIAL + 1} (3 special tokens + 1 random token), got {d}")


def _specials_for(kind: np.ndarray) -> list[list[int]]:
    table = {1: [MU3, MU1, MU2], 2: [MU3, MU1], 3: [MU3, MU2], 4: [MU3]}
    return [table[int(k)] for k in kind]


def _fill(kind: np.ndarray, L: int, d: int, rng: np.random.Generator, distinct: bool) -> np.ndarray:
    """Place special tokens at distinct random positions, random tokens everywhere else."""
    n = kind.shape[0]
    specials = _specials_for(kind)
    slots = sum(L - len(s) for s in specials)
    if distinct:
        if slots > d - N_SPECIAL:
            raise ValueError(f"distinct random tokens need d >= {slots + N_SPECIAL}, got d={d}")
        pool = list(N_SPECIAL + rng.permutation(d - N_SPECIAL)[:slots])
    else:
        pool = list(rng.integers(N_SPECIAL, d, size=slots))
    tokens = np.empty((n, L), dtype=np.int64)
    for i, spec in enumerate(specials):
        pos = rng.permutation(L)
        row = np.empty(L, dtype=np.int64)
        row[pos[: len(spec)]] = spec
        for p in pos[len(spec) :]:
            row[p] = pool.pop()
        tokens[i] = row
    return tokens


def make_dataset(n: int, L: int, d: int, seed: int, distinct_tokens: bool = False) -> CooccurrenceData:
    """The training set with exact type counts n/2, n/6, n/6, n/6, ordered by type.

    **Arguments:** `n` (multiple of 6), `L` (>= 3), `d` (>= 4), `seed` (numpy RNG seed),
    `distinct_tokens` (draw random tokens without replacement across the whole set).

    **Returns:** a `CooccurrenceData`.
    """
    if n % 6 or n <= 0:
        raise ValueError(f"n must be a positive multiple of 6, got {n}")
    _check_shape(L, d)
    rng = np.random.default_rng(seed)
    kind = np.repeat(np.array([1, 2, 3, 4]), [n // 2, n // 6, n // 6, n // 6])
    tokens = _fill(kind, L, d, rng, distinct_tokens)
    y = np.where(kind == 1, 1.0, -1.0)
    return CooccurrenceData(jnp.asarray(tokens), jnp.asarray(y), jnp.asarray(kind))


def sample_population(key: jax.Array, num: int, L: int, d: int) -> CooccurrenceData:
    """Fresh i.i.d. samples from the data distribution D (types with probabilities 1/2, 1/6, 1/6, 1/6).

    Random tokens are drawn uniformly with replacement. Runs under jit (no Python loop over samples).
    """
    _check_shape(L, d)
    k_kind, k_perm, k_rand = jax.random.split(key, 3)
    kind = jax.random.choice(k_kind, jnp.array([1, 2, 3, 4]), (num,), p=jnp.array([0.5, 1 / 6, 1 / 6, 1 / 6]))
    # Position order per sample: the first three positions of the permutation host mu_3, mu_1, mu_2.
    perm = jax.vmap(lambda k: jax.random.permutation(k, L))(jax.random.split(k_perm, num))
    rand = jax.random.randint(k_rand, (num, L), N_SPECIAL, d)
    want = jnp.stack(
        [
            jnp.full_like(kind, MU3),
            jnp.where((kind == 1) | (kind == 2), MU1, -1),
            jnp.where((kind == 1) | (kind == 3), MU2, -1),
        ],
        axis=1,
    )  # (num, 3); -1 = unused

    def place(row_rand, p, w):
        row = row_rand
        for j in range(3):
            row = jnp.where((jnp.arange(L) == p[j]) & (w[j] >= 0), w[j], row)
        return row

    tokens = jax.vmap(place)(rand, perm, want)
    y = jnp.where(kind == 1, 1.0, -1.0)
    return CooccurrenceData(tokens, y, kind)
