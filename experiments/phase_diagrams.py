"""The four headline phase diagrams of flowsim (issue 4), each a resumable sweep plus its figures.

    python experiments/phase_diagrams.py [NAME ...] [--workers N]

NAME is one of the specs in experiments/specs/ (default: all four). Each sweep writes its points to
experiments/results/<name>/ (rerunning resumes), then the figures experiments/results/<name>_<measure>.png
and the tidy table experiments/results/<name>.csv. Sizes are stated in each spec file.
"""

from __future__ import annotations

import argparse
import pathlib
import time

HERE = pathlib.Path(__file__).parent
# name -> (x, y, measures to draw)
DIAGRAMS = {
    "init_scale_x_width": ("init_scale", "m", ["T1", "phase1.attention_frozen", "attn_disp_T1"]),
    "width_x_length": ("m", "L", ["balance.R", "balance.S2_S3", "R_in_12_fraction"]),
    "lr_x_batch": ("lr", "batch_size", ["flow_sgd_gap", "sgd_diverged"]),
    "n_x_length_tokens": ("n", "L", ["T1", "balance.R"]),
}


def run(name: str, workers: int | None) -> None:
    from flowsim import SweepSpec, load_sweep, plot_phase_diagram, run_sweep
    from flowsim._phase_diagram import write_csv

    x, y, measures = DIAGRAMS[name]
    results = HERE / "results"
    t0 = time.perf_counter()
    rep = run_sweep(SweepSpec.from_file(HERE / "specs" / f"{name}.toml"), results / name, workers=workers)
    print(
        f"{name}: {rep.total} points ({rep.skipped} resumed, {rep.done} run, {rep.failed} failed) in {rep.wall_s:.1f} s"
    )
    for m in measures:
        print(" ", plot_phase_diagram(results / name, x, y, measure=m, out=results / f"{name}_{m}.png"))
    print(" ", write_csv(load_sweep(results / name), results / f"{name}.csv"))
    print(f"  total {time.perf_counter() - t0:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help=f"diagrams to run, from {list(DIAGRAMS)} (default: all)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    args = p.parse_args()
    bad = [n for n in args.names if n not in DIAGRAMS]
    if bad:
        p.error(f"unknown diagram(s) {bad}; choose from {list(DIAGRAMS)}")
    import flowsim.cli  # noqa: F401 - same XLA/device setup as the `flowsim` command

    for name in args.names or DIAGRAMS:
        run(name, args.workers)


if __name__ == "__main__":
    main()
