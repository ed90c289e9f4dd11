"""The report's neuron entries: one per neuron of results/neurons/<MODEL>-language-neurons.json (make lape),
with its activation probability per language (from the corpus runs LAPE read, by LAPE's own reader), its
LAPE, the perplexity effect of switching its languages' neurons off (make ppl), and a slot for its top
activating contexts (make examples): `contexts_html` renders them; `section(..., examples=...)` takes them.
A filter box (inline script, pim/report/html.py) shows the entries of some layers and languages."""
from pim.cli import UserError
from pim.report.charts import probability_bars
from pim.report.html import esc, note
from pim.runs.corpus_files import read_corpus_run
from pim.stats import lape
from pim.stats.perplexity_table import times

CONTEXTS_PENDING = "top contexts: not yet (make examples)"  # each entry's slot while there are none
MAX_ENTRIES = 3000  # entries at most (about 1.7 kB each): those of lowest LAPE; a 1% selection of BLOOM-176B has 40,000


def probabilities(results_dir, data):
    """(activation probabilities [layers, width, languages] or None, notes): from the corpus runs that the
    neuron file names (its "files", read as make lape reads them), the counts over the counted tokens."""
    langs, files = data.get("languages") or list(data["neurons"]), data.get("files")
    if not files or len(files) != len(langs):
        return None, ["the neuron file does not name its corpus runs (\"files\"): no probabilities"]
    counts, tokens, notes = [], [], []
    for lang, file in zip(langs, files):
        try:
            c, t, _ = read_corpus_run(results_dir, file, data.get("model", ""))
        except UserError as e:
            return None, [f"no activation probabilities: {e}"]
        said = (data.get("tokens") or {}).get(lang)
        if said is not None and said != t:
            notes.append(f"{file}: {t:,} counted tokens now, {said:,} when make lape read it: the corpus run was "
                         "redone since; the probabilities below are the current run's")
        counts.append(c)
        tokens.append(t)
    shape = (data.get("layers"), data.get("width"))
    if None not in shape and counts[0].shape != shape:
        return None, [f"no activation probabilities: the corpus runs have {counts[0].shape[0]} layers x "
                      f"{counts[0].shape[1]} neurons, the neuron file {shape[0]} x {shape[1]}"]
    try:
        return lape.activation_probabilities(counts, tokens), notes
    except ValueError as e:
        return None, [f"no activation probabilities: {e}"]


def entries(data, limit=None):
    """([(layer, neuron, [languages])], how many there are): every neuron of the file (its "kept" ones, and
    any of a language's list), by layer and neuron; with a limit, only the `limit` of lowest LAPE (the
    file's "kept" order)."""
    member = {}
    for lang, pairs in data["neurons"].items():
        for layer, neuron in pairs:
            member.setdefault((int(layer), int(neuron)), []).append(lang)
    ranked = list(dict.fromkeys([(int(layer), int(neuron)) for layer, neuron in data.get("kept") or []]
                                + sorted(member)))
    chosen = ranked if limit is None else ranked[:limit]
    return [(layer, neuron, member.get((layer, neuron), [])) for layer, neuron in sorted(chosen)], len(ranked)


def contexts_html(examples):
    """A neuron's top activating contexts (make examples): examples is a list of pim.runs.example_files.Example
    (value, corpus, line, position, tokens: the decoded window, at: the index of the top token in it), best
    first; each is shown as its window of tokens with the top token marked, and its value. None: the slot says
    that there are none yet."""
    if examples is None:
        return f'<div class="contexts" data-slot="top-contexts">{esc(CONTEXTS_PENDING)}</div>'
    if not examples:
        return '<div class="contexts" data-slot="top-contexts">no top contexts recorded for this neuron</div>'
    items = []
    for ex in examples:
        tokens, top = list(ex.tokens), ex.at
        spans = "".join(f'<span class="tok{" top" if i == top else ""}">{esc(t)}</span>' for i, t in enumerate(tokens))
        if not isinstance(top, int) or not 0 <= top < len(tokens):
            spans += f' <span class="error">(top token {esc(top)} is not in the window)</span>'
        where = f"{ex.corpus}:{ex.line} position {ex.position}"
        items.append(f'<li><span class="ctx-value">{value_text(ex.value)}</span>'
                     f'<span class="ctx-where">{esc(where)}</span><span class="ctx">{spans}</span></li>')
    return (f'<div class="contexts" data-slot="top-contexts">top contexts (activation of the marked token)'
            f'<ol>{"".join(items)}</ol></div>')


def value_text(value):
    return f"{value:.4g}" if isinstance(value, (int, float)) else esc(value)


def effect_html(langs, perplexity):
    """Per language of the neuron: the perplexity of its text as is, and with all its neurons off (make ppl)."""
    lines = []
    for lang in langs:
        off = (perplexity.off.get(lang) or {}).get(lang) if perplexity else None
        base = perplexity.base.get(lang) if perplexity else None
        if off is not None and base is not None:
            lines.append(f"{esc(lang)} neurons off: perplexity of {esc(lang)} {base:.4f} &rarr; {off:.4f} "
                         f"({times(off / base)})")
    return "".join(f'<div class="effect">{line}</div>' for line in lines)


def entry_html(layer, neuron, langs, data, probs, entropy, perplexity, examples):
    languages = data.get("languages") or list(data["neurons"])
    bars = ""
    if probs is not None and layer < probs.shape[0] and neuron < probs.shape[1]:
        bars = probability_bars(probs[layer, neuron].tolist(), languages, langs, data.get("bar_value"))
    info = f" · LAPE {max(float(entropy[layer, neuron]), 0.0) + 0.0:.4f}" if bars and entropy is not None else ""  # no -0
    return (f'<div class="neuron" data-layer="{layer}" data-index="{neuron}" data-langs="{esc(" ".join(langs))}">'
            f'<h4>layer {layer} · neuron {neuron} · {esc(", ".join(langs) or "no language")}</h4>'
            f'<div class="effect">activation probability per language{info}</div>{bars}'
            f'{effect_html(langs, perplexity)}{contexts_html(examples)}</div>')


def section(results_dir, data, perplexity, examples=None, limit=MAX_ENTRIES):
    """HTML of the neuron entries with their filter box. examples: None (no top contexts yet) or
    {(layer, neuron): [context dicts of contexts_html]}; limit: at most this many entries (None: all)."""
    probs, notes = probabilities(results_dir, data)
    entropy = lape.lape(probs) if probs is not None else None
    listed, total = entries(data, limit)
    if len(listed) < total:
        notes.append(f"{len(listed):,} of the {total:,} neurons are shown: those of lowest LAPE (the most specific; "
                     "make report ARGS=--max-neurons N shows more)")
    parts = [f"<p>{len(listed)} neurons of <code>{esc(data.get('model', '?'))}</code>. Bars: the share of the "
             "counted tokens of each language's corpus on which the neuron fired (dark: its languages; dashed: the "
             "bar a language must pass). The perplexity effect is that of switching off all of the language's "
             "neurons (make ppl), not this neuron alone.</p>"]
    parts += [note(n) for n in notes]
    if examples is None:
        parts.append(note("Each entry has a slot for the neuron's top activating contexts; they are not in this "
                          "report yet (make examples writes them to results/examples/)."))
    if perplexity is None:
        parts.append(note("no perplexity table: run `make ppl` for the effect of switching a language's neurons off"))
    parts.append('<p><input id="neuron-filter" type="search" aria-label="filter neurons" '
                 'placeholder="layer or language: 17, 12-17, deu, 17:81"> <span id="neuron-count"></span></p>')
    parts.append('<div class="neurons">' + "\n".join(
        entry_html(layer, neuron, langs, data, probs, entropy, perplexity,
                   None if examples is None else examples.get((layer, neuron), []))
        for layer, neuron, langs in listed) + "</div>")
    return "\n".join(parts)
