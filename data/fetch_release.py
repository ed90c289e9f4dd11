"""Download the paper's released parallel data, check it, unpack it to data/release/.

    python data/fetch_release.py                                     # the pinned GitHub archive (what `make data` runs)
    python data/fetch_release.py --url ../shared/data/pim-release    # a local copy: folder, archive or repository root
    python data/fetch_release.py --write-checksums DIR               # maintainers: rewrite data/release.sha256 from DIR

The release (github.com/takagi97/LLMs-are-parallel-multilingual-learners, gpt_translated_data/) has no
licence: it is downloaded for the user and never committed. Every file listed in data/release.sha256
is copied and checked against its checksum; data/release/ is replaced only when all of them match.
"""
import argparse
import contextlib
import hashlib
import io
import lzma
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
COMMIT = "cba55b128dc255aae6ef57d27918c46fa8d1b33b"  # the release commit (docs/formats.md, "The release")
URL = f"https://codeload.github.com/takagi97/LLMs-are-parallel-multilingual-learners/tar.gz/{COMMIT}"  # its archive
DEST = ROOT / "data" / "release"  # where the checked release goes (ignored by git)
CHECKSUMS = ROOT / "data" / "release.sha256"  # sha256 of every release file the builders use (sha256sum format)
TIMEOUT = 60  # seconds without an answer before a download gives up
ANCHOR = "WMT/gpt4_translation_test/de2en/wmt22-deu2spa-1shot-baseline_vhendy/result.txt"  # locates the data in a tree
HINT = ("Without network access, point DATA_URL at a copy: make data DATA_URL=../shared/data/pim-release "
        "(a folder holding WMT/ XNLI/ ..., a checkout of the repository, or a .tar.gz/.zip of either)")
ZIP_MAGIC = b"PK\x03\x04"
ARCHIVE_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", ZIP_MAGIC)  # gzip, bzip2, xz, zip: a damaged archive
DAMAGED = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError)  # as read


class FetchError(Exception):
    pass


def read_checksums(path=CHECKSUMS):
    """{relative path: sha256 hex} from a sha256sum-style file."""
    sums = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise FetchError(f"{path}:{number}: expected '<sha256>  <path>'")
        sums[rel] = digest
    if not sums:
        raise FetchError(f"{path}: no checksums")
    return sums


def verify(folder, sums):
    """The listed files of `folder` that are absent or differ from their checksum."""
    bad = []
    for rel, digest in sums.items():
        path = Path(folder) / rel
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            bad.append(rel)
    return bad


def download(url, into):
    """Save `url` in the folder `into`; the path of the saved file."""
    target = Path(into) / "download"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="download") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise FetchError(f"cannot download {url}: {getattr(e, 'reason', e)}.\n{HINT}") from None
    return target


def archive_members(path, origin=None):
    """{member name: function returning its bytes} of a tar (any compression) or zip archive. A damaged or
    truncated archive is a FetchError naming `origin` (default: the path), when opened or when a member is read."""
    def damaged(e):
        why = " ".join(str(e).split()) or type(e).__name__
        return FetchError(f"{origin or path}: the archive is damaged or truncated ({why}); download it again")

    def guarded(read):
        def call():
            try:
                return read()
            except DAMAGED as e:
                raise damaged(e) from None
        return call

    with open(path, "rb") as f:
        head = f.read(6)
    try:
        if head.startswith(ZIP_MAGIC) or zipfile.is_zipfile(path):
            z = zipfile.ZipFile(path)
            return {i.filename: guarded(lambda i=i: z.read(i)) for i in z.infolist() if not i.is_dir()}
        t = tarfile.open(path)
        return {m.name: guarded(lambda m=m: t.extractfile(m).read()) for m in t.getmembers() if m.isfile()}
    except tarfile.ReadError as e:
        if head.startswith(ARCHIVE_MAGIC):
            raise damaged(e) from None
        raise FetchError(f"{origin or path}: neither a tar nor a zip archive (a web page instead of the archive?). "
                         f"{HINT}") from None
    except DAMAGED as e:
        raise damaged(e) from None


def folder_members(folder):
    """{relative path: function returning its bytes} of the files under `folder` (symbolic links followed)."""
    folder, out = Path(folder), {}
    for top, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            path = Path(top) / name
            out[path.relative_to(folder).as_posix()] = lambda p=path: p.read_bytes()
    return out


def unpack(members, sums, into, origin):
    """Write the listed files found in `members` (any prefix: repository root, gpt_translated_data/, the
    data folders themselves) under `into`, checking each checksum."""
    prefixes = sorted({name[:-len(ANCHOR)] for name in members if name.endswith(ANCHOR)}, key=len)
    if not prefixes:
        raise FetchError(f"{origin}: no copy of the release found (looked for .../{ANCHOR}). {HINT}")
    complete = [p for p in prefixes if all(p + rel in members for rel in sums)]
    prefix = complete[0] if complete else prefixes[0]  # the shortest complete copy
    missing = [rel for rel in sums if prefix + rel not in members]
    if missing:
        raise FetchError(f"{origin}: {len(missing)} release files are missing, e.g. {prefix}{missing[0]}; "
                         "is it a complete copy of the pinned release?")
    wanted = [(name, name[len(prefix):]) for name in members if name.startswith(prefix) and name[len(prefix):] in sums]
    for name, rel in tqdm(wanted, desc="check", unit="file"):  # archive order: a compressed tar is read once
        data = members[name]()
        if hashlib.sha256(data).hexdigest() != sums[rel]:
            raise FetchError(f"{origin}: {name}: checksum mismatch (sha256 {hashlib.sha256(data).hexdigest()}, "
                             f"expected {sums[rel]}): the file differs from the pinned release "
                             f"{COMMIT[:10]}; fetch an unmodified copy")
        out = Path(into) / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)


def fetch(url, dest=DEST, sums=None, force=False):
    """Make `dest` hold the checked release; return a line saying what was done."""
    sums = read_checksums() if sums is None else sums
    dest = Path(dest)
    if dest.is_dir() and not force and not verify(dest, sums):
        return f"{dest} already holds the checked release ({len(sums)} files); nothing to do"
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        # staged inside dest, which git ignores, so that nothing of the release can end up in a commit
        with tempfile.TemporaryDirectory(prefix=".staging-", dir=dest) as tmp:
            source = Path(url).expanduser() if "://" not in url else None
            if source is not None and source.is_dir():
                members = folder_members(source)
            elif source is not None and source.is_file():
                members = archive_members(source)
            elif source is not None:
                raise FetchError(f"DATA_URL={url}: no such file or folder. {HINT}")
            else:
                members = archive_members(download(url, tmp), url)
            staged, old = Path(tmp) / "release", Path(tmp) / "old"
            unpack(members, sums, staged, url)
            old.mkdir()
            for top in sorted(staged.iterdir()):  # swap folder by folder; a crash in between fails the next check
                if (dest / top.name).exists():
                    os.replace(dest / top.name, old / top.name)
                os.replace(top, dest / top.name)
    except BaseException:
        if created:  # the staging folder is gone: leave no empty dest behind either
            with contextlib.suppress(OSError):
                dest.rmdir()
        raise
    return f"{dest}: {len(sums)} release files checked and unpacked from {url}"


def write_checksums(folder, path=CHECKSUMS):
    """Maintainers: list every file of the release's data folders in `folder` with its sha256."""
    members = folder_members(folder)
    prefixes = sorted({name[:-len(ANCHOR)] for name in members if name.endswith(ANCHOR)})
    if len(prefixes) != 1:
        raise FetchError(f"{folder}: expected one copy of the release (.../{ANCHOR})")
    rows = sorted((name[len(prefixes[0]):], hashlib.sha256(read()).hexdigest()) for name, read in members.items()
                  if name.startswith(prefixes[0]) and name[len(prefixes[0]):].split("/")[0] in
                  ("WMT", "XNLI", "RTE", "BoolQ", "Wiki-Auto"))
    buf = io.StringIO()
    for rel, digest in rows:
        if "  " in rel or "\n" in rel:
            raise FetchError(f"{folder}/{rel}: file names with two spaces or newlines cannot be listed")
        buf.write(f"{digest}  {rel}\n")
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
    return f"{path}: {len(rows)} checksums"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=URL,
                   help="where the release is: a URL of a .tar.gz/.zip, a local archive, a folder holding "
                        "WMT/ XNLI/ ..., or a repository root (default: the pinned GitHub archive)")
    p.add_argument("--dest", type=Path, default=DEST, help=f"where to unpack it (default {DEST.relative_to(ROOT)}/)")
    p.add_argument("--checksums", type=Path, default=CHECKSUMS,
                   help=f"the checksum list (default {CHECKSUMS.relative_to(ROOT)})")
    p.add_argument("--force", action="store_true", help="fetch again even if --dest already holds the checked release")
    p.add_argument("--write-checksums", type=Path, metavar="DIR",
                   help="maintainers: rewrite --checksums from the release in DIR, fetch nothing")
    args = p.parse_args(argv)
    try:
        if args.write_checksums:
            print(write_checksums(args.write_checksums, args.checksums))
        else:
            print(fetch(args.url or URL, args.dest, read_checksums(args.checksums), args.force))
    except (FetchError, OSError) as e:
        sys.exit(f"{Path(__file__).name}: error: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
