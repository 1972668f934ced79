# %% [markdown]
# # A custom model and dynamics
#
# The engine knows no system: any equinox model, dataset and per-sample loss make a
# [`Problem`][flowsim.Problem], and any subclass of [`AbstractFlow`][flowsim.AbstractFlow] is a
# continuous dynamics that [`integrate`][flowsim.integrate] solves with diffrax. This notebook
# brings its own model (a two-layer linear network), task (regress a linear teacher), observables and
# dynamics (a gradient flow whose first layer learns `ratio` times faster: the continuous limit of GD
# with per-layer learning rates), then runs GD and SGD on the same problem, locates an event on all
# of them, and checks a conservation law of gradient flow that GD breaks.
#
# The same program as a script: `experiments/custom_dynamics.py`. The guide
# [Custom models and dynamics](../guides/custom-dynamics.md) lists what the engine checks.

# %%
import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import flowsim

jax.config.update("jax_enable_x64", True)

# %% [markdown]
# ## Model, task, problem
#
# A model is an equinox Module mapping **one** input to an output; the loss is per sample
# (here `0.5 (f(x) - y)²`, `flowsim.squared_loss` would do the same). By default every inexact
# array of the model is trained (`trainable=` selects a subset).


# %%
class TwoLayerLinear(eqx.Module):
    """f(x) = w2 · (W1 x), a deep linear network with a scalar output."""

    W1: jax.Array
    w2: jax.Array

    def __call__(self, x):
        return self.w2 @ (self.W1 @ x)


k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
x = jax.random.normal(k1, (64, 10))  # 64 samples in 10 dimensions
y = x @ jax.random.normal(k2, (10,))  # a linear teacher
model = TwoLayerLinear(0.1 * jax.random.normal(k3, (20, 10)), 0.1 * jax.random.normal(k4, (20,)))
problem = flowsim.make_problem(model, x, y, loss_fn=lambda out, target: 0.5 * (out - target) ** 2)
print("initial loss:", float(problem.loss(problem.params0)))

# %% [markdown]
# ## Observables
#
# An observer is any function `(t, params, problem) -> PyTree of arrays`; `params` are the trainable
# parameters, `problem.model(params)` the full model. Gradient flow on a two-layer linear network
# conserves `‖W1‖² − ‖w2‖²` exactly; a layer-wise flow and GD do not.


# %%
def observe(t, params, problem):
    m = problem.model(params)
    return {
        "loss": problem.loss(params),
        "end_to_end_norm": jnp.linalg.norm(m.w2 @ m.W1),
        "layer_imbalance": jnp.sum(m.W1**2) - jnp.sum(m.w2**2),
    }


# %% [markdown]
# ## A new dynamics
#
# Subclass [`AbstractFlow`][flowsim.AbstractFlow] and write `vector_field(t, params, problem)`,
# returning a PyTree of the parameters' structure. (A dynamics whose state is more than the
# parameters, like the heavy-ball ODE, subclasses [`AbstractDynamics`][flowsim.AbstractDynamics].)


# %%
class LayerwiseFlow(flowsim.AbstractFlow):
    """d(W1)/dt = -ratio · ∂L/∂W1, d(w2)/dt = -∂L/∂w2."""

    ratio: float

    def vector_field(self, t, params, problem):
        g = jax.grad(problem.loss)(params)
        return TwoLayerLinear(-self.ratio * g.W1, -g.w2)


# %% [markdown]
# ## Flows, GD and SGD on one save grid, with an event
#
# GD step k and the flow at t = k · lr are compared at the same times. An
# [`Event`][flowsim.Event] is root-found on the flow's dense output and located between the recorded
# steps of a discrete run.

# %%
lr = 0.01
steps = flowsim.save_steps(2000, 40, 20)  # integer steps: 0, 40 log-spaced, 20 linear
ts = steps * lr
half = flowsim.Event(
    "half_loss", lambda t, p, pr: 0.5 * problem.loss(problem.params0) - pr.loss(p), label="loss halved"
)

flow = flowsim.integrate(flowsim.GradientFlow(), problem, ts, observe, event=half)
fast = flowsim.integrate(LayerwiseFlow(4.0), problem, ts, observe, event=half)
gd = flowsim.gradient_descent(problem, lr, steps, observe, events=[half])
sgd = flowsim.sgd(problem, lr, steps, observe, batch_size=8, seeds=8, key=jax.random.PRNGKey(1))

print(
    f"loss halved at t = {flow.events['half_loss'].time:.4f} (flow), {fast.events['half_loss'].time:.4f} "
    f"(layer-wise flow), {gd.crossings['half_loss'][0]:.4f} (GD, interpolated between steps)"
)
print(
    f"final loss: flow {flow.obs['loss'][-1]:.3e}, layer-wise {fast.obs['loss'][-1]:.3e}, "
    f"GD {gd.obs['loss'][-1]:.3e}, SGD mean {sgd.obs['loss'][:, -1].mean():.3e}"
)

# %% [markdown]
# ## The conservation law
#
# The flow keeps `‖W1‖² − ‖w2‖²` to the solver's tolerance; GD drifts by O(lr), the layer-wise flow
# by O(1).

# %%
for name, run in [("gradient flow", flow), ("layer-wise flow", fast), ("GD", gd)]:
    print(f"{name:16s} drift of ||W1||² - ||w2||²: {np.ptp(run.obs['layer_imbalance']):.2e}")
assert np.ptp(flow.obs["layer_imbalance"]) < 1e-5 < np.ptp(gd.obs["layer_imbalance"])

fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
curves = [("gradient flow", flow, "k-"), ("layer-wise flow", fast, "C2-"), ("GD", gd, "C0--")]
for ax, key in zip(axes, ["loss", "end_to_end_norm", "layer_imbalance"]):
    for label, run, style in curves:
        ax.plot(run.ts, run.obs[key], style, label=label)
    ax.plot(sgd.ts, sgd.obs[key].mean(axis=0), "C1:", label="SGD (mean of 8)")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("t = step × lr")
    ax.set_title(key)
axes[0].set_yscale("log")
axes[0].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What the engine checks
#
# Bad user code is refused before compiling, with one `TypeError` each: a vector field that returns
# another PyTree than its state, an observer that returns non-arrays, a loss that is not a scalar per
# sample, a model that is not a PyTree of arrays.


# %%
class Broken(flowsim.AbstractFlow):
    def vector_field(self, t, params, problem):
        return params.W1  # not the parameters' PyTree


try:
    flowsim.integrate(Broken(), problem, ts, observe)
except TypeError as e:
    print("refused:", e)
