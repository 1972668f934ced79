"""At least 100 bad command lines (tests/data/bad_inputs.txt): each exits with status 2 and one line
on stderr naming what is wrong, with no traceback and before any work starts. Every case is one
in-process `main([...])` call; the work of every command is replaced by a function that fails the
test, so a case that gets past the checks fails loudly instead of computing."""

import ast
import dataclasses
import importlib
import math
import pathlib
import shlex
import time
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowsim import Config, ConfigError, RunKeys, _validate, cli, setup
from flowsim._registry import get_system
from flowsim.systems import dyck_attention, dyck_proxies, sensitivity, spectra
from flowsim.systems.dyck_proxies.system import vocab_of

CASES_FILE = pathlib.Path(__file__).parent / "data" / "bad_inputs.txt"


def _parse(text: str) -> tuple[list[tuple[str, str, object]], list[tuple[str, str]]]:
    """(files, cases) of the data file: files as (directive, path, content), cases as (args, piece)."""
    files, cases = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@file "):
            path, _, literal = line[len("@file ") :].partition(" = ")
            files.append(("file", path.strip(), ast.literal_eval(literal)))
        elif line.startswith("@pickled-npz "):
            files.append(("pickled-npz", line.split(None, 1)[1].strip(), None))
        else:
            args, sep, piece = line.rpartition(" || ")
            assert sep and args and piece, f"malformed case line: {line!r}"
            cases.append((args.strip(), piece.strip()))
    return files, cases


FILES, CASES = _parse(CASES_FILE.read_text())


def _write(root: pathlib.Path) -> None:
    for kind, rel, content in FILES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "pickled-npz":
            np.savez(path, t=np.arange(3.0), loss=np.array([None, {"a": 1}, 3], dtype=object))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            assert isinstance(content, str)
            path.write_text(content)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    _write(root)
    return root


@pytest.fixture
def no_work(monkeypatch):
    """Every command's work runs through `cli._work`; here it fails the test instead."""

    def refuse(*args, **kwargs):
        raise AssertionError("work started: the bad input was not refused before computing")

    monkeypatch.setattr(cli, "_work", refuse)


def test_the_list_is_long_and_well_formed():
    assert len(CASES) >= 100
    assert len({a for a, _ in CASES}) == len(CASES), "a case is listed twice"
    assert {kind for kind, _, _ in FILES} == {"file", "pickled-npz"}


@pytest.mark.parametrize("args, piece", CASES, ids=[a for a, _ in CASES])
def test_bad_input_exits_2_with_one_line(args, piece, workdir, no_work, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    argv = shlex.split(args.replace("{tmp}", str(workdir)))
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "Traceback" not in err, err
    assert e.value.code == 2, err
    assert len(lines) == 1, err
    assert piece in lines[0], lines[0]
    assert elapsed < 5, f"{elapsed:.1f} s to refuse"


# ---------------------------------------------------------------- memory estimates of the systems

SYSTEMS = ("sensitivity", "spectra", "dyck-attention", "dyck-proxies")
ABSURD = [(a, p) for a, p in CASES if "machine's memory" in p]


def _estimate(config: Config) -> float:
    """The config's system's `memory_bytes(config)` (an optional hook of a system)."""
    estimate = getattr(get_system(config.system), "memory_bytes", None)
    assert callable(estimate), f"{config.system} has no memory_bytes"
    return float(typing.cast(float, estimate(config)))


def _model(name: str, config: Config):
    """The config's initial model, abstractly (shapes only: nothing is drawn)."""
    key = RunKeys.from_seed(config.seed).init
    init = {
        "sensitivity": lambda: sensitivity.init_model(key, config.task),
        "spectra": lambda: spectra.init_model(key, config.task),
        "dyck-attention": lambda: dyck_attention.init_model(key, config.task),
        "dyck-proxies": lambda: dyck_proxies.init_model(key, config.task, vocab_of(config.task)),
    }[name]
    return eqx.filter_eval_shape(init)


def test_every_system_estimates_its_memory_and_bounds_its_int_fields():
    """Each system gives `memory_bytes`, and every int field of its config has an upper bound: a
    size is refused by its bound or (in combination with others) by the estimate."""
    for name in SYSTEMS:
        system = get_system(name)
        assert callable(getattr(system, "memory_bytes", None)), name
        for f in dataclasses.fields(system.config_type):
            if f.type in (int, "int"):
                assert f.metadata.get("high") is not None, f"{name}.{f.name} has no upper bound"
    assert {shlex.split(a)[1] for a, _ in ABSURD} >= set(SYSTEMS)


@pytest.mark.parametrize("args, piece", ABSURD, ids=[a for a, _ in ABSURD])
def test_absurd_sizes_are_refused_within_a_second(args, piece, no_work, capsys):
    with pytest.raises(SystemExit):  # imports the system and builds its parser once
        cli.main(shlex.split(args))
    capsys.readouterr()
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        cli.main(shlex.split(args))
    elapsed = time.perf_counter() - t0
    lines = capsys.readouterr().err.splitlines()
    assert e.value.code == 2 and len(lines) == 1 and "GiB at once" in lines[0], lines
    assert elapsed < 1, f"{elapsed:.2f} s to refuse"


@pytest.mark.parametrize("name", SYSTEMS)
def test_defaults_and_smoke_sizes_fit(name, monkeypatch):
    """The defaults fit a 16 GiB machine (8 GiB allowed), the smoke sizes a few MiB, float32 needs
    less than float64, more SGD seeds or training rows need more, and a machine with less than
    twice the estimate refuses the defaults."""
    system = get_system(name)
    monkeypatch.setattr(_validate, "_machine_bytes", lambda: 16 * 2**30)
    default, smoke = Config(name), Config(name, **system.smoke)
    for config in (default, smoke):
        _validate.check_memory(config)  # no ConfigError
    assert _estimate(smoke) < 64 * 2**20
    assert _estimate(default.replace(precision="float32")) < _estimate(default) < 8 * 2**30
    more = {"n": default.n + 2} if name == "sensitivity" else {"n_train": 4 * system.train_size(default.task)}
    assert _estimate(default.replace(sgd_seeds=64)) > _estimate(default)
    assert _estimate(default.replace(**more)) > _estimate(default)
    monkeypatch.setattr(_validate, "_machine_bytes", lambda: int(_estimate(default) * 1.9))
    with pytest.raises(ConfigError, match="half this machine's memory"):
        _validate.check_memory(default)


@pytest.mark.parametrize("name", SYSTEMS)
@pytest.mark.parametrize("sizes", ["defaults", "smoke"])
def test_parameter_count_of_the_estimate_matches_the_model(name, sizes, monkeypatch):
    """The estimate's parameter count is the model's (up to its LayerNorm / read-out details: at
    most 10% more), read from the `MemoryParts` the system hands to `run_bytes`."""
    system = get_system(name)
    seen = []
    module = importlib.import_module(type(system).__module__)
    real = module.run_bytes
    monkeypatch.setattr(module, "run_bytes", lambda config, parts: seen.append(parts) or real(config, parts))
    config = Config(name, **(system.smoke if sizes == "smoke" else {}))
    _estimate(config)
    leaves = jax.tree.leaves(_model(name, config))
    P = sum(math.prod(x.shape) for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact))
    assert P <= seen[0].params <= 1.1 * P, (seen[0].params, P)


XLA_CASES = {
    "sensitivity": dict(n=7, n_train=100, sgd_seeds=4, batch_size=16),
    "spectra": dict(n_train=400, n_test=200, sgd_seeds=4),
    "dyck-attention": dict(
        arch="two_layer", d_model=16, n_train=100, max_len=20, long_min=30, long_max=40, sgd_seeds=4
    ),
    "dyck-proxies": dict(k=2, max_depth=3, max_len=20, n_train=200, n_test=20, d_model=16, sgd_seeds=4),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", SYSTEMS)
def test_estimate_covers_what_xla_allocates(name):
    """The estimate is at least what XLA's compiled programs of the largest pieces need at once (a
    full-batch gradient, and the observer vmapped over the SGD seeds), and not absurdly more."""
    config = Config(name, **XLA_CASES[name])
    s = setup(config)
    params = s.problem.params0

    def temp(fn, *args) -> int:
        memory = jax.jit(fn).lower(*args).compile().memory_analysis()
        assert memory is not None
        return memory.temp_size_in_bytes

    stacked = jax.tree.map(lambda x: jnp.stack([x] * config.sgd_seeds), params)
    t0 = jnp.zeros(())
    need = temp(jax.grad(s.problem.loss), params) + temp(jax.vmap(lambda p: s.observer(t0, p, s.problem)), stacked)
    est = _estimate(config)
    assert need <= est <= 20 * need, (est / 2**20, need / 2**20)
