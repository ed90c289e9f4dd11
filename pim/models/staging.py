"""Writing a model folder models/<NAME>/ safely: one writer per folder, and the temporaries of killed writers removed.

A converter (GGUF, Qwen v1) writes into a hidden folder beside its destination, `.<NAME>.converting-<pid>`,
and renames it into place when complete; a replaced folder is first renamed to `.<NAME>.replaced-<pid>` and
then removed. A download is assembled into `.<file>.<pid>`. `remove_leftovers` removes these temporaries when
their process is gone (kill -9, a full disk, a power cut), the next time a model is resolved or converted.

`folder_lock(dest)` is an flock on `<parent>/.<NAME>.lock` held while the folder is checked and written: a
second converter of the same NAME waits for it (first use, MODEL=<file>.gguf) or is refused with one line
(`make convert-gguf`). The OS releases an flock when its process ends, however it ends; the lock file holds
the holder's pid and is removed when the lock is released.
"""
import fcntl
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from pim.activation_files import process_alive

STAGED = re.compile(r"^\.(?P<name>.+)\.(?:converting|replaced)-(?P<pid>\d+)$")  # a converter's temporary folder
DOWNLOADING = re.compile(r"^\..+\.gguf\.(?P<pid>\d+)$")  # a GGUF file being assembled (pim/models/pypi.py)


class FolderBusy(Exception):
    """Another process holds the lock of a model folder; the message names it."""


def staging_folder(dest, kind="converting"):
    """The hidden temporary folder beside `dest` of this process: `.<NAME>.<kind>-<pid>`."""
    dest = Path(dest)
    return dest.parent / f".{dest.name}.{kind}-{os.getpid()}"


def lock_file(dest):
    dest = Path(dest)
    return dest.parent / f".{dest.name}.lock"


@contextmanager
def folder_lock(dest, wait=True, log=None):
    """Held while `dest` is checked and written. wait=False: FolderBusy when another process holds it."""
    path = lock_file(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            if not wait:
                os.close(fd)
                raise FolderBusy(f"another process (pid {holder}) is writing {dest}/ (lock {path}): wait for it to "
                                 "end, or choose another name") from None
            (log or _stderr)(f"waiting for another process (pid {holder}) that writes {dest}/ ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # its last holder may have removed the file between our open and flock: take the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:  # who holds it, for the message of the next one (a full disk only loses the message)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def remove_leftovers(folder, holding=None):
    """Remove the temporaries in `folder` of converters and downloads whose process is gone (and, for a
    converter's, whose folder lock is free; `holding`: the NAME whose lock this process holds)."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return
    for path in entries:
        staged, downloading = STAGED.match(path.name), DOWNLOADING.match(path.name)
        match = staged or downloading
        if not match or process_alive(int(match["pid"])):
            continue
        if staged and staged["name"] != holding and _locked(path.parent / staged["name"]):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _locked(dest):
    """Whether another process holds the lock of `dest` now."""
    try:
        fd = os.open(lock_file(dest), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _stderr(text):
    print(text, file=sys.stderr)
