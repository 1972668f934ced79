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

from ..._plots import plot_comparison
from ..._results import RunData, load_run

FILENAMES = ("training.png", "failures.png")


def plot_training(run: RunData, path: str | os.PathLike) -> pathlib.Path:
    """Draw the training and held-out MSE (log y), the held-out accuracies at tol, 2% and 1% and the
    median eigenvalue error (log y), flow (solid) vs GD (dashed) vs minibatch (band).

    Args:
        run: the loaded run folder.
        path: the image file to write.

    Returns:
        `path` as a `pathlib.Path`.
    """
    panels = {
        "loss": "training MSE",
        "test_loss": "held-out MSE",
        "acc": "accuracy at tol",
        "acc_2": "accuracy at 2%",
        "acc_1": "accuracy at 1%",
        "eig_err_median": "median eigenvalue error",
    }
    if "lambda_max" in run.flow:
        panels["lambda_max"] = r"$\lambda_{max}$ (Hessian)"
    return plot_comparison(run, panels, path, log_y=("loss", "test_loss", "eig_err_median", "lambda_max"))


def plot_failures(run: RunData, path: str | os.PathLike) -> pathlib.Path:
    """Draw the failure analysis over time: fractions of failures within 2% on eigenvalues and norms,
    fractions violating each property, and the AUROCs of kappa(Q_hat) and of the eigengap (the
    eigenvalue task has only the eigengap's).

    Args:
        run: the loaded run folder.
        path: the image file to write.

    Returns:
        `path` as a `pathlib.Path`.
    """
    keys = ("fail_eig_ok", "fail_norm_ok", "viol_eig", "viol_norm", "viol_orth", "auroc_kappa", "auroc_gap")
    panels = {k: k.replace("_", " ") for k in keys if k in run.flow}
    return plot_comparison(run, panels, path, log_y=())


def plot_run(run_or_path: RunData | str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[pathlib.Path]:
    """Draw both figures of a run: `training.png` and `failures.png`.

    Args:
        run_or_path: a loaded `RunData` or the path of a run folder.
        out_dir: where to write the images (created if needed); defaults to the run folder.

    Returns:
        The paths of the written images, in the order above.
    """
    run = run_or_path if isinstance(run_or_path, RunData) else load_run(run_or_path)
    out = pathlib.Path(out_dir) if out_dir is not None else run.path
    return [fn(run, out / name) for fn, name in zip((plot_training, plot_failures), FILENAMES)]


def _split_hist(ax: Any, x: np.ndarray, fail: np.ndarray, bins: np.ndarray) -> None:
    for sel, lab in ((~fail, "correct"), (fail, "failed")):
        ax.hist(np.clip(x[sel], bins[0], bins[-1]), bins=bins, alpha=0.6, density=True, label=f"{lab} ({sel.sum()})")
    ax.set_xscale("log")
    ax.legend(fontsize="small")


def plot_error_histograms(errors: Mapping[str, np.ndarray], tol: float, path: str | os.PathLike) -> pathlib.Path:
    """Histograms (log x) of the eigenvalue, self-consistency, norm and orthogonality errors of
    `metrics.per_matrix`, for correct (`correct_err < tol`) and failed predictions, with the
    thresholds of the verdicts dotted.

    Args:
        errors: per-matrix arrays with keys `eig_err`, `vec_err`, `norm_err`, `orth_err`, `correct_err`.
        tol: the tolerance of a correct prediction.
        path: the image file to write.

    Returns:
        `path` as a `pathlib.Path`.
    """
    import matplotlib.pyplot as plt

    fail = ~(errors["correct_err"] < tol)
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for ax, k in zip(axes, ("eig_err", "vec_err", "norm_err", "orth_err")):
        _split_hist(ax, errors[k], fail, np.logspace(-5, 1, 50))
        ax.axvline(0.02 if k in ("eig_err", "norm_err") else tol, color="k", ls=":")
        ax.set(title=k, xlabel="error")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return pathlib.Path(path)


def plot_kappa(errors: Mapping[str, np.ndarray], tol: float, path: str | os.PathLike) -> pathlib.Path:
    """Distributions (log x) of kappa(Q_hat) and of the input's relative minimum eigengap, for correct
    and failed predictions (arguments as `plot_error_histograms`, plus keys `kappa` and `gap`)."""
    import matplotlib.pyplot as plt

    fail = ~(errors["correct_err"] < tol)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _split_hist(axes[0], errors["kappa"], fail, np.logspace(0, 1, 50))
    _split_hist(axes[1], errors["gap"], fail, np.logspace(-4, 0.5, 50))
    axes[0].set_title(r"$\kappa(\hat Q)$")
    axes[1].set_title("relative minimum eigengap of M")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return pathlib.Path(path)


def plot_ood_heatmap(table: Mapping[str, Mapping[str, float]], tol: float, path: str | os.PathLike) -> pathlib.Path:
    """The accuracy table `table[train][test]` as a heatmap with its values written in.

    Args:
        table: accuracy at `tol` of the model trained on each distribution, on each distribution.
        tol: the tolerance (for the title).
        path: the image file to write.

    Returns:
        `path` as a `pathlib.Path`.
    """
    import matplotlib.pyplot as plt

    dists = list(table)
    mat = np.array([[table[a][b] for b in dists] for a in dists])
    fig, ax = plt.subplots(figsize=(7.5, 6))
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
    for i, j in np.ndindex(mat.shape):
        ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", color="w" if mat[i, j] < 0.6 else "k")
    ax.set(xticks=range(len(dists)), yticks=range(len(dists)), xlabel="test distribution", ylabel="train distribution")
    ax.set_xticklabels(dists, rotation=45)
    ax.set_yticklabels(dists)
    ax.set_title(f"eigenvalue accuracy at {tol:.0%}")
    fig.colorbar(im)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return pathlib.Path(path)
