"""Shared pytest setup: every test runs in float64, with strict dtype promotion and no implicit rank promotion.

The suite compiles far more programs than it runs long: XLA's backend optimisation level is lowered
to 0 for the test process and the processes it starts (about 20% less suite time measured side by
side on the solver tests; library code run outside pytest keeps XLA's defaults).
"""

import os

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

DATA = pathlib.Path(__file__).parent / "data"

# A small co-occurrence problem shared by the solver tests (compile once per module, run many).
SMALL = dict(
    n=12,
    L=4,
    d=16,
    m=16,
    m1=16,
    lr=0.05,
    steps=200,
    n_save_log=20,
    n_save_lin=10,
    batch_size=4,
    sgd_seeds=4,
    n_test=200,
)


@pytest.fixture(scope="session")
def small_config():
    from flowsim import Config

    return Config(**SMALL)


@pytest.fixture(scope="session")
def small_setup(small_config):
    from flowsim import setup

    return setup(small_config)


@pytest.fixture(scope="session")
def reference():
    """The independent float64 reference: initial state of the paper's experiment and GD records."""
    import json

    z = np.load(DATA / "paper_experiment_seed0.npz")
    records = json.loads((DATA / "paper_experiment_seed0_gd.json").read_text())["records"]
    return {k: z[k] for k in z.files}, records
