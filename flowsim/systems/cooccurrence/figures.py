"""Figures of a co-occurrence run: the paper's Fig. 1a/1b, flow vs GD vs SGD, the balancing quantities."""

from __future__ import annotations

import os
import pathlib

from matplotlib.lines import Line2D

from ..._plots import figure, flow_gd, plot_comparison, plot_series, time_axis
from ..._results import RunData, load_run

FILENAMES = ("attention_scores.png", "losses.png", "flow_vs_discrete.png", "balancing.png")
_MAIN_SCORES = ("score_12", "score_21", "score_31", "score_32")


def _score_label(key: str) -> str:
    a, b = key[-2], key[-1]
    return rf"$s_{{{a}{b}}}$ (key $\mu_{a}$, query $\mu_{b}$)"


def plot_attention_scores(run: RunData, path: str | os.PathLike) -> pathlib.Path:
    """Draw the paper's Fig. 1a: the attention scores `score_12, score_21, score_31, score_32` of the
    gradient flow (solid) and GD (dashed, same colour), the other 3x3 block scores of the flow as thin
    grey lines, on a log time axis with T1 marked.

    Args:
        run: the loaded run folder.
        path: the image file to write.

    Returns:
        `path` as a `pathlib.Path`.
    """
    with figure(path, run, "Attention scores (Fig. 1a)") as (ax,):
        others = [f"score_{a}{b}" for a in "123" for b in "123" if f"score_{a}{b}" not in _MAIN_SCORES]
        grey = [plot_series(ax, run.flow, k, color="0.6", lw=0.8, zorder=1) for k in others]
        styles = flow_gd(ax, run, {k: _score_label(k) for k in _MAIN_SCORES})
        if any(grey):
            styles.append(Line2D([], [], color="0.6", lw=0.8, label="other scores (flow)"))
        time_axis(ax, run.event_marks(), ylabel=r"score $\mu_a^\top W_K^\top W_Q \mu_b$", legend=styles)
    return pathlib.Path(path)


def plot_losses(run: RunData, path: str | os.PathLike) -> pathlib.Path:
    """Draw the paper's Fig. 1b: the total training loss and the per-type losses `loss_type1..4` of
    the gradient flow on log-log axes, with T1 marked.

    Args:
        run: the loaded run folder.
        path: the image file to write.

    Returns:
        `path` as a `pathlib.Path`.
    """
    with figure(path, run, "Training loss of the gradient flow (Fig. 1b)") as (ax,):
        plot_series(ax, run.flow, "loss", log_y=True, color="k", lw=2.2, label="total loss")
        for k in range(1, 5):
            plot_series(ax, run.flow, f"loss_type{k}", log_y=True, color=f"C{k - 1}", lw=1.4, label=f"type-{k} samples")
        time_axis(ax, run.event_marks(), ylabel="loss", log_y=True, legend_loc="lower left")
    return pathlib.Path(path)


def plot_flow_vs_discrete(run: RunData, path: str | os.PathLike) -> pathlib.Path:
    """Draw gradient flow vs GD vs SGD for the loss (log y), `min_margin`, `G1`, `G2`, `G3`,
    `score_12`, `score_31` and `attn_disp`, one panel each (`flowsim.plot_comparison`).

    Args:
        run: the loaded run folder.
        path: the image file to write.

    Returns:
        `path` as a `pathlib.Path`.
    """
    panels = {
        "loss": "training loss",
        "min_margin": "min margin",
        "G1": r"$G(\mu_1)$",
        "G2": r"$G(\mu_2)$",
        "G3": r"$G(\mu_3)$",
        "score_12": _score_label("score_12"),
        "score_31": _score_label("score_31"),
        "attn_disp": r"max $|p(t) - p(0)|$",
    }
    return plot_comparison(run, panels, path)


def plot_balancing(run: RunData, path: str | os.PathLike) -> pathlib.Path:
    """Draw the balancing quantities: `S2_over_S3` with the band [1/2, 2] shaded, `R` with the band
    (1, 2) shaded and `g_ratio_type1..4` (log y), for the gradient flow (solid) and GD (dashed), on
    log time axes with T1 marked.

    Args:
        run: the loaded run folder.
        path: the image file to write.

    Returns:
        `path` as a `pathlib.Path`.
    """
    with figure(path, run, "Balancing of the per-sample gradients", 1, 3, figsize=(15.0, 4.5)) as axes:
        for ax, key, band, ylabel in (
            (axes[0], "S2_over_S3", (0.5, 2.0), "$S_2 / S_3$"),
            (axes[1], "R", (1.0, 2.0), "$R$"),
        ):
            styles = flow_gd(ax, run, {key: ylabel})
            ax.axhspan(*band, color="C2", alpha=0.15, lw=0, label=f"band [{band[0]:g}, {band[1]:g}]")
            time_axis(ax, run.event_marks(), ylabel=ylabel, title=ylabel, legend=styles)
        styles = flow_gd(ax=axes[2], run=run, log_y=True, keys={f"g_ratio_type{k}": f"type {k}" for k in range(1, 5)})
        time_axis(
            axes[2],
            run.event_marks(),
            ylabel=r"$\max g_i / \min g_i$ within a type",
            title="spread of $g_i$ within each type",
            log_y=True,
            legend=styles,
        )
    return pathlib.Path(path)


def plot_run(run_or_path: RunData | str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[pathlib.Path]:
    """Draw all four figures of a run: `attention_scores.png`, `losses.png`,
    `flow_vs_discrete.png` and `balancing.png`.

    Args:
        run_or_path: a loaded `RunData` or the path of a run folder.
        out_dir: where to write the images (created if needed); defaults to the run folder.

    Returns:
        The paths of the written images, in the order above.
    """
    run = run_or_path if isinstance(run_or_path, RunData) else load_run(run_or_path)
    out = pathlib.Path(out_dir) if out_dir is not None else run.path
    fns = (plot_attention_scores, plot_losses, plot_flow_vs_discrete, plot_balancing)
    return [fn(run, out / name) for fn, name in zip(fns, FILENAMES)]
