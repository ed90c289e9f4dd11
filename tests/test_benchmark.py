"""CI smoke of scripts/benchmark.py on a tiny model: the table, the JSON and the profile; never a timing."""
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import benchmark  # noqa: E402


@pytest.fixture
def run_benchmark(capsys):
    """benchmark.main(argv) in this process (no second start of torch); returns its standard output."""
    threads = torch.get_num_threads()

    def run(*argv):
        try:
            assert benchmark.main(list(argv)) == 0
        finally:
            torch.set_num_threads(threads)
        return capsys.readouterr().out
    return run


def test_table_and_json(run_benchmark, tmp_path):
    out = tmp_path / "benchmark.json"
    text = run_benchmark("--preset", "tiny", "--reps", "1", "--warmup", "0", "--new-tokens", "3", "--out", str(out))
    cases = json.loads(out.read_text())
    assert [(c["arch"], c["batch"]) for c in cases] == [("bloom", 1), ("bloom", 2), ("qwen2", 1), ("qwen2", 2)]
    for c in cases:
        assert c["device"] == "cpu" and c["dtype"] == "float32" and len(c["stock_samples"]) == 1
        for arm in ("patch", "hooks"):
            r = c[arm]
            assert len(r["samples"]) == 1 and r["tok_per_s"] == r["samples"][0] > 0
            # recording / stock, not the other way round: with one sample each, the quotient of the samples
            assert r["ratio"] == pytest.approx(r["samples"][0] / c["stock_samples"][0], rel=1e-12)
            assert r["paired_ratio_min"] <= r["paired_ratio"] <= r["paired_ratio_max"]
        assert c["same_tokens"], "recording changed the generated tokens"
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("arch "))
    assert "machine:" in lines[header - 1] and "torch" in lines[header - 1] and "float32" in lines[header - 1]
    assert "stock tok/s" in lines[header] and "recording tok/s" in lines[header] and "ratio" in lines[header]
    assert "attach" in lines[header]
    assert [[line.split()[i] for i in (0, 2, 5)] for line in lines[header + 1:header + 9]] == [
        [arch, batch, arm] for arch in ("bloom", "qwen2") for batch in ("1", "2") for arm in ("patch", "hooks")]


def test_profile_finds_no_added_host_sync(run_benchmark, tmp_path):
    out = tmp_path / "profile.json"
    text = run_benchmark("--preset", "tiny", "--arch", "qwen2", "--batch-sizes", "2", "--profile",
                         "--profile-steps", "2", "--profile-out", str(out))
    [row] = json.loads(out.read_text())
    assert "ops added per step" in text and "host syncs/step" in text
    # counts of dispatched ops, not timings: the recorder's per-step update is a handful of ops for all
    # layers together, and it never makes the host wait for the device
    assert row["syncs_per_step_on"] == row["syncs_per_step_off"]
    assert 0 < row["ops_per_step_on"] - row["ops_per_step_off"] <= 12


def test_user_errors_exit_nonzero():
    script = str(ROOT / "scripts/benchmark.py")
    res = subprocess.run([sys.executable, script, "--no-such-flag"], capture_output=True, text=True)
    assert res.returncode == 2 and "unrecognized arguments: --no-such-flag" in res.stderr
    res = subprocess.run([sys.executable, script, "--reps", "0"], capture_output=True, text=True)
    assert res.returncode == 2 and "--reps must be at least 1" in res.stderr
    if not torch.cuda.is_available():
        res = subprocess.run([sys.executable, script, "--preset", "7b"], capture_output=True, text=True)
        assert res.returncode == 1 and "runs on a CUDA GPU" in res.stderr


def test_real_preset_wiring():
    """--preset real times the trained models by name (no run here): its models, batches and errors."""
    args = benchmark.parse_args(["--preset", "real"])
    assert benchmark.bench_models(args, "real") == ["gemma-3-270m", "smollm2-135m-instruct"] == benchmark.MODELS
    assert benchmark.PRESETS["real"] == dict(device="cpu", dtype="float32", batches=[1, 8])
    assert benchmark.environment("real")[0] == "real"
    args = benchmark.parse_args(["--model", "smollm2-135m-instruct"])  # --model alone means the real preset
    assert args.preset == "real" and benchmark.bench_models(args, "real") == ["smollm2-135m-instruct"]
    args = benchmark.parse_args([])  # the default stays the random-init architectures
    assert args.preset == "auto" and benchmark.bench_models(args, "cpu-small") == benchmark.ARCHS
    for argv in (["--preset", "real", "--arch", "bloom"], ["--preset", "tiny", "--model", "gemma-3-270m"]):
        with pytest.raises(SystemExit) as e:
            benchmark.parse_args(argv)
        assert e.value.code == 2
    assert benchmark.parse_args(["--e2e"]).e2e_model == "gemma-3-270m"


def test_real_prompt_ids():
    """Rows of real text: the tokenizer's special prefix (BOS) first, the text's tokens after, each row one
    token further into the text; no EOS among them."""

    class Tok:  # one token per word of the text, the n-th word id 10 + n, and a BOS (id 1) first
        words = benchmark.REAL_TEXT.split()

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [1] * add_special_tokens + [10 + i for i, _ in enumerate(text.split())]}

    rows = benchmark.real_prompt_ids(Tok(), 3, 8, eos=2)
    assert rows == [[1, 10, 11, 12, 13, 14, 15, 16], [1, 11, 12, 13, 14, 15, 16, 17], [1, 12, 13, 14, 15, 16, 17, 18]]
    long = benchmark.real_prompt_ids(Tok(), 1, 200, eos=2)[0]  # longer than the text: repeated
    assert len(long) == 200 and long[1:len(Tok.words) + 2] == list(range(10, 10 + len(Tok.words))) + [10]
    with pytest.raises(ValueError):
        benchmark.real_prompt_ids(Tok(), 1, 8, eos=[2, 12])


def test_real_smoke(run_benchmark, tmp_path, smollm2_dir):
    """The real preset on SmolLM2 (fetched on first use), 2 tokens: the table names the model, the JSON case too,
    and the prompts are the real text as the model's tokenizer makes it."""
    from transformers import AutoTokenizer

    out = tmp_path / "benchmark.json"
    text = run_benchmark("--model", "smollm2-135m-instruct", "--reps", "1", "--warmup", "0", "--new-tokens", "2",
                         "--batch-sizes", "2", "--deactivate-share", "0", "--out", str(out))
    [case] = json.loads(out.read_text())
    assert (case["model"], case["arch"], case["preset"], case["batch"], case["layers"]) == (
        "smollm2-135m-instruct", "llama", "real", 2, 30)
    assert case["same_tokens"] and case["patch"]["tok_per_s"] > 0 and case["hooks"]["tok_per_s"] > 0
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert "preset real" in lines[header - 1] and "of a real text" in lines[header - 1]
    assert [line.split()[:4] for line in lines[header + 1:header + 3]] == [
        ["smollm2-135m-instruct", "llama", "135M", "2"]] * 2
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = type("M", (), {"device": torch.device("cpu"), "generation_config": type("G", (), dict(
        eos_token_id=2, pad_token_id=2))()})()
    ids, mask = benchmark.prompts(model, 2, 32, 0, tokenizer)
    assert ids.shape == mask.shape == (2, 32) and bool(mask.all())
    assert tokenizer.decode(ids[0]).startswith("The European Parliament adopted new rules")


def test_e2e_smoke(run_benchmark, tmp_path, tiny_model_dirs):
    """--e2e on a tiny model and a small prompt file: both orders, the same continuations, the JSON."""
    from conftest import PROMPTS

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(p.replace("\n", "\\n") + "\n" for p in PROMPTS * 2), encoding="utf-8")
    out = tmp_path / "e2e.json"
    text = run_benchmark("--e2e", "--e2e-file", str(prompts), "--e2e-model", str(tiny_model_dirs["qwen2"]),
                         "--e2e-prompts", "6", "--e2e-batch", "2", "--e2e-new-tokens", "3", "--e2e-out", str(out))
    result = json.loads(out.read_text())
    assert [c["order"] for c in result["cases"]] == ["input order", "length-sorted"] and result["same_texts"]
    for c in result["cases"]:
        assert c["prompts"] == 6 and 0 < c["tokens"] <= 18 and c["seconds"] > 0 and 0 <= c["padding_share"] < 1
    assert result["cases"][1]["padding_share"] <= result["cases"][0]["padding_share"]
    assert "length-sorted / input order" in text


def test_an_output_that_is_a_folder_is_refused_before_anything_runs(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--out" in done.stderr and "not a folder" in done.stderr
    assert "tok/s" not in done.stdout, "nothing was timed"


# -- --corpus: a corpus run's forward passes, recording vs stock, sorted vs file order ----------------------------
def padded_positions_by_hand(lengths, batch, window, sort):
    """All positions of the batches of `lengths` (one per line, None for an empty line): batches never cross a
    window of `window` lines, each as long as its longest text; sorted: longest first within the window."""
    positions = 0
    for start in range(0, len(lengths), window):
        texts = [n for n in lengths[start:start + window] if n is not None]
        if sort:
            texts = sorted(texts, reverse=True)
        for i in range(0, len(texts), batch):
            positions += max(texts[i:i + batch]) * len(texts[i:i + batch])
    return positions


def test_corpus_padding_by_hand():
    """Padding of a hand-made list of lengths, batch 2: [5 1] [4 2] [3 1] in file order (24 positions for 16
    tokens), [5 4] [3 2] [1 1] sorted (18); windows of 3 lines: [5 1] [4] | [2 3] [1] (21) and [5 4] [1] |
    [3 2] [1] (18)."""
    lengths = [5, 1, 4, 2, 3, 1]
    rows = [(i, [7] * n, False) for i, n in enumerate(lengths)]
    assert benchmark.padding([rows], 2, False) == (16, 24)
    assert benchmark.padding([rows], 2, True) == (16, 18)
    assert benchmark.padding([rows[:3], rows[3:]], 2, False) == (16, 21)
    assert benchmark.padding([rows[:3], rows[3:]], 2, True) == (16, 18)
    for window in (1, 2, 3, 4, 6):
        for batch in (1, 2, 3, 4):
            windows = [rows[i:i + window] for i in range(0, len(rows), window)]
            file_order, by_sort = (benchmark.padding(windows, batch, sort)[1] for sort in (False, True))
            assert file_order == padded_positions_by_hand(lengths, batch, window, False)
            assert by_sort == padded_positions_by_hand(lengths, batch, window, True)
            assert by_sort <= file_order  # sorting never adds padding


def test_every_kth():
    """The projection's sample of a window's sorted batches: about texts / batch of them, from the longest to the
    shortest, the middle one of every k."""
    plan = list(range(10))
    assert benchmark.every_kth(plan, 4, 2) == [2, 7]
    assert benchmark.every_kth(plan, 8, 2) == [1, 3, 5, 7, 9]
    assert benchmark.every_kth(plan, 64, 8) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]  # fewer batches than asked: all
    assert benchmark.every_kth(list(range(512)), 64, 8) == list(range(32, 512, 64))


def test_corpus_smoke(run_benchmark, tmp_path, tiny_model_dirs):
    """--corpus on a tiny model and two small corpora: the four arms count the same tokens, as many as the
    tokenizer makes of the timed lines; the padding table equals padding computed by hand; the ratios and the
    projection are printed and written (no timing is checked)."""
    from transformers import AutoTokenizer

    words = "Die Ware hat unter zwanzig Euro gekostet und kam nach drei Tagen gut verpackt bei mir an".split()
    sizes = {"corpus-aaa": [3, 17, 5, 0, 16, 9, 1, 14, 12, 2, 8], "corpus-bbb": [6, 2, 11, 4]}
    for file, counts in sizes.items():
        (tmp_path / f"{file}.txt").write_text("".join(" ".join(words[:k]) + "\n" for k in counts), encoding="utf-8")
    model = tiny_model_dirs["qwen2"]
    out = tmp_path / "corpus.json"
    text = run_benchmark("--corpus", "--corpus-model", str(model), "--corpus-data-dir", str(tmp_path),
                         "--corpus-files", "corpus-aaa", "corpus-bbb", "--corpus-compare", "corpus-aaa",
                         "--corpus-lines", "8", "--corpus-batch", "2", "--corpus-max-length", "12",
                         "--corpus-window", "4", "--corpus-reps", "1", "--warmup", "0", "--corpus-out", str(out))
    [result] = json.loads(out.read_text())
    assert (result["batch"], result["max_length"], result["window"], result["attach"]) == (2, 12, 4, "patch")
    tokenizer = AutoTokenizer.from_pretrained(model)
    for row, (file, counts) in zip(result["padding"], sizes.items()):
        full = [len(tokenizer([" ".join(words[:k])])["input_ids"][0]) if k else None for k in counts]
        lengths = [None if n is None else min(n, 12) for n in full]
        tokens = sum(n for n in lengths if n is not None)
        assert (row["file"], row["lines"], row["texts"], row["tokens"]) == (
            file, len(counts), sum(map(bool, counts)), tokens)
        assert row["cut"] == sum(n is not None and n > 12 for n in full) > 0
        for sort, key in ((False, "padding_file_order"), (True, "padding_sorted")):
            assert row[key] == pytest.approx(1 - tokens / padded_positions_by_hand(lengths, 2, 4, sort))
        assert row["padding_sorted"] <= row["padding_file_order"]
    compare, timed = result["compare"], lengths_of(tokenizer, words, sizes["corpus-aaa"][:8], 12)
    assert (compare["file"], compare["lines"], compare["texts"], compare["tokens"]) == ("corpus-aaa", 8, 7, sum(timed))
    for key in ("file_order", "sorted"):
        r = compare[key]
        assert len(r["samples"]) == len(r["stock_samples"]) == 1 and r["tok_per_s"] > 0 and r["tok_per_s_stock"] > 0
        assert r["ratio"] == pytest.approx(r["samples"][0] / r["stock_samples"][0], rel=1e-12)  # recording / stock
    assert compare["sorted"]["padding"] <= compare["file_order"]["padding"]
    assert compare["sorted_speedup"]["ratio"] == pytest.approx(
        compare["sorted"]["samples"][0] / compare["file_order"]["samples"][0], rel=1e-12)
    assert [(p["file"], p["target_tokens"]) for p in result["projection"]] == [
        ("corpus-aaa", 100_000_000), ("corpus-bbb", 100_000_000)]
    for p in result["projection"]:
        assert p["hours"] == pytest.approx(1e8 / p["tok_per_s"] / 3600)
    # the batches of the first window (4 lines), all of them (there are fewer than --corpus-lines / batch)
    assert [(p["batches"], p["of_batches"], p["texts"]) for p in result["projection"]] == [(2, 2, 3), (2, 2, 4)]
    assert [p["tokens"] for p in result["projection"]] == [
        sum(lengths_of(tokenizer, words, sizes[file][:4], 12)) for file in sizes]
    for line in ("| corpus | lines | texts | tokens | cut | padding, file order | padding, sorted |",
                 "| batches | padding | stock tok/s", "recording / stock counted tokens/s", "goal >= 0.95",
                 "file order time / sorted time", "goal >= 1.3", "hours for 100,000,000 tokens"):
        assert line in text


def lengths_of(tokenizer, words, counts, max_length):
    return [min(len(tokenizer([" ".join(words[:k])])["input_ids"][0]), max_length) for k in counts if k]


def test_corpus_refusals(tmp_path, capsys):
    for argv in (["--corpus", "--e2e"], ["--corpus", "--profile"], ["--corpus", "--corpus-lines", "0"]):
        with pytest.raises(SystemExit) as e:
            benchmark.parse_args(argv)
        assert e.value.code == 2
    with pytest.raises(SystemExit) as e:  # before a model is loaded
        benchmark.main(["--corpus", "--corpus-data-dir", str(tmp_path), "--corpus-model", "no-such-model"])
    assert "corpus-ces.txt: no such file" in str(e.value) and "make data" in str(e.value)


def test_the_default_is_quick_and_full_is_the_protocol():
    """make bench (no flags) times fewer pairs; --full the protocol of docs/performance.md; --reps wins over both."""
    quick, full = benchmark.parse_args([]), benchmark.parse_args(["--full"])
    assert (quick.reps, quick.deactivate_reps) == (3, 1)
    assert (full.reps, full.deactivate_reps) == (9, 3)
    assert benchmark.parse_args(["--full", "--reps", "2"]).reps == 2
