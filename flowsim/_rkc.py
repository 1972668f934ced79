"""A stabilised explicit solver for stiff flows: second-order Runge–Kutta–Chebyshev (RKC) in diffrax.

The Jacobian of a gradient flow dθ/dt = -∇L(θ) is -H, symmetric with a real spectrum. Explicit
Runge–Kutta methods (Tsit5) are held to h·λmax ≲ 3.5 on such flows whatever the tolerance; RKC's
real stability interval grows like 0.65·s² with its number of stages s, so it takes steps sized by
accuracy alone at s ≈ √(1.54 h ρ) vector-field evaluations per step, where ρ is the Jacobian's
spectral radius. Implicit solvers (Kvaerno5) build and factor a dense P×P Jacobian instead.

The method is that of Sommeijer, Shampine & Verwer, "RKC: an explicit solver for parabolic PDEs",
J. Comput. Appl. Math. 88 (1997) 315–326, with the coefficients, stage recursion, error estimate and
stage count of their Fortran code `rkc.f`. ρ is estimated by power iteration on Jacobian-vector
products (for a gradient flow, Hessian-vector products; no P×P matrix), warm-started from the previous
step's dominant direction: by default rkc.f's difference quotients (f(y + δv) - f(y)) / δ, one
vector-field evaluation each, or `jax.jvp` (`RKC(jvp="autodiff")`), which costs more than one
evaluation (forward-over-reverse: 8–11 gradients on the co-occurrence transformer, see
benchmarks/results_stiff.md).

Use it as any diffrax solver, with an adaptive controller:

    >>> sol = diffrax.diffeqsolve(diffrax.ODETerm(f), RKC(), t0, t1, dt0, y0,
    ...                           stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-9),
    ...                           saveat=diffrax.SaveAt(t1=True, solver_state=True))
    >>> sol.solver_state.num_evals, sol.solver_state.num_jvps   # work of the accepted steps
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ClassVar, Literal, NamedTuple, final

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

__all__ = ["RKC", "RKCState"]

_EPS = 2.0 / 13.0  # damping of the Chebyshev polynomial (rkc.f)


@final
class RKCState(NamedTuple):
    """Solver state of [`flowsim._rkc.RKC`][], carried between accepted steps (diffrax reverts it on
    a rejected step). `diffrax.SaveAt(solver_state=True)` returns the final one as `sol.solver_state`.

    **Fields:**

    - `f0`: the vector field at the current point (first same as last).
    - `direction`: unit PyTree, the power iteration's current dominant direction of the Jacobian.
    - `rho`: the last spectral-radius estimate, before the safety factor (0 before the first step).
    - `age`: accepted steps since `rho` was estimated.
    - `stages`: stages s of the last accepted step.
    - `num_evals`: vector-field evaluations of `init` and of every accepted step (stages, the
        vector field at the new point, re-evaluations after a jump). Rejected steps are not counted:
        diffrax discards their state; each costs as much as an accepted one with the same h.
    - `num_jvps`: Jacobian-vector products of the power iterations of the accepted steps (same caveat);
        with `jvp="difference"` each is one more vector-field evaluation.
    """

    f0: PyTree[Array]
    direction: PyTree[Array]
    rho: Array
    age: Array
    stages: Array
    num_evals: Array
    num_jvps: Array

    @property
    def total_evals(self) -> Array:
        """`num_evals + num_jvps`: the work of the accepted steps, one unit per evaluation or JVP (with
        `jvp="difference"`, exactly the accepted steps' vector-field evaluations)."""
        return self.num_evals + self.num_jvps


def _dtype(y: PyTree[Array]) -> jnp.dtype:
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(*jax.tree.leaves(y))


def _combine(coeffs: list[Array], trees: list[PyTree[Array]]) -> PyTree[Array]:
    """Σ_k coeffs[k] · trees[k], each scalar cast to the leaf's dtype."""

    def leaf(*xs):
        return sum((c.astype(x.dtype) * x for c, x in zip(coeffs, xs)), start=jnp.zeros_like(xs[0]))

    return jax.tree.map(leaf, *trees)


def _norm(tree: PyTree[Array], dtype: jnp.dtype) -> Array:
    squares = [jnp.sum(jnp.square(x)).astype(dtype) for x in jax.tree.leaves(tree)]
    return jnp.sqrt(sum(squares, start=jnp.zeros((), dtype)))


def _dot(a: PyTree[Array], b: PyTree[Array], dtype: jnp.dtype) -> Array:
    products = [jnp.vdot(x, y).astype(dtype) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    return sum(products, start=jnp.zeros((), dtype))


def _start_direction(y0: PyTree[Array]) -> PyTree[Array]:
    """A fixed pseudo-random unit PyTree (almost surely not orthogonal to the dominant direction)."""
    leaves, treedef = jax.tree.flatten(y0)
    keys = jax.random.split(jax.random.PRNGKey(0), max(len(leaves), 1))
    v = [jax.random.normal(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)]
    v = jax.tree.unflatten(treedef, v)
    return _combine([1 / _norm(v, _dtype(y0))], [v])


@functools.cache
def _w1_table(s_max: int) -> np.ndarray:
    """w1(s) = T_s'(w0) / T_s''(w0) at w0 = 1 + ε/s², for s = 0..s_max (0 below 2), in float64 by the
    three-term recurrences of T_j, T_j', T_j'' (vectorised over s; entry s stops at j = s)."""
    s = np.arange(s_max + 1, dtype=np.float64)
    w0 = 1 + _EPS / np.maximum(s, 1) ** 2
    z1, z0, d1, d0, dd1, dd0 = w0, np.ones_like(w0), np.ones_like(w0), 0 * w0, 0 * w0, 0 * w0
    for j in range(2, s_max + 1):
        go = j <= s
        z, d, dd = 2 * w0 * z1 - z0, 2 * w0 * d1 - d0 + 2 * z1, 2 * w0 * dd1 - dd0 + 4 * d1
        z1, z0 = np.where(go, z, z1), np.where(go, z1, z0)
        d1, d0 = np.where(go, d, d1), np.where(go, d1, d0)
        dd1, dd0 = np.where(go, dd, dd1), np.where(go, dd1, dd0)
    return np.where(s >= 2, d1 / np.where(s >= 2, dd1, 1), 0)


def _stage_count(h: Array, rho: Array, s_min: int, s_max: int) -> tuple[Array, Array]:
    """s = 1 + ⌊√(1 + 1.54 h ρ)⌋ as in rkc.f (so 0.65 s² ≥ h ρ), clipped to [s_min, s_max]; and
    whether h ρ needs more than s_max stages."""
    s = 1 + jnp.floor(jnp.sqrt(1 + 1.54 * h * rho))
    return jnp.clip(s, s_min, s_max).astype(jnp.int32), s > s_max


@final
class RKC(diffrax.AbstractSolver):
    """Second-order Runge–Kutta–Chebyshev method (Sommeijer, Shampine & Verwer 1997), for stiff ODEs
    whose Jacobian has its eigenvalues near the negative real axis (gradient flows, diffusion).

    Each step uses s = 1 + ⌊√(1 + 1.54 h ρ)⌋ stages (clipped to [`s_min`, `s_max`]), with ρ an upper
    estimate of the Jacobian's spectral radius, so the damped Chebyshev stability interval
    [-0.65 s², 0] covers h times the spectrum. A step costs s vector-field evaluations (the last one,
    at the new point, is reused by the next step) plus the power iteration's JVPs when ρ is refreshed.
    It has an embedded error estimate (rkc.f's, local error O(h³), so `error_order` is 3) for
    `diffrax.PIDController`, and cubic Hermite dense output (for `SaveAt(ts=...)` and events). The
    controller bounds the error per step of a second-order method, so the global error is a multiple
    of rtol that grows as rtol shrinks (about 2x to 200x rtol in the tests and the benchmark): ask
    for a tighter rtol than with Tsit5, whose stability-limited steps on stiff flows over-resolve.

    ODEs only (`diffrax.ODETerm`). Forward-mode differentiation works; reverse-mode through a solve
    does not, since s is dynamic (a `lax.while_loop` with a traced trip count).

    The work done is counted in the solver state: see [`flowsim._rkc.RKCState`][].

    **Arguments:**

    - `s_max`: most stages per step (default 200: h ρ up to ~2.6e4). A step whose h ρ needs more
        is rejected (its error estimate is set to infinity), so the controller shrinks h.
    - `s_min`: fewest stages per step (default 2, the fewest of a second-order RKC).
    - `power_iters`: most power iterations per ρ estimate (default 20).
    - `rho_tol`: the power iteration stops once two successive estimates agree to this relative
        tolerance (default 0.01, as rkc.f; the first is compared with the previous step's estimate)
        or once the direction turns by less than it (1 - |cos| ≤ `rho_tol`), so a warm start whose
        direction still holds costs one JVP.
    - `rho_safety`: factor applied to the power-iteration estimate, a lower bound for a symmetric
        Jacobian (default 1.2, as rkc.f).
    - `rho_every`: refresh ρ every this many accepted steps (default 1: every step; rkc.f uses 25).
    - `jvp`: how the power iteration gets J v: `"difference"` (default, rkc.f's difference quotient
        (f(y0 + δ v) - f(y0)) / δ with δ = √eps ‖y0‖, one vector-field evaluation, f(y0) being known)
        or `"autodiff"` (`jax.jvp` of the vector field; exact, but forward-mode through the vector
        field costs more than an evaluation).
    """

    s_max: int = eqx.field(static=True, default=200)
    s_min: int = 2
    power_iters: int = 20
    rho_tol: float = 0.01
    rho_safety: float = 1.2
    rho_every: int = eqx.field(static=True, default=1)
    jvp: Literal["difference", "autodiff"] = eqx.field(static=True, default="difference")

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar[Callable[..., diffrax.ThirdOrderHermitePolynomialInterpolation]] = (
        diffrax.ThirdOrderHermitePolynomialInterpolation.from_k
    )

    def __check_init__(self) -> None:
        if not 2 <= self.s_min <= self.s_max:
            raise ValueError(f"RKC needs 2 <= s_min <= s_max, got s_min={self.s_min}, s_max={self.s_max}")
        if self.power_iters < 1 or self.rho_every < 1:
            raise ValueError(f"RKC needs power_iters >= 1 and rho_every >= 1, got {self.power_iters}, {self.rho_every}")
        if self.jvp not in ("difference", "autodiff"):
            raise ValueError(f"RKC jvp must be 'difference' or 'autodiff', got {self.jvp!r}")
        if self.rho_safety < 1 or self.rho_tol <= 0:
            raise ValueError(f"RKC needs rho_safety >= 1 and rho_tol > 0, got {self.rho_safety}, {self.rho_tol}")

    def order(self, terms: PyTree[diffrax.AbstractTerm]) -> int:
        return 2

    def error_order(self, terms: PyTree[diffrax.AbstractTerm]) -> int:
        return 3

    def init(
        self, terms: diffrax.AbstractTerm, t0: Array | float, t1: Array | float, y0: PyTree[Array], args: PyTree
    ) -> RKCState:
        """Evaluates the vector field at (t0, y0) and sets ρ unknown (estimated on the first step).

        **Arguments:** as `diffrax.diffeqsolve`. **Returns:** the initial [`flowsim._rkc.RKCState`][].
        """
        del t1
        dtype = _dtype(y0)
        int32 = lambda n: jnp.asarray(n, jnp.int32)
        return RKCState(
            f0=terms.vf(t0, y0, args),
            direction=_start_direction(y0),
            rho=jnp.zeros((), dtype),
            age=int32(self.rho_every),
            stages=int32(0),
            num_evals=int32(1),
            num_jvps=int32(0),
        )

    def func(self, terms: diffrax.AbstractTerm, t0: Array | float, y0: PyTree[Array], args: PyTree) -> PyTree[Array]:
        return terms.vf(t0, y0, args)

    def _jvp(self, terms, t0, y0, args, f0) -> Callable[[PyTree[Array]], PyTree[Array]]:
        """v ↦ J v for a unit v, J the Jacobian of the vector field at (t0, y0): by `jax.jvp`, or by the
        difference quotient (f(y0 + δ v) - f0) / δ with δ = √eps · ‖y0‖ (rkc.f's choice; one evaluation)."""
        fn = lambda y: terms.vf(t0, y, args)
        if self.jvp == "autodiff":
            return lambda v: jax.jvp(fn, (y0,), (v,))[1]
        dtype = _dtype(y0)
        y_norm = _norm(y0, dtype)
        delta = jnp.sqrt(jnp.finfo(dtype).eps) * jnp.where(y_norm > 0, y_norm, 1)
        one = jnp.ones((), dtype)
        return lambda v: _combine([1 / delta, -1 / delta], [fn(_combine([one, delta], [y0, v])), f0])

    def _power_iteration(self, terms, t0, y0, args, f0, v, rho) -> tuple[PyTree[Array], Array, Array]:
        """Power iteration on v ↦ J v from the unit direction v, stopped when two successive estimates
        (the first compared with `rho`, the previous step's) agree to `rho_tol` or the direction turns
        by less than that (1 - |cos| ≤ `rho_tol`: converged up to sign; a warm start whose direction
        still holds costs one product even where ρ itself moved). Returns (dominant direction, ‖J v‖
        estimate of ρ, number of Jacobian-vector products)."""
        jvp = self._jvp(terms, t0, y0, args, f0)
        dtype = rho.dtype

        def body(c):
            k, v, _, rho, _ = c
            jv = jvp(v)
            n = _norm(jv, dtype)
            v_new = jax.tree.map(lambda a, b: jnp.where(n > 0, a / jnp.where(n > 0, n, 1).astype(a.dtype), b), jv, v)
            return k + 1, v_new, rho, n, jnp.abs(_dot(v_new, v, dtype))

        def cond(c):
            k, _, rho_old, rho, cos = c
            converged = (jnp.abs(rho - rho_old) <= self.rho_tol * rho) | (1 - cos <= self.rho_tol)
            return (k < self.power_iters) & ~((k >= 1) & converged)

        zero = jnp.zeros((), dtype)
        k, v, _, rho, _ = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), v, rho, rho, zero))
        return v, rho, k

    def _spectral_radius(self, terms, t0, y0, args, f0, state: RKCState) -> tuple[PyTree[Array], Array, Array, Array]:
        """ρ (before the safety factor), refreshed if `rho_every` accepted steps have passed.
        Returns (direction, ρ, JVPs used, age of ρ after this step)."""
        fresh = lambda: self._power_iteration(terms, t0, y0, args, f0, state.direction, state.rho)
        if self.rho_every == 1:  # refreshed on every step: no branch to compile
            v, rho, k = fresh()
            return v, jax.lax.stop_gradient(rho), k, jnp.ones((), jnp.int32)
        stale = state.age >= self.rho_every
        keep = lambda: (state.direction, state.rho, jnp.asarray(0, jnp.int32))
        v, rho, k = jax.lax.cond(stale, fresh, keep)
        age = jnp.where(stale, 1, state.age + 1).astype(jnp.int32)
        return v, jax.lax.stop_gradient(rho), k, age

    def _stages(self, terms, t0, t1, y0, args, hf0, control, s: Array) -> PyTree[Array]:
        """The s-stage damped Chebyshev recursion (rkc.f's `step`) from y0 with h f(t0, y0) = hf0."""
        dtype = _dtype(y0)
        tdtype = jnp.result_type(t0)
        w0 = 1 + _EPS / jnp.square(s.astype(dtype))
        w1 = jnp.asarray(_w1_table(self.s_max), dtype)[s]
        b1 = 1 / jnp.square(2 * w0)  # b_0 = b_1 = b_2 = T_2''/T_2'^2
        mus1 = w1 * b1
        one, zero = jnp.ones_like(w0), jnp.zeros_like(w0)
        y1 = _combine([one, mus1], [y0, hf0])

        def body(j, c):
            del j
            yjm1, yjm2, cjm1, cjm2, z1, z0, d1, d0, dd1, dd0, bjm1, bjm2 = c
            z, d, dd = 2 * w0 * z1 - z0, 2 * w0 * d1 - d0 + 2 * z1, 2 * w0 * dd1 - dd0 + 4 * d1
            bj = dd / jnp.square(d)
            ajm1 = 1 - z1 * bjm1
            mu, nu = 2 * w0 * bj / bjm1, -bj / bjm2
            mus = mu * w1 / w0
            hf = terms.prod(terms.vf(t0 + cjm1.astype(tdtype) * (t1 - t0), yjm1, args), control)
            yj = _combine([mu, nu, 1 - mu - nu, mus, -mus * ajm1], [yjm1, yjm2, y0, hf, hf0])
            cj = mu * cjm1 + nu * cjm2 + mus * (1 - ajm1)
            return yj, yjm1, cj, cjm1, z, z1, d, d1, dd, dd1, bj, bjm1

        init = (y1, y0, mus1, zero, w0, one, one, zero, zero, zero, b1, b1)
        return jax.lax.fori_loop(2, s + 1, body, init)[0]

    def step(
        self,
        terms: diffrax.AbstractTerm,
        t0: Array | float,
        t1: Array | float,
        y0: PyTree[Array],
        args: PyTree,
        solver_state: RKCState,
        made_jump: Array | bool,
    ) -> tuple[PyTree[Array], PyTree[Array], dict[str, PyTree[Array]], RKCState, diffrax.RESULTS]:
        """One RKC step from (t0, y0) to t1.

        **Arguments:** as `diffrax.AbstractSolver.step`.

        **Returns:** (y1, error estimate (12(y0 - y1) + 6h(f0 + f1)) / 15 — infinite where it is not
        finite or where h ρ needs more than `s_max` stages —, dense info for the cubic Hermite
        interpolation, the new [`flowsim._rkc.RKCState`][], `diffrax.RESULTS.successful`).
        """
        st = solver_state
        dtype = _dtype(y0)
        if made_jump is False:  # known when tracing (diffrax's usual case): no branch to compile
            jump, f0 = jnp.asarray(False), st.f0
        else:
            jump = jnp.asarray(made_jump)
            f0 = jax.lax.cond(jump, lambda: terms.vf(t0, y0, args), lambda: st.f0)
        control = terms.contr(t0, t1)
        h = jnp.abs(jnp.asarray(control)).astype(dtype)
        v, rho, n_jvps, age = self._spectral_radius(terms, t0, y0, args, f0, st)
        s, too_stiff = _stage_count(h, self.rho_safety * rho, self.s_min, self.s_max)
        hf0 = terms.prod(f0, control)
        y1 = self._stages(terms, t0, t1, y0, args, hf0, control, s)
        f1 = terms.vf(t1, y1, args)
        hf1 = terms.prod(f1, control)
        c1, c2 = jnp.asarray(12 / 15, dtype), jnp.asarray(6 / 15, dtype)
        err = _combine([c1, -c1, c2, c2], [y0, y1, hf0, hf1])
        err = jax.tree.map(lambda e: jnp.where(jnp.isfinite(e) & ~too_stiff, e, jnp.inf), err)
        dense_info = dict(y0=y0, y1=y1, k=jax.tree.map(lambda a, b: jnp.stack([a, b]), hf0, hf1))
        state = RKCState(
            f0=f1,
            direction=v,
            rho=rho,
            age=age,
            stages=s,
            num_evals=st.num_evals + s + jump.astype(jnp.int32),
            num_jvps=st.num_jvps + n_jvps,
        )
        return y1, err, dense_info, state, diffrax.RESULTS.successful
