"""Figures of a dyck-proxies run: the training curves of the flow, GD and the minibatch comparator,
and the proxy gaps of the run's final models (from `summary.json`)."""

from __future__ import annotations

import pathlib

import numpy as np

from ..._plots import plot_comparison
from ..._results import RunData
from .data import SYSTEMATIC
from .proxies import FAMILIES


def plot_training(run: RunData, path: pathlib.Path) -> pathlib.Path:
    """Loss (log y), closing-bracket accuracy by argmax and by Hewitt's ratio rule, and the top Hessian
    eigenvalue when recorded: gradient flow (solid), GD (dashed), minibatch (mean and min-max band)."""
    panels = {
        "loss": "training cross-entropy",
        "accuracy": "closing accuracy (argmax)",
        "accuracy_ratio": "closing accuracy (ratio > 0.8)",
        "lambda_max": r"$\lambda_{max}$ (Hessian)",
    }
    return plot_comparison(run, panels, path, ncols=4)


def plot_gaps(run: RunData, path: pathlib.Path) -> pathlib.Path | None:
    """Agreement gap (iid - split) of each family's chosen proxy on the systematic splits, for the
    flow's model (from the `illusion.flow` verdict's figures); None when the run has no flow study."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = next((v["figures"] for v in run.summary.get("verdicts", []) if v["name"] == "illusion.flow"), None)
    if figs is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.25
    for i, f in enumerate(FAMILIES):
        vals = [figs.get(f"{f}_gap_{s}") for s in SYSTEMATIC]
        y = np.asarray([np.nan if v is None else v for v in vals], float)
        ax.bar(np.arange(len(SYSTEMATIC)) + (i - 1) * width, y, width, label=f"{f} (size {figs.get(f'{f}_size')})")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(SYSTEMATIC)), list(SYSTEMATIC))
    ax.set_ylabel("agreement gap (iid - split)")
    ax.set_title("flow-trained model: proxy gaps")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_run(run: RunData, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Draw every figure of a run into `out_dir`."""
    out = [plot_training(run, out_dir / "training.png")]
    gaps = plot_gaps(run, out_dir / "proxy_gaps.png")
    return out + ([gaps] if gaps is not None else [])
