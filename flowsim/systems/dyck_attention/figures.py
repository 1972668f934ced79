"""Figures of a dyck-attention run: the training curves of flow vs GD vs the minibatch comparator, and
the final attention on the probe of each (flow, GD, first minibatch seeds), side by side."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

from ..._plots import plot_comparison
from ..._results import RunData

PANELS = {
    "loss": "training cross-entropy",
    "acc_test": "held-out closing accuracy",
    "acc_long": "long-string closing accuracy",
    "stack": "stack-likeness (probe)",
    "balance": "balance violation (probe)",
    "lambda_max": r"$\lambda_{max}$ (Hessian)",
}


def _last(series: np.ndarray, loss: np.ndarray) -> np.ndarray | None:
    ok = np.flatnonzero(np.isfinite(loss))
    return None if not ok.size else series[ok[-1]]


def plot_heatmaps(
    patterns: Sequence[np.ndarray], titles: Sequence[str], probe_labels: Sequence[str], path: pathlib.Path
) -> pathlib.Path:
    """Draw attention patterns (layers, P, P) side by side, one column per model, one row per layer.

    Args:
        patterns: one array (layers, P, P) per model.
        titles: a title per model.
        probe_labels: a tick label per probe position.
        path: the image file to write.

    Returns:
        `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = patterns[0].shape[0]
    fig, axes = plt.subplots(layers, len(patterns), figsize=(2.6 * len(patterns), 2.6 * layers), squeeze=False)
    axes = np.asarray(axes).reshape(layers, len(patterns))
    for j, (pat, title) in enumerate(zip(patterns, titles)):
        for li in range(layers):
            ax = axes[li, j]
            ax.imshow(pat[li], vmin=0, vmax=1, cmap="viridis")
            ax.set_title(f"{title} L{li + 1}", fontsize=8)
            ax.set_xticks(range(len(probe_labels)), probe_labels, fontsize=5, rotation=90)
            ax.set_yticks(range(len(probe_labels)), probe_labels, fontsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_run(run: RunData, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """The training curves and the probe-attention heatmaps of a saved run."""
    out = [plot_comparison(run, PANELS, out_dir / "training.png")]
    pats, titles = [], []
    for name, obs in (("flow", run.flow), ("GD", run.gd)):
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
                titles.append(f"minibatch {s}")
    if pats:
        labels = [str(i) for i in range(pats[0].shape[-1])]
        out.append(plot_heatmaps(pats, titles, labels, out_dir / "attention.png"))
    return out
