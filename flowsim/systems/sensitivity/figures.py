"""Figures of a sensitivity run: flow vs GD vs the minibatch comparator on every tracked quantity, and
the landscape over time (perturbation sharpness, top Hessian eigenvalue, blow-up x norm, sensitivity)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..._figure_style import legend_outside, method_handles, new_figure, root_figure, write_figures
from ..._plots import METHODS, comparison_figure, plot_series, time_axis
from ..._results import RunData, load_run

NAMES = ("training", "landscape")
FILENAMES = tuple(f"{n}.png" for n in NAMES)


def plot_training(run: RunData, *, axes=None) -> Figure:
    """Draw the gradient flow (solid) vs GD (dashed) vs the minibatch comparator (seed mean with a
    min-max band) for the loss (log y), training and full-table accuracy, the learned function's
    sensitivity, the perturbation sharpness, the top Hessian eigenvalue (when recorded), the
    LayerNorm blow-up and ||theta||^2, with the flow's events marked.

    Arguments:
        run: the loaded run folder.
        axes: axes of shape (2, 8) to draw into (values, gaps to the flow); default a new figure.

    Returns:
        The Figure.
    """
    panels = {
        "loss": r"training MSE $L(\theta)$",
        "accuracy": "training accuracy",
        "full_accuracy": "accuracy on all $2^n$ inputs",
        "as_learned": "average sensitivity\nof the learned function",
        "pert_sharpness": "perturbation sharpness",
        "lambda_max": r"top Hessian eigenvalue $\lambda_{\max}$",
        "blowup": "LayerNorm blow-up",
        "theta_sq": r"$\|\theta\|^2$ (without positions)",
    }
    panels = {k: v for k, v in panels.items() if k != "lambda_max" or k in run.flow or k in run.gd}
    log_y = ("loss", "pert_sharpness", "lambda_max", "blowup", "theta_sq")
    return comparison_figure(run, panels, log_y=log_y, axes=axes, sgd_name="minibatch")


def _target_line(run: RunData, key: str) -> float | None:
    v = np.asarray(run.flow.get(key, run.gd.get(key, [])), float).ravel()
    v = v[np.isfinite(v)]
    return float(v[0]) if v.size else None


def plot_landscape(run: RunData, *, axes: Sequence[Axes] | None = None) -> Figure:
    """Draw the landscape over time for every method that ran: perturbation sharpness and top Hessian
    eigenvalue (log y), blow-up x ||theta||^2 (log y), and the learned function's sensitivity with
    the target's (grey) and, for a training subset, random completions' (dotted) as lines.

    Arguments:
        run: the loaded run folder.
        axes: four axes to draw into; default a new figure (without the panels no method recorded).

    Returns:
        The Figure.
    """
    panels = [
        ("pert_sharpness", "perturbation sharpness", True),
        ("lambda_max", r"top Hessian eigenvalue $\lambda_{\max}$", True),
        ("tradeoff", r"LayerNorm blow-up $\times\ \|\theta\|^2$", True),
        ("as_learned", "average sensitivity of the learned function", False),
    ]
    own = axes is None
    if axes is None:  # a new figure leaves out what no method recorded (lambda_max is optional)
        panels = [p for p in panels if any(p[0] in d for d in (run.flow, run.gd, run.sgd))] or panels
        fig, grid = new_figure(1, len(panels), figsize=(4.5 * len(panels), 4.8))
        axes = list(grid[0])
        fig.suptitle("Loss landscape and sensitivity")
    fig = root_figure(axes[0])
    lr = run.config.get("lr")
    for ax, (key, label, log_y) in zip(axes, panels):
        for name, color, ls, z in METHODS:
            plot_series(ax, getattr(run, name), key, log_y=log_y, color=color, ls=ls, lw=1.5, zorder=z)
        if key == "as_learned":
            for ref, style, text in (("as_target", "-", "target"), ("as_completion", ":", "random completion")):
                value = _target_line(run, ref)
                if value is not None and (ref == "as_target" or int(run.config.get("n_train", 0))):
                    ax.axhline(value, color="0.5", ls=style, lw=1.2, label=f"sensitivity of the {text}")
        time_axis(ax, run.event_marks(), ylabel=label, log_y=log_y, lr=float(lr) if lr else None)
    nseeds = next((v.shape[0] for k, v in run.sgd.items() if k != "t" and np.ndim(v) >= 2), 0)
    handles = method_handles(nseeds, gd=bool(run.gd), sgd=bool(run.sgd), sgd_name="minibatch")
    legend_outside(
        fig, handles + [h for ax in axes for h in ax.get_legend_handles_labels()[0]], own=own, ax=axes[0], ncols=6
    )  # pyright: ignore[reportArgumentType]
    return fig  # pyright: ignore[reportReturnType]


def plot_run(
    run_or_path: RunData | str | os.PathLike, out_dir: str | os.PathLike | None = None, fmt: str | None = None
) -> list[pathlib.Path]:
    """Write both figures of a run: `training` and `landscape`.

    Arguments:
        run_or_path: a loaded `RunData` or the path of a run folder.
        out_dir: where to write the images (created if needed); defaults to the run folder.
        fmt: "png", "pdf" or "svg" (default: the output format in force, else png).

    Returns:
        The paths of the written images, in the order above.
    """
    run = run_or_path if isinstance(run_or_path, RunData) else load_run(run_or_path)
    return write_figures(run, out_dir, [(plot_training, "training"), (plot_landscape, "landscape")], fmt)
