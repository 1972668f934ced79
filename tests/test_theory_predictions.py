"""Predictions of the theory measured on the exact reduced flow (`flowsim.theory.predictions`)."""

import numpy as np

from flowsim.theory.predictions import t1_vs_width


def test_t1_scales_as_inverse_width():
    """T1 = C/(sigma1^2 m m1) with sigma1^2 m1 = 1 (theory init) predicts T1 ~ m^-1 (spec section 4).

    On widths 64..16384, 2 seeds, a small theory-regime task (n=12, L=3, d=12, distinct tokens), the
    fitted log-log exponent must be negative and within [-1.3, -0.7]: the prediction -1 with a
    tolerance of 0.3 (log factors and the sigma0^2 m m1 = m1/L term of Lem 4.1 at small m).
    Every point must reach the end of Phase 1 (T1 finite and positive).
    """
    res = t1_vs_width([64, 256, 1024, 4096, 16384], [0, 1], n=12, L=3, d=12, distinct_tokens=True)
    t1 = np.array([r["T1"] for r in res["rows"]])
    assert np.all(np.isfinite(t1)) and np.all(t1 > 0), res["rows"]
    assert res["slope"] < 0
    assert -1.3 <= res["slope"] <= -0.7, res["slope"]
    assert res["predicted"] == -1.0
