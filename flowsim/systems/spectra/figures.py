"""Figures of a spectra run: flow vs GD vs the minibatch comparator on the losses, the tolerance
accuracies and the failure analysis (which property failures violate, how well kappa(Q_hat) and the
eigengap predict them), over time; and the verdict experiment's figures from per-matrix errors (error
histograms and kappa distributions, correct vs failed) and from an out-of-distribution accuracy table."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure

from ..._figure_style import figure_of, new_figure, root_figure, write_figures
from ..._plots import comparison_figure
from ..._results import RunData, load_run

NAMES = ("training", "failures")
FILENAMES = tuple(f"{n}.png" for n in NAMES)
_ERRORS = {
    "eig_err": "eigenvalue error",
    "vec_err": r"self-consistency $\|\hat Q^\top M \hat Q - {\rm diag}\,\hat\lambda\|_1 / \|\hat\lambda\|_1$",
    "norm_err": "eigenvector norm error",
    "orth_err": r"orthogonality error $\max |\cos|$",
}


def plot_training(run: RunData, *, axes=None) -> Figure:
    """Draw the training and held-out MSE (log y), the held-out accuracies at tol, 2% and 1% and the
    median eigenvalue error (log y), flow (solid) vs GD (dashed) vs minibatch (band), each over its
    gap to the flow.

    Arguments:
        run: the loaded run folder.
        axes: axes of shape (2, panels) to draw into; default a new figure.

    Returns:
        The Figure.
    """
    panels = {
        "loss": "training MSE",
        "test_loss": "held-out MSE",
        "acc": "held-out accuracy\nat the tolerance",
        "acc_2": "held-out accuracy at 2%",
        "acc_1": "held-out accuracy at 1%",
        "eig_err_median": "median relative\neigenvalue error",
    }
    if "lambda_max" in run.flow:
        panels["lambda_max"] = r"top Hessian eigenvalue $\lambda_{\max}$"
    log_y = ("loss", "test_loss", "eig_err_median", "lambda_max")
    return comparison_figure(run, panels, log_y=log_y, axes=axes, sgd_name="minibatch")


_FAILURE_PANELS = {
    "fail_eig_ok": "failures with eigenvalues\nwithin 2% (fraction)",
    "fail_norm_ok": "failures with norms\nwithin 2% (fraction)",
    "viol_eig": "failures violating\neigenvalues (fraction)",
    "viol_norm": "failures violating\nnorms (fraction)",
    "viol_orth": "failures violating\northogonality (fraction)",
    "auroc_kappa": r"AUROC of $\kappa(\hat Q)$" + "\nfor failure",
    "auroc_gap": "AUROC of the eigengap\nfor failure",
}


def plot_failures(run: RunData, *, axes=None) -> Figure:
    """Draw the failure analysis over time: fractions of failures within 2% on eigenvalues and norms,
    fractions violating each property, and the AUROCs of kappa(Q_hat) and of the eigengap (the
    eigenvalue task has only the eigengap's).

    Arguments:
        run: the loaded run folder.
        axes: axes of shape (2, panels) to draw into; default a new figure.

    Returns:
        The Figure.
    """
    panels = {k: v for k, v in _FAILURE_PANELS.items() if k in run.flow}
    return comparison_figure(run, panels, log_y=(), axes=axes, sgd_name="minibatch", title="Failure analysis")


def plot_run(
    run_or_path: RunData | str | os.PathLike, out_dir: str | os.PathLike | None = None, fmt: str | None = None
) -> list[pathlib.Path]:
    """Write both figures of a run: `training` and `failures`.

    Arguments:
        run_or_path: a loaded `RunData` or the path of a run folder.
        out_dir: where to write the images (created if needed); defaults to the run folder.
        fmt: "png", "pdf" or "svg" (default: the output format in force, else png).

    Returns:
        The paths of the written images, in the order above.
    """
    run = run_or_path if isinstance(run_or_path, RunData) else load_run(run_or_path)
    return write_figures(run, out_dir, [(plot_training, "training"), (plot_failures, "failures")], fmt)


def _split_hist(ax: Any, x: np.ndarray, fail: np.ndarray, bins: np.ndarray) -> None:
    for sel, lab in ((~fail, "correct"), (fail, "failed")):
        ax.hist(np.clip(x[sel], bins[0], bins[-1]), bins=bins, alpha=0.6, density=True, label=f"{lab} ({sel.sum()})")
    ax.set_xscale("log")
    ax.legend(fontsize="small")


def plot_error_histograms(errors: Mapping[str, np.ndarray], tol: float, *, axes=None) -> Figure:
    """Histograms (log x) of the eigenvalue, self-consistency, norm and orthogonality errors of
    `metrics.per_matrix`, for correct (`correct_err < tol`) and failed predictions, with the
    thresholds of the verdicts dotted.

    Arguments:
        errors: per-matrix arrays with keys `eig_err`, `vec_err`, `norm_err`, `orth_err`, `correct_err`.
        tol: the tolerance of a correct prediction.
        axes: four axes to draw into; default a new figure.

    Returns:
        The Figure.
    """
    fail = ~(errors["correct_err"] < tol)
    if axes is None:
        fig, grid = new_figure(1, 4, figsize=(18, 4.2))
        axes = grid[0]
    fig = root_figure(axes[0])
    for ax, (k, label) in zip(axes, _ERRORS.items()):
        _split_hist(ax, errors[k], fail, np.logspace(-5, 1, 50))
        ax.axvline(0.02 if k in ("eig_err", "norm_err") else tol, color="k", ls=":", label="verdict threshold")
        ax.set(xlabel=label, ylabel="density of matrices")
        ax.legend(fontsize="small")
    return fig


def plot_kappa(errors: Mapping[str, np.ndarray], tol: float, *, axes=None) -> Figure:
    """Distributions (log x) of kappa(Q_hat) and of the input's relative minimum eigengap, for correct
    and failed predictions (arguments as `plot_error_histograms`, plus keys `kappa` and `gap`; two axes)."""
    fail = ~(errors["correct_err"] < tol)
    if axes is None:
        fig, grid = new_figure(1, 2, figsize=(11, 4.2))
        axes = grid[0]
    fig = root_figure(axes[0])
    _split_hist(axes[0], errors["kappa"], fail, np.logspace(0, 1, 50))
    _split_hist(axes[1], errors["gap"], fail, np.logspace(-4, 0.5, 50))
    axes[0].set(xlabel=r"condition number $\kappa(\hat Q)$ of the predicted eigenvectors", ylabel="density of matrices")
    axes[1].set(xlabel="relative minimum eigengap of $M$", ylabel="density of matrices")
    return fig


def plot_ood_heatmap(table: Mapping[str, Mapping[str, float]], tol: float, *, ax: Axes | None = None) -> Figure:
    """The accuracy table `table[train][test]` as a heatmap on [0, 1] in ten discrete steps, with
    its values written in.

    Arguments:
        table: accuracy at `tol` of the model trained on each distribution, on each distribution.
        tol: the tolerance (for the colour bar's label).
        ax: axes to draw into; default a new figure.

    Returns:
        The Figure.
    """
    fig, ax, _ = figure_of(ax, figsize=(7.5, 6))
    dists = list(table)
    mat = np.array([[table[a][b] for b in dists] for a in dists])
    im = ax.imshow(mat, cmap="viridis", norm=BoundaryNorm(np.linspace(0, 1, 11), 256))
    for i, j in np.ndindex(mat.shape):
        ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", color="w" if mat[i, j] < 0.6 else "k")
    ax.set(xticks=range(len(dists)), yticks=range(len(dists)), xlabel="test distribution", ylabel="train distribution")
    ax.set_xticklabels(dists, rotation=45, ha="right")
    ax.set_yticklabels(dists)
    fig.colorbar(im, ax=ax, label=f"eigenvalue accuracy at {tol:.0%}")
    return fig
