"""flowsim.nn parts against independent float64 numpy implementations of their formulas."""

from __future__ import annotations

import ast
import math
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import flowsim.nn as nn

RTOL = 1e-10
rng = np.random.default_rng(0)


def _x(L: int, d: int) -> jax.Array:
    return jnp.asarray(rng.normal(size=(L, d)))


# ---------------------------------------------------------------- numpy references (float64)


def np_softmax_rows(s: np.ndarray) -> np.ndarray:
    out = np.zeros_like(s)
    for i in range(s.shape[0]):
        row = s[i]
        finite = np.isfinite(row)
        e = np.zeros_like(row)
        e[finite] = np.exp(row[finite] - row[finite].max())
        out[i] = e / e.sum()
    return out


def np_attention(att, x, *, linear=False):
    WQ, WK, WV, WO = (np.asarray(a) for a in (att.W_Q, att.W_K, att.W_V, att.W_O))
    x = np.asarray(x)
    L = x.shape[0]
    outs, pats = [], []
    for h in range(WQ.shape[0]):
        q, k, v = x @ WQ[h].T, x @ WK[h].T, x @ WV[h].T
        s = q @ k.T / math.sqrt(WQ.shape[1])
        if att.causal:
            for i in range(L):
                for j in range(i + 1, L):
                    s[i, j] = 0.0 if linear else -np.inf
        A = s if linear else np_softmax_rows(s)
        pats.append(A)
        outs.append(A @ v)
    return np.concatenate(outs, axis=1) @ WO.T, np.stack(pats)


def np_layernorm(x, weight, bias, eps):
    x = np.asarray(x)
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y if weight is None else y * np.asarray(weight) + np.asarray(bias)


def np_gelu_tanh(z):
    return 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))


def np_mlp(mlp, x):
    h = np.asarray(x) @ np.asarray(mlp.W1).T + np.asarray(mlp.b1)
    h = np.maximum(h, 0.0) if mlp.activation == "relu" else np_gelu_tanh(h)
    return h @ np.asarray(mlp.W2).T + np.asarray(mlp.b2)


def np_ln_of(ln):
    return lambda y: np_layernorm(y, ln.weight, ln.bias, ln.eps)


def np_block(block, x):
    linear = isinstance(block.attention, nn.LinearAttention)
    subs = [(lambda y: np_attention(block.attention, y, linear=linear)[0], block.norm1)]
    if block.mlp is not None:
        subs.append((lambda y: np_mlp(block.mlp, y), block.norm2))
    x = np.asarray(x)
    for f, ln in subs:
        if block.norm == "pre":
            y = f(np_ln_of(ln)(x))
            x = x + y if block.residual else y
        elif block.norm == "post":
            x = np_ln_of(ln)(x + f(x) if block.residual else f(x))
        else:
            x = x + f(x) if block.residual else f(x)
    return x


def np_sinusoidal(L, d):
    pe = np.zeros((L, d))
    for p in range(L):
        for i in range(d):
            w = 1.0 / 10000 ** (2 * (i // 2) / d)
            pe[p, i] = math.sin(p * w) if i % 2 == 0 else math.cos(p * w)
    return pe


def np_transformer(model, tokens):
    tokens = np.asarray(tokens)
    L = len(tokens)
    if isinstance(model.embedding, nn.OneHotEmbedding):
        x = np.eye(model.embedding.vocab)[tokens]
    else:
        x = np.asarray(model.embedding.weight)[tokens]
    if isinstance(model.positional, nn.SinusoidalPositional):
        x = x + np_sinusoidal(L, x.shape[1])
    elif isinstance(model.positional, nn.LearnedPositional):
        x = x + np.asarray(model.positional.weight)[:L]
    for block in model.stack.blocks:
        x = np_block(block, x)
    if model.final_norm is not None:
        x = np_ln_of(model.final_norm)(x)
    return np_readout(model.readout, x)


def np_readout(ro, x):
    x = np.asarray(x)
    W, b = np.asarray(ro.W), np.asarray(ro.b)
    if isinstance(ro, nn.VocabHead):
        return x @ W.T + b
    if isinstance(ro, nn.MeanPoolReadout):
        return W @ x.mean(axis=0) + b
    return W @ x[ro.position] + b


# ---------------------------------------------------------------- tests


def test_nn_imports_no_system():
    for path in pathlib.Path(nn.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert "systems" not in (node.module or "").split("."), path
            elif isinstance(node, ast.Import):
                assert not any("systems" in a.name.split(".") for a in node.names), path


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", ["softmax", "linear"])
def test_attention_matches_numpy(causal, kind):
    cls = nn.MultiHeadAttention if kind == "softmax" else nn.LinearAttention
    att = cls(jax.random.key(1), 6, 2, 3, causal=causal)
    x = _x(4, 6)
    ref_out, ref_pat = np_attention(att, x, linear=kind == "linear")
    out, pat, out2, pat2 = eqx.filter_jit(lambda a, x: (*a.with_pattern(x), a(x), a.pattern(x)))(att, x)
    for o, p in ((out, pat), (out2, pat2)):
        np.testing.assert_allclose(o, ref_out, rtol=RTOL, atol=1e-13)
        np.testing.assert_allclose(p, ref_pat, rtol=RTOL, atol=1e-13)
    assert pat.shape == (2, 4, 4)
    if kind == "softmax":
        np.testing.assert_allclose(pat.sum(-1), 1.0, rtol=1e-13)
    if causal:
        assert np.all(np.asarray(pat)[:, np.triu_indices(4, 1)[0], np.triu_indices(4, 1)[1]] == 0)


def test_attention_init_scales():
    att = nn.MultiHeadAttention(jax.random.key(2), 400, 2, 300)
    assert abs(float(jnp.std(att.W_Q)) - 1 / math.sqrt(400)) < 2e-3
    assert abs(float(jnp.std(att.W_O)) - 1 / math.sqrt(600)) < 2e-3


@pytest.mark.parametrize("kind", ["softmax", "linear"])
def test_causal_attention_prefix(kind):
    cls = nn.MultiHeadAttention if kind == "softmax" else nn.LinearAttention
    att = cls(jax.random.key(1), 6, 2, 3, causal=True)
    run = eqx.filter_jit(att)
    x = _x(4, 6)
    full = np.asarray(run(x))
    for i in range(4):
        np.testing.assert_allclose(full[i], run(x[: i + 1])[i], rtol=RTOL, atol=1e-13)


def test_causal_transformer_prefix():
    model = nn.make_transformer(
        jax.random.key(3),
        vocab=6,
        d_model=6,
        n_layers=2,
        heads=2,
        head_dim=3,
        mlp_hidden=4,
        causal=True,
        positional="learned",
        readout="vocab",
        final_norm=True,
    )
    run = eqx.filter_jit(model)
    tokens = np.asarray(rng.integers(0, 6, size=4))
    full = np.asarray(run(jnp.asarray(tokens)))
    for i in range(4):
        np.testing.assert_allclose(full[i], run(jnp.asarray(tokens[: i + 1]))[i], rtol=RTOL, atol=1e-13)
        changed = np.concatenate([tokens[: i + 1], (tokens[i + 1 :] + 1) % 6])  # same length: no recompile
        np.testing.assert_allclose(full[: i + 1], run(jnp.asarray(changed))[: i + 1], rtol=RTOL, atol=1e-13)


@pytest.mark.parametrize("affine", [True, False])
def test_layernorm(affine):
    ln = nn.LayerNorm(6, eps=1e-3, affine=affine)
    if affine:
        ln = eqx.tree_at(lambda m: (m.weight, m.bias), ln, (_x(1, 6)[0], _x(1, 6)[0]))
    x = _x(4, 6)
    np.testing.assert_allclose(ln(x), np_layernorm(x, ln.weight, ln.bias, 1e-3), rtol=RTOL)
    np.testing.assert_allclose(ln(x[0]), np_layernorm(x[0], ln.weight, ln.bias, 1e-3), rtol=RTOL)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_mlp(activation):
    mlp = nn.MLP(jax.random.key(4), 6, 4, activation=activation)
    mlp = eqx.tree_at(lambda m: (m.b1, m.b2), mlp, (_x(1, 4)[0], _x(1, 6)[0]))
    x = _x(4, 6)
    np.testing.assert_allclose(mlp(x), np_mlp(mlp, x), rtol=RTOL, atol=1e-13)


def test_gelu_is_tanh_approximation():
    z = np.linspace(-4, 4, 41)
    np.testing.assert_allclose(jax.nn.gelu(jnp.asarray(z)), np_gelu_tanh(z), rtol=RTOL, atol=1e-14)
    erf = np.array([0.5 * t * (1 + math.erf(t / math.sqrt(2))) for t in z])
    assert np.max(np.abs(np_gelu_tanh(z) - erf)) > 1e-5  # the two GELUs differ: we match tanh


def test_positional_embeddings():
    x = _x(4, 6)
    np.testing.assert_allclose(nn.SinusoidalPositional()(x), np.asarray(x) + np_sinusoidal(4, 6), rtol=RTOL)
    np.testing.assert_allclose(nn.sinusoidal_table(5, 7), np_sinusoidal(5, 7), rtol=RTOL, atol=1e-15)
    np.testing.assert_array_equal(nn.NoPositional()(x), x)
    learned = nn.LearnedPositional(jax.random.key(5), 9, 6)
    np.testing.assert_allclose(learned(x), np.asarray(x) + np.asarray(learned.weight)[:4], rtol=RTOL)
    feats = _x(9, 6)
    fixed = nn.FixedPositional(feats)
    np.testing.assert_allclose(fixed(x), np.asarray(x) + np.asarray(feats)[:4], rtol=RTOL)
    g = jax.grad(lambda m: jnp.sum(m(x) ** 2))(fixed)
    np.testing.assert_array_equal(g.features, 0.0)


def test_token_embeddings():
    tokens = jnp.asarray([2, 0, 3, 3])
    np.testing.assert_array_equal(nn.OneHotEmbedding(5)(tokens), np.eye(5)[[2, 0, 3, 3]])
    emb = nn.LearnedEmbedding(jax.random.key(6), 5, 3)
    np.testing.assert_array_equal(emb(tokens), np.asarray(emb.weight)[[2, 0, 3, 3]])


@pytest.mark.parametrize("norm", ["pre", "post", None])
@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("mlp_hidden", [None, 5])
def test_block_composition(norm, residual, mlp_hidden):
    block = nn.TransformerBlock(
        jax.random.key(7), 6, 2, 3, mlp_hidden=mlp_hidden, activation="gelu", norm=norm, residual=residual, eps=1e-4
    )
    if norm is not None:  # non-trivial affine parameters so placement matters
        block = eqx.tree_at(lambda b: (b.norm1.weight, b.norm1.bias), block, (_x(1, 6)[0], _x(1, 6)[0]))
    x = _x(4, 6)
    np.testing.assert_allclose(block(x), np_block(block, x), rtol=RTOL, atol=1e-13)
    assert (block.norm2 is None) == (mlp_hidden is None or norm is None)
    xin = np_layernorm(x, block.norm1.weight, block.norm1.bias, 1e-4) if norm == "pre" else x
    np.testing.assert_allclose(block.pattern(x), np_attention(block.attention, xin)[1], rtol=RTOL, atol=1e-13)
    out, seen = block.norm_inputs(x)
    want_out, want = np_norm_inputs(block, np.asarray(x))
    np.testing.assert_allclose(out, want_out, rtol=RTOL, atol=1e-13)
    assert len(seen) == len(want) == (norm is not None) * (1 + (mlp_hidden is not None))
    for a, b in zip(seen, want):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-13)


def np_norm_inputs(block, x):
    """Independent numpy: the block's output and what enters each of its LayerNorms."""
    seen = []
    subs = [(lambda h: np_attention(block.attention, h)[0], block.norm1)]
    if block.mlp is not None:
        subs.append((lambda h: np_mlp(block.mlp, h), block.norm2))
    for f, ln in subs:
        if ln is None:
            x = x + f(x) if block.residual else f(x)
        elif block.norm == "pre":
            seen.append(x)
            x = x + f(np_ln_of(ln)(x)) if block.residual else f(np_ln_of(ln)(x))
        else:
            seen.append(x + f(x) if block.residual else f(x))
            x = np_ln_of(ln)(seen[-1])
    return x, seen


def test_stack_patterns():
    stack = nn.make_stack(jax.random.key(8), 3, 6, 2, 3, mlp_hidden=4)
    x = _x(4, 6)
    pats = stack.patterns(x)
    y = np.asarray(x)
    for block, p in zip(stack.blocks, pats, strict=True):
        np.testing.assert_allclose(p, np_attention(block.attention, np_ln_of(block.norm1)(y))[1], rtol=RTOL)
        y = np_block(block, y)
    np.testing.assert_allclose(stack(x), y, rtol=RTOL, atol=1e-13)


def test_readouts():
    x = _x(4, 6)
    for ro in (
        nn.PositionReadout(jax.random.key(9), 6, 5, position=0),
        nn.PositionReadout(jax.random.key(9), 6, 5, position=-1),
        nn.MeanPoolReadout(jax.random.key(10), 6, 5),
        nn.VocabHead(jax.random.key(11), 6, 5),
    ):
        ro = eqx.tree_at(lambda r: r.b, ro, jnp.asarray(rng.normal(size=ro.b.shape)))
        np.testing.assert_allclose(ro(x), np_readout(ro, x), rtol=RTOL, atol=1e-13)


CONFIGS = [
    dict(embedding="learned", d_model=6, positional="sinusoidal", readout="vocab", norm="pre", final_norm=True),
    dict(embedding="onehot", positional="learned", readout="last", out=5, norm="post", activation="gelu"),
    dict(embedding="learned", d_model=6, positional="none", readout="mean", norm=None, attention="linear"),
    dict(embedding="onehot", positional="sinusoidal", readout="first", norm="pre", causal=True, residual=False),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_transformer_matches_numpy(cfg):
    model = nn.make_transformer(jax.random.key(12), vocab=6, n_layers=2, heads=2, head_dim=3, mlp_hidden=4, **cfg)
    tokens = jnp.asarray([4, 1, 0, 3])
    out, pats = eqx.filter_jit(lambda m, t: (m(t), m.patterns(t)))(model, tokens)
    np.testing.assert_allclose(out, np_transformer(model, tokens), rtol=RTOL, atol=1e-13)
    assert len(pats) == 2 and pats[0].shape == (2, 4, 4)
    feats, seen = model.norm_inputs(tokens)
    np.testing.assert_array_equal(feats, model.features(tokens))
    per_block = (cfg.get("norm", "pre") is not None) * 2  # attention and MLP norms
    assert len(seen) == 2 * per_block + bool(cfg.get("final_norm")) and all(v.shape == (4, 6) for v in seen)


def test_transformer_gradient_vs_finite_differences():
    cfg = dict(CONFIGS[0], positional="learned", activation="gelu")
    model = nn.make_transformer(jax.random.key(13), vocab=6, n_layers=2, heads=2, head_dim=3, mlp_hidden=4, **cfg)
    tokens = jnp.asarray([4, 1, 0, 3])
    params, static = eqx.partition(model, eqx.is_inexact_array)
    theta, unravel = ravel_pytree(params)
    c = jnp.asarray(rng.normal(size=model(tokens).shape))
    f_and_g = jax.jit(jax.value_and_grad(lambda th: jnp.sum(c * eqx.combine(unravel(th), static)(tokens))))
    g = f_and_g(theta)[1]
    assert float(jnp.linalg.norm(g)) > 0
    eps = 1e-5
    for _ in range(3):
        v = jnp.asarray(rng.normal(size=theta.shape))
        fd = (f_and_g(theta + eps * v)[0] - f_and_g(theta - eps * v)[0]) / (2 * eps)
        np.testing.assert_allclose(float(g @ v), float(fd), rtol=1e-7)


def test_make_transformer_rejects_inconsistent_sizes():
    with pytest.raises(ValueError, match="one-hot"):
        nn.make_transformer(jax.random.key(0), vocab=6, d_model=4, embedding="onehot")
    with pytest.raises(ValueError, match="needs d_model"):
        nn.make_transformer(jax.random.key(0), vocab=6, embedding="learned")
