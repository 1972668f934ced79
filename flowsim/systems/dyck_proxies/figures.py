"""Figures of a dyck-proxies run: the training curves of the flow, GD and the minibatch comparator,
and the proxy gaps of the run's final models (from `summary.json`). Plot functions take `ax=` /
`axes=` and return the Figure; `plot_run` writes them."""

from __future__ import annotations

import os
import pathlib

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..._figure_style import figure_of, write_figures
from ..._plots import comparison_figure
from ..._results import RunData, load_run
from .data import SYSTEMATIC
from .proxies import FAMILIES

PANELS = {
    "loss": "training cross-entropy",
    "accuracy": "closing accuracy (argmax)",
    "accuracy_ratio": "closing accuracy\n(probability ratio > 0.8)",
    "lambda_max": r"top Hessian eigenvalue $\lambda_{\max}$",
}


def plot_training(run: RunData, *, axes=None) -> Figure:
    """Loss (log y), closing-bracket accuracy by argmax and by Hewitt's ratio rule, and the top Hessian
    eigenvalue when recorded: gradient flow (solid), GD (dashed), minibatch (mean and min-max band),
    each over its gap to the flow (`flowsim._plots.comparison_figure`)."""
    panels = {k: v for k, v in PANELS.items() if k in run.flow or k in run.gd or k in run.sgd}
    return comparison_figure(run, panels, log_y=("loss", "lambda_max"), axes=axes, sgd_name="minibatch")


def plot_gaps(run: RunData, *, ax: Axes | None = None) -> Figure | None:
    """Agreement gap (in distribution minus split) of each family's chosen proxy on the systematic
    splits, for the flow's model (from the `illusion.flow` verdict's figures); None when the run has
    no flow study.

    Arguments:
        run: the loaded run folder.
        ax: axes to draw into; default a new figure.

    Returns:
        The Figure, or None.
    """
    figs = next((v["figures"] for v in run.summary.get("verdicts", []) if v["name"] == "illusion.flow"), None)
    if figs is None:
        return None
    fig, ax, own = figure_of(ax, figsize=(6.4, 3.8))
    width = 0.8 / len(FAMILIES)
    for i, f in enumerate(FAMILIES):
        vals = [figs.get(f"{f}_gap_{s}") for s in SYSTEMATIC]
        y = np.asarray([np.nan if v is None else v for v in vals], float)
        x = np.arange(len(SYSTEMATIC)) + (i - (len(FAMILIES) - 1) / 2) * width
        ax.bar(x, y, width, label=f"{f} (size {figs.get(f'{f}_size')})")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(SYSTEMATIC)), [s.replace("_", " ") for s in SYSTEMATIC])
    ax.set_xlabel("held-out split")
    ax.set_ylabel("agreement gap with the model\n(in distribution $-$ split)")
    ax.grid(True, axis="y", alpha=0.3)
    if own:
        ax.set_title("Proxy gaps of the flow-trained model")
        fig.legend(loc="outside lower center", ncols=len(FAMILIES), fontsize="small")
    else:
        ax.legend(fontsize="small")
    return fig


def plot_run(
    run_or_path: RunData | str | os.PathLike, out_dir: str | os.PathLike | None = None, fmt: str | None = None
) -> list[pathlib.Path]:
    """Write the training curves (`training`) and, with a flow study, the proxy gaps (`proxy_gaps`)
    into `out_dir` (default the run folder) in format `fmt`; returns the paths written."""
    run = run_or_path if isinstance(run_or_path, RunData) else load_run(run_or_path)
    return write_figures(run, out_dir, [(plot_training, "training"), (plot_gaps, "proxy_gaps")], fmt)
