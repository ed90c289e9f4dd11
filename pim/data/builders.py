"""What the data builders share: the options that say what to build, and building it.

data/build_prompts.py, data/build_own.py and data/export_llamafactory.py fill a BuildOptions from
their flags; `plan` and `prepare` say which conditions of the test sets (pim/data/testsets.py) can be
built, `build` writes the prompt files and says what it built, what not, and why.
"""
import textwrap
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pim.activation_files import escape_newlines, write_atomic
from pim.data import testsets
from pim.data.testsets import DataError

ROOT = Path(__file__).resolve().parents[2]  # the repository (pim/ is installed in editable mode)
RELEASE = ROOT / "data" / "release"  # the unpacked, verified release (data/fetch_release.py puts it here)
FLORES = None  # FLORES-200 folder (flores200_dataset/ with dev/*.dev) for few-shot prompts; None: 0-shot only
FAILED = testsets.POLICIES[0]  # what to do with failed translations: drop-language (default), keep, drop-item
TASKS = "wmt,xnli,rte,boolq"  # which test sets to build
SHOTS = None  # e.g. "0": only prompts with these numbers of demonstrations; None: 0 and, with FLORES, 1 and 5

POLICY_HELP = ("failed translations ('Request failed!!!', '###over length!!!'): drop-language = leave that "
               "language out of the item's PiM prompt, and give its pivot prompt the direct prompt instead "
               "(every file keeps one line per item); keep = as released (the paper's files); drop-item = "
               "leave the item out of every file of its test set (files then have fewer lines than the test set)")


def add_release_flags(p, out, out_help, flores_help):
    """The flags that say which conditions of the release to build (build_prompts.py, export_llamafactory.py)."""
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


def task_list(text):
    """The test sets of a --tasks value: "wmt,xnli" -> ["wmt", "xnli"]."""
    return [t.strip() for t in text.split(",") if t.strip()]


@dataclass
class BuildOptions:
    """What to build: the flags --shots, --flores, --failed and --only of the builders."""
    shots: str | None = None  # comma-separated numbers of demonstrations, e.g. "0,1,5"; None: 0, and 1, 5 with FLORES
    flores: Path | None = None  # FLORES-200 folder (flores200_dataset/ with dev/*.dev): few-shot demonstrations
    failed: str = testsets.POLICIES[0]  # failed translations: drop-language, keep or drop-item (POLICY_HELP)
    only: tuple = ()  # only these condition names; an error if one cannot be built


def plan(sets, options):
    """[(testset, condition)] to build and {condition name: reasons} of those that cannot be built."""
    try:
        shots = None if options.shots is None else {int(s) for s in options.shots.split(",")}
    except ValueError:
        raise DataError(f"--shots {options.shots}: expected numbers such as 0 or 0,1,5") from None
    allowed = {k for ks in testsets.SHOTS.values() for k in ks}
    if shots is not None and shots - allowed:
        raise DataError(f"--shots {options.shots}: the prompts have {', '.join(map(str, sorted(allowed)))} demonstrations")
    if shots and max(shots) > 0 and options.flores is None:
        raise DataError(f"--shots {options.shots} asks for few-shot prompts, which need FLORES-200 dev (not in the "
                        "release): pass --flores DIR (make data FLORES=DIR), or --shots 0")
    known = {c.name for ts in sets for c in ts.conditions if ts.split == "test"}
    for name in options.only or ():
        if name not in known:
            raise DataError(f"--only {name}: not a condition of the release; "
                            "`python data/build_prompts.py --list` shows them")
    todo, skipped = [], {}
    for ts in sets:
        for cond in ts.conditions:
            if options.only and cond.name not in options.only or shots is not None and cond.shots not in shots:
                continue
            reasons = testsets.lacks(ts, cond)
            if cond.shots and options.flores is None:
                reasons = ["few-shot: needs FLORES-200 dev, not part of the release (--flores DIR)"] + reasons
            if reasons:
                skipped[cond.name] = reasons
            else:
                todo.append((ts, cond))
    if options.only and skipped:
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


def load_flores(options, todo):
    if options.flores is None or not any(c.shots for _, c in todo):
        return None
    langs = dict.fromkeys(lang for ts, c in todo if c.shots
                          for lang in (ts.source, ts.target) + testsets.used_languages(c))
    return testsets.load_flores(options.flores, langs)


def prepare(sets, options):
    """What to build (plan), the FLORES rows it needs, and the items drop-item leaves out per test set."""
    todo, skipped = plan(sets, options)
    flores = load_flores(options, todo)
    by_set = {}
    for ts, c in todo:
        by_set.setdefault(id(ts), (ts, []))[1].append(c)
    drops = {key: dropped_items(ts, conds, options.failed) for key, (ts, conds) in by_set.items()}
    return todo, skipped, flores, drops


def list_conditions(sets, options):
    """Print every condition of the test sets and whether it can be built (and if not, why)."""
    sets = [ts for ts in sets if ts.split == "test"]
    _, skipped, _, _ = prepare(sets, options)  # as build does: FLORES is read, so a bad --flores is an error
    for ts in sets:
        for c in ts.conditions:
            print(f"{c.name:55} {'; '.join(skipped[c.name]) if c.name in skipped else 'can be built'}")


def build(sets, options, out):
    """Write the prompt files of `sets` to the folder `out` and print what was built, what not, and why."""
    sets = [ts for ts in sets if ts.split == "test"]  # fine-tuning sets only go to LLaMA-Factory
    todo, skipped, flores, drops = prepare(sets, options)
    out.mkdir(parents=True, exist_ok=True)
    built, changed_files, changed = [], 0, 0
    for ts, cond in tqdm(todo, desc="prompt files", unit="file"):
        items, n_changed = testsets.prompts_of(ts, cond, options.failed, flores, drops[id(ts)])
        path = out / f"{cond.name}.txt"
        write_atomic(path, "".join(escape_newlines(text) + "\n" for _, text in items))
        built.append((path, len(items)))
        changed_files += bool(n_changed)
        changed += n_changed
    print(f"Built {len(built)} prompt files in {out}/ (lines = prompts):")
    for path, n in built:
        print(f"  {path.stem:55} {n:5}")
    report_failures(sets, todo, options.failed, drops, changed, changed_files)
    report_skipped(skipped)


def report_failures(sets, todo, policy, drops, changed, changed_files):
    """Print the translation files with failed lines, and what the policy did with them."""
    report = failure_report(sets, todo)
    print(f"Failed translations in the files used: {len(report)} files" + (":" if report else "."))
    for line in report:
        print(line)
    if policy == "drop-item":
        n = sum(len(d) for d in drops.values())
        print(f"  policy drop-item: {n} items left out of every file of their test set")
    elif report:
        what = ("hold them as released" if policy == "keep"
                else "lost that language (PiM) or use the direct prompt (pivot)")
        print(f"  policy {policy}: {changed} prompts in {changed_files} files {what}")


def report_skipped(skipped):
    """Print the conditions that were not built, and why."""
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
