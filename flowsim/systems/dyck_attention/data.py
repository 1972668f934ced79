"""Training, held-out and length-generalisation rows of Dyck-(k, D) next-token prediction, and the probe.

Strings come from the engine's shared sampler (`flowsim._dyck`), one string per row: the input is
START followed by the string, the target the next token (the last one END); positions without a
target hold -1 (ignored by the loss). Closing positions are those whose gold next token is a close.

**The probe** of Wen et al.'s code: START, D x open(a), D x close(a), D x open(b), D x close(b)
(length 4D + 1), fixed for every seed: attention patterns are compared on it.
"""

from __future__ import annotations

from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

from ..._dyck import START, DyckLanguage, lm_batch, sample_dyck
from .config import DyckAttentionConfig

TOKEN_DTYPE = jnp.int32


def language(task: DyckAttentionConfig) -> DyckLanguage:
    return DyckLanguage(task.k, task.depth)


@final
class Rows(eqx.Module):
    """Next-token rows: `tokens` (R, L) inputs, `targets` (R, L) next tokens (-1: none), `close` (R, L)
    whether the gold next token is a close bracket."""

    tokens: Int[Array, "R L"]
    targets: Int[Array, "R L"]
    close: Bool[Array, "R L"]


def make_rows(strings: list[np.ndarray], lang: DyckLanguage, row_len: int) -> Rows:
    tokens, targets, close = lm_batch(strings, lang, row_len)
    targets = np.where(targets == 0, -1, targets)
    return Rows(jnp.asarray(tokens, TOKEN_DTYPE), jnp.asarray(targets, TOKEN_DTYPE), jnp.asarray(close))


@final
class DyckData(eqx.Module):
    """`train`, `test` (held-out, same law) and `long` (length generalisation) rows, and the `probe` (P,)."""

    train: Rows
    test: Rows
    long: Rows
    probe: Int[Array, " P"]


def probe_tokens(lang: DyckLanguage) -> np.ndarray:
    """START, D x open(a), D x close(a), D x open(b), D x close(b) (k >= 2; type b = a for k = 1)."""
    D, b = lang.max_depth, min(1, lang.k - 1)
    o, c = lang.opens, lang.closes
    return np.array([START] + [o[0]] * D + [c[0]] * D + [o[b]] * D + [c[b]] * D, dtype=np.int64)


def numpy_rng(key: Array) -> np.random.Generator:
    """A numpy generator seeded by a JAX PRNG key (the run's data key: one random stream)."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key), dtype=np.uint32).ravel().tolist())


def make_data(task: DyckAttentionConfig, key: Array) -> DyckData:
    """The three row sets and the probe; `key` is split into the train, test and long streams."""
    lang = language(task)
    k_train, k_test, k_long = jax.random.split(key, 3)
    train = sample_dyck(numpy_rng(k_train), lang, task.n_train, task.min_len, task.max_len)
    test = sample_dyck(numpy_rng(k_test), lang, task.n_test, task.min_len, task.max_len)
    long = sample_dyck(numpy_rng(k_long), lang, task.n_long, task.long_min, task.long_max)
    return DyckData(
        make_rows(train, lang, task.max_len + 1),
        make_rows(test, lang, task.max_len + 1),
        make_rows(long, lang, task.long_max + 1),
        jnp.asarray(probe_tokens(lang), TOKEN_DTYPE),
    )
