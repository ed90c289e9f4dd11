"""One writer per run: an flock on <results>/.<FILE>-<MODEL>.lock, taken before anything of the run is written.

The lock file holds the pid, host and command of its holder. The operating system releases an flock when
its process ends, however it ends (kill -9 included), so a lock is never stale for long: a process that
finds the file still holding a holder's details but gets the lock takes it over, with a notice. The file
is removed when the lock is released normally; a second process gets a one-line refusal naming the holder.
"""
import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from pim.runs.writer import RunRefused


def lock_path(results_dir, file, model):
    return Path(results_dir) / f".{file}-{model}.lock"


class RunLock:
    def __init__(self, results_dir, file, model, command=None):
        self.path = lock_path(results_dir, file, model)
        self.command = command or " ".join(sys.argv)
        self.fd = None
        self.made_dir = None  # the results folder, when this lock created it (removed again if left empty)

    def acquire(self):
        folder = self.path.parent
        if not folder.exists():
            missing = folder
            while not missing.parent.exists():
                missing = missing.parent
            folder.mkdir(parents=True, exist_ok=True)  # ranks of a launch make results/shards/ at once
            self.made_dir = missing
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # another rank removed the folder it had made and left empty: again
                folder.mkdir(parents=True, exist_ok=True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._describe(os.pread(fd, 4096, 0))
                os.close(fd)
                self._cleanup_dir()
                raise RunRefused(f"this run is being written by another process ({holder}; lock {self.path}): "
                                 "wait for it to end, or stop it first") from None
            try:  # the file may have been removed by its last holder between our open and flock: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        old = os.pread(fd, 4096, 0)
        if old.strip():
            print(f"note: took over the lock {self.path} of a process that ended without releasing it "
                  f"({self._describe(old)})", file=sys.stderr)
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command})
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode() + b"\n", 0)
        self.fd = fd
        return self

    @staticmethod
    def _describe(raw):
        try:
            d = json.loads(raw.decode())
            return f"pid {d['pid']} on {d['host']}: {d['command']}"
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return "a process whose details are unreadable"

    def release(self):
        if self.fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)  # releases the flock
        self.fd = None
        self._cleanup_dir()

    def _cleanup_dir(self):
        """Remove the results folder again when this lock made it and nothing else was written there."""
        if self.made_dir is None:
            return
        folder = self.path.parent
        try:
            while True:
                folder.rmdir()
                if folder == self.made_dir:
                    break
                folder = folder.parent
        except OSError:
            pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
