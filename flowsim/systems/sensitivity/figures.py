"""Figures of a sensitivity run: flow vs GD vs the minibatch comparator on every tracked quantity, and
the landscape over time (perturbation sharpness, top Hessian eigenvalue, blow-up x norm, sensitivity)."""

from __future__ import annotations

import os
import pathlib

import numpy as np

from ..._plots import figure, plot_comparison, plot_series, time_axis
from ..._results import RunData, load_run

FILENAMES = ("training.png", "landscape.png")
_STYLES = (("flow", "C0", "-", "gradient flow"), ("gd", "C1", "--", "GD"), ("sgd", "C2", "-", "minibatch"))


def plot_training(run: RunData, path: str | os.PathLike) -> pathlib.Path:
    """Draw the gradient flow (solid) vs GD (dashed) vs the minibatch comparator (seed mean with a
    min-max band) for the loss (log y), training and full-table accuracy, the learned function's
    sensitivity, the perturbation sharpness, the top Hessian eigenvalue (when recorded), the
    LayerNorm blow-up and ||theta||^2, with the flow's events marked.

    Args:
        run: the loaded run folder.
        path: the image file to write.

    Returns:
        `path` as a `pathlib.Path`.
    """
    panels = {
        "loss": "training MSE",
        "accuracy": "training accuracy",
        "full_accuracy": "accuracy on all 2^n inputs",
        "as_learned": "as(learned function)",
        "pert_sharpness": "perturbation sharpness",
        "lambda_max": r"$\lambda_{max}$ (Hessian)",
        "blowup": "LayerNorm blow-up",
        "theta_sq": r"$\|\theta\|^2$ (no positions)",
    }
    return plot_comparison(run, panels, path)


def _target_line(run: RunData, key: str) -> float | None:
    v = np.asarray(run.flow.get(key, run.gd.get(key, [])), float).ravel()
    v = v[np.isfinite(v)]
    return float(v[0]) if v.size else None


def plot_landscape(run: RunData, path: str | os.PathLike) -> pathlib.Path:
    """Draw the landscape over time for every method that ran: perturbation sharpness and top Hessian
    eigenvalue (log y), blow-up x ||theta||^2 (log y), and the learned function's sensitivity with
    the target's (grey) and, for a training subset, random completions' (dotted) as lines.

    Args:
        run: the loaded run folder.
        path: the image file to write.

    Returns:
        `path` as a `pathlib.Path`.
    """
    with figure(path, run, "Loss landscape and sensitivity", 1, 4, figsize=(18.0, 4.5)) as axes:
        for ax, key, label, log_y in (
            (axes[0], "pert_sharpness", "perturbation sharpness", True),
            (axes[1], "lambda_max", r"$\lambda_{max}$", True),
            (axes[2], "tradeoff", r"blow-up $\times \|\theta\|^2$", True),
            (axes[3], "as_learned", "average sensitivity", False),
        ):
            for name, color, ls, method in _STYLES:
                plot_series(ax, getattr(run, name), key, log_y=log_y, color=color, ls=ls, lw=1.5, label=method)
            if key == "as_learned":
                for ref, style, text in (("as_target", "-", "target"), ("as_completion", ":", "random completion")):
                    value = _target_line(run, ref)
                    if value is not None and (ref == "as_target" or int(run.config.get("n_train", 0))):
                        ax.axhline(value, color="0.5", ls=style, lw=1.2, label=text)
            time_axis(ax, run.event_marks(), ylabel=label, title=label, log_y=log_y)
    return pathlib.Path(path)


def plot_run(run_or_path: RunData | str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[pathlib.Path]:
    """Draw both figures of a run: `training.png` and `landscape.png`.

    Args:
        run_or_path: a loaded `RunData` or the path of a run folder.
        out_dir: where to write the images (created if needed); defaults to the run folder.

    Returns:
        The paths of the written images, in the order above.
    """
    run = run_or_path if isinstance(run_or_path, RunData) else load_run(run_or_path)
    out = pathlib.Path(out_dir) if out_dir is not None else run.path
    return [fn(run, out / name) for fn, name in zip((plot_training, plot_landscape), FILENAMES)]
