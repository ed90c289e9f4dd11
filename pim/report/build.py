"""One model's report: the sections whose runs and files exist, and a list of what is missing with the
command that makes it. Reads the results folder only (pim/report/sources.py); never runs a model."""
import hashlib
import time
from datetime import datetime, timezone
from pathlib import Path

from pim.activation_files import FormatError, write_atomic
from pim.models.deactivation import DeactivationError, read_neurons
from pim.report import analyses_section, neurons, runs_section, tables_section
from pim.report.html import page
from pim.report.sources import eval_tables, runs_of
from pim.runs.checks import load_manifest
from pim.runs.example_files import examples_paths, read_examples
from pim.runs.names import condition_order
from pim.stats.perplexity_table import read_perplexity


def build(results_dir, model, examples=None, progress=None, max_neurons=neurons.MAX_ENTRIES):
    """(html of the page, [section titles]) of `model`'s report. examples: the neurons' top contexts
    {(layer, neuron): [Example]} (pim.report.neurons.contexts_html), None: those of `make examples` where they
    are for the model's neuron file (neuron_examples); progress: None or a
    function that takes a line saying what is being read; max_neurons: neuron entries at most (None: all)."""
    results = Path(results_dir)
    infos = runs_of(results, model)
    sections, missing = [], []
    generation_sections(results, model, infos, progress, sections, missing)
    lape_sections(results, model, examples, progress, max_neurons, sections, missing)
    evals = eval_tables(results, model, infos)
    if evals:
        sections.append(("evaluation", "Evaluation", tables_section.evaluation_section(evals)))
    else:
        missing.append(f"no evaluation table (results/tables/eval-*-{model}.csv): `make eval MODEL={model} REF=...`")
    subtitle = (f"{results.resolve()} · built {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} "
                "from the files of make infer, plots, corpus, lape, ppl and eval")
    return page(f"pim-neurons report · {model}", subtitle, sections, missing), [t for _, t, _ in sections]


def generation_sections(results, model, infos, progress, sections, missing):
    """The runs, PiM vs direct, and the per-run figures: appended to sections, or what is absent to missing."""
    figures = results / "figures"
    loaded = analyses_section.Loaded(progress)
    if infos:
        sections.append(("runs", "Runs", runs_section.section(infos, loaded)))
    else:
        missing.append(f"no runs of {model} in {results}/: `make infer FILE=... MODEL={model}`, `make corpus`")
    generation = sorted((i.run for i in infos if i.finished and i.kind == "generation"),
                        key=lambda r: (r.model, condition_order(r)))  # as make plots orders them: direct first
    compared, groups = analyses_section.comparisons(generation, loaded, figures)
    if groups:
        sections.append(("pim-vs-direct", "PiM vs direct", compared))
    else:
        missing.append("no comparison of conditions: it needs two finished runs of one test set and model (direct "
                       f"and PiM-k), e.g. `make infer FILE=wmt22-GPT4-deu_spa_rus_fra2eng MODEL={model}`")
    if generation:
        sections.append(("runs-figures", "Heatmaps and peaks per run",
                         analyses_section.per_run(generation, loaded, figures)))
    else:
        missing.append(f"no finished generation run of {model}: `make infer FILE=... MODEL={model}`")


def lape_sections(results, model, examples, progress, max_neurons, sections, missing):
    """The language-specific neurons, each neuron, and perplexity: appended to sections, or to missing."""
    figures, tables = results / "figures", results / "tables"
    neuron_file = results / "neurons" / f"{model}-language-neurons.json"
    perplexity, ppl_path, ppl_problem = None, tables / f"{model}-perplexity.csv", None
    if ppl_path.is_file():
        try:
            perplexity = read_perplexity(ppl_path)
        except FormatError as e:
            ppl_problem = str(e)
    data = None
    if neuron_file.is_file():
        try:
            data = read_neurons(neuron_file)
        except DeactivationError as e:
            missing.append(f"language-specific neurons: {e}")
    else:
        missing.append(f"no language-specific neurons ({neuron_file}): `make corpus FILE=corpus-<lang> MODEL={model}` "
                       f"for two languages or more, then `make lape MODEL={model}`")
    if data is not None and examples is None:
        examples, problem = neuron_examples(results, model, neuron_file)
        if problem:
            missing.append(problem)
    if data is not None:
        if progress:
            progress("reading the corpus runs of the language-specific neurons")
        sections.append(("language-neurons", "Language-specific neurons",
                         tables_section.lape_overview(data, tables, figures, neuron_file)))
        sections.append(("neuron-entries", "Neurons one by one", neurons.section(results, data, perplexity, examples,
                                                                        max_neurons)))
    if perplexity is not None:
        sections.append(("perplexity", "Perplexity with a language's neurons off",
                         tables_section.perplexity_section(perplexity, ppl_path, figures, model)))
    else:
        missing.append(ppl_problem or f"no perplexity table ({ppl_path}): `make ppl MODEL={model}` (after make lape)")


def neuron_examples(results, model, neuron_file):
    """({(layer, neuron): [Example]} of make examples, or None; what is missing or wrong, or None). Examples
    of another neuron file than the one on the page (make lape ran again since) are not shown."""
    paths = examples_paths(results, model)
    if not paths["examples"].is_file():
        return None, (f"no neuron examples ({paths['examples']}): `make examples MODEL={model}` (after make lape)")
    manifest = load_manifest(paths["manifest"]) or {}
    made_for = (manifest.get("settings") or {}).get("neurons_sha256")
    if made_for != hashlib.sha256(neuron_file.read_bytes()).hexdigest():
        return None, (f"the neuron examples {paths['examples']} are not of {neuron_file} (make lape ran again "
                      f"since?): `make examples MODEL={model} ARGS=--overwrite`")
    try:
        return {(n.layer, n.neuron): n.examples for n in read_examples(paths["examples"])}, None
    except FormatError as e:
        return None, f"neuron examples: {e}"


def write_report(results_dir, model, out=None, examples=None, progress=None, max_neurons=neurons.MAX_ENTRIES):
    """Build and write the report (atomically); returns (path, seconds, [section titles])."""
    start = time.perf_counter()
    html, titles = build(results_dir, model, examples, progress, max_neurons)
    path = Path(out) if out else Path(results_dir) / f"report-{model}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, html)
    return path, time.perf_counter() - start, titles
