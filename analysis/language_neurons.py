"""Language-specific neurons of one model (LAPE, Tang et al. 2024) from its corpus runs, one per language.

    make lape MODEL=bloom-7b1                                  # every results/corpus-<lang>-index-<MODEL>.jsonl
    make lape MODEL=bloom-7b1 LANGS="deu eng fra" ARGS="--top-rate 0.02"
    python analysis/language_neurons.py --model bloom-7b1 --direct wmt22-deu2eng --pim wmt22-GPT4-deu_spa_rus_fra2eng

Reads results/<PREFIX><lang>-index-<MODEL>.jsonl and their manifests (the counted tokens; `make corpus`),
computes per neuron the activation probability in each language, LAPE (the entropy of the probabilities
normalised over languages) and the selection of pim/lape.select (docs/lape.md). Writes
  results/neurons/<MODEL>-language-neurons.json   per language the (layer, neuron) pairs, the settings and bars
  results/tables/<MODEL>-language-neurons.{csv,md}   neurons per language and layer
  results/tables/<MODEL>-language-neurons-overlap.{csv,md}   language x language: neurons shared
  results/figures/<MODEL>-language-neurons.png   their distribution over layers, per language
and with --direct and --pim (FILE names of generation runs of the same model, or index file paths):
  results/tables/<MODEL>-language-neurons-pim.{csv,md}   of the neurons PiM suppresses (count > 0 in
  direct, 0 in PiM), how many are specific to each language.
"""
import json
from pathlib import Path

import numpy as np

from pim import cli
from pim.activation_files import read_index
from pim.figures import line_colours, save_figure
from pim.runs.corpus_files import read_corpus_run
from pim.runs.names import run_paths
from pim.stats import lape
from pim.tables import csv_text, markdown_table, percent, write_text

# ----------------------------------------------------------------------------- defaults (flags override)
RESULTS_DIR = "results"  # where the corpus runs are; neurons/, tables/, figures/ are written inside it
MODEL = "tiny-bloom"  # the MODEL part of the corpus runs' names
LANGS = []  # languages (3-letter codes); []: every <PREFIX><lang> corpus run of the model found
PREFIX = "corpus-"  # the corpus runs' FILE is <PREFIX><lang> (make data: corpus-deu, ...; the demo: sample-corpus-)
TOP_RATE = lape.TOP_RATE  # share of all neurons kept: those of lowest LAPE (the paper's 1%)
FILTER_QUANTILE = lape.FILTER_QUANTILE  # a candidate has some language's probability above this quantile
BAR_QUANTILE = lape.BAR_QUANTILE  # a kept neuron belongs to the languages whose probability is above this quantile
# fewer counted tokens in a language's corpus run are refused: its probabilities are multiples of 1/tokens, so
# coarse that its neurons top the quantiles (a run of 5 tokens took 98 of 102 neurons); the papers count ~1e8
MIN_TOKENS = 100
WIDTH, HEIGHT, DPI = 1200, 600, 100  # the figure, in pixels
# -----------------------------------------------------------------------------


def find_languages(results_dir, model, prefix):
    """The languages with a corpus run <prefix><lang>-index-<model>.jsonl, sorted."""
    found = sorted(Path(results_dir).glob(f"{prefix}*-index-{model}.jsonl"))
    return [p.name[len(prefix):-len(f"-index-{model}.jsonl")] for p in found
            if "-" not in p.name[len(prefix):-len(f"-index-{model}.jsonl")]]


# what must be equal in the corpus runs of all languages (their manifests' settings)
SAME_SETTINGS = ("model_source", "revision", "config_sha256", "weights_sha256", "gguf_sha256", "dtype", "max_length",
                 "positions", "deactivate")
IDENTITY = ("config_sha256", "weights_sha256", "gguf_sha256")  # the model a neuron file is for (pim/models/deactivation.py)


def select_neurons(results_dir, model, langs, prefix, top_rate, filter_quantile, bar_quantile, min_tokens=MIN_TOKENS):
    """(Selection, probabilities [layers, width, languages], tokens per language, the model's identity: its
    config, weights and GGUF hashes) from the corpus runs."""
    counts, tokens, settings = [], [], []
    for lang in langs:
        c, t, manifest = read_corpus_run(results_dir, f"{prefix}{lang}", model)
        if t < min_tokens:
            raise cli.UserError(f"{run_paths(results_dir, f'{prefix}{lang}', model)['manifest']}: {t} tokens counted "
                                f"for {lang}, fewer than --min-tokens {min_tokens}: its probabilities are too coarse "
                                "to compare (they would take most of the neurons); count more text (make corpus), "
                                "or lower --min-tokens")
        if counts and c.shape != counts[0].shape:
            raise cli.UserError(f"{prefix}{lang}: {c.shape[0]} layers x {c.shape[1]} neurons, but {prefix}{langs[0]} "
                                f"has {counts[0].shape[0]} x {counts[0].shape[1]}: not runs of one model")
        counts.append(c)
        tokens.append(t)
        settings.append({k: manifest.get("settings", {}).get(k) for k in SAME_SETTINGS})
    differ = [k for k in SAME_SETTINGS if any(s[k] != settings[0][k] for s in settings)]
    if differ:
        runs = "; ".join(f"{prefix}{lang}: " + ", ".join(f"{k} {s[k]!r}" for k in differ) for lang, s in zip(langs, settings))
        raise cli.UserError(f"the corpus runs of {model} were made with different settings ({runs}): LAPE compares "
                            "languages only under equal ones; redo the odd runs (make corpus ... ARGS=--overwrite)")
    try:
        probs = lape.activation_probabilities(counts, tokens)
        identity = {k: settings[0][k] for k in IDENTITY if settings[0][k] is not None}
        return (lape.select(probs, langs, top_rate, filter_quantile, bar_quantile), probs, dict(zip(langs, tokens)),
                identity)
    except ValueError as e:
        raise cli.UserError(str(e)) from None


def per_layer(selection, layers):
    """{lang: int [layers]} neurons of each language per layer."""
    out = {}
    for lang, pairs in selection.neurons.items():
        out[lang] = np.bincount([layer for layer, _ in pairs], minlength=layers).astype(int)
    return out


def overlap(selection):
    """[[shared neurons of languages a and b]]: the diagonal holds each language's own count."""
    sets = [set(selection.neurons[lang]) for lang in selection.languages]
    return [[len(a & b) for b in sets] for a in sets]


def pim_suppressed(selection, direct, pim):
    """(suppressed (layer, neuron) count, {lang: how many of them are lang's}, how many are any language's)."""
    if direct.shape != pim.shape:
        raise cli.UserError(f"direct has {direct.shape} (layers x neurons), PiM {pim.shape}: not runs of one model")
    mask = (direct > 0) & (pim == 0)
    by_lang = {lang: sum(bool(mask[l, n]) for l, n in pairs) for lang, pairs in selection.neurons.items()}
    anyone = {p for pairs in selection.neurons.values() for p in pairs}
    return int(mask.sum()), by_lang, sum(bool(mask[l, n]) for l, n in anyone)


def draw(layer_counts, path, title, width, height, dpi, note=""):
    from matplotlib.figure import Figure

    langs = list(layer_counts)
    layers = len(next(iter(layer_counts.values())))
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")
    ax = fig.subplots()
    x = np.arange(layers)
    bar = 0.8 / max(len(langs), 1)
    for i, (lang, colour) in enumerate(zip(langs, line_colours(len(langs)))):
        ax.bar(x + (i - (len(langs) - 1) / 2) * bar, layer_counts[lang], width=bar, color=colour,
               label=f"{lang} ({int(layer_counts[lang].sum()):,})")
    ax.set_xlabel("layer")
    ax.set_ylabel("language-specific neurons in the layer")
    ax.set_xticks(x if layers <= 40 else x[::max(layers // 20, 1)])
    fig.suptitle(title, fontsize=11)
    ax.set_title(note, fontsize=9)
    ax.legend(title="language (its neurons in all layers)", fontsize=8, ncols=min(len(langs), 8))
    return save_figure(fig, path, dpi)


def index_of(name, results_dir, model):
    path = Path(name) if name.endswith(".jsonl") else run_paths(results_dir, name, model)["index"]
    if not path.is_file():
        raise cli.UserError(f"{path}: no such index file (run `make infer FILE=... MODEL={model}` first)")
    return read_index(path)


def write_table(tables, stem, header, rows):
    return [write_text(tables / f"{stem}.csv", csv_text(header, rows)),
            write_text(tables / f"{stem}.md", markdown_table(header, rows))]


def run(args):
    results = Path(args.results_dir)
    langs = cli.given_once(args.langs, "--langs") or find_languages(results, args.model, args.prefix)
    if len(langs) < 2:
        raise cli.UserError(f"LAPE needs corpus runs of at least 2 languages of {args.model}, found "
                            f"{', '.join(langs) or 'none'} ({results}/{args.prefix}<lang>-index-{args.model}.jsonl; "
                            f"`make corpus FILE={args.prefix}deu MODEL={args.model}`)")
    if bool(args.direct) != bool(args.pim):
        raise cli.UserError("--direct and --pim go together")
    sel, probs, tokens, identity = select_neurons(results, args.model, langs, args.prefix, args.top_rate,
                                                  args.filter_quantile, args.bar_quantile, args.min_tokens)
    layers, width, _ = probs.shape
    stem = f"{args.model}-language-neurons"
    data = {"model": args.model, "model_identity": identity, "languages": langs, "files": [f"{args.prefix}{lang}" for lang in langs],
            "tokens": tokens, "layers": layers, "width": width, "settings": sel.settings,
            "filter_value": sel.filter_value, "bar_value": sel.bar_value, "kept": sel.kept.tolist(),
            "neurons": {lang: [list(p) for p in pairs] for lang, pairs in sel.neurons.items()}}
    written = [write_text(results / "neurons" / f"{stem}.json", json.dumps(data) + "\n")]
    counts = per_layer(sel, layers)
    header = ["language", "tokens", "neurons"] + [f"L{i}" for i in range(layers)]
    rows = [[lang, tokens[lang], int(counts[lang].sum())] + counts[lang].tolist() for lang in langs]
    written += write_table(results / "tables", stem, header, rows)
    shared = overlap(sel)
    written += write_table(results / "tables", f"{stem}-overlap", ["language"] + langs,
                           [[lang] + row for lang, row in zip(langs, shared)])
    title = (f"Language-specific neurons per layer · {args.model}: {len(sel.kept):,} of {layers * width:,} neurons "
             f"kept (the {percent(args.top_rate)} of lowest LAPE)")
    note = (f"a kept neuron belongs to each language on whose tokens it fires with probability > {sel.bar_value:.3g} "
            "(the bar quantile); one neuron can belong to several languages")
    written.append(draw(counts, results / "figures" / f"{stem}.png", title, args.width, args.height, args.dpi, note))
    print(f"{len(sel.kept)} neurons kept (of {layers} x {width}); filter p > {sel.filter_value:.4g}, "
          f"bar p > {sel.bar_value:.4g}")
    print(markdown_table(["language", "tokens", "neurons"], [r[:3] for r in rows]))
    print("shared neurons:\n" + markdown_table(["language"] + langs, [[lang] + row for lang, row in zip(langs, shared)]))
    if args.direct:
        total, by_lang, anyone = pim_suppressed(sel, index_of(args.direct, results, args.model),
                                                index_of(args.pim, results, args.model))
        header = ["language", "suppressed by PiM and specific to it", "share of the suppressed", "share of its neurons"]
        rows = [[lang, n, f"{n / total:.4f}" if total else "–",
                 f"{n / len(sel.neurons[lang]):.4f}" if sel.neurons[lang] else "–"] for lang, n in by_lang.items()]
        rows.append(["any language", anyone, f"{anyone / total:.4f}" if total else "–", "–"])
        rows.append(["suppressed by PiM (all)", total, "1.0000" if total else "–", "–"])
        written += write_table(results / "tables", f"{stem}-pim", header, rows)
        print(f"suppressed by PiM ({args.direct} -> {args.pim}):\n" + markdown_table(header, rows))
    return written


def build_parser():
    p = cli.argument_parser(__doc__)
    p.add_argument("--results-dir", default=RESULTS_DIR, help=f"folder of the runs (default {RESULTS_DIR})")
    p.add_argument("--model", default=MODEL, help=f"the MODEL of the corpus runs (default {MODEL})")
    p.add_argument("--langs", nargs="+", default=LANGS, metavar="LANG",
                   help="languages, 3-letter codes (default: every corpus run of the model)")
    p.add_argument("--prefix", default=PREFIX, help=f"corpus FILE names are <PREFIX><lang> (default {PREFIX})")
    p.add_argument("--top-rate", type=cli.proportion, default=TOP_RATE, help=f"share of neurons kept (default {TOP_RATE})")
    p.add_argument("--filter-quantile", type=cli.proportion, default=FILTER_QUANTILE,
                   help=f"candidates fire above this quantile of all probabilities in some language (default {FILTER_QUANTILE})")
    p.add_argument("--bar-quantile", type=cli.proportion, default=BAR_QUANTILE,
                   help=f"a kept neuron belongs to the languages above this quantile (default {BAR_QUANTILE})")
    p.add_argument("--min-tokens", type=int, default=MIN_TOKENS,
                   help=f"refuse a language whose corpus run counted fewer tokens (default {MIN_TOKENS})")
    p.add_argument("--direct", default=None, metavar="FILE", help="a generation run (FILE name or index path): direct")
    p.add_argument("--pim", default=None, metavar="FILE", help="a generation run (FILE name or index path): PiM")
    cli.add_image_flags(p, WIDTH, HEIGHT, DPI)
    return p


@cli.user_errors("language_neurons.py")
def main(argv=None):
    written = run(build_parser().parse_args(argv))
    print(f"wrote {len(written)} files: " + ", ".join(map(str, written)))


if __name__ == "__main__":
    main()
