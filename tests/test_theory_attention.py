"""Phase-2 attention predictions measured on the exact reduced flow
(`flowsim.systems.cooccurrence.theory.attention`)."""

import numpy as np
import pytest

from flowsim.systems.cooccurrence.theory.attention import (
    RATIO_MIN,
    _projections,
    attention_displacement_vs_L,
    score_change_projections,
    theory_C_scale,
)
from flowsim.systems.cooccurrence.theory.t1 import theory_init_scales


def test_projection_convention_and_theory_scale():
    """C_{i1,i2} = dS[i1-1, i2-1] (key row, query column); the ratio is min of the four |C| over the
    largest random-token entry; under the theory init Thm 3.3's order is 1/(L^2 m^1.5) + 1/(L m^2)."""
    dS = np.zeros((5, 5))
    dS[0, 1], dS[1, 0], dS[2, 0], dS[2, 1] = 4.0, 3.0, -2.0, -5.0
    dS[0, 4], dS[3, 2] = -0.5, 0.25
    p = _projections(dS)
    assert (p["C_12"], p["C_21"], p["C_31"], p["C_32"]) == (4.0, 3.0, -2.0, -5.0)
    assert p["signs_ok"] and p["rand_max"] == 0.5 and p["ratio"] == 4.0
    assert not _projections(-dS)["signs_ok"]
    m, m1, L = 4096, 256, 5
    s0, s1 = theory_init_scales(m, m1, L)
    assert np.isclose(theory_C_scale(s0, s1, m, m1, L), 1 / (L**2 * m**1.5) + 1 / (L * m**2))


@pytest.mark.slow  # C_ij projections over widths and seeds, two regimes: run with -m slow
def test_score_change_signs_and_separation():
    """Thm 3.2/3.3 on a small theory-regime task (theory init, n=24, L=4, distinct tokens, m=1024), ended
    when the loss first reaches 0.01: C_12, C_21 > 0 > C_31, C_32 (mu1 <-> mu2 up, key mu3 down), and the
    smallest of these four exceeds every random-token entry (i1 or i2 > 3) by more than RATIO_MIN = 2
    (fixed a priori; the theory separates them by a factor ~ n)."""
    res = score_change_projections([1024], [0], n=24, L=4)
    (row,) = res["rows"]
    assert row["result"] == "successful" and np.isfinite(row["t_end"]) and np.isclose(row["loss_end"], 0.01)
    assert row["C_12"] > 0 and row["C_21"] > 0 and row["C_31"] < 0 and row["C_32"] < 0, row
    assert row["ratio"] > RATIO_MIN, row["ratio"]
    assert res["signs_hold"] and res["ratio_holds"]


@pytest.mark.slow  # two loss-target solves per L and seed (about 15 s): run with -m slow
def test_attention_displacement_within_inverse_square_bound():
    """Cor F.17, |p(t) - p(0)| <= O(1/L^2), on L = 3, 5 x seeds 0, 1 (theory init, n=6, m=256, distinct
    tokens, loss target 0.01; two L's keep it to two compiles): the fitted log-log slope of the displacement
    vs L, with its 95% interval, lies at or below -2, so L^2 * displacement does not grow (per seed too);
    and it is far below the O(1) constant (< 0.1 / L^2)."""
    res = attention_displacement_vs_L([3, 5], [0, 1], n=6, m=256)
    disp = np.array([r["attn_disp"] for r in res["rows"]])
    l2 = np.array([r["L2_disp"] for r in res["rows"]]).reshape(2, 2)  # (L, seed)
    assert np.all(np.isfinite(disp)) and np.all(disp > 0), res["rows"]
    assert res["slope"] + res["ci95"] <= -2.0, (res["slope"], res["ci95"])
    assert res["holds"]
    assert np.all(l2[1] <= l2[0]), l2
    assert res["max_L2_disp"] < 0.1
