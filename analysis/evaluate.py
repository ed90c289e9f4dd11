"""Score every condition's generations and compare them in one table per test set and model (`make eval`).

Translation (a condition with a target language, e.g. wmt22-deu2eng): BLEU and chrF with sacrebleu
against references from --ref, or for WMT22/WMT21 from sacrebleu's own test sets (fetched once when
the network answers). Classification (xnli, rte, boolq): the label parsed from the generated text
(pim/scoring.py), accuracy, per-class counts, the share unparsed; gold labels from --ref or the release.

Inputs: <results>/<FILE>-result-<MODEL>.txt (one continuation per input line), and LLaMA-Factory's
generated_predictions.jsonl (--predictions), whose "label" field is the reference when no --ref is given.
Outputs: the scores with sacrebleu's signatures on stdout, and results/tables/eval-<test set>-<model>.{md,csv}
with one row per condition (direct, pivots, PiM-1/3/6), the difference from direct, and the all-layer
suppressed share where the run's ratio file exists.

    python analysis/evaluate.py --ref wmt22-deu2eng=generaltest2022.de-en.ref.A.en
    python analysis/evaluate.py --files xnli-deu xnli-GPT4-deu_spa_rus_fra --release data/release
"""
import argparse
import csv
import io
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pim import scoring  # noqa: E402
from pim.activation_files import FormatError, read_ratio, read_results, run_paths, write_atomic  # noqa: E402
from pim.conditions import Condition, parse_condition  # noqa: E402
from pim.neuron_stats import suppressed_share  # noqa: E402

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

ORDER = {"direct": 0, "pivot": 1}  # row order; PiM-k rows follow, by k
RELEASE_LABELS = {"xnli": "XNLI/test_set/xnli.{lang}.label.txt", "rte": "RTE/test_set/RTE.valid.label.txt",
                  "boolq": "BoolQ/test_set/valid.label.txt"}
WMT_REF_FILES = {"wmt22": "generaltest2022.{pair}.ref.A.{tgt} (wmt22-news-systems, txt/references/)",
                 "wmt21": "newstest2021.{pair}.ref.A.{tgt} (WMT21 test sets)"}


class EvalError(Exception):
    """A user error: the message says what is wrong and what to do."""


class Run:
    """One scored unit: a condition's generations by one model."""

    def __init__(self, file, model, condition, path, outputs, labels=None, ratio=None):
        self.file, self.model, self.condition, self.path = file, model, condition, Path(path)
        self.outputs, self.labels, self.ratio = outputs, labels, ratio  # labels: LLaMA-Factory's field
        self.scores, self.reference = None, None

    @property
    def test_set(self):
        return testset_name(self.condition)


def testset_name(cond):
    return Condition(task=cond.task, source=cond.source, target=cond.target).name


def read_lines(path, what):
    """Lines of a plain text file (no escapes), with a clear error if it is missing or not UTF-8."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvalError(f"{path}: no such {what} file") from None
    except UnicodeDecodeError as e:
        line = text_line_of(path, e.start)
        raise EvalError(f"{path}:{line}: not UTF-8; the {what} file must be UTF-8 text") from None
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n") if text else []


def text_line_of(path, offset):
    return path.read_bytes()[:offset].count(b"\n") + 1


# ----------------------------------------------------------------------------- finding the runs
def find_runs(results_dir, files, models, predictions):
    """The runs to score: result files (filtered by files and models) and LLaMA-Factory predictions."""
    results_dir = Path(results_dir)
    runs, skipped, found = [read_predictions(spec) for spec in predictions], [], {}
    for path in sorted(results_dir.glob("*-result-*.txt")) if results_dir.is_dir() else []:
        if not path.name.startswith("."):
            found[split_result_name(path.name)] = path
    have = set(found) | {(r.file, r.model) for r in runs}
    for file in files:
        if parse_condition(file) is None:
            raise EvalError(f"--files {file}: not a condition name (pim/conditions.py), e.g. wmt22-deu2eng, "
                            "wmt22-GPT4-deu_spa_rus_fra2eng, xnli-deu")
        if not any(f == file for f, _ in have):
            raise EvalError(f"no result file {results_dir}/{file}-result-<MODEL>.txt: run make infer FILE={file} first")
    for model in models:
        if not any(m == model for _, m in have):
            raise EvalError(f"no result file {results_dir}/<FILE>-result-{model}.txt")
    for (file, model), path in found.items():
        if (files and file not in files) or (models and model not in models):
            continue
        cond = parse_condition(file)
        if cond is None:
            skipped.append(f"{path.name} (the name is not a condition of pim/conditions.py)")
            continue
        ratio = run_paths(results_dir, file, model)["ratio"]
        try:
            outputs = read_results(path)
        except UnicodeDecodeError as e:
            raise EvalError(f"{path}:{text_line_of(path, e.start)}: not UTF-8; is it a result file?") from None
        runs.append(Run(file, model, cond, path, outputs, ratio=ratio if ratio.exists() else None))
    if not runs:
        raise EvalError(f"nothing to score: no result files{' of ' + ' '.join(files) if files else ''} in "
                        f"{results_dir}/ (run make infer or make demo first, or pass --results-dir)")
    return runs, skipped


def split_result_name(name):
    """(FILE, MODEL) of '<FILE>-result-<MODEL>.txt'; both may hold hyphens, FILE preferably a condition."""
    stem = name[:-len(".txt")]
    splits = [(stem[:m.start()], stem[m.end():]) for m in re.finditer("-result-", stem)]
    return next((s for s in splits if parse_condition(s[0])), splits[0])


def read_predictions(spec):
    """A Run from LLaMA-Factory's generated_predictions.jsonl; 'FILE:MODEL=PATH' or PATH in <MODEL>/<FILE>/."""
    m = re.match(r"^([^=:/\s]+):([^=/\s]+)=(.+)$", spec)
    if m:
        file, model, path = m[1], m[2], Path(m[3])
    else:
        path = Path(spec)
        file, model = path.resolve().parent.name, path.resolve().parent.parent.name
    cond = parse_condition(file)
    if cond is None:
        raise EvalError(f"--predictions {spec}: cannot tell the condition ('{file}' is not a condition name); "
                        "write it as FILE:MODEL=PATH, e.g. xnli-deu:qwen-7b-lora=saves/generated_predictions.jsonl")
    outputs, labels = [], []
    for number, line in enumerate(read_lines(path, "predictions"), 1):
        try:
            row = json.loads(line)
            outputs.append(str(row["predict"]))
            labels.append(None if row.get("label") is None else str(row["label"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise EvalError(f"{path}:{number}: expected a JSON object with a \"predict\" field "
                            "(LLaMA-Factory's generated_predictions.jsonl)") from None
    return Run(file, model, cond, path, outputs, labels=labels if all(x is not None for x in labels) else None)


# ----------------------------------------------------------------------------- references
def parse_refs(refs, runs):
    """{test set: [paths]} from --ref values; a bare PATH goes to the test set all (other) runs share."""
    keyed, bare = {}, []
    for spec in refs:
        name, sep, path = spec.partition("=")
        cond = parse_condition(name) if sep else None
        if cond is None:
            bare.append(spec)
        else:
            keyed.setdefault(testset_name(cond), []).append(path)
    if bare:
        rest = sorted({r.test_set for r in runs if r.test_set not in keyed})
        if len(rest) > 1:
            raise EvalError(f"--ref {bare[0]} without a test set name, but the runs span {', '.join(rest)}: "
                            f"give it as TESTSET=PATH (e.g. --ref {rest[0]}={bare[0]}) or select runs with --files")
        if rest:
            keyed[rest[0]] = bare
    return keyed


def references(run, refs, args):
    """(list of reference streams or gold labels, where from) for a run, or an EvalError saying what is missing."""
    cond, task = run.condition, run.condition.task
    classify = scoring.is_classification(task)
    if not classify and cond.target is None:
        raise EvalError(f"{run.file}: no target language and the task '{task}' is none of "
                        f"{', '.join(scoring.LABELS)}: cannot tell translation from classification "
                        "(name a translation FILE like <task>-deu2eng)")
    if run.test_set in refs:
        paths = refs[run.test_set]
        if classify and len(paths) > 1:
            raise EvalError(f"{run.test_set}: one gold label file, not {len(paths)}: {' '.join(paths)}")
        streams = [read_lines(p, "reference") for p in paths]
        for p, s in zip(paths[1:], streams[1:]):
            if len(s) != len(streams[0]):
                raise EvalError(f"references of {run.test_set} differ in length: {paths[0]} has "
                                f"{len(streams[0])} lines, {p} has {len(s)}")
        return (streams if not classify else streams[0]), " + ".join(paths)
    if run.labels is not None:
        return ([run.labels] if not classify else run.labels), f"{run.path} (label field)"
    if classify:
        return release_labels(cond, args.release)
    local = Path(args.data_dir) / f"{run.test_set}.ref.{cond.target}"
    if local.is_file():
        return [read_lines(local, "reference")], str(local)
    return sacrebleu_refs(run, args)


def release_labels(cond, release):
    rel = RELEASE_LABELS[cond.task].format(lang=scoring.LANG2.get(cond.source, cond.source))
    for root in ([Path(release), Path(release) / "gpt_translated_data"] if release else []):
        if (root / rel).is_file():
            return read_lines(root / rel, "gold label"), str(root / rel)
    raise EvalError(f"no gold labels for {testset_name(cond)}: need the release's {rel} "
                    f"(run make data, or pass RELEASE=<release folder> or REF={testset_name(cond)}=<label file>)")


_FETCHED = {}  # test set -> (references, where) or the EvalError: one try per test set and call


def sacrebleu_refs(run, args):
    key = run.test_set
    if key not in _FETCHED:
        try:
            _FETCHED[key] = _sacrebleu_refs(run, args)
        except EvalError as e:
            _FETCHED[key] = e
    if isinstance(_FETCHED[key], EvalError):
        raise _FETCHED[key]
    return _FETCHED[key]


def _sacrebleu_refs(run, args):
    cond = run.condition
    src, tgt = scoring.LANG2.get(cond.source, cond.source), scoring.LANG2.get(cond.target, cond.target)
    pair = f"{src}-{tgt}"
    needed = f"the reference translations of {run.test_set}, one per line"
    if cond.task in WMT_REF_FILES:
        needed = WMT_REF_FILES[cond.task].format(pair=pair, tgt=tgt)
    hint = (f"pass REF={run.test_set}=<file> to make eval (--ref {run.test_set}=<file>), "
            f"or put the file at {Path(args.data_dir) / f'{run.test_set}.ref.{cond.target}'}")
    from sacrebleu.dataset import DATASETS
    dataset = DATASETS.get(cond.task)
    if dataset is None or pair not in dataset.langpairs:
        raise EvalError(f"no reference for {run.test_set}: need {needed}; {hint}")
    if not all(Path(dataset._rawdir, dataset._get_tarball_filename(u)).is_file() for u in dataset.data):
        why = network_problem(dataset.data[0], args.net_timeout) if args.download else "downloads are off (--offline)"
        if why:
            raise EvalError(f"no reference for {run.test_set}: need {needed}; {hint}. "
                            f"sacrebleu could not fetch {cond.task} {pair}: {why}")
        print(f"fetching {cond.task} {pair} with sacrebleu (once; kept in {dataset._outdir}) ...", flush=True)
    try:
        paths = fetch(dataset, pair)
        return [read_lines(p, "reference") for p in paths], f"{' + '.join(paths)} (sacrebleu {cond.task} {pair})"
    except (Exception, SystemExit) as e:  # sacrebleu calls sys.exit on a bad download
        raise EvalError(f"no reference for {run.test_set}: sacrebleu failed to fetch {cond.task} {pair} ({e}); "
                        f"need {needed}; {hint}") from None


def fetch(dataset, pair):
    """sacrebleu's reference files of a test set, downloaded with a stall timeout; no partial file left behind."""
    import socket
    tarballs = [Path(dataset._rawdir, dataset._get_tarball_filename(u)) for u in dataset.data]
    new = [t for t in tarballs if not t.exists()]
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)  # sacrebleu's urlopen has no timeout of its own
    try:
        return dataset.get_reference_files(pair)
    except BaseException:
        for t in new:
            t.unlink(missing_ok=True)
        raise
    finally:
        socket.setdefaulttimeout(old_timeout)


def network_problem(url, timeout):
    """None if the host of url accepts a connection within timeout seconds, else why not."""
    import socket
    import threading
    from urllib.parse import urlparse
    host, result = urlparse(url).hostname, []

    def probe():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(None)
        except OSError as e:
            result.append(f"no connection to {host} ({e})")
    thread = threading.Thread(target=probe, daemon=True)  # name resolution has no timeout of its own
    thread.start()
    thread.join(timeout)
    return result[0] if result else f"no answer from {host} within {timeout:g} s"


# ----------------------------------------------------------------------------- scoring
def score(run, refs, args):
    ref, where = references(run, refs, args)
    n_ref = len(ref[0]) if not scoring.is_classification(run.condition.task) else len(ref)
    if n_ref != len(run.outputs):
        raise EvalError(f"{run.path} has {len(run.outputs)} lines but the reference {where} has {n_ref}: "
                        "they must match line for line (an unfinished run, or a reference of another test set?)")
    run.reference = where
    task = run.condition.task
    if scoring.is_classification(task):
        golds = []
        for number, text in enumerate(ref, 1):
            gold = scoring.parse_gold(task, text)
            if gold is None:
                raise EvalError(f"{where}:{number}: '{text}' is not a {task} label ({', '.join(scoring.LABELS[task])})")
            golds.append(gold)
        run.scores = scoring.accuracy(task, [scoring.parse_label(task, t) for t in run.outputs], golds)
    else:
        hyps = [scoring.first_line(t) if args.first_line else t.replace("\n", " ").strip() for t in run.outputs]
        run.scores = scoring.translation_scores(hyps, [[r.strip() for r in s] for s in ref],
                                                run.condition.target, args.tokenize)
    if run.ratio is not None:
        run.scores["suppressed_share"] = suppressed_share(read_ratio(run.ratio))


def report(run):
    s = run.scores
    lines = [f"{run.file} · {run.model}: {run.path} ({len(run.outputs)} lines) vs {run.reference}"]
    if "bleu" in s:
        lines += [f"  {s['bleu_line']}", f"  {s['chrf_line']}"] + ([f"  note: {s['note']}"] if s["note"] else [])
    else:
        lines.append(f"  accuracy {s['accuracy']:.2f}% ({s['correct']}/{s['n']}), "
                     f"unparsed {s['unparsed']} ({s['unparsed_share']:.2f}%)")
        for lab in s["gold"]:
            lines.append(f"    {lab:<15} gold {s['gold'][lab]:>5}  predicted {s['predicted'][lab]:>5}  "
                         f"correct {s['correct_by_class'][lab]:>5}")
    if "suppressed_share" in s:
        lines.append(f"  suppressed share (all layers): {s['suppressed_share']:.6f}  ({run.ratio.name})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- tables
def row_key(run):
    c = run.condition
    return (ORDER.get(c.kind, 2), len(c.aux), c.shots, c.pivot or "", run.file)


def table_columns(runs):
    """[(header, csv name, value function, decimals, with difference)] of a test set's table."""
    if "bleu" in runs[0].scores:
        cols = [("BLEU", "bleu", lambda s: s["bleu"], 2, True), ("chrF", "chrf", lambda s: s["chrf"], 2, True)]
    else:
        labels = list(runs[0].scores["gold"])
        cols = [("accuracy %", "accuracy", lambda s: s["accuracy"], 2, True),
                ("unparsed %", "unparsed_share", lambda s: s["unparsed_share"], 2, False)]
        cols += [(f"pred {lab}", f"predicted_{lab}", lambda s, lab=lab: s["predicted"][lab], 0, False)
                 for lab in labels]
    if any("suppressed_share" in r.scores for r in runs):
        cols.append(("suppressed %", "suppressed_share", lambda s: s.get("suppressed_share"), 2, True))
    return cols


def make_tables(test_set, model, runs):
    """(markdown, csv) of one test set and model; rows ordered direct, pivots, PiM-1/3/6."""
    runs = sorted(runs, key=row_key)
    base = next((r for r in runs if r.condition.kind == "direct" and not r.condition.shots), None)
    cols = table_columns(runs)
    header = ["condition", "file", "n"]
    csv_header = ["test_set", "model", "condition", "file", "n"]
    for title, name, _, _, diff in cols:
        header += [title] + ([f"Δ {title}"] if diff else [])
        csv_header += [name] + ([f"delta_{name}"] if diff else [])
    md = [f"### {test_set} · {model}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(csv_header + ["reference", "signatures"])
    for run in runs:
        cells, csv_cells = [run.condition.label, run.file, str(len(run.outputs))], \
            [test_set, model, run.condition.label, run.file, len(run.outputs)]
        for title, name, value, decimals, diff in cols:
            v = value(run.scores)
            scale = 100 if name == "suppressed_share" else 1
            cells.append("" if v is None else f"{v * scale:.{decimals}f}")
            csv_cells.append("" if v is None else round(v, 6))
            if diff:
                b = value(base.scores) if base is not None else None
                d = None if v is None or b is None or run is base else v - b
                cells.append("" if d is None else f"{d * scale:+.{decimals}f}")
                csv_cells.append("" if d is None else round(d, 6))
        md.append("| " + " | ".join(cells) + " |")
        sigs = [run.scores[k] for k in ("bleu_signature", "chrf_signature") if k in run.scores]
        writer.writerow(csv_cells + [run.reference, " ".join(sigs)])
    md.append("")
    md.append("Δ: difference from direct" + ("" if base else " (no direct run: no differences)") + ".")
    if "bleu" in runs[0].scores:
        for sig in sorted({r.scores[k] for r in runs for k in ("bleu_signature", "chrf_signature")}):
            md.append(f"`{sig}`  ")
    else:
        gold = runs[0].scores["gold"]
        md.append("Gold: " + ", ".join(f"{lab} {n}" for lab, n in gold.items()) + ". Unparsed answers count as wrong.")
    if "suppressed_share" in [c[1] for c in cols]:
        md.append("suppressed %: share of MLP neurons with activation <= 0, mean over steps and all layers.")
    md.append("References: " + "; ".join(sorted({r.reference for r in runs})))
    return "\n".join(md) + "\n", out.getvalue()


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
    _FETCHED.clear()
    try:
        runs, skipped = find_runs(args.results_dir, args.files, args.models, args.predictions)
        refs = parse_refs(args.ref, runs)
    except (EvalError, FormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for s in skipped:
        print(f"skipped {s}")
    errors, scored = [], []
    for run in sorted(runs, key=lambda r: (r.test_set, r.model, row_key(r))):
        try:
            score(run, refs, args)
        except (EvalError, FormatError) as e:
            errors.append(f"{run.file} · {run.model}: {e}")
            continue
        scored.append(run)
        print(report(run), flush=True)
    tables_dir = Path(args.tables_dir or Path(args.results_dir) / "tables")
    groups = {}
    for run in scored:
        groups.setdefault((run.test_set, run.model), []).append(run)
    for (test_set, model), group in sorted(groups.items()):
        md, table = make_tables(test_set, model, group)
        tables_dir.mkdir(parents=True, exist_ok=True)
        stem = tables_dir / f"eval-{test_set}-{model}"
        write_atomic(stem.with_name(stem.name + ".md"), md)
        write_atomic(stem.with_name(stem.name + ".csv"), table)
        print(f"\n{md}(written to {stem}.md and .csv)")
    if errors:
        print(f"\nerror: {len(errors)} run(s) could not be scored:", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
