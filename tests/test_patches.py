"""patches/ is the source of truth: modeling/ follows it, edits are marked, `make patch` is safe to repeat."""
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import patch_transformers as pt  # noqa: E402

VERSION = pt.pinned_version()
PATCHES = pt.default_patch_dir(VERSION)
PRISTINE = ROOT / "third_party" / f"transformers-{VERSION}"

needs_pristine = pytest.mark.skipif(not PRISTINE.is_dir(), reason="run `make patch` first (no pristine source)")


def script(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts/patch_transformers.py"), *args],
                          capture_output=True, text=True, cwd=ROOT)


@needs_pristine
def test_modeling_matches_source_plus_patches():
    res = script("check")
    assert res.returncode == 0, res.stderr


@needs_pristine
def test_check_notices_an_edited_modeling_file(tmp_path, monkeypatch):
    copy = tmp_path / "modeling"
    shutil.copytree(pt.MODELING, copy)
    with open(copy / "modeling_bloom.py", "a") as f:
        f.write("# an edit that is not in patches/\n")
    monkeypatch.setattr(pt, "MODELING", copy)
    with pytest.raises(SystemExit, match="out of sync with patches/ for: modeling_bloom.py"):
        pt.cmd_check(pt.argparse.Namespace(patches=None, src=None))


def test_every_edit_of_an_existing_file_is_marked():
    for patch in pt.patch_files(PATCHES):
        text = patch.read_text()
        if text.startswith("--- /dev/null"):
            continue  # a new file, added whole
        inside = False
        for number, line in enumerate(text.splitlines(), 1):
            body = line[1:]
            if line.startswith((" ", "+")) and "# >>> activation-recorder" in body:
                inside = True
            if line.startswith("+") and not line.startswith("+++") and body.strip():
                assert inside or body.rstrip().endswith(pt.MARK) or f"# {pt.MARK}" in body, \
                    f"{patch.name}:{number}: unmarked added line {body!r}"
            if line.startswith((" ", "+")) and "# <<< activation-recorder" in body:
                inside = False


def test_make_patch_twice_is_a_no_op():
    res = subprocess.run(["make", "--no-print-directory", "patch", f"PY={sys.executable}"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "already installed: nothing to do" in res.stdout


def tree_digest(tree):
    h = hashlib.sha256()
    for path in sorted(tree.rglob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()


@needs_pristine
def test_a_patch_that_does_not_apply_stops_and_names_file_and_hunk(tmp_path):
    broken = tmp_path / "patches"
    shutil.copytree(PATCHES, broken)
    bloom = broken / "modeling_bloom.patch"
    text = bloom.read_text()
    # change a context line of the second hunk so that it no longer matches the source
    hunks = [m.start() for m in re.finditer(r"^@@ ", text, flags=re.M)]
    second = text[hunks[1]:hunks[2]]
    context = next(line for line in second.splitlines()[1:] if line.startswith(" ") and line.strip())
    bloom.write_text(text[:hunks[1]] + second.replace(context, context + " # changed", 1) + text[hunks[2]:])
    before = tree_digest(PRISTINE / "src/transformers/models/bloom")

    res = script("install", "--patches", str(broken))
    assert res.returncode != 0
    assert "modeling_bloom.patch does not apply" in res.stderr and "Hunk #2 FAILED" in res.stderr
    assert tree_digest(PRISTINE / "src/transformers/models/bloom") == before
    assert not list((ROOT / "third_party").glob(".transformers-*")), "no half-patched tree left behind"
    assert "already installed: nothing to do" in script("install").stdout, "the installation was not touched"


def test_wrong_checksum_and_wrong_version_stop(tmp_path, monkeypatch):
    monkeypatch.setattr(pt, "THIRD_PARTY", tmp_path)
    (tmp_path / "downloads").mkdir()
    sdist = tmp_path / "downloads" / f"transformers-{VERSION}.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(__file__, arcname=f"transformers-{VERSION}/x.py")
    with pytest.raises(pt.PatchError, match="does not match the pinned"):
        pt.fetch(VERSION)
    assert not (tmp_path / f"transformers-{VERSION}").exists()

    checkout = tmp_path / "checkout" / "src" / "transformers"
    checkout.mkdir(parents=True)
    (checkout / "__init__.py").write_text('__version__ = "4.0.0"\n')
    with pytest.raises(pt.PatchError, match=f"holds transformers 4.0.0, but requirements.txt pins {VERSION}"):
        pt.fetch(VERSION, src=tmp_path / "checkout")
