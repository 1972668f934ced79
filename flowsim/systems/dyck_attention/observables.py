"""Tracked quantities of the dyck-attention system, recorded at every save point of any run.

Scalars: `loss` (training cross-entropy), `acc_train`, `acc_test`, `acc_long` (closing-bracket
accuracy by the ratio rule on the training, held-out and length-generalisation rows),
`acc_test_argmax` (held-out, argmax rule), `stack` (stack-likeness on the probe), `balance` (the
released code's balance violation). Array: `probe_attn` (layers, P, P), every layer's attention on
the probe. Definitions in `metrics`.
"""

from __future__ import annotations

from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

from ..._problem import Problem
from .data import DyckData, Rows
from .metrics import balance_violation, closing_accuracy, probe_patterns, stack_likeness
from .model import DyckModel


def rows_accuracy(model: DyckModel, rows: Rows, argmax: bool = False) -> Array:
    """Closing-bracket accuracy of `model` on `rows`."""
    logits = jax.vmap(model)(rows.tokens)
    return closing_accuracy(logits, rows.targets, rows.close, model.k, argmax)


def _pad(rows: Rows, width: int) -> Rows:
    """`rows` padded on the right to `width` positions (PAD inputs, no targets, no closes)."""
    extra = width - rows.tokens.shape[1]
    if extra == 0:
        return rows
    pad = ((0, 0), (0, extra))
    return Rows(jnp.pad(rows.tokens, pad), jnp.pad(rows.targets, pad, constant_values=-1), jnp.pad(rows.close, pad))


def eval_rows(data: DyckData) -> tuple[Rows, int]:
    """The held-out and length-generalisation rows in one array (held-out first, padded to the long
    rows' width: the model is causal, so padding on the right changes nothing before it), and the
    number of held-out rows. One forward pass then serves both (one trace in the compiled run)."""
    width = max(data.test.tokens.shape[1], data.long.tokens.shape[1])
    test, long = _pad(data.test, width), _pad(data.long, width)
    cat = [jnp.concatenate([getattr(test, f), getattr(long, f)]) for f in ("tokens", "targets", "close")]
    return Rows(*cat), int(data.test.tokens.shape[0])


@final
class DyckObserver(eqx.Module):
    """Computes the tracked quantities (module docstring) from the run's `data`: one forward pass on
    the training rows, one on the held-out and long rows together (`eval_rows`), one on the probe."""

    data: DyckData
    evals: Rows
    n_test: int = eqx.field(static=True)
    probe_np: tuple[int, ...] = eqx.field(static=True)

    @classmethod
    def build(cls, data: DyckData) -> DyckObserver:
        evals, n_test = eval_rows(data)
        return cls(data, evals, n_test, tuple(int(t) for t in np.asarray(data.probe)))

    def __call__(self, t: float | Array, params: PyTree, problem: Problem) -> dict[str, Array]:
        model: DyckModel = problem.model(params)
        d, e, n = self.data, self.evals, self.n_test
        logits = jax.vmap(model)(d.train.tokens)
        pats = probe_patterns(model, d.probe)
        ev = jax.vmap(model)(e.tokens)
        test, long = (slice(None, n), slice(n, None))
        return {
            "loss": jnp.mean(jax.vmap(problem.loss_fn)(logits, d.train.targets)),
            "acc_train": closing_accuracy(logits, d.train.targets, d.train.close, model.k),
            "acc_test": closing_accuracy(ev[test], e.targets[test], e.close[test], model.k),
            "acc_test_argmax": closing_accuracy(ev[test], e.targets[test], e.close[test], model.k, argmax=True),
            "acc_long": closing_accuracy(ev[long], e.targets[long], e.close[long], model.k),
            "stack": stack_likeness(pats, np.asarray(self.probe_np)),
            "balance": balance_violation(model, d.probe, model.depth),
            "probe_attn": pats,
        }
