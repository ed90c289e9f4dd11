"""Neuron examples (make examples, scripts/neuron_examples.py, docs/lape.md "Neuron examples") against a
reference: forward hooks on the activation modules (the registry's `activation` path) record every
position of every text, in the same left-padded batches, and Python's sort with the documented tie rule
(larger value, then earlier corpus, line, position) picks the top k."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

MAX_LENGTH = 9
# corpora of unequal sizes, in the neuron file's order: the first holds fewer than TOP_K tokens, so that the
# always-zero neuron's ties spill into the second; an empty line; a text repeated; texts cut and not
CORPORA = {
    "corpus-fra": ["Oui", "Il fait beau.", "Merci"],
    "corpus-deu": ["Das Wetter ist heute schön und die Kinder spielen im Park.", "Hallo", "",
                   "Der Zug fährt um acht Uhr ab.", "Guten Tag!", "Hallo", "Die Ware hat unter 20 Euro gekostet.",
                   "Ja"],
    "corpus-spa": ["Hace buen tiempo.", "El tren sale a las ocho.", "Hola", "La mercancía costó menos de 20 euros.",
                   "Le train part à huit heures du matin."],
}
TOP_K = 20
WINDOW = 3
BATCH = 3  # divides no corpus's texts


@pytest.fixture(scope="module", params=["bloom", "gemma3_text"])
def model_dir(request, tmp_path_factory):
    """A tiny model with the planted exact zeros of pim/models/tiny.py (neuron 8 of each layer is 0 at every
    position: its top k are ties; neuron 9's are mostly -0.0 or 0.0 after a few positives)."""
    from conftest import CORPUS

    from pim.models.tiny import build_tiny_model
    return build_tiny_model(request.param, tmp_path_factory.mktemp("examples") / f"tiny-{request.param}", CORPUS, seed=5)


def width_of(folder):
    from transformers import AutoConfig

    from pim.models.deactivation import mlp_shape
    return mlp_shape(AutoConfig.from_pretrained(folder))


def neuron_choice(folder):
    """{lang: [[layer, neuron], ...]}: ordinary neurons, the planted zeros, one neuron of two languages."""
    layers, width = width_of(folder)
    return {"fra": [[0, 3], [1, 8], [2, 9], [layers - 1, width - 1]],
            "deu": [[0, 3], [1, 40], [2, 9]],
            "spa": [[0, 5]]}


@pytest.fixture(scope="module")
def lape_runs(model_dir, tmp_path_factory):
    """(data folder, results folder) with the corpus runs of the corpora and a hand-made neuron file."""
    import corpus_activate

    base = tmp_path_factory.mktemp("runs")
    data, results = base / "data", base / "results"
    data.mkdir()
    for file, lines in CORPORA.items():
        (data / f"{file}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    corpus_activate.main(["--model", str(model_dir), "--data-dir", str(data), "--results-dir", str(results),
                          "--max-length", str(MAX_LENGTH), "--file", *CORPORA])
    layers, width = width_of(model_dir)
    (results / "neurons").mkdir()
    neurons = {"model": model_dir.name, "layers": layers, "width": width, "files": list(CORPORA),
               "languages": ["fra", "deu", "spa"], "neurons": neuron_choice(model_dir)}
    (results / "neurons" / f"{model_dir.name}-language-neurons.json").write_text(json.dumps(neurons))
    return data, results


def examples(model_dir, data, results, *extra):
    import neuron_examples
    neuron_examples.main(["--model", str(model_dir), "--data-dir", str(data), "--results-dir", str(results),
                          "--top-k", str(TOP_K), "--window", str(WINDOW), *extra])
    return results / "examples" / f"{model_dir.name}-neuron-examples.jsonl"


def copy_results(results, to):
    import shutil
    shutil.copytree(results, to)
    shutil.rmtree(to / "examples", ignore_errors=True)
    return to


def reference(folder, batch, k=TOP_K):
    """{(layer, neuron): [(value, corpus, line from 1, position, window ids, at)]}: every position of every text,
    batched as --no-sort batches them (file order, `batch` texts, left-padded), sorted in Python."""
    from hook_reference import activation_modules
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    acts = {}
    mods = activation_modules(model)
    handles = [m.register_forward_hook(lambda m, a, out, i=i: acts.__setitem__(i, out)) for i, m in enumerate(mods)]
    wanted = sorted({tuple(p) for pairs in neuron_choice(folder).values() for p in pairs})
    found = {p: [] for p in wanted}
    for c, lines in enumerate(CORPORA.values()):
        texts = [(n, tok(t.strip()).input_ids[:MAX_LENGTH]) for n, t in enumerate(lines) if t.strip()]
        for first in range(0, len(texts), batch):
            chunk = texts[first:first + batch]
            longest = max(len(ids) for _, ids in chunk)
            ids = torch.tensor([[tok.pad_token_id] * (longest - len(i)) + i for _, i in chunk])
            mask = torch.tensor([[0] * (longest - len(i)) + [1] * len(i) for _, i in chunk])
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask)
            for r, (line, row) in enumerate(chunk):
                for p in range(len(row)):
                    window = row[max(0, p - WINDOW):p + WINDOW + 1]
                    for layer, neuron in wanted:
                        value = float(acts[layer][r, longest - len(row) + p, neuron])
                        found[(layer, neuron)].append((value, c, line + 1, p, window, min(p, WINDOW)))
    for h in handles:
        h.remove()
    return {p: sorted(found[p], key=lambda e: (-e[0], e[1], e[2], e[3]))[:k] for p in wanted}


def as_tuples(neuron):
    corpora = list(CORPORA)
    return [(e.value, corpora.index(e.corpus), e.line, e.position, e.ids, e.at) for e in neuron.examples]


def test_examples_equal_the_hook_reference(model_dir, lape_runs, tmp_path):
    from transformers import AutoTokenizer

    from pim.runs.example_files import read_examples

    data, results = lape_runs
    results = copy_results(results, tmp_path / "results")
    got = read_examples(examples(model_dir, data, results, "--no-sort", "--batch-size", str(BATCH)))
    expected = reference(model_dir, BATCH)
    assert [(n.layer, n.neuron) for n in got] == list(expected)
    languages = {}
    for lang, pairs in neuron_choice(model_dir).items():
        for p in pairs:
            languages.setdefault(tuple(p), []).append(lang)
    tok = AutoTokenizer.from_pretrained(model_dir)
    for neuron in got:
        want = expected[(neuron.layer, neuron.neuron)]
        assert neuron.languages == languages[(neuron.layer, neuron.neuron)]
        assert len(neuron.examples) == TOP_K
        assert [e[1:] for e in as_tuples(neuron)] == [e[1:] for e in want], (neuron.layer, neuron.neuron)
        assert [np.float32(e.value) for e in neuron.examples] == [np.float32(e[0]) for e in want]
        for e in neuron.examples:
            assert "".join(e.tokens) == tok.decode(e.ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    zero = next(n for n in got if (n.layer, n.neuron) == (1, 8))  # the planted ties: the first k positions
    assert {e.value for e in zero.examples} == {0.0}
    assert {e.corpus for e in zero.examples} == {"corpus-fra", "corpus-deu"}
    manifest = json.loads((results / "examples" / f"{model_dir.name}-neuron-examples-manifest.json").read_text())
    corpus_tokens = [json.loads((results / f"{f}-manifest-{model_dir.name}.json").read_text())["tokens"]
                     for f in CORPORA]
    assert (manifest["status"], manifest["tokens"]) == ("finished", corpus_tokens)
    assert not (results / "examples" / f"{model_dir.name}-neuron-examples-progress.npz").exists()


def test_any_batching_and_a_resume_give_the_same_examples(model_dir, lape_runs, tmp_path):
    """Sorted batches of 2 in windows of 2 lines, the top 5, killed after 4 batches and resumed: the same
    examples as the reference's batches up to float rounding of the values (exactly the same places for the
    planted ties, which a batch's own top 5 must choose by the tie rule: the first corpus has 3 texts);
    an uninterrupted run of the same flags gives the same bytes as the resumed one."""
    from conftest import ctrl_c_after

    from pim.runs.example_files import read_examples
    from pim.runs.examples import Gatherer

    data, results = lape_runs
    flags = ("--batch-size", "2", "--sort-window", "2", "--top-k", "5")
    killed = copy_results(results, tmp_path / "killed")
    with ctrl_c_after(Gatherer, 4):
        examples(model_dir, data, killed, *flags)
    assert (killed / "examples" / f"{model_dir.name}-neuron-examples-progress.npz").is_file()
    resumed = examples(model_dir, data, killed, *flags)
    whole = examples(model_dir, data, copy_results(results, tmp_path / "whole"), *flags)
    assert resumed.read_bytes() == whole.read_bytes()
    expected = reference(model_dir, BATCH, k=5)
    for neuron in read_examples(resumed):
        want = expected[(neuron.layer, neuron.neuron)]
        assert np.allclose([e.value for e in neuron.examples], [e[0] for e in want], rtol=1e-5, atol=1e-6)
        if (neuron.layer, neuron.neuron) == (1, 8):
            assert [e[1:] for e in as_tuples(neuron)] == [e[1:] for e in want]


def test_refusals(model_dir, lape_runs, tmp_path):
    data, results = lape_runs
    results = copy_results(results, tmp_path / "results")
    out = examples(model_dir, data, results, "--batch-size", "4")
    before = out.read_bytes()
    with pytest.raises(SystemExit, match="is finished; pass --overwrite"):
        examples(model_dir, data, results)
    manifest = out.with_name(f"{model_dir.name}-neuron-examples-manifest.json")
    said = json.loads(manifest.read_text())
    said["status"] = "running"  # as if killed
    manifest.write_text(json.dumps(said))
    with pytest.raises(SystemExit, match="other settings:\n  top_k: 20 then, 5 now"):
        examples(model_dir, data, results, "--top-k", "5")
    examples(model_dir, data, results, "--overwrite", "--batch-size", "4")
    assert out.read_bytes() == before  # made again, the same
    changed = data.parent / "changed"
    changed.mkdir(exist_ok=True)
    for file, lines in CORPORA.items():
        (changed / f"{file}.txt").write_text("".join(line + "\n" for line in lines) + ("Oui\n" if file == "corpus-fra" else ""))
    with pytest.raises(SystemExit, match="corpus-fra.txt is not the file its corpus run read"):
        examples(model_dir, changed, results, "--overwrite")
    run = results / f"corpus-deu-manifest-{model_dir.name}.json"
    said = json.loads(run.read_text())
    said["tokens"] += 1
    run.write_text(json.dumps(said))
    with pytest.raises(SystemExit, match=r"corpus-deu.txt: read \d+ tokens, its corpus run counted \d+"):
        examples(model_dir, data, results, "--overwrite")
    assert out.read_bytes() == before  # a failed --overwrite run leaves the old file
    with pytest.raises(SystemExit, match="made for a model with 2 layers"):
        examples(model_dir, data, results, "--overwrite", "--neurons", str(write_neurons(tmp_path, model_dir.name, 2)))
    with pytest.raises(SystemExit, match="no such file"):
        examples(model_dir, data, results, "--neurons", str(tmp_path / "none.json"))


def write_neurons(folder, model, layers):
    path = folder / "other.json"
    path.write_text(json.dumps({"model": model, "layers": layers, "width": 8, "files": list(CORPORA),
                                "neurons": {"fra": [[0, 1]]}}))
    return path


def test_the_reader_names_the_file_and_line(tmp_path):
    from pim.activation_files import FormatError
    from pim.runs.example_files import read_examples

    good = {"layer": 0, "neuron": 3, "languages": ["deu"], "examples": [
        {"value": 1.5, "corpus": "c", "line": 2, "position": 1, "tokens": ["<s>", "Ha", "llo"], "at": 1,
         "ids": [1, 7, 9]}]}
    path = tmp_path / "m-neuron-examples.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "examples": [{**good["examples"][0], "at": 3}]}) + "\n")
    with pytest.raises(FormatError, match="m-neuron-examples.jsonl:2: not a line of neuron examples"):
        read_examples(path)
    path.write_text(json.dumps(good) + "\n")
    (neuron,) = read_examples(path)
    assert neuron.examples[0].text() == "<s>[[Ha]]llo"
