"""Bounded Dyck languages Dyck-(k, D): the vocabulary, the sampler of Hewitt et al. (2020), structure, LM batches.

Shared by the Dyck systems (host-side numpy; a system turns the arrays into JAX arrays itself).

**Vocabulary** of [`DyckLanguage`][flowsim.DyckLanguage]`(k, D)`: `PAD = 0`, `START = 1`, `END = 2`, the
open brackets `3 ... 3+k-1` and the close brackets `3+k ... 3+2k-1` (open `3+i` is closed by `3+k+i`).

**The distribution** (the probabilistic automaton of Hewitt et al. 2020): with an empty stack emit END
with probability 1/2 and each open bracket with 1/(2k); at depth 0 < d < D each open bracket with
1/(2k) and the close of the top with 1/2; at depth D the close of the top. A string is the brackets
emitted before END; strings whose length is outside [min_len, max_len] are rejected (NOT the released
code's early stop at min_len).

**Two samplers of that one distribution.** `method="reject"` runs the automaton and rejects, with a
bounded number of tries: it refuses (one `ValueError`) settings whose acceptance rate, computed
exactly beforehand, would need more tries than allowed. Long strings are exponentially rare under
the automaton (for k=2, D=4 a length in [400, 500] has probability ~1e-12), so `method="exact"`
(the default) draws from the same conditional distribution without rejection: with h(t, d) the
probability that a run at length t and depth d ends with a length in [min_len, max_len] (computed
backwards in log space), each step is drawn with the automaton's probabilities times h of the
successor state, divided by h of the current one (Doob's h-transform). Tests check that the two
agree on short strings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal, final

import numpy as np
from jaxtyping import Array, Bool, Float, Int

PAD = 0
START = 1
END = 2
_FIRST_OPEN = 3


@final
@dataclasses.dataclass(frozen=True)
class DyckLanguage:
    """Dyck-(k, D): `k` bracket types, nesting depth at most `max_depth`; the vocabulary of the module docstring."""

    k: int
    max_depth: int

    def __post_init__(self) -> None:
        for name, value in (("k", self.k), ("max_depth", self.max_depth)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"invalid {name}={value!r}: {name} must be an integer >= 1")

    @property
    def vocab_size(self) -> int:
        return _FIRST_OPEN + 2 * self.k

    @property
    def opens(self) -> np.ndarray:
        """The open-bracket tokens, type order."""
        return np.arange(_FIRST_OPEN, _FIRST_OPEN + self.k)

    @property
    def closes(self) -> np.ndarray:
        """The close-bracket tokens, type order (`closes[i]` closes `opens[i]`)."""
        return np.arange(_FIRST_OPEN + self.k, _FIRST_OPEN + 2 * self.k)

    def is_open(self, tok: Any) -> Any:
        """Whether `tok` (an int or an int array) is an open bracket."""
        tok = np.asarray(tok)
        out = (tok >= _FIRST_OPEN) & (tok < _FIRST_OPEN + self.k)
        return bool(out) if out.ndim == 0 else out

    def is_close(self, tok: Any) -> Any:
        """Whether `tok` (an int or an int array) is a close bracket."""
        tok = np.asarray(tok)
        out = (tok >= _FIRST_OPEN + self.k) & (tok < _FIRST_OPEN + 2 * self.k)
        return bool(out) if out.ndim == 0 else out

    def close_of(self, open_tok: Any) -> Any:
        """The close bracket matching `open_tok` (an int or an int array of open brackets)."""
        if not np.all(self.is_open(open_tok)):
            raise ValueError(f"close_of: {open_tok!r} contains a token that is not an open bracket")
        out = np.asarray(open_tok) + self.k
        return int(out) if out.ndim == 0 else out


def _log_h(lang: DyckLanguage, min_len: int, max_len: int) -> np.ndarray:
    """log h(t, d) for t = 0..max_len+1, d = 0..D: the log-probability of ending with a length in range."""
    D = lang.max_depth
    log_half = np.log(0.5)
    lh = np.full((max_len + 2, D + 1), -np.inf)
    for t in range(max_len, -1, -1):
        nxt = lh[t + 1]
        end = log_half if min_len <= t else -np.inf
        lh[t, 0] = np.logaddexp(end, log_half + nxt[1])
        for d in range(1, D):
            lh[t, d] = np.logaddexp(log_half + nxt[d + 1], log_half + nxt[d - 1])
        lh[t, D] = nxt[D - 1]
    return lh


def acceptance_rate(lang: DyckLanguage, min_len: int, max_len: int) -> float:
    """The probability that a string of the automaton has a length in [min_len, max_len] (exact)."""
    _check_lengths(min_len, max_len)
    return float(np.exp(_log_h(lang, min_len, max_len)[0, 0]))


def _check_lengths(min_len: int, max_len: int) -> None:
    if min_len < 0:
        raise ValueError(f"invalid min_len={min_len}: min_len must be >= 0")
    if max_len < max(min_len, 1):
        raise ValueError(f"invalid max_len={max_len}: max_len must be >= max(min_len, 1) = {max(min_len, 1)}")


def _run(
    rng: np.random.Generator, lang: DyckLanguage, n: int, min_len: int, max_len: int, lh: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """n runs of the automaton in parallel, cut at max_len+1 tokens; with `lh` (from `_log_h(lang,
    min_len, max_len)`), h-transformed so that every run ends with a length in [min_len, max_len].

    **Returns:** tokens (n, max_len+1) (PAD after the end) and lengths (n,) (-1 where the run went
    past max_len without END).
    """
    k, D = lang.k, lang.max_depth
    toks = np.zeros((n, max_len + 1), dtype=np.int64)
    stack = np.zeros((n, D), dtype=np.int64)
    depth = np.zeros(n, dtype=np.int64)
    length = np.full(n, -1, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    for t in range(max_len + 1):
        if not alive.any():
            break
        # p_up: probability of an open bracket; p_end: of END (at depth 0); else close the top.
        p_up = np.where(depth == D, 0.0, 0.5)
        p_end = np.where(depth == 0, 0.5, 0.0)
        if lh is not None:  # finished runs may sit in states with h = 0: their nan never counts
            here = lh[t, depth]
            up = lh[t + 1, np.minimum(depth + 1, D)]
            in_range = 0.0 if min_len <= t else -np.inf
            with np.errstate(invalid="ignore", over="ignore"):
                p_up = np.where(depth == D, 0.0, p_up * np.exp(up - here))
                p_end = np.where(depth == 0, p_end * np.exp(in_range - here), 0.0)
        u = rng.random(n)
        is_end = alive & (u < p_end)
        is_up = alive & ~is_end & (u < p_end + p_up)
        is_down = alive & ~is_end & ~is_up
        length[is_end] = t
        alive &= ~is_end
        kind = rng.integers(0, k, size=n)
        rows = np.nonzero(is_up)[0]
        toks[rows, t] = _FIRST_OPEN + kind[rows]
        stack[rows, depth[rows]] = kind[rows]
        depth[rows] += 1
        rows = np.nonzero(is_down)[0]
        depth[rows] -= 1
        toks[rows, t] = _FIRST_OPEN + k + stack[rows, depth[rows]]
    toks[np.arange(max_len + 1)[None, :] >= np.where(length < 0, max_len + 1, length)[:, None]] = PAD
    return toks, length


def sample_dyck(
    rng: np.random.Generator,
    lang: DyckLanguage,
    n: int,
    min_len: int,
    max_len: int,
    *,
    method: Literal["exact", "reject"] = "exact",
    max_tries: int = 2_000_000,
) -> list[np.ndarray]:
    """`n` strings of Dyck-(k, D) from the automaton, conditioned on a length in [min_len, max_len].

    **Arguments:** `rng` the numpy generator (split from the run's key by the caller); `lang` the
    language; `n` how many; `min_len`, `max_len` the accepted lengths (inclusive; only even lengths
    exist); `method` "exact" (h-transform, no rejection) or "reject" (run and reject, as the
    paper's description); `max_tries` the most automaton runs "reject" may use.

    **Returns:** a list of `n` int64 arrays of bracket tokens (no START/END).

    **Raises:** `ValueError` when no length in range is possible, or ("reject") when the exact
    acceptance rate would need more than `max_tries` runs (or the runs were spent).
    """
    _check_lengths(min_len, max_len)
    if n < 0:
        raise ValueError(f"invalid n={n}: n must be >= 0")
    lh = _log_h(lang, min_len, max_len)
    if not np.isfinite(lh[0, 0]):
        raise ValueError(f"no Dyck string has a length in [{min_len}, {max_len}] (lengths are even)")
    if method == "exact":
        toks, length = _run(rng, lang, n, min_len, max_len, lh)
        assert np.all((length >= min_len) & (length <= max_len))
        return [toks[i, : length[i]].copy() for i in range(n)]
    if method != "reject":
        raise ValueError(f"invalid method={method!r}: method must be 'exact' or 'reject'")
    return _sample_reject(rng, lang, n, min_len, max_len, float(np.exp(lh[0, 0])), max_tries)


def _sample_reject(
    rng: np.random.Generator, lang: DyckLanguage, n: int, min_len: int, max_len: int, acc: float, max_tries: int
) -> list[np.ndarray]:
    need = n / acc if acc > 0 else np.inf
    if need > max_tries / 2:
        raise ValueError(
            f"sample_dyck: acceptance rate {acc:.3g} of lengths [{min_len}, {max_len}] needs ~{need:.3g} runs "
            f"for n={n} (max_tries={max_tries}); use method='exact'"
        )
    out: list[np.ndarray] = []
    tries = 0
    while len(out) < n:
        if tries >= max_tries:
            raise ValueError(f"sample_dyck: {max_tries} runs gave {len(out)} of {n} strings; use method='exact'")
        batch = int(min(max_tries - tries, max(64, 1.2 * (n - len(out)) / acc)))
        toks, length = _run(rng, lang, batch, min_len, max_len, None)
        tries += batch
        for i in np.nonzero((length >= min_len) & (length <= max_len))[0]:
            if len(out) < n:
                out.append(toks[i, : length[i]].copy())
    return out


def _opens_of(s: np.ndarray, lang: DyckLanguage | None) -> np.ndarray:
    """Which tokens of a bracket string are open brackets; without `lang` the string must be balanced
    (then the opens are its len/2 smallest tokens, as every open id is below every close id)."""
    if s.size and s.min() < _FIRST_OPEN:
        raise ValueError("a bracket string holds bracket tokens only (no PAD/START/END)")
    if lang is not None:
        return np.asarray(lang.is_open(s), dtype=bool).reshape(s.shape)
    if s.size % 2:
        raise ValueError("a bracket string of odd length is not balanced; pass lang= for a prefix")
    srt = np.sort(s)
    if s.size and srt[s.size // 2 - 1] == srt[s.size // 2]:
        raise ValueError("the string is not balanced; pass lang= for a prefix")
    is_open = s <= srt[s.size // 2 - 1] if s.size else np.zeros(0, dtype=bool)
    if s.size and np.cumsum(np.where(is_open, 1, -1)).min() < 0:
        raise ValueError("the string is not balanced; pass lang= for a prefix")
    return is_open


def depths(s: Sequence[int] | np.ndarray, lang: DyckLanguage | None = None) -> Int[np.ndarray, " n"]:
    """The stack depth after each token of a bracket string.

    Without `lang` the string must be a complete (balanced) one, as from `sample_dyck`; pass
    `lang` for a prefix.
    """
    s = np.asarray(s, dtype=np.int64)
    return np.cumsum(np.where(_opens_of(s, lang), 1, -1)).astype(np.int64)


def matching_open(s: Sequence[int] | np.ndarray, lang: DyckLanguage | None = None) -> Int[np.ndarray, " n"]:
    """For each close bracket the index of its matching open bracket; -1 at open brackets.

    Raises `ValueError` if a close does not match the open on top of the stack (checked when the
    type can be told: with `lang`, or always for the balanced-string form).
    """
    s = np.asarray(s, dtype=np.int64)
    is_open = _opens_of(s, lang)
    k = lang.k if lang is not None else (int(s[~is_open].min() - _FIRST_OPEN) if s.size else 0)
    out = np.full(s.size, -1, dtype=np.int64)
    stack: list[int] = []
    for i, tok in enumerate(s):
        if is_open[i]:
            stack.append(i)
            continue
        if not stack:
            raise ValueError(f"close bracket at index {i} with an empty stack")
        j = stack.pop()
        if lang is not None and tok != s[j] + k:
            raise ValueError(f"close bracket {tok} at index {i} does not match open {s[j]} at index {j}")
        out[i] = j
    return out


def structure(s: Sequence[int] | np.ndarray, lang: DyckLanguage | None = None) -> tuple[tuple[int, ...], ...]:
    """The structure of Murty et al. (2023): per top-level constituent (a maximal span that starts and
    ends at depth 0) the sequence of stack depths after each of its tokens, bracket types abstracted."""
    d = depths(s, lang)
    out: list[tuple[int, ...]] = []
    start = 0
    for i in np.nonzero(d == 0)[0]:
        out.append(tuple(int(x) for x in d[start : i + 1]))
        start = int(i) + 1
    if start < d.size:  # an unfinished constituent of a prefix
        out.append(tuple(int(x) for x in d[start:]))
    return tuple(out)


def lm_batch(
    strings: Sequence[np.ndarray], lang: DyckLanguage, row_len: int
) -> tuple[Int[np.ndarray, "R L"], Int[np.ndarray, "R L"], Bool[np.ndarray, "R L"]]:
    """Next-token rows, one string per row: the sequence START, s, END is cut into inputs (all but
    its last token) and targets (all but its first), both padded with PAD to `row_len`.

    **Returns:** `tokens` (R, row_len), `targets` (R, row_len) (PAD where there is no target: the
    loss ignores those), `close_mask` (R, row_len) true where the gold next token is a close bracket.

    **Raises:** `ValueError` if a string does not fit (len(s) + 1 > row_len).
    """
    R = len(strings)
    tokens = np.full((R, row_len), PAD, dtype=np.int64)
    targets = np.full((R, row_len), PAD, dtype=np.int64)
    for r, s in enumerate(strings):
        s = np.asarray(s, dtype=np.int64)
        if s.size + 1 > row_len:
            raise ValueError(f"invalid row_len={row_len}: row_len must be >= len(string) + 1 = {s.size + 1}")
        seq = np.concatenate([[START], s, [END]])
        tokens[r, : s.size + 1] = seq[:-1]
        targets[r, : s.size + 1] = seq[1:]
    return tokens, targets, np.asarray(lang.is_close(targets), dtype=bool).reshape(targets.shape)


def closing_accuracy(
    logits: Float[np.ndarray, "*batch L V"] | Float[Array, "*batch L V"],
    targets: Int[np.ndarray, "*batch L"] | Int[Array, "*batch L"],
    close_mask: Bool[np.ndarray, "*batch L"] | Bool[Array, "*batch L"],
    lang: DyckLanguage,
    rule: Literal["ratio", "argmax"] = "ratio",
) -> float:
    """Closing-bracket accuracy over the positions of `close_mask`.

    `rule="ratio"` (Hewitt et al. 2020, the Wen et al. code): a position counts as correct iff
    p(gold close) / sum over close brackets of p(close) > 0.8, which is the softmax over the close
    logits alone. `rule="argmax"` (Murty et al. 2023): the argmax over the close logits is the gold.
    Returns nan when the mask is empty.
    """
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets)
    mask = np.asarray(close_mask, dtype=bool)
    if not mask.any():
        return float("nan")
    z = logits[mask][:, lang.closes]
    gold = targets[mask] - lang.closes[0]
    if np.any((gold < 0) | (gold >= lang.k)):
        raise ValueError("closing_accuracy: close_mask marks a position whose target is not a close bracket")
    if rule == "argmax":
        return float(np.mean(np.argmax(z, axis=-1) == gold))
    if rule != "ratio":
        raise ValueError(f"invalid rule={rule!r}: rule must be 'ratio' or 'argmax'")
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    return float(np.mean(p[np.arange(gold.size), gold] > 0.8))
