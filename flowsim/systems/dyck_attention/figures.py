"""Figures of a dyck-attention run: the training curves of flow vs GD vs the minibatch comparator, and
the final attention on the probe of each (flow, GD, first minibatch seeds), side by side on one colour
scale. Plot functions take `ax=` / `axes=` and return the Figure; `plot_run` writes them."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from ..._figure_style import new_figure, root_figure, write_figures
from ..._plots import comparison_figure
from ..._results import RunData, load_run

PANELS = {
    "loss": "training cross-entropy",
    "acc_test": "held-out closing accuracy",
    "acc_long": "closing accuracy\non long strings",
    "stack": "stack-likeness\n(attention on the probe)",
    "balance": "balance violation\n(attention on the probe)",
    "lambda_max": r"top Hessian eigenvalue $\lambda_{\max}$",
}


def probe_labels(size: int) -> list[str]:
    """Tick labels of the probe START, D x "(", D x ")", D x "[", D x "]" (its positions when the
    size is not 1 + 4 D)."""
    depth, rest = divmod(size - 1, 4)
    if rest or depth < 1:
        return [str(i) for i in range(size)]
    return ["S"] + [b for b in "()[]" for _ in range(depth)]


def _last(series: np.ndarray, loss: np.ndarray) -> np.ndarray | None:
    ok = np.flatnonzero(np.isfinite(loss))
    return None if not ok.size else series[ok[-1]]


def attention_heatmaps(
    patterns: Sequence[np.ndarray], titles: Sequence[str], labels: Sequence[str] | None = None, *, axes=None
) -> Figure:
    """Attention patterns (layers, P, P) side by side, one column per model and one row per layer,
    on one colour scale [0, 1] with one colour bar; rows are queries, columns keys.

    Arguments:
        patterns: one array (layers, P, P) per model.
        titles: a title per model.
        labels: a tick label per probe position (default `probe_labels`).
        axes: axes of shape (layers, models) to draw into; default a new figure.

    Returns:
        The Figure.
    """
    layers, size = patterns[0].shape[0], patterns[0].shape[-1]
    labels = list(labels) if labels is not None else probe_labels(size)
    if axes is None:
        fig, grid = new_figure(layers, len(patterns), figsize=(2.9 * len(patterns) + 1.2, 2.9 * layers + 0.6))
        fig.suptitle("Attention on the probe at the end of training (rows: queries, columns: keys)")
    else:
        grid = np.asarray(axes, dtype=object).reshape(layers, len(patterns))
        fig = root_figure(grid[0, 0])
    step = max(1, size // 12)  # at most about a dozen tick labels
    im = None
    for j, (pat, title) in enumerate(zip(patterns, titles)):
        for li in range(layers):
            ax = grid[li, j]
            im = ax.imshow(pat[li], vmin=0, vmax=1, cmap="viridis")
            ax.set_title(f"{title}, layer {li + 1}" if layers > 1 else title, fontsize="medium")
            ax.set_xticks(range(0, size, step), labels[::step], fontsize="small")
            ax.set_yticks(range(0, size, step), labels[::step], fontsize="small")
            if j == 0:
                ax.set_ylabel("query")
            if li == layers - 1:
                ax.set_xlabel("key")
    if im is not None:
        fig.colorbar(im, ax=list(grid.ravel()), label="attention weight", shrink=0.8)
    return fig


def plot_training(run: RunData, *, axes=None) -> Figure:
    """Flow vs GD vs the minibatch comparator on `PANELS` (those recorded), with gaps to the flow."""
    panels = {k: v for k, v in PANELS.items() if k in run.flow or k in run.gd or k in run.sgd}
    return comparison_figure(run, panels, log_y=("loss", "lambda_max"), ncols=3, axes=axes, sgd_name="minibatch")


def final_patterns(run: RunData) -> tuple[list[np.ndarray], list[str]]:
    """The probe attention at the last finite save point of the flow, GD and the first three
    minibatch seeds, with their names."""
    pats, titles = [], []
    for name, obs in (("gradient flow", run.flow), ("GD", run.gd)):
        if obs and "probe_attn" in obs:
            p = _last(np.asarray(obs["probe_attn"]), np.asarray(obs["loss"]))
            if p is not None:
                pats.append(p)
                titles.append(name)
    if run.sgd and "probe_attn" in run.sgd:
        att, loss = np.asarray(run.sgd["probe_attn"]), np.asarray(run.sgd["loss"])
        for s in range(min(att.shape[0], 3)):
            p = _last(att[s], loss[s])
            if p is not None:
                pats.append(p)
                titles.append(f"minibatch seed {s}")
    return pats, titles


def plot_attention(run: RunData) -> Figure | None:
    """`attention_heatmaps` of `final_patterns`; None when no run recorded the probe attention."""
    pats, titles = final_patterns(run)
    return attention_heatmaps(pats, titles) if pats else None


def plot_run(
    run_or_path: RunData | str | os.PathLike, out_dir: str | os.PathLike | None = None, fmt: str | None = None
) -> list[pathlib.Path]:
    """Write the training curves (`training`) and the probe-attention heatmaps (`attention`) of a
    saved run into `out_dir` (default the run folder) in format `fmt`; returns the paths written."""
    run = run_or_path if isinstance(run_or_path, RunData) else load_run(run_or_path)
    return write_figures(run, out_dir, [(plot_training, "training"), (plot_attention, "attention")], fmt)
