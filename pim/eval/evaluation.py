"""Scoring a run's generations: translation (BLEU, chrF) or classification (accuracy), and the tables.

Where references come from, in order: --ref, LLaMA-Factory's label field, the release's gold labels
(classification), <data_dir>/<TESTSET>.ref.<target>, sacrebleu's WMT22/WMT21 test sets. The runs are
those of pim/runs/names.py (result files) and LLaMA-Factory predictions; the measures: docs/measures.md.
"""
import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pim.activation_files import read_ratio, read_results
from pim.data.conditions import parse_condition
from pim.data.languages import two_letter
from pim.data.testsets import WMT_REFERENCES, label_file, wmt_reference_name
from pim.eval import scoring
from pim.runs.checks import check_run
from pim.runs.names import Run, find_runs
from pim.stats.neuron_stats import suppressed_share

ORDER = {"direct": 0, "pivot": 1}  # row order; PiM-k rows follow, by k


class EvalError(Exception):
    """A user error: the message says what is wrong and what to do."""


@dataclass
class Scored(Run):
    """A run's generations (a result file, or LLaMA-Factory's predictions) and, once scored, their scores."""
    path: Path | None = None  # where the generations were read from
    outputs: list = field(default_factory=list)
    labels: list | None = None  # LLaMA-Factory's label field, the reference when no --ref is given
    scores: dict | None = None
    reference: str | None = None  # where the reference came from
    note: str | None = None  # of the run's check (pim/runs/checks.py): e.g. that it has no manifest


@dataclass
class Options:
    """Where references come from and how translations are scored (the flags of analysis/evaluate.py)."""
    data_dir: str = "data"  # <data_dir>/<TESTSET>.ref.<target>: a reference when no --ref names one
    release: str | None = "data/release"  # the paper's release: gold labels of XNLI, RTE, BoolQ
    tokenize: str | None = None  # BLEU tokenizer; None: sacrebleu's choice for the target
    first_line: bool = True  # translation: score the first non-empty line of each continuation only
    download: bool = True  # fetch WMT22/WMT21 references with sacrebleu when no --ref is given
    net_timeout: float = 5.0  # seconds to wait for the network before giving up on a download


def read_lines(path, what):
    """Lines of a plain text file (no escapes), with a clear error if it is missing or not UTF-8."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvalError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise EvalError(f"{path}: a folder, not a {what} file (one line per test item)") from None
    except OSError as e:
        raise EvalError(f"{path}: cannot read the {what} file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        line = text_line_of(path, e.start)
        raise EvalError(f"{path}:{line}: not UTF-8; the {what} file must be UTF-8 text") from None
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n") if text else []


def text_line_of(path, offset):
    return path.read_bytes()[:offset].count(b"\n") + 1


# ----------------------------------------------------------------------------- finding the runs
def find_scored(results_dir, files, models, predictions):
    """The runs to score: result files (filtered by files and models) and LLaMA-Factory predictions,
    and the result files skipped because their names are no conditions."""
    results_dir = Path(results_dir)
    runs, skipped = [read_predictions(spec) for spec in predictions], []
    found = find_runs(results_dir, "result")
    have = {(r.file, r.model) for r in found + runs}
    for file in files:
        if parse_condition(file) is None:
            raise EvalError(f"--files {file}: not a condition name (pim/data/conditions.py), e.g. wmt22-deu2eng, "
                            "wmt22-GPT4-deu_spa_rus_fra2eng, xnli-deu")
        if not any(f == file for f, _ in have):
            raise EvalError(f"no result file {results_dir}/{file}-result-<MODEL>.txt: run make infer FILE={file} first")
    for model in models:
        if not any(m == model for _, m in have):
            raise EvalError(f"no result file {results_dir}/<FILE>-result-{model}.txt")
    for run in found:
        if (files and run.file not in files) or (models and run.model not in models):
            continue
        if run.condition is None:
            skipped.append(f"{run.result.name} (the name is not a condition of pim/data/conditions.py)")
            continue
        try:
            outputs = read_results(run.result)
        except UnicodeDecodeError as e:
            raise EvalError(f"{run.result}:{text_line_of(run.result, e.start)}: not UTF-8; is it a result file?") from None
        runs.append(Scored(run.file, run.model, index=run.index, ratio=run.ratio, result=run.result, path=run.result,
                           outputs=outputs))
    if not runs:
        raise EvalError(f"nothing to score: no result files{' of ' + ' '.join(files) if files else ''} in "
                        f"{results_dir}/ (run make infer or make demo first, or pass --results-dir)")
    return runs, skipped


def read_predictions(spec):
    """A Run from LLaMA-Factory's generated_predictions.jsonl; 'FILE:MODEL=PATH' or PATH in <MODEL>/<FILE>/."""
    m = re.match(r"^([^=:/\s]+):([^=/\s]+)=(.+)$", spec)
    if m:
        file, model, path = m[1], m[2], Path(m[3])
    else:
        path = Path(spec)
        file, model = path.resolve().parent.name, path.resolve().parent.parent.name
    if not path.is_file():
        raise EvalError(f"--predictions {spec}: no such file {path} (LLaMA-Factory writes "
                        "generated_predictions.jsonl into its output folder)")
    if parse_condition(file) is None:
        raise EvalError(f"--predictions {spec}: cannot tell the condition ('{file}' is not a condition name); "
                        "write it as FILE:MODEL=PATH, e.g. xnli-deu:qwen-7b-lora=saves/generated_predictions.jsonl")
    outputs, labels = [], []
    for number, line in enumerate(read_lines(path, "predictions"), 1):
        try:
            row = json.loads(line)
            predict = row["predict"]
            labels.append(None if row.get("label") is None else str(row["label"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise EvalError(f"{path}:{number}: expected a JSON object with a \"predict\" field "
                            "(LLaMA-Factory's generated_predictions.jsonl)") from None
        if not isinstance(predict, str):  # null would be scored as the text "None"
            raise EvalError(f"{path}:{number}: \"predict\" is {json.dumps(predict)}, not a text: the model's output "
                            "is missing; generate the predictions again, or remove the line and its reference")
        outputs.append(predict)
    return Scored(file, model, path=path, outputs=outputs,
                  labels=labels if all(x is not None for x in labels) else None)


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
            keyed.setdefault(cond.test_set_name, []).append(path)
    if bare:
        rest = sorted({r.test_set for r in runs if r.test_set not in keyed})
        if len(rest) > 1:
            raise EvalError(f"--ref {bare[0]} without a test set name, but the runs span {', '.join(rest)}: "
                            f"give it as TESTSET=PATH (e.g. --ref {rest[0]}={bare[0]}) or select runs with --files")
        if rest:
            keyed[rest[0]] = bare
    return keyed


def references(run, refs, options):
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
        return release_labels(cond, options.release)
    local = Path(options.data_dir) / f"{run.test_set}.ref.{cond.target}"
    if local.is_file():
        return [read_lines(local, "reference")], str(local)
    return sacrebleu_refs(run, options)


def release_labels(cond, release):
    rel = label_file(cond.task, cond.source)
    for root in ([Path(release), Path(release) / "gpt_translated_data"] if release else []):
        if (root / rel).is_file():
            return read_lines(root / rel, "gold label"), str(root / rel)
    raise EvalError(f"no gold labels for {cond.test_set_name}: need the release's {rel} "
                    f"(run make data, or pass RELEASE=<release folder> or REF={cond.test_set_name}=<label file>)")


_FETCHED = {}  # test set -> (references, where) or the EvalError: one try per test set and call


def forget_fetched():
    """Try the downloads again (once per test set and call of analysis/evaluate.py)."""
    _FETCHED.clear()


def sacrebleu_refs(run, options):
    key = run.test_set
    if key not in _FETCHED:
        try:
            _FETCHED[key] = _sacrebleu_refs(run, options)
        except EvalError as e:
            _FETCHED[key] = e
    if isinstance(_FETCHED[key], EvalError):
        raise _FETCHED[key]
    return _FETCHED[key]


def _sacrebleu_refs(run, options):
    cond = run.condition
    pair = f"{two_letter(cond.source)}-{two_letter(cond.target)}"
    needed = f"the reference translations of {run.test_set}, one per line"
    if cond.task in WMT_REFERENCES:
        needed = f"{wmt_reference_name(cond.task, cond.source, cond.target)} ({WMT_REFERENCES[cond.task][1]})"
    hint = (f"pass REF={run.test_set}=<file> to make eval (--ref {run.test_set}=<file>), "
            f"or put the file at {Path(options.data_dir) / f'{run.test_set}.ref.{cond.target}'}")
    from sacrebleu.dataset import DATASETS
    dataset = DATASETS.get(cond.task)
    if dataset is None or pair not in dataset.langpairs:
        raise EvalError(f"no reference for {run.test_set}: need {needed}; {hint}")
    if not all(Path(dataset._rawdir, dataset._get_tarball_filename(u)).is_file() for u in dataset.data):
        why = network_problem(dataset.data[0], options.net_timeout) if options.download else "downloads are off (--offline)"
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
def score(run, refs, options):
    ratios = read_ratio(run.ratio) if run.ratio is not None else None
    if run.result is not None:  # a run of make infer: its files against each other and its manifest
        run.note = check_run(run, ratio=ratios)
    ref, where = references(run, refs, options)
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
        hyps = [scoring.first_line(t) if options.first_line else t.replace("\n", " ").strip() for t in run.outputs]
        run.scores = scoring.translation_scores(hyps, [[r.strip() for r in s] for s in ref],
                                                run.condition.target, options.tokenize)
    if ratios is not None:
        run.scores["suppressed_share"] = suppressed_share(ratios)


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
    if run.note:
        lines.append(f"  {run.note}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- tables
def row_key(run):
    c = run.condition
    return (ORDER.get(c.kind, 2), len(c.aux), c.shots, c.pivot or "", run.file)


def table_columns(runs):
    """[(header, csv name, value function, with difference)] of a test set's table."""
    if "bleu" in runs[0].scores:
        cols = [("bleu", lambda s: s["bleu"], True), ("chrf", lambda s: s["chrf"], True)]
    else:
        labels = list(runs[0].scores["gold"])
        cols = [("accuracy", lambda s: s["accuracy"], True), ("unparsed_share", lambda s: s["unparsed_share"], False)]
        cols += [(f"predicted_{lab}", lambda s, lab=lab: s["predicted"][lab], False) for lab in labels]
    if any("suppressed_share" in r.scores for r in runs):
        cols.append(("suppressed_share", lambda s: s.get("suppressed_share"), True))
    return [(column_title(name), name, value, diff) for name, value, diff in cols]


TITLES = {"bleu": "BLEU", "chrf": "chrF", "accuracy": "accuracy %", "unparsed_share": "unparsed %",
          "suppressed_share": "suppressed %"}  # the Markdown header of each score's CSV column


def column_title(name):
    """The Markdown header of a score's CSV column: bleu -> BLEU, delta_chrf -> Δ chrF, predicted_x -> pred x."""
    if name.startswith("delta_"):
        return f"Δ {column_title(name[len('delta_'):])}"
    return TITLES.get(name) or (f"pred {name[len('predicted_'):]}" if name.startswith("predicted_") else name)


def score_text(name, value, signed=False):
    """A score as the Markdown table shows it, from its CSV column name (delta_<name> for a difference):
    2 decimals, counts of predicted labels none, the suppressed share in percent; '' where missing."""
    if value is None:
        return ""
    name = name.removeprefix("delta_")
    scale = 100 if name == "suppressed_share" else 1
    decimals = 0 if name.startswith("predicted_") else 2
    return f"{value * scale:{'+' if signed else ''}.{decimals}f}"


CSV_ONLY = ("test_set", "model", "reference", "signatures")  # columns of the CSV that the Markdown table has not


def shown_table(header, rows):
    """(header, rows) of an evaluation table's CSV (as read: strings) as its Markdown table shows them."""
    keep = [i for i, name in enumerate(header) if name not in CSV_ONLY]
    shown = []
    for row in rows:
        cells = []
        for i in keep:
            name, cell = header[i], (row[i] if i < len(row) else "")
            try:
                number = None if name in ("condition", "file", "n") or cell == "" else float(cell)
            except ValueError:
                number = None
            cells.append(cell if number is None else score_text(name, number, signed=name.startswith("delta_")))
        shown.append(cells)
    return [column_title(header[i]) for i in keep], shown


def make_tables(test_set, model, runs):
    """(markdown, csv) of one test set and model; rows ordered direct, pivots, PiM-1/3/6."""
    runs = sorted(runs, key=row_key)
    base = next((r for r in runs if r.condition.kind == "direct" and not r.condition.shots), None)
    cols = table_columns(runs)
    header = ["condition", "file", "n"]
    csv_header = ["test_set", "model", "condition", "file", "n"]
    for title, name, _, diff in cols:
        header += [title] + ([f"Δ {title}"] if diff else [])
        csv_header += [name] + ([f"delta_{name}"] if diff else [])
    md = [f"### {test_set} · {model}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(csv_header + ["reference", "signatures"])
    for run in runs:
        cells, csv_cells = [run.condition.label, run.file, str(len(run.outputs))], \
            [test_set, model, run.condition.label, run.file, len(run.outputs)]
        for title, name, value, diff in cols:
            v = value(run.scores)
            cells.append(score_text(name, v))
            csv_cells.append("" if v is None else round(v, 6))
            if diff:
                b = value(base.scores) if base is not None else None
                d = None if v is None or b is None or run is base else v - b
                cells.append(score_text(name, d, signed=True))
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
