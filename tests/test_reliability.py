"""Issue 14, inference side: runs that cannot be corrupted (a lock per run, resume checked against the
committed state, --overwrite staged), one-line errors for user mistakes, length-sorted batches, OOM recovery."""
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import INPUT, ROOT, command, ctrl_c_after, files

from pim.activation_files import escape_newlines

sys.path.insert(0, str(ROOT / "scripts"))
import infer_activate  # noqa: E402

from pim.models import loading as model_loading  # noqa: E402
from pim.runs import generation as generation_runs

MODEL = "tiny-bloom-eos"


def snapshot(folder):
    """{relative path: bytes} of every file under folder (hidden ones included); {} when it does not exist."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_here(model_dir, data_dir, results, *extra, capsys=None):
    """infer_activate.main in this process; (exit code, stderr)."""
    argv = command(model_dir, data_dir, results, *extra)[2:]
    try:
        infer_activate.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    err = capsys.readouterr().err if capsys else ""
    return code, err


@pytest.fixture(scope="module")
def whole(eos_model_dir, tmp_path_factory):
    """The files of an uninterrupted run in input order (--no-sort), batch 4: what every other way must give."""
    folder = tmp_path_factory.mktemp("whole")
    data = folder / "data"
    data.mkdir()
    (data / "prompts.txt").write_text("".join(escape_newlines(p) + "\n" for p in INPUT))
    argv = command(eos_model_dir, data, folder / "results", "--batch-size", "4", "--no-sort")[2:]
    infer_activate.main(argv)
    return files(folder / "results")


def stopped_run(model_dir, folder, *extra):
    """A run stopped after its first committed batch (batch 4): results folder and data folder."""
    data = folder / "data"
    data.mkdir()
    (data / "prompts.txt").write_text("".join(escape_newlines(p) + "\n" for p in INPUT))
    with ctrl_c_after(generation_runs.Generator, 1):
        infer_activate.main(command(model_dir, data, folder / "results", "--batch-size", "4", *extra)[2:])
    return folder / "results", data


@pytest.fixture(scope="module")
def interrupted(eos_model_dir, tmp_path_factory):
    """Stopped after its first batch, in input order: 4 prompts in the files."""
    return stopped_run(eos_model_dir, tmp_path_factory.mktemp("interrupted"), "--no-sort")


@pytest.fixture(scope="module")
def interrupted_sorted(eos_model_dir, tmp_path_factory):
    """Stopped after its first batch of the longest prompts: they wait in the progress file."""
    return stopped_run(eos_model_dir, tmp_path_factory.mktemp("interrupted-sorted"))


def copy_of(interrupted, tmp_path):
    results, data = interrupted
    shutil.copytree(results, tmp_path / "results")
    return tmp_path / "results", data


# --- 13: length-sorted batches give the files of input order; resume from pending prompts ---
def test_sorted_batches_give_the_files_of_input_order(eos_model_dir, data_dir, tmp_path, whole, capsys):
    code, err = run_here(eos_model_dir, data_dir, tmp_path / "sorted", "--batch-size", "3", capsys=capsys)
    assert code == 0, err
    assert files(tmp_path / "sorted") == whole
    manifest = json.loads((tmp_path / "sorted" / f"prompts-manifest-{MODEL}.json").read_text())
    assert manifest["sorted"] is True and manifest["prompts_done"] == len(INPUT)


def test_resume_of_a_sorted_run_with_pending_prompts(eos_model_dir, interrupted_sorted, tmp_path, whole, capsys):
    import numpy as np

    results, data = copy_of(interrupted_sorted, tmp_path)
    with np.load(results / f"prompts-progress-{MODEL}.npz") as progress:
        pending = json.loads(str(progress["pending"]))
    assert pending, "the first sorted batch holds prompts whose predecessors are not done"
    code, err = run_here(eos_model_dir, data, results, "--batch-size", "4", capsys=capsys)
    assert code == 0 and "resuming" in err, err
    assert files(results) == whole


def test_plan_batches_sorts_within_windows():
    lengths = [1, 5, 3, 9, 2, 8]
    assert generation_runs.plan_batches(lengths, 2, False, 4) == [[0, 1], [2, 3], [4, 5]]
    assert generation_runs.plan_batches(lengths, 2, True, 4) == [[3, 1], [2, 0], [5, 4]]


# --- 12: out of memory halves the batch ---
def test_out_of_memory_halves_the_batch(eos_model_dir, data_dir, tmp_path, whole, capsys, monkeypatch):
    monkeypatch.setenv("PIM_FAULT_OOM_AT_BATCH", "4")
    code, err = run_here(eos_model_dir, data_dir, tmp_path / "r", "--batch-size", "4", "--no-sort", capsys=capsys)
    assert code == 0 and "out of memory with a batch of 4" in err, err
    assert files(tmp_path / "r") == whole
    manifest = json.loads((tmp_path / "r" / f"prompts-manifest-{MODEL}.json").read_text())
    assert manifest["batch_size"] == 2 and manifest["batch_size_changes"][0]["why"] == "out of memory"


def test_what_counts_as_out_of_memory():
    import torch

    assert model_loading.is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert model_loading.is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                                              "can't allocate memory: you tried to allocate 123 bytes"))
    assert not model_loading.is_oom(RuntimeError("shape mismatch"))


# --- 1: two copies at once; a stale lock after kill -9 is taken over ---
def test_two_copies_at_once_and_a_stale_lock(eos_model_dir, data_dir, tmp_path, whole):
    results = tmp_path / "results"
    lock = results / f".prompts-{MODEL}.lock"
    args = ("--batch-size", "4", "--max-new-tokens", "30")
    first = subprocess.Popen(command(eos_model_dir, data_dir, results, *args), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not lock.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    second = subprocess.run(command(eos_model_dir, data_dir, results, *args), capture_output=True, text=True)
    assert second.returncode != 0 and f"being written by another process (pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1, second.stderr
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert lock.exists()  # left behind by kill -9; the OS released its flock
    third = subprocess.run(command(eos_model_dir, data_dir, results, "--batch-size", "4", "--max-new-tokens", "30"),
                           capture_output=True, text=True)
    assert third.returncode == 0 and "took over the lock" in third.stderr, third.stderr
    assert not lock.exists()


# --- 2, 6, 10: resume checks the files against the committed state ---
@pytest.mark.parametrize("damage, message", [
    ("short-result", "than its committed"),
    ("short-ratio", "than its committed"),
    ("extra-line", "the progress file says"),
    ("edited-in-place", "do not have the checksum"),
    ("no-progress", "is missing, but"),
    ("bad-progress", "damaged progress file"),
    ("bad-manifest", "damaged manifest"),
])
def test_resume_refuses_files_that_do_not_fit(damage, message, eos_model_dir, interrupted, tmp_path, capsys):
    results, data = copy_of(interrupted, tmp_path)
    result, ratio = results / f"prompts-result-{MODEL}.txt", results / f"prompts-ratio-{MODEL}.jsonl"
    if damage == "short-result":
        result.write_bytes(result.read_bytes()[:-3])
    elif damage == "short-ratio":
        ratio.write_bytes(ratio.read_bytes()[:-1])
    elif damage == "edited-in-place":  # same length, same lines: one digit of a ratio row changed
        text = ratio.read_bytes()
        at = text.index(b"0.", len(text) // 2) + 2
        ratio.write_bytes(text[:at] + (b"1" if text[at:at + 1] != b"1" else b"2") + text[at + 1:])
    elif damage == "extra-line":
        text = result.read_bytes()
        result.write_bytes(b"x\n" + text[2:] if len(text) > 2 else b"\n\n")
    elif damage == "no-progress":
        (results / f"prompts-progress-{MODEL}.npz").unlink()
    elif damage == "bad-progress":
        (results / f"prompts-progress-{MODEL}.npz").write_bytes(b"PK\x03\x04 damaged")
    elif damage == "bad-manifest":
        (results / f"prompts-manifest-{MODEL}.json").write_text('{"status": "runn')
    before = snapshot(results)
    code, err = run_here(eos_model_dir, data, results, "--batch-size", "4", capsys=capsys)
    assert code != 0 and message in err and "Traceback" not in err, err
    assert snapshot(results) == before


# --- 3: --overwrite keeps the old run until the new one has committed a batch ---
def test_overwrite_that_fails_in_its_first_batch_keeps_the_old_run(eos_model_dir, data_dir, tmp_path, whole,
                                                                   capsys, monkeypatch):
    results = tmp_path / "results"
    assert run_here(eos_model_dir, data_dir, results, "--batch-size", "4", capsys=capsys)[0] == 0
    before = snapshot(results)

    def broken(self, ids, seed):
        raise ValueError("a failure in the first batch")
    with monkeypatch.context() as mp:
        mp.setattr(generation_runs.Generator, "__call__", broken)
        with pytest.raises(ValueError):
            run_here(eos_model_dir, data_dir, results, "--overwrite", capsys=capsys)
    assert snapshot(results) == before
    code, err = run_here(eos_model_dir, data_dir, results, "--overwrite", "--do-sample", "--temperature", "0",
                         capsys=capsys)
    assert code != 0 and "temperature" in err
    code, err = run_here(eos_model_dir, data_dir, results, "--overwrite", "--chat-template", capsys=capsys)
    assert code != 0 and "no chat template" in err
    assert snapshot(results) == before
    code, err = run_here(eos_model_dir, data_dir, results, "--overwrite", "--batch-size", "5", capsys=capsys)
    assert code == 0, err
    assert files(results) == whole and not any(p.name.startswith(".") for p in results.iterdir())


# --- 10, 11: disk full; interactive EOF; CR line ends ---
def test_a_full_disk_is_one_line_and_the_run_resumes(eos_model_dir, data_dir, tmp_path, whole, capsys, monkeypatch):
    import pim.runs.writer

    results = tmp_path / "results"
    calls = []

    def full(fd, _original=os.fsync):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(f"prompts-result-{MODEL}.txt"):
            calls.append(1)
        if len(calls) == 2:  # the second batch's result lines
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "results/x")
        return _original(fd)
    with monkeypatch.context() as mp:
        mp.setattr(pim.runs.writer.os, "fsync", full)
        code, err = run_here(eos_model_dir, data_dir, results, "--batch-size", "4", "--no-sort", capsys=capsys)
    assert code != 0 and "No space left on device" in err and "Traceback" not in err, err
    code, err = run_here(eos_model_dir, data_dir, results, "--batch-size", "4", capsys=capsys)
    assert code == 0 and "4 of 14 prompts are done" in err, err
    assert files(results) == whole


def test_interactive_with_no_prompt_writes_nothing(eos_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    infer_activate.main(["--model", str(eos_model_dir), "--interactive", "--results-dir", str(tmp_path / "r"),
                             "--max-new-tokens", "2"])
    assert "nothing written" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_line_ends_and_absurd_lines(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes(b"eins\rzwei\r\ndrei\r")
    assert generation_runs.read_prompts(path) == ["eins", "zwei", "drei"]


# --- 8: prompts longer than the model takes ---
def test_a_prompt_too_long_is_reported_or_cut_from_the_left(eos_model_dir, data_dir, tmp_path, whole, capsys):
    model = tmp_path / MODEL
    shutil.copytree(eos_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 30}))
    code, err = run_here(model, data_dir, tmp_path / "r", capsys=capsys)
    assert code != 0 and "prompts.txt:" in err and "the model's maximum length" in err and "--truncate" in err, err
    assert not (tmp_path / "r").exists()
    code, err = run_here(model, data_dir, tmp_path / "r", "--truncate", capsys=capsys)
    assert code == 0 and "cut" in err, err
    cut, lines = generation_runs.check_lengths([[1, 2, 3, 4], [5]], 5, 2, "f.txt", 1, True)
    assert cut == [[2, 3, 4], [5]] and lines == [1]


# --- the sweep: every user mistake is one line, exit != 0, results/ untouched ---
def _setup_cases():
    return [
        ("shard-3/2", ["--shard", "3/2"], "--shard must be i/n"),
        ("shard-0/0", ["--shard", "0/0"], "--shard must be i/n"),
        ("shard-abc", ["--shard", "abc"], "--shard must be i/n"),
        ("file-up", ["--file", "../data/prompts"], "give a name, not a path"),
        ("file-abs", ["--file", "/tmp/prompts"], "give a name, not a path"),
        ("results-file", "results-is-a-file", "not a folder"),
        ("temperature", ["--do-sample", "--temperature", "0"], "temperature"),
        ("huge-line", "huge-line", "bytes (more than"),
        ("no-weights", "no-weights", "cannot be loaded"),
        ("bad-config", "bad-config", "config of the folder"),
        ("missing-gpu", ["--device-map", '{"": 3}'], "cannot be loaded"),
        ("max-memory", ["--max-memory", "cpu=1KiB"], "model"),
        ("alias-offline", "alias-offline", "is an alias"),
        ("split-unfinished", "split-unfinished", "resume with --shard i/3"),
        ("single-unfinished", "single-unfinished", "unfinished run of one process"),
        ("chat-template", ["--chat-template"], "no chat template"),
    ]


@pytest.mark.parametrize("name, setup, message", _setup_cases(), ids=[c[0] for c in _setup_cases()])
def test_user_mistakes_are_one_line(name, setup, message, eos_model_dir, data_dir, tmp_path, capsys, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    (results / "keep.txt").write_text("an earlier file\n")
    model, extra = eos_model_dir, setup if isinstance(setup, list) else []
    if setup == "results-is-a-file":
        results = tmp_path / "results" / "keep.txt"
    elif setup == "huge-line":
        (data_dir / "prompts.txt").write_text("Hallo\n" + "x" * 1_000_001 + "\n")
    elif setup in ("no-weights", "bad-config"):
        model = tmp_path / "broken"
        shutil.copytree(eos_model_dir, model)
        if setup == "no-weights":
            for weights in model.glob("*.safetensors"):
                weights.unlink()
        else:
            (model / "config.json").write_text('{"model_type": "bloom", "n_layer": "many"}')
    elif setup == "alias-offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        model = "bloom-560m"
    elif setup == "split-unfinished":
        (results / "shards").mkdir()
        (results / "shards" / f"prompts-manifest-{MODEL}-shard1of3.json").write_text(json.dumps(
            {"status": "running", "shard": [1, 3], "settings": {}}))
        extra = ["--shard", "0/2"]
    elif setup == "single-unfinished":
        (results / f"prompts-manifest-{MODEL}.json").write_text(json.dumps({"status": "running", "settings": {},
                                                                            "prompts_done": 4}))
        extra = ["--shard", "0/2"]
    before = snapshot(tmp_path / "results")
    code, err = run_here(model, data_dir, results, *extra, capsys=capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and message in err and "Traceback" not in err, err
    assert len(lines) == 1 and "\n" not in lines[0], err
    assert snapshot(tmp_path / "results") == before


def test_make_quotes_file_and_model_and_checks_transformers_src():
    res = subprocess.run(["make", "-n", "-W", "patch", "infer", "FILE=a b", "MODEL=m x", "PY=python"], cwd=ROOT,
                         capture_output=True, text=True)
    assert "--file 'a b' --model 'm x'" in res.stdout, res.stdout + res.stderr
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "patch_transformers.py"), "install", "--src",
                          "/no/such/transformers"], capture_output=True, text=True)
    assert res.returncode != 0 and "not a transformers source tree" in res.stderr and "Traceback" not in res.stderr


# --- issue 19: #9 --overwrite keeps the old run until the new one is finished; #2 weights; tracebacks ---
def test_overwrite_killed_after_its_first_commit_keeps_the_old_run_and_resumes(eos_model_dir, data_dir, tmp_path,
                                                                               whole, capsys):
    results = tmp_path / "results"
    assert run_here(eos_model_dir, data_dir, results, "--batch-size", "4", "--max-new-tokens", "5",
                    capsys=capsys)[0] == 0
    before = snapshot(results)
    with ctrl_c_after(generation_runs.Generator, 1):
        run_here(eos_model_dir, data_dir, results, "--batch-size", "4", "--overwrite", capsys=capsys)
    assert {k: v for k, v in snapshot(results).items() if not k.startswith(".")} == before
    code, err = run_here(eos_model_dir, data_dir, results, "--batch-size", "4", capsys=capsys)
    assert code != 0 and "give --overwrite again to resume" in err
    code, err = run_here(eos_model_dir, data_dir, results, "--batch-size", "4", "--overwrite", capsys=capsys)
    assert code == 0 and "4 of 14 prompts are done" in err, err
    assert files(results) == whole and not any(p.name.startswith(".") for p in results.iterdir())


def test_resume_with_rebuilt_weights_of_the_same_config_is_refused(eos_model_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(eos_model_dir, model)
    results, data = stopped_run(model, tmp_path, "--no-sort")
    weights = model / "model.safetensors"
    tensors = load_file(weights)
    name = next(k for k in tensors if k.endswith("mlp.dense_4h_to_h.weight"))
    tensors[name] = tensors[name].flip(0).contiguous()  # same shapes, same config, other weights
    save_file(tensors, weights, metadata={"format": "pt"})
    code, err = run_here(model, data, results, "--batch-size", "4", capsys=capsys)
    assert code != 0 and "weights_sha256" in err and "other settings" in err, err


def test_invalid_utf8_on_interactive_stdin_and_oom_with_one_prompt_are_one_line(eos_model_dir, tmp_path, capsys,
                                                                                monkeypatch):
    stdin = io.TextIOWrapper(io.BytesIO(b"Hallo\nbad \xff\n"))
    monkeypatch.setattr(sys, "stdin", stdin)
    code, err = run_here(eos_model_dir, tmp_path, tmp_path / "r", "--interactive", "--file", "typed",
                         "--max-new-tokens", "2", capsys=capsys)
    assert code != 0 and "standard input, line 2: not UTF-8" in err and "Traceback" not in err, err
    monkeypatch.setenv("PIM_FAULT_OOM_AT_BATCH", "1")
    data = tmp_path / "data"
    data.mkdir()
    (data / "prompts.txt").write_text("Hallo\n")
    code, err = run_here(eos_model_dir, data, tmp_path / "oom", "--batch-size", "1", capsys=capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and "out of memory with a batch of one" in errors[0] and "Traceback" not in err, err


def test_a_finished_generation_run_is_refused_before_the_model_is_loaded(eos_model_dir, data_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(eos_model_dir, model)
    results = tmp_path / "results"
    assert run_here(model, data_dir, results, "--batch-size", "4", "--max-new-tokens", "3", capsys=capsys)[0] == 0
    shutil.rmtree(model)  # loading it now would fail: the refusal must come first
    code, err = run_here(model, data_dir, results, "--batch-size", "4", capsys=capsys)
    assert code != 0 and "is a finished run; pass --overwrite" in err, err
