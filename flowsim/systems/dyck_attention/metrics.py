"""The metrics of Wen et al. (NeurIPS 2023) on a trained model (JAX, traceable).

- `closing_accuracy`: at positions whose gold next token is a close bracket, correct iff
  p(gold close) / sum_close p(close) > 0.8 (Hewitt et al. 2020), or the argmax over closes is the gold.
- `attention_tv`: mean over layers and probe queries of the total-variation distance
  (1/2) sum_j |A_qj - B_qj| between two models' causal attention patterns on the probe.
- `stack_likeness`: the last layer's attention mass, at each close of the probe, on the close's
  matching open bracket, averaged over the probe's closes.
- `balance_violation`: `balance_variation` of the released code (src/training_regimen.py), on the
  probe with the first layer's attention A computed WITHOUT the causal mask (the code sets
  `is_cross_attention`, which drops GPT-2's causal mask) and its values v centred over the hidden
  axis; loc(t, d, o) = 1 + 2tD + oD + d indexes the probe (type t, side o = 0 open / 1 close, d-th of
  its run). For each close query q = loc(t', d', 1), d' = 1..D-1: numerator max over (t, d) of
  ||A_q,loc(t,d,0) v + A_q,loc(t,d,1) v||; denominator min over type assignments r of
  ||A_q,0 v_0 + A_q,loc(t',d',0) v + A_q,loc(t',d',1) v + sum_{e<d'} A_q,loc(r_e,e,0) v||;
  the violation is the mean ratio.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ..._dyck import matching_open
from .model import DyckModel


def closing_accuracy(
    logits: Float[Array, "*b L V"],
    targets: Int[Array, "*b L"],
    close: Bool[Array, "*b L"],
    k: int,
    argmax: bool = False,
) -> Float[Array, ""]:
    """Closing-bracket accuracy (ratio rule > 0.8, or argmax over closes); nan without closes."""
    z = logits[..., 3 + k : 3 + 2 * k]
    gold = jnp.clip(targets - (3 + k), 0, k - 1)
    if argmax:
        ok = jnp.argmax(z, axis=-1).astype(gold.dtype) == gold
    else:
        p = jax.nn.softmax(z, axis=-1)
        ok = jnp.take_along_axis(p, gold[..., None], axis=-1)[..., 0] > 0.8
    w = close.astype(logits.dtype)
    return jnp.sum(ok.astype(logits.dtype) * w) / jnp.sum(w)


def probe_patterns(model: DyckModel, probe: Int[Array, " P"]) -> Float[Array, "layers P P"]:
    """Every layer's causal attention pattern on the probe (head 0)."""
    return jnp.stack([A[0] for A in model.patterns(probe)])


def attention_tv(a: Float[Array, "layers P P"], b: Float[Array, "layers P P"]) -> Float[Array, ""]:
    """Mean over layers and queries of the total-variation distance between attention rows."""
    return jnp.mean(0.5 * jnp.sum(jnp.abs(a - b), axis=-1))


def stack_pairs(probe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(close positions, their matching opens) of the probe (host-side, fixed)."""
    m = matching_open(probe[1:]) + 1
    q = np.nonzero(m > 0)[0] + 1
    return q, m[q - 1]


def stack_likeness(patterns: Float[Array, "layers P P"], probe: np.ndarray) -> Float[Array, ""]:
    """The last layer's mean attention mass, at the probe's closes, on their matching opens."""
    q, o = stack_pairs(probe)
    return jnp.mean(patterns[-1][q, o])


def _first_layer_av(model: DyckModel, probe: Int[Array, " P"]) -> tuple[Array, Array]:
    block = model.stack.blocks[0]
    x = model.embed(probe)
    if block.norm == "pre" and block.norm1 is not None:
        x = block.norm1(x)
    att = block.attention
    q, k, v = (x @ W[0].T for W in (att.W_Q, att.W_K, att.W_V))
    A = jax.nn.softmax(q @ k.T / math.sqrt(att.W_Q.shape[1]), axis=-1)  # no causal mask, as the code
    return A, v - jnp.mean(v, axis=1, keepdims=True)


def balance_masks(depth: int, P: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The released code's index sets on the probe as 0/1 masks: queries (Q,), numerator pairs
    (Q, 2D, P) and denominator sets (Q, 2^(D-1), P) (assignment sets repeated to a common count)."""
    D = depth

    def loc(t: int, d: int, o: int) -> int:
        return t * 2 * D + o * D + d + 1

    queries, nums, dens = [], [], []
    for tp in range(2):
        for dp in range(1, D):
            queries.append(loc(tp, dp, 1))
            num = np.zeros((2 * D, P))
            for m, (t, d) in enumerate(itertools.product(range(2), range(D))):
                num[m, [loc(t, d, 0), loc(t, d, 1)]] = 1.0
            rs = list(itertools.product((0, 1), repeat=dp))
            den = np.zeros((2 ** (D - 1), P))
            for m in range(den.shape[0]):
                r = rs[m % len(rs)]
                den[m, [0, loc(tp, dp, 0), loc(tp, dp, 1)]] = 1.0
                for e in range(dp):
                    den[m, loc(r[e], e, 0)] += 1.0
            nums.append(num)
            dens.append(den)
    return np.array(queries), np.stack(nums), np.stack(dens)


def balance_violation(model: DyckModel, probe: Int[Array, " P"], depth: int) -> Float[Array, ""]:
    """The released code's `balance_variation` (module docstring); needs the k = 2 probe."""
    A, v = _first_layer_av(model, probe)
    q, num, den = balance_masks(depth, probe.shape[0])
    W = A[q]  # (Q, P)
    dt = A.dtype
    nv = jnp.einsum("qmj,qj,jh->qmh", jnp.asarray(num, dt), W, v)
    dv = jnp.einsum("qmj,qj,jh->qmh", jnp.asarray(den, dt), W, v)
    ratio = jnp.max(jnp.linalg.norm(nv, axis=-1), axis=-1) / jnp.min(jnp.linalg.norm(dv, axis=-1), axis=-1)
    return jnp.mean(ratio)
