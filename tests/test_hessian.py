"""Hessian-vector products, top-k Hessian eigenvalues by Lanczos, and the `Sharpness` observer.

References: the dense Hessian (`jax.hessian`) with `numpy.linalg.eigvalsh`, central finite differences
of the gradient, and the closed form X^T X / n of linear regression's Hessian.
"""

from __future__ import annotations

import functools
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree

import flowsim
from flowsim import nn
from flowsim._hessian import Sharpness, dense_hessian, hessian_eigs, hessian_top_eigs, hvp, sharpness

F64 = jnp.float64
EPS = 1e-5  # central differences of the gradient
# XLA's lowest backend optimisation level: these programs run once, and compiling them (several
# Lanczos loops around forward-over-reverse products) is most of this file's time.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


@final
class Linear(eqx.Module):
    w: Float[Array, " d"]

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        return self.w @ x


@final
class TanhMLP(eqx.Module):
    W1: Float[Array, "h d"]
    b1: Float[Array, " h"]
    w2: Float[Array, " h"]
    b2: Float[Array, ""]

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        return self.w2 @ jnp.tanh(self.W1 @ x + self.b1) + self.b2


def _loss_obs(t: Array, params: PyTree, problem: flowsim.Problem) -> dict[str, Array]:
    return {"loss": problem.loss(params)}


def _linreg(x: np.ndarray, w_star: np.ndarray | None = None, w0: np.ndarray | None = None) -> flowsim.Problem:
    d = x.shape[1]
    w_star = np.linspace(-1.0, 1.0, d) if w_star is None else w_star
    w0 = np.ones(d) if w0 is None else w0
    return flowsim.make_problem(
        Linear(jnp.asarray(w0, F64)), jnp.asarray(x, F64), jnp.asarray(x @ w_star, F64), flowsim.squared_loss
    )


@pytest.fixture(scope="module")
def linreg() -> tuple[flowsim.Problem, np.ndarray]:
    """Linear regression, n = 12, d = 4: the Hessian is X^T X / n at every point."""
    x = np.random.default_rng(0).normal(size=(12, 4))
    return _linreg(x), x.T @ x / 12


@pytest.fixture(scope="module")
def linreg_family(linreg) -> dict[str, np.ndarray]:
    """Lanczos on four d = 4 linear regressions, vmapped (one compile): X^T X / n generic, diag(3, 3,
    1, 1) (any Krylov space has dimension 2: breakdown after two steps), 2 I (breakdown after one)
    and 0 (H v = 0 at the first step)."""
    x = np.zeros((12, 4))
    x[:4] = np.diag(np.sqrt(12 * np.array([3.0, 3.0, 1.0, 1.0])))
    others = [_linreg(x), _linreg(np.sqrt(24.0) * np.eye(12, 4)), _linreg(np.zeros((12, 4)))]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), linreg[0], *others)

    def run(pr: flowsim.Problem):
        p = pr.params0
        out = {"dense": dense_hessian(pr, p), "sharpness": sharpness(pr, p)}
        eigs = hessian_eigs(pr, p, 4, iters=4)  # iters = P: the whole spectrum
        out["values"], out["residuals"] = eigs.values, eigs.residuals
        out["clipped"] = hessian_eigs(pr, p, 4, iters=50).values  # 50 > P: clipped to 4
        return out

    return jax.tree.map(np.asarray, jit(jax.vmap(run))(stacked))


@pytest.fixture(scope="module")
def mlp() -> flowsim.Problem:
    """A 3-5-1 tanh MLP on 10 samples: P = 26 parameters in four leaves."""
    rng = np.random.default_rng(4)
    draw = lambda *shape: jnp.asarray(rng.normal(size=shape), F64)
    model = TanhMLP(draw(5, 3), 0.1 * draw(5), draw(5), jnp.zeros((), F64))
    return flowsim.make_problem(model, draw(10, 3), draw(10), flowsim.squared_loss)


@pytest.fixture(scope="module")
def mlp_results(mlp) -> tuple[np.ndarray, dict[str, PyTree]]:
    """Everything the MLP tests check, in one compile: at params0 and three perturbations of it,
    vmapped, the dense Hessian, Lanczos' top-3 (with Ritz vectors), the top-3 by magnitude and the
    whole spectrum with iters = 40 > P = 26; at params0, an HVP against a random direction and
    the gradients at params0 +- eps v (central differences)."""
    flat, unravel = ravel_pytree(mlp.params0)
    rng = np.random.default_rng(2)
    points = jnp.asarray(np.concatenate([np.zeros((1, flat.size)), 0.3 * rng.normal(size=(3, flat.size))]), F64)
    v = jnp.asarray(rng.normal(size=flat.shape), F64)

    def at(shift: Array) -> dict[str, PyTree]:
        p = unravel(flat + shift)
        out = {"dense": dense_hessian(mlp, p), "mag": hessian_top_eigs(mlp, p, 3, iters=20, by_magnitude=True)}
        eigs = hessian_eigs(mlp, p, 3, iters=20, vectors=True)
        out["values"], out["residuals"], out["vectors"] = eigs.values, eigs.residuals, eigs.vectors  # pyright: ignore[reportArgumentType]
        eigs = hessian_eigs(mlp, p, 26, iters=40)
        out["all"], out["all_residuals"] = eigs.values, eigs.residuals
        return out

    def run(points: Array) -> dict[str, PyTree]:
        out = jax.vmap(at)(points)
        grad = lambda f: ravel_pytree(jax.grad(mlp.loss)(unravel(f)))[0]
        out["hvp"] = hvp(mlp, mlp.params0, unravel(v))
        out["fd"] = (grad(flat + EPS * v) - grad(flat - EPS * v)) / (2 * EPS)
        return out

    return np.asarray(v), jax.tree.map(np.asarray, jit(run)(points))


@pytest.fixture(scope="module")
def transformer() -> flowsim.Problem:
    """A one-block softmax-attention transformer (pre-norm LayerNorm, learned positions, last-position
    read-out), P = 223. Its weights are numpy draws into `make_transformer`'s abstract structure
    (drawing them with jax.random compiles one kernel per leaf: seconds)."""
    shapes = eqx.filter_eval_shape(
        lambda k: nn.make_transformer(
            k,
            vocab=6,
            d_model=6,
            heads=1,
            head_dim=6,
            readout="last",
            out=1,
            positional="learned",
            max_len=4,
            dtype=F64,
        ),
        jax.random.key(1),
    )
    rng = np.random.default_rng(3)

    def draw(path, leaf):
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            return leaf
        x = 0.5 * rng.normal(size=leaf.shape)
        return jnp.asarray(
            x + 1.0 if "norm" in jax.tree_util.keystr(path) and "weight" in jax.tree_util.keystr(path) else x, F64
        )

    model = jax.tree_util.tree_map_with_path(draw, shapes)
    tokens = jnp.asarray(rng.integers(0, 6, size=(8, 4)))
    return flowsim.make_problem(model, tokens, jnp.asarray(rng.normal(size=(8, 1)), F64), flowsim.squared_loss)


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def test_hvp_matches_dense_hessian_and_finite_differences(mlp, mlp_results):
    v, out = mlp_results
    assert jax.tree.structure(out["hvp"]) == jax.tree.structure(mlp.params0)
    hv = np.asarray(ravel_pytree(out["hvp"])[0])
    H = out["dense"][0]
    assert H.shape == (26, 26)
    np.testing.assert_allclose(H, H.T, rtol=0, atol=1e-13)
    np.testing.assert_allclose(hv, H @ v, rtol=1e-12, atol=1e-13 * np.max(np.abs(hv)))
    np.testing.assert_allclose(hv, out["fd"], rtol=0, atol=1e-8 * np.max(np.abs(hv)))


def test_top_eigs_match_dense_on_a_tanh_mlp_under_jit_and_vmap(mlp_results):
    """At params0 and three other points (vmapped under jit): iters = 20 < P = 26."""
    _, out = mlp_results
    assert out["values"].shape == out["mag"].shape == (4, 3)
    for i in range(4):
        ev = np.linalg.eigvalsh(out["dense"][i])
        top, by_mag = ev[::-1][:3], ev[np.argsort(-np.abs(ev))][:3]
        assert _rel(out["values"][i], top) < 1e-6 and _rel(out["mag"][i], by_mag) < 1e-6
        assert np.all(out["residuals"][i] < 1e-6 * abs(top[0]))


def test_ritz_vectors_are_unit_eigenvectors(mlp_results):
    _, out = mlp_results
    Y = np.stack([ravel_pytree(jax.tree.map(lambda x: x[0, i], out["vectors"]))[0] for i in range(3)])
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), np.ones(3), rtol=1e-12)
    R = Y @ out["dense"][0] - out["values"][0][:, None] * Y
    np.testing.assert_allclose(R, np.zeros_like(R), rtol=0, atol=1e-6)
    # the reported residual is |H y - lambda y| (to rounding)
    np.testing.assert_allclose(np.linalg.norm(R, axis=1), out["residuals"][0], rtol=1e-3, atol=1e-13)


def test_whole_spectrum_when_iters_exceed_parameter_count(mlp_results):
    _, out = mlp_results
    assert np.all(np.isfinite(out["all"])) and np.all(np.isfinite(out["all_residuals"]))
    for i in range(4):
        ev = np.linalg.eigvalsh(out["dense"][i])[::-1]
        np.testing.assert_allclose(out["all"][i], ev, rtol=0, atol=1e-12 * abs(ev[0]))


def test_top_eigs_match_dense_on_a_small_transformer(transformer):
    params = transformer.params0
    assert 100 <= ravel_pytree(params)[0].size <= 300
    H, values = jit(lambda p: (dense_hessian(transformer, p), hessian_top_eigs(transformer, p, 3, iters=30)))(params)
    ev = np.linalg.eigvalsh(np.asarray(H))[::-1]
    assert _rel(values, ev[:3]) < 1e-6


def test_linear_regression_closed_form(linreg, linreg_family):
    _, H = linreg
    ev = np.linalg.eigvalsh(H)[::-1]
    np.testing.assert_allclose(linreg_family["dense"][0], H, rtol=1e-13)
    np.testing.assert_allclose(linreg_family["values"][0], ev, rtol=1e-12)
    np.testing.assert_array_equal(linreg_family["clipped"][0], linreg_family["values"][0])
    np.testing.assert_allclose(linreg_family["sharpness"][0], ev[0], rtol=1e-12)


def test_breakdown_repeated_and_zero_spectra_give_no_nan(linreg_family):
    values, residuals = linreg_family["values"][1:], linreg_family["residuals"][1:]
    np.testing.assert_allclose(values[0], [3.0, 3.0, 1.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(values[1], [2.0, 2.0, 2.0, 2.0], rtol=1e-12)
    np.testing.assert_array_equal(values[2], np.zeros(4))
    assert np.all(np.isfinite(residuals)) and np.all(residuals < 1e-12)
    assert np.all(np.isfinite(linreg_family["clipped"]))


def test_sharpness_observer_along_flow_gd_and_sgd(linreg):
    problem, H = linreg
    lam = np.linalg.eigvalsh(H)[::-1]
    lr = 0.1
    flow = flowsim.integrate(
        flowsim.GradientFlow(), problem, jnp.linspace(0.0, 1.0, 3, dtype=F64), Sharpness(_loss_obs, k=2, iters=4)
    )
    assert flow.ok and set(flow.obs) == {"loss", "lambda_max", "hessian_top", "hessian_residual"}
    assert flow.obs["lambda_max"].shape == (3,) and flow.obs["hessian_top"].shape == (3, 2)
    np.testing.assert_allclose(flow.obs["hessian_top"], np.broadcast_to(lam[:2], (3, 2)), rtol=1e-12)
    steps = np.array([0, 5, 10])
    obs = Sharpness(_loss_obs, k=2, iters=4, lr=lr)
    gd = flowsim.gradient_descent(problem, lr, steps, obs)
    sgd = flowsim.sgd(problem, lr, steps, obs, batch_size=4, key=jax.random.key(0), seeds=2)
    for run, lead in ((gd, (3,)), (sgd, (2, 3))):
        assert run.obs["lambda_max"].shape == lead and run.obs["hessian_top"].shape == (*lead, 2)
        assert run.obs["loss"].shape == lead and np.all(np.isfinite(run.obs["lambda_max"]))
        np.testing.assert_allclose(run.obs["lambda_max"], lam[0], rtol=1e-12)
        np.testing.assert_allclose(run.obs["eos_ratio"], lr * run.obs["lambda_max"] / 2, rtol=1e-15)


def test_eos_ratio_marks_gd_stability_on_a_quadratic(linreg):
    problem, H = linreg
    lam = float(np.linalg.eigvalsh(H)[-1])
    steps = np.array([0, 100, 400])
    for factor, stable in ((0.95, True), (1.05, False)):
        lr = factor * 2 / lam
        run = flowsim.gradient_descent(problem, lr, steps, Sharpness(_loss_obs, k=2, iters=4, lr=lr))
        np.testing.assert_allclose(run.obs["eos_ratio"], factor, rtol=1e-12)
        loss = run.obs["loss"]
        if stable:
            assert loss[-1] < 1e-8 * loss[0]
        else:
            assert run.diverged or loss[-1] > 1e6 * loss[0]


def test_sharpness_rejects_bad_observers_and_sizes(linreg):
    problem, _ = linreg
    t0 = jnp.zeros((), F64)
    with pytest.raises(TypeError, match="returns a dict"):
        jax.eval_shape(Sharpness(lambda t, p, pr: pr.loss(p)), t0, problem.params0, problem)
    with pytest.raises(ValueError, match="already records"):
        jax.eval_shape(Sharpness(lambda t, p, pr: {"lambda_max": pr.loss(p)}), t0, problem.params0, problem)
    with pytest.raises(TypeError):
        Sharpness(3)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="iters"):
        Sharpness(_loss_obs, k=3, iters=2)
    with pytest.raises(ValueError, match="size 4"):
        jax.eval_shape(lambda p: hessian_top_eigs(problem, p, 5, iters=8), problem.params0)
    alone = jax.eval_shape(Sharpness(None, k=2, iters=4), t0, problem.params0, problem)
    assert {k: v.shape for k, v in alone.items()} == {"lambda_max": (), "hessian_top": (2,), "hessian_residual": (2,)}
