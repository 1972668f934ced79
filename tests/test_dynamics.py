"""Built-in dynamics (`flowsim.GradientFlow`, `ModifiedFlow`, `HeavyBallFlow`, `SGDModifiedEquation`)
against their discrete counterparts, and bad input.

Orders are slopes of log(max |loss_discrete - loss_continuous|) against log(lr), fitted on three
step sizes lr in {0.04, 0.02, 0.01} over t in [0, 1]; continuous references are Dopri8 at rtol 1e-12.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowsim import (
    AbstractFlow,
    GradientFlow,
    HeavyBallFlow,
    ModifiedFlow,
    SGDModifiedEquation,
    gradient_descent,
    integrate,
    integrate_sde,
    logistic_loss,
    make_problem,
    sgd,
)

LRS = np.array([0.04, 0.02, 0.01])


def _loss(t, params, problem):
    return {"loss": problem.loss(params)}


def _order(problem, make_dynamics, **gd_kwargs):
    errs = []
    for lr in LRS:
        k = np.arange(0, int(round(1.0 / lr)) + 1, int(round(0.1 / lr)))
        gd = gradient_descent(problem, lr, k, _loss, **gd_kwargs)
        flow = integrate(make_dynamics(lr), problem, k * lr, _loss, solver="dopri8", rtol=1e-12, atol=1e-14)
        errs.append(np.max(np.abs(gd.obs["loss"] - flow.obs["loss"])))
    return np.polyfit(np.log(LRS), np.log(errs), 1)[0], errs


def test_gd_tracks_modified_flow_to_second_order_and_plain_flow_to_first(small_setup):
    p = small_setup.problem
    slope_igr, err_igr = _order(p, lambda lr: ModifiedFlow(lr))
    slope_gf, err_gf = _order(p, lambda lr: GradientFlow())
    assert 1.8 <= slope_igr <= 2.2, (slope_igr, err_igr)
    assert 0.9 <= slope_gf <= 1.1, (slope_gf, err_gf)
    assert err_igr[-1] < 0.1 * err_gf[-1]


def test_weight_decay_flow_is_first_order_limit_of_gd_with_decay(small_setup):
    slope, errs = _order(small_setup.problem, lambda lr: GradientFlow(0.1), weight_decay=0.1)
    assert 0.9 <= slope <= 1.1, (slope, errs)


def test_heavy_ball_ode_is_first_order_limit_of_momentum_gd(small_setup):
    slope, errs = _order(small_setup.problem, lambda lr: HeavyBallFlow(lr, 0.5), momentum=0.5)
    assert 0.8 <= slope <= 1.2, (slope, errs)


def test_frozen_subset_does_not_move(small_setup):
    """Freezing the attention (trainable = W and nothing else) keeps W_Q, W_K, W_V at init."""
    s = small_setup
    only_w = jax.tree.map(lambda _: False, s.model)
    only_w = eqx.tree_at(lambda m: m.W, only_w, True)
    p = make_problem(s.model, s.data.tokens, s.data.y, logistic_loss, trainable=only_w)
    assert p.params0.W_Q is None and p.params0.W is not None
    flow = integrate(GradientFlow(), p, np.array([0.0, 0.5, 1.0]), _loss)
    final = p.model(flow.params)
    np.testing.assert_array_equal(final.W_Q, s.model.W_Q)
    assert not np.allclose(final.W, s.model.W) and flow.obs["loss"][-1] < flow.obs["loss"][0]


def test_sme_ensemble_matches_iid_sgd_ensemble_at_small_lr(small_setup):
    """lr = 0.02, batch 4 of n = 12, 32 Brownian paths vs 32 SGD seeds with i.i.d. batches, t in [0, 1]:
    the mean losses agree within 3 combined standard errors at every save time, and the spreads
    within a factor 2."""
    p, lr, paths = small_setup.problem, 0.02, 32
    k = np.arange(0, 51, 10)
    sde = integrate_sde(SGDModifiedEquation(lr, 4), p, k * lr, _loss, dt=lr / 2, paths=paths, key=jax.random.PRNGKey(1))
    sg = sgd(p, lr, k, _loss, batch_size=4, seeds=paths, sampling="iid", key=jax.random.PRNGKey(2))
    a, b = sde.obs["loss"][:, 1:], sg.obs["loss"][:, 1:]
    se = np.sqrt(a.var(0, ddof=1) / paths + b.var(0, ddof=1) / paths)
    assert sde.ok and np.all(np.abs(a.mean(0) - b.mean(0)) <= 3 * se)
    ratio = a.std(0) / b.std(0)
    assert np.all((ratio > 0.5) & (ratio < 2)), ratio


class _WrongShape(AbstractFlow):
    def vector_field(self, t, params, problem):
        return jax.tree.map(lambda x: x[..., :1], params)


def test_bad_input_is_caught_before_compilation(small_setup):
    s = small_setup
    with pytest.raises(TypeError, match="vector_field must return"):
        integrate(_WrongShape(), s.problem, np.array([0.0, 1.0]), _loss)
    with pytest.raises(TypeError, match="observer must return a PyTree of arrays"):
        integrate(GradientFlow(), s.problem, np.array([0.0, 1.0]), lambda t, p, pr: {"x": "text"})
    # make_problem's own messages, or under the jaxtyping import hook the run-time checker's, which refuses
    # the same calls first (Problem.per_sample_loss returns Float[Array, " b"]; the model is an eqx.Module)
    with pytest.raises(TypeError, match=r"(?s)scalar per sample|over the dataset failed: .*per_sample_loss"):
        make_problem(s.model, s.data.tokens, s.data.y, loss_fn=lambda out, y: jnp.stack([out, y]))
    with pytest.raises(TypeError, match=r"PyTree of arrays|typechecking parameter 'model'"):
        make_problem(lambda x: x, s.data.tokens, s.data.y, logistic_loss)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no diffusion"):
        integrate_sde(GradientFlow(), s.problem, np.array([0.0, 1.0]), _loss, dt=0.1, key=jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="key"):
        integrate_sde(SGDModifiedEquation(0.1, 4), s.problem, np.array([0.0, 1.0]), _loss, dt=0.1)
