"""Corpus runs at scale (docs/lape.md): shards, several processes, sorted batches, streaming inputs, a token
budget, resume, merging, out-of-memory halving, --overwrite that keeps the old run, the lock.

Every count is compared with the hook reference of test_lape_workflow (each text alone, no padding,
stock transformers) over the texts that should have been counted. The corpus breaks symmetries: texts
of very different lengths, some cut, empty and whitespace-only lines, CRLF and CR line ends, a literal
\\n; batch sizes and windows that divide neither the texts nor each other.
"""
import gzip
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ctrl_c_after
from test_lape_workflow import ROOT, bloom, reference_counts  # noqa: F401 -- bloom is a fixture

from pim.activation_files import read_index, unescape_newlines
from pim.runs.lock import RunLock

MAX_LENGTH = 9
LINES = ["Das Wetter ist heute schön und die Kinder spielen im Park.", "Hallo", "", "   ",
         "Der Zug fährt um acht Uhr ab.\\nEr kommt um neun an.", "Guten Tag!",
         "Ich trinke jeden Morgen einen Kaffee, und dann gehe ich zur Arbeit.", "Ja",
         "Die Ware hat unter 20 Euro gekostet.", "Wie spät ist es?", "", "Morgen regnet es vielleicht.",
         "Das Buch liegt auf dem Tisch neben der Lampe.", "Nein", "Wir fahren im Sommer an die Ostsee.",
         "Danke schön", "Könnten Sie mir bitte den Weg zum Bahnhof zeigen?"]
TEXTS = [unescape_newlines(line).strip() for line in LINES if line.strip()]
NAME = "corpus-deu-{kind}-tiny-bloom.{ext}"


def write_txt(folder, name="corpus-deu"):
    """LINES with mixed line ends: CRLF after line 4, CR after line 11, LF elsewhere."""
    ends = ["\r\n" if i == 4 else "\r" if i == 11 else "\n" for i in range(len(LINES))]
    (folder / f"{name}.txt").write_bytes("".join(l + e for l, e in zip(LINES, ends)).encode("utf-8"))


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_txt(folder)
    return folder


def run(bloom, data, results, *extra):
    import corpus_activate
    corpus_activate.main(["--model", str(bloom), "--file", "corpus-deu", "--data-dir", str(data), "--results-dir",
                          str(results), "--max-length", str(MAX_LENGTH), *extra])
    return read_index(results / NAME.format(kind="index", ext="jsonl")), manifest(results)


def manifest(results):
    return json.loads((results / NAME.format(kind="manifest", ext="json")).read_text())


@pytest.fixture(scope="module")
def expected(bloom):
    counts, tokens, cut = reference_counts(bloom, TEXTS, MAX_LENGTH)
    assert 0 < cut < len(TEXTS)
    return counts, tokens, cut


def test_sorted_unsorted_and_batch_sizes_count_what_the_reference_counts(bloom, data, tmp_path, expected):
    counts, tokens, cut = expected
    indexes = []
    for i, extra in enumerate([("--batch-size", "1", "--no-sort"), ("--batch-size", "3", "--sort-window", "5"),
                               ("--batch-size", "4", "--no-sort", "--sort-window", "7"), ("--batch-size", "16",)]):
        got, m = run(bloom, data, tmp_path / f"r{i}", *extra)
        assert np.array_equal(got, counts), extra
        assert (m["tokens"], m["lines"], m["cut_lines"], m["empty_lines"], m["line_range"]) == \
            (tokens, len(TEXTS), cut, len(LINES) - len(TEXTS), [0, len(LINES)])
        indexes.append((tmp_path / f"r{i}" / NAME.format(kind="index", ext="jsonl")).read_bytes())
    assert len(set(indexes)) == 1


def test_streaming_jsonl_gz_and_txt_gz_equal_the_txt(bloom, data, tmp_path, expected):
    plain = run(bloom, data, tmp_path / "txt", "--batch-size", "3")[0]
    for suffix in (".jsonl.gz", ".jsonl", ".txt.gz"):
        folder = tmp_path / f"data{suffix}"
        folder.mkdir()
        if suffix.startswith(".jsonl"):
            body = "".join(json.dumps({"id": i, "text": unescape_newlines(l)}, ensure_ascii=i % 2 == 0) + "\n"
                           for i, l in enumerate(LINES)).encode("utf-8")
        else:
            body = "".join(l + "\n" for l in LINES).encode("utf-8")
        path = folder / f"corpus-deu{suffix}"
        path.write_bytes(gzip.compress(body) if suffix.endswith(".gz") else body)
        got, m = run(bloom, folder, tmp_path / f"out{suffix}", "--batch-size", "3")
        assert np.array_equal(got, plain) and np.array_equal(got, expected[0]), suffix
        assert (m["tokens"], m["lines"], m["settings"]["input"]) == (expected[1], len(TEXTS), str(path))


def test_max_tokens_stops_at_the_same_line_whatever_the_batches(bloom, data, tmp_path):
    from transformers import AutoTokenizer

    lengths = [min(len(ids), MAX_LENGTH) for ids in AutoTokenizer.from_pretrained(bloom)(TEXTS)["input_ids"]]
    assert lengths[6] > 3
    budget = sum(lengths[:7]) - 3  # reached within the 7th text
    counts, tokens, _ = reference_counts(bloom, TEXTS[:7], MAX_LENGTH)
    last_line = [i for i, l in enumerate(LINES) if l.strip()][6] + 1
    seen = set()
    for i, extra in enumerate([("--batch-size", "1"), ("--batch-size", "4", "--sort-window", "3"),
                               ("--batch-size", "7", "--no-sort")]):
        got, m = run(bloom, data, tmp_path / f"r{i}", "--max-tokens", str(budget), *extra)
        assert np.array_equal(got, counts), extra
        assert m["tokens"] == tokens and m["lines"] == 7
        assert m["stopped"] == {"max_tokens": budget, "budget_reached": True, "last_line": last_line}
        seen.add((tmp_path / f"r{i}" / NAME.format(kind="index", ext="jsonl")).read_bytes())
    results = tmp_path / "shards"
    for i in range(3):
        run_shard(bloom, data, results, f"{i}/3", "--max-tokens", str(budget))
    merged = merge(results)
    assert merged.returncode == 0, merged.stderr
    assert (results / NAME.format(kind="index", ext="jsonl")).read_bytes() in seen and len(seen) == 1
    assert manifest(results)["stopped"]["last_line"] == last_line and manifest(results)["tokens"] == tokens


def run_shard(bloom, data, results, shard, *extra):
    import corpus_activate
    corpus_activate.main(["--model", str(bloom), "--file", "corpus-deu", "--data-dir", str(data), "--results-dir",
                          str(results), "--max-length", str(MAX_LENGTH), "--batch-size", "2", "--sort-window", "3",
                          "--shard", shard, *extra])


def merge(results, *extra):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "merge_results.py"), "--file", "corpus-deu",
                           "--model", "tiny-bloom", "--results-dir", str(results), *extra],
                          capture_output=True, text=True)


def test_shards_and_two_processes_merge_to_one_plain_run(bloom, data, tmp_path, expected):
    """Shards are whole windows, so they batch as one process does: the same bits on any model. Here the
    shards' batches differ from the plain run's (batch 1, file order): tiny BLOOM gives the same counts
    for any batches (the first test), so the bytes must be equal all the same."""
    plain = run(bloom, data, tmp_path / "plain", "--batch-size", "1", "--no-sort")[1]
    plain_bytes = (tmp_path / "plain" / NAME.format(kind="index", ext="jsonl")).read_bytes()
    results = tmp_path / "shards"
    for i in (2, 0, 1):
        run_shard(bloom, data, results, f"{i}/3", *(("--no-sort",) if i == 1 else ()))
    res = merge(results)
    assert res.returncode == 0, res.stderr
    assert (results / NAME.format(kind="index", ext="jsonl")).read_bytes() == plain_bytes
    m = manifest(results)
    assert (m["kind"], m["status"], m["tokens"], m["lines"], m["cut_lines"], m["empty_lines"]) == \
        ("corpus", "finished", plain["tokens"], plain["lines"], plain["cut_lines"], plain["empty_lines"])
    assert [s["line_range"] for s in m["shards"]] == [[0, 6], [6, 12], [12, 17]]  # whole windows of 3 lines
    launch = [sys.executable, "-m", "pim.runs.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              str(ROOT / "scripts" / "corpus_activate.py"), "--model", str(bloom), "--file", "corpus-deu",
              "--data-dir", str(data), "--results-dir", str(tmp_path / "nproc"), "--max-length", str(MAX_LENGTH),
              "--batch-size", "3", "--sort-window", "4"]
    res = subprocess.run(launch, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "merged 2 shards" in res.stderr
    assert (tmp_path / "nproc" / NAME.format(kind="index", ext="jsonl")).read_bytes() == plain_bytes
    assert manifest(tmp_path / "nproc")["tokens"] == expected[1]


def test_merge_refuses_missing_overlapping_and_foreign_shards(bloom, data, tmp_path):
    results = tmp_path / "r"
    run_shard(bloom, data, results, "0/3")
    run_shard(bloom, data, results, "2/3")
    res = merge(results)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "shards 1/3 of corpus-deu with tiny-bloom are " \
        "missing" in res.stderr
    run_shard(bloom, data, results, "1/2")
    res = merge(results)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "different splits" in res.stderr
    (results / "shards" / "corpus-deu-manifest-tiny-bloom-shard1of2.json").unlink()
    (results / "shards" / "corpus-deu-index-tiny-bloom-shard1of2.jsonl").unlink()
    run_shard(bloom, data, results, "1/3", "--max-length", "7")  # another setting: a foreign shard
    res = merge(results)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "max_length: 9" in res.stderr
    generation = results / "corpus-deu-manifest-tiny-bloom.json"
    generation.write_text(json.dumps({"status": "finished", "settings": {}}))
    res = merge(results, "--manifests", *map(str, sorted((results / "shards").glob("*shard[02]of3.json"))))
    assert res.returncode == 1 and "missing" in res.stderr


def test_a_killed_shard_resumes_exactly(bloom, data, tmp_path):
    from pim.runs.corpus import Counter

    whole = tmp_path / "whole"
    run_shard(bloom, data, whole, "1/2")
    results = tmp_path / "killed"
    with ctrl_c_after(Counter, 2):  # in the middle of the window of lines 12-14 (shard 1/2: windows 3-5 of 3 lines)
        run_shard(bloom, data, results, "1/2")
    progress = results / "shards" / "corpus-deu-progress-tiny-bloom-shard1of2.npz"
    assert progress.is_file()
    run_shard(bloom, data, results, "1/2")
    name = "shards/corpus-deu-index-tiny-bloom-shard1of2.jsonl"
    assert (results / name).read_bytes() == (whole / name).read_bytes()
    m = json.loads((results / "shards" / "corpus-deu-manifest-tiny-bloom-shard1of2.json").read_text())
    assert m["resumed"][0]["texts_done"] == 2 + 2 and m["status"] == "finished"


def test_out_of_memory_halves_the_batches_and_one_text_is_a_one_line_error(bloom, data, tmp_path, monkeypatch,
                                                                            expected, capsys):
    monkeypatch.setenv("PIM_FAULT_OOM_AT_BATCH", "4")
    got, m = run(bloom, data, tmp_path / "r", "--batch-size", "4", "--no-sort")
    assert np.array_equal(got, expected[0]) and m["tokens"] == expected[1]
    assert m["batch_size_changes"][0]["from"] == 4 and m["batch_size_changes"][0]["to"] == 2
    monkeypatch.setenv("PIM_FAULT_OOM_AT_BATCH", "1")
    with pytest.raises(SystemExit) as e:
        run(bloom, data, tmp_path / "one", "--batch-size", "1")
    assert "out of memory with a batch of one" in str(e.value) and "\n" not in str(e.value)


def test_overwrite_keeps_the_old_run_until_the_new_one_is_finished(bloom, data, tmp_path, expected):
    from pim.runs.corpus import Counter

    results = tmp_path / "r"
    run(bloom, data, results, "--batch-size", "3", "--max-length", "5")
    old_index = (results / NAME.format(kind="index", ext="jsonl")).read_bytes()
    old_manifest = manifest(results)
    with ctrl_c_after(Counter, 2):
        run(bloom, data, results, "--batch-size", "3", "--overwrite")
    assert (results / NAME.format(kind="index", ext="jsonl")).read_bytes() == old_index
    assert manifest(results) == old_manifest
    with pytest.raises(SystemExit) as e:
        run(bloom, data, results, "--batch-size", "3")
    assert "finished corpus run" in str(e.value) and "give --overwrite again" in str(e.value)
    got, m = run(bloom, data, results, "--batch-size", "3", "--overwrite")
    assert np.array_equal(got, expected[0]) and m["tokens"] == expected[1] and m["resumed"]
    assert not any(p.name.startswith(".overwrite") for p in results.iterdir())


def test_a_second_run_is_refused_by_the_lock_and_a_damaged_progress_file_in_one_line(bloom, data, tmp_path):
    from pim.runs.corpus import Counter

    results = tmp_path / "r"
    results.mkdir()
    with RunLock(results, "corpus-deu", "tiny-bloom"):
        with pytest.raises(SystemExit) as e:
            run(bloom, data, results)
    assert "being written by another process" in str(e.value)
    with ctrl_c_after(Counter, 1):
        run(bloom, data, results, "--batch-size", "2")
    progress = results / NAME.format(kind="progress", ext="npz")
    progress.write_bytes(progress.read_bytes()[:40])  # truncated: a zip without its directory
    with pytest.raises(SystemExit) as e:
        run(bloom, data, results, "--batch-size", "2")
    assert "damaged progress file" in str(e.value) and "\n" not in str(e.value)


def test_bad_inputs_are_refused_before_the_model_is_loaded(tmp_path, capsys):
    import corpus_activate

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl.gz").write_bytes(gzip.compress(b'{"text": "gut"}\n{"txt": "nein"}\n'))
    (data / "b.txt.gz").write_bytes(gzip.compress(b"gut\nbad \xff byte\n")[:-12])
    (data / "c.txt").write_bytes(b"eins\nzwei \xfe\n")
    (data / "d.txt").write_text("x\n")
    (data / "d.jsonl").write_text('{"text": "x"}\n')
    for file, message in (("a", "a.jsonl.gz:2: no \"text\" string"), ("b", "b.txt.gz: damaged or truncated"),
                          ("c", "c.txt:2: not UTF-8"), ("d", "several inputs"), ("e", "e.txt: no such file")):
        with pytest.raises(SystemExit) as e:
            corpus_activate.main(["--model", "no-such-model-anywhere", "--file", file, "--data-dir", str(data),
                                  "--results-dir", str(tmp_path / "r")])
        assert message in str(e.value) and "\n" not in str(e.value), (file, str(e.value))
    assert not (tmp_path / "r").exists()


def test_a_user_error_under_two_processes_is_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "x-index-y.txt").write_text("Hallo\n")
    res = subprocess.run([sys.executable, "-m", "pim.runs.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
                          "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                          str(ROOT / "scripts" / "corpus_activate.py"), "--file", "x-index-y", "--data-dir", str(data),
                          "--results-dir", str(tmp_path / "r")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "has 'index' as a part" in res.stderr


def test_shards_are_whole_windows_and_more_shards_than_windows_are_refused(bloom, data, tmp_path):
    with pytest.raises(SystemExit) as e:
        run_shard(bloom, data, tmp_path / "r", "0/7", "--sort-window", "3")  # 17 lines: 6 windows
    assert "7 shards for 17 lines" in str(e.value) and "use at most 6 shards" in str(e.value)
    run_shard(bloom, data, tmp_path / "r", "1/4", "--sort-window", "5")  # 4 windows: the second is lines 5-9
    m = json.loads((tmp_path / "r" / "shards" / "corpus-deu-manifest-tiny-bloom-shard1of4.json").read_text())
    assert m["line_range"] == [5, 10] and m["lines_total"] == 17


def test_a_finished_run_is_refused_before_the_model_is_loaded(bloom, data, tmp_path):
    import shutil

    model = tmp_path / "tiny-bloom"
    shutil.copytree(bloom, model)
    run(model, data, tmp_path / "r", "--batch-size", "4")
    shutil.rmtree(model)  # loading it now would fail: the refusal must come first
    with pytest.raises(SystemExit) as e:
        run(model, data, tmp_path / "r", "--batch-size", "4")
    assert "a finished corpus run; pass --overwrite" in str(e.value)
