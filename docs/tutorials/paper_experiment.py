# %% [markdown]
# # The paper's experiment from the library
#
# `flowsim run` is a thin layer over the library. This notebook does the same from Python for the
# reference system, word co-occurrence (Yang, Kailkhura, Wang & Liang, NeurIPS 2024), at the
# system's **smoke size** (n = 12 sequences of length 4, widths 16) so that it runs in seconds while
# this site is built. The paper's sizes are the defaults: `flowsim.Config("cooccurrence")`.
#
# The steps: a config, the three runs from one initial point (gradient flow with diffrax, full-batch
# GD, minibatch SGD), the verdicts on the paper's claims, the results folder and its figures.

# %%
import pathlib
import tempfile

import matplotlib.pyplot as plt
from IPython.display import Image, display

import flowsim

# %%
system = flowsim.get_system("cooccurrence")
print(system.summary)
print("smoke size:", system.smoke)

# %% [markdown]
# A [`Config`][flowsim.Config] holds the system's own fields and the run settings (seed, lr, steps,
# SGD batch and seeds, solver, tolerances, save grid, precision), validated together. A bad value is
# refused with one line naming the field:

# %%
config = flowsim.Config("cooccurrence", **system.smoke)
print({k: config.to_dict()[k] for k in ("n", "L", "d", "m", "m1", "lr", "steps", "batch_size", "sgd_seeds")})
print("flow time T =", config.t_final)
try:
    flowsim.Config("cooccurrence", n=7)
except flowsim.ConfigError as e:
    print("refused:", e)

# %% [markdown]
# [`run_experiment`][flowsim.run_experiment] runs the flow, GD and SGD (every random stream split
# from one key), locates the system's events on the flow (here the end of Phase 1: the first time
# every sample is classified correctly) and computes the held-out metric of each run.

# %%
result = flowsim.run_experiment(config)
flow, gd, sgd = result.flow, result.gd, result.sgd
assert flow is not None and gd is not None and sgd is not None
print("flow solver:", flow.result, "| solver steps (accepted + rejected):", flow.num_steps)
hit = flow.events["phase1_end"]
print(f"end of Phase 1 on the flow: T1 = {hit.time:.4f}")
print(
    f"final loss: flow {flow.obs['loss'][-1]:.3e}, GD {gd.obs['loss'][-1]:.3e}, "
    f"SGD (mean of {sgd.obs['loss'].shape[0]} seeds) {sgd.obs['loss'][:, -1].mean():.3e}"
)
print("held-out:", result.held_out)

# %% [markdown]
# ## Verdicts
#
# Each of the paper's claims is checked against the runs with a criterion fixed in code
# (`flowsim/systems/cooccurrence/verdicts.py`). At this toy size some claims fail or cannot be
# measured; the [walk-through](../walkthrough.md) discusses the verdicts at the paper's size.

# %%
verdicts = list(result.record.verdicts.values())
print(flowsim.format_table(verdicts))

# %% [markdown]
# ## Observables along the three runs
#
# Every run records the system's observables on the same grid of times t = step × lr (SGD with a
# leading seed axis).

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for ax, key in zip(axes, ["loss", "min_margin"]):
    ax.plot(flow.ts, flow.obs[key], "k-", label="gradient flow")
    ax.plot(gd.ts, gd.obs[key], "C0--", label="GD")
    ax.plot(sgd.ts, sgd.obs[key].mean(axis=0), "C1:", label="SGD (mean)")
    ax.axvline(hit.time, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("t = step × lr")
    ax.set_title(key)
axes[0].set_yscale("log")
axes[0].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The results folder and the system's figures
#
# [`save_experiment`][flowsim.save_experiment] writes what `flowsim run` writes (config with package
# versions, initial state, one `.npz` per run, `summary.json`); the system draws its figures from the
# folder read back by [`load_run`][flowsim.load_run].

# %%
folder = pathlib.Path(tempfile.mkdtemp(prefix="flowsim-run-"))
summary = flowsim.save_experiment(result, folder)
run = flowsim.load_run(folder)
figures = system.figures(run, folder)
print(sorted(p.name for p in folder.iterdir()))
display(Image(filename=str(folder / "losses.png"), width=600))
