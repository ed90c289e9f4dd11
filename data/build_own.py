"""Build direct, pivot and PiM prompt files from your own test set and its translations.

    python data/build_own.py --source test.de --source-lang deu --target-lang eng \\
        --aux spa=test.es rus=test.ru fra=test.fr --task mytest
    # -> data/mytest-deu2eng.txt, data/mytest-deu2eng-pivot_spa.txt, ..., data/mytest-GPT4-deu_spa2eng.txt,
    #    data/mytest-GPT4-deu_spa_rus_fra2eng.txt; then: make infer FILE=mytest-GPT4-deu_spa_rus_fra2eng

One sentence per line in every file, UTF-8, line i of each translation = line i of the source (the
files must have the same number of lines). The aux order is the order of the PiM prompt lines.
Languages are 3-letter codes (deu eng spa rus fra zho jpn ces ita isl have names; give others with
--names kor=Korean). The templates are the paper's WMT v8 (pim/data/prompts.py).
"""
import argparse
import re
import sys
from pathlib import Path

from pim.data import testsets
from pim.data.builders import POLICY_HELP, ROOT, BuildOptions, build
from pim.data.testsets import DataError

OUT = ROOT / "data"  # where the <condition>.txt files go
TASK = "own"  # the file name prefix (the "task" of pim/data/conditions.py): own-deu2eng.txt, ...
PIM_SIZES = "1,3,6"  # PiM-k for these k (the first k aux languages); PiM with all aux languages is always built
FAILED = testsets.POLICIES[0]  # lines holding 'Request failed!!!' / '###over length!!!': drop-language, keep, drop-item


def pair(text):
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"expected CODE=VALUE, got '{text}'")
    return key, value


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=Path, required=True, help="the test set's source sentences, one per line")
    p.add_argument("--source-lang", required=True, help="3-letter code of the source language, e.g. deu")
    p.add_argument("--target-lang", required=True, help="3-letter code of the language to translate into, e.g. eng")
    p.add_argument("--aux", type=pair, nargs="+", required=True, metavar="CODE=FILE",
                   help="translations of the source, in PiM order, e.g. spa=test.es rus=test.ru")
    p.add_argument("--names", type=pair, nargs="+", default=[], metavar="CODE=NAME",
                   help="language names the templates print, for codes without one, e.g. kor=Korean")
    p.add_argument("--task", default=TASK, help=f"file name prefix, lowercase letters and digits (default {TASK})")
    p.add_argument("--pim-sizes", default=PIM_SIZES,
                   help=f"comma-separated k of PiM-k to build besides PiM with all aux languages (default {PIM_SIZES})")
    p.add_argument("--out", type=Path, default=OUT,
                   help=f"where to write <condition>.txt (default {OUT.relative_to(ROOT)}/)")
    p.add_argument("--failed", choices=testsets.POLICIES, default=FAILED,
                   help=POLICY_HELP + f" (default {FAILED})")
    p.add_argument("--flores", type=Path,
                   help="FLORES-200 folder (flores200_dataset/ with dev/*.dev): also build the few-shot prompts "
                        "with the paper's demonstrations")
    p.add_argument("--shots",
                   help="comma-separated numbers of demonstrations to build (default: 0, and 1 and 5 with --flores)")
    args = p.parse_args(argv)
    try:
        codes = [args.source_lang, args.target_lang] + [c for c, _ in args.aux] + [c for c, _ in args.names]
        for c in codes:
            if not re.fullmatch(r"[a-z]{3}", c):
                raise DataError(f"language code '{c}': use 3 lowercase letters (ISO 639-3, e.g. deu), "
                                "as the file names do")
        if not re.fullmatch(r"[a-z][a-z0-9]*", args.task):
            raise DataError(f"--task {args.task}: use lowercase letters and digits, starting with a letter")
        aux = dict(args.aux)
        if len(aux) != len(args.aux) or {args.source_lang, args.target_lang} & aux.keys():
            raise DataError("--aux: each language once, and neither the source nor the target language")
        try:
            sizes = [int(k) for k in args.pim_sizes.split(",") if k.strip()]
        except ValueError:
            raise DataError(f"--pim-sizes {args.pim_sizes}: expected numbers such as 1,3,6") from None
        ts = testsets.own_testset(args.task, args.source_lang, args.source, args.target_lang,
                                  {c: Path(f) for c, f in aux.items()}, dict(args.names), sizes)
        build([ts], BuildOptions(args.shots, args.flores, args.failed), args.out)
    except DataError as e:
        sys.exit(f"{Path(__file__).name}: error: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
