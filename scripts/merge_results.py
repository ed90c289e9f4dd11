"""Merge the shards of a run (separate jobs started with --shard i/n) into the run's files: generation runs
(scripts/infer_activate.py) and corpus runs (scripts/corpus_activate.py) alike.

    python scripts/merge_results.py --file wmt22-deu2eng --model bloom-176b
    python scripts/merge_results.py --file wmt22-deu2eng --model bloom-176b --manifests a/*.json b/*.json

Reads <RESULTS_DIR>/shards/<FILE>-*-<MODEL>-shard<i>of<n>.* and writes <RESULTS_DIR>/<FILE>-*-<MODEL>.*:
result lines and ratio rows in input order, index counts summed: the files one process would have
written. Corpus shards: their index counts and counted tokens summed, the index file one process would
have written. Refuses shards that do not fit together (another model, file or settings; missing, duplicate
or overlapping shards; unfinished shards) and says which.
"""
import argparse
import shlex
import sys

from pim.runs.lock import RunLock
from pim.runs.merge import merge_shards
from pim.runs.writer import RunRefused

RESULTS_DIR = "results"  # where the merged files go; shards are read from its shards/ folder
OVERWRITE = False  # replace a finished merged run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", required=True, help="the FILE of the run (data/<FILE>.txt)")
    p.add_argument("--model", required=True, help="the MODEL of the run, as in the file names")
    p.add_argument("--results-dir", default=RESULTS_DIR, help="folder of the merged files")
    p.add_argument("--manifests", nargs="+", default=None, help="shard manifests to merge (default: every shard "
                   "of FILE and MODEL in <results-dir>/shards/)")
    p.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=OVERWRITE,
                   help="replace a finished merged run")
    args = p.parse_args(argv)
    try:
        with RunLock(args.results_dir, args.file, args.model):  # one merge at a time; it clears a killed one's temporaries
            paths = merge_shards(args.results_dir, args.file, args.model, args.manifests, args.overwrite,
                                 command=shlex.join([sys.executable] + sys.argv))
    except RunRefused as e:
        sys.exit(f"error: {e}")
    print("merged: " + ", ".join(str(paths[k]) for k in ("result", "ratio", "index", "manifest") if k in paths))


if __name__ == "__main__":
    main()
