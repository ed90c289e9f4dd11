"""What the analysis scripts share on the command line: flags, user errors, the runs they are given.

An error the user can fix (a missing file, a bad flag value) is a UserError, printed as one line
without a traceback by `user_errors`.
"""
import argparse
import glob
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from pim.activation_files import FormatError


class UserError(Exception):
    """Something the user can fix (a missing file, a bad flag value); printed without a traceback."""


@contextmanager
def user_errors(program):
    """Turn user errors into a one-line message on stderr and exit status 1."""
    try:
        yield
    except (UserError, FormatError) as e:
        fail(f"{program}: error: {e}")
    except OSError as e:  # unreadable file, full disk, ...
        fail(f"{program}: error: " + ": ".join(str(x) for x in (e.filename, e.strerror or e) if x))


def fail(message):
    """Exit with status 1 and the message; a process started by pim.runs.launch leaves it for the launcher,
    which prints each distinct message of its processes once."""
    folder, rank = os.environ.get("PIM_RANK_ERRORS"), os.environ.get("RANK")
    if folder and rank is not None and os.path.isdir(folder):
        Path(folder, f"rank{rank}").write_text(message, encoding="utf-8")
        sys.exit(1)
    sys.exit(message)


def resumable(main, kept):
    """Run a script's main; Ctrl-C ends it with one line saying that `kept` (what it committed) stays and that the
    same command resumes after it."""
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted: {kept} are kept; start the same command again to resume")


def note(text):
    """Print a note (e.g. that a run has no manifest) above any progress bar; nothing for None."""
    if text:
        from tqdm import tqdm
        tqdm.write(text)


def argument_parser(doc):
    """A parser whose --help shows the script's docstring (summary, then examples); flags that are
    unknown or abbreviated are errors."""
    return argparse.ArgumentParser(description=doc.split("\n")[0], epilog=doc.split("\n", 1)[1], allow_abbrev=False,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_image_flags(p, width, height, dpi, width_help=""):
    p.add_argument("--width", type=positive_int, default=width, help=f"image width in pixels (default {width})"
                   + width_help)
    p.add_argument("--height", type=positive_int, default=height, help=f"image height in pixels (default {height})")
    p.add_argument("--dpi", type=positive_int, default=dpi, help=f"pixels per inch: larger makes the text larger "
                   f"(default {dpi})")


def proportion(text):
    """argparse type of a proportion in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise ValueError(text)  # argparse says "invalid proportion value"
    return value


def given_once(values, flag):
    """The values of a flag that takes several (--langs), refused (a UserError) when one is given twice: a
    language given twice would count twice in LAPE's quantiles and entropy."""
    twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if twice is not None:
        raise UserError(f"{flag}: {twice} is given twice; give each once")
    return values


def positive_int(text):
    """argparse type of a whole number > 0."""
    value = int(text)  # ValueError: argparse says "invalid positive_int value"
    if value <= 0:
        raise ValueError(text)
    return value


def expand(patterns, what):
    """Existing files named by paths or glob patterns, in order, without repeats."""
    found = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise UserError(f"no file matches {pattern} (run `make infer` first, or pass --files)")
        for path in matches:
            if not os.path.isfile(path):
                raise UserError(f"{path}: no such {what} file (run `make infer` first, or pass --files)")
            if path not in found:
                found.append(path)
    return [Path(p) for p in found]
