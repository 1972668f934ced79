"""Simplified proxies of the layer-2 queries/keys and their faithfulness (Friedman et al., ICML 2024).

Three families, each a grid of sizes, all as `QKProxy` (one pytree layout, see `model`):

- `pca`: queries and keys each projected on their top-r principal components (centred training
  activations at every non-PAD position of the training rows; means kept);
- `kmeans`: queries and keys each replaced by the nearest of c centroids (Lloyd's algorithm on the
  training activations, initialised at c distinct random activations);
- `svd` (data-free): W_Q^T W_K replaced by its rank-r SVD truncation.

**Faithfulness** on a split = agreement P[argmax proxy = argmax model] at the split's scored
positions, the argmax taken over the close brackets (Murty et al.'s accuracy rule); **accuracy** =
the same argmax equals the gold close. `study` scores every proxy of every family on every split;
`summarise` picks each family's smallest size with in-distribution (iid) agreement >= the target and
reads its gaps (agreement_iid - agreement_split) and accuracy differences (proxy - model).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .data import SPLITS, SYSTEMATIC, DyckProxiesData, DyckSplit
from .model import DyckLM, QKProxy, sq_dists

FAMILIES = ("pca", "kmeans", "svd")
MAX_FIT_POINTS = 5_000  # training activations used to fit PCA and k-means
KMEANS_ITERS = 25


def pca_ranks(e: int) -> tuple[int, ...]:
    """The PCA grid: ranks 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, ... below the head dimension, and `e`."""
    return tuple(sorted({r for r in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64) if r < e} | {e}))


def kmeans_sizes(max_depth: int, points: int) -> tuple[int, ...]:
    """The k-means grid: 2, 4, D+1, 2(D+1), 16, 32, 64, 128 (at most `points`)."""
    grid = {2, 4, max_depth + 1, 2 * (max_depth + 1), 16, 32, 64, 128}
    return tuple(sorted(c for c in grid if c <= points))


def close_argmax(logits: Float[Array, "*b V"]) -> Array:
    """The close bracket with the largest logit (int32 token id), for a vocabulary 3 + 2k."""
    k = (logits.shape[-1] - 3) // 2
    return jnp.argmax(logits[..., 3 + k :], axis=-1).astype(jnp.int32) + jnp.asarray(3 + k, jnp.int32)


@eqx.filter_jit
def _layer2_inputs(model: DyckLM, split: DyckSplit) -> Array:
    return jax.vmap(model.layer2_input)(split.tokens)


def fit_activations(model: DyckLM, train: DyckSplit, key: Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """h (normalised layer-2 input), queries and keys at the non-PAD positions of the training
    rows (at most `MAX_FIT_POINTS`, a random subset drawn from `key`)."""
    h = np.asarray(_layer2_inputs(model, train))[np.asarray(train.targets) != 0]
    if h.shape[0] > MAX_FIT_POINTS:
        idx = np.asarray(jax.random.choice(key, h.shape[0], (MAX_FIT_POINTS,), replace=False))
        h = h[np.sort(idx)]
    att = model.net.stack.blocks[1].attention
    return h, h @ np.asarray(att.W_Q[0]).T, h @ np.asarray(att.W_K[0]).T


def _projector(x: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    m = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - m, full_matrices=False)
    return m, vt[:r].T @ vt[:r]


def pca_proxy(base: QKProxy, q: np.ndarray, k: np.ndarray, r: int) -> QKProxy:
    """Queries and keys projected on their top-r principal components."""
    (mq, Pq), (mk, Pk) = _projector(q, r), _projector(k, r)
    dt = base.A.dtype
    return eqx.tree_at(lambda p: (p.mq, p.Pq, p.mk, p.Pk), base, tuple(jnp.asarray(a, dt) for a in (mq, Pq, mk, Pk)))


@eqx.filter_jit
def _lloyd(x: Float[Array, "N e"], init: Float[Array, "c e"], valid: Array) -> Float[Array, "c e"]:
    def step(_: Any, C: Array) -> Array:
        d2 = sq_dists(x, C, valid)
        onehot = jax.nn.one_hot(jnp.argmin(d2, axis=1), C.shape[0], dtype=x.dtype)
        count = jnp.sum(onehot, axis=0)
        new = (onehot.T @ x) / jnp.maximum(count, 1.0)[:, None]
        return jnp.where((count > 0)[:, None], new, C)

    return jax.lax.fori_loop(0, KMEANS_ITERS, step, init)


def kmeans(x: np.ndarray, c: int, c_max: int, key: Array) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with `c` centroids (rows padded to `c_max`, the rest marked invalid),
    initialised at c distinct points of `x` drawn from `key`; `KMEANS_ITERS` iterations."""
    idx = np.asarray(jax.random.choice(key, x.shape[0], (c,), replace=False))
    init = np.zeros((c_max, x.shape[1]), x.dtype)
    init[:c] = x[idx]
    valid = np.arange(c_max) < c
    return np.asarray(_lloyd(jnp.asarray(x), jnp.asarray(init), jnp.asarray(valid))), valid


def kmeans_proxy(base: QKProxy, q: np.ndarray, k: np.ndarray, c: int, key: Array) -> QKProxy:
    """Queries and keys each snapped to the nearest of c centroids of their training activations."""
    kq, kk = jax.random.split(key)
    c_max = base.Cq.shape[0]
    (Cq, valid), (Ck, _) = kmeans(q, c, c_max, kq), kmeans(k, c, c_max, kk)
    dt = base.A.dtype
    return eqx.tree_at(
        lambda p: (p.Cq, p.Ck, p.valid, p.kmeans),
        base,
        (jnp.asarray(Cq, dt), jnp.asarray(Ck, dt), jnp.asarray(valid), jnp.asarray(True)),
    )


def svd_proxy(base: QKProxy, model: DyckLM, r: int) -> QKProxy:
    """W_Q^T W_K replaced by its rank-r SVD truncation U_r S_r V_r^T (scores h U_r S_r (h' V_r)^T)."""
    att = model.net.stack.blocks[1].attention
    M = np.asarray(att.W_Q[0]).T @ np.asarray(att.W_K[0])
    U, S, Vt = np.linalg.svd(M)
    e = base.A.shape[1]
    keep = (np.arange(e) < r).astype(M.dtype)
    dt = base.A.dtype
    A, B = U[:, :e] * (S[:e] * keep)[None, :], Vt[:e].T
    return eqx.tree_at(lambda p: (p.A, p.B), base, (jnp.asarray(A, dt), jnp.asarray(B, dt)))


def build_proxies(
    model: DyckLM, train: DyckSplit, max_depth: int, key: Array
) -> dict[str, tuple[tuple[int, ...], list[QKProxy]]]:
    """Every family's grid of sizes and its proxies, fitted on the training rows (keys from `key`)."""
    k_fit, k_means = jax.random.split(key)
    h, q, k = fit_activations(model, train, k_fit)
    e = q.shape[1]
    sizes = kmeans_sizes(max_depth, h.shape[0])
    base = model.identity_proxy(max(sizes))
    ranks = pca_ranks(e)
    keys = jax.random.split(k_means, len(sizes))
    return {
        "pca": (ranks, [pca_proxy(base, q, k, r) for r in ranks]),
        "kmeans": (sizes, [kmeans_proxy(base, q, k, c, kc) for c, kc in zip(sizes, keys)]),
        "svd": (ranks, [svd_proxy(base, model, r) for r in ranks]),
    }


@eqx.filter_jit
def _predictions(model: DyckLM, proxies: QKProxy, tokens: Array) -> tuple[Array, Array]:
    """The model's close argmax (R, L) and every stacked proxy's (P, R, L)."""
    orig = close_argmax(jax.vmap(model)(tokens))
    x = jax.vmap(model.layer1)(tokens)
    one = lambda p: close_argmax(jax.vmap(lambda xi: model.head(xi, p))(x))
    return orig, jax.lax.map(one, proxies)


def _stack(proxies: list[QKProxy]) -> QKProxy:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *proxies)


def study(model: DyckLM, data: DyckProxiesData, max_depth: int, key: Array) -> dict[str, Any]:
    """Accuracy of the model and agreement/accuracy of every proxy on every split.

    **Returns:** `{"model_accuracy": {split: acc}, "positions": {split: n},
    "families": {family: {"sizes": [...], "agreement": {split: [...]}, "accuracy": {split: [...]}}}}`.
    """
    fams = build_proxies(model, data.train, max_depth, key)
    names = [f for f in FAMILIES for _ in fams[f][1]]
    stacked = _stack([p for f in FAMILIES for p in fams[f][1]])
    out: dict[str, Any] = {"model_accuracy": {}, "positions": {}, "families": {}}
    for f in FAMILIES:
        out["families"][f] = {"sizes": list(fams[f][0]), "agreement": {}, "accuracy": {}}
    for name in SPLITS:
        split = data.split(name)
        orig, prox = (np.asarray(a) for a in _predictions(model, stacked, split.tokens))
        mask, gold = np.asarray(split.mask), np.asarray(split.targets)
        out["positions"][name] = int(mask.sum())
        out["model_accuracy"][name] = float(np.mean(orig[mask] == gold[mask]))
        agree = np.mean(prox[:, mask] == orig[mask][None], axis=1)
        acc = np.mean(prox[:, mask] == gold[mask][None], axis=1)
        for f in FAMILIES:
            sel = np.asarray([n == f for n in names])
            out["families"][f]["agreement"][name] = agree[sel].tolist()
            out["families"][f]["accuracy"][name] = acc[sel].tolist()
    return out


def summarise(result: dict[str, Any], target: float) -> dict[str, Any]:
    """Per family: the smallest size with iid agreement >= `target` (None if none), and at it the
    agreement on every split, the gaps agreement_iid - agreement_split and the accuracy differences
    proxy - model on the systematic splits."""
    out: dict[str, Any] = {}
    for f, fam in result["families"].items():
        iid = np.asarray(fam["agreement"]["iid"])
        ok = np.flatnonzero(iid >= target)
        if ok.size == 0:
            out[f] = {"size": None, "best_iid_agreement": float(iid.max())}
            continue
        i = int(ok[0])
        agree = {s: fam["agreement"][s][i] for s in SPLITS}
        out[f] = {
            "size": fam["sizes"][i],
            "agreement": agree,
            "gap": {s: agree["iid"] - agree[s] for s in SYSTEMATIC},
            "accuracy_delta": {s: fam["accuracy"][s][i] - result["model_accuracy"][s] for s in SYSTEMATIC},
        }
    return out
