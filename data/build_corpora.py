"""Build one corpus per language from the paper's release: data/corpus-<lang>.txt (for LAPE, docs/lape.md).

    python data/build_corpora.py                        # what `make data` runs after build_prompts.py
    python data/build_corpora.py --languages deu fra --tasks wmt

Every distinct text the release has in the language (WMT sources and GPT-4 translations, XNLI premises,
hypotheses and their translations), one per line, newlines stored as \\n; failed translations left out
(pim/data/corpora.py says exactly which files feed which corpus).
"""
import argparse
import sys
from pathlib import Path

from pim.data.builders import RELEASE, ROOT
from pim.data.corpora import LANGUAGES, TASKS, CorpusOptions, build_corpora
from pim.data.testsets import DataError

OUT = ROOT / "data"  # where corpus-<lang>.txt go


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--release", type=Path, default=RELEASE, help="the release folder holding WMT/ XNLI/ "
                   f"(default {RELEASE.relative_to(ROOT)}/)")
    p.add_argument("--out", type=Path, default=OUT, help=f"where to write corpus-<lang>.txt (default {OUT.relative_to(ROOT)}/)")
    p.add_argument("--languages", nargs="+", default=list(LANGUAGES), metavar="LANG",
                   help=f"3-letter codes (default {' '.join(LANGUAGES)})")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, help="parts of the release to read")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if not (args.release / "WMT").is_dir():
            raise DataError(f"{args.release}: no release here (no WMT/ folder): run `make data`, or pass --release DIR")
        written = build_corpora(args.release, args.out, CorpusOptions(tuple(args.languages), tuple(args.tasks)))
    except DataError as e:
        sys.exit(f"{Path(__file__).name}: error: {e}")
    print(f"Built {len(written)} corpora in {args.out}/ (lines = distinct texts):")
    for path, n in written.items():
        print(f"  {path.stem:20} {n:6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
