"""The data builders on the real copy of the paper's release (../shared/data/pim-release); skipped without it.

Expected values are the data specification's: line counts of section 2.1, the worked example of
section 3.5, the failed lines of section 2.1, the missing XNLI files of section 2.3.
"""
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT.parent / "shared" / "data" / "pim-release"
sys.path.insert(0, str(ROOT / "data"))

import build_prompts  # noqa: E402
import fetch_release  # noqa: E402

pytestmark = pytest.mark.skipif(not (RELEASE / "WMT").is_dir(), reason=f"no copy of the release at {RELEASE}")

SPEC_DIRECT = "Translate into English.\\nGerman: Die Ware hat unter 20 Euro gekostet.\\nEnglish:"
SPEC_PIM6 = ("Translate into English.\\nGerman: Die Ware hat unter 20 Euro gekostet.\\nSpanish: La mercancía "
             "costó menos de 20 euros.\\nRussian: Товар стоил менее 20 евро.\\nFrench: La marchandise a coûté moins "
             "de 20 euros.\\nChinese: 这件商品的价格低于20欧元。\\nJapanese: その商品は20ユーロ未満で買えました。\\n"
             "Czech: Zboží stálo méně než 20 euro.\\nEnglish:")
FAILED_SPANISH = [17, 92, 144, 164, 186, 187, 220]  # 1-based lines of de2en/wmt22-deu2spa.../result.txt
FAILED_JAPANESE = [1848, 1850, 1856, 1905, 1948, 1951, 1960]  # de2fr/wmt22-deu2jpn...
ITEMS = {"wmt22-deu2eng": 1984, "wmt22-deu2fra": 1984, "wmt22-eng2deu": 2037, "wmt22-eng2zho": 2037,
         "wmt21-isl2eng": 1000, "wmt22-zho2eng": 1875, "xnli-deu": 1000, "rte-eng": 277, "boolq-eng": 1000}
PIM6 = "wmt22-GPT4-deu_spa_rus_fra_zho_jpn_ces2eng"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """{policy: {name: lines}} for the three policies."""
    out = {}
    for policy in ("drop-language", "keep", "drop-item"):
        folder = tmp_path_factory.mktemp(policy)
        build_prompts.main(["--release", str(RELEASE), "--out", str(folder), "--failed", policy])
        out[policy] = {p.stem: p.read_text(encoding="utf-8").split("\n")[:-1] for p in folder.glob("*.txt")}
    return out


def test_every_pair_builds_with_the_spec_line_counts(built):
    files = built["drop-language"]
    assert len(files) == 64 + 9 + 5 + 5
    for name, lines in files.items():
        prefix = name.split("-pivot_")[0]
        if "-GPT4-" in name:
            task, langs = name.split("-GPT4-")
            prefix = f"{task}-{langs.split('_')[0]}" + (f"2{langs.split('2')[1]}" if "2" in langs else "")
        assert len(lines) == ITEMS.get(prefix, 1000), name
    assert len(files[PIM6]) == 1984
    for name in ("wmt22-GPT4-deu_spa2eng", "wmt22-GPT4-deu_spa_rus_fra2eng",
                 "wmt22-GPT4-deu_eng_rus_spa_zho_ita_ces2fra",
                 "wmt22-GPT4-eng_spa_rus_fra_jpn_ces_deu2zho", "wmt21-GPT4-isl_spa_rus_fra_ita_ces_deu2eng",
                 "wmt22-zho2eng-pivot_deu", "wmt22-deu2fra-pivot_eng", "xnli-GPT4-deu_spa_rus_fra"):
        assert name in files


def test_first_line_is_the_spec_example(built):
    for policy in built:
        assert built[policy]["wmt22-deu2eng"][0] == SPEC_DIRECT
        assert built[policy][PIM6][0] == SPEC_PIM6


def test_failed_spanish_lines_follow_the_policy(built):
    keep, drop, items = built["keep"][PIM6], built["drop-language"][PIM6], built["drop-item"][PIM6]
    assert [i for i, line in enumerate(keep, 1) if "Request failed!!!" in line] == FAILED_SPANISH
    assert all("\\nSpanish: Request failed!!!\\n" in keep[i - 1] for i in FAILED_SPANISH)
    assert [i for i, line in enumerate(drop, 1) if "\\nSpanish: " not in line] == FAILED_SPANISH
    assert not any("failed!!!" in line for name in built["drop-language"] for line in built["drop-language"][name])
    assert all(drop[i - 1] == keep[i - 1].replace("\\nSpanish: Request failed!!!", "") for i in FAILED_SPANISH)
    pivot = built["drop-language"]["wmt22-deu2eng-pivot_spa"]
    assert [pivot[i - 1] for i in FAILED_SPANISH] == [built["keep"]["wmt22-deu2eng"][i - 1] for i in FAILED_SPANISH]
    assert len(items) == 1984 - 7 and len(built["drop-item"]["wmt22-deu2eng"]) == 1977
    kept = [i for i in range(1, 1985) if i not in FAILED_SPANISH]
    assert items == [keep[i - 1] for i in kept]
    assert len(built["drop-item"]["wmt22-deu2fra"]) == 1984 - len(FAILED_JAPANESE)
    jpn = built["keep"]["wmt22-GPT4-deu_spa_rus_ita_zho_jpn_ces2fra"]
    assert [i for i, line in enumerate(jpn, 1) if "Request failed!!!" in line] == FAILED_JAPANESE


def test_missing_xnli_translations_are_named(tmp_path, capsys):
    build_prompts.main(["--release", str(RELEASE), "--out", str(tmp_path), "--tasks", "xnli"])
    out = capsys.readouterr().out
    assert sorted(p.stem for p in tmp_path.glob("*.txt")) == sorted(
        ["xnli-deu", "xnli-deu-pivot_spa", "xnli-deu-pivot_rus", "xnli-deu-pivot_fra", "xnli-GPT4-deu_spa_rus_fra",
         "xnli-fra", "xnli-fra-pivot_spa", "xnli-rus", "xnli-zho"])
    assert "xnli-GPT4-fra_spa_rus_deu: XNLI/chatgpt_translation_test/xnli.fr.premise.txt-de/result.txt (empty)" in out
    assert "xnli-rus-pivot_fra: XNLI/chatgpt_translation_test/xnli.ru.hypothesis.txt-fr/result.txt (absent)" in out


def test_checksums_cover_the_copy():
    sums = fetch_release.read_checksums()
    assert len(sums) == 190 and fetch_release.verify(RELEASE, sums) == []


def make_data(url, out):
    command = ["make", "--no-print-directory", "data", f"DATA_URL={url}", f"DATA_OUT={out}", f"PY={sys.executable}"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "MAKEFLAGS": ""})


def test_make_data_from_a_local_archive(tmp_path):
    archive = tmp_path / "LLMs-are-parallel-multilingual-learners.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as t:
        for top in ("WMT", "XNLI", "RTE", "BoolQ", "Wiki-Auto"):
            t.add(RELEASE / top, arcname=f"LLMs-are-parallel-multilingual-learners-cba55b1/gpt_translated_data/{top}")
    out = tmp_path / "data"
    res = make_data(archive, out)
    assert res.returncode == 0, res.stderr + res.stdout
    assert len([p for p in out.glob("*.txt") if not p.name.startswith("corpus-")]) == 83
    assert len(list(out.glob("corpus-*.txt"))) == 8 and "Built 8 corpora" in res.stdout  # pim/data/corpora.py
    assert (out / f"{PIM6}.txt").read_text(encoding="utf-8").split("\n")[0] == SPEC_PIM6
    assert (out / "llamafactory" / "dataset_info.json").is_file() and (out / "llamafactory" / f"{PIM6}.json").is_file()
    assert "Built 83 prompt files" in res.stdout and "70 few-shot files" in res.stdout


def test_make_data_refuses_a_corrupted_copy(tmp_path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for top in ("WMT", "XNLI", "BoolQ", "Wiki-Auto"):
        (corrupt / top).symlink_to(RELEASE / top)
    shutil.copytree(RELEASE / "RTE", corrupt / "RTE")
    label = corrupt / "RTE" / "test_set" / "RTE.valid.label.txt"
    label.write_bytes(label.read_bytes().replace(b"not_entailment", b"entailment", 1))
    res = make_data(corrupt, tmp_path / "out")
    assert res.returncode != 0 and "RTE/test_set/RTE.valid.label.txt: checksum mismatch" in res.stderr
    assert not list((tmp_path / "out").glob("*.txt"))
