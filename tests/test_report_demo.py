"""make report on the tiny demo's pipeline (make demo-tiny's scripts on a tiny BLOOM, into a temporary results
folder): its tables read as the Markdown tables of make plots, ppl and eval, and the page in a real headless
browser (chromium, driven by playwright): no console error, no request leaving the file, every section, a
working filter box. The browser test skips where chromium or playwright is not installed (docs/testing.md)."""
import json
import os
import re
import shutil
import sys
from html.parser import HTMLParser

import pytest
from conftest import CORPUS, ROOT

for folder in ("scripts", "analysis"):
    sys.path.insert(0, str(ROOT / folder))

CHROMIUM = "/usr/bin/chromium"  # Debian's package (apt-get install chromium); playwright never downloads one
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DEMO_FILES = ("sample-deu2eng", "sample-GPT4-deu_spa_rus_fra2eng")  # the Makefile's DEMO_FILES
LANGS = ("deu", "eng", "spa", "rus", "fra")  # its DEMO_LANGS
SECTIONS = ["runs", "pim-vs-direct", "runs-figures", "language-neurons", "neuron-entries", "perplexity", "evaluation"]


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """(results folder, report path): the demo's steps on a tiny BLOOM, as make demo-tiny runs them, shorter."""
    import corpus_activate
    import evaluate
    import infer_activate
    import language_neurons
    import neuron_examples
    import perplexity
    import plot_all
    import report

    from pim.models.tiny import build_tiny_model

    base = tmp_path_factory.mktemp("report-demo")
    model = build_tiny_model("bloom", base / "tiny-bloom", CORPUS, seed=1)
    results, data = base / "results", ROOT / "data"
    common = ["--model", str(model), "--data-dir", str(data), "--results-dir", str(results)]
    for file in DEMO_FILES:
        infer_activate.main(common + ["--file", file, "--max-new-tokens", "6", "--batch-size", "7"])
    plot_all.main(["--results-dir", str(results)])
    corpus_activate.main(common + ["--file", *[f"sample-corpus-{lang}" for lang in LANGS], "--max-length", "12"])
    language_neurons.main(["--results-dir", str(results), "--model", "tiny-bloom", "--prefix", "sample-corpus-",
                           "--top-rate", "0.05"])
    neuron_examples.main(common + ["--batch-size", "3"])
    perplexity.main(common + ["--prefix", "sample-corpus-", "--max-length", "12"])
    infer_activate.main(common + ["--file", "sample-deu2eng", "--max-new-tokens", "6", "--deactivate",
                                  f"{results}/neurons/tiny-bloom-language-neurons.json:deu"])
    assert evaluate.main(["--results-dir", str(results), "--ref", str(data / "sample-deu2eng.ref.eng"), "--files",
                          *DEMO_FILES, "--offline"]) == 0
    report.main(["--results-dir", str(results), "--model", "tiny-bloom"])
    return results, results / "report-tiny-bloom.html", model


def top_context_reference(model_dir, layer, neuron, files, max_length=12):
    """(value, "corpus:line position p") of the neuron's largest activation over the corpora, each text alone
    (no padding), with forward hooks on the stock model's activation modules; ties: earlier corpus, line,
    position (docs/formats.md)."""
    import torch
    from hook_reference import activation_modules
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    seen = {}
    activation_modules(model)[layer].register_forward_hook(lambda m, a, out: seen.__setitem__("out", out))
    found = []
    for c, file in enumerate(files):
        for line, text in enumerate((ROOT / "data" / f"{file}.txt").read_text(encoding="utf-8").splitlines(), 1):
            if text.strip():
                with torch.no_grad():
                    model(input_ids=torch.tensor([tok(text.strip()).input_ids[:max_length]]))
                found += [(-float(v), c, line, p) for p, v in enumerate(seen["out"][0, :, neuron])]
    value, c, line, p = min(found)
    return -value, f"{files[c]}:{line} position {p}"


class Tables(HTMLParser):
    """The cells of every table of a page, as text: [[header cells], [row cells], ...] per table."""

    def __init__(self):
        super().__init__()
        self.tables, self.cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def page_tables(path):
    parser = Tables()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.tables


def markdown_tables(path):
    """The tables of a Markdown file: [[cells of each row]] per table, the rule row left out, code marks removed."""
    tables, current = [], None
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
            if all(re.fullmatch(r":?-+:?", c) for c in cells):
                continue
            current = current if current is not None else []
            current.append(cells)
        elif current is not None:
            tables.append(current)
            current = None
    return tables


def test_the_report_shows_the_markdown_tables_of_plots_ppl_and_eval_cell_for_cell(tiny_demo):
    results, path, _ = tiny_demo
    html_tables = page_tables(path)
    tables = results / "tables"
    expected = [markdown_tables(tables / "compare-sample-deu2eng-tiny-bloom.md")[0],  # the comparison's summary
                markdown_tables(tables / "compare-sample-deu2eng-tiny-bloom.md")[1],  # suppressed per layer
                markdown_tables(tables / "eval-sample-deu2eng-tiny-bloom.md")[0],
                markdown_tables(tables / "eval-sample-deu2eng-tiny-bloom-off-deu.md")[0]]
    ppl = markdown_tables(tables / "tiny-bloom-perplexity.md")[0]
    for table in expected:
        assert table in html_tables
    shown_ppl = next(t for t in html_tables if t[0][0] == "deactivated \\ evaluated")
    assert shown_ppl[1:] == ppl[1:] and shown_ppl[0][1:] == ppl[0][1:]
    size = path.stat().st_size
    assert size < 3_000_000, f"the tiny demo's report is {size:,} bytes"


def test_the_tiny_demo_report_in_a_headless_browser(tiny_demo, tmp_path):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium; docs/testing.md)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="no playwright (pip install -r requirements.txt)")
    results, path, model_dir = tiny_demo
    copy = tmp_path / "elsewhere" / path.name  # the page alone, away from the results it was built from
    copy.parent.mkdir()
    shutil.copy(path, copy)
    errors, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(f"console error: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(copy.as_uri(), wait_until="load")
            assert [s.get_attribute("id") for s in page.locator("section").all()] == SECTIONS  # none "missing"
            for anchor in SECTIONS:
                assert page.locator(f"#{anchor}").is_visible()
            images = page.locator("img")
            assert images.count() >= 6
            assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            entries = page.locator(".neuron")
            total = entries.count()
            assert total > 0
            layer, langs = page.evaluate("[document.querySelector('.neuron').dataset.layer,"
                                         " document.querySelector('.neuron').dataset.langs]")
            lang = langs.split()[0]
            for query, keep in ((f"{layer} {lang}", lambda e: e["layer"] == layer and lang in e["langs"].split()),
                                (lang, lambda e: lang in e["langs"].split()),
                                (f"L{layer}", lambda e: e["layer"] == layer)):
                want = sum(map(keep, page.evaluate("Array.from(document.querySelectorAll('.neuron'), "
                                                   "e => ({layer: e.dataset.layer, langs: e.dataset.langs}))")))
                page.fill("#neuron-filter", query)
                assert page.locator(".neuron:visible").count() == want, query
                assert page.locator("#neuron-count").text_content() == f"{want} of {total} neurons shown"
            page.fill("#neuron-filter", "no-such-language")
            assert page.locator(".neuron:visible").count() == 0
            page.fill("#neuron-filter", "")
            assert page.locator(".neuron:visible").count() == total
            first = page.locator(".neuron").first  # its top context against a hook reference
            layer, index = int(first.get_attribute("data-layer")), int(first.get_attribute("data-index"))
            files = json.loads((results / "neurons" / "tiny-bloom-language-neurons.json").read_text())["files"]
            value, where = top_context_reference(model_dir, layer, index, files)
            assert first.locator(".ctx-where").first.text_content() == where
            assert float(first.locator(".ctx-value").first.text_content()) == pytest.approx(value, rel=1e-3)
            assert first.locator(".tok.top").count() >= 1
            header = page.locator("#runs table thead th").first  # sorting by a click on a header
            header.click()
            files = page.locator("#runs table tbody tr td:first-child").all_text_contents()
            assert files == sorted(files, key=str.lower)
        finally:
            browser.close()
    assert not errors, errors
    outside = [u for u in requests if not u.startswith(("file:", "data:"))]
    assert not outside, f"requests leaving the file: {outside}"
