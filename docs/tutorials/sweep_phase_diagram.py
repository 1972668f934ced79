# %% [markdown]
# # A sweep and its phase diagram
#
# A sweep runs one system over a grid of config values and seeds, writes each finished point at once
# to its own file, skips finished points when run again, and draws any measure over one or two axes.
# This notebook sweeps the co-occurrence system at its smoke size over the initial weight scale and
# the attention width m, and asks where Phase 1 ends (T1) and whether it leaves attention unmoved,
# like the first of the README's headline diagrams (`experiments/specs/init_scale_x_width.toml`, at
# the paper's sizes). The [sweeps guide](../guides/sweeps.md) has the command-line version.

# %%
import pathlib
import tempfile

from IPython.display import Image, display

import flowsim

# %% [markdown]
# ## The spec
#
# A spec names the `system`, `base` config fields, `axes` (field → list of values, or
# `{"log": [lo, hi], "num": k}` / `"lin"`), `seeds` and `measures`. Every point's
# [`Config`][flowsim.Config] is built and validated before any work. Measures are the generic ones,
# the system's own and one true/false measure per verdict:

# %%
system = flowsim.get_system("cooccurrence")
measures = flowsim.measures_of(system)
print(len(measures), "measures:", ", ".join(measures))

smoke = dict(system.smoke)
smoke.pop("m")  # an axis below
spec = flowsim.SweepSpec.from_dict(
    {
        "system": "cooccurrence",
        "name": "init_scale_x_width_smoke",
        "base": smoke,
        "axes": {"init_scale": {"log": [0.1, 3.0], "num": 4}, "m": [8, 16]},
        "seeds": 1,
        "measures": ["T1", "attn_disp_T1", "phase1.attention_frozen", "loss_T"],
    }
)
print(spec.axes)

# %% [markdown]
# ## Running it
#
# [`run_sweep`][flowsim.run_sweep] runs only the pieces the measures need (here the flow alone).
# `init_scale`, `lr`, the seed and the tolerances are traced arguments of the compiled solve, so the
# sweep compiles once per array shape (once per m here). `workers=1` runs in this process; the
# default is one worker process per core.

# %%
folder = pathlib.Path(tempfile.mkdtemp(prefix="flowsim-sweep-")) / "sweep"
report = flowsim.run_sweep(spec, folder, workers=1, progress=False)
print(f"{report.done} points done, {report.failed} failed, in {report.wall_s:.1f} s")
print(sorted(p.name for p in folder.iterdir()))

# %% [markdown]
# Running the same spec on the same folder again does nothing: every point has its result file.

# %%
again = flowsim.run_sweep(spec, folder, workers=1, progress=False)
print(f"second run: {again.skipped} skipped, {again.done} done")
assert again.done == 0 and again.skipped == report.done

# %% [markdown]
# ## The table
#
# [`load_sweep`][flowsim.load_sweep] gives one row per point and seed (a pandas DataFrame with
# `as_frame=True` when pandas is installed).

# %%
rows = flowsim.load_sweep(folder)
print(f"{'init_scale':>10} {'m':>3} {'T1':>8} {'attn_disp_T1':>13} {'frozen':>7} {'loss_T':>9}")
for r in rows:
    print(
        f"{r['init_scale']:10.3g} {r['m']:3d} {r['T1']:8.4f} {r['attn_disp_T1']:13.2e} "
        f"{r['phase1.attention_frozen']!s:>7} {r['loss_T']:9.2e}"
    )

# %% [markdown]
# ## Phase diagrams
#
# [`plot_phase_diagram`][flowsim.plot_phase_diagram] draws a measure over two axes as a heatmap, or
# over one axis as lines (one per value of the other axes); `flowsim phase-diagram FOLDER --x init_scale
# --y m --measure T1` does the same from the command line.

# %%
png = flowsim.plot_phase_diagram(folder, "init_scale", "m", measure="T1")
display(Image(filename=str(png), width=520))

# %%
png = flowsim.plot_phase_diagram(folder, "init_scale", measure="phase1.attention_frozen")
display(Image(filename=str(png), width=520))
