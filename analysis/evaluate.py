"""Score every condition's generations and compare them in one table per test set and model (`make eval`).

Translation (a condition with a target language, e.g. wmt22-deu2eng): BLEU and chrF with sacrebleu
against references from --ref, or for WMT22/WMT21 from sacrebleu's own test sets (fetched once when
the network answers). Classification (xnli, rte, boolq): the label parsed from the generated text
(pim/eval/scoring.py), accuracy, per-class counts, the share unparsed; gold labels from --ref or the release.

Inputs: <results>/<FILE>-result-<MODEL>.txt (one continuation per input line), and LLaMA-Factory's
generated_predictions.jsonl (--predictions), whose "label" field is the reference when no --ref is given.
Outputs: the scores with sacrebleu's signatures on stdout, and results/tables/eval-<test set>-<model>.{md,csv}
with one row per condition (direct, pivots, PiM-1/3/6), the difference from direct, and the all-layer
suppressed share where the run's ratio file exists.

    python analysis/evaluate.py --ref wmt22-deu2eng=generaltest2022.de-en.ref.A.en
    python analysis/evaluate.py --files xnli-deu xnli-GPT4-deu_spa_rus_fra --release data/release
"""
import argparse
import sys
from pathlib import Path

from pim.activation_files import FormatError, write_atomic
from pim.eval import evaluation
from pim.eval.evaluation import EvalError

# ----------------------------------------------------------------------------- defaults (flags override)
RESULTS_DIR = "results"  # where make infer writes <FILE>-result-<MODEL>.txt and the ratio files
TABLES_DIR = None  # where the tables go; None: <RESULTS_DIR>/tables
FILES = []  # conditions to score, e.g. ["wmt22-deu2eng"]; [] scores every result file found
MODELS = []  # models to score; [] = all
REFS = []  # reference / gold label files: "PATH" (for all runs of one test set) or "TESTSET=PATH"
DATA_DIR = "data"  # <DATA_DIR>/<TESTSET>.ref.<target> is taken as the reference when no --ref names one
RELEASE = "data/release"  # the paper's release (as make data unpacks it): gold labels of XNLI, RTE, BoolQ
PREDICTIONS = []  # LLaMA-Factory generated_predictions.jsonl: "PATH" (in <MODEL>/<FILE>/) or "FILE:MODEL=PATH"
TOKENIZE = None  # BLEU tokenizer; None = sacrebleu's choice for the target (13a; zh for Chinese)
FIRST_LINE = True  # translation: score the first non-empty line of each continuation only
DOWNLOAD = True  # fetch WMT22/WMT21 references with sacrebleu when no --ref is given
NET_TIMEOUT = 5.0  # seconds to wait for the network before giving up on a download
# -----------------------------------------------------------------------------


# ----------------------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--results-dir", default=RESULTS_DIR,
                   help=f"folder of the result and ratio files (default {RESULTS_DIR})")
    p.add_argument("--tables-dir", default=TABLES_DIR, help="where the tables go (default <results-dir>/tables)")
    p.add_argument("--files", nargs="+", default=FILES, metavar="FILE",
                   help="conditions to score, e.g. wmt22-deu2eng wmt22-GPT4-deu_spa2eng (default: every result file)")
    p.add_argument("--models", nargs="+", default=MODELS, metavar="MODEL", help="models to score (default: all)")
    p.add_argument("--ref", action="append", default=list(REFS), metavar="[TESTSET=]PATH",
                   help="reference translations or gold labels, one per line. TESTSET (e.g. wmt22-deu2eng, xnli-deu) "
                        "says which runs it is for; without it, for all runs (which must share one test set). "
                        "Repeat for several test sets; several files for one translation test set = multi-reference")
    p.add_argument("--data-dir", default=DATA_DIR, help=f"where <TESTSET>.ref.<target> files are looked for when no "
                   f"--ref names the test set, e.g. {DATA_DIR}/wmt22-deu2eng.ref.eng (default {DATA_DIR})")
    p.add_argument("--release", default=RELEASE,
                   help=f"the paper's release folder, for XNLI/RTE/BoolQ gold labels (default {RELEASE})")
    p.add_argument("--predictions", action="append", default=list(PREDICTIONS), metavar="[FILE:MODEL=]PATH",
                   help="also score a LLaMA-Factory generated_predictions.jsonl; without FILE:MODEL= the folder names "
                        "say it: .../<MODEL>/<FILE>/generated_predictions.jsonl. Its label field is the reference "
                        "unless --ref gives one")
    p.add_argument("--tokenize", default=TOKENIZE, help="BLEU tokenizer (13a, zh, char, intl, flores200, ...); "
                   "default: sacrebleu's choice for the target language (13a; zh for Chinese; ja-mecab/ko-mecab, "
                   "or char where MeCab is not installed)")
    p.add_argument("--whole-output", dest="first_line", action="store_false", default=FIRST_LINE,
                   help="translation: score the whole continuation (newlines as spaces), "
                        "not only its first non-empty line")
    p.add_argument("--offline", dest="download", action="store_false", default=DOWNLOAD,
                   help="never try to download WMT references")
    p.add_argument("--net-timeout", type=float, default=NET_TIMEOUT,
                   help=f"seconds to wait for the network before giving up on a download (default {NET_TIMEOUT:g})")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        return evaluate(args)
    except (EvalError, FormatError) as e:
        print(f"error: {e}", file=sys.stderr)
    except OSError as e:  # an unwritable tables folder, an unreadable file, a full disk, ...
        print("error: " + ": ".join(str(x) for x in (e.filename, e.strerror or e) if x), file=sys.stderr)
    return 1


def evaluate(args):
    evaluation.forget_fetched()
    options = evaluation.Options(args.data_dir, args.release, args.tokenize, args.first_line, args.download,
                                 args.net_timeout)
    try:
        runs, skipped = evaluation.find_scored(args.results_dir, args.files, args.models, args.predictions)
        refs = evaluation.parse_refs(args.ref, runs)
    except (EvalError, FormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for s in skipped:
        print(f"skipped {s}")
    errors, scored = [], []
    for run in sorted(runs, key=lambda r: (r.test_set, r.model, evaluation.row_key(r))):
        try:
            evaluation.score(run, refs, options)
        except (EvalError, FormatError) as e:
            errors.append(f"{run.file} · {run.model}: {e}")
            continue
        scored.append(run)
        print(evaluation.report(run), flush=True)
    tables_dir = Path(args.tables_dir or Path(args.results_dir) / "tables")
    groups = {}
    for run in scored:
        groups.setdefault((run.test_set, run.model), []).append(run)
    for (test_set, model), group in sorted(groups.items()):
        md, table = evaluation.make_tables(test_set, model, group)
        tables_dir.mkdir(parents=True, exist_ok=True)
        stem = tables_dir / f"eval-{test_set}-{model}"
        write_atomic(stem.with_name(stem.name + ".md"), md)
        write_atomic(stem.with_name(stem.name + ".csv"), table)
        print(f"\n{md}(written to {stem}.md and .csv)")
    if len(errors) == 1:
        print(f"error: could not score {errors[0]}", file=sys.stderr)
        return 1
    if errors:
        print(f"\nerror: {len(errors)} run(s) could not be scored:", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
