"""pim/runs.py: the names of a run's files, written by run_paths and parsed by split_name, on hostile names."""
import json

import pytest

from pim.runs import KINDS, find_runs, run_of, run_paths, split_name


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
