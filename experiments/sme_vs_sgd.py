"""Where do continuous models of SGD agree with SGD, and where do they part as lr grows?

For each lr (same flow-time horizon), runs the gradient flow, the IGR modified flow, the SGD modified
equation (32 Brownian paths) and GD against an ensemble of 32 SGD seeds with i.i.d. batches, on a
small co-occurrence problem, and reports max_t |mean loss - SGD mean loss| in SGD standard errors.
Writes experiments/results/sme_vs_sgd.{json,png} and the overlay at the largest lr.

    python experiments/sme_vs_sgd.py
"""

import pathlib
import time

from flowsim import Config, compare, compare_lrs, plot_distance_vs_lr, plot_overlay
from flowsim._results import package_versions, write_json

OUT = pathlib.Path(__file__).parent / "results"
CONFIG = Config(n=12, L=4, d=16, m=16, m1=16, batch_size=4, sgd_seeds=32, n_save_log=12, n_save_lin=8)
LRS = (0.01, 0.03, 0.1, 0.3)
HORIZON = 3.0


def main() -> None:
    t0 = time.perf_counter()
    rows = compare_lrs(CONFIG, LRS, ("gf", "igr", "sme"), horizon=HORIZON, paths=32)
    write_json(
        OUT / "sme_vs_sgd.json",
        {"config": CONFIG.to_dict(), "lrs": LRS, "horizon": HORIZON, "rows": rows, "versions": package_versions()},
    )
    plot_distance_vs_lr(rows, OUT / "sme_vs_sgd.png")
    big = CONFIG.replace(lr=LRS[-1], steps=int(round(HORIZON / LRS[-1])))
    plot_overlay(
        compare(big, ("gf", "igr", "sme"), paths=32),
        ["loss", "min_margin", "G1"],
        OUT / "sme_vs_sgd_overlay.png",
        title=f"continuous models vs SGD at lr = {LRS[-1]}",
    )
    for r in rows:
        print(f"lr {r['lr']:<6g} {r['model']:<4} {r['distance_loss_in_sgd_se']:8.2f} SGD standard errors")
    print(f"wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
