import sys
from pathlib import Path

import pytest

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

ARCHS = ["bloom", "qwen2", "qwen3"]


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    """{arch: folder} of tiny random-init models saved with their tokenizers (built once per session)."""
    from pim.tiny_models import build_tiny_model

    base = tmp_path_factory.mktemp("tiny-models")
    return {arch: build_tiny_model(arch, base / arch, CORPUS, seed=1) for arch in ARCHS}
