"""Build the prompt files of the paper's conditions from its released data: data/<condition>.txt.

    python data/build_prompts.py                                # what `make data` runs after fetch_release.py
    python data/build_prompts.py --flores ~/flores200_dataset   # the few-shot prompts too
    python data/build_prompts.py --list                         # every condition, and why some cannot be built
    python data/build_prompts.py --only wmt22-GPT4-deu_spa2eng --failed keep

One prompt per line, newlines stored as the two characters \\n, names from pim/data/conditions.py
(wmt22-deu2eng, wmt22-deu2eng-pivot_spa, wmt22-GPT4-deu_spa_rus_fra2eng, xnli-GPT4-deu_spa_rus_fra, ...).
Line i of every file of a test set is item i of the test set, except with --failed drop-item.
"""
import argparse
import sys
from pathlib import Path

from pim.data import testsets
from pim.data.builders import ROOT, BuildOptions, add_release_flags, build, list_conditions, task_list
from pim.data.testsets import DataError

OUT = ROOT / "data"  # where the <condition>.txt files go
# which conditions (--release, --flores, --failed, --tasks, --shots): the defaults of pim/data/builders.py


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_release_flags(p, OUT, "where to write <condition>.txt", "the few-shot prompts")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="build only these conditions (names as in --list); an error if one cannot be built")
    p.add_argument("--list", action="store_true",
                   help="list every condition of the release and whether it can be built; write nothing")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if not (args.release / "WMT").is_dir():
            raise DataError(f"{args.release}: no release here (no WMT/ folder): run `make data` "
                            "(or data/fetch_release.py), or pass --release DIR")
        sets = testsets.release_testsets(args.release, task_list(args.tasks))
        options = BuildOptions(args.shots, args.flores, args.failed, tuple(args.only or ()))
        if args.list:
            list_conditions(sets, options)
        else:
            build(sets, options, args.out)
    except DataError as e:
        sys.exit(f"{Path(__file__).name}: error: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
