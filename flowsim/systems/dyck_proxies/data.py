"""The Dyck task of the proxy study: training strings and the test splits of Murty et al. (2023).

Strings come from `flowsim.sample_dyck` (the automaton of Hewitt et al. 2020, conditioned on the
length range); rows are START + string padded with PAD, targets the next tokens (the shared
`flowsim.lm_batch`). The *structure* of a top-level constituent is its sequence of stack depths,
types abstracted (`flowsim.dyck_structure`, as Murty et al.'s `stack_paths`).

**Splits** (each `n_test` strings, all padded to one row length `long_max + 1` so that one compiled
program scores them all):

- `iid`: every constituent's structure occurs in the training set and the string does not;
- `unseen`: at least one constituent's structure never occurs in the training set;
- `deep`: strings of Dyck-(k, D + deep_extra) whose depth exceeds D, scored only at the closes made
  at depth > D (the brackets the training language never nests that deep);
- `long`: lengths in (max_len, long_max], depth <= D.

Murty et al. draw iid/unseen candidates from the training distribution and sort them by whether all
their structures were seen (`get_test_data`); this module does the same with a bounded number of
draws and refuses (one `ValueError`) when a split cannot be filled.
"""

from __future__ import annotations

from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

from ..._dyck import DyckLanguage, depths, lm_batch, sample_dyck, structure
from .config import DyckProxiesConfig

TOKEN_DTYPE = jnp.int32
SPLITS = ("iid", "unseen", "deep", "long")
SYSTEMATIC = ("unseen", "deep", "long")
MAX_ROUNDS = 60  # candidate batches drawn for the iid/unseen splits before refusing


@final
class DyckSplit(eqx.Module):
    """Rows of one split: `tokens` (R, L) START + string + END + PAD; `targets` (R, L) the next
    tokens (PAD after the end); `mask` (R, L) the scored positions (gold next token a close bracket;
    the deep split: only closes made at depth > D)."""

    tokens: Int[Array, "R L"]
    targets: Int[Array, "R L"]
    mask: Bool[Array, "R L"]


@final
class DyckProxiesData(eqx.Module):
    """The training rows (`train`) and the test splits (`splits`, in the order of `SPLITS`)."""

    train: DyckSplit
    splits: tuple[DyckSplit, ...]

    def split(self, name: str) -> DyckSplit:
        return self.splits[SPLITS.index(name)]


def numpy_rng(key: Array) -> np.random.Generator:
    """A numpy generator seeded from a JAX PRNG key (the host-side sampler's stream of that key)."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).astype(np.uint64).tolist())


def _rows(strings: list[np.ndarray], lang: DyckLanguage, row_len: int) -> DyckSplit:
    tokens, targets, mask = lm_batch(strings, lang, row_len)
    return DyckSplit(jnp.asarray(tokens, TOKEN_DTYPE), jnp.asarray(targets, TOKEN_DTYPE), jnp.asarray(mask, dtype=bool))


def _iid_unseen(
    rng: np.random.Generator, task: DyckProxiesConfig, lang: DyckLanguage, train: list[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    seen = {c for s in train for c in structure(s)}
    strings = {s.tobytes() for s in train}
    iid: list[np.ndarray] = []
    unseen: list[np.ndarray] = []
    for _ in range(MAX_ROUNDS):
        for s in sample_dyck(rng, lang, 4 * task.n_test, task.min_len, task.max_len):
            if all(c in seen for c in structure(s)):
                if s.tobytes() not in strings and len(iid) < task.n_test:
                    iid.append(s)
            elif len(unseen) < task.n_test:
                unseen.append(s)
        if len(iid) == len(unseen) == task.n_test:
            return iid, unseen
    raise ValueError(
        f"could not fill the iid/unseen splits ({len(iid)} iid, {len(unseen)} unseen of n_test={task.n_test}) "
        f"in {MAX_ROUNDS} rounds; use more training strings or a smaller n_test"
    )


def _deep(rng: np.random.Generator, task: DyckProxiesConfig) -> list[np.ndarray]:
    D = task.max_depth
    deep_lang = DyckLanguage(task.k, D + task.deep_extra)
    lo = max(task.min_len, 2 * (D + 1))
    if lo > task.max_len:
        raise ValueError(f"the deep split needs max_len >= 2 (max_depth + 1) = {2 * (D + 1)}, got {task.max_len}")
    out: list[np.ndarray] = []
    for _ in range(MAX_ROUNDS):
        out += [s for s in sample_dyck(rng, deep_lang, 4 * task.n_test, lo, task.max_len) if depths(s).max() > D]
        if len(out) >= task.n_test:
            return out[: task.n_test]
    raise ValueError(f"could not fill the deep split ({len(out)} of n_test={task.n_test}) in {MAX_ROUNDS} rounds")


def deep_mask(strings: list[np.ndarray], mask: np.ndarray, max_depth: int) -> np.ndarray:
    """`mask` restricted to the closes made at depth > `max_depth`: position j predicts string token
    j, a close whose depth before closing is depths(s)[j] + 1."""
    out = np.zeros_like(mask)
    for i, s in enumerate(strings):
        d = depths(s)
        out[i, : len(s)] = mask[i, : len(s)] & (d + 1 > max_depth)
    return out


def make_data(task: DyckProxiesConfig, data_key: Array, test_key: Array) -> DyckProxiesData:
    """The training strings (from `data_key`) and the test splits (from `test_key`) of `task`."""
    lang = DyckLanguage(task.k, task.max_depth)
    train = sample_dyck(numpy_rng(data_key), lang, task.n_train, task.min_len, task.max_len)
    rng = numpy_rng(test_key)
    iid, unseen = _iid_unseen(rng, task, lang, train)
    deep = _deep(rng, task)
    long_ = sample_dyck(rng, lang, task.n_test, task.max_len + 1, task.long_max)
    L = task.long_max + 1
    deep_rows = _rows(deep, DyckLanguage(task.k, task.max_depth + task.deep_extra), L)
    dmask = deep_mask(deep, np.asarray(deep_rows.mask), task.max_depth)
    deep_rows = DyckSplit(deep_rows.tokens, deep_rows.targets, jnp.asarray(dmask))
    splits = (_rows(iid, lang, L), _rows(unseen, lang, L), deep_rows, _rows(long_, lang, L))
    return DyckProxiesData(_rows(train, lang, task.row_len), splits)
