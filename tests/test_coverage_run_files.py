"""The branches of the corpus-run and neuron-examples files (pim/runs/corpus_files.py, pim/runs/example_files.py)
that no other test took (`make coverage`): runs without files or unfinished, finished runs and stray data files
that a new run refuses, a manifest of a run killed before its first commit, old manifests without a sort_window
setting, progress files of another shape or damaged, a resume with another batch size, --overwrite runs killed
while being moved into place or resumed from their staging folder, and runs abandoned before their first commit.
The writers are driven directly on runs planted here (3 layers x 5 neurons, lines from 5, 3 neurons' top 2);
what they must leave is compared with what was planted."""
import json
import re

import numpy as np
import pytest
from conftest import dead_pid
from test_run_checks import snapshot

from pim.activation_files import FormatError
from pim.cli import UserError
from pim.runs import corpus_files, example_files
from pim.runs.corpus_files import CorpusWriter, is_corpus_run, read_corpus_run
from pim.runs.example_files import ExamplesWriter, read_examples
from pim.runs.names import Run, run_paths
from pim.runs.writer import RunRefused

FILE, MODEL = "corpus-deu", "tiny-m"
FIRST = 5  # the first line of the planted corpus run (a shard's)
SETTINGS = {"model": MODEL, "max_length": 9, "input": "data/corpus-deu.txt", "sort_window": 4}
INFO = {"layers": 3, "width": 5, "batch_size": 3, "sorted": False, "sort_window": 4, "command": "pytest"}
COUNTS = np.arange(15).reshape(3, 5) % 4  # [layers, width]: at most 3 <= the 7 tokens
EX_SETTINGS = {"neurons": "results/lape/neurons.json", "top_k": 2, "window": 1}
EX_INFO = {"batch_size": 3, "sorted": True, "sort_window": 4, "command": "pytest"}
STATE = {"values": np.array([[2.5, 1.0], [0.5, 0.25], [3.0, -1.0]], dtype=np.float32),  # 3 neurons' top 2
         **{name: np.arange(6).reshape(3, 2) + i for i, name in enumerate(("corpus", "line", "position"))},
         "ids": np.arange(18).reshape(3, 2, 3)}
TEXTS = ('{"layer": 0, "neuron": 3, "languages": ["deu"], "examples": []}\n',
         '{"layer": 2, "neuron": 4, "languages": ["fra"], "examples": []}\n')
DATA = {"corpus": "index", "examples": "examples"}  # the data file each kind of run finishes with


def new_writer(kind, results, overwrite=False, settings=None):
    if kind == "corpus":
        return CorpusWriter(results, FILE, MODEL, settings or SETTINGS, overwrite)
    return ExamplesWriter(results, MODEL, settings or EX_SETTINGS, overwrite)


def open_writer(writer, **info):
    """writer.open with the planted info (changed by `info`); returns whether it resumed."""
    if isinstance(writer, CorpusWriter):
        return writer.open({**INFO, **info}, FIRST)
    return writer.open({**EX_INFO, **info})


def planted_run(kind, results, overwrite=False, finish=True, version=0):
    """A run opened, committed once and (finish) finished; `version` changes its numbers and text. Corpus: texts
    FIRST and FIRST + 2 (FIRST + 1 empty, 1 cut), 7 + 2 * version tokens, COUNTS + version. Examples: corpus 1
    read up to line 4, 7 + 2 * version tokens of it (none of corpus 0), TEXTS[version]. Returns the writer."""
    writer = new_writer(kind, results, overwrite)
    assert open_writer(writer) is False
    if kind == "corpus":
        writer.commit([FIRST, FIRST + 2], 7 + 2 * version, 1, COUNTS + version)
        writer.end_window(FIRST + 3)
    else:
        writer.commit(1, 4, 7 + 2 * version, STATE)
    if finish:
        writer.finish(line_range=[FIRST, FIRST + 3]) if kind == "corpus" else writer.finish(TEXTS[version])
    return writer


def manifest_of(writer):
    return json.loads(writer.paths["manifest"].read_text())


def edit_manifest(writer, change):
    said = manifest_of(writer)
    change(said)
    writer.paths["manifest"].write_text(json.dumps(said))


def refused(writer, **info):
    """The message of the RunRefused that opening `writer` raises."""
    with pytest.raises(RunRefused) as e:
        open_writer(writer, **info)
    return str(e.value)


def killed_while_moving(kind, results, monkeypatch):
    """An old finished run (version 0) and a finished --overwrite run (version 1) killed just before it was moved
    over the old one; returns {kind: bytes} of the staged files."""
    planted_run(kind, results)

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus_files if kind == "corpus" else example_files, "replace_run", killed)
    with pytest.raises(KeyboardInterrupt):
        planted_run(kind, results, overwrite=True, version=1)
    monkeypatch.undo()
    staged = new_writer(kind, results).staging
    return {p.name: p.read_bytes() for p in staged.iterdir()}


# ----------------------------------------------------------------------------- reading corpus runs
def test_a_run_without_files_is_no_corpus_run_and_one_found_by_its_result_file_is(tmp_path):
    """A Run with no index, ratio or result path has no manifest to read: not a corpus run; one with only a result
    path is looked up in that path's folder."""
    planted_run("corpus", tmp_path)
    assert is_corpus_run(Run(FILE, MODEL)) is False
    assert is_corpus_run(Run(FILE, MODEL, result=tmp_path / f"{FILE}-result-{MODEL}.txt")) is True


@pytest.mark.parametrize("state, message", [
    ("none", f"no corpus run {{index}} with its manifest: run `make corpus FILE={FILE} MODEL={MODEL}`"),
    ("unfinished", f"no corpus run {{index}} with its manifest: run `make corpus FILE={FILE} MODEL={MODEL}`"),
    ("said running", "{manifest}: the corpus run is not finished"),
])
def test_a_missing_or_unfinished_corpus_run_is_not_read(tmp_path, state, message):
    """No files, a run killed before it wrote its index, and an index whose manifest says running: each a
    UserError naming the file and what to do."""
    paths = run_paths(tmp_path, FILE, MODEL)
    if state != "none":
        writer = planted_run("corpus", tmp_path, finish=state != "unfinished")
        if state == "said running":
            edit_manifest(writer, lambda m: m.update(status="running"))
    with pytest.raises(UserError) as e:
        read_corpus_run(tmp_path, FILE, MODEL)
    assert str(e.value) == message.format(**paths)


# ----------------------------------------------------------------------------- opening either kind of run
@pytest.mark.parametrize("kind, staged, message", [
    ("corpus", False, "{data} is a finished corpus run; pass --overwrite to run it again"),
    ("corpus", True, "{data} is a finished corpus run; pass --overwrite to run it again (an --overwrite run of it "
                     "was interrupted: give --overwrite again to resume that)"),
    ("examples", False, "{data} is finished; pass --overwrite to make it again"),
])
def test_a_finished_run_is_refused_without_overwrite_and_kept(tmp_path, kind, staged, message):
    """Without --overwrite a finished run is refused, naming an interrupted --overwrite run where one is staged;
    no file changes."""
    writer = planted_run(kind, tmp_path)
    if staged:
        planted_run(kind, tmp_path, overwrite=True, finish=False, version=1)
    before = snapshot(tmp_path)
    assert refused(new_writer(kind, tmp_path)) == message.format(data=writer.final[DATA[kind]])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["corpus", "examples"])
def test_a_manifest_of_a_run_killed_before_its_first_commit_starts_the_run_afresh(tmp_path, kind):
    """A manifest of equal settings but no progress file (killed between the two): the run starts afresh, a
    new manifest (its old `started` gone, nothing resumed) and, for a corpus run, progress at its first line."""
    writer = new_writer(kind, tmp_path)
    open_writer(writer)
    writer.paths["progress"].unlink(missing_ok=True)
    edit_manifest(writer, lambda m: m.update(started="2001-01-01T00:00:00+00:00"))
    again = new_writer(kind, tmp_path)
    assert open_writer(again) is False
    said = manifest_of(again)
    assert (said["status"], said["resumed"], said["settings"]) == ("running", [], again.settings)
    assert said["started"] != "2001-01-01T00:00:00+00:00"
    if kind == "corpus":
        with np.load(again.paths["progress"]) as progress:
            assert json.loads(str(progress["state"])) == {"next_line": FIRST, "window_done": [], "texts": 0,
                                                          "tokens": 0, "cut": 0, "tokens_before": 0}


@pytest.mark.parametrize("kind, message", [
    ("corpus", "{data} exists but is not an unfinished corpus run; move it away or pass --overwrite"),
    ("examples", "{data} exists without its manifest; move it away or pass --overwrite"),
])
def test_a_data_file_without_its_manifest_is_refused_and_kept(tmp_path, kind, message):
    writer = new_writer(kind, tmp_path)
    data = writer.final[DATA[kind]]
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text('{"0": [1, 2]}\n')
    assert refused(writer) == message.format(data=data)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [data]  # no manifest or progress written
    assert data.read_text() == '{"0": [1, 2]}\n'


@pytest.mark.parametrize("kind", ["corpus", "examples"])
def test_an_overwrite_run_killed_before_its_move_is_moved_into_place_by_the_next_one(tmp_path, kind, monkeypatch):
    """--overwrite finds its staged run finished: it moves it over the old one (the staged bytes), removes the
    staging folder, and refuses to run again, saying so."""
    staged = killed_while_moving(kind, tmp_path, monkeypatch)
    writer = new_writer(kind, tmp_path, overwrite=True)
    assert re.search(r"the --overwrite run had finished; it is in place now$", refused(writer))
    final = writer.final
    assert {p.name: p.read_bytes() for p in (final[DATA[kind]], final["manifest"])} == staged
    assert json.loads(staged[final["manifest"].name])["tokens"] == (9 if kind == "corpus" else [0, 9])
    assert not writer.staging.exists() and not final["progress"].exists()


@pytest.mark.parametrize("kind", ["corpus", "examples"])
def test_an_overwrite_run_killed_between_its_renames_is_completed_by_the_next_one(tmp_path, kind, monkeypatch):
    """replace_run promises that a crash leaves files without a manifest that the same --overwrite command
    completes: here the old manifest is gone and the new data file moved, the new manifest still staged (a bug
    found here: the next command failed with FileNotFoundError on the data file moved already)."""
    staged = killed_while_moving(kind, tmp_path, monkeypatch)
    writer = new_writer(kind, tmp_path, overwrite=True)
    final, moving = writer.final, {k: writer.staging / p.name for k, p in writer.final.items()}
    final["manifest"].unlink()
    moving[DATA[kind]].replace(final[DATA[kind]])
    assert re.search(r"the --overwrite run had finished; it is in place now$", refused(writer))
    assert {p.name: p.read_bytes() for p in (final[DATA[kind]], final["manifest"])} == staged


@pytest.mark.parametrize("kind", ["corpus", "examples"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_damaged_manifest_beside_committed_progress_is_refused_and_kept(tmp_path, kind, overwrite):
    """An unfinished run (a staged --overwrite run) whose manifest is no JSON object: starting afresh would delete
    its committed progress, so both writers refuse and say how to start afresh; nothing is changed."""
    if overwrite:
        planted_run(kind, tmp_path)
    writer = planted_run(kind, tmp_path, overwrite=overwrite, finish=False)
    writer.paths["manifest"].write_text('["not", "a run"]')
    before = snapshot(tmp_path)
    afresh = f"remove {writer.staging} to start the --overwrite run afresh" if overwrite else \
        "pass --overwrite to start afresh"
    assert refused(new_writer(kind, tmp_path, overwrite)) == (
        f"{writer.paths['manifest']}: damaged manifest (not the JSON object of a run): restore it to resume, or {afresh}")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["corpus", "examples"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_fresh_run_abandoned_before_its_first_commit_leaves_no_trace(tmp_path, kind, overwrite):
    """abandon() after open(): the files as before (an old finished run untouched by --overwrite), no staging."""
    if overwrite:
        planted_run(kind, tmp_path)
    tmp_path.joinpath("keep.txt").write_text("not the run's")
    before = snapshot(tmp_path)
    writer = new_writer(kind, tmp_path, overwrite)
    open_writer(writer)
    assert writer.paths["manifest"].exists()
    writer.abandon()
    assert snapshot(tmp_path) == before
    assert not writer.staging.exists()


# ----------------------------------------------------------------------------- resuming corpus runs
def test_a_manifest_from_before_sort_window_was_a_setting_resumes_with_its_window(tmp_path):
    """Manifests once had sort_window only beside the settings: that value is the setting, refused when it
    differs (named alone) and resumed when it is equal."""
    writer = planted_run("corpus", tmp_path, finish=False)
    edit_manifest(writer, lambda m: m["settings"].pop("sort_window"))
    other = new_writer("corpus", tmp_path, settings={**SETTINGS, "sort_window": 8})
    assert refused(other) == (f"{writer.final['manifest']} was started with other settings:\n  sort_window: 4 then, "
                              "8 now\nStart it with the same settings to resume, or pass --overwrite to start afresh.")
    again = new_writer("corpus", tmp_path)
    assert open_writer(again) is True
    assert (again.texts, again.tokens, again.cut, again.next_line) == (2, 7, 1, FIRST + 3)
    assert np.array_equal(again.counts, COUNTS)


def test_progress_counts_of_another_shape_are_refused(tmp_path):
    """Counts of 3 layers x 5 neurons, resumed for a model of 5 x 3: refused, no file changed."""
    planted_run("corpus", tmp_path, finish=False)
    before = snapshot(tmp_path)
    message = refused(new_writer("corpus", tmp_path), layers=5, width=3)
    assert message.endswith("index counts of shape (3, 5) do not fit the model's 5 layers x 3 neurons; pass "
                            "--overwrite to start afresh")
    assert snapshot(tmp_path) == before


def test_a_resume_with_another_batch_size_and_order_is_noted_and_recorded(tmp_path, capsys):
    planted_run("corpus", tmp_path, finish=False)
    writer = new_writer("corpus", tmp_path)
    assert open_writer(writer, batch_size=4, sorted=True) is True
    assert "note: resumed with batch size 4, sorted (started with 3): the counts are those of any batching" in \
        capsys.readouterr().err
    said = manifest_of(writer)
    assert (said["batch_size"], said["sorted"], len(said["resumed"])) == (4, True, 1)
    (change,) = said["batch_size_changes"]
    assert {k: change[k] for k in ("texts_done", "from", "to", "sorted")} == {"texts_done": 2, "from": 3, "to": 4,
                                                                             "sorted": True}


def test_finishing_a_run_that_counted_no_text_writes_no_index(tmp_path):
    writer = new_writer("corpus", tmp_path)
    open_writer(writer)
    with pytest.raises(RunRefused, match="no text was counted, so there is no index file to write"):
        writer.finish(line_range=[FIRST, FIRST])
    assert not writer.paths["index"].exists()
    assert manifest_of(writer)["status"] == "running" and writer.paths["progress"].is_file()


# ----------------------------------------------------------------------------- neuron examples
def test_reading_a_missing_examples_file_says_how_to_make_it(tmp_path):
    with pytest.raises(FormatError, match=re.escape(f"{tmp_path / 'm.jsonl'}: no such file (write it with "
                                                    "`make examples MODEL=...`)")):
        read_examples(tmp_path / "m.jsonl")


def test_an_interrupted_overwrite_run_of_examples_resumes_in_its_staging_folder(tmp_path):
    """The staged run's place (corpus 1, line 4, tokens [0, 9]) and top-k come back, its manifest records the
    resume and the new batch size; the old finished examples are untouched."""
    old = planted_run("examples", tmp_path)
    before = {p.name: p.read_bytes() for p in old.final.values() if p.exists()}
    planted_run("examples", tmp_path, overwrite=True, finish=False, version=1)
    writer = new_writer("examples", tmp_path, overwrite=True)
    assert open_writer(writer, batch_size=5) is True
    assert (writer.corpus, writer.next_line, writer.tokens) == (1, 4, [0, 9])
    assert all(np.array_equal(writer.state[name], STATE[name]) for name in STATE)
    said = json.loads((writer.staging / writer.final["manifest"].name).read_text())
    assert said["batch_size"] == 5 and [(r["corpus"], r["next_line"]) for r in said["resumed"]] == [(1, 4)]
    assert {p.name: p.read_bytes() for p in old.final.values() if p.exists()} == before


@pytest.mark.parametrize("damage", [b"not a zip file", "where without tokens"])
def test_a_damaged_examples_progress_file_is_refused_and_kept(tmp_path, damage):
    writer = planted_run("examples", tmp_path, finish=False)
    if isinstance(damage, bytes):
        writer.paths["progress"].write_bytes(damage)
    else:
        with open(writer.paths["progress"], "wb") as f:
            np.savez(f, where=np.array(json.dumps({"corpus": 1, "next_line": 4})), **STATE)
    before = snapshot(tmp_path)
    message = refused(new_writer("examples", tmp_path))
    assert message.startswith(f"{writer.paths['progress']}: damaged progress file (")
    assert message.endswith("); pass --overwrite to start afresh")
    assert (damage != b"not a zip file") == ("KeyError: 'tokens'" in message)
    assert snapshot(tmp_path) == before


def test_a_killed_examples_runs_temporaries_are_removed_when_it_starts_again(tmp_path):
    """The progress file is written through .<name>.<pid>.tmp (as every run file): the next start removes a
    dead process's temporary, of the final and of the staged run, and keeps another file."""
    writer = planted_run("examples", tmp_path, finish=False)
    progress, dead = writer.final["progress"], dead_pid()
    stale = [progress.with_name(f".{progress.name}.{dead}.tmp"), writer.staging / f".{progress.name}.{dead}.tmp"]
    writer.staging.mkdir()
    other = progress.with_name("notes.tmp")
    for path in stale + [other]:
        path.write_bytes(b"PK half a file")
    assert open_writer(new_writer("examples", tmp_path)) is True
    assert [p.exists() for p in stale] == [False, False] and other.exists()
