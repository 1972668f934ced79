"""Checks run on the host before anything compiles: save times, tolerances, initial state, an
abstract evaluation of the vector field, diffusion, observer and event conditions, and the memory a
run would hold (`check_memory`, with the systems' estimates built from `MemoryParts` and `run_bytes`)."""

from __future__ import annotations

import dataclasses
import math
import os
import typing
import warnings
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

from ._events import Event


def check_save_times(ts: Any, name: str = "ts") -> Array:
    """`ts` as a floating JAX array, after checking it is 1-D, of length >= 2, finite and strictly
    increasing. Integer times are refused (they would make the tolerances integers too)."""
    arr = np.asarray(ts)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must be floating-point times (got dtype {arr.dtype}); e.g. steps * lr")
    if arr.ndim != 1 or arr.shape[0] < 2:
        raise ValueError(f"{name} must be a 1-D array of at least 2 times, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    if not np.all(np.diff(arr) > 0):
        raise ValueError(f"{name} must be strictly increasing")
    return jnp.asarray(ts)


def check_precision(dtype: Any, rtol: float) -> None:
    """Warn when a float32 solve is asked for a relative tolerance below what float32 resolves."""
    if jnp.dtype(dtype) == jnp.float32 and rtol < 1e-6:
        warnings.warn(
            f"rtol={rtol:g} is below float32's resolution (~1e-7 relative): the solve runs in "
            "float32 (enable float64 with jax.config.update('jax_enable_x64', True) and float64 "
            "arrays) or loosen rtol",
            stacklevel=3,
        )


def check_tolerances(*, rtol: float, atol: float, dt0: float | None, max_steps: int) -> None:
    """Refuse non-finite or non-positive tolerances and step sizes, and a non-positive step budget."""
    for name, v in (("rtol", rtol), ("atol", atol)) + ((("dt0", dt0),) if dt0 is not None else ()):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"invalid {name}={v!r}: {name} must be a finite number > 0")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"invalid max_steps={max_steps!r}: max_steps must be a positive integer")


def _shapes(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


def check_finite(tree: PyTree, what: str) -> None:
    """Raise `ValueError` if any leaf of `tree` holds a non-finite value (names the leaf's path)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if eqx.is_inexact_array(leaf) and not np.isfinite(np.asarray(leaf)).all():  # host-side: no program
            raise ValueError(f"{what} has non-finite values at {jax.tree_util.keystr(path)}")


def check_dynamics(
    dynamics: Any, problem: Any, observer: Any, y0: PyTree, t0: Array, events: Sequence[Event] = ()
) -> None:
    """Abstractly evaluate the vector field (and diffusion, observer, event conditions) once, before
    anything compiles; check that the initial state is finite.

    Raises `TypeError` naming what is wrong: a vector field whose output PyTree differs from the
    state's (structure, shapes or dtypes), a diffusion whose product with the noise does, an observer
    that does not return a PyTree of arrays, or an event condition that is not a real scalar.

    The abstract evaluation traces the model once per call: a check that passed is remembered by the
    abstract signature of its arguments (PyTree structure, array shapes and dtypes, and every
    non-array leaf, held so that its identity cannot be reused), as `jax.jit` keys its traces, and
    is not traced again for the same signature.
    """
    check_finite(y0, "the initial state")
    key = _abstract_key((dynamics, problem, observer, y0, t0, tuple(events)))
    if key is not None and key in _PASSED:
        return
    _check_abstract(dynamics, problem, observer, y0, t0, events)
    if key is not None:
        if len(_PASSED) >= _PASSED_MAX:
            _PASSED.pop(next(iter(_PASSED)))
        _PASSED[key] = None


_PASSED: dict[Any, None] = {}  # abstract signatures whose check passed, oldest first
_PASSED_MAX = 256


def _abstract_key(tree: PyTree) -> Any:
    """A hashable key of `tree`'s abstract signature (structure, array shapes and dtypes, non-array
    leaves themselves), or None when a non-array leaf is unhashable."""
    leaves, treedef = jax.tree.flatten(tree)
    key = (treedef, tuple((x.shape, x.dtype) if eqx.is_array(x) else (type(x), x) for x in leaves))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _check_abstract(dynamics: Any, problem: Any, observer: Any, y0: PyTree, t0: Array, events: Sequence[Event]) -> None:
    """The abstract part of `check_dynamics` (its arguments; raises as it does)."""
    name = type(dynamics).__name__
    try:
        out = eqx.filter_eval_shape(dynamics.vector_field, t0, y0, problem)
    except Exception as e:  # surface the user's error with the dynamics' name
        raise TypeError(f"{name}.vector_field failed on the initial state: {e}") from e
    if jax.tree.structure(out) != jax.tree.structure(y0) or _shapes(out) != _shapes(y0):
        raise TypeError(
            f"{name}.vector_field must return a PyTree with the structure, shapes and dtypes of "
            f"the state {_shapes(y0)}; got {_shapes(out)}"
        )
    shape = dynamics.noise_shape(problem)
    if dynamics.diffusion(t0, y0, problem) is not None:
        dtype = jax.tree.leaves(y0)[0].dtype
        prod = eqx.filter_eval_shape(lambda y: dynamics.diffusion(t0, y, problem).mv(jnp.zeros(shape, dtype)), y0)
        if jax.tree.structure(prod) != jax.tree.structure(y0) or _shapes(prod) != _shapes(y0):
            raise TypeError(f"{name}.diffusion(...).mv(noise of shape {shape}) must return the state's PyTree")
    params = dynamics.params(y0)
    if observer is not None:
        try:
            obs = eqx.filter_eval_shape(observer, t0, params, problem)
        except Exception as e:
            raise TypeError(
                f"the observer failed on the initial state: {e}. Note: it receives the trainable "
                "part of the model (frozen leaves are None); problem.model(params) is the full "
                "model"
            ) from e
        bad = [x for x in jax.tree.leaves(obs) if not isinstance(x, jax.ShapeDtypeStruct)]
        if bad:
            raise TypeError(f"the observer must return a PyTree of arrays; got leaves {bad[:3]}")
    for e in events:
        try:
            v = eqx.filter_eval_shape(e.condition, t0, params, problem)
        except Exception as err:
            raise TypeError(
                f"event {e.name!r}: its condition failed on the initial state: {err}. Note: it "
                "receives the trainable part of the model; problem.model(params) is the full "
                "model"
            ) from err
        if not isinstance(v, jax.ShapeDtypeStruct) or v.shape != () or not jnp.issubdtype(v.dtype, jnp.floating):
            raise TypeError(f"event {e.name!r}: the condition must return a real scalar, got {v}")


MAX_RECORDED = 20_000_000  # save points x runs (flow, GD, SGD seeds) recorded per observable
MEMORY_FRACTION = 0.5  # of the machine's memory, for what a system estimates it allocates


def _machine_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def check_memory(config: Any) -> None:
    """Refuse, before anything is allocated, a config whose recorded arrays or (when its system
    gives `memory_bytes(config)`) data and model would not fit: `ConfigError` naming the sizes.

    The engine's part is the save grid: (save points) x (2 + sgd_seeds) runs recorded per
    observable, at most `MAX_RECORDED` (20 million values: 160 MB per float64 observable).
    """
    from ._fields import ConfigError
    from ._registry import get_system

    saves = min(config.steps + 1, config.n_save_log + config.n_save_lin + 2)
    recorded = saves * (2 + config.sgd_seeds)
    if recorded > MAX_RECORDED:
        raise ConfigError(
            f"invalid n_save_log={config.n_save_log}, n_save_lin={config.n_save_lin}, sgd_seeds={config.sgd_seeds}: "
            f"{saves} save points x {2 + config.sgd_seeds} runs = {recorded:.3g} values per observable; at most "
            f"{MAX_RECORDED:.0e} fit in memory"
        )
    estimate = getattr(get_system(config.system), "memory_bytes", None)
    if callable(estimate):
        need, limit = int(typing.cast(float, estimate(config))), int(MEMORY_FRACTION * _machine_bytes())
        if need > limit:
            raise ConfigError(
                f"invalid sizes for system {config.system!r}: about {need / 2**30:.3g} GiB at once (data, model, "
                f"activations), more than half this machine's memory ({limit / 2**30:.3g} GiB); choose smaller sizes"
            )


# ------------------------------------------------------------------ memory estimates of the systems

LANCZOS_ITERS = 20  # Sharpness's Lanczos steps (an (iters + 1, P) basis per run)
SOLVER_COPIES = 12  # parameter-sized arrays of a flow solve (stages, error estimate, state, checkpoints)
GD_COPIES = 3  # full-batch GD: parameters, gradient, update
SGD_COPIES = 6  # per minibatch seed: parameters, gradient, optimizer state (Adam: 2), update, key state


def transformer_params(*, tokens_in: int, d: int, mlp: int, layers: int, out: int, extra: int = 0) -> float:
    """Parameter count of a `flowsim.nn` transformer: `tokens_in` learned embedding rows (token and
    positional) of width `d`, `layers` blocks (attention W_Q, W_K, W_V, W_O: 4 d^2 however the heads
    split d; two LayerNorms; an MLP of width `mlp`, none when 0), a final LayerNorm and a linear
    read-out to `out` values, plus `extra` (a system's own parts). A float, as the estimates use it."""
    block = 4 * d * d + 4 * d + (2 * d * mlp + mlp + d if mlp else 0)
    return float(tokens_in * d + layers * block + 2 * d + (d + 1) * out + extra)


def transformer_values(
    *, length: int, d: int, heads: int, mlp: int, layers: int, out: int, forward: bool = False
) -> float:
    """Activation values one sequence of `length` tokens holds in such a transformer.

    For a gradient (forward and backward; the default) every block keeps about 20 (length x d)
    arrays (LayerNorms, Q, K, V, attention output, residuals and their cotangents), 4 (heads x
    length^2) score / softmax arrays and 4 (length x mlp) MLP arrays, plus the embedding and the
    read-out. A forward pass alone (`forward`) holds about half of one block's share at a time (XLA
    reuses the buffers of the blocks before), plus the embedding and the read-out. Checked against
    XLA's compiled memory in tests/test_bad_input.py.
    """
    block = 20 * length * d + 4 * heads * length * length + 4 * length * mlp
    if forward:
        return float(block / 2 + 2 * length * (d + out))
    return float(layers * block + 4 * length * (d + out))


@typing.final
@dataclasses.dataclass(frozen=True)
class MemoryParts:
    """What a system's run holds, for `run_bytes` (counts of floating values unless said otherwise).

    **Fields:** `params` the trainable parameter count P; `sample` the activation values one training
    sample keeps for a gradient (`transformer_values`); `observer` the values one observer call holds
    at once (forward passes on its evaluation sets, metric work); `data_bytes` the bytes of the data
    tables on the host and the device (held once); `after` the values of the work done once per run
    after it (verdict studies); `recorded` the values of the array observables per save point.
    """

    params: int | float
    sample: int | float
    observer: int | float
    data_bytes: int | float
    after: int | float = 0.0
    recorded: int | float = 0.0


def run_bytes(config: Any, parts: MemoryParts) -> float:
    """A generous estimate of the bytes a run of `config` holds at its peak, from its system's
    `parts`: the data, then the larger of (the flow and GD side by side: solver stages, GD state,
    full-batch gradient activations and one observer call each) and (the SGD seeds vmapped: each
    seed's state, minibatch activations and observer call), where every observer call also does the
    Hessian work when `sharpness` is on (a Lanczos basis and a full-batch Hessian-vector product per
    run); plus the recorded array observables and the work after the runs."""
    from ._registry import get_system

    item = 8 if config.precision == "float64" else 4
    P, seeds = parts.params, config.sgd_seeds
    full = parts.sample * get_system(config.system).train_size(config.task)
    hessian = (max(LANCZOS_ITERS, config.sharpness) + 1) * P + 2 * full if config.sharpness else 0.0
    call = parts.observer + hessian
    flow_gd = (SOLVER_COPIES + GD_COPIES) * P + 2 * (full + call)
    minibatch = seeds * (SGD_COPIES * P + parts.sample * config.batch_size + call)
    saves = min(config.steps + 1, config.n_save_log + config.n_save_lin + 2)
    recorded = saves * (2 + seeds) * parts.recorded
    return parts.data_bytes + item * (max(flow_gd, minibatch) + recorded + parts.after)
