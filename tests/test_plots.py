"""Figures on small synthetic run folders: every co-occurrence figure
(`flowsim.systems.cooccurrence.figures`) is written as a valid PNG, including runs that stopped early
(non-finite values), lack files or observables, or have no Phase-1 time; the engine's generic
`flowsim.plot_comparison` draws any observables with the run's events marked; plot functions draw
into a given `ax=` and return its Figure; `--format pdf` writes PDFs; importing flowsim selects no
matplotlib backend."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes

from flowsim import _figure_style, _plots, load_run, plot_comparison
from flowsim._results import write_json, write_npz
from flowsim.cli import main
from flowsim.systems.cooccurrence import figures
from flowsim.systems.cooccurrence.figures import FILENAMES, plot_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N_SAMPLES, SEEDS = 12, 3


def _observables(t: np.ndarray, rng: np.random.Generator, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Plausibly shaped trajectories of the tracked quantities on save times `t` (S,)."""
    lt = np.log1p(scale * t)
    ramp = lambda c: 1.0 - np.exp(-scale * t / c)
    obs = {f"loss_type{k}": np.log(2) / (1.0 + scale * 0.05 * k * t) for k in range(1, 5)}
    obs["loss"] = np.mean([obs[f"loss_type{k}"] for k in range(1, 5)], axis=0)
    obs["per_sample_loss"] = obs["loss"][:, None] * (1 + 0.1 * rng.standard_normal((t.size, N_SAMPLES)))
    obs["margin"] = lt[:, None] + 0.1 * rng.standard_normal((t.size, N_SAMPLES))
    obs["min_margin"] = obs["margin"].min(1)
    obs.update(G1=0.8 * lt, G2=0.7 * lt, G3=-0.5 * lt, G_rand_max=0.01 * lt, G_rand_min=-0.01 * lt)
    obs["N"] = 1.0 + lt
    for a in (1, 2, 3):
        for b in (1, 2, 3):
            obs[f"score_{a}{b}"] = 0.01 * rng.standard_normal() * lt
    obs.update(score_12=0.6 * lt, score_21=0.5 * lt, score_31=-0.4 * ramp(20), score_32=-0.3 * ramp(30))
    obs["attn_disp"] = 0.4 * ramp(50)
    obs["attn_dev"] = 0.05 + obs["attn_disp"]
    s = {k: np.exp(-0.01 * k * t) * (5 - k) for k in range(1, 5)}
    obs.update({f"S{k}": s[k] for k in s}, S2_over_S3=s[2] / s[3], R=(s[2] + s[3] + s[4] - s[1]) / (s[1] - s[2]))
    obs.update({f"g_ratio_type{k}": 1.0 + 0.1 * k * np.sqrt(t) for k in range(1, 5)})
    return obs


def _write_run(path: pathlib.Path, *, failed: bool, with_sgd: bool, t1: float | None) -> pathlib.Path:
    """A run folder with flow/GD (and optionally SEEDS-seed SGD) trajectories on a log+linear grid."""
    rng = np.random.default_rng(0)
    t = np.concatenate([[0.0], np.logspace(-2, 2, 30), np.linspace(110, 300, 10)])
    flow = _observables(t, rng)
    if failed:  # the flow stopped early: trailing NaN / inf, one observable never finite
        for v in flow.values():
            v[-8:] = np.nan
        flow["loss"][-9] = np.inf
        flow["R"][:] = np.nan
    gd = _observables(t, rng, scale=1.05)
    if not with_sgd:
        del gd["score_31"], gd["g_ratio_type4"]  # missing observables are skipped
    write_json(
        path / "config.json", {"config": {"system": "cooccurrence", "seed": 0, "lr": 0.1, "steps": 3000}, "seed": 0}
    )
    write_npz(path / "flow.npz", {"t": t, **flow})
    write_npz(path / "gd.npz", {"t": t, **gd})
    if with_sgd:
        seeds = [_observables(t, rng, scale=s) for s in np.linspace(0.8, 1.25, SEEDS)]
        write_npz(path / "sgd.npz", {"t": t, **{k: np.stack([o[k] for o in seeds]) for k in seeds[0]}})
    write_json(
        path / "summary.json",
        {
            "system": "cooccurrence",
            "phase1_end_time": t1,
            "gd": {"diverged_step": -1},
            "events": {"phase1_end": {"time": t1, "label": "end of Phase 1", "obs": {}}},
        },
    )
    return path


def _assert_pngs(paths: list[pathlib.Path], out_dir: pathlib.Path) -> None:
    assert [p.name for p in paths] == list(FILENAMES)
    for p in paths:
        assert p.parent == out_dir and p.is_file() and p.stat().st_size > 2000, p
        assert p.read_bytes()[:8] == PNG_SIGNATURE, p
    assert plt.get_fignums() == []  # every figure was closed


@pytest.fixture(autouse=True)
def _low_dpi(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(_figure_style, "DPI", 60)  # same figures, cheaper rasterization


@pytest.fixture
def vlines(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, Any]]:
    """Every vertical line drawn (x, label): the event marks."""
    drawn: list[tuple[float, Any]] = []
    orig = Axes.axvline

    def spy(self, x=0, *args, **kwargs):
        drawn.append((x, kwargs.get("label")))
        return orig(self, x, *args, **kwargs)

    monkeypatch.setattr(Axes, "axvline", spy)
    return drawn


def test_failed_run_with_sgd(tmp_path: pathlib.Path, vlines):
    """Non-finite tail on the flow, 3-seed SGD, T1 known; images go into the run folder, every
    time panel marks the end of Phase 1."""
    run_dir = _write_run(tmp_path / "run", failed=True, with_sgd=True, t1=2.5)
    run = load_run(run_dir)
    assert run.system == "cooccurrence" and run.config["lr"] == 0.1
    assert run.event_marks() == [(2.5, "end of Phase 1")]
    _assert_pngs(plot_run(run_dir), run_dir)
    # 1 (scores) + 2 (losses: flow, GD) + 16 (flow vs discrete: 8 values, 8 gaps) + 3 (balancing) time panels
    assert vlines == [(2.5, "end of Phase 1")] * 22


def test_missing_sgd_and_phase1_time(tmp_path: pathlib.Path, vlines):
    """No sgd.npz, GD lacking some observables, T1 None; a loaded RunData drawn into out_dir."""
    run_dir = _write_run(tmp_path / "run", failed=False, with_sgd=False, t1=None)
    run = load_run(run_dir)
    assert run.sgd == {} and run.summary["phase1_end_time"] is None and run.event_marks() == []
    out = tmp_path / "figures" / "nested"
    _assert_pngs(plot_run(run, out_dir=out), out)
    assert not list(run_dir.glob("*.png")) and vlines == []


def test_bare_run_folder(tmp_path: pathlib.Path):
    """A folder with only config.json (no npz, no summary) still gives an image, with empty panels."""
    write_json(tmp_path / "config.json", {"seed": 1})
    run = load_run(tmp_path)
    assert run.config == {} and run.system is None and run.event_marks() == []
    png = _figure_style.save_figure(figures.plot_attention_scores(run), tmp_path / "scores.png")
    assert png.read_bytes()[:8] == PNG_SIGNATURE and plt.get_fignums() == []


def test_event_marks_keep_fired_events_only(tmp_path: pathlib.Path):
    """Marks come from summary.json's `events`: finite positive times, the label (else the name)."""
    write_json(tmp_path / "config.json", {"config": {"system": "cooccurrence"}})
    write_json(
        tmp_path / "summary.json",
        {
            "events": {
                "a": {"time": 1.5, "label": "first"},
                "b": {"time": 3.0, "label": None},
                "never": {"time": None},
                "inf": {"time": "inf", "label": "x"},
                "zero": {"time": 0.0, "label": "y"},
                "odd": 7,
            }
        },
    )
    assert load_run(tmp_path).event_marks() == [(1.5, "first"), (3.0, "b")]


def test_generic_comparison_figure(tmp_path: pathlib.Path, vlines):
    """`flowsim.plot_comparison` draws any observables (a new figure leaves out missing ones)."""
    run_dir = _write_run(tmp_path / "run", failed=False, with_sgd=True, t1=4.0)
    png = plot_comparison(
        load_run(run_dir), {"loss": "loss", "N": "norm", "nope": "missing"}, tmp_path / "c.png", ncols=2
    )
    assert png.read_bytes()[:8] == PNG_SIGNATURE and plt.get_fignums() == []
    assert vlines == [(4.0, "end of Phase 1")] * 4  # value and gap panel of each recorded observable


def test_plot_command_redraws_a_folder_without_system(tmp_path: pathlib.Path, capsys):
    """`flowsim plot DIR` draws the run's system's figures; a folder that names no system (written
    before systems existed) gets the default system's."""
    run_dir = _write_run(tmp_path / "run", failed=False, with_sgd=False, t1=1.0)
    write_json(run_dir / "config.json", {"config": {"seed": 0}, "seed": 0})
    assert main(["plot", str(run_dir)]) == 0
    assert capsys.readouterr().out.split() == [str(run_dir / f) for f in FILENAMES]


def test_plot_functions_draw_into_a_given_ax(tmp_path: pathlib.Path):
    """`ax=` / `axes=`: the figure drawn into is the one returned, and its axes hold the curves."""
    run = load_run(_write_run(tmp_path / "run", failed=False, with_sgd=True, t1=2.5))
    fig, ax = plt.subplots()
    try:
        assert figures.plot_attention_scores(run, ax=ax) is fig
        assert len(ax.get_lines()) >= 8  # four scores, flow and GD
        fig2, axes = plt.subplots(1, 3)
        assert figures.plot_balancing(run, axes=list(axes)) is fig2 and all(a.get_lines() for a in axes)
    finally:
        plt.close("all")
    own = figures.plot_losses(run)
    assert own.axes and plt.get_fignums() == []  # a new figure is not registered with pyplot


def test_relative_gap_panels_measure_the_verdicts_gap(tmp_path: pathlib.Path):
    """The gap panel's GD curve is |x_GD - x_flow| / |x_flow| (pointwise, for the loss)."""
    run = load_run(_write_run(tmp_path / "run", failed=False, with_sgd=True, t1=2.5))
    t, gap = _plots.relative_gap(run, "loss", "gd", pointwise=True)  # pyright: ignore[reportGeneralTypeIssues]
    np.testing.assert_allclose(gap, np.abs(run.gd["loss"] - run.flow["loss"]) / run.flow["loss"])
    _, seeds = _plots.relative_gap(run, "G1", "sgd", pointwise=False)  # pyright: ignore[reportGeneralTypeIssues]
    assert seeds.shape == (SEEDS, t.size)
    np.testing.assert_allclose(seeds[:, -1], np.abs(run.sgd["G1"][:, -1] - run.flow["G1"][-1]) / run.flow["G1"].max())


def test_plot_command_writes_pdf(tmp_path: pathlib.Path, capsys):
    """`flowsim plot DIR --format pdf` writes every figure as a PDF."""
    run_dir = _write_run(tmp_path / "run", failed=False, with_sgd=False, t1=1.0)
    assert main(["plot", str(run_dir), "--format", "pdf"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(run_dir / f"{name}.pdf") for name in figures.NAMES]
    assert all(pathlib.Path(p).read_bytes()[:5] == b"%PDF-" for p in printed)
    assert not list(run_dir.glob("*.png"))


def test_import_selects_no_backend():
    """`import flowsim` (and its CLI) loads no matplotlib at all (a run with --no-plots never pays for
    it); importing every figure module keeps the backend the user chose (here "svg" through
    MPLBACKEND; `matplotlib.use("Agg")` on import would switch it)."""
    light = "import sys, flowsim, flowsim.cli; print(any(m.startswith('matplotlib') for m in sys.modules))"
    mods = "flowsim._plots, flowsim._phase_diagram, " + ", ".join(
        f"flowsim.systems.{s}.figures"
        for s in ("cooccurrence", "sensitivity", "spectra", "dyck_attention", "dyck_proxies")
    )
    code = f"{light}; import {mods}; import matplotlib; print(matplotlib.get_backend())"
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "svg"], out.stderr
