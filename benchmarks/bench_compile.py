"""Cold vs warm `flowsim run`: wall time with an empty persistent compilation cache, then again with
the cache the first run filled, and each compiled program's compile time (cold) or cache hit (warm).

Run ``python benchmarks/bench_compile.py [--size smoke|default] [--pairs K]`` from the repository
root. Each run is a fresh process (`flowsim run cooccurrence --progress never --no-plots`, with
`FLOWSIM_CACHE_DIR` pointing at a temporary folder): K pairs, each a cold run (a new, empty cache)
then a warm run (the cache the cold run filled), so that load from elsewhere hits both alike. Per
program: JAX's compiler log (compile seconds of every program that took at least 0.5 s, whether it
was written to the cache, and cache hits). Target (issue 16): warm at most 0.4x cold. Results are
printed and written to ``benchmarks/results_compile.md``. Compare numbers within one run only.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

_CHILD = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(message)s")
logging.getLogger("jax._src.compiler").setLevel(logging.DEBUG)
logging.getLogger("jax._src.compilation_cache").setLevel(logging.DEBUG)
from flowsim.cli import main
sys.exit(main(sys.argv[1:]))
"""

SIZES = {
    "smoke": "--n 12 --L 4 --d 16 --m 16 --m1 16 --lr 0.05 --steps 200 --n-save-log 20 --n-save-lin 10 "
    "--batch-size 4 --sgd-seeds 4 --n-test 200",
    "default": "--steps 3000",
}


def one_run(options: list[str], cache: str, out: str) -> tuple[float, dict[str, str]]:
    """(wall seconds, program -> what the compiler log said of it)."""
    env = {**os.environ, "FLOWSIM_CACHE_DIR": cache}
    cmd = [sys.executable, "-c", _CHILD, "run", "cooccurrence", "--out", out, "--progress", "never", "--no-plots"]
    t = time.perf_counter()
    proc = subprocess.run([*cmd, *options], env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"flowsim run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    programs: dict[str, str] = {}
    for line in proc.stderr.splitlines():
        if m := re.search(r"'(jit_\w+)' took at least .* \(([\d.]+)s\)", line):
            programs[m[1]] = programs.get(m[1], "") + f" compiled {float(m[2]):.1f} s"
        elif m := re.search(r"Not writing persistent cache entry for '(jit_\w+)' because it uses host", line):
            programs[m[1]] = programs.get(m[1], "") + " (host callback: not cached)"
        elif m := re.search(r"[Cc]ache hit for '(jit_\w+)'", line):
            programs[m[1]] = programs.get(m[1], "") + " cache hit"
    return wall, programs


def _load() -> str:
    return pathlib.Path("/proc/loadavg").read_text().split()[0]


def _said(programs: dict[str, str], name: str) -> str:
    return programs.get(name, "").strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=tuple(SIZES), default="smoke", help="problem size of the run")
    ap.add_argument("--pairs", type=int, default=3, help="(cold, warm) pairs, each with its own new cache")
    args = ap.parse_args()
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):  # cold then warm, side by side, so load from elsewhere hits both alike
            options = SIZES[args.size].split()
            pairs.append([one_run(options, f"{tmp}/cache{i}", f"{tmp}/run{i}{w}") for w in ("cold", "warm")])
    cold, warm = min(p[0][0] for p in pairs), min(p[1][0] for p in pairs)
    ratios = [p[1][0] / p[0][0] for p in pairs]
    names = sorted({k for p in pairs for _, programs in p for k in programs})
    lines = [
        "# Cold vs warm `flowsim run`",
        "",
        f"Command: `python benchmarks/bench_compile.py --size {args.size} --pairs {args.pairs}`  ",
        f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}; load {_load()}  ",
        f"Run: `flowsim run cooccurrence {SIZES[args.size]} --progress never --no-plots`",
        "",
        f"Cold (empty cache, fastest of {args.pairs}): {cold:.1f} s; warm (the run after it, fastest): {warm:.1f} s; "
        f"warm / cold = {warm / cold:.2f} (per pair: {', '.join(f'{r:.2f}' for r in ratios)}; target <= 0.4)",
        "",
        "| program | cold run | warm run |",
        "|---|---|---|",
        *(
            f"| {n} | {pairs[0][0][1].get(n, '').strip() or '< 0.5 s'} | {pairs[0][1][1].get(n, '').strip()} |"
            for n in names
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    name = "results_compile.md" if args.size == "smoke" else f"results_compile_{args.size}.md"
    (pathlib.Path(__file__).parent / name).write_text(text)


if __name__ == "__main__":
    main()
