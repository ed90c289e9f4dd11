"""pim/models/weights.py: the weights' sha256 in a run's settings (issue 19, #2: resume across changed weights).

The reference digest is written out here from the rule of the module's docstring: sha256 of the compact JSON
list [[name, size, sha256 of the file], ...] sorted by name, over the top-level weight files.
"""
import hashlib
import json
import os

import pytest
from conftest import CORPUS

from pim.models import weights as weights_identity
from pim.models.weights import CACHE, weights_settings

OLD = 1_600_000_000 * 10**9  # an mtime long past (ns): the files are settled, so their hashes are cached


def reference(folder, names):
    rows = [[n, (folder / n).stat().st_size, hashlib.sha256((folder / n).read_bytes()).hexdigest()]
            for n in sorted(names)]
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def settle(folder, mtime_ns=OLD):
    for path in folder.iterdir():
        os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def counted(monkeypatch):
    """The names of the files hashed, in order (the module's sha256_file, counted)."""
    calls, real = [], weights_identity.sha256_file

    def sha256_file(path, **kwargs):
        calls.append(path.name)
        return real(path, **kwargs)

    monkeypatch.setattr(weights_identity, "sha256_file", sha256_file)
    return calls


@pytest.fixture
def fake_model(tmp_path):
    """Weight files of unequal sizes and contents, and files that are not weights."""
    folder = tmp_path / "model"
    folder.mkdir()
    files = {"model-00001-of-00002.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(200)),
             "model-00002-of-00002.safetensors": b"second shard " * 7, "model.safetensors.index.json": b'{"a": 1}',
             "pytorch_model.bin": b"\x80\x02bin", "extra.pt": b"pt!", "q4.gguf": b"GGUF\x03"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "config.json").write_text('{"n_layer": 2}')
    (folder / "tokenizer.json").write_text("{}")
    (folder / "sub").mkdir()
    (folder / "sub" / "model.safetensors").write_bytes(b"not at the top")
    settle(folder)
    return folder, sorted(files)


def test_the_hash_is_over_the_weight_files_only(fake_model):
    folder, names = fake_model
    want = reference(folder, names)
    assert weights_settings(folder) == {"weights_sha256": want}
    assert weights_settings(str(folder)) == {"weights_sha256": want}  # a str as from_pretrained gets it
    (folder / "config.json").write_text('{"n_layer": 3}')
    (folder / "sub" / "model.safetensors").write_bytes(b"changed too")
    assert weights_settings(folder) == {"weights_sha256": want}
    (folder / "extra.pt").write_bytes(b"pt?")  # same size, another byte
    assert weights_settings(folder)["weights_sha256"] not in (want, None)
    assert weights_settings(folder) == {"weights_sha256": reference(folder, names)}


def test_rebuilt_weights_with_the_same_config_change_the_hash(tmp_path):
    from pim.models.tiny import build_tiny_model

    folder = build_tiny_model("bloom", tmp_path / "tiny-bloom", CORPUS, seed=1)
    settle(folder)
    names = [p.name for p in folder.iterdir() if p.name.endswith(".safetensors")]
    sizes, config = {n: (folder / n).stat().st_size for n in names}, (folder / "config.json").read_text()
    first = weights_settings(folder)
    assert first == {"weights_sha256": reference(folder, names)} and (folder / CACHE).is_file()

    build_tiny_model("bloom", folder, CORPUS, seed=2)  # same config, same files and sizes, other values
    assert (folder / "config.json").read_text() == config
    assert {n: (folder / n).stat().st_size for n in names} == sizes
    second = weights_settings(folder)
    assert second == {"weights_sha256": reference(folder, names)} and second != first


def test_the_cache_is_used_while_size_and_mtime_are_unchanged(fake_model, counted):
    folder, names = fake_model
    first = weights_settings(folder)
    assert sorted(counted) == names
    cache = json.loads((folder / CACHE).read_text())
    shard = "model-00002-of-00002.safetensors"
    assert cache[shard] == {"size": 91, "mtime_ns": OLD, "sha256": hashlib.sha256(b"second shard " * 7).hexdigest()}

    counted.clear()
    assert weights_settings(folder) == first and counted == []

    # the cache is believed: a wrong sha256 under an unchanged size and mtime is what comes back
    cache[shard]["sha256"] = "0" * 64
    (folder / CACHE).write_text(json.dumps(cache))
    assert weights_settings(folder) != first and counted == []


def test_touching_a_file_recomputes_it_to_the_same_hash(fake_model, counted):
    folder, _ = fake_model
    first = weights_settings(folder)
    counted.clear()
    later = OLD + 5 * 10**9
    os.utime(folder / "extra.pt", ns=(later, later))
    assert weights_settings(folder) == first and counted == ["extra.pt"]
    assert json.loads((folder / CACHE).read_text())["extra.pt"]["mtime_ns"] == later
    counted.clear()
    assert weights_settings(folder) == first and counted == []


def test_a_file_just_written_is_not_cached(fake_model, counted):
    folder, _ = fake_model
    weights_settings(folder)
    (folder / "extra.pt").write_bytes(b"pt#")  # now: a rewrite in the same tick could keep this mtime
    counted.clear()
    first = weights_settings(folder)
    assert counted == ["extra.pt"] and "extra.pt" not in json.loads((folder / CACHE).read_text())
    counted.clear()
    assert weights_settings(folder) == first and counted == ["extra.pt"]


def test_a_damaged_cache_or_a_folder_that_cannot_be_written(fake_model, counted, monkeypatch):
    folder, names = fake_model
    (folder / CACHE).write_text('{"extra.pt": {"size": 3')
    assert weights_settings(folder) == {"weights_sha256": reference(folder, names)} and sorted(counted) == names

    (folder / CACHE).unlink()
    counted.clear()

    def refuse(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(weights_identity.os, "replace", refuse)
    assert weights_settings(folder) == {"weights_sha256": reference(folder, names)} and sorted(counted) == names
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no cache, no temporary file


def test_a_progress_bar_for_large_models(fake_model, capsys, monkeypatch):
    folder, _ = fake_model
    monkeypatch.setattr(weights_identity, "PROGRESS_BYTES", 100)
    weights_settings(folder)
    assert "sha256 of model" in capsys.readouterr().err
    (folder / CACHE).unlink()
    monkeypatch.setattr(weights_identity, "PROGRESS_BYTES", 10**6)
    weights_settings(folder)
    assert capsys.readouterr().err == ""


def test_a_hub_id_has_no_weights_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert weights_settings("bigscience/bloom-560m") == {}
    assert weights_settings("gemma-3-270m") == {}
