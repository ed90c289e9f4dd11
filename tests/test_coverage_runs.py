"""The branches of run names, shards and merging that no other test took (issue 27; `make coverage`): labels of
runs that are no condition, shard manifests that cannot be merged, a merge that died during its renames, and
corpus shards whose files do not fit. Shards are written here by hand; merged files are checked against
sums and concatenations worked out here."""
import json

import numpy as np
import pytest
from test_run_checks import snapshot, write_shards

from pim.activation_files import index_line, read_index
from pim.runs.merge import merge_corpus_shards, merge_shards
from pim.runs.names import Run, labels, run_paths, write_manifest
from pim.runs.shards import check_shards, shard_dir, shard_model_name
from pim.runs.writer import RunRefused


# ----------------------------------------------------------------------------- labels
def test_labels_of_two_pim_runs_and_a_run_that_is_no_condition():
    runs = [Run("wmt22-GPT4-deu_spa2eng", "m"), Run("wmt22-GPT4-deu_fra2eng", "m"), Run("notes", "m")]
    assert labels(runs) == ["PiM-1 (spa)", "PiM-1 (fra)", "notes"]
    same = [Run("notes", "a"), Run("notes", "b")]
    assert labels(same) == ["notes · a", "notes · b"]


# ----------------------------------------------------------------------------- shard manifests
def shard_manifests(results):
    return sorted(shard_dir(results).glob("prompts-manifest-m-shard*of*.json"))


def edit(path, **changes):
    m = json.loads(path.read_text())
    m.update(changes)
    path.write_text(json.dumps(m))


def test_shard_manifests_that_cannot_be_merged_are_refused(tmp_path):
    results = tmp_path / "results"
    with pytest.raises(RunRefused, match=f"no shards of prompts with m in {shard_dir(results)}"):
        check_shards(results, "prompts", "m")
    write_shards(results, total=20, count=2)
    first, second = shard_manifests(results)
    with pytest.raises(RunRefused, match=f"{tmp_path / 'gone.json'}: no such shard manifest"):
        check_shards(results, "prompts", "m", [first, tmp_path / "gone.json"])
    other = tmp_path / "plain.json"
    other.write_text(json.dumps({"status": "finished", "file": "prompts", "model": "m"}))
    with pytest.raises(RunRefused, match=f"{other} is not the manifest of a shard"):
        check_shards(results, "prompts", "m", [first, other])
    twice = tmp_path / "copy-of-shard0.json"
    twice.write_bytes(first.read_bytes())
    with pytest.raises(RunRefused, match=f"shard 0/2 given twice: {first} and {twice}"):
        check_shards(results, "prompts", "m", [first, twice, second])
    assert [m["shard"] for _, m in check_shards(results, "prompts", "m", [second, first])] == [[0, 2], [1, 2]]


@pytest.mark.parametrize("changes, message", [
    ({"prompt_range": [12, 20], "prompts_done": 8},
     "covers prompts [12, 20] of 20, but the shards before it end at 10 of 20"),  # a gap
    ({"prompt_range": [10, 19], "prompts_done": 9},
     "covers prompts [10, 19] of 20, but the shards before it end at 10 of 20"),  # the last prompt missing
    ({"prompts_done": 9}, "covers prompts [10, 20] of 20, but the shards before it end at 10 of 20"),
    ({"prompts_total": 21}, "covers prompts [10, 20] of 21, but the shards before it end at 10 of 20"),
    ({"kind": "corpus", "line_range": [10, 20], "lines_total": 20, "tokens": 5, "lines": 10},
     "the shards are of different kinds of runs: corpus, generation"),
])
def test_shards_that_do_not_cover_the_prompts_once_are_refused(tmp_path, changes, message):
    results = tmp_path / "results"
    write_shards(results, total=20, count=2)
    _, second = shard_manifests(results)
    edit(second, **changes)
    before = snapshot(results)
    with pytest.raises(RunRefused) as e:
        merge_shards(results, "prompts", "m")
    assert message in str(e.value)
    assert snapshot(results) == before


# ----------------------------------------------------------------------------- generation shards merged
def test_shards_whose_index_files_differ_in_width_are_refused(tmp_path):
    results = tmp_path / "results"
    shards = write_shards(results, total=20, count=2)
    shards[1]["index"].write_text(index_line(np.ones((4, 6), dtype=int)))  # its manifest records no width
    with pytest.raises(RunRefused, match=r"the shards' index files differ in shape \(layers x neurons: prompts-index-"
                                         r"m-shard0of2.jsonl: 4 x 8, prompts-index-m-shard1of2.jsonl: 4 x 6\)"):
        merge_shards(results, "prompts", "m")


def test_a_merge_that_died_during_its_renames_is_done_again(tmp_path):
    results = tmp_path / "results"
    shards = write_shards(results, total=20, count=2)
    target = run_paths(results, "prompts", "m")
    target["manifest"].write_text(json.dumps({"status": "merging"}))  # killed between the manifest and the renames
    target["result"].write_text("half\n")
    merged = merge_shards(results, "prompts", "m")
    assert merged["result"].read_bytes() == b"".join(s["result"].read_bytes() for s in shards)
    assert merged["ratio"].read_bytes() == b"".join(s["ratio"].read_bytes() for s in shards)
    summed = read_index(shards[0]["index"]) + read_index(shards[1]["index"])
    assert read_index(merged["index"]).tolist() == summed.tolist()
    manifest = json.loads(merged["manifest"].read_text())
    assert (manifest["status"], manifest["prompts_done"], manifest["counted_steps"]) == ("finished", 20, 60)


def test_a_result_file_that_is_no_run_is_not_merged_over(tmp_path):
    results = tmp_path / "results"
    write_shards(results, total=20, count=2)
    target = run_paths(results, "prompts", "m")
    target["result"].write_text("someone's notes\n")
    with pytest.raises(RunRefused, match=f"{target['result']} exists; move it away or pass --overwrite"):
        merge_shards(results, "prompts", "m")
    assert target["result"].read_text() == "someone's notes\n"
    merge_shards(results, "prompts", "m", overwrite=True)
    assert len(target["result"].read_text().splitlines()) == 20


# ----------------------------------------------------------------------------- corpus shards merged
LAYERS, WIDTH = 2, 3
LINES, SHARDS = 10, 2


def write_corpus_shards(results, file="corpus-deu", model="m"):
    """Two finished corpus shards of 10 lines: counts [2, 3] each, tokens 7 and 5."""
    shards = []
    for i, (tokens, counts) in enumerate([(7, [[7, 0, 3], [1, 2, 7]]), (5, [[0, 5, 5], [4, 4, 0]])]):
        paths = run_paths(shard_dir(results), file, shard_model_name(model, i, SHARDS))
        paths["index"].parent.mkdir(parents=True, exist_ok=True)
        paths["index"].write_text(index_line(np.array(counts)))
        lo, hi = LINES * i // SHARDS, LINES * (i + 1) // SHARDS
        write_manifest(paths["manifest"], {
            "kind": "corpus", "status": "finished", "settings": {"max_length": 32, "shard": [i, SHARDS]},
            "file": file, "model": model, "shard": [i, SHARDS], "line_range": [lo, hi], "lines_total": LINES,
            "tokens": tokens, "lines": hi - lo, "layers": LAYERS, "width": WIDTH, "started": f"t{i}",
            "finished": f"t{i + 1}"})
        shards.append(paths)
    return shards


def test_corpus_shards_merge_to_the_summed_counts(tmp_path):
    results = tmp_path / "results"
    write_corpus_shards(results)
    merged = merge_shards(results, "corpus-deu", "m")
    assert read_index(merged["index"]).tolist() == [[7, 5, 8], [5, 6, 7]]
    manifest = json.loads(merged["manifest"].read_text())
    assert (manifest["tokens"], manifest["lines"], manifest["line_range"]) == (12, 10, [0, 10])


@pytest.mark.parametrize("damage, message", [
    (lambda s: s[1]["index"].unlink(), "corpus-deu-index-m-shard1of2.jsonl: missing (the index of shard 1/2"),
    (lambda s: s[1]["index"].write_text(index_line(np.array([[6, 0, 0], [0, 0, 0]]))),
     "corpus-deu-index-m-shard1of2.jsonl: counts of shape (2, 3) up to 6 do not fit its manifest "
     "(2 layers x 3 neurons, 5 tokens)"),
    (lambda s: s[0]["index"].write_text(index_line(np.array([[1, 0], [0, 0]]))),
     "corpus-deu-index-m-shard0of2.jsonl: counts of shape (2, 2) up to 1 do not fit its manifest"),
    (lambda s: s[0]["index"].write_text(index_line(np.array([[1, -1, 0], [0, 0, 0]]))),
     "corpus-deu-index-m-shard0of2.jsonl:1: layer 0, neuron 1: a negative count (-1)"),  # refused when read
])
def test_corpus_shards_whose_counts_do_not_fit_are_refused(tmp_path, damage, message):
    results = tmp_path / "results"
    damage(write_corpus_shards(results))
    before = snapshot(results)
    with pytest.raises(RunRefused) as e:
        merge_shards(results, "corpus-deu", "m")
    assert message in str(e.value)
    assert snapshot(results) == before


def test_merged_corpus_shards_never_replace_a_run_unasked(tmp_path):
    results = tmp_path / "results"
    write_corpus_shards(results)
    target = run_paths(results, "corpus-deu", "m")
    target["index"].write_text(index_line(np.ones((LAYERS, WIDTH), dtype=int)))  # an index without a manifest
    with pytest.raises(RunRefused, match=rf"{target['index']} exists \(no manifest\); pass --overwrite"):
        merge_shards(results, "corpus-deu", "m")
    write_manifest(target["manifest"], {"status": "finished", "file": "corpus-deu", "model": "m"})  # make infer's
    for overwrite in (False, True):
        with pytest.raises(RunRefused, match="is a generation run: merged corpus shards never replace it"):
            merge_shards(results, "corpus-deu", "m", overwrite=overwrite)
    assert read_index(target["index"]).tolist() == [[1, 1, 1], [1, 1, 1]]
    target["manifest"].unlink()
    merge_shards(results, "corpus-deu", "m", overwrite=True)
    assert read_index(target["index"]).tolist() == [[7, 5, 8], [5, 6, 7]]


def test_generation_shards_are_no_corpus_shards(tmp_path):
    results = tmp_path / "results"
    write_shards(results, total=20, count=2)
    with pytest.raises(RunRefused, match="the shards of prompts with m are not corpus runs"):
        merge_corpus_shards(results, "prompts", "m")
