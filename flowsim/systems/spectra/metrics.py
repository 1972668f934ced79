"""Charton (2022)'s metrics of predicted spectra, per matrix, and the summaries the verdicts read.

For a matrix M with eigenvalues lambda (ascending) and a prediction (lambda_hat, Q_hat) (columns
q_k of Q_hat; outputs unscaled by sigma):

- `eig_err` = ||lambda_hat - lambda||_1 / ||lambda||_1 (relative L1; the eigenvalue task's
  correctness is `eig_err < tol`);
- `vec_err` = ||Q_hat^T M Q_hat - diag(lambda_hat)||_1 / ||lambda_hat||_1 (entrywise L1: the
  eigenvector task's correctness is `vec_err < tol`, self-consistency with the model's own
  lambda_hat);
- `norm_err` = max over the columns q_k of | ||q_k||_2 - 1 | (the notebook also takes the rows; but
  unit columns that are not orthogonal force rows off unit norm, sum_i ||row_i||^2 = n, so the rows
  measure orthogonality, not norms, and are left out);
- `orth_err` = max over pairs k < l of |cos(q_k, q_l)|;
- `kappa` = s_max / s_min of Q_hat (its condition number; 1 for an orthogonal matrix);
- `gap` = min_k (lambda_{k+1} - lambda_k) / max |lambda| of the input (its relative minimum
  eigengap; needs no prediction).

`auroc(score, positive)` is the Mann-Whitney estimate of P(score of a positive > score of a
negative) (ties count 1/2); nan without positives or negatives.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float


def split_prediction(
    pred: Float[Array, "N out"], n: int, scale: float
) -> tuple[Float[Array, "N n"], Float[Array, "N n n"] | None]:
    """lambda_hat (unscaled by `scale`) and Q_hat (columns = predicted eigenvectors; None for the
    eigenvalue task) from the model's outputs."""
    lam = pred[:, :n] * jnp.asarray(scale, pred.dtype)
    if pred.shape[1] == n:
        return lam, None
    q = jnp.swapaxes(pred[:, n:].reshape(pred.shape[0], n, n), 1, 2)
    return lam, q


def eig_err(lam_hat: Float[Array, "N n"], lam: Float[Array, "N n"]) -> Float[Array, " N"]:
    """Relative L1 error of the eigenvalues."""
    return jnp.sum(jnp.abs(lam_hat - lam), axis=1) / jnp.sum(jnp.abs(lam), axis=1)


def vec_err(m: Float[Array, "N n n"], lam_hat: Float[Array, "N n"], q: Float[Array, "N n n"]) -> Float[Array, " N"]:
    """||Q^T M Q - diag(lambda_hat)||_1 / ||lambda_hat||_1 (entrywise L1)."""
    r = jnp.swapaxes(q, 1, 2) @ m @ q
    d = jax.vmap(jnp.diag)(lam_hat)
    return jnp.sum(jnp.abs(r - d), axis=(1, 2)) / jnp.sum(jnp.abs(lam_hat), axis=1)


def norm_err(q: Float[Array, "N n n"]) -> Float[Array, " N"]:
    """max over the columns q_k of | ||q_k||_2 - 1 |."""
    return jnp.max(jnp.abs(jnp.linalg.norm(q, axis=1) - 1), axis=1)


def orth_err(q: Float[Array, "N n n"]) -> Float[Array, " N"]:
    """max over column pairs k < l of |cos(q_k, q_l)|."""
    u = q / jnp.linalg.norm(q, axis=1, keepdims=True)
    c = jnp.abs(jnp.swapaxes(u, 1, 2) @ u)
    n = q.shape[-1]
    off = ~jnp.eye(n, dtype=bool)
    return jnp.max(jnp.where(off[None], c, jnp.zeros((), c.dtype)), axis=(1, 2))


def kappa(q: Float[Array, "N n n"]) -> Float[Array, " N"]:
    """Condition number s_max / s_min of each Q_hat (inf when singular)."""
    s = jnp.linalg.svd(q, compute_uv=False)
    return s[:, 0] / s[:, -1]


def gap(lam: Float[Array, "N n"]) -> Float[Array, " N"]:
    """Relative minimum eigengap min_k (lambda_{k+1} - lambda_k) / max |lambda| (lambda ascending)."""
    return jnp.min(jnp.diff(lam, axis=1), axis=1) / jnp.max(jnp.abs(lam), axis=1)


def auroc(score: Float[Array, " N"], positive: Bool[Array, " N"]) -> Float[Array, ""]:
    """P(score of a positive > score of a negative) + 1/2 P(tie), by average ranks (Mann-Whitney)."""
    dtype = score.dtype
    order = jnp.argsort(score)
    s = score[order]
    idx = jnp.arange(s.shape[0])
    new = jnp.concatenate([jnp.ones(1, bool), s[1:] != s[:-1]])  # first of a run of ties
    end = jnp.concatenate([s[1:] != s[:-1], jnp.ones(1, bool)])  # last of a run of ties
    first = jax.lax.cummax(jnp.where(new, idx, 0)).astype(dtype)
    last = jax.lax.cummin(jnp.where(end, idx + 1, s.shape[0]), reverse=True).astype(dtype)
    ranks = jnp.zeros_like(s).at[order].set((first + last + 1) / 2)  # average 1-based rank of ties
    p = jnp.sum(positive.astype(dtype))
    neg = jnp.asarray(score.shape[0], dtype) - p
    u = jnp.sum(jnp.where(positive, ranks, jnp.zeros((), dtype))) - p * (p + 1) / 2
    return jnp.where((p > 0) & (neg > 0), u / jnp.maximum(p * neg, 1), jnp.asarray(jnp.nan, dtype))


@functools.partial(jax.jit, static_argnames=("scale",))
def per_matrix(m: Float[Array, "N n n"], pred: Float[Array, "N out"], scale: float) -> dict[str, Float[Array, " N"]]:
    """Every per-matrix quantity of the module docstring (eigenvector ones only when predicted);
    `correct_err` is the error the tolerance applies to (`vec_err`, else `eig_err`)."""
    n = m.shape[-1]
    lam = jnp.linalg.eigvalsh(m)
    lam_hat, q = split_prediction(pred, n, scale)
    out = {"eig_err": eig_err(lam_hat, lam), "gap": gap(lam)}
    if q is not None:
        out.update(vec_err=vec_err(m, lam_hat, q), norm_err=norm_err(q), orth_err=orth_err(q), kappa=kappa(q))
    out["correct_err"] = out.get("vec_err", out["eig_err"])
    return out


def _frac(x: Bool[Array, " N"], where: Bool[Array, " N"], dtype: Any) -> Float[Array, ""]:
    """Fraction of `x` among the entries selected by `where` (nan if none), in `dtype`."""
    w = where.astype(dtype)
    k = jnp.sum(w)
    return jnp.where(k > 0, jnp.sum(x.astype(w.dtype) * w) / jnp.maximum(k, 1), jnp.asarray(jnp.nan, w.dtype))


@functools.partial(jax.jit, static_argnames=("tol",))
def summary(q: dict[str, Float[Array, " N"]], tol: float) -> dict[str, Float[Array, ""]]:
    """The scalar summaries of `per_matrix` output at tolerance `tol`: accuracies at tol, 2% and 1%
    (`acc`, `acc_2`, `acc_1`), the failure and correct counts, and with eigenvectors the fractions of failures
    whose eigenvalues (`fail_eig_ok`) and norms (`fail_norm_ok`) are within 2%, the fractions of
    failures violating each property (`viol_eig`: eig_err > 2%, `viol_norm`: norm_err > 2%,
    `viol_orth`: orth_err > tol), the AUROCs of kappa (`auroc_kappa`) and of -gap (`auroc_gap`) for
    failure, and kappa's 98th percentile over correct and 2nd percentile over failed predictions."""
    err = q["correct_err"]
    dtype = err.dtype
    fail = ~(err < tol)
    ones = jnp.ones(fail.shape, bool)
    out: dict[str, Array] = {
        "acc": _frac(~fail, ones, dtype),
        "acc_2": _frac(err < 0.02, ones, dtype),
        "acc_1": _frac(err < 0.01, ones, dtype),
        "failures": jnp.sum(fail.astype(dtype)),
        "correct": jnp.sum((~fail).astype(dtype)),
        "eig_err_median": jnp.median(q["eig_err"]),
        "auroc_gap": auroc(-q["gap"], fail),
    }
    if "kappa" in q:
        out.update(
            fail_eig_ok=_frac(q["eig_err"] <= 0.02, fail, dtype),
            fail_norm_ok=_frac(q["norm_err"] <= 0.02, fail, dtype),
            viol_eig=_frac(q["eig_err"] > 0.02, fail, dtype),
            viol_norm=_frac(q["norm_err"] > 0.02, fail, dtype),
            viol_orth=_frac(q["orth_err"] > tol, fail, dtype),
            auroc_kappa=auroc(q["kappa"], fail),
            kappa_correct_p98=_quantile(q["kappa"], ~fail, 0.98),
            kappa_failed_p2=_quantile(q["kappa"], fail, 0.02),
        )
    return out


def _quantile(x: Float[Array, " N"], where: Bool[Array, " N"], p: float) -> Float[Array, ""]:
    """The p-quantile of x over the selected entries (nan if none)."""
    return jnp.nanquantile(jnp.where(where, x, jnp.asarray(jnp.nan, x.dtype)), p)
