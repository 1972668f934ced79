"""Tests of `flowsim.Config` (the co-occurrence fields + `RunConfig`): defaults, validation, and
(de)serialisation."""

from __future__ import annotations

import json
import math

import pytest

from flowsim import SOLVERS, Config, ConfigError, RunConfig
from flowsim._config import PRECISIONS
from flowsim.systems.cooccurrence import CooccurrenceConfig
from flowsim.systems.cooccurrence.config import INITS, n_random_slots

# ---------------------------------------------------------------------------------------------
# Defaults = the paper's experiment (App. A of Yang et al.)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("n", 60),
        ("L", 5),
        ("d", 64),
        ("m", 128),
        ("m1", 256),
        ("init", "kaiming"),
        ("lr", 0.01),
        ("steps", 30000),
        ("batch_size", 12),
        ("sgd_seeds", 8),
        ("init_scale", 1.0),
        ("train_a", False),
        ("distinct_tokens", False),
        ("precision", "float64"),
    ],
)
def test_defaults_match_paper_experiment(field, expected):
    assert getattr(Config(), field) == expected


def test_default_t_final():
    assert Config().t_final == pytest.approx(0.01 * 30000)


def test_n_random_slots_paper_experiment():
    # 30 type-1 samples with L-3 random slots, 20 type-2/3 with L-2, 10 type-4 with L-1.
    assert n_random_slots(60, 5) == 30 * 2 + 20 * 3 + 10 * 4 == 160


def test_config_is_frozen():
    c = Config()
    with pytest.raises(Exception):
        c.n = 12  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Validation: each invalid value raises ConfigError naming the field and its allowed range
# ---------------------------------------------------------------------------------------------

_NEED_DISTINCT = n_random_slots(60, 5) + 3  # 163

INVALID = [
    # (changes, field named, fragment of the allowed range)
    ({"n": 7, "batch_size": 1}, "n", "multiple of 6"),
    ({"n": 8, "batch_size": 1}, "n", "multiple of 6"),
    ({"n": 0, "batch_size": 1}, "n", "positive"),
    ({"n": -6, "batch_size": 1}, "n", "positive"),
    ({"L": 2}, "L", ">= 3"),
    ({"L": 0}, "L", "positive"),
    ({"d": 3}, "d", ">= 4"),
    ({"d": 0}, "d", "positive"),
    ({"distinct_tokens": True}, "d", f">= {_NEED_DISTINCT}"),
    ({"distinct_tokens": True, "d": _NEED_DISTINCT - 1}, "d", f">= {_NEED_DISTINCT}"),
    ({"m": 0}, "m", "positive"),
    ({"m": -1}, "m", "positive"),
    ({"m1": 0}, "m1", "positive"),
    ({"m1": -3}, "m1", "positive"),
    ({"steps": 0}, "steps", "positive"),
    ({"steps": -100}, "steps", "positive"),
    ({"batch_size": 0}, "batch_size", "positive"),
    ({"batch_size": -1}, "batch_size", "positive"),
    ({"init_scale": 0.0}, "init_scale", "in (0, 1e+06]"),
    ({"init_scale": -1.0}, "init_scale", "in (0, 1e+06]"),
    ({"init_scale": math.nan}, "init_scale", "finite"),
    ({"init_scale": math.inf}, "init_scale", "finite"),
    ({"init_scale": -math.inf}, "init_scale", "finite"),
    ({"lr": 0.0}, "lr", "in (0, 10000]"),
    ({"lr": -0.01}, "lr", "in (0, 10000]"),
    ({"lr": math.nan}, "lr", "finite"),
    ({"rtol": 1.0}, "rtol", "(0, 1)"),
    ({"rtol": 2.5}, "rtol", "(0, 1)"),
    ({"rtol": 0.0}, "rtol", "(0, 1)"),
    ({"solver": "rk4"}, "solver", str(SOLVERS)),
    ({"solver": "Tsit5"}, "solver", str(SOLVERS)),
    ({"init": "xavier"}, "init", str(INITS)),
    ({"precision": "float16"}, "precision", str(PRECISIONS)),
    ({"precision": "bfloat16"}, "precision", str(PRECISIONS)),
    ({"batch_size": 61}, "batch_size", "[1, n=60]"),
    ({"n": 6, "batch_size": 12}, "batch_size", "[1, n=6]"),
    ({"n": True}, "n", "positive integer"),
    ({"L": True}, "L", "positive integer"),
    ({"d": False}, "d", "positive integer"),
    ({"m": True}, "m", "positive integer"),
    ({"m1": True}, "m1", "positive integer"),
    ({"steps": True}, "steps", "positive integer"),
    ({"batch_size": True}, "batch_size", "positive integer"),
    ({"sgd_seeds": True}, "sgd_seeds", "positive integer"),
    ({"seed": True}, "seed", "an integer in [0, 2147483647]"),
    ({"n": 60.0}, "n", "positive integer"),
    ({"lr": True}, "lr", "finite number"),
    ({"lr": 1e5}, "lr", "in (0, 10000]"),
    ({"seed": -1}, "seed", "an integer in [0, 2147483647]"),
    ({"seed": 2**31}, "seed", "an integer in [0, 2147483647]"),
    ({"atol": 0.0}, "atol", "in (0, 1]"),
    ({"sgd_seeds": 0}, "sgd_seeds", "a positive integer <= 1024"),
    ({"max_steps": 0}, "max_steps", "a positive integer <= 10000000"),
    ({"steps": 10**8 + 1}, "steps", "a positive integer <= 100000000"),
    ({"n_save_log": 1}, "n_save_log", "an integer in [2, 100000]"),
    ({"n_save_lin": 1}, "n_save_lin", "an integer in [2, 100000]"),
    ({"n_test": 1}, "n_test", "an integer in [2, 1000000]"),
    ({"train_a": 1}, "train_a", "true or false"),
    ({"solver": 5}, "solver", str(SOLVERS)),
]


@pytest.mark.parametrize(("changes", "field", "allowed"), INVALID, ids=[repr(c[0]) for c in INVALID])
def test_invalid_value_raises_config_error(changes, field, allowed):
    with pytest.raises(ConfigError) as exc:
        Config(**changes)
    msg = str(exc.value)
    assert f"invalid {field}=" in msg, msg
    assert f"{field} must be" in msg, msg
    assert allowed in msg, msg


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


def test_replace_validates():
    with pytest.raises(ConfigError, match="lr"):
        Config().replace(lr=-1.0)


VALID = [
    {},
    {"n": 6, "batch_size": 6},
    {"L": 3},
    {"d": 4},
    {"distinct_tokens": True, "d": _NEED_DISTINCT},
    {"n": 12, "L": 4, "d": n_random_slots(12, 4) + 3, "distinct_tokens": True, "batch_size": 12},
    {"init": "theory"},
    {"precision": "float32"},
    {"rtol": 0.999},
    {"batch_size": 60},
    {"init_scale": 1e-3},
    {"train_a": True},
    *({"solver": s} for s in SOLVERS),
]


@pytest.mark.parametrize("changes", VALID, ids=[repr(c) for c in VALID])
def test_valid_configs_accepted(changes):
    c = Config(**changes)
    for k, v in changes.items():
        assert getattr(c, k) == v


# ---------------------------------------------------------------------------------------------
# from_dict / from_file
# ---------------------------------------------------------------------------------------------


def test_from_dict_roundtrip():
    c = Config(n=12, L=4, d=20, batch_size=6, init="theory", lr=0.05)
    assert Config.from_dict(c.to_dict()) == c


def test_from_dict_partial_uses_defaults():
    c = Config.from_dict({"m": 16})
    assert c == Config(m=16)


@pytest.mark.parametrize("bad_key", ["learning_rate", "N", "width"])
def test_from_dict_unknown_key_lists_known_fields(bad_key):
    with pytest.raises(ConfigError) as exc:
        Config.from_dict({bad_key: 1})
    msg = str(exc.value)
    assert bad_key in msg
    for known in ("n", "L", "d", "m", "m1", "lr", "steps", "batch_size", "solver", "precision"):
        assert repr(known) in msg, known


def test_from_dict_validates_values():
    with pytest.raises(ConfigError, match="L"):
        Config.from_dict({"L": 1})


def _to_toml(d: dict) -> str:
    lines = []
    for k, v in d.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, str):
            lines.append(f'{k} = "{v}"')
        elif isinstance(v, float):
            lines.append(f"{k} = {v!r}")
        else:
            lines.append(f"{k} = {v}")
    return "\n".join(lines) + "\n"


CONFIGS_FOR_FILES = [
    Config(),
    Config(
        n=12,
        L=4,
        d=50,
        m=8,
        m1=16,
        batch_size=4,
        init="theory",
        init_scale=0.5,
        train_a=True,
        lr=0.05,
        steps=100,
        solver="dopri5",
        rtol=1e-4,
        atol=1e-7,
        precision="float32",
        seed=3,
    ),
    Config(n=12, L=4, d=n_random_slots(12, 4) + 3, distinct_tokens=True, batch_size=12),
]


@pytest.mark.parametrize("cfg", CONFIGS_FOR_FILES)
@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_from_file_roundtrip(tmp_path, cfg, suffix):
    path = tmp_path / f"cfg{suffix}"
    data = cfg.to_dict()
    path.write_text(json.dumps(data) if suffix == ".json" else _to_toml(data))
    loaded = Config.from_file(path)
    assert loaded == cfg
    assert loaded.to_dict() == data
    # also accepts a str path
    assert Config.from_file(str(path)) == cfg


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_from_file_partial(tmp_path, suffix):
    path = tmp_path / f"cfg{suffix}"
    path.write_text(json.dumps({"lr": 0.1}) if suffix == ".json" else "lr = 0.1\n")
    assert Config.from_file(path) == Config(lr=0.1)


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_from_file_missing(tmp_path, suffix):
    path = tmp_path / f"nope{suffix}"
    with pytest.raises(ConfigError, match="does not exist"):
        Config.from_file(path)


def test_from_file_directory_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Config.from_file(tmp_path)


@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        (".json", "{not json"),
        (".json", '{"n": 60,}'),
        (".json", "n = 60\n"),
        (".toml", "n = = 60\n"),
        (".toml", "[unclosed\n"),
        (".toml", '{"n": 60}'),
    ],
)
def test_from_file_malformed(tmp_path, suffix, text):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match="not valid"):
        Config.from_file(path)


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_from_file_unknown_key(tmp_path, suffix):
    path = tmp_path / f"cfg{suffix}"
    path.write_text(json.dumps({"lrate": 0.1}) if suffix == ".json" else "lrate = 0.1\n")
    with pytest.raises(ConfigError, match="unknown config field"):
        Config.from_file(path)


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_from_file_invalid_value(tmp_path, suffix):
    path = tmp_path / f"cfg{suffix}"
    path.write_text(json.dumps({"L": 2}) if suffix == ".json" else "L = 2\n")
    with pytest.raises(ConfigError, match="L"):
        Config.from_file(path)


@pytest.mark.parametrize("text", ["[]", "null", "42"])
def test_from_file_json_top_level_not_object(tmp_path, text):
    path = tmp_path / "cfg.json"
    path.write_text(text)
    with pytest.raises(ConfigError):
        Config.from_file(path)


def test_bad_bool_is_named_before_vocabulary_check():
    with pytest.raises(ConfigError, match="invalid distinct_tokens="):
        Config(distinct_tokens="yes")


# ---------------------------------------------------------------------------------------------
# Config = the system's fields + RunConfig, under one flat namespace
# ---------------------------------------------------------------------------------------------


def test_config_routes_fields_to_the_system_and_the_run_settings():
    c = Config(n=12, L=4, batch_size=6, lr=0.05, seed=3)
    assert c.system == "cooccurrence" == Config("cooccurrence").system
    assert isinstance(c.task, CooccurrenceConfig) and isinstance(c.run, RunConfig)
    assert (c.n, c.L, c.task.n) == (12, 4, 12)
    assert (c.lr, c.seed, c.run.lr) == (0.05, 3, 0.05)
    assert c.t_final == pytest.approx(0.05 * 30000) == c.run.t_final
    with pytest.raises(AttributeError, match="no field 'nope'"):
        c.nope  # noqa: B018
    assert c.field_names() == tuple(CooccurrenceConfig.__dataclass_fields__) + tuple(RunConfig.__dataclass_fields__)


def test_to_dict_is_flat_with_the_system_first():
    d = Config(m=16).to_dict()
    assert next(iter(d)) == "system" and d["system"] == "cooccurrence"
    assert set(d) == {"system", *Config().field_names()} and d["m"] == 16
    assert all(not isinstance(v, dict) for v in d.values())


def test_unknown_system_names_the_registered_ones():
    with pytest.raises(ConfigError, match=r"invalid system='nope'.*cooccurrence"):
        Config("nope")
    with pytest.raises(ConfigError, match="invalid system="):
        Config.from_dict({"system": 3})
    with pytest.raises(ConfigError, match="invalid system="):
        Config.from_dict({"system": "nope", "n": 12})


def test_replace_keeps_the_system():
    c = Config(n=12, batch_size=6)
    assert c.replace(system="cooccurrence", lr=0.5) == Config(n=12, batch_size=6, lr=0.5)
    with pytest.raises(ConfigError, match="keeps the system"):
        c.replace(system="other")


def test_ints_widen_to_floats_and_equal_configs_hash_alike():
    c = Config(lr=1, init_scale=2)
    assert type(c.lr) is float and type(c.init_scale) is float and c == Config(lr=1.0, init_scale=2.0)
    assert hash(c) == hash(Config(lr=1.0, init_scale=2.0)) and len({c, Config(lr=1.0, init_scale=2.0)}) == 1
    assert c != Config() and c != c.to_dict()


def test_config_pickles_and_reprs():
    import pickle

    c = Config(n=12, batch_size=4, init="theory", lr=0.05)
    assert pickle.loads(pickle.dumps(c)) == c
    assert repr(c).startswith("Config(system='cooccurrence', n=12,")


def test_parts_validate_on_their_own():
    with pytest.raises(ConfigError, match="invalid steps="):
        RunConfig(steps=0)
    with pytest.raises(ConfigError, match="invalid L="):
        CooccurrenceConfig(L=2)
    assert RunConfig(lr=0.5, steps=10).t_final == 5.0


def test_from_file_system_argument_overrides_the_file(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text('system = "nope"\nlr = 0.1\n')
    with pytest.raises(ConfigError, match="invalid system='nope'"):
        Config.from_file(path)
    assert Config.from_file(path, system="cooccurrence") == Config(lr=0.1)
