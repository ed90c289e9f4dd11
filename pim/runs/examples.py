"""Neuron examples (scripts/neuron_examples.py is its command line): for each language-specific neuron of a
neuron file (`make lape`), its top-k activations over the corpora the selection came from, with where they
were and the tokens around them.

The corpora are the neuron file's `files`, read as their corpus runs read them (pim/runs/corpus_input.py:
the same texts, tokenization and cut to the run's max length, the lines the run counted), each checked
against its corpus run's manifest (the input's sha256 before, the tokens read after). The site is the
recorder's (transformers.activation_recorder.activation_sites: the module whose output the patched
models report; forward hooks take only the selected neurons' columns), pads are masked, and a running
top-k on the device (pim/runs/example_topk.py) takes each batch: no copy to the host but one per window
of --sort-window lines, when the writer commits (pim/runs/example_files.py).
"""
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from pim.cli import UserError
from pim.models.deactivation import DeactivationError, load_deactivation, read_neurons
from pim.models.loading import LoadOptions, load_model, model_settings
from pim.models.names import run_model_name
from pim.runs.corpus import batches, halved
from pim.runs.corpus_files import read_corpus_run
from pim.runs.corpus_input import find_corpus, scan, token_windows
from pim.runs.engine import halving_batches, injected_oom
from pim.runs.example_files import KIND, ExamplesWriter, examples_paths, examples_text
from pim.runs.example_topk import RunningTopK
from pim.runs.lock import RunLock
from pim.runs.names import read_manifest, run_paths
from pim.runs.teacher_forcing import left_padded


@dataclass
class Corpus:
    file: str  # its FILE name
    path: Path  # data/<FILE>.txt (or .txt.gz, .jsonl, .jsonl.gz)
    sha256: str
    end: int  # the line after the last text its corpus run counted
    tokens: int  # the tokens its corpus run counted
    max_length: int  # its corpus run's cut


def command():
    return shlex.join([sys.executable] + sys.argv)


def neurons_file(args):
    return Path(args.neurons) if args.neurons else \
        Path(args.results_dir) / "neurons" / f"{run_model_name(args.model)}-language-neurons.json"


def plan_corpora(args, data, path):
    """The corpora of the neuron file (or --files), checked against their finished corpus runs."""
    files = args.files or data.get("files")
    if not files:
        raise UserError(f"{path}: names no corpora (\"files\"; made before make lape recorded them): give them "
                        "with --files")
    model = data.get("model") or run_model_name(args.model)
    corpora = []
    for file in files:
        _, tokens, manifest = read_corpus_run(args.results_dir, file, model)
        settings = manifest.get("settings", {})
        found = scan(find_corpus(args.data_dir, file))
        if found.sha256 != settings.get("input_sha256"):
            raise UserError(f"{found.path} is not the file its corpus run read ({run_paths(args.results_dir, file, model)['manifest']}: "
                            "another sha256): restore it, or redo the corpus runs and make lape")
        end = (manifest.get("line_range") or [0, found.lines])[1]
        corpora.append(Corpus(file, found.path, found.sha256, end, tokens, int(settings["max_length"])))
    return corpora


def selected_neurons(path, config, identity):
    """([(layer, neuron)] sorted, [[language, ...]] of each): every language's neurons of the file, checked
    by the neuron files' one reader (pim/models/deactivation.py) against the model."""
    languages = {}
    try:
        for lang in read_neurons(path)["neurons"]:
            off, _ = load_deactivation(f"{path}:{lang}", config, allow_empty=True, identity=identity)
            for layer, ids in off.items():
                for neuron in ids:
                    languages.setdefault((layer, neuron), []).append(lang)
    except DeactivationError as e:
        raise UserError(str(e)) from None
    if not languages:
        raise UserError(f"{path}: no language has neurons: there is nothing to find examples of")
    neurons = sorted(languages)
    return neurons, [languages[n] for n in neurons]


def run_examples(args):
    """Check the inputs, load the model once, read every corpus, write the examples file."""
    name, path = run_model_name(args.model), neurons_file(args)
    if path.suffix != ".json":
        raise UserError(f"{path}: a neuron file is FILE.json (make lape writes results/neurons/<MODEL>-language-neurons.json)")
    try:
        data = read_neurons(path)
    except DeactivationError as e:
        raise UserError(str(e)) from None
    corpora = plan_corpora(args, data, path)
    done = read_manifest(examples_paths(args.results_dir, name)["manifest"])
    if done and done.get("status") == "finished" and not args.overwrite:
        raise UserError(f"{examples_paths(args.results_dir, name)['examples']} is finished; pass --overwrite to make it again")
    loaded = load_model(LoadOptions(args.model, dtype=args.dtype, device_map=args.device_map,
                                    max_memory=args.max_memory, offload_folder=args.offload_folder), record=False)
    neurons, languages = selected_neurons(path, loaded.config, loaded.identity)
    settings, info = run_facts(args, loaded, path, corpora, neurons)
    folder = examples_paths(args.results_dir, name)["examples"].parent
    with RunLock(folder, name, KIND, command=command()):  # .<MODEL>-neuron-examples.lock
        writer = ExamplesWriter(args.results_dir, name, settings, overwrite=args.overwrite)
        try:
            if writer.open(info):
                print(f"resuming {writer.final['manifest']}: at corpus {writer.corpus + 1} of {len(corpora)}, line "
                      f"{writer.next_line + 1}", file=sys.stderr)
            gatherer = Gatherer(loaded, neurons, RunningTopK(len(neurons), args.top_k, args.window, loaded.model.device))
            if writer.state is not None:
                gatherer.topk.load(writer.state)
            try:
                for number in range(writer.corpus, len(corpora)):
                    read_corpus(args, loaded, writer, gatherer, corpora, number)
            finally:
                gatherer.close()
            text = examples_text(neurons, languages, [c.file for c in corpora], writer.state,
                                 TokenPieces(loaded.tokenizer))
            writer.finish(text)
        except BaseException:
            writer.abandon()
            raise
    print(f"{len(neurons)} neurons, top {args.top_k} each over {len(corpora)} corpora ({sum(writer.tokens)} tokens): "
          f"{writer.paths['examples']}", file=sys.stderr)
    return writer.paths["examples"]


def run_facts(args, loaded, path, corpora, neurons):
    """(settings, info) of the manifest: a run resumes only with equal settings."""
    import hashlib

    import torch

    settings = {**model_settings(loaded, args.max_memory), "neurons": str(path),
                "neurons_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "top_k": args.top_k,
                "window": args.window, "corpora": [{"file": c.file, "input": str(c.path), "input_sha256": c.sha256,
                                                    "lines": c.end, "max_length": c.max_length} for c in corpora]}
    info = {"model": run_model_name(args.model), "model_argument": args.model, "neuron_count": len(neurons),
            "dtype": settings["dtype"], "batch_size": args.batch_size, "sorted": args.sort,
            "sort_window": args.sort_window, "site": "forward hooks on transformers.activation_recorder.activation_sites",
            "torch": torch.__version__, "command": command()}
    return settings, info


def read_corpus(args, loaded, writer, gatherer, corpora, number):
    """Every window of corpus `number` from where the writer stands; each window committed."""
    from tqdm import tqdm

    corpus = corpora[number]
    first = writer.next_line if writer.corpus == number else 0
    tokens = writer.tokens[number] if writer.corpus == number and len(writer.tokens) > number else 0
    gatherer.corpus = number
    with tqdm(total=corpus.end, initial=first, unit="line", desc=corpus.file, dynamic_ncols=True) as bar:
        for window in token_windows(corpus.path, loaded.tokenizer, corpus.max_length, first, corpus.end,
                                    args.sort_window):
            for batch, read in halving_batches(batches(window.rows, args.batch_size, args.sort), args.batch_size,
                                               gatherer, lambda old, new, e: halved(writer, old, new, e)):
                tokens += read
                bar.update(len(batch))
            writer.commit(number, window.end, tokens, gatherer.topk.host())
            bar.update(window.end - window.start - len(window.rows))
    if tokens != corpus.tokens:
        raise UserError(f"{corpus.path}: read {tokens} tokens, its corpus run counted {corpus.tokens}: the tokenizer "
                        "or the corpus is not the one of the corpus run; redo the corpus runs and make lape")
    if number + 1 < len(corpora):
        writer.commit(number + 1, 0, 0, writer.state)


class Gatherer:
    """One forward pass over a batch; forward hooks on the recorded sites keep the selected neurons' columns,
    which go into the running top-k. Returns the batch's tokens."""

    def __init__(self, loaded, neurons, topk):
        import torch
        from transformers.activation_recorder import activation_sites

        self.model, self.pad, self.topk = loaded.model, loaded.tokenizer.pad_token_id, topk
        self.corpus = 0
        columns = {}
        for layer, neuron in neurons:
            columns.setdefault(layer, []).append(neuron)
        self.columns = {layer: torch.tensor(ids) for layer, ids in columns.items()}
        self.taken = {}
        _, sites = activation_sites(loaded.model)
        self.handles = [sites[layer].register_forward_hook(self._hook(layer)) for layer in self.columns]

    def _hook(self, layer):
        def hook(module, args, output):
            ids = self.columns[layer]
            if ids.device != output.device:  # once: the ids move to the layer's device
                ids = self.columns[layer] = ids.to(output.device)
            self.taken[layer] = output.index_select(-1, ids).to(self.topk.device, non_blocking=True)
        return hook

    def __call__(self, batch):
        import torch

        self.taken = {}
        ids, mask = left_padded([row[1] for row in batch], self.pad, self.model.device)
        with torch.no_grad(), injected_oom(self.model, len(batch)):
            self.model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
        acts = torch.cat([self.taken[layer] for layer in self.columns], dim=-1)  # [batch, seq, neurons], in order
        lines = torch.tensor([row[0] for row in batch]).to(self.topk.device, non_blocking=True)
        self.topk.add(acts, mask.to(self.topk.device).bool(), ids.to(self.topk.device), self.corpus, lines)
        self.taken = {}
        return sum(len(row[1]) for row in batch)

    def close(self):
        for handle in self.handles:
            handle.remove()


class TokenPieces:
    """The decoded tokens of a list of ids, each as it reads inside the text (a SentencePiece word's leading
    space kept): the difference of the decoded prefixes, or the token alone where that is not a prefix (a
    character split over byte tokens)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.cache = tokenizer, {}

    def __call__(self, ids):
        key = tuple(ids)
        if key not in self.cache:
            texts = self.tokenizer.batch_decode([list(key[:i]) for i in range(len(key) + 1)], skip_special_tokens=False,
                                                clean_up_tokenization_spaces=False)
            self.cache[key] = [after[len(before):] if after.startswith(before) else
                               self.tokenizer.decode([t], skip_special_tokens=False, clean_up_tokenization_spaces=False)
                               for before, after, t in zip(texts, texts[1:], key)]
        return self.cache[key]
