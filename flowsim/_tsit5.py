"""Tsitouras' 5(4) Runge–Kutta method with its stages unrolled over the state PyTree.

`diffrax.Tsit5` runs its 7 stages in an `equinox.internal.while_loop` that writes each stage into a
stacked `(7, ...)` buffer and reads the stage combinations back by a dynamic index and a `tensordot`
against a zero-padded row of the tableau: general (implicit and multi-term tableaus, reverse-mode
checkpointing), but on a flow whose state is a PyTree of parameter matrices the buffer updates and
zero-padded contractions cost about as much again as the vector field. [`UnrolledTsit5`][] computes the
same method as straight-line code: each stage is `y0 + Σ_j a_ij k_j` over the nonzero coefficients,
leaf by leaf (`jax.tree.map`), and XLA fuses the combinations. It takes the same steps as
`diffrax.Tsit5` (same tableau, same FSAL reuse of f(t1, y1), same embedded error estimate) and returns
dense information in diffrax's layout, so diffrax's own Tsit5 interpolation serves save times and
event root-finding; states agree to round-off (the order of the sums differs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, final

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree

Time = float | Array  # a scalar time, as diffrax's RealScalarLike

__all__ = ["UnrolledTsit5"]

_TABLEAU: diffrax.ButcherTableau = diffrax.Tsit5.tableau
# The step below relies on both: y1 is the last stage's point (SSAL), f(t1, y1) its vector field (FSAL).
assert _TABLEAU.ssal and _TABLEAU.fsal and not _TABLEAU.implicit


def _combine(
    base: PyTree[Array] | None, coeffs: Sequence[float] | np.ndarray, ks: Sequence[PyTree[Array]]
) -> PyTree[Array]:
    """`base + Σ_j coeffs[j] · ks[j]` leaf by leaf (without `base`, the sum alone), each coefficient
    cast to the leaf's dtype; terms with a zero coefficient are left out.

    **Arguments:** `base`: a PyTree like `ks[0]`, or None; `coeffs`: Python or NumPy scalars, one per
    tree in `ks`. **Returns:** a PyTree like `ks[0]`.
    """
    used = [(c, k) for c, k in zip(coeffs, ks) if c != 0]
    coeffs_used = [c for c, _ in used]

    def leaf(b: Array | None, *xs: Array) -> Array:
        total = b
        for c, x in zip(coeffs_used, xs):
            term = jnp.asarray(c, x.dtype) * x
            total = term if total is None else total + term
        assert total is not None
        return total

    if base is None:
        return jax.tree.map(lambda *xs: leaf(None, *xs), *(k for _, k in used))
    return jax.tree.map(leaf, base, *(k for _, k in used))


def _static_bool(x: object) -> bool | None:
    """`x` as a Python bool if it is known at trace time (diffrax passes `made_jump=False` when no
    jumps can occur), else None."""
    if isinstance(x, bool | np.bool_) or (isinstance(x, np.ndarray) and x.shape == ()):
        return bool(x)
    return None


@eqx.filter_jit
def _vf(terms: diffrax.AbstractTerm, t: Time, y: PyTree[Array], args: PyTree) -> PyTree[Array]:
    """`terms.vf(t, y, args)` as one traced call: the step's six stages call it with the same
    abstract arguments, so the model and its gradient are traced and lowered once, not six times."""
    return terms.vf(t, y, args)


@final
class UnrolledTsit5(diffrax.AbstractAdaptiveSolver):
    """Tsitouras' 5(4) method (the tableau of `diffrax.Tsit5`), stages unrolled over the state PyTree.

    5th order explicit Runge–Kutta with an embedded 4th order error estimate for adaptive step
    sizing, 7 stages with FSAL (6 new vector-field evaluations per step; the solver state carries
    f(t1, y1) to the next step, and `init` evaluates f(t0, y0)), 5th order dense output through
    diffrax's Tsit5 interpolation. Use it wherever `diffrax.Tsit5()` is used; it takes the same
    accepted and rejected steps and agrees with it to round-off. It always evaluates the vector
    field itself (`diffrax.Tsit5` switches to `vf_prod` and drops FSAL for terms whose vector field
    is expensive, such as adjoint SDE terms; use it there). Forward- and reverse-mode differentiation
    work (reverse mode keeps every stage, without diffrax's checkpointing of the stage loop).

    The tableau is exposed as the class attribute `tableau` (the very `diffrax.Tsit5.tableau`), so
    code that counts stages from a solver's tableau (`len(tableau.c) + 1`, `tableau.fsal`) works on
    it unchanged.
    """

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar[Callable[..., diffrax.AbstractLocalInterpolation]] = diffrax.Tsit5.interpolation_cls
    tableau: ClassVar[diffrax.ButcherTableau] = _TABLEAU

    def order(self, terms: PyTree[diffrax.AbstractTerm]) -> int:
        return 5

    def error_order(self, terms: PyTree[diffrax.AbstractTerm]) -> int:
        return 5

    def func(self, terms: diffrax.AbstractTerm, t0: Time, y0: PyTree[Array], args: PyTree) -> PyTree[Array]:
        return terms.vf(t0, y0, args)

    def init(self, terms: diffrax.AbstractTerm, t0: Time, t1: Time, y0: PyTree[Array], args: PyTree) -> PyTree[Array]:
        """The first solver state: the vector field f(t0, y0) (first same as last).

        **Arguments:** as `diffrax.diffeqsolve`. **Returns:** f(t0, y0), a PyTree like `y0`.
        """
        del t1
        return terms.vf(t0, y0, args)

    def _first_stage(self, terms, t0, y0, args, f0: PyTree[Array], made_jump) -> PyTree[Array]:
        """f(t0, y0): the carried FSAL value, re-evaluated after a jump in the vector field (under
        vmap, only in the batch elements that jumped, but then the evaluation is paid by all)."""
        static = _static_bool(made_jump)
        if static is False:
            return f0
        if static is True:
            return terms.vf(t0, y0, args)

        def fresh() -> PyTree[Array]:
            f = terms.vf(t0, y0, args)
            return jax.tree.map(lambda a, b: jnp.where(made_jump, a, b), f, f0)

        return jax.lax.cond(eqxi.unvmap_any(made_jump), fresh, lambda: f0)

    def step(
        self,
        terms: diffrax.AbstractTerm,
        t0: Time,
        t1: Time,
        y0: PyTree[Array],
        args: PyTree,
        solver_state: PyTree[Array],
        made_jump: ArrayLike,
    ) -> tuple[PyTree[Array], PyTree[Array], dict[str, PyTree[Array]], PyTree[Array], diffrax.RESULTS]:
        """One Tsit5 step from (t0, y0) to t1.

        **Arguments:** as `diffrax.AbstractSolver.step`: `solver_state` is f(t0, y0) from `init` or
        the previous accepted step; `made_jump` whether the vector field jumped at t0.

        **Returns:** (y1, embedded error estimate, dense info `dict(y0=, y1=, k=)` with the 7 stage
        increments `k` stacked on a leading axis as `diffrax.Tsit5` gives them, the new solver state
        f(t1, y1), `RESULTS.successful`).
        """
        f0 = self._first_stage(terms, t0, y0, args, solver_state, made_jump)
        tdtype = jnp.result_type(t0, t1)
        dt = t1 - t0
        control = terms.contr(t0, t1)
        ks = [terms.prod(f0, control)]
        y_stage, f_stage = y0, f0
        for a_row, c in zip(_TABLEAU.a_lower, _TABLEAU.c):
            y_stage = _combine(y0, a_row, ks)
            # No floating point error at the end point, as diffrax.
            t_stage = t1 if c == 1 else t0 + jnp.asarray(c, tdtype) * dt
            f_stage = _vf(terms, t_stage, y_stage, args)
            ks.append(terms.prod(f_stage, control))
        # Tsit5 is SSAL: y1 is the last stage's point, and f(t1, y1) its vector field (FSAL).
        y1, f1 = y_stage, f_stage
        y_error = _combine(None, _TABLEAU.b_error, ks)
        k = jax.tree.map(lambda *xs: jnp.stack(xs), *ks)
        return y1, y_error, dict(y0=y0, y1=y1, k=k), f1, diffrax.RESULTS.successful
