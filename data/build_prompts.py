"""Build the prompt files of the paper's conditions from its released data: data/<condition>.txt.

    python data/build_prompts.py                                # what `make data` runs after fetch_release.py
    python data/build_prompts.py --flores ~/flores200_dataset   # the few-shot prompts too
    python data/build_prompts.py --list                         # every condition, and why some cannot be built
    python data/build_prompts.py --only wmt22-GPT4-deu_spa2eng --failed keep

One prompt per line, newlines stored as the two characters \\n, names from pim/conditions.py
(wmt22-deu2eng, wmt22-deu2eng-pivot_spa, wmt22-GPT4-deu_spa_rus_fra2eng, xnli-GPT4-deu_spa_rus_fra, ...).
Line i of every file of a test set is item i of the test set, except with --failed drop-item.
"""
import argparse
import sys
import textwrap
from pathlib import Path

from tqdm import tqdm

import testsets
from testsets import DataError

from pim.activation_files import escape_newlines, write_atomic

ROOT = testsets.ROOT
RELEASE = ROOT / "data" / "release"  # the unpacked, verified release (data/fetch_release.py puts it here)
OUT = ROOT / "data"  # where the <condition>.txt files go
FLORES = None  # FLORES-200 folder (flores200_dataset/ with dev/*.dev) for few-shot prompts; None: 0-shot only
FAILED = testsets.POLICIES[0]  # what to do with failed translations: drop-language (default), keep, drop-item
TASKS = "wmt,xnli,rte,boolq"  # which test sets to build
SHOTS = None  # e.g. "0": only prompts with these numbers of demonstrations; None: 0 and, with FLORES, 1 and 5

POLICY_HELP = ("failed translations ('Request failed!!!', '###over length!!!'): drop-language = leave that "
               "language out of the item's PiM prompt, and give its pivot prompt the direct prompt instead "
               "(every file keeps one line per item); keep = as released (the paper's files); drop-item = "
               "leave the item out of every file of its test set (files then have fewer lines than the test set)")


def add_release_flags(p, out, out_help, flores_help):
    """The flags that say which conditions of the release to build (shared with export_llamafactory.py)."""
    p.add_argument("--release", type=Path, default=RELEASE,
                   help=f"the release folder holding WMT/ XNLI/ RTE/ BoolQ/ (default {RELEASE.relative_to(ROOT)}/)")
    p.add_argument("--out", type=Path, default=out, help=f"{out_help} (default {out.relative_to(ROOT)}/)")
    p.add_argument("--flores", type=Path, default=FLORES,
                   help=f"FLORES-200 folder (flores200_dataset/ holding dev/*.dev) for {flores_help}; "
                        "without it only 0-shot prompts are built")
    p.add_argument("--failed", choices=testsets.POLICIES, default=FAILED, help=POLICY_HELP + f" (default {FAILED})")
    p.add_argument("--tasks", default=TASKS, help=f"comma-separated test sets: wmt, xnli, rte, boolq (default {TASKS})")
    p.add_argument("--shots", default=SHOTS,
                   help="comma-separated numbers of demonstrations to build, e.g. 0 or 0,1,5 (default: 0, and 1 and 5 "
                        "when --flores is given); few-shot needs --flores")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_release_flags(p, OUT, "where to write <condition>.txt", "the few-shot prompts")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="build only these conditions (names as in --list); an error if one cannot be built")
    p.add_argument("--list", action="store_true",
                   help="list every condition of the release and whether it can be built; write nothing")
    return p.parse_args(argv)


def plan(sets, args):
    """[(testset, condition)] to build and {condition name: reasons} of those that cannot be built."""
    try:
        shots = None if args.shots is None else {int(s) for s in args.shots.split(",")}
    except ValueError:
        raise DataError(f"--shots {args.shots}: expected numbers such as 0 or 0,1,5") from None
    allowed = {k for ks in testsets.SHOTS.values() for k in ks}
    if shots is not None and shots - allowed:
        raise DataError(f"--shots {args.shots}: the prompts have {', '.join(map(str, sorted(allowed)))} demonstrations")
    if shots and max(shots) > 0 and args.flores is None:
        raise DataError(f"--shots {args.shots} asks for few-shot prompts, which need FLORES-200 dev (not in the "
                        "release): pass --flores DIR (make data FLORES=DIR), or --shots 0")
    known = {c.name for ts in sets for c in ts.conditions if ts.split == "test"}
    for name in args.only or ():
        if name not in known:
            raise DataError(f"--only {name}: not a condition of the release; "
                            "`python data/build_prompts.py --list` shows them")
    todo, skipped = [], {}
    for ts in sets:
        for cond in ts.conditions:
            if args.only and cond.name not in args.only or shots is not None and cond.shots not in shots:
                continue
            reasons = testsets.lacks(ts, cond)
            if cond.shots and args.flores is None:
                reasons = ["few-shot: needs FLORES-200 dev, not part of the release (--flores DIR)"] + reasons
            if reasons:
                skipped[cond.name] = reasons
            else:
                todo.append((ts, cond))
    if args.only and skipped:
        raise DataError("cannot build " + "; ".join(f"{n}: {', '.join(r)}" for n, r in skipped.items()))
    return todo, skipped


def failure_report(sets, todo):
    """Lines naming the translation files with failed lines, for the test sets that are built."""
    lines = []
    used = {id(ts) for ts, _ in todo}
    for ts in sets:
        if id(ts) not in used:
            continue
        for lang, texts in ts.aux.items():
            for f, items in texts.items():
                bad = [number for number, text in enumerate(items, 1) if testsets.is_failed(text)]
                if bad:
                    lines.append(f"  {ts.files[lang, f]}: {len(bad)} failed (lines {', '.join(map(str, bad))})")
    return lines


def dropped_items(ts, conds, policy):
    """drop-item: the items whose translation failed in any condition of `ts` that is built."""
    if policy != "drop-item":
        return set()
    return {i for c in conds for i in testsets.failed_items(ts, c)}


def load_flores(args, todo):
    if args.flores is None or not any(c.shots for _, c in todo):
        return None
    langs = dict.fromkeys(lang for ts, c in todo if c.shots
                          for lang in (ts.source, ts.target) + testsets.used_languages(c))
    return testsets.load_flores(args.flores, langs)


def prepare(sets, args):
    """What to build (plan), the FLORES rows it needs, and the items drop-item leaves out per test set."""
    todo, skipped = plan(sets, args)
    flores = load_flores(args, todo)
    by_set = {}
    for ts, c in todo:
        by_set.setdefault(id(ts), (ts, []))[1].append(c)
    drops = {key: dropped_items(ts, conds, args.failed) for key, (ts, conds) in by_set.items()}
    return todo, skipped, flores, drops


def build(sets, args):
    """Write the prompt files of `sets` to args.out and print what was built, what not, and why."""
    sets = [ts for ts in sets if ts.split == "test"]  # fine-tuning sets only go to LLaMA-Factory
    todo, skipped, flores, drops = prepare(sets, args)
    if args.list:
        for ts in sets:
            for c in ts.conditions:
                if ts.split == "test":
                    print(f"{c.name:55} {'; '.join(skipped[c.name]) if c.name in skipped else 'can be built'}")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    built, changed_files, changed = [], 0, 0
    for ts, cond in tqdm(todo, desc="prompt files", unit="file"):
        items, n_changed = testsets.prompts_of(ts, cond, args.failed, flores, drops[id(ts)])
        path = args.out / f"{cond.name}.txt"
        write_atomic(path, "".join(escape_newlines(text) + "\n" for _, text in items))
        built.append((path, len(items)))
        changed_files += bool(n_changed)
        changed += n_changed

    print(f"Built {len(built)} prompt files in {args.out}/ (lines = prompts):")
    for path, n in built:
        print(f"  {path.stem:55} {n:5}")
    report = failure_report(sets, todo)
    print(f"Failed translations in the files used: {len(report)} files" + (":" if report else "."))
    for line in report:
        print(line)
    if args.failed == "drop-item":
        n = sum(len(d) for d in drops.values())
        print(f"  policy drop-item: {n} items left out of every file of their test set")
    elif report:
        what = ("hold them as released" if args.failed == "keep"
                else "lost that language (PiM) or use the direct prompt (pivot)")
        print(f"  policy {args.failed}: {changed} prompts in {changed_files} files {what}")
    few = [n for n, r in skipped.items() if r[0].startswith("few-shot")]
    if few:
        print(f"Not built: {len(few)} few-shot files; they need FLORES-200 dev, which is not part of the release "
              "(--flores DIR; make data FLORES=/path/to/flores200_dataset):")
        print(textwrap.fill(", ".join(few), width=110, initial_indent="  ", subsequent_indent="  ",
                            break_on_hyphens=False))
    rest = {n: r for n, r in skipped.items() if n not in few}
    if rest:
        print(f"Not built: {len(rest)} conditions whose translations the release lacks:")
        for name, reasons in rest.items():
            print(f"  {name}: {'; '.join(reasons)}")


def main(argv=None):
    args = parse_args(argv)
    try:
        if not (args.release / "WMT").is_dir():
            raise DataError(f"{args.release}: no release here (no WMT/ folder): run `make data` "
                            "(or data/fetch_release.py), or pass --release DIR")
        build(testsets.release_testsets(args.release, [t.strip() for t in args.tasks.split(",") if t.strip()]), args)
    except DataError as e:
        sys.exit(f"{Path(__file__).name}: error: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
