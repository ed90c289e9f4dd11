"""Corpus runs, LAPE selection, the deactivation loader and perplexity (docs/lape.md), on a tiny BLOOM."""
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pim.activation_files import index_line, ratio_lines, read_index
from pim.models.deactivation import DeactivationError, load_deactivation, run_suffix, split_spec
from pim.runs.names import write_manifest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "analysis"))
TEXTS = ["Das Wetter ist heute schön und die Kinder spielen im Park.", "Hallo", "Der Zug fährt um acht Uhr ab.",
         "Ich trinke jeden Morgen einen Kaffee, und dann gehe ich zur Arbeit.", "Guten Tag!",
         "Die Ware hat unter 20 Euro gekostet.", "Ja"]
MAX_LENGTH = 9


@pytest.fixture(scope="module")
def bloom(tmp_path_factory):
    from conftest import CORPUS

    from pim.models.tiny import build_tiny_model
    return build_tiny_model("bloom", tmp_path_factory.mktemp("lape") / "tiny-bloom", CORPUS, seed=3)


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "corpus-deu.txt").write_text("".join(t + "\n" for t in TEXTS), encoding="utf-8")
    (folder / "corpus-fra.txt").write_text("Il fait beau.\nLe train part à huit heures du matin.\nBonjour\n",
                                           encoding="utf-8")
    return folder


def corpus(bloom, data, results, *extra):
    import corpus_activate
    corpus_activate.main(["--model", str(bloom), "--data-dir", str(data), "--results-dir", str(results),
                          "--max-length", str(MAX_LENGTH), *extra])


def reference_counts(folder, texts, max_length):
    """Counts over every position of each text alone (no padding), by forward hooks on the stock path."""
    from hook_reference import activation_modules
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    acts = {}
    mods = activation_modules(model)
    handles = [m.register_forward_hook(lambda m, a, out, i=i: acts.__setitem__(i, out)) for i, m in enumerate(mods)]
    total, tokens = None, 0
    for text in texts:
        ids = tok(text, return_tensors="pt").input_ids[:, :max_length]
        with torch.no_grad():
            model(input_ids=ids)
        counts = torch.stack([(acts[i][0] > 0).sum(0) for i in range(len(mods))])
        total = counts if total is None else total + counts
        tokens += ids.shape[1]
    for h in handles:
        h.remove()
    lengths = [len(tok(t).input_ids) for t in texts]
    return total.numpy(), tokens, sum(n > max_length for n in lengths)


def test_corpus_run_equals_the_reference_for_any_batch_size(bloom, data, tmp_path):
    expected, tokens, cut = reference_counts(bloom, TEXTS, MAX_LENGTH)
    assert 0 < cut < len(TEXTS), "some texts are cut, some are not"
    for batch in (1, 3, 8):
        results = tmp_path / f"results-{batch}"
        corpus(bloom, data, results, "--file", "corpus-deu", "--batch-size", str(batch))
        assert np.array_equal(read_index(results / "corpus-deu-index-tiny-bloom.jsonl"), expected)
        manifest = json.loads((results / "corpus-deu-manifest-tiny-bloom.json").read_text())
        assert (manifest["kind"], manifest["positions"], manifest["status"]) == ("corpus", "all", "finished")
        assert (manifest["tokens"], manifest["lines"], manifest["cut_lines"], manifest["max_length"]) == \
            (tokens, len(TEXTS), cut, MAX_LENGTH)
        assert not (results / "corpus-deu-progress-tiny-bloom.npz").exists()
        assert not (results / "corpus-deu-ratio-tiny-bloom.jsonl").exists()


def test_corpus_run_refuses_to_redo_or_change_settings(bloom, data, tmp_path, capsys):
    corpus(bloom, data, tmp_path, "--file", "corpus-fra")
    with pytest.raises(SystemExit, match="finished corpus run"):
        corpus(bloom, data, tmp_path, "--file", "corpus-fra")
    manifest = tmp_path / "corpus-fra-manifest-tiny-bloom.json"
    said = json.loads(manifest.read_text())
    said["status"] = "running"  # as if killed
    write_manifest(manifest, said)
    with pytest.raises(SystemExit, match="other settings:\n  max_length: 9 then, 5 now"):
        import corpus_activate
        corpus_activate.main(["--model", str(bloom), "--data-dir", str(data), "--results-dir", str(tmp_path),
                              "--max-length", "5", "--file", "corpus-fra"])
    with pytest.raises(SystemExit, match="no such file"):
        corpus(bloom, data, tmp_path, "--file", "corpus-xyz")


def test_make_plots_skips_corpus_runs(bloom, data, tmp_path):
    from plot_all import plot_all
    corpus(bloom, data, tmp_path, "--file", "corpus-deu")
    counts = np.arange(8).reshape(2, 4)  # a generation run beside it
    (tmp_path / "gen-index-m.jsonl").write_text(index_line(counts))
    (tmp_path / "gen-ratio-m.jsonl").write_text(ratio_lines(np.array([[[1, 2], [0, 3]]]), 4))
    written, _, errors = plot_all(tmp_path)
    assert not errors and written
    assert not [p for p in written if "corpus" in p.name]


def write_neurons(path, neurons, layers=3, width=256):  # the shape of the fixture `bloom`
    path.write_text(json.dumps({"model": "tiny-bloom", "layers": layers, "width": width, "neurons": neurons}))
    return path


def test_deactivation_loader_and_its_refusals(bloom, tmp_path):
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(bloom)  # BLOOM: 4 x hidden neurons per layer, no intermediate_size
    width, layers = 4 * config.hidden_size, config.n_layer
    good = write_neurons(tmp_path / "n.json", {"deu": [[1, 5], [0, 2], [1, 3]], "fra": [[1, 5], [2, width - 1]]})
    assert load_deactivation(f"{good}:deu", config)[0] == {0: [2], 1: [3, 5]}
    off, info = load_deactivation(str(good), config)
    assert off == {0: [2], 1: [3, 5], 2: [width - 1]} and (info["language"], info["neurons"]) == ("all", 4)
    assert split_spec(f"{good}:fra") == (good, "fra") and run_suffix(f"{good}:fra") == "-off-fra"
    assert run_suffix(str(good)) == "-off-all" and run_suffix(None) == ""
    with pytest.raises(DeactivationError, match=f"n.json: no language 'ita'; it has deu, fra"):
        load_deactivation(f"{good}:ita", config)
    wide = write_neurons(tmp_path / "wide.json", {"deu": [[1, width]]})
    with pytest.raises(DeactivationError, match=f"wide.json: deu: neuron {width} of layer 1 is out of range "
                                                f"\\(the model's MLP has {width} neurons per layer\\)"):
        load_deactivation(str(wide), config)
    deep = write_neurons(tmp_path / "deep.json", {"deu": [[layers, 0]]})
    with pytest.raises(DeactivationError, match=f"deep.json: deu: layer {layers} does not exist \\(the model has "
                                                f"{layers} layers\\)"):
        load_deactivation(str(deep), config)
    with pytest.raises(DeactivationError, match="absent.json: no such file"):
        load_deactivation(str(tmp_path / "absent.json"), config)


# --- LAPE on synthetic corpus runs: the example of tests/test_lape.py, worked out by hand ---
COUNTS = {"deu": [[10, 5, 0], [2, 0, 9]], "fra": [[0, 5, 0], [2, 8, 1]]}  # 10 tokens each
TINY = ("--min-tokens", "1")  # these corpora have tens of tokens, below make lape's minimum (not tested here)


def synthetic_runs(results):
    results.mkdir(exist_ok=True)
    for lang, counts in COUNTS.items():
        (results / f"corpus-{lang}-index-m.jsonl").write_text(index_line(np.array(counts)))
        write_manifest(results / f"corpus-{lang}-manifest-m.json",
                       {"kind": "corpus", "positions": "all", "status": "finished", "tokens": 10,
                        "file": f"corpus-{lang}", "model": "m"})
    (results / "direct-index-m.jsonl").write_text(index_line(np.array([[3, 1, 0], [0, 2, 5]])))
    (results / "pim-index-m.jsonl").write_text(index_line(np.array([[0, 0, 0], [0, 0, 5]])))


def test_lape_script_by_hand(tmp_path):
    import language_neurons
    results = tmp_path / "results"
    synthetic_runs(results)
    language_neurons.main(["--results-dir", str(results), "--model", "m", "--top-rate", "0.5", "--filter-quantile",
                           "0.5", "--bar-quantile", "0.75", "--direct", "direct", "--pim", "pim", *TINY])
    data = json.loads((results / "neurons" / "m-language-neurons.json").read_text())
    assert data["languages"] == ["deu", "fra"] and data["tokens"] == {"deu": 10, "fra": 10}
    assert data["neurons"] == {"deu": [[0, 0], [1, 2]], "fra": [[1, 1]]}
    assert (data["filter_value"], data["bar_value"]) == (0.2, 0.5)
    assert data["kept"] == [[0, 0], [1, 1], [1, 2]]
    rows = list(csv.reader((results / "tables" / "m-language-neurons.csv").open()))
    assert rows == [["language", "tokens", "neurons", "L0", "L1"], ["deu", "10", "2", "1", "1"],
                    ["fra", "10", "1", "0", "1"]]
    overlap = list(csv.reader((results / "tables" / "m-language-neurons-overlap.csv").open()))
    assert overlap == [["language", "deu", "fra"], ["deu", "2", "0"], ["fra", "0", "1"]]
    # suppressed by PiM: fired in direct, 0 in PiM: (0,0) deu's, (0,1) no language's, (1,1) fra's
    pim = list(csv.reader((results / "tables" / "m-language-neurons-pim.csv").open()))
    assert [r[:2] for r in pim[1:]] == [["deu", "1"], ["fra", "1"], ["any language", "2"],
                                        ["suppressed by PiM (all)", "3"]]
    assert (results / "figures" / "m-language-neurons.png").stat().st_size > 0


def test_lape_script_refuses_a_generation_run_and_too_few_languages(tmp_path):
    import language_neurons
    results = tmp_path / "results"
    synthetic_runs(results)
    with pytest.raises(SystemExit, match="at least 2 languages"):
        language_neurons.main(["--results-dir", str(results), "--model", "m", "--langs", "deu"])
    write_manifest(results / "corpus-fra-manifest-m.json", {"status": "finished", "file": "corpus-fra", "model": "m"})
    with pytest.raises(SystemExit, match="is not a corpus run"):
        language_neurons.main(["--results-dir", str(results), "--model", "m", *TINY])


# --- perplexity ---
def direct_perplexity(folder, texts, max_length):
    """exp of the mean token NLL from the model's own loss, one unpadded text at a time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    total, count = 0.0, 0
    for text in texts:
        ids = tok(text, return_tensors="pt").input_ids[:, :max_length]
        if ids.shape[1] < 2:
            continue
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss
        total += float(loss) * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    return math.exp(total / count)


def test_perplexity_script(bloom, data, tmp_path):
    import perplexity
    neurons = write_neurons(tmp_path / "n.json", {"deu": [], "fra": [[0, j] for j in range(0, 256, 3)]})
    results = tmp_path / "results"
    perplexity.main(["--model", str(bloom), "--data-dir", str(data), "--results-dir", str(results), "--neurons",
                     str(neurons), "--max-length", str(MAX_LENGTH), "--batch-size", "3"])
    rows = {(r["deactivated"], r["evaluated"]): r for r in csv.DictReader((results / "tables" / "tiny-bloom-perplexity.csv").open())}
    for lang in ("deu", "fra"):
        assert rows["deu", lang]["perplexity"] == rows["none", lang]["perplexity"], "an empty list changes nothing"
        assert float(rows["fra", lang]["change"]) != 0, "switching neurons off changes the perplexity"
    texts = {"deu": TEXTS, "fra": (data / "corpus-fra.txt").read_text().splitlines()}
    for lang, lines in texts.items():
        assert float(rows["none", lang]["perplexity"]) == pytest.approx(direct_perplexity(bloom, lines, MAX_LENGTH),
                                                                       rel=1e-5)
    assert (results / "figures" / "tiny-bloom-perplexity.png").stat().st_size > 0


def test_a_neuron_file_of_another_model_or_with_no_neurons_is_refused(bloom, tmp_path):
    """A file made for a model of another shape (issue 19: tiny-qwen2's neurons on tiny-bloom ran, its width
    ignored), and a selection that would switch nothing off, are refused; perplexity may take an empty one."""
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(bloom)
    width, layers = 4 * config.hidden_size, config.n_layer
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model": "tiny-qwen2", "layers": layers, "width": 96, "neurons": {"deu": [[0, 1]]}}))
    with pytest.raises(DeactivationError, match=f"other.json: made for a model with {layers} layers x 96 neurons "
                                                f"\\(tiny-qwen2\\), not this one's {layers} x {width}"):
        load_deactivation(f"{other}:deu", config)
    same = tmp_path / "same.json"
    same.write_text(json.dumps({"model": "m", "layers": layers, "width": width, "neurons": {"deu": [[0, 1]], "eng": []}}))
    assert load_deactivation(f"{same}:deu", config)[0] == {0: [1]}
    with pytest.raises(DeactivationError, match="same.json: language 'eng' has no neurons: nothing would be"):
        load_deactivation(f"{same}:eng", config)
    assert load_deactivation(f"{same}:eng", config, allow_empty=True)[0] == {}


def test_lape_refuses_corpus_runs_made_with_different_settings(bloom, data, tmp_path):
    """One language at --max-length 4, the other at 9: LAPE would compare unequal things (issue 19)."""
    import language_neurons
    results = tmp_path / "results"
    corpus(bloom, data, results, "--file", "corpus-deu")
    corpus(bloom, data, results, "--file", "corpus-fra", "--max-length", "4")
    with pytest.raises(SystemExit, match="made with different settings \\(corpus-deu: max_length 9; corpus-fra: "
                                         "max_length 4\\)"):
        language_neurons.main(["--results-dir", str(results), "--model", bloom.name, "--top-rate", "0.5", *TINY])
    assert not (results / "neurons").exists()
    corpus(bloom, data, results, "--file", "corpus-fra", "--overwrite")
    language_neurons.main(["--results-dir", str(results), "--model", bloom.name, "--top-rate", "0.5", *TINY])
    assert (results / "neurons" / f"{bloom.name}-language-neurons.json").is_file()


def test_a_neuron_file_of_another_model_of_the_same_shape_is_refused_unless_asked(bloom, data, tmp_path):
    """Issue 19 #6: the neurons of one tiny BLOOM switched off in another of the same config (other seed)."""
    import language_neurons
    from conftest import CORPUS

    from pim.models.tiny import build_tiny_model

    results = tmp_path / "results"
    for file in ("corpus-deu", "corpus-fra"):
        corpus(bloom, data, results, "--file", file)
    language_neurons.main(["--results-dir", str(results), "--model", bloom.name, "--top-rate", "0.5", *TINY])
    neurons = results / "neurons" / f"{bloom.name}-language-neurons.json"
    assert set(json.loads(neurons.read_text())["model_identity"]) == {"config_sha256", "weights_sha256"}
    other = build_tiny_model("bloom", tmp_path / "other" / "tiny-bloom", CORPUS, seed=4)
    with pytest.raises(SystemExit, match="made for another model .*weights_sha256 differ"):
        corpus(other, data, tmp_path / "r2", "--file", "corpus-deu", "--deactivate", f"{neurons}:deu")
    assert not (tmp_path / "r2").exists()
    corpus(other, data, tmp_path / "r2", "--file", "corpus-deu", "--deactivate", f"{neurons}:deu",
           "--deactivate-other-model")
    manifest = json.loads((tmp_path / "r2" / "corpus-deu-manifest-tiny-bloom-off-deu.json").read_text())
    assert manifest["settings"]["deactivate"]["other_model"] is True
    corpus(bloom, data, tmp_path / "r3", "--file", "corpus-deu", "--deactivate", f"{neurons}:deu")  # its own: taken


def test_corpus_and_generation_runs_never_replace_each_other(bloom, data, tmp_path):
    """Issue 19: `make corpus` without FILE took the inference default, and its advice (--overwrite) replaced a
    generation run's manifest and index. Neither kind replaces the other, even with --overwrite."""
    import subprocess

    from conftest import command
    results = tmp_path / "results"
    results.mkdir()
    generation = {"status": "finished", "settings": {}, "file": "corpus-deu", "model": bloom.name, "layers": 3}
    write_manifest(results / f"corpus-deu-manifest-{bloom.name}.json", generation)
    (results / f"corpus-deu-index-{bloom.name}.jsonl").write_text(index_line(np.ones((3, 256), dtype=int)))
    before = {p.name: p.read_bytes() for p in results.iterdir()}
    for extra in ((), ("--overwrite",)):
        with pytest.raises(SystemExit, match="is a generation run \\(make infer\\), not a corpus run: a corpus run "
                                             "never replaces it"):
            corpus(bloom, data, results, "--file", "corpus-deu", *extra)
        assert {p.name: p.read_bytes() for p in results.iterdir()} == before
    corpus(bloom, data, results, "--file", "corpus-fra")
    before = {p.name: p.read_bytes() for p in results.iterdir()}
    done = subprocess.run(command(bloom, data, results, "--file", "corpus-fra", "--max-new-tokens", "2", "--overwrite"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "is a corpus run (make corpus), not a generation run" in done.stderr
    assert {p.name: p.read_bytes() for p in results.iterdir() if not p.name.startswith(".")} == \
        {k: v for k, v in before.items() if not k.startswith(".")}
