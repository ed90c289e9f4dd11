"""Benchmark of the analyses at BLOOM-176B size: time and peak memory of each, on synthetic files.

Writes (with the project's own writers, so the bytes are those of a real run) an index file of
LAYERS x WIDTH counts and a ratio file of ROWS counted steps, then runs each analysis script as a
user would, in its own process: ratio_analysis.py on the ratio file, heatmap.py and peak_analysis.py
on the index file. Prints the wall time and the peak resident memory of each. The issue's budget:
all three in under 30 s and 2 GB. With --conditions N it also writes N-1 PiM-like runs (activation
concentrated on fewer neurons) and times compare_conditions.py on all N.

    python scripts/benchmark_analysis.py                   # full size: about 700 MB of files in a temp folder
    python scripts/benchmark_analysis.py --rows 2000 --width 1024 --layers 8    # a smoke run
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pim.activation_files import index_line, ratio_lines, write_atomic
from pim.runs.names import run_paths

ROOT = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------- defaults (flags override)
LAYERS = 70  # BLOOM-176B: 70 layers
WIDTH = 57344  # of 4 x 14336 MLP neurons each
ROWS = 200000  # counted steps in the ratio file (e.g. 2,000 prompts x 100 generated tokens)
CONDITIONS = 1  # runs to write: direct, then PiM-like ones; 2 or more also times compare_conditions.py
DIR = None  # where the synthetic files go; None: a temporary folder, removed at the end
SEED = 0  # the synthetic data's random seed
# -----------------------------------------------------------------------------

FILES = ["wmt22-deu2eng", "wmt22-GPT4-deu_spa2eng", "wmt22-GPT4-deu_spa_rus_fra2eng",
         "wmt22-GPT4-deu_spa_rus_fra_zho_jpn_ces2eng"]  # names of the synthetic conditions
MODEL = "synthetic-176b"


def base_rates(layers, width, rng):
    """Per-neuron firing rates: a Beta distribution (few neurons fire often) whose mean is highest in
    the middle layers, and a few hot neurons every 4,096 (a pattern to see in the heatmap)."""
    depth = np.linspace(0, 1, layers)[:, None]
    rates = rng.beta(0.6, 4.0, size=(layers, width)) * (0.6 + 0.8 * depth * (1 - depth))
    rates[:, ::4096] = 0.9
    return np.clip(rates, 0, 1)


def synthetic_run(results, file, rates, rows, sharpen, rng):
    """Write <file>-index-<MODEL>.jsonl and -ratio- from firing rates [layers, width]; sharpen > 1
    lowers the small rates most (PiM-like: more suppressed, more concentrated). Exact zeros are a
    small part of the suppressed neurons."""
    layers, width = rates.shape
    rates = rates ** sharpen
    index = rng.binomial(rows, rates)
    paths = run_paths(results, file, MODEL)
    write_atomic(paths["index"], index_line(index))
    active = rates.mean(axis=1)  # per layer: the mean share of neurons with activation > 0
    path = paths["ratio"]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        for start in tqdm(range(0, rows, 5000), desc=f"writing {path.name}", unit="5000 rows", leave=False):
            n = min(5000, rows - start)
            le = rng.binomial(width, np.broadcast_to(1 - active, (n, layers)))
            eq = rng.binomial(le, 0.02)
            f.write(ratio_lines(np.stack([eq, le], axis=-1), width))
    os.replace(tmp, path)


def timed(command):
    """(wall seconds, peak resident memory in MB) of a command run in its own process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"benchmark_analysis.py: error: {' '.join(map(str, command))} failed:\n{stderr}")
    return wall, usage.ru_maxrss / 1024  # Linux: ru_maxrss is in kB


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--layers", type=int, default=LAYERS, help=f"layers of the synthetic model (default {LAYERS})")
    p.add_argument("--width", type=int, default=WIDTH, help=f"neurons per layer (default {WIDTH})")
    p.add_argument("--rows", type=int, default=ROWS, help=f"rows (counted steps) of the ratio file (default {ROWS})")
    p.add_argument("--conditions", type=int, default=CONDITIONS, choices=range(1, len(FILES) + 1),
                   help=f"synthetic runs to write, 1 to {len(FILES)}; 2 or more also times the comparison "
                        f"(default {CONDITIONS})")
    p.add_argument("--dir", default=DIR, help="write the files here and keep them; files already there are reused "
                   "(default: a temporary folder, removed at the end)")
    p.add_argument("--seed", type=int, default=SEED, help=f"random seed of the synthetic data (default {SEED})")
    args = p.parse_args(argv)
    if min(args.layers, args.width, args.rows) < 1:
        p.error("--layers, --width and --rows must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="pim-bench-"))
    results = base / "results"
    results.mkdir(parents=True, exist_ok=True)
    try:
        rng = np.random.default_rng(args.seed)
        files, rates = FILES[:args.conditions], base_rates(args.layers, args.width, rng)
        for k, file in enumerate(files):
            if not all(run_paths(results, file, MODEL)[kind].is_file() for kind in ("index", "ratio")):
                synthetic_run(results, file, rates, args.rows, 1 + 0.15 * k, rng)
        index, ratio = (run_paths(results, files[0], MODEL)[kind] for kind in ("index", "ratio"))
        print(f"{args.layers} layers x {args.width:,} neurons; index file {index.stat().st_size / 1e6:.0f} MB, "
              f"ratio file {args.rows:,} rows, {ratio.stat().st_size / 1e6:.0f} MB; in {results}")
        py = sys.executable
        commands = {
            "ratio analysis": [py, "analysis/ratio_analysis.py", "--files", ratio, "--out-dir", base / "tables"],
            "heatmap": [py, "analysis/heatmap.py", "--files", index, "--out-dir", base / "figures"],
            "peak analysis": [py, "analysis/peak_analysis.py", "--files", index, "--out-dir", base / "figures"],
        }
        if len(files) > 1:
            commands[f"comparison of {len(files)}"] = [py, "analysis/compare_conditions.py", "--results-dir", results,
                                                       "--model", MODEL, "--files", *files]
        rows, total = [], 0.0
        for name, command in commands.items():
            wall, rss = timed([str(c) for c in command])
            rows.append((name, wall, rss))
            total += wall if name in ("ratio analysis", "heatmap", "peak analysis") else 0
            print(f"  {name:<16} {wall:6.1f} s  {rss:7.0f} MB peak RSS", flush=True)
        print(f"  {'the three':<16} {total:6.1f} s  {max(r[2] for r in rows[:3]):7.0f} MB peak RSS (the largest); "
              f"budget 30 s, 2048 MB")
        if args.dir:
            print(f"figures in {base / 'figures'}")
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
