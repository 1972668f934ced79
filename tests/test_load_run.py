"""Results in a notebook: `load_run(...).to_frame()` / `.to_xarray()`, `load_sweep(...).to_frame()`,
and result files readable by the group (the umask decides, as for a plain `open`)."""

import json
import os
import stat
import sys

import numpy as np
import pytest

import flowsim
from flowsim import ConfigError, load_run, load_sweep
from flowsim._results import publish_folder, staging_folder, write_json, write_npz

pd = pytest.importorskip("pandas")

T = np.array([0.0, 0.1, 0.3])
STEPS = np.array([0, 1, 3])  # lr = 0.1
SEEDS = 2


@pytest.fixture
def run_dir(tmp_path):
    """A run folder in the layout `flowsim run` writes, with known numbers: a scalar observable in
    every piece, one only in the flow, and a vector observable (2 samples) in every piece."""
    out = tmp_path / "my-run"
    write_json(out / "config.json", {"config": {"system": "cooccurrence", "lr": 0.1}, "seed": 0})
    write_npz(out / "flow.npz", {"t": T, "loss": [3.0, 2.0, 1.0], "T_only": [7.0, 8.0, 9.0], "margin": np.ones((3, 2))})
    write_npz(out / "gd.npz", {"t": T, "step": STEPS, "loss": [3.0, 2.1, 1.1], "margin": 2 * np.ones((3, 2))})
    sgd_loss = np.array([[3.0, 2.2, 1.2], [3.0, 2.3, 1.3]])
    write_npz(out / "sgd.npz", {"t": T, "step": STEPS, "loss": sgd_loss, "margin": np.zeros((SEEDS, 3, 2))})
    return out


def test_to_frame_is_one_tidy_row_per_piece_seed_and_time(run_dir):
    df = load_run(run_dir).to_frame()
    assert list(df.columns[:5]) == ["run", "piece", "seed", "step", "t"]
    assert set(df.columns[5:]) == {"loss", "T_only"}  # the vector observable is left to to_xarray
    assert len(df) == 3 + 3 + SEEDS * 3 and set(df["run"]) == {"my-run"}
    flow, gd, sgd = (df[df["piece"] == p] for p in ("flow", "gd", "sgd"))
    assert (flow["seed"] == -1).all() and flow["step"].isna().all() and (gd["seed"] == -1).all()
    np.testing.assert_array_equal(gd["step"].to_numpy(int), STEPS)
    np.testing.assert_allclose(gd["t"], gd["step"].to_numpy(float) * 0.1)  # t = step x lr
    assert sgd["seed"].tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(sgd[sgd["seed"] == 1]["loss"], [3.0, 2.3, 1.3])
    np.testing.assert_array_equal(flow["T_only"], [7.0, 8.0, 9.0])
    assert gd["T_only"].isna().all()
    mean = df.groupby(["piece", "t"])["loss"].mean()  # the flow and GD survive a groupby on seed too
    assert mean[("sgd", 0.3)] == pytest.approx(1.25) and mean[("flow", 0.3)] == 1.0
    assert len(df.groupby(["piece", "seed"])) == 4


def test_a_float32_flow_lines_up_with_the_discrete_grid(run_dir):
    """A float32 flow records its save times rounded (0.1 -> 0.10000000149); the table reports the
    exact grid step x lr for every piece, so a groupby on t pairs the three runs."""
    write_npz(run_dir / "flow.npz", {"t": T.astype(np.float32), "loss": np.array([3.0, 2.0, 1.0], np.float32)})
    assert float(load_run(run_dir).flow["t"][1]) != 0.1
    df = load_run(run_dir).to_frame()
    assert sorted(set(df["t"])) == T.tolist()
    assert df.groupby("t")["piece"].nunique().tolist() == [3, 3, 3]
    write_npz(run_dir / "flow.npz", {"t": 2 * T, "loss": [3.0, 2.0, 1.0]})  # not one grid: each keeps its own
    assert sorted(set(load_run(run_dir).to_frame()["t"])) == sorted(set(T) | set(2 * T))


def test_to_xarray_has_named_dimensions(run_dir):
    pytest.importorskip("xarray")
    ds = load_run(run_dir).to_xarray()
    assert ds["loss"].dims == ("piece", "seed", "t")
    assert ds["margin"].dims == ("piece", "seed", "t", "margin_dim1") and ds.sizes["margin_dim1"] == 2
    assert list(ds["piece"].values) == ["flow", "gd", "sgd"] and list(ds["seed"].values) == [-1, 0, 1]
    np.testing.assert_array_equal(ds["step"].values, STEPS)
    np.testing.assert_allclose(ds["loss"].sel(piece="sgd").mean("seed").values, [3.0, 2.25, 1.25])
    np.testing.assert_array_equal(ds["loss"].sel(piece="gd", seed=-1).values, [3.0, 2.1, 1.1])
    assert np.isnan(ds["loss"].sel(piece="flow", seed=0).values).all()  # the flow is not an ensemble
    assert np.isnan(ds["T_only"].sel(piece="gd").values).all()
    assert ds.attrs["system"] == "cooccurrence"


def test_to_xarray_refuses_pieces_on_different_grids(run_dir):
    pytest.importorskip("xarray")
    write_npz(run_dir / "gd.npz", {"t": 2 * T, "step": 2 * STEPS, "loss": [3.0, 2.1, 1.1]})
    with pytest.raises(ConfigError, match="save times differ"):
        load_run(run_dir).to_xarray()


def test_a_missing_pandas_is_one_clear_line(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(ImportError, match=r"^RunData.to_frame\(\) needs pandas, which is not installed: pip install"):
        load_run(run_dir).to_frame()


def test_load_sweep_rows_to_frame(tmp_path):
    spec = {"axes": {"lr": [0.1, 0.2]}, "seeds": [0, 1], "measures": ["T1", "fitted"]}
    write_json(tmp_path / "spec.json", {"spec": spec})
    for i, (lr, seed) in enumerate([(0.2, 1), (0.1, 0), (0.2, 0)]):  # point files in no particular order
        rec = {"axes": {"lr": lr}, "seed": seed, "status": "ok", "reason": None}
        write_json(tmp_path / "points" / f"p{i}.json", {**rec, "measures": {"T1": lr * 10 + seed, "fitted": True}})
    rows = load_sweep(tmp_path)
    assert isinstance(rows, flowsim.SweepRows) and isinstance(rows, list)
    assert rows[0] == {"lr": 0.1, "seed": 0, "status": "ok", "reason": None, "T1": 1.0, "fitted": True}
    df = rows.to_frame()
    assert list(df.columns) == ["lr", "seed", "status", "reason", "T1", "fitted"]
    assert df[["lr", "seed"]].values.tolist() == [[0.1, 0], [0.2, 0], [0.2, 1]]
    assert df["T1"].tolist() == [1.0, 2.0, 3.0]
    assert flowsim.load_sweep is load_sweep and load_sweep(tmp_path, as_frame=True).equals(df)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_result_files_and_folders_follow_the_umask(tmp_path, umask):
    """Written atomically through temporary files (mkstemp: 0600, mkdtemp: 0700), yet published with
    the mode a plain open/mkdir gives: group-readable under the usual umasks, private under 077."""
    old = os.umask(umask)
    try:
        out = tmp_path / "run"
        staged = staging_folder(out)
        write_json(staged / "summary.json", {"a": 1})
        write_npz(staged / "flow.npz", {"t": T})
        publish_folder(staged, out)
        (tmp_path / "plain.txt").write_text("x")  # what a plain open gives, e.g. matplotlib's savefig
    finally:
        os.umask(old)
    assert _mode(out) == 0o777 & ~umask
    assert _mode(out / "summary.json") == _mode(out / "flow.npz") == 0o666 & ~umask == _mode(tmp_path / "plain.txt")
    assert json.loads((out / "summary.json").read_text()) == {"a": 1}
