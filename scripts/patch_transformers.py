"""Fetch the pinned transformers source, apply patches/, install it; keep modeling/ in sync.

    python scripts/patch_transformers.py install     # what `make patch` runs
    python scripts/patch_transformers.py modeling    # regenerate modeling/ from patches/ (`make modeling`)
    python scripts/patch_transformers.py check       # exit 1 if modeling/ differs from source + patches/
    python scripts/patch_transformers.py diff        # developers: rewrite patches/ from edited modeling/ files
    python scripts/patch_transformers.py dropin --into /path/to/site-packages/transformers
                                                     # copy modeling/ into an installed transformers 5.17.0

The pristine source is the sdist of the pinned release, checked against patches/<version>/sdist.sha256,
or a git checkout given by --src (TRANSFORMERS_SRC=... for make). It is unpacked to third_party/ and
never modified: patches are applied to a copy, which replaces the patched tree only if all apply.
"""
import argparse
import difflib
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.txt"  # the pinned transformers version is read from here
THIRD_PARTY = ROOT / "third_party"  # pristine and patched trees, ignored by git
MODELING = ROOT / "modeling"  # drop-in copies of every file the patches touch
PATCH_INFO = "src/transformers/activation_patch_info.py"  # written into the patched tree: version and patch hash
MARK = "activation-recorder"  # every line a patch adds to an existing file is inside a marked block


class PatchError(RuntimeError):
    pass


def pinned_version():
    for line in REQUIREMENTS.read_text().splitlines():
        if line.startswith("transformers=="):
            return line.split("==", 1)[1].strip()
    raise PatchError(f"{REQUIREMENTS}: no 'transformers==<version>' line")


def default_patch_dir(version):
    return ROOT / "patches" / f"transformers-{version}"


def patch_files(patches):
    files = sorted(Path(patches).glob("*.patch"))
    if not files:
        raise PatchError(f"{patches}: no *.patch files")
    return files


def patches_sha256(patches):
    h = hashlib.sha256()
    for p in patch_files(patches):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def sha256_of(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_version(tree):
    init = Path(tree) / "src" / "transformers" / "__init__.py"
    if not init.is_file():
        raise PatchError(f"{tree}: not a transformers source tree (no src/transformers/__init__.py)")
    for line in init.read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise PatchError(f"{init}: no __version__ line")


def fetch(version, src=None):
    """Return the pristine tree third_party/transformers-<version>, unpacking it on first use."""
    pristine = THIRD_PARTY / f"transformers-{version}"
    if src:
        found = tree_version(src)
        if found != version:
            raise PatchError(f"{src} holds transformers {found}, but requirements.txt pins {version}: "
                             f"check out v{version} there, or change the pin and add patches/transformers-<version>/")
        return Path(src).resolve()
    if pristine.is_dir():
        return pristine
    expected = (default_patch_dir(version) / "sdist.sha256").read_text().split()[0]
    downloads = THIRD_PARTY / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    sdist = downloads / f"transformers-{version}.tar.gz"
    if not sdist.is_file():
        print(f"downloading the transformers {version} source distribution from the package index")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "--no-build-isolation", "-d", str(downloads), f"transformers=={version}"]
        if subprocess.run(cmd).returncode != 0 or not sdist.is_file():
            raise PatchError(f"could not download transformers {version} (no network?). Put "
                             f"transformers-{version}.tar.gz into {downloads}/ or pass TRANSFORMERS_SRC=<git checkout>")
    got = sha256_of(sdist)
    if got != expected:
        raise PatchError(f"{sdist}: sha256 {got} does not match the pinned {expected} "
                         f"(patches/transformers-{version}/sdist.sha256). Delete the file and run again.")
    tmp = Path(tempfile.mkdtemp(dir=THIRD_PARTY))
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp, filter="data")
    (tmp / f"transformers-{version}").rename(pristine)
    tmp.rmdir()
    return pristine


def targets(patch):
    """Paths (relative to the tree) that a unified diff creates or modifies."""
    out = []
    for line in Path(patch).read_text().splitlines():
        if line.startswith("+++ "):
            out.append(line[4:].split("\t")[0].removeprefix("b/"))
    return out


def apply_patches(pristine, patches, version, dest):
    """Copy the pristine tree to dest and apply every patch there; dest is only created if all apply."""
    dest = Path(dest)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        shutil.copytree(pristine, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git"))
        for p in patch_files(patches):
            res = subprocess.run(["patch", "-p1", "--forward", "--batch", "--no-backup-if-mismatch", "-r", "-",
                                  "-i", str(p)], cwd=work, capture_output=True, text=True)
            if res.returncode != 0:
                failed = [l for l in res.stdout.splitlines() if "FAILED" in l or "can't find" in l.lower()
                          or "malformed" in l.lower() or "Reversed" in l]
                raise PatchError(f"{p} does not apply to {pristine}:\n  "
                                 + "\n  ".join(failed or res.stdout.splitlines() + res.stderr.splitlines())
                                 + "\nThe pristine tree is unchanged; fix the patch (see `diff` in --help).")
        info = (f'"""Written by scripts/patch_transformers.py: which patches this installation carries."""\n'
                f'TRANSFORMERS_VERSION = "{version}"\nPATCHES_SHA256 = "{patches_sha256(patches)}"\n'
                f'PATCH_FILES = {[p.name for p in patch_files(patches)]!r}\n')
        (work / PATCH_INFO).write_text(info)
        if dest.exists():
            shutil.rmtree(dest)
        work.rename(dest)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return dest


def installed_patch_sha():
    """PATCHES_SHA256 of the transformers installed in this interpreter, or None."""
    code = "import transformers.activation_patch_info as i; print(i.TRANSFORMERS_VERSION, i.PATCHES_SHA256)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return res.stdout.split() if res.returncode == 0 else None


def cmd_install(args):
    version = pinned_version()
    patches = args.patches or default_patch_dir(version)
    want = patches_sha256(patches)
    if args.src:  # checked even when nothing is to be done, so that a wrong TRANSFORMERS_SRC is never ignored
        found = tree_version(args.src)
        if found != version:
            raise PatchError(f"{args.src} holds transformers {found}, but requirements.txt pins {version}")
    if installed_patch_sha() == [version, want] and not args.force:
        print(f"transformers {version} with patches {want[:12]} is already installed: nothing to do")
        return
    pristine = fetch(version, args.src)
    patched = apply_patches(pristine, patches, version, THIRD_PARTY / f"transformers-{version}-patched")
    print(f"applied {len(patch_files(patches))} patches; installing {patched.relative_to(ROOT)}")
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall",
                          str(patched)])
    if res.returncode != 0:
        raise PatchError("pip install of the patched tree failed (see above)")
    if installed_patch_sha() != [version, want]:
        raise PatchError("the patched transformers is not the one this interpreter imports: is another "
                         "transformers on PYTHONPATH?")
    print(f"installed transformers {version} with patches {want[:12]}")


def patched_files(version, patches, src=None):
    """{modeling/ file name: (path in the tree, patched text, pristine text or None)}."""
    pristine = fetch(version, src)
    with tempfile.TemporaryDirectory(dir=THIRD_PARTY) as tmp:
        tree = apply_patches(pristine, patches, version, Path(tmp) / "tree")
        out = {}
        for p in patch_files(patches):
            for rel in targets(p):
                name = Path(rel).name
                if name in out and out[name][0] != rel:
                    raise PatchError(f"two patched files are both called {name}: {out[name][0]} and {rel}")
                old = pristine / rel
                out[name] = (rel, (tree / rel).read_text(), old.read_text() if old.is_file() else None)
        return out


def cmd_modeling(args):
    version = pinned_version()
    files = patched_files(version, args.patches or default_patch_dir(version), args.src)
    MODELING.mkdir(exist_ok=True)
    for stale in set(p.name for p in MODELING.glob("*.py")) - set(files):
        (MODELING / stale).unlink()
    for name, (_, text, _) in files.items():
        (MODELING / name).write_text(text)
    print(f"modeling/: {len(files)} files written from patches/")


def cmd_check(args):
    version = pinned_version()
    files = patched_files(version, args.patches or default_patch_dir(version), args.src)
    bad = [n for n, (_, text, _) in files.items()
           if not (MODELING / n).is_file() or (MODELING / n).read_text() != text]
    bad += [p.name for p in MODELING.glob("*.py") if p.name not in files]
    if bad:
        sys.exit(f"modeling/ is out of sync with patches/ for: {', '.join(sorted(bad))}.\n"
                 "Run `make modeling` (patches are the source), or `make rediff` after editing modeling/.")
    print(f"modeling/ matches source + patches/ ({len(files)} files)")


def cmd_dropin(args):
    """Copy modeling/ into an installed transformers of the pinned version (e.g. a GPU machine's image)."""
    version = pinned_version()
    package = Path(args.into)
    if not (package / "__init__.py").is_file():
        raise PatchError(f"{package}: not an installed transformers package (no __init__.py)")
    found = next((line.split("=", 1)[1].strip().strip("\"'") for line in (package / "__init__.py").read_text()
                  .splitlines() if line.startswith("__version__")), None)
    if found != version:
        raise PatchError(f"{package} is transformers {found}; modeling/ is patched against {version}")
    patches = args.patches or default_patch_dir(version)
    targets_by_name = {Path(t).name: t for p in patch_files(patches) for t in targets(p)}
    for name, rel in sorted(targets_by_name.items()):
        dest = package / Path(rel).relative_to("src/transformers")
        shutil.copyfile(MODELING / name, dest)
        print(f"{MODELING / name} -> {dest}")
    (package / Path(PATCH_INFO).name).write_text(
        f'"""Written by scripts/patch_transformers.py dropin."""\nTRANSFORMERS_VERSION = "{version}"\n'
        f'PATCHES_SHA256 = "{patches_sha256(patches)}"\nPATCH_FILES = {[p.name for p in patch_files(patches)]!r}\n')


def unified_diff(rel, old, new):
    a = old.splitlines(keepends=True) if old is not None else []
    lines = difflib.unified_diff(a, new.splitlines(keepends=True),
                                 "/dev/null" if old is None else f"a/{rel}", f"b/{rel}", n=3)
    return "".join(lines)


def cmd_diff(args):
    """Developers edit modeling/*.py, then this rewrites one patch per file against the pristine source."""
    version = pinned_version()
    pristine = fetch(version, args.src)
    patches = Path(args.patches or default_patch_dir(version))
    known = {Path(t).name: t for p in patches.glob("*.patch") for t in targets(p)}
    for old in patches.glob("*.patch"):
        old.unlink()
    for path in sorted(MODELING.glob("*.py")):
        rel = known.get(path.name)
        if rel is None:
            found = sorted((pristine / "src" / "transformers").rglob(path.name))
            if len(found) > 1:
                raise PatchError(f"{path.name} matches several files in the source: {found}")
            rel = str(found[0].relative_to(pristine)) if found else f"src/transformers/{path.name}"
        old = pristine / rel
        text = unified_diff(rel, old.read_text() if old.is_file() else None, path.read_text())
        if text:
            (patches / f"{path.stem}.patch").write_text(text)
    print(f"{patches}: {len(list(patches.glob('*.patch')))} patches written")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["install", "modeling", "check", "diff", "dropin"])
    parser.add_argument("--src", default=None, help="a transformers git checkout at the pinned version "
                        "instead of the sdist (make: TRANSFORMERS_SRC=...)")
    parser.add_argument("--patches", type=Path, default=None,
                        help="folder of *.patch files (default: patches/transformers-<pinned version>)")
    parser.add_argument("--force", action="store_true", help="install even if already installed")
    parser.add_argument("--into", default=None, help="dropin: the transformers package folder to copy modeling/ into")
    args = parser.parse_args(argv)
    THIRD_PARTY.mkdir(exist_ok=True)
    try:
        if args.command == "dropin" and not args.into:
            parser.error("dropin needs --into <site-packages>/transformers")
        {"install": cmd_install, "modeling": cmd_modeling, "check": cmd_check, "diff": cmd_diff,
         "dropin": cmd_dropin}[args.command](args)
    except PatchError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
