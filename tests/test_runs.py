"""pim/runs/names.py: the names of a run's files, written by run_paths and parsed by split_name, on hostile names."""
import itertools
import json
import re
from pathlib import Path

import pytest

from pim.runs.names import KINDS, Run, find_runs, name_problem, run_of, run_paths, split_name

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("file, model", [
    ("wmt22-deu2eng", "bloom-7b1"),
    ("wmt22-GPT4-deu_spa_rus_fra2eng", "qwen2.5-7b-instruct"),
    ("my-index-notes", "m"),  # FILE holds the kind of another file
    ("a-result-b", "llama-3.1-8b-instruct"),
    ("x", "model-with-many-dashes-shard0of2"),
])
def test_every_kind_round_trips_alone(file, model, tmp_path):
    for kind, path in run_paths(tmp_path, file, model).items():
        assert path.name.endswith("." + KINDS[kind])
        if f"-{kind}-" not in file:  # the last place is MODEL's start: nothing on disk needed
            assert split_name(path.name, kind) == (file, model)


def test_a_file_holding_its_own_kind_is_split_by_what_is_on_disk(tmp_path):
    file, model = "notes-index-v2", "bloom-7b1"
    paths = run_paths(tmp_path, file, model)
    name = paths["index"].name  # notes-index-v2-index-bloom-7b1.jsonl
    assert split_name(name, "index") == ("notes-index-v2", "bloom-7b1")  # the last place
    model_with_infix = "m-index-x"  # MODEL holds the infix: only the disk can tell
    odd = run_paths(tmp_path, "f", model_with_infix)
    assert split_name(odd["index"].name, "index") == ("f-index-m", "x")
    odd["ratio"].write_text("")
    assert split_name(odd["index"].name, "index", tmp_path) == ("f", "m-index-x")  # the partner file
    run_paths(tmp_path, "f-index-m", "x")["manifest"].write_text(json.dumps({"file": "f-index-m", "model": "x"}))
    assert split_name(odd["index"].name, "index", tmp_path) == ("f-index-m", "x")  # the manifest first


def test_result_names_prefer_a_condition_and_find_runs_reads_them(tmp_path):
    assert split_name("wmt22-deu2eng-result-m-result-x.txt", "result") == ("wmt22-deu2eng", "m-result-x")
    for file, model in (("wmt22-deu2eng", "m-result-x"), ("a-index-b", "m")):
        run_paths(tmp_path, file, model)["result"].write_text("x\n")
    run_paths(tmp_path, "a-index-b", "m")["index"].write_text('{"0": [1]}\n')
    (tmp_path / ".hidden-result-m.txt").write_text("x\n")
    runs = find_runs(tmp_path, "result")
    assert [(r.file, r.model) for r in runs] == [("a-index-b", "m"), ("wmt22-deu2eng", "m-result-x")]
    assert runs[0].index == run_paths(tmp_path, "a-index-b", "m")["index"] and runs[1].index is None
    assert [(r.file, r.model) for r in find_runs(tmp_path, "index")] == [("a-index-b", "m")]


def test_a_marker_of_another_kind_in_model_makes_it_that_kind(tmp_path):
    name = "notes-index-x-ratio-m.jsonl"
    assert split_name(name, "ratio") == ("notes-index-x", "m")
    assert split_name(name, "index") is None  # not an index file of (notes, x-ratio-m)...
    run_paths(tmp_path, "notes", "x-ratio-m")["manifest"].write_text(json.dumps({"file": "notes", "model": "x-ratio-m"}))
    assert split_name(name, "index", tmp_path) == ("notes", "x-ratio-m")  # ...unless its manifest says so
    results = tmp_path / "results"  # no manifests: make plots finds the one run, with both its files
    results.mkdir()
    run_paths(results, "notes-index-x", "m")["index"].write_text('{"0": [1]}\n')
    (results / name).write_text('{"0": [0.5, 0.5]}\n')
    runs = find_runs(results, "index")
    assert [(r.file, r.model, r.ratio.name) for r in runs] == [("notes-index-x", "m", name)]


def test_names_outside_the_grammar(tmp_path):
    assert split_name("nothing.jsonl", "index") is None
    assert split_name("-index-m.jsonl", "index") is None  # no FILE
    assert split_name("f-index-.jsonl", "index") is None  # no MODEL
    run = run_of(tmp_path / "plain.jsonl", "index")
    assert (run.file, run.model) == ("plain", "")
    assert run_of(tmp_path / "f-proportion-m.jsonl", "ratio").model == "m"  # the paper's ratio files


# --- names that could collide are refused (issue 19, #12) ---

# the <kind> of every name a run gets, written out: run_paths' five, the paper's ratio files, figures and tables
ALL_KINDS = ["result", "ratio", "index", "manifest", "progress", "proportion", "heatmap", "peak"]


def test_the_names_of_the_issue_collide_and_are_refused(tmp_path):
    a, b = run_paths(tmp_path, "x-ratio-y", "tiny-bloom"), run_paths(tmp_path, "x", "y-ratio-tiny-bloom")
    assert a["ratio"] == b["ratio"] == tmp_path / "x-ratio-y-ratio-tiny-bloom.jsonl"  # why they are refused
    assert name_problem("x-ratio-y", "tiny-bloom") == (
        "FILE 'x-ratio-y' has 'ratio' as a part, a <kind> of the file names <FILE>-<kind>-<MODEL>.<ext> (result, "
        "ratio, index, manifest, progress, proportion, heatmap, peak), so this run's files could be another run's; "
        "rename data/x-ratio-y.txt, e.g. to data/x_ratio_y.txt")
    said = name_problem("x", "y-ratio-tiny-bloom", data_dir="prompts")
    assert said.startswith("MODEL 'y-ratio-tiny-bloom' has 'ratio' as a part")
    assert said.endswith("put the model in a folder of another name, e.g. models/y_ratio_tiny-bloom/")
    assert "\n" not in said and name_problem("x_ratio_y", "y_ratio_tiny-bloom") is None  # the suggested names pass


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_kind_anywhere_between_dashes_is_refused(kind):
    for name in (f"a-{kind}-b", f"{kind}-b", f"a-{kind}", kind, f"a-{kind.upper()}-b", f"a--{kind}--b"):
        assert name_problem(name, "m").startswith(f"FILE {name!r} has "), name
        assert name_problem("f", name).startswith(f"MODEL {name!r} has "), name
    for name in (f"a-{kind}s-b", f"a-x{kind}", f"a_{kind}_b", f"{kind}.v2-x", f"a-{kind[:-1]}"):
        assert name_problem(name, name) is None, name


def test_names_that_pass_cannot_collide():
    """Every FILE, MODEL pair built from these parts that passes writes names no other passing pair writes,
    and each name splits back to its pair without looking at the disk."""
    parts = ["a", "ratio", "b_index", "index", "peak", "c"]
    names = {"-".join(p) for n in (1, 2, 3) for p in itertools.product(parts, repeat=n)}
    passing = [(f, m) for f in sorted(names) for m in sorted(names) if name_problem(f, m) is None]
    assert len(passing) == (3 + 3**2 + 3**3) ** 2  # the names of a, b_index and c alone, on either side
    written = {}
    for file, model in passing:
        run = Run(file, model)
        for kind, path in run_paths("r", file, model).items():
            assert written.setdefault(path.name, (file, model)) == (file, model), path.name
            assert split_name(path.name, kind) == (file, model)
        for kind in ("ratio", "heatmap", "peak"):  # tables and figures: results/{tables,figures}/<name>.<ext>
            assert written.setdefault(run.out_name(kind) + ".fig", (file, model)) == (file, model)


def test_the_projects_own_names_pass():
    makefile = (ROOT / "Makefile").read_text()
    demo = {name: re.search(rf"^{name} :?= (.*)$", makefile, re.M).group(1).split() for name in
            ("DEMO_MODELS", "DEMO_TINY_MODELS", "DEMO_FILES", "DEMO_LANGS")}
    files = [p.stem for p in (ROOT / "data").glob("*.txt")] + demo["DEMO_FILES"] + [
        f"{prefix}corpus-{lang}" for prefix in ("", "sample-") for lang in demo["DEMO_LANGS"] + ["zho", "jpn", "ces"]]
    files += ["interactive", "prompts", "wmt22-deu2eng-5shot", "wmt22-deu2eng-0shot-v8", "corpus-xyz"]
    from pim.models.architectures import tiny_types
    from pim.models.names import model_names

    models = model_names() + demo["DEMO_MODELS"] + demo["DEMO_TINY_MODELS"] + tiny_types() + [
        "tiny-bloom-eos", "tiny-bloom-plain", "tiny-bloom-off-deu", "qwen-7b-chat-off-all", "bloom-7b1-shard0of2"]
    assert len(files) > 25 and len(models) > 40  # a clean clone has no files of `make data`
    assert [(f, m) for f in files for m in models if name_problem(f, m)] == []


def test_both_kinds_of_runs_refuse_names_that_can_collide_before_loading_a_model(tmp_path):
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import corpus_activate
    import infer_activate

    data = tmp_path / "data"
    data.mkdir()
    (data / "x-ratio-y.txt").write_text("Hallo\n")
    for main, file in ((infer_activate.main, ["--file", "x-ratio-y"]), (corpus_activate.main, ["--file", "x-ratio-y"])):
        with pytest.raises(SystemExit) as e:
            main(["--model", "no-such-model", "--data-dir", str(data), "--results-dir", str(tmp_path / "r"), *file])
        assert "FILE 'x-ratio-y' has 'ratio' as a part" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "r").exists()
