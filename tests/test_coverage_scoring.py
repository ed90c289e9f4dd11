"""The branches of scoring and evaluation that no other test took (issue 27; `make coverage`): BLEU with a
tokenizer given, MeCab where installed, the errors of references and predictions, and sacrebleu's test sets
fetched, cached and cleaned up. Scores are compared with sacrebleu called directly; sacrebleu's download is a
stand-in that writes what a download would (no network)."""
import importlib.util
import json
import socket
from pathlib import Path

import pytest
import sacrebleu
from conftest import ROOT

from pim.eval import evaluation, scoring
from pim.eval.evaluation import EvalError, Options, Scored

spec = importlib.util.spec_from_file_location("evaluate", ROOT / "analysis" / "evaluate.py")
evaluate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(evaluate)

HYPS = ["The cat sits on the mat.", "Good morning, my friend!", "It rains."]
REFS = ["The cat sat on the mat.", "Good morning, friend!", "It is raining."]


@pytest.fixture(autouse=True)
def nothing_fetched():
    evaluation.forget_fetched()  # the module keeps one try per test set and call of evaluate.py
    yield
    evaluation.forget_fetched()


# ----------------------------------------------------------------------------- scoring
@pytest.mark.parametrize("tokenize", ["char", "intl", "13a"])
def test_bleu_and_chrf_with_a_tokenizer_given_equal_sacrebleu(tokenize):
    got = scoring.translation_scores(HYPS, [REFS], "zho", tokenize=tokenize)  # the target's choice (zh) is not taken
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS], tokenize=tokenize).score, abs=1e-9)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score, abs=1e-9)
    assert f"tok:{tokenize}|" in got["bleu_signature"] and got["note"] is None


@pytest.mark.parametrize("target, expected", [("jpn", "ja-mecab"), ("kor", "ko-mecab")])
def test_japanese_and_korean_take_mecab_where_it_is_installed(monkeypatch, target, expected):
    import sacrebleu.metrics.bleu as bleu_module

    made = []

    class WithMeCab:  # sacrebleu's BLEU where MeCab is installed: building it for the language works
        def __init__(self, trg_lang):
            made.append(trg_lang)

    monkeypatch.setattr(bleu_module, "BLEU", WithMeCab)
    assert scoring.bleu_tokenizer(target) == (expected, None)
    assert made == [expected[:2]]


def test_without_mecab_japanese_falls_back_to_characters_with_a_note(monkeypatch):
    import sacrebleu.metrics.bleu as bleu_module

    class WithoutMeCab:
        def __init__(self, trg_lang):
            raise RuntimeError("MeCab is not installed")

    monkeypatch.setattr(bleu_module, "BLEU", WithoutMeCab)
    tokenize, note = scoring.bleu_tokenizer("jpn")
    assert tokenize == "char" and "pip install sacrebleu[ja]" in note


# ----------------------------------------------------------------------------- reading references
def test_a_reference_that_cannot_be_read_or_is_not_utf8(tmp_path):
    with pytest.raises(EvalError, match=r"cannot read the reference file \(File name too long\)"):
        evaluation.read_lines(tmp_path / ("x" * 300), "reference")
    bad = tmp_path / "ref.eng"
    bad.write_bytes(b"one\ntwo\nthr\xe9e\nfour\n")
    with pytest.raises(EvalError, match=r"ref\.eng:3: not UTF-8; the reference file must be UTF-8 text"):
        evaluation.read_lines(bad, "reference")


def run_of(file, outputs, **kw):
    return Scored(file, "m", outputs=list(outputs), path=Path(f"{file}-result-m.txt"), **kw)


def test_two_gold_label_files_and_references_of_different_lengths_are_refused(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_text("entailment\nneutral\n")
    b.write_text("neutral\nneutral\n")
    c.write_text("x\ny\nz\n")
    xnli = run_of("xnli-deu", ["neutral", "neutral"])
    with pytest.raises(EvalError, match="xnli-deu: one gold label file, not 2"):
        evaluation.references(xnli, {"xnli-deu": [str(a), str(b)]}, Options())
    wmt = run_of("wmt22-deu2eng", ["x", "y"])
    with pytest.raises(EvalError, match=f"references of wmt22-deu2eng differ in length: {a} has 2 lines, {c} has 3"):
        evaluation.references(wmt, {"wmt22-deu2eng": [str(a), str(c)]}, Options())


def test_a_bare_reference_is_for_the_runs_no_named_one_covers():
    runs = [run_of("wmt22-deu2eng", []), run_of("wmt22-GPT4-deu_spa2eng", []), run_of("xnli-deu", [])]
    assert evaluation.parse_refs(["wmt22-deu2eng=r1", "bare"], runs) == {"wmt22-deu2eng": ["r1"], "xnli-deu": ["bare"]}
    # every run's test set named: the bare one is for no run
    assert evaluation.parse_refs(["wmt22-deu2eng=r1", "xnli-deu=g", "bare"], runs) == \
        {"wmt22-deu2eng": ["r1"], "xnli-deu": ["g"]}


# ----------------------------------------------------------------------------- finding runs and predictions
def test_unknown_files_models_and_bad_predictions_are_one_line_errors(tmp_path, capsys):
    results = tmp_path / "res"
    results.mkdir()
    (results / "wmt22-deu2eng-result-m.txt").write_text("a\n")
    base = ["--results-dir", str(results), "--tables-dir", str(tmp_path / "t"), "--offline"]
    cases = [(["--files", "notes"], "--files notes: not a condition name"),
             (["--models", "other"], f"no result file {results}/<FILE>-result-other.txt")]
    folder = tmp_path / "saves" / "lora" / "my-notes"
    folder.mkdir(parents=True)
    (folder / "generated_predictions.jsonl").write_text('{"predict": "x", "label": "y"}\n')
    cases.append((["--predictions", str(folder / "generated_predictions.jsonl")],
                  "cannot tell the condition ('my-notes' is not a condition name)"))
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"predict": "x", "label": "y"}\n{"label": "y"}\n')
    cases.append((["--predictions", f"xnli-deu:lora={bad}"],
                  f"{bad}:2: expected a JSON object with a \"predict\" field"))
    bad2 = tmp_path / "p2.jsonl"
    bad2.write_text('{"predict": "x"}\n[1, 2]\n')
    cases.append((["--predictions", f"xnli-deu:lora={bad2}"], f"{bad2}:2: expected a JSON object"))
    for extra, message in cases:
        assert evaluate.main(base + extra) == 1, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "t").exists()


def test_predictions_named_by_their_folders_are_scored_against_their_labels(tmp_path):
    folder = tmp_path / "saves" / "lora-7b" / "xnli-deu"
    folder.mkdir(parents=True)
    rows = [("Entailment.", "entailment"), ("not sure", "neutral"), ("contradiction", "contradiction"),
            ("neutral", "contradiction")]
    (folder / "generated_predictions.jsonl").write_text("".join(json.dumps({"predict": p, "label": g}) + "\n"
                                                                for p, g in rows))
    run = evaluation.read_predictions(str(folder / "generated_predictions.jsonl"))
    assert (run.file, run.model, run.labels) == ("xnli-deu", "lora-7b", [g for _, g in rows])
    evaluation.score(run, {}, Options(release=None))
    # by hand: right on rows 1 and 3; row 2 unparsed
    assert (run.scores["correct"], run.scores["n"], run.scores["unparsed"]) == (2, 4, 1)
    assert run.scores["accuracy"] == pytest.approx(50.0)


# ----------------------------------------------------------------------------- sacrebleu's test sets
class FakeDataset:
    """sacrebleu's dataset object as _sacrebleu_refs uses it; get_reference_files 'downloads' its tarballs into
    the raw folder (as sacrebleu does) and writes the reference, or fails with `fail` after the download."""

    def __init__(self, root, tarballs=("test.tgz",), fail=None):
        self._rawdir, self._outdir = str(root / "raw"), str(root)
        self.data = [f"https://data.example.org/wmt20/{t}" for t in tarballs]
        self.langpairs = {"de-en": None, "cs-en": None}
        self.fail, self.calls = fail, 0

    def _get_tarball_filename(self, url):
        return url.rsplit("/", 1)[1]

    def get_reference_files(self, pair):
        self.calls += 1
        Path(self._rawdir).mkdir(parents=True, exist_ok=True)
        for url in self.data:
            Path(self._rawdir, self._get_tarball_filename(url)).write_bytes(b"downloaded")
        if self.fail:
            raise self.fail
        ref = Path(self._outdir, f"newstest2020.{pair}.ref.en")
        ref.write_text("\n".join(REFS) + "\n")
        return [str(ref)]


@pytest.fixture
def wmt20(tmp_path, monkeypatch):
    from sacrebleu.dataset import DATASETS

    dataset = FakeDataset(tmp_path / "sacrebleu")
    monkeypatch.setitem(DATASETS, "wmt20", dataset)
    return dataset


def test_a_test_set_sacrebleu_fetches_is_scored_against_it(tmp_path, monkeypatch, wmt20, capsys):
    probes = []
    monkeypatch.setattr(evaluation, "network_problem", lambda url, timeout: probes.append((url, timeout)))
    run = run_of("wmt20-deu2eng", HYPS)
    evaluation.score(run, {}, Options(data_dir=str(tmp_path), net_timeout=2.5))
    assert run.scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-9)
    assert run.reference.endswith("newstest2020.de-en.ref.en (sacrebleu wmt20 de-en)")
    assert probes == [("https://data.example.org/wmt20/test.tgz", 2.5)] and wmt20.calls == 1
    assert "fetching wmt20 de-en with sacrebleu" in capsys.readouterr().out
    # the same test set again in this call of evaluate.py: taken from what was fetched, no second download
    again = run_of("wmt20-GPT4-deu_spa2eng", HYPS[:2] + ["It is raining."])
    evaluation.score(again, {}, Options(data_dir=str(tmp_path)))
    assert wmt20.calls == 1 and again.scores["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(again.outputs, [REFS]).score, abs=1e-9)


def test_a_failed_fetch_is_tried_once_and_names_what_is_needed(tmp_path, monkeypatch, wmt20):
    probes = []
    monkeypatch.setattr(evaluation, "network_problem", lambda url, timeout: probes.append(url) or "no route")
    for file in ("wmt20-deu2eng", "wmt20-GPT4-deu_fra2eng"):
        with pytest.raises(EvalError) as e:
            evaluation.references(run_of(file, HYPS), {}, Options(data_dir=str(tmp_path)))
        message = str(e.value)
        assert message.startswith("no reference for wmt20-deu2eng: need the reference translations of wmt20-deu2eng, "
                                  "one per line; pass REF=wmt20-deu2eng=<file>")
        assert f"{tmp_path / 'wmt20-deu2eng.ref.eng'}" in message and message.endswith("wmt20 de-en: no route")
    assert len(probes) == 1 and wmt20.calls == 0


def test_offline_a_missing_download_is_not_tried(tmp_path, wmt20):
    with pytest.raises(EvalError, match=r"could not fetch wmt20 de-en: downloads are off \(--offline\)"):
        evaluation.references(run_of("wmt20-deu2eng", HYPS), {}, Options(data_dir=str(tmp_path), download=False))
    assert wmt20.calls == 0


def test_a_download_that_fails_leaves_no_tarball_behind(tmp_path, monkeypatch):
    from sacrebleu.dataset import DATASETS

    dataset = FakeDataset(tmp_path / "sb", tarballs=("old.tgz", "new.tgz"), fail=SystemExit("bad checksum"))
    monkeypatch.setitem(DATASETS, "wmt20", dataset)
    monkeypatch.setattr(evaluation, "network_problem", lambda url, timeout: None)
    (tmp_path / "sb" / "raw").mkdir(parents=True)
    (tmp_path / "sb" / "raw" / "old.tgz").write_bytes(b"kept")  # there before: not this download's
    with pytest.raises(EvalError, match=r"sacrebleu failed to fetch wmt20 de-en \(bad checksum\)"):
        evaluation.references(run_of("wmt20-deu2eng", HYPS), {}, Options(data_dir=str(tmp_path)))
    assert sorted(p.name for p in (tmp_path / "sb" / "raw").iterdir()) == ["old.tgz"]
    assert (tmp_path / "sb" / "raw" / "old.tgz").read_bytes() == b"downloaded"  # sacrebleu wrote over it
    assert socket.getdefaulttimeout() is None  # the download's timeout is undone


@pytest.mark.parametrize("file, needed", [
    ("toy-deu2eng", "the reference translations of toy-deu2eng, one per line"),  # sacrebleu has no test set 'toy'
    ("wmt20-deu2jpn", "the reference translations of wmt20-deu2jpn, one per line"),  # nor this language pair
    ("wmt22-isl2eng", "generaltest2022.is-en.ref.A.en (wmt22-news-systems, txt/references/)"),
])
def test_a_test_set_sacrebleu_does_not_have_is_refused_naming_the_file(tmp_path, wmt20, file, needed):
    test_set = file.split("-")[0] + "-" + file.split("-")[1]
    with pytest.raises(EvalError) as e:
        evaluation.references(run_of(file, HYPS), {}, Options(data_dir=str(tmp_path)))
    local = tmp_path / f"{test_set}.ref.{file[-3:]}"
    assert str(e.value) == (f"no reference for {test_set}: need {needed}; pass REF={test_set}=<file> to make eval "
                            f"(--ref {test_set}=<file>), or put the file at {local}")
    assert wmt20.calls == 0


def test_the_network_probe_says_whether_the_host_answers(monkeypatch):
    opened = []

    class Connection:
        def close(self):
            opened.append("closed")

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: opened.append(address) or Connection())
    assert evaluation.network_problem("https://data.example.org/x.tgz", 1.0) is None
    assert opened == [("data.example.org", 443), "closed"]

    def refuse(address, timeout):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert evaluation.network_problem("https://data.example.org/x.tgz", 1.0) == \
        "no connection to data.example.org ([Errno 111] Connection refused)"
