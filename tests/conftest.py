"""Shared pytest setup: every test runs in float64, with strict dtype promotion and no implicit rank promotion.

The suite compiles far more programs than it runs long: XLA's backend optimisation level is lowered
to 0 for the test process and the processes it starts (about 20% less suite time measured side by
side on the solver tests; library code run outside pytest keeps XLA's defaults).

One persistent compilation cache serves the whole session: a fresh temporary folder, made by the
first process that loads this file and inherited (through FLOWSIM_TEST_CACHE_DIR, FLOWSIM_CACHE_DIR
and JAX_COMPILATION_CACHE_DIR) by the pytest-xdist workers and by every `flowsim` process a test starts, so a
program compiled by one of them is loaded, not compiled again, by the others. The process that made
it removes it at the end of the session. It keeps every program, the small ones too (the two workers
and the CLI processes compile many of the same small programs: 11-13% less wall time than keeping
only programs over 0.3 s, measured alternately on ten test files).
"""

import os

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import tempfile

if "FLOWSIM_TEST_CACHE_DIR" not in os.environ:
    os.environ["FLOWSIM_TEST_CACHE_DIR"] = tempfile.mkdtemp(prefix="flowsim-test-xla-")
    _CACHE_OWNER = True
else:
    _CACHE_OWNER = False
os.environ["FLOWSIM_CACHE_DIR"] = os.environ["FLOWSIM_TEST_CACHE_DIR"]
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["FLOWSIM_TEST_CACHE_DIR"]  # also under `flowsim --no-cache`
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

import jax

jax.config.update("jax_compilation_cache_dir", os.environ["FLOWSIM_TEST_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

DATA = pathlib.Path(__file__).parent / "data"


# The files that take longest, first: pytest-xdist (`--dist loadfile`) hands whole files to its two
# workers in collection order, so a long file collected last (the contract shards sort late) would
# keep one worker busy while the other idles at the end.
LONGEST_FIRST = (
    "test_systems_contract_0.py",
    "test_systems_contract_1.py",
    "test_dynamics.py",
    "test_theory_gram.py",
    "test_plots.py",
    "test_discrete.py",
    "test_compare.py",
    "test_flow.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


def pytest_unconfigure(config):
    if _CACHE_OWNER:
        import shutil

        shutil.rmtree(os.environ["FLOWSIM_TEST_CACHE_DIR"], ignore_errors=True)


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
