"""The notebook API (pim/api.py, docs/api.md): its values against the files parsed here with json, the
prompt/step mapping on hand-made runs of unequal steps per prompt, the refusals of the analyses' checks,
and every code example of docs/api.md and the README, run in order."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CORPUS, INPUT, ROOT, command, ctrl_c_after

from pim.activation_files import escape_newlines, index_line, ratio_lines
from pim.runs.checks import RunMismatch
from pim.runs.names import run_paths, write_manifest

sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "analysis"))
pd = pytest.importorskip("pandas")
import pim  # noqa: E402  (after the paths of the scripts)

DEMO_LINES = 5  # prompts of each demo file in the docs' results folder
LANGS = ("deu", "eng", "spa")


def python_blocks(path):
    """The ```python blocks of a Markdown file, in order."""
    return re.findall(r"```python\n(.*?)```", Path(path).read_text(encoding="utf-8"), re.S)


# --- a hand-made run: 3 prompts of 2, 5 and 1 steps (unequal), 3 layers, values that say where they are ---
STEPS = [2, 5, 1]
LAYERS, WIDTH = 3, 4


def hand_made(results, file="hand", model="m", steps=STEPS, manifest=True, **extra):
    """A finished run whose ratio row of prompt p, step s, layer l holds eq_zero = l/4 and le_zero = a share
    that is unique per (p, s): (p*8 + s) / 64 (a multiple of 1/4 only by chance; the API must not sort)."""
    paths = run_paths(results, file, model)
    results.mkdir(parents=True, exist_ok=True)
    rows = []
    for p, n in enumerate(steps):
        for s in range(n):
            rows.append("{" + ", ".join(f'"{l}": [{l / 4}, {(p * 8 + s) / 64}]' for l in range(LAYERS)) + "}\n")
    paths["ratio"].write_text("".join(rows))
    paths["result"].write_text("".join(f"prompt {p}\\nsecond line\n" for p in range(len(steps))))
    counts = np.arange(LAYERS * WIDTH).reshape(LAYERS, WIDTH) % (sum(steps) + 1)
    paths["index"].write_text(index_line(counts))
    if manifest:
        write_manifest(paths["manifest"], {"status": "finished", "file": file, "model": model, "layers": LAYERS,
                                           "width": WIDTH, "prompts": len(steps), "prompts_done": len(steps),
                                           "counted_steps": sum(steps), "prompt_steps": list(steps),
                                           "settings": {"max_new_tokens": 5}, **extra})
    return paths


def test_ratios_map_rows_to_prompts_and_steps(tmp_path):
    hand_made(tmp_path)
    run = pim.open_run(tmp_path, "hand", "m")
    frame = run.ratios
    assert list(frame.columns) == ["prompt", "step", "layer", "eq_zero", "le_zero"]
    assert len(frame) == sum(STEPS) * LAYERS
    expected = [(p, s, layer, layer / 4, (p * 8 + s) / 64)
                for p, n in enumerate(STEPS) for s in range(n) for layer in range(LAYERS)]
    assert [tuple(r) for r in frame.itertuples(index=False)] == expected
    assert frame.groupby("prompt").size().tolist() == [n * LAYERS for n in STEPS]
    assert run.results == [f"prompt {p}\nsecond line" for p in range(3)]
    assert run.prompt_steps == STEPS and run.counted == sum(STEPS) and run.kind == "generation"


def test_older_runs_map_prompts_only_where_the_counts_say_it(tmp_path):
    """No prompt_steps in the manifest: every prompt ran max_new_tokens (5 x 3 = 15 rows), or it is unknown."""
    hand_made(tmp_path / "full", steps=[5, 5, 5])
    manifest = run_paths(tmp_path / "full", "hand", "m")["manifest"]
    m = json.loads(manifest.read_text())
    del m["prompt_steps"]
    write_manifest(manifest, m)
    frame = pim.open_run(tmp_path / "full", "hand", "m").ratios
    assert frame.prompt.tolist() == [p for p in range(3) for _ in range(5 * LAYERS)]
    assert frame.step.tolist() == [s for _ in range(3) for s in range(5) for _ in range(LAYERS)]

    hand_made(tmp_path / "unequal")
    manifest = run_paths(tmp_path / "unequal", "hand", "m")["manifest"]
    m = json.loads(manifest.read_text())
    del m["prompt_steps"]
    write_manifest(manifest, m)
    run = pim.open_run(tmp_path / "unequal", "hand", "m")
    assert run.prompt_steps is None
    assert run.ratios.prompt.isna().all() and run.ratios.step.isna().all()
    assert run.ratios.le_zero.tolist()[::LAYERS] == [(p * 8 + s) / 64 for p, n in enumerate(STEPS) for s in range(n)]


@pytest.mark.parametrize("change, message", [
    ({"counted_steps": 9}, "8 rows, but"),
    ({"status": "running"}, "the run is running, not finished"),
    ({"prompt_steps": [2, 4, 1]}, "prompt_steps adds up to 7 steps, but the manifest says 8 counted steps"),
    ({"prompt_steps": [2, 6]}, "prompt_steps has 2 prompts, but the manifest says 3"),
    ({"layers": 4}, "3 layers in every row, but"),
])
def test_a_run_that_disagrees_with_its_manifest_is_refused(tmp_path, change, message):
    hand_made(tmp_path, **change)
    with pytest.raises(RunMismatch, match=re.escape(message)):
        pim.open_run(tmp_path, "hand", "m")


def test_missing_and_unfinished_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run of x with m"):
        pim.open_run(tmp_path, "x", "m")
    paths = hand_made(tmp_path, status="running")
    paths["index"].unlink()
    with pytest.raises(RunMismatch, match="running, not finished"):
        pim.open_run(tmp_path, "hand", "m")


def test_a_run_without_manifest_or_index_is_not_finished(tmp_path):
    """Issue 27: the paper's own files (no manifest) without their index file: nothing says the run is
    unfinished but the missing index, which the error names."""
    paths = hand_made(tmp_path, manifest=False)
    paths["index"].unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{paths['index']}: no such file; the run is not finished")):
        pim.open_run(tmp_path, "hand", "m")


def test_a_run_knows_its_names_and_a_corpus_run_has_no_layer_means(tmp_path):
    """Issue 27: run.file and run.model are the names asked for (not swapped); a corpus run counts tokens and
    has no ratio file, so no per-layer means; a generation run's means are those of its rows (l/4, by hand)."""
    hand_made(tmp_path, "wmt22-deu2eng", "m")
    run = pim.open_run(tmp_path, "wmt22-deu2eng", "m")
    assert (run.file, run.model, run.kind) == ("wmt22-deu2eng", "m", "generation")
    assert run.layer_means()["eq_zero"].tolist() == [l / 4 for l in range(LAYERS)]
    corpus = run_paths(tmp_path, "corpus-deu", "m")
    corpus["index"].write_text(index_line(np.ones((LAYERS, WIDTH), dtype=int)))
    write_manifest(corpus["manifest"], {"kind": "corpus", "status": "finished", "tokens": 12, "lines_done": 3})
    run = pim.open_run(tmp_path, "corpus-deu", "m")
    assert (run.file, run.kind, run.counted) == ("corpus-deu", "corpus", 12)
    assert run.layer_means() is None and run.ratios is None


def test_a_run_without_manifest_opens_with_a_note(tmp_path):
    hand_made(tmp_path, manifest=False)
    run = pim.open_run(tmp_path, "hand", "m")
    assert run.manifest is None and "no manifest" in run.note
    assert run.counted == sum(STEPS) and run.ratios.prompt.isna().all()


def test_list_runs(tmp_path):
    hand_made(tmp_path, "wmt22-deu2eng", "m")
    hand_made(tmp_path, "wmt22-GPT4-deu_spa_rus_fra2eng", "m", steps=[1, 1, 1])
    hand_made(tmp_path, "paper", "m", manifest=False)
    unfinished = hand_made(tmp_path, "later", "m", status="running")
    unfinished["index"].unlink()
    corpus = run_paths(tmp_path, "corpus-deu", "m")
    corpus["index"].write_text(index_line(np.ones((LAYERS, WIDTH), dtype=int)))
    write_manifest(corpus["manifest"], {"kind": "corpus", "status": "finished", "tokens": 12, "lines_done": 3})
    (tmp_path / "shards").mkdir()
    hand_made(tmp_path / "shards", "wmt22-deu2eng", "m-shard0of2")
    (tmp_path / "notes.txt").write_text("not a run")
    frame = pim.list_runs(tmp_path)
    got = frame[["file", "kind", "condition", "status", "counted", "prompts"]].astype(object).where(
        frame.notna(), None).values.tolist()
    assert got == [["wmt22-deu2eng", "generation", "direct", "finished", 8, 3],
                   ["wmt22-GPT4-deu_spa_rus_fra2eng", "generation", "PiM-3", "finished", 3, 3],
                   ["later", "generation", None, "unfinished", 8, 3],
                   ["paper", "generation", None, "no manifest", None, None],
                   ["corpus-deu", "corpus", None, "finished", 12, 3]]
    assert frame.loc[2, "index"] is None and frame.loc[2, "ratio"] == run_paths(tmp_path, "later", "m")["ratio"]
    assert set(frame.model) == {"m"}


def test_pim_does_not_import_pandas_until_the_api_is_used():
    code = ("import sys, pim, pim.cli; assert 'pandas' not in sys.modules, 'pandas at import'; "
            "f = pim.open_run; assert 'pandas' in sys.modules and f.__module__ == 'pim.api'; "
            "print(sorted(set(dir(pim)) & {'open_run', 'open_neurons', 'list_runs'}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "['list_runs', 'open_neurons', 'open_run']"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        pim.nothing  # noqa: B018


# --- a real run of the tiny BLOOM whose EOS ends some continuations early (unequal steps per prompt) ---
def test_a_real_run_equals_its_files_parsed_here(eos_model_dir, data_dir, tmp_path):
    import infer_activate

    results = tmp_path / "results"
    infer_activate.main(command(eos_model_dir, data_dir, results, "--batch-size", "3")[2:])
    paths = run_paths(results, "prompts", "tiny-bloom-eos")
    manifest = json.loads(paths["manifest"].read_text())
    rows = [json.loads(line) for line in paths["ratio"].read_text().splitlines()]
    steps = manifest["prompt_steps"]
    assert len(steps) == len(INPUT) and sum(steps) == len(rows) and len(set(steps)) > 1, "unequal steps"

    run = pim.open_run(results, "prompts", "tiny-bloom-eos")
    layers = len(rows[0])
    expected = [(p, s, layer, *rows[sum(steps[:p]) + s][str(layer)])
                for p, n in enumerate(steps) for s in range(n) for layer in range(layers)]
    assert [tuple(r) for r in run.ratios.itertuples(index=False)] == expected
    assert np.array_equal(run.index, np.array(list(json.loads(paths["index"].read_text()).values())))
    assert run.results == [line.replace("\\n", "\n") for line in paths["result"].read_text().split("\n")[:-1]]
    assert run.manifest == manifest
    means = run.layer_means()
    assert np.allclose(means["le_zero"], [np.mean([r[str(l)][1] for r in rows]) for l in range(layers)])
    top = run.top_neurons(0.05)
    counts = run.index.ravel()
    order = sorted(range(counts.size), key=lambda i: (-counts[i], i))[:int(counts.size * 0.05)]
    order = [i for i in order if counts[i] > 0]
    assert (top.layer * run.index.shape[1] + top.neuron).tolist() == order
    assert top["count"].tolist() == [counts[i] for i in order]


def test_steps_per_prompt_survive_a_resume_with_pending_prompts(eos_model_dir, data_dir, tmp_path):
    """Stopped after its first length-sorted batch (prompts waiting in the progress file), resumed: the
    manifest's steps per prompt are those of the uninterrupted run, and the ratio rows map the same."""
    import infer_activate

    from pim.runs import generation

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    infer_activate.main(command(eos_model_dir, data_dir, whole, "--batch-size", "4", "--no-sort")[2:])
    with ctrl_c_after(generation.Generator, 1):
        infer_activate.main(command(eos_model_dir, data_dir, resumed, "--batch-size", "4")[2:])
    with np.load(run_paths(resumed, "prompts", "tiny-bloom-eos")["progress"]) as progress:
        assert json.loads(str(progress["pending"])), "prompts wait for their predecessors"
    infer_activate.main(command(eos_model_dir, data_dir, resumed, "--batch-size", "3")[2:])
    steps = [json.loads(run_paths(folder, "prompts", "tiny-bloom-eos")["manifest"].read_text())["prompt_steps"]
             for folder in (whole, resumed)]
    assert steps[0] == steps[1] and len(set(steps[0])) > 1
    assert pim.open_run(resumed, "prompts", "tiny-bloom-eos").ratios.equals(
        pim.open_run(whole, "prompts", "tiny-bloom-eos").ratios)


def test_neurons_of_a_file_equal_its_json(tmp_path):
    from pim.models.deactivation import DeactivationError

    data = {"languages": ["deu", "fra"], "layers": 3, "width": 8, "kept": [[2, 7], [0, 1], [1, 3], [2, 2]],
            "neurons": {"deu": [[0, 1], [2, 7], [1, 3]], "fra": [[2, 7], [2, 2]]}}
    path = tmp_path / "neurons" / "m-language-neurons.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    neurons = pim.open_neurons(tmp_path, "m")
    assert neurons.raw == data and neurons.languages == ["deu", "fra"] and neurons.path == path
    rows = [(r.layer, r.neuron, r.languages, r.rank) for r in neurons.table.itertuples()]
    assert rows == [(0, 1, ("deu",), 1), (1, 3, ("deu",), 2), (2, 2, ("fra",), 3), (2, 7, ("deu", "fra"), 0)]
    assert neurons.of("fra")[["layer", "neuron"]].values.tolist() == [[2, 2], [2, 7]]
    with pytest.raises(KeyError, match="no language 'eng'"):
        neurons.of("eng")
    assert pim.open_neurons(path).table.equals(neurons.table)
    data["neurons"]["fra"].append([3, 0])  # layer 3 of a 3-layer model
    path.write_text(json.dumps(data))
    with pytest.raises(DeactivationError, match="layer 3 does not exist"):
        pim.open_neurons(path)


# --- the examples of docs/api.md and the README, run in order ---
@pytest.fixture(scope="module")
def docs_folder(tmp_path_factory):
    """A folder laid out as `make demo` leaves it (results/ with the demo's runs and neurons of a model named
    gemma-3-270m), made by a tiny BLOOM in a folder of that name on the first lines of the demo's files."""
    import corpus_activate
    import infer_activate
    import language_neurons

    from pim.models.tiny import build_tiny_model

    base = tmp_path_factory.mktemp("docs")
    model = build_tiny_model("bloom", base / "models" / "gemma-3-270m", CORPUS, seed=1)
    data = base / "data"
    data.mkdir()
    names = ["sample-deu2eng", "sample-GPT4-deu_spa_rus_fra2eng"] + [f"sample-corpus-{lang}" for lang in LANGS]
    for name in names:
        lines = (ROOT / "data" / f"{name}.txt").read_text(encoding="utf-8").splitlines(keepends=True)
        (data / f"{name}.txt").write_text("".join(lines[:DEMO_LINES]), encoding="utf-8")
    results = base / "results"
    common = ["--model", str(model), "--data-dir", str(data), "--results-dir", str(results)]
    for file in names[:2]:
        infer_activate.main(common + ["--file", file, "--max-new-tokens", "6", "--batch-size", "2"])
    corpus_activate.main(common + ["--file", *names[2:], "--max-length", "16"])
    language_neurons.main(["--model", "gemma-3-270m", "--results-dir", str(results), "--prefix", "sample-corpus-",
                           "--top-rate", "0.05", "--min-tokens", "1"])
    return base


def test_every_example_of_docs_api_runs(docs_folder, monkeypatch):
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    monkeypatch.chdir(docs_folder)
    blocks = python_blocks(ROOT / "docs" / "api.md")
    assert len(blocks) >= 6
    namespace = {}
    try:
        for number, block in enumerate(blocks, 1):
            exec(compile(block, f"docs/api.md, python block {number}", "exec"), namespace)
    finally:
        plt.close("all")
    # what the examples computed, against the files parsed here
    results = docs_folder / "results"
    manifest = json.loads((results / "sample-deu2eng-manifest-gemma-3-270m.json").read_text())
    assert namespace["run"].counted == manifest["counted_steps"] and len(namespace["runs"]) == 2 + len(LANGS)
    rows = [json.loads(line) for line in (results / "sample-deu2eng-ratio-gemma-3-270m.jsonl").read_text().splitlines()]
    per_layer = [np.mean([r[str(layer)][1] for r in rows]) for layer in range(len(rows[0]))]
    assert np.allclose(namespace["per_layer"].to_numpy(), per_layer)
    firsts = np.cumsum([0] + manifest["prompt_steps"][:-1])
    assert np.allclose(namespace["at_prompt"].to_numpy(),
                       [np.mean([rows[i][str(layer)][1] for i in firsts]) for layer in range(len(rows[0]))])
    neurons = json.loads((results / "neurons" / "gemma-3-270m-language-neurons.json").read_text())
    assert sorted(map(tuple, neurons["neurons"]["deu"])) == sorted(zip(namespace["deu"].layer, namespace["deu"].neuron))
    assert len(namespace["deu"]) > 0, "the example shows some German neurons"
    corpus = json.loads((results / "sample-corpus-deu-manifest-gemma-3-270m.json").read_text())
    assert namespace["corpus"].tokens == corpus["tokens"] and namespace["corpus"].ratios is None


def test_the_readme_example_runs(tmp_path, monkeypatch):
    """The README's recorder example, on models/gemma-3-270m where it is, else on a tiny Gemma 3 put there."""
    from pim.models.tiny import build_tiny_model

    (block,) = python_blocks(ROOT / "README.md")
    if (ROOT / "models" / "gemma-3-270m" / "config.json").is_file():
        monkeypatch.chdir(ROOT)
    else:
        build_tiny_model("gemma3_text", tmp_path / "models" / "gemma-3-270m", CORPUS, seed=1)
        monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block, "README.md, python block", "exec"), namespace)
    stats = namespace["stats"]
    new_tokens = int(re.search(r"max_new_tokens=(\d+)", block)[1])
    assert stats.steps.tolist() == [new_tokens] or 1 <= stats.steps.item() <= new_tokens
    assert stats.zero_counts.shape[0] == int(stats.steps.sum())
