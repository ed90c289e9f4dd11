"""Export the conditions as LLaMA-Factory datasets: data/llamafactory/<name>.json and dataset_info.json.

    python data/export_llamafactory.py                                 # every condition (what `make data` runs)
    python data/export_llamafactory.py --only xnli-GPT4-deu_spa_rus_fra boolq-GPT4-eng_spa_fra_deu-train
    python data/export_llamafactory.py --references ~/wmt22-news-systems/txt/references   # WMT outputs
    python data/export_llamafactory.py --prompts data/own-GPT4-deu_spa2eng.txt --outputs refs.en   # any prompt file

Alpaca format (LLaMA-Factory >= 0.3.2): a JSON array of {"instruction": prompt with real newlines,
"input": "", "output": gold label or reference, "history": []}, registered in dataset_info.json with
its columns. Test conditions keep their names (wmt22-GPT4-deu_spa2eng, xnli-deu, ...); fine-tuning
sets end in -train: BoolQ train (direct and PiM, from the release) and, with --flores, WMT direct and
PiM sets from FLORES-200 dev (the release's README: WMT training = FLORES-200 dev). The release has
no WMT references: without --references the WMT outputs are empty (inference only). The same inputs
give byte-identical files.
"""
import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from pim.activation_files import unescape_newlines, write_atomic
from pim.data import languages, testsets
from pim.data.builders import ROOT, BuildOptions, add_release_flags, prepare, task_list
from pim.data.testsets import DataError

OUT = ROOT / "data" / "llamafactory"  # LLaMA-Factory dataset_dir (ignored by git)
# which conditions (--release, --flores, --failed, --tasks, --shots): the defaults of pim/data/builders.py
REFERENCES = None  # folder with generaltest2022.<s>-<t>.ref.A.<t>, newstest2021.is-en.ref.A.en (searched recursively)
COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": "history"}


def record(prompt, output):
    return {"instruction": prompt, "input": "", "output": output, "history": []}


def attach_references(sets, folder):
    """Set the outputs of the WMT test sets to the references found under `folder`."""
    for ts in sets:
        if ts.task not in testsets.WMT_REFERENCES or ts.split != "test":
            continue
        name = testsets.wmt_reference_name(ts.task, ts.source, ts.target)
        found = sorted(Path(folder).rglob(name))
        if not found:
            raise DataError(f"--references {folder}: no {name} in it (it is in wmt22-news-systems/txt/references "
                            "or wmt21-news-systems/txt/references)")
        refs = testsets.read_lines(found[0])
        if len(refs) != len(ts):
            pair = "-".join(map(languages.two_letter, (ts.source, ts.target)))
            raise DataError(f"{found[0]} has {len(refs)} lines but the {ts.task} {pair} "
                            f"test set {len(ts)}")
        ts.outputs = refs


def datasets_of(release, tasks, options, references=None):
    """{dataset name: [records]} of the release's conditions (tasks: wmt, xnli, rte, boolq), and how many
    WMT test sets have no outputs; references: the folder of the WMT references, if any."""
    sets = testsets.release_testsets(release, tasks + (["boolq-train"] if "boolq" in tasks else []))
    if references:
        attach_references(sets, references)
    if options.flores:
        wmt = [ts for ts in sets if ts.template == "translation"]
        langs = dict.fromkeys(lang for ts in wmt for lang in (ts.source, ts.target, *ts.aux))
        rows = testsets.load_flores(options.flores, langs)
        sets += [testsets.flores_trainset(ts, rows) for ts in wmt]
    todo, _, flores, drops = prepare(sets, options)
    out = {}
    for ts, cond in tqdm(todo, desc="datasets", unit="set"):
        items, _ = testsets.prompts_of(ts, cond, options.failed, flores, drops[id(ts)])
        name = cond.name + ("-train" if ts.split == "train" else "")
        out[name] = [record(text, ts.outputs[i] if ts.outputs else "") for i, text in items]
    return out, sum(1 for ts, _ in todo if ts.outputs is None and ts.split == "test")


def prompt_file_dataset(prompt_file, output_file=None, name=None):
    """{name: [records]} of one prompt file and its aligned outputs (empty without an output file)."""
    prompts = [unescape_newlines(line).strip() for line in testsets.read_lines(prompt_file)]
    outputs = testsets.read_lines(output_file) if output_file else [""] * len(prompts)
    if len(outputs) != len(prompts):
        raise DataError(f"{output_file} has {len(outputs)} lines but {prompt_file} has {len(prompts)}: "
                        "outputs must be aligned with the prompts, one line each")
    return {name or prompt_file.stem: [record(p, o) for p, o in zip(prompts, outputs)]}


def write(datasets, out):
    """Write <name>.json for each dataset and merge their entries into dataset_info.json."""
    out.mkdir(parents=True, exist_ok=True)
    info_path = out / "dataset_info.json"
    info = {}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{info_path}:{e.lineno}: not JSON ({e.msg}); delete or fix it") from None
    for name, records in datasets.items():
        write_atomic(out / f"{name}.json", json.dumps(records, ensure_ascii=False, indent=2) + "\n")
        info[name] = {"file_name": f"{name}.json", "columns": COLUMNS}
    write_atomic(info_path, json.dumps(info, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_release_flags(p, OUT, "LLaMA-Factory dataset_dir to write", "the few-shot test sets and the WMT -train sets")
    p.add_argument("--references", type=Path, default=REFERENCES,
                   help="folder with the WMT references (generaltest2022.de-en.ref.A.en, ...; searched recursively); "
                        "without it WMT outputs are empty")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="export only these datasets (condition names, -train for fine-tuning sets)")
    p.add_argument("--prompts", type=Path,
                   help="instead of the release: export this prompt file (one prompt per line, \\n escaped)")
    p.add_argument("--outputs", type=Path,
                   help="with --prompts: the expected outputs, one line per prompt (default: empty outputs)")
    p.add_argument("--name", help="with --prompts: the dataset name (default: the prompt file's name without .txt)")
    args = p.parse_args(argv)
    try:
        if args.prompts:
            datasets = prompt_file_dataset(args.prompts, args.outputs, args.name)
        else:
            if not (args.release / "WMT").is_dir():
                raise DataError(f"{args.release}: no release here (no WMT/ folder): run `make data`, "
                                "or pass --release DIR")
            options = BuildOptions(args.shots, args.flores, args.failed)
            datasets, unlabelled = datasets_of(args.release, task_list(args.tasks), options, args.references)
            if args.only:
                unknown = [n for n in args.only if n not in datasets]
                if unknown:
                    raise DataError(f"--only: cannot export {', '.join(unknown)} (not a condition that can be "
                                    "built from the release; `python data/build_prompts.py --list` shows them)")
                datasets = {n: datasets[n] for n in args.only}
        write(datasets, args.out)
    except DataError as e:
        sys.exit(f"{Path(__file__).name}: error: {e}")
    train = sorted(n for n in datasets if n.endswith("-train"))
    print(f"Exported {len(datasets)} LLaMA-Factory datasets to {args.out}/ (dataset_info.json updated): "
          f"{len(datasets) - len(train)} test sets, {len(train)} fine-tuning sets ({', '.join(train) or 'none'})")
    if not args.prompts and unlabelled:
        print(f"  {unlabelled} WMT test sets have empty outputs: the release has no references (--references DIR)")
    if not args.prompts and not args.flores:
        print("  no few-shot or WMT fine-tuning sets: they need FLORES-200 dev (--flores DIR; make data FLORES=DIR)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
