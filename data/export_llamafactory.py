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

import build_prompts
import testsets
from testsets import DataError

from pim.activation_files import unescape_newlines, write_atomic
from pim.prompts import SHORT

ROOT = testsets.ROOT
OUT = ROOT / "data" / "llamafactory"  # LLaMA-Factory dataset_dir (ignored by git)
# which conditions (--release, --flores, --failed, --tasks, --shots): the defaults of build_prompts.py
REFERENCES = None  # folder with generaltest2022.<s>-<t>.ref.A.<t>, newstest2021.is-en.ref.A.en (searched recursively)
COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": "history"}
REFERENCE_FILES = {"wmt22": "generaltest2022.{s}-{t}.ref.A.{t}", "wmt21": "newstest2021.{s}-{t}.ref.A.{t}"}


def record(prompt, output):
    return {"instruction": prompt, "input": "", "output": output, "history": []}


def attach_references(sets, folder):
    """Set the outputs of the WMT test sets to the references found under `folder`."""
    two = {v: k for k, v in SHORT.items()}  # 3-letter -> 2-letter code of the WMT file names
    for ts in sets:
        if ts.task not in REFERENCE_FILES or ts.split != "test":
            continue
        name = REFERENCE_FILES[ts.task].format(s=two[ts.source], t=two[ts.target])
        found = sorted(Path(folder).rglob(name))
        if not found:
            raise DataError(f"--references {folder}: no {name} in it (it is in wmt22-news-systems/txt/references "
                            "or wmt21-news-systems/txt/references)")
        refs = testsets.read_lines(found[0])
        if len(refs) != len(ts):
            raise DataError(f"{found[0]} has {len(refs)} lines but the {ts.task} {two[ts.source]}-{two[ts.target]} "
                            f"test set {len(ts)}")
        ts.outputs = refs


def datasets_of(args):
    """{dataset name: [records]} of the release's conditions."""
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    sets = testsets.release_testsets(args.release, tasks + (["boolq-train"] if "boolq" in tasks else []))
    if args.references:
        attach_references(sets, args.references)
    if args.flores:
        wmt = [ts for ts in sets if ts.template == "translation"]
        langs = dict.fromkeys(lang for ts in wmt for lang in (ts.source, ts.target, *ts.aux))
        rows = testsets.load_flores(args.flores, langs)
        sets += [testsets.flores_trainset(ts, rows) for ts in wmt]
    todo, _, flores, drops = build_prompts.prepare(sets, args)
    out = {}
    for ts, cond in tqdm(todo, desc="datasets", unit="set"):
        items, _ = testsets.prompts_of(ts, cond, args.failed, flores, drops[id(ts)])
        name = cond.name + ("-train" if ts.split == "train" else "")
        out[name] = [record(text, ts.outputs[i] if ts.outputs else "") for i, text in items]
    return out, sum(1 for ts, _ in todo if ts.outputs is None and ts.split == "test")


def prompt_file_dataset(args):
    """{name: [records]} of one prompt file and its aligned outputs."""
    prompts = [unescape_newlines(line).strip() for line in testsets.read_lines(args.prompts)]
    outputs = testsets.read_lines(args.outputs) if args.outputs else [""] * len(prompts)
    if len(outputs) != len(prompts):
        raise DataError(f"{args.outputs} has {len(outputs)} lines but {args.prompts} has {len(prompts)}: "
                        "outputs must be aligned with the prompts, one line each")
    return {args.name or args.prompts.stem: [record(p, o) for p, o in zip(prompts, outputs)]}


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
    build_prompts.add_release_flags(p, OUT, "LLaMA-Factory dataset_dir to write",
                                    "the few-shot test sets and the WMT -train sets")
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
            datasets = prompt_file_dataset(args)
        else:
            only, args.only, args.list = args.only, None, False
            if not (args.release / "WMT").is_dir():
                raise DataError(f"{args.release}: no release here (no WMT/ folder): run `make data`, "
                                "or pass --release DIR")
            datasets, unlabelled = datasets_of(args)
            if only:
                unknown = [n for n in only if n not in datasets]
                if unknown:
                    raise DataError(f"--only: cannot export {', '.join(unknown)} (not a condition that can be "
                                    "built from the release; `python data/build_prompts.py --list` shows them)")
                datasets = {n: datasets[n] for n in only}
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
