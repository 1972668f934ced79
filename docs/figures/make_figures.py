"""Regenerate the figures in docs/figures/ from small runs of every system.

    python docs/figures/make_figures.py [--runs DIR] [--format png|pdf|svg]

Each system runs once with the sizes below (`flowsim run SYSTEM ... --no-plots`: the co-occurrence run
is moderately sized so that both phases show, the others use the system's smoke sizes), into
`DIR/<system>` (default: a temporary folder; a folder that already holds a finished run is reused),
and its figures are drawn from the saved run, as `flowsim plot DIR/<system>` does. The co-occurrence
figures keep their names (`attention_scores.png`, `losses.png`, `flow_vs_discrete.png`,
`balancing.png`); the others are named `<system>_<figure>.png`. About 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys
import tempfile

import flowsim
from flowsim._figure_style import output_format

HERE = pathlib.Path(__file__).resolve().parent
COOCCURRENCE = dict(n=24, L=5, d=32, m=32, m1=64, lr=0.02, steps=5000, n_save_log=60, n_save_lin=30)
COOCCURRENCE.update(batch_size=6, sgd_seeds=4)
SYSTEMS = ("cooccurrence", "sensitivity", "dyck-attention", "dyck-proxies", "spectra")


def options(system: str) -> dict[str, object]:
    """The run's config fields: moderate sizes for co-occurrence, else the system's smoke sizes."""
    return dict(COOCCURRENCE) if system == "cooccurrence" else dict(flowsim.get_system(system).smoke)


def ensure_run(system: str, folder: pathlib.Path) -> None:
    """Run `flowsim run SYSTEM` into `folder` unless it already holds a finished run."""
    if (folder / "summary.json").is_file():
        return
    args = [f"--{k.replace('_', '-')}={v}" for k, v in options(system).items()]
    cmd = [sys.executable, "-m", "flowsim.cli", "run", system, *args, "--out", str(folder), "--quiet", "--no-plots"]
    print(" ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description="Regenerate the figures in docs/figures/.")
    parser.add_argument("--runs", type=pathlib.Path, help="folder of the runs (kept; default a temporary one)")
    parser.add_argument("--format", choices=("png", "pdf", "svg"), default="png")
    args = parser.parse_args()
    runs = args.runs or pathlib.Path(tempfile.mkdtemp(prefix="flowsim-docs-"))
    for system in SYSTEMS:
        folder = runs / system
        ensure_run(system, folder)
        drawn = folder / "figures"
        with output_format(args.format):
            paths = flowsim.get_system(system).figures(flowsim.load_run(folder), drawn)
        for path in paths:
            name = path.name if system == "cooccurrence" else f"{system.replace('-', '_')}_{path.name}"
            shutil.copyfile(path, HERE / name)
            print(HERE / name)
    if args.runs is None:
        shutil.rmtree(runs, ignore_errors=True)


if __name__ == "__main__":
    main()
