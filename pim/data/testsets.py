"""Test sets of the paper's release (or a user's own files) and the prompts of their conditions.

A TestSet holds, item by item, the source-language inputs, the translations into the auxiliary
languages and the gold outputs; `prompts_of(testset, condition, ...)` turns one Condition
(pim/data/conditions.py) into its prompts with the templates of pim/data/prompts.py. The builders
(data/build_prompts.py, build_own.py, export_llamafactory.py) only choose what to build (pim/data/builders.py)
and where to write. The release's layout (folders, file names, label files) is written down here only.
"""
from dataclasses import dataclass, field
from pathlib import Path

from pim.data import languages, prompts
from pim.data.conditions import Condition

FAILURE_MARKERS = ("Request failed!!!", "###over length!!!")  # what the translation scripts wrote on failure
POLICIES = ("drop-language", "keep", "drop-item")  # the first is the default
PIM_SIZES = (1, 3, 6)  # PiM-k of the paper: the first k languages of the aux order

# WMT pair folder -> (task, PiM aux orders (PiM-1/3/6 are their prefixes), pivot languages = aux folders).
# The paper's drivers (docs/measures.md, "Conditions"); de->fr has two PiM sets (A and B).
WMT_PAIRS = {
    "de2en": ("wmt22", [("spa", "rus", "fra", "zho", "jpn", "ces")], ("zho", "jpn", "ces", "spa", "rus", "fra")),
    "de2fr": ("wmt22", [("spa", "rus", "ita", "zho", "jpn", "ces"), ("eng", "rus", "spa", "zho", "ita", "ces")],
              ("zho", "eng", "jpn", "ces", "spa", "rus", "ita")),
    "en2de": ("wmt22", [("spa", "rus", "fra", "zho", "jpn", "ces")], ("zho", "jpn", "ces", "spa", "rus", "fra")),
    "en2zh": ("wmt22", [("spa", "rus", "fra", "jpn", "ces", "deu")], ("deu", "jpn", "ces", "spa", "rus", "fra")),
    "is2en": ("wmt21", [("spa", "rus", "fra", "ita", "ces", "deu")], ("deu", "ita", "ces", "spa", "rus", "fra")),
    "zh2en": ("wmt22", [("spa", "rus", "fra", "jpn", "ces", "deu")], ("deu", "jpn", "ces", "spa", "rus", "fra")),
}
SHOTS = {"direct": (0, 1, 5), "pivot": (0, 1), "pim": (0, 1)}  # 0-shot: neuron counting; 1, 5: the paper's drivers

# Classification sets: test language -> aux languages (process_xnli.py `lang_aug`), and where the files are.
XNLI_AUX = {"de": ("es", "ru", "fr"), "fr": ("es", "ru", "de"), "zh": ("es", "fr", "de"), "ru": ("es", "fr", "de")}
ENGLISH_AUX = ("es", "fr", "de")  # lang_aug["en"]: RTE and BoolQ
CLASSIFICATION = {  # task -> (template, fields (multilingual one first), test file, translation file, label file)
    "xnli": ("xnli", ("premise", "hypothesis"), "XNLI/test_set/xnli.{lang}.{field}.txt",
             "XNLI/chatgpt_translation_test/xnli.{lang}.{field}.txt-{aux}/result.txt",
             "XNLI/test_set/xnli.{lang}.label.txt"),
    "rte": ("rte", ("premise", "hypothesis"), "RTE/test_set/RTE.valid.{field}.txt",
            "RTE/chatgpt_translation_test/RTE.valid.{field}.txt-{aux}/result.txt", "RTE/test_set/RTE.valid.label.txt"),
    "boolq": ("boolq", ("passage", "question"), "BoolQ/test_set/valid.{field}.txt",
              "BoolQ/chatgpt_translation_test/BoolQ.valid.{field}.txt-{aux}/result.txt",
              "BoolQ/test_set/valid.label.txt"),
    "boolq-train": ("boolq", ("passage", "question"), "BoolQ/train_set/train.{field}.txt",
                    "BoolQ/chatgpt_translation_train/BoolQ.train.{field}.txt-{aux}/result.txt",
                    "BoolQ/train_set/train.label.txt"),
}
# The WMT references (not in the release): file name with 2-letter codes, and where they are published.
WMT_REFERENCES = {"wmt22": ("generaltest2022.{s}-{t}.ref.A.{t}", "wmt22-news-systems, txt/references/"),
                  "wmt21": ("newstest2021.{s}-{t}.ref.A.{t}", "WMT21 test sets")}


def label_file(task, source):
    """The release's gold label file (relative path) of a classification test set; source: 3-letter code."""
    return CLASSIFICATION[task][4].format(lang=languages.two_letter(source))


def wmt_reference_name(task, source, target):
    """The file name of a WMT test set's reference translations (generaltest2022.de-en.ref.A.en)."""
    return WMT_REFERENCES[task][0].format(s=languages.two_letter(source), t=languages.two_letter(target))


class DataError(Exception):
    """Input that cannot be used; the message names the file (and line) and says what to do."""


@dataclass
class TestSet:
    __test__ = False  # not a pytest class
    task: str  # condition prefix: wmt22, wmt21, xnli, rte, boolq, or a user's own
    source: str  # 3-letter code of the test input
    target: str | None  # translation target; None for classification
    template: str  # "translation", "xnli", "rte" or "boolq"
    inputs: dict  # {field: [text per item]} in the source language; translation uses the field "text"
    aux: dict = field(default_factory=dict)  # {3-letter code: {field: [text per item]}}, complete files only
    missing: dict = field(default_factory=dict)  # {3-letter code: {field: what the release lacks}}
    outputs: list | None = None  # gold label / target text per item, where known
    conditions: list = field(default_factory=list)  # the Conditions to build, in order
    files: dict = field(default_factory=dict)  # {"source" or (3-letter code, field): file it came from}
    split: str = "test"  # "train": only for fine-tuning data, never a prompt file
    names: dict = field(default_factory=dict)  # {3-letter code: language name} beyond pim.data.languages.NAMES

    def name(self, lang):
        return self.names.get(lang) or name_of(lang)

    def __len__(self):
        return len(next(iter(self.inputs.values())))


def read_lines(path, what="file"):
    """The stripped lines of a UTF-8 text file, as the paper's scripts read them."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 ({e.reason}); convert the file to UTF-8") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines]


def is_failed(text):
    return any(marker in text for marker in FAILURE_MARKERS)


def code(name):
    """3-letter code of a release's 2- or 3-letter language code."""
    return languages.three_letter(name)


def name_of(lang):
    try:
        return languages.NAMES[lang]
    except KeyError:
        raise DataError(f"no language name for '{lang}': known codes are {', '.join(languages.NAMES)} "
                        "(build_own.py: add one with --names CODE=Name)") from None


# --- the release -----------------------------------------------------------------------------------

def wmt_testset(release, pair):
    """The WMT test set of one pair folder: the source recovered from the released translation
    prompts (all aux folders must agree on it), the GPT-4 translations, no references."""
    task, orders, pivots = WMT_PAIRS[pair]
    src, tgt = code(pair.split("2")[0]), code(pair.split("2")[1])
    folder = Path(release) / "WMT" / "gpt4_translation_test" / pair
    ts = TestSet(task, src, tgt, "translation", inputs={})
    for aux in pivots:
        sub = folder / f"{task}-{src}2{aux}-1shot-baseline_vhendy"
        prompt_lines, results = read_lines(sub / "prompt.txt"), read_lines(sub / "result.txt")
        if len(prompt_lines) != len(results):
            raise DataError(f"{sub}: prompt.txt has {len(prompt_lines)} lines but result.txt {len(results)}; "
                            "the release is damaged: fetch it again (make data)")
        sources = []
        for number, line in enumerate(prompt_lines, 1):
            try:
                language, text = prompts.recover_source(line)
            except ValueError as e:
                raise DataError(f"{sub / 'prompt.txt'}:{number}: not a released translation prompt: {e}") from None
            if language != name_of(aux):
                raise DataError(f"{sub / 'prompt.txt'}:{number}: translates into {language}, but the folder "
                                f"name says {name_of(aux)}")
            sources.append(text)
        if "text" in ts.inputs:
            first = ts.files["source"]
            if len(sources) != len(ts.inputs["text"]):
                raise DataError(f"{sub / 'prompt.txt'} has {len(sources)} items but {first} has "
                                f"{len(ts.inputs['text'])}: the aux folders of {pair} must hold the same items")
            for number, (a, b) in enumerate(zip(ts.inputs["text"], sources), 1):
                if a != b:
                    raise DataError(f"{sub / 'prompt.txt'}:{number}: its source differs from {first}:{number} "
                                    f"({b[:60]!r} vs {a[:60]!r}): the aux folders of {pair} must hold the same items")
        else:
            ts.inputs["text"], ts.files["source"] = sources, sub / "prompt.txt"
        ts.aux[aux], ts.files[aux, "text"] = {"text": results}, sub / "result.txt"
    ts.conditions = translation_conditions(task, src, tgt, orders, pivots)
    return ts


def translation_conditions(task, src, tgt, orders, pivots, sizes=PIM_SIZES):
    """Direct, pivot through each of `pivots`, PiM-k for k in sizes (prefixes of each order); all shots of SHOTS."""
    conds = [Condition(task, src, tgt, shots=k) for k in SHOTS["direct"]]
    conds += [Condition(task, src, tgt, pivot=p, shots=k) for k in SHOTS["pivot"] for p in pivots]
    pim = dict.fromkeys(order[:size] for k in SHOTS["pim"] for order in orders for size in sizes if size <= len(order))
    conds += [Condition(task, src, tgt, aux=aux, shots=k) for k in SHOTS["pim"] for aux in pim]
    return conds


def classification_testsets(release, task):
    """The test sets of one classification task (one per test language for XNLI). Translations the
    release lacks (absent, empty or short files) are listed in `missing`, not read."""
    template, fields, test_file, trans_file, label_file = CLASSIFICATION[task]
    release = Path(release)
    langs = XNLI_AUX if task == "xnli" else {"en": ENGLISH_AUX}
    sets = []
    for lang, auxes in langs.items():
        paths = {f: release / test_file.format(lang=lang, field=f) for f in fields}
        inputs = {f: read_lines(p) for f, p in paths.items()}
        labels = read_lines(release / label_file.format(lang=lang))
        for f, p in paths.items():
            if len(inputs[f]) != len(labels):
                raise DataError(f"{p} has {len(inputs[f])} lines but {release / label_file.format(lang=lang)} "
                                f"{len(labels)}: the release is damaged: fetch it again (make data)")
        ts = TestSet(task.split("-")[0], code(lang), None, template, inputs, outputs=labels,
                     split="train" if task.endswith("train") else "test")
        ts.files["source"] = paths[fields[0]]
        for aux in auxes:
            texts, gaps = {}, {}
            for f in fields:
                p = release / trans_file.format(lang=lang, field=f, aux=aux)
                lines = read_lines(p) if p.is_file() else None
                if lines is None:
                    gaps[f] = f"{p.relative_to(release)} (absent)"
                elif len(lines) != len(labels):
                    n = len(lines)
                    gaps[f] = f"{p.relative_to(release)} ({'empty' if n == 0 else f'{n} of {len(labels)} lines'})"
                else:
                    texts[f] = lines
                    ts.files[code(aux), f] = p
            ts.aux[code(aux)] = texts
            if gaps:
                ts.missing[code(aux)] = gaps
        aux3 = tuple(code(a) for a in auxes)
        ts.conditions = [Condition(ts.task, ts.source, None)]
        if ts.split == "test":
            ts.conditions += [Condition(ts.task, ts.source, None, pivot=a) for a in aux3]
        ts.conditions.append(Condition(ts.task, ts.source, None, aux=aux3))
        sets.append(ts)
    return sets


def release_testsets(release, tasks=("wmt", "xnli", "rte", "boolq")):
    """Every test set of the release for the given tasks (wmt, xnli, rte, boolq, boolq-train)."""
    sets = []
    for task in tasks:
        if task == "wmt":
            sets += [wmt_testset(release, pair) for pair in WMT_PAIRS]
        elif task in CLASSIFICATION:
            sets += classification_testsets(release, task)
        else:
            raise DataError(f"unknown task '{task}': choose from wmt, {', '.join(CLASSIFICATION)}")
    return sets


def own_testset(task, source, source_file, target, aux_files, names=None, sizes=PIM_SIZES):
    """A user's test set: a source file and its translations {3-letter code: file}, one sentence per
    line, aligned; conditions: direct, pivot through each aux language, PiM-k for k in sizes (the
    first k aux languages in the given order) and PiM with all of them."""
    ts = TestSet(task, source, target, "translation", {"text": read_lines(source_file)}, names=dict(names or {}))
    ts.files["source"] = source_file
    for lang, path in aux_files.items():
        ts.aux[lang], ts.files[lang, "text"] = {"text": read_lines(path)}, path
    for key, path in ts.files.items():
        texts = ts.inputs["text"] if key == "source" else ts.aux[key[0]]["text"]
        if len(texts) != len(ts):
            raise DataError(f"{path} has {len(texts)} lines but {source_file} has {len(ts)}: the translations "
                            "must be aligned with the source, one line per sentence")
        if "" in texts:
            raise DataError(f"{path}:{texts.index('') + 1}: empty line; every line must hold a sentence")
    if not len(ts):
        raise DataError(f"{source_file}: empty file")
    for lang in (source, target, *aux_files):
        ts.name(lang)  # an error now rather than in the middle of the build
    aux = tuple(aux_files)
    ts.conditions = translation_conditions(task, source, target, [aux], aux, sorted({*sizes, len(aux)}))
    return ts


def load_flores(folder, langs):
    """{3-letter code: 997 stripped FLORES-200 dev lines}; folder = flores200_dataset/ or its dev/."""
    folder = Path(folder)
    found = {}
    for lang in langs:
        if lang not in languages.FLORES:
            raise DataError(f"no FLORES-200 file known for '{lang}' (known: {', '.join(languages.FLORES)})")
        stem = languages.FLORES[lang] + ".dev"
        path = next((p for p in (folder / "dev" / stem, folder / stem) if p.is_file()), folder / "dev" / stem)
        lines = read_lines(path, "FLORES-200 dev file (pass the flores200_dataset folder that holds dev/)")
        if len(lines) != languages.FLORES_DEV_LINES:
            raise DataError(f"{path} has {len(lines)} lines, but a FLORES-200 dev file has "
                            f"{languages.FLORES_DEV_LINES}: pass the dev split (not devtest)")
        found[lang] = lines
    return found


# --- conditions -> prompts ---------------------------------------------------------------------------

def used_languages(cond):
    return (cond.pivot,) if cond.pivot else cond.aux


def used_fields(ts, cond):
    """The translated fields a condition reads: a pivot all of them, PiM only the multilingual first one."""
    return list(ts.inputs) if cond.pivot else list(ts.inputs)[:1]


def lacks(ts, cond):
    """What the release lacks to build `cond` (empty if it can be built)."""
    if cond.shots and ts.template != "translation":
        return [f"{ts.template} has no few-shot prompts"]
    need = used_fields(ts, cond)
    out = []
    for lang in used_languages(cond):
        if lang not in ts.aux:
            out.append(f"no translation into {lang}")
        else:
            out += [ts.missing.get(lang, {}).get(f, f"no {f} translated into {lang}")
                    for f in need if f not in ts.aux[lang]]
    return list(dict.fromkeys(out))


def failed_items(ts, cond):
    """{item index: [aux languages whose translation failed]} over the inputs `cond` uses."""
    need = used_fields(ts, cond)
    out = {}
    for lang in used_languages(cond):
        for i in range(len(ts)):
            if any(is_failed(ts.aux[lang][f][i]) for f in need):
                out.setdefault(i, []).append(lang)
    return out


def prompts_of(ts, cond, policy="drop-language", flores=None, dropped=()):
    """[(item index, prompt with real newlines)] of one condition, and how many of them have a failed
    translation. keep: as released; drop-language: PiM leaves out a failed language, a pivot prompt
    through it falls back to the direct prompt; drop-item: the items in `dropped` are left out."""
    if policy not in POLICIES:
        raise DataError(f"unknown policy '{policy}': choose from {', '.join(POLICIES)}")
    failed = failed_items(ts, cond)
    first, *rest = list(ts.inputs)
    src = ts.name(ts.source)
    demos = _demos(ts, cond, flores) if cond.shots else ()
    direct_demos = ()  # the fallback of a pivot prompt is the direct prompt, demos included
    if cond.pivot and cond.shots and failed and policy == "drop-language":
        direct_demos = _demos(ts, Condition(ts.task, ts.source, ts.target, shots=cond.shots), flores)
    out, changed = [], 0
    for i in range(len(ts)):
        if i in dropped:
            continue
        changed += i in failed
        gone = failed.get(i, ()) if policy == "drop-language" else ()
        if cond.pivot and not gone:
            langs = [(ts.name(cond.pivot), ts.aux[cond.pivot])]
        else:
            langs = [(src, ts.inputs)] + [(ts.name(a), ts.aux[a]) for a in cond.aux if a not in gone]
        multi = [(n, texts[first][i]) for n, texts in langs]
        if ts.template == "translation":
            text = prompts.translation_prompt(ts.name(ts.target), multi, direct_demos if cond.pivot and gone else demos)
        elif ts.template == "boolq":
            text = prompts.boolq_prompt(multi, langs[0][1][rest[0]][i])
        else:
            text = prompts.nli_prompt(multi, langs[0][1][rest[0]][i], ts.template)
        out.append((i, text))
    return out, changed


def _demos(ts, cond, flores):
    """The FLORES-200 dev demonstrations of a few-shot translation prompt."""
    if flores is None:
        raise DataError(f"{cond.name}: few-shot prompts need FLORES-200 dev, which the release does not "
                        "contain: pass --flores DIR (FLORES=DIR for make)")
    if cond.aux:
        rows, langs = prompts.PIM_DEMO_ROWS[:cond.shots], (ts.source,) + cond.aux
    else:
        rows, langs = prompts.DIRECT_DEMO_ROWS[:cond.shots], (cond.pivot or ts.source,)
    if cond.shots > len(rows):
        raise DataError(f"{cond.name}: at most {len(rows)} demonstrations are defined")
    return [([(ts.name(lang), flores[lang][r]) for lang in langs], flores[ts.target][r]) for r in rows]


def flores_trainset(ts, flores):
    """Fine-tuning data for a WMT test set's direct and PiM conditions from FLORES-200 dev (the
    release's README: WMT training = FLORES-200 dev; every language human-translated)."""
    langs = (ts.source, ts.target) + tuple(ts.aux)
    rows = load_flores(flores, dict.fromkeys(langs)) if not isinstance(flores, dict) else flores
    train = TestSet(ts.task, ts.source, ts.target, "translation", {"text": rows[ts.source]},
                    aux={a: {"text": rows[a]} for a in ts.aux}, outputs=rows[ts.target], split="train")
    train.conditions = [c for c in ts.conditions if not c.pivot and not c.shots]
    return train
