"""Figures of a co-occurrence run: the paper's Fig. 1a/1b, flow vs GD vs SGD, the balancing quantities.

Every plot function takes the loaded run and an optional `ax=` (`axes=` for several panels) and
returns the Figure; `plot_run` writes all four into a folder (`flowsim._figure_style.write_figures`).
Phase 1 (t < T1) is shaded where T1 is known.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..._figure_style import figure_of, legend_outside, new_figure, root_figure, write_figures
from ..._plots import comparison_figure, flow_gd, plot_series, time_axis
from ..._results import RunData, load_run

NAMES = ("attention_scores", "losses", "flow_vs_discrete", "balancing")
FILENAMES = tuple(f"{n}.png" for n in NAMES)
_MAIN_SCORES = ("score_12", "score_21", "score_31", "score_32")
_TYPE_STYLES = ("-", (0, (5, 2)), ":", "-.")  # types 2 and 3 have equal losses: distinct dashes
_LOSS_LABEL = "loss: mean over the samples\n" + r"of $\log(1 + e^{-y_i F(X_i)})$"


def _score_label(key: str) -> str:
    a, b = key[-2], key[-1]
    return rf"$s_{{{a}{b}}}$ (key $\mu_{a}$, query $\mu_{b}$)"


def _t1(run: RunData) -> float | None:
    t1 = run.summary.get("phase1_end_time")
    return float(t1) if isinstance(t1, (int, float)) and np.isfinite(t1) and t1 > 0 else None


def shade_phase1(ax: Axes, run: RunData) -> None:
    """Shade Phase 1 (0 <= t <= T1) in grey (nothing when T1 is unknown)."""
    t1 = _t1(run)
    if t1 is not None:
        ax.axvspan(0.0, t1, color="0.88", lw=0, zorder=0)


def phase1_handles(run: RunData) -> list[Patch]:
    """The legend entry of the Phase-1 shading (none when T1 is unknown)."""
    return [Patch(color="0.88", label="Phase 1 ($t < T_1$)")] if _t1(run) is not None else []


def _lr(run: RunData) -> float | None:
    lr = run.config.get("lr")
    return float(lr) if isinstance(lr, (int, float)) else None


def _shifted(data: dict[str, np.ndarray], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The series minus their value at the first save point (t = 0)."""
    out = {"t": data["t"]} if "t" in data else {}
    for k in keys:
        if k in data and np.ndim(data[k]) == 1 and np.size(data[k]):
            out[k] = np.asarray(data[k], float) - float(data[k][0])
    return out


def plot_attention_scores(run: RunData, *, ax: Axes | None = None) -> Figure:
    """The paper's Fig. 1a: the change s_ab(t) - s_ab(0) of the four tracked attention scores
    `score_12, score_21, score_31, score_32` for the gradient flow (solid) and GD (dashed, same
    colour), on log time with Phase 1 shaded and T1 marked.

    Arguments:
        run: the loaded run folder.
        ax: axes to draw into; default a new figure.

    Returns:
        The Figure.
    """
    fig, ax, own = figure_of(ax, figsize=(6.4, 4.6))
    shade_phase1(ax, run)
    shifted = dataclasses.replace(run, flow=_shifted(run.flow, _MAIN_SCORES), gd=_shifted(run.gd, _MAIN_SCORES), sgd={})
    handles = flow_gd(ax, shifted, {k: _score_label(k) for k in _MAIN_SCORES})
    time_axis(
        ax,
        run.event_marks(),
        ylabel=r"change of attention score $s_{ab}(t) - s_{ab}(0)$"
        + "\n"
        + r"$s_{ab} = \mu_a^\top W_K^\top W_Q \mu_b$",
        lr=_lr(run),
    )
    if own:
        fig.suptitle("Attention scores (Fig. 1a)")
    legend_outside(fig, [*handles, *phase1_handles(run), *ax.get_legend_handles_labels()[0]], own=own, ax=ax, ncols=3)
    return fig


def _loss_panel(ax: Axes, data: dict[str, np.ndarray], run: RunData, title: str) -> list:
    shade_phase1(ax, run)
    handles = []
    if plot_series(ax, data, "loss", log_y=True, color="k", lw=2.4, alpha=0.5):
        handles.append(Line2D([], [], color="k", lw=2.4, alpha=0.5, label="all samples (training loss)"))
    for k in range(1, 5):
        style: dict[str, Any] = dict(color=f"C{k - 1}", ls=_TYPE_STYLES[k - 1], lw=1.6)
        if plot_series(ax, data, f"loss_type{k}", log_y=True, **style):
            handles.append(Line2D([], [], **style, label=f"type-{k} samples"))
    time_axis(ax, run.event_marks(), ylabel=_LOSS_LABEL, log_y=True, lr=_lr(run), title=title)
    return handles


def plot_losses(run: RunData, *, axes: Sequence[Axes] | None = None) -> Figure:
    """The paper's Fig. 1b: the training loss and the per-type losses `loss_type1..4` on log-log axes
    (a line style per type: types 2 and 3 coincide by symmetry), for the gradient flow (left) and GD
    (right, when recorded), with Phase 1 shaded and T1 marked.

    Arguments:
        run: the loaded run folder.
        axes: two axes (flow, GD) to draw into; default a new figure.

    Returns:
        The Figure.
    """
    own = axes is None
    if axes is None:
        fig, grid = new_figure(1, 2, figsize=(11.0, 4.6), sharey=True)
        axes = list(grid[0])
        fig.suptitle("Training loss per sample type (Fig. 1b)")
    fig = root_figure(axes[0])
    handles = _loss_panel(axes[0], run.flow, run, "gradient flow")
    _loss_panel(axes[1], run.gd, run, f"GD ($\\eta$ = {_lr(run) or 0:g})")
    marks = [Line2D([], [], color="k", ls=":", label=lab) for _, lab in run.event_marks()]
    legend_outside(fig, [*handles, *phase1_handles(run), *marks], own=own, ax=axes[0], ncols=4)  # pyright: ignore[reportArgumentType]
    return fig  # pyright: ignore[reportReturnType]


FLOW_VS_DISCRETE_PANELS = {
    "loss": r"training loss $L(\theta)$",
    "min_margin": "smallest margin\n" + r"$\min_i y_i F(X_i)$",
    "G1": "MLP read-out\n" + r"$G(\mu_1) = u^\top W_V \mu_1$",
    "G2": r"MLP read-out $G(\mu_2)$",
    "G3": r"MLP read-out $G(\mu_3)$",
    "score_12": "attention score\n" + _score_label("score_12"),
    "score_31": "attention score\n" + _score_label("score_31"),
    "attn_disp": "attention change\n" + r"$\max |p(t) - p(0)|$",
}


def plot_flow_vs_discrete(run: RunData, *, axes=None) -> Figure:
    """Gradient flow vs GD vs SGD for the loss (log y), the smallest margin, G(mu_1..3), two attention
    scores and the attention change, each over its relative gap to the flow (log y), the quantity the
    comparison verdicts measure (`flowsim._plots.comparison_figure`; `axes` of shape (2, 8)).

    Returns:
        The Figure.
    """
    return comparison_figure(run, FLOW_VS_DISCRETE_PANELS, axes=axes)


def _phase2_band(ax: Axes, run: RunData, lo: float, hi: float, label: str, color: str = "C2") -> Patch:
    """Shade [lo, hi] over Phase 2 (t >= T1; the whole run when T1 is unknown): a verdict's criterion."""
    t = np.asarray(run.flow.get("t", run.gd.get("t", [0.0, 1.0])), float)
    t_end = float(np.nanmax(t)) if t.size else 1.0
    ax.fill_between([_t1(run) or 0.0, t_end], lo, hi, color=color, alpha=0.15, lw=0)
    return Patch(color=color, alpha=0.15, lw=0, label=label)


def _phase2_ylim(ax: Axes, run: RunData, key: str, lo: float, hi: float) -> None:
    """y limits that show the criterion [lo, hi] and the Phase-2 values (R is unbounded before T1)."""
    vals = [lo, hi]
    for data in (run.flow, run.gd):
        if key in data and "t" in data:
            v = np.asarray(data[key], float)[np.asarray(data["t"], float) >= (_t1(run) or 0.0)]
            vals += list(v[np.isfinite(v)])
    pad = 0.08 * (max(vals) - min(vals))
    ax.set_ylim(min(vals) - pad, max(vals) + pad)


def _split(handles: list) -> tuple[list, list]:
    """(the panel's own legend entries, the shared ones: the flow / GD line styles)."""
    shared = ("gradient flow", "GD (same $\\eta$)")
    return [h for h in handles if h.get_label() not in shared], [h for h in handles if h.get_label() in shared]


def _balance_panel(ax: Axes, run: RunData, key: str, label: str, band: tuple[float, float], text: str) -> list:
    """S2/S3 or R of the flow and GD with its Phase-2 band; returns the legend entries."""
    shade_phase1(ax, run)
    handles: list[Any] = [h for h in flow_gd(ax, run, {key: "value"}) if h.get_label() != "value"]
    handles.append(_phase2_band(ax, run, *band, text))
    if key == "R" and "R_star" in run.flow:
        plot_series(ax, run.flow, "R_star", color="C3", ls=":", lw=1.3)
        handles.append(Line2D([], [], color="C3", ls=":", label=r"fixed point $R^*$ (flow)"))
    if key == "R":
        t = np.asarray(run.flow.get("t", [1.0]), float)
        ax.plot([np.nanmax(t)] * 2, [1.0, 2.0], color="C2", lw=4, solid_capstyle="butt")
        handles.append(Line2D([], [], color="C2", lw=4, label=r"criterion at $T$: $1 < R(T) < 2$"))
    _phase2_ylim(ax, run, key, *band)
    time_axis(ax, run.event_marks(), ylabel=label, lr=_lr(run))
    return handles


def _within_type_panel(ax: Axes, run: RunData) -> list:
    """The spread max g_i / min g_i within each type (log y) with its bound 10 over Phase 2."""
    shade_phase1(ax, run)
    handles: list[Any] = flow_gd(
        ax, run, {f"g_ratio_type{k}": f"type {k}" for k in range(1, 5)}, log_y=True, styles=_TYPE_STYLES
    )
    t = np.asarray(run.flow.get("t", [1.0]), float)
    ax.plot([_t1(run) or 0.0, np.nanmax(t)], [10.0, 10.0], color="C3", lw=1.5)
    handles.append(Line2D([], [], color="C3", lw=1.5, label=r"criterion on Phase 2: $\max g_i / g_j \leq 10$"))
    ylabel = "spread within a type\n" + r"$\max_i g_i / \min_i g_i$"
    time_axis(ax, run.event_marks(), ylabel=ylabel, log_y=True, lr=_lr(run))
    return handles


def plot_balancing(run: RunData, *, axes: Sequence[Axes] | None = None) -> Figure:
    """The balancing quantities with the verdicts' criteria: S2/S3 with its band [1/2, 2] and R with
    [1, 3] over Phase 2 (shaded from T1) and (1, 2) at T; the spread max g_i / min g_i within each
    type (log y) with its bound 10 over Phase 2; flow (solid) and GD (dashed); Phase 1 shaded.

    Arguments:
        run: the loaded run folder.
        axes: three axes to draw into; default a new figure.

    Returns:
        The Figure.
    """
    own = axes is None
    if axes is None:
        fig, grid = new_figure(1, 3, figsize=(15.0, 5.4))
        axes = list(grid[0])
        fig.suptitle(r"Balancing of the per-sample gradients $g_i = 1 / (1 + e^{y_i F(X_i)})$")
    fig = root_figure(axes[0])
    panels = [
        _balance_panel(
            axes[0],
            run,
            "S2_over_S3",
            "$S_2 / S_3$\n($S_k$ = sum of $g_i$ over type $k$)",
            (0.5, 2.0),
            r"criterion on Phase 2: $1/2 \leq S_2/S_3 \leq 2$ (Lem. 4.4)",
        ),
        _balance_panel(
            axes[1],
            run,
            "R",
            r"$R = (S_2 + S_3 + S_4 - S_1) / (S_1 - S_2)$",
            (1.0, 3.0),
            r"criterion on Phase 2: $1 \leq R \leq 3$ (Lem. 4.5)",
        ),
        _within_type_panel(axes[2], run),
    ]
    shared: list = []
    for ax, handles in zip(axes, panels):
        own_entries, common = _split(handles)
        shared += common
        ax.legend(handles=own_entries, loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize="small", ncols=2)
    marks = [Line2D([], [], color="k", ls=":", label=lab) for _, lab in run.event_marks()]
    legend_outside(fig, [*shared, *phase1_handles(run), *marks], own=own, ax=None, ncols=5)  # pyright: ignore[reportArgumentType]
    return fig  # pyright: ignore[reportReturnType]


FIGURES = (plot_attention_scores, plot_losses, plot_flow_vs_discrete, plot_balancing)


def plot_run(
    run_or_path: RunData | str | os.PathLike, out_dir: str | os.PathLike | None = None, fmt: str | None = None
) -> list[pathlib.Path]:
    """Write all four figures of a run: `attention_scores`, `losses`, `flow_vs_discrete`, `balancing`.

    Arguments:
        run_or_path: a loaded `RunData` or the path of a run folder.
        out_dir: where to write the images (created if needed); defaults to the run folder.
        fmt: "png", "pdf" or "svg" (default: the `flowsim._figure_style.output_format` in force, else png).

    Returns:
        The paths of the written images, in the order above.
    """
    run = run_or_path if isinstance(run_or_path, RunData) else load_run(run_or_path)
    return write_figures(run, out_dir, list(zip(FIGURES, NAMES)), fmt)
