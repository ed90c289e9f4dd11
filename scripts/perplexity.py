"""Perplexity of each language's corpus, as is and with each language's specific neurons switched off.

    make ppl MODEL=bloom-7b1                          # the languages of results/neurons/<MODEL>-language-neurons.json
    make ppl MODEL=bloom-7b1 LANGS="deu fra" ARGS="--max-lines 500"
    python scripts/perplexity.py --model tiny-bloom --prefix sample-corpus- --max-length 64

For every evaluated language E (data/<PREFIX><E>.txt, teacher-forced, texts cut to --max-length tokens,
left-padded batches) the perplexity exp(mean token NLL over the non-pad positions; each text's first
token is not scored), once without deactivation and once per deactivated language D with D's neurons
of the language-neurons file set to 0 at the recorded site (pim/models/deactivation.py). Writes
  results/tables/<MODEL>-perplexity.{csv,md}   every (deactivated, evaluated) pair: tokens, perplexity, change
                                               (off - as is), ratio (off / as is)
  results/figures/<MODEL>-perplexity.png       the language x language matrix of the ratio off / as is, on a
                                               log scale centred at x1 (rows: deactivated language, columns:
                                               evaluated language)
"""
import math
import sys
from pathlib import Path

# Defaults; every one has a flag (--help).
MODEL = "tiny-bloom"  # a folder models/<MODEL>/, an alias (README), or a hub id or path
LANGS = []  # languages, 3-letter codes; []: those of the neuron file
PREFIX = "corpus-"  # the corpora are <DATA_DIR>/<PREFIX><lang>.txt (make data; the demo: sample-corpus-)
NEURONS = None  # the language-neurons file; None: <RESULTS_DIR>/neurons/<MODEL>-language-neurons.json
DATA_DIR = "data"  # where the corpora are
RESULTS_DIR = "results"  # tables/ and figures/ are written inside it
MAX_LENGTH = 512  # tokens per text at most, as for the corpus runs
MAX_LINES = None  # score only the first N texts of each corpus; None: all
BATCH_SIZE = 8  # texts per forward call
DTYPE = "auto"  # auto: bfloat16 on a GPU, float32 on the CPU
WIDTH, HEIGHT, DPI = 900, 800, 100  # the figure, in pixels

from pim import cli
from pim.figures import save_figure
from pim.models.deactivation import DeactivationError, load_deactivation, read_neurons
from pim.models.names import run_model_name
from pim.runs.teacher_forcing import encode, left_padded, load, nll_sum, read_texts
from pim.stats.perplexity_table import (
    HEADER,
    Perplexity,
    csv_rows,
    ratio_matrix,
    shown_rows,
    times,
)
from pim.tables import csv_text, markdown_table, write_text


def build_parser():
    p = cli.argument_parser(__doc__)
    p.add_argument("--model", default=MODEL, help=f"folder models/<MODEL>/, alias, or hub id/path (default {MODEL})")
    p.add_argument("--langs", nargs="+", default=LANGS, metavar="LANG", help="languages (default: the neuron file's)")
    p.add_argument("--prefix", default=PREFIX, help=f"corpora are <DATA_DIR>/<PREFIX><lang>.txt (default {PREFIX})")
    p.add_argument("--neurons", default=NEURONS, help="language-neurons file (default "
                   "<RESULTS_DIR>/neurons/<MODEL>-language-neurons.json, from `make lape`)")
    p.add_argument("--deactivate-other-model", default=False, action="store_true",
                   help="take a neuron file made for another model of the same shape (refused by default)")
    p.add_argument("--data-dir", default=DATA_DIR, help=f"folder of the corpora (default {DATA_DIR})")
    p.add_argument("--results-dir", default=RESULTS_DIR, help=f"tables/ and figures/ go inside (default {RESULTS_DIR})")
    p.add_argument("--max-length", type=cli.positive_int, default=MAX_LENGTH, help=f"tokens per text at most (default {MAX_LENGTH})")
    p.add_argument("--max-lines", type=cli.positive_int, default=MAX_LINES, help="only the first N texts of each corpus")
    p.add_argument("--batch-size", type=cli.positive_int, default=BATCH_SIZE, help=f"texts per forward call (default {BATCH_SIZE})")
    p.add_argument("--dtype", default=DTYPE, choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bfloat16 on a GPU, float32 on the CPU")
    cli.add_image_flags(p, WIDTH, HEIGHT, DPI)
    return p


def perplexity(model, tokenizer, rows, batch_size):
    """(perplexity, mean NLL, scored tokens) of token id lists, teacher-forced in left-padded batches."""
    import torch

    total, count = 0.0, 0
    for first in range(0, len(rows), batch_size):
        ids, mask = left_padded(rows[first:first + batch_size], tokenizer.pad_token_id, model.device)
        with torch.no_grad():
            nll, n = nll_sum(model, ids, mask)
        if model.activation_recorder is not None:
            model.activation_recorder.take()  # the counts are not needed: forget them
        total, count = total + nll, count + n
    if not count:
        raise cli.UserError("no token to score (every text is a single token)")
    return math.exp(total / count), total / count, count


def figure(ratios, langs, base, title, width, height, dpi):
    """The matrix of ratios (rows: deactivated language, columns: evaluated language) on a log scale, centred
    at ×1 (no change): red where switching the neurons off raises the perplexity, blue where it lowers it;
    each cell annotated with its ratio, each column with the perplexity as is."""
    import numpy as np
    from matplotlib import colors
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter

    ratios = np.asarray(ratios, dtype=float)
    logs = np.log10(ratios)
    finite = np.abs(logs[np.isfinite(logs)])
    limit = max(float(finite.max(initial=0)), np.log10(2))  # at least ×0.5 to ×2: a small change stays pale
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(np.clip(logs, -limit, limit), cmap="RdBu_r", norm=colors.Normalize(-limit, limit))
    ax.set_xticks(range(len(langs)), [f"{lang}\n{base[lang]:,.1f}" for lang in langs])
    ax.set_yticks(range(len(langs)), langs)
    ax.set_xlabel("evaluated language (and its perplexity as is)")
    ax.set_ylabel("language whose neurons are switched off")
    for i in range(len(langs)):
        for j in range(len(langs)):
            ax.text(j, i, times(ratios[i, j]), ha="center", va="center", fontsize=9,
                    color="white" if abs(logs[i, j]) > 0.6 * limit else "black")
    nice = [m * 10.0 ** k for k in range(-4, 5) for m in (1, 2, 5)]
    ticks = [t for t in nice if abs(np.log10(t)) <= limit + 1e-9]
    if len(ticks) > 9:  # decades only
        ticks = [t for t in ticks if float(np.log10(t)).is_integer()]
    bar = fig.colorbar(image, ax=ax)
    bar.locator = FixedLocator(np.log10(ticks))
    bar.formatter = FuncFormatter(lambda value, _: f"×{10 ** value:,.4g}")
    bar.update_ticks()
    bar.set_label("perplexity with the neurons off ÷ as is (log scale; ×1: no change)")
    ax.set_title(title, fontsize=10)
    return fig


def draw(ratios, langs, base, path, title, width, height, dpi):
    return save_figure(figure(ratios, langs, base, title, width, height, dpi), path, dpi)


def run(args):
    from tqdm import tqdm
    from transformers.activation_recorder import start_recording

    cli.given_once(args.langs, "--langs")
    name = run_model_name(args.model)
    results = Path(args.results_dir)
    neurons = Path(args.neurons or results / "neurons" / f"{name}-language-neurons.json")
    try:
        found = list(read_neurons(neurons)["neurons"])  # the file is checked before a model loads
    except DeactivationError as e:
        raise cli.UserError(str(e)) from None
    langs = args.langs or found
    texts = {lang: read_texts(Path(args.data_dir) / f"{args.prefix}{lang}.txt")[:args.max_lines] for lang in langs}
    loaded = load(args.model, args.dtype, record=False)
    model, tokenizer = loaded.model, loaded.tokenizer
    offs = {}
    for lang in langs:  # every refusal before the first forward call
        try:
            offs[lang] = load_deactivation(f"{neurons}:{lang}", loaded.config, allow_empty=True,
                                           identity=loaded.identity,
                                           other_model=args.deactivate_other_model)[0]
            if not offs[lang]:
                print(f"note: {lang} has no neurons in {neurons}: its row is the perplexity as is", file=sys.stderr)
        except DeactivationError as e:
            raise cli.UserError(str(e)) from None
    rows = {}
    for lang in langs:
        rows[lang], cut = encode(tokenizer, texts[lang], args.max_length)
        print(f"{args.prefix}{lang}: {len(rows[lang])} texts, {cut} cut to {args.max_length} tokens", file=sys.stderr)
    table, nll = Perplexity(list(langs), {}, {d: {} for d in langs}, {}), {}
    with tqdm(total=len(langs) * (len(langs) + 1), desc="perplexity", unit="pass") as bar:
        for lang in langs:
            table.base[lang], nll["none", lang], table.tokens[lang] = perplexity(model, tokenizer, rows[lang],
                                                                                args.batch_size)
            bar.update()
        for d in langs:
            start_recording(model, positions="last", deactivate=offs[d])
            try:
                for e in langs:
                    table.off[d][e], nll[d, e], _ = perplexity(model, tokenizer, rows[e], args.batch_size)
                    bar.update()
            finally:
                model.stop_activation_recording()
                model.activation_recorder = None
    stem = f"{name}-perplexity"
    md = (f"Perplexity per evaluated language (columns), as is and with each language's neurons off (rows; in "
          f"brackets the ratio to the perplexity as is). Neurons: {neurons}; texts cut to {args.max_length} tokens.\n\n"
          + markdown_table(["deactivated \\ evaluated"] + langs, shown_rows(table)))
    written = [write_text(results / "tables" / f"{stem}.csv", csv_text(HEADER, csv_rows(table, nll))),
               write_text(results / "tables" / f"{stem}.md", md)]
    title = f"Perplexity when a language's neurons are switched off, relative to as is · {name}"
    written.append(draw(ratio_matrix(table), langs, table.base, results / "figures" / f"{stem}.png", title,
                        args.width, args.height,
                        args.dpi))
    print(md)
    print("wrote " + ", ".join(map(str, written)))


@cli.user_errors("perplexity.py")
def main(argv=None):
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
