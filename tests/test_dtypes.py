"""Recording in every dtype that --dtype offers (float32, bfloat16, float16), on the CPU.

Every architecture of pim/models/architectures.py and the two trained models are checked against a reference
that computes in the same dtype (forward hooks on the pristine, unpatched model: tests/hook_reference.py), and
compared exactly: the same generated tokens, the same counts, no tolerance. The comparisons (== 0, <= 0, > 0),
the finished rows (an inf threshold in the activations' dtype), positions="all" and deactivation run in each
dtype, and some counts go past the integers that the low-precision dtypes hold (256 in bfloat16, 2048 in
float16), so that a count kept or summed in the activations' dtype shows.
"""
import functools
import json

import pytest
import torch
from conftest import ARCHS, HOOK_ARCHS, MAX_NEW_TOKENS, PROMPTS, files, infer
from hook_reference import HookReference, decoder_layers
from test_positions_and_deactivation import OFF, FullActivations, zeroing_hooks
from test_recorder import pristine_class
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.activation_recorder import start_recording

from pim.activation_files import escape_newlines, index_line, ratio_lines
from pim.models.architectures import by_type
from pim.models.tiny import ZERO_EVERY

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # --dtype's choices
LOW = ["bfloat16", "float16"]  # the rest of the suite records in float32
EXACT_UP_TO = {"bfloat16": 256, "float16": 2048}  # every integer up to this is exact in the dtype, not the next
NEW_TOKENS = 8


def tokenizer(folder):
    return AutoTokenizer.from_pretrained(folder, padding_side="left")


def patched(folder, dtype):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype]).eval()


pristine = functools.lru_cache(pristine_class)  # the pristine modeling file is executed once per architecture


def stock(arch, folder, dtype):
    """The model of the pristine (unpatched) source in `dtype`; the hooks rows have no patch: stock already."""
    if arch in ARCHS:
        return pristine(arch).from_pretrained(folder, dtype=DTYPES[dtype]).eval()
    return patched(folder, dtype)


def attaches(arch):
    return ["patch", "hooks"] if arch in ARCHS else ["hooks"]


def greedy(model, enc, new_tokens=NEW_TOKENS, **gen):
    """The new tokens of a greedy generate call."""
    return model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, **gen)[:, enc.input_ids.shape[1]:]


def early_eos(new_tokens):
    """A token of these continuations (not a first one) that some other continuation lacks: as EOS it ends some
    rows early but not all. -1 (never emitted: no row ends early) where there is none."""
    rows = new_tokens.tolist()
    return next((t for row in rows for t in row[1:-1] if any(t not in other for other in rows)), -1)


def reference_run(model, enc, eos, dtype, new_tokens=NEW_TOKENS):
    """(new tokens, ratio rows, index counts, counted steps per row) of a model without recording, by hooks."""
    reference = HookReference(model)
    new = greedy(model, enc, new_tokens, eos_token_id=eos)
    reference.remove()
    assert reference.steps[0][0].dtype == DTYPES[dtype], "the reference sees the activations in the dtype"
    return new, *reference.expected(new, {eos})


def recorded_run(model, enc, eos, attach, new_tokens=NEW_TOKENS, **recording):
    recorder = start_recording(model, attach=attach, **recording)
    new = greedy(model, enc, new_tokens, eos_token_id=eos)
    stats = recorder.take()
    model.stop_activation_recording()
    return new, stats


def assert_equal_to_reference(stats, new, expected):
    expected_new, rows, counts, counted = expected
    assert torch.equal(new, expected_new), "recording changed the generated tokens"
    assert stats.steps.tolist() == counted
    assert stats.ratios().tolist() == rows
    assert stats.active_counts.tolist() == counts


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("arch", ARCHS + HOOK_ARCHS)
def test_recording_equals_stock_hooks_in_the_same_dtype(arch, dtype, tiny_model_dirs):
    folder = tiny_model_dirs[arch]
    reference, tok = stock(arch, folder, dtype), tokenizer(folder)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    eos = early_eos(greedy(reference, enc))
    expected = reference_run(reference, enc, eos, dtype)
    model = patched(folder, dtype)
    for attach in attaches(arch):
        assert_equal_to_reference(*reversed(recorded_run(model, enc, eos, attach)), expected)
    if arch not in ("gpt_neox", "gemma3"):  # their random continuations share every token in some dtypes
        assert min(expected[3]) < NEW_TOKENS, "a row ends early: the finished rows' threshold is used"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", ["bloom", "qwen2", "phi3"])  # every row in float32: test_positions_and_deactivation
def test_deactivation_equals_zeroing_hooks_in_the_same_dtype(arch, dtype, tiny_model_dirs):
    folder = tiny_model_dirs[arch]
    reference, tok = stock(arch, folder, dtype), tokenizer(folder)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits_on = reference(**enc).logits
    handles = zeroing_hooks(reference, OFF)
    with torch.no_grad():
        logits_off = reference(**enc).logits
    tokens_off = greedy(reference, enc)
    for h in handles:
        h.remove()
    assert logits_off.dtype == DTYPES[dtype] and not torch.equal(logits_on, logits_off), "the neurons matter"

    model = patched(folder, dtype)
    recorder = start_recording(model, attach=attaches(arch)[0], deactivate=OFF)
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, logits_off)
    assert torch.equal(greedy(model, enc), tokens_off)
    stats = recorder.take()
    for layer, ids in OFF.items():
        assert (stats.active_counts[layer, ids] == 0).all(), "a switched-off neuron never fires"


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("arch", ["bloom", "gemma3", "phi3"])  # every row in float32: test_positions_and_deactivation
def test_all_positions_of_a_padded_batch_in_the_same_dtype(arch, dtype, tiny_model_dirs):
    """positions="all": the pads' threshold is inf in the activations' dtype (float32 in the other tests)."""
    folder = tiny_model_dirs[arch]
    reference, tok = stock(arch, folder, dtype), tokenizer(folder)
    enc = tok(PROMPTS + [p + " Danke schön, bis morgen." for p in PROMPTS[:2]], return_tensors="pt", padding=True)
    full = FullActivations(reference)
    with torch.no_grad():
        reference(**enc)
    full.remove()
    mask = enc.attention_mask.bool()[..., None]
    expected = torch.stack([((a > 0) & mask).sum((0, 1)) for a in full.calls[0]])

    model = patched(folder, dtype)
    recorder = start_recording(model, positions="all")
    with torch.no_grad():
        model(**enc)
    stats = recorder.take()
    assert full.calls[0][0].dtype == DTYPES[dtype] and (enc.attention_mask == 0).any()
    assert stats.tokens == int(enc.attention_mask.sum()) and torch.equal(stats.active_counts, expected)


def test_all_positions_without_an_attention_mask_count_every_position(tiny_model_dirs):
    """positions="all" in forward calls given no attention mask (every position counts), in bfloat16."""
    folder = tiny_model_dirs["bloom"]
    reference, tok = stock("bloom", folder, "bfloat16"), tokenizer(folder)
    long = [PROMPTS[0], PROMPTS[1], PROMPTS[3]]
    ids = tok(long, return_tensors="pt", padding=True).input_ids[:, -4:]  # the last 4 tokens of each: no pads
    full = FullActivations(reference)
    with torch.no_grad():
        reference(input_ids=ids)
        reference(input_ids=ids[:, :2])
    full.remove()
    expected = sum(torch.stack([(a > 0).sum((0, 1)) for a in call]) for call in full.calls)
    model = patched(folder, "bfloat16")
    recorder = start_recording(model, positions="all")
    with torch.no_grad():
        model(input_ids=ids)
        model(input_ids=ids[:, :2])
    stats = recorder.take()
    assert stats.tokens == 3 * 4 + 3 * 2 and torch.equal(stats.active_counts, expected)


def all_positions_reference(reference, enc, eos, new_tokens):
    """(new tokens, index counts) of positions="all" in generate, from hooks that keep every position: the prompt's
    non-pad positions, then each decode step's position while its row has not emitted EOS."""
    full = FullActivations(reference)
    new = greedy(reference, enc, new_tokens, eos_token_id=eos)
    full.remove()
    ends = [row.index(eos) + 1 if eos in row else len(row) for row in new.tolist()]
    counts = torch.stack([((a > 0) & enc.attention_mask.bool()[..., None]).sum((0, 1)) for a in full.calls[0]])
    for t, call in enumerate(full.calls[1:], 1):
        rows = torch.tensor([t < e for e in ends])
        counts += torch.stack([(a[rows] > 0).sum((0, 1)) for a in call])
    return new, counts, ends


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("arch", ["bloom"])
def test_all_positions_in_generate_skip_finished_rows_in_the_same_dtype(arch, dtype, tiny_model_dirs):
    folder = tiny_model_dirs[arch]
    reference, tok = stock(arch, folder, dtype), tokenizer(folder)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    eos = early_eos(greedy(reference, enc, 4))
    new_expected, counts, ends = all_positions_reference(reference, enc, eos, 4)
    assert min(ends) < 4, "a row finishes early"
    new, stats = recorded_run(patched(folder, dtype), enc, eos, "patch", 4, positions="all")
    assert torch.equal(new, new_expected) and torch.equal(stats.active_counts, counts)
    assert stats.tokens == int(enc.attention_mask.sum()) + sum(e - 1 for e in ends)


# -- counts past the integers of bfloat16 and float16 ---------------------------------------------------------
WIDE = 4400  # neurons per layer of the wide tiny Qwen2: le_zero counts past 2048 (float16) at every step


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory):
    from conftest import CORPUS

    from pim.models.tiny import build_tiny_model

    return build_tiny_model("qwen2", tmp_path_factory.mktemp("models") / "tiny-qwen2-wide", CORPUS, seed=1,
                            intermediate_size=WIDE)


@pytest.mark.parametrize("dtype", LOW)
def test_zero_counts_past_the_dtype_s_integers(dtype, wide_model_dir):
    """Per step and layer, eq_zero and le_zero counts of a 4,400-neuron layer: many are not integers of the dtype."""
    reference, tok = stock("qwen2", wide_model_dir, dtype), tokenizer(wide_model_dir)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    eos = early_eos(greedy(reference, enc))
    expected = reference_run(reference, enc, eos, dtype)
    zero_counts = torch.tensor(expected[1], dtype=torch.float64).mul(WIDE).round()
    assert int((zero_counts.to(DTYPES[dtype]).double() != zero_counts).sum()) > 20, "counts the dtype cannot hold"
    new, stats = recorded_run(patched(wide_model_dir, dtype), enc, eos, "patch")
    assert_equal_to_reference(stats, new, expected)


# neurons of every layer made to fire at every position by a large bias before BLOOM's GELU: the first 16 but the
# zeroed and steepened rows of pim/models/tiny.py
ALWAYS_ON = [i for i in range(16) if i % ZERO_EVERY > 1]


def always_on(model):
    """The first ALWAYS_ON neurons of every layer fire at every position: their pre-activation bias is 100."""
    gate = by_type("bloom").gate
    for layer in decoder_layers(model, gate):
        with torch.no_grad():
            layer.get_submodule(gate).bias[ALWAYS_ON] = 100.0
    return model


@pytest.mark.parametrize("dtype, positions, prompts, new_tokens", [("bfloat16", "last", 40, 8),
                                                                     ("float16", "all", 64, 2)])
def test_index_counts_past_the_dtype_s_integers(dtype, positions, prompts, new_tokens, tiny_model_dirs):
    """Neurons counted in more steps of one generate call (bfloat16: 320) or positions (float16: about 2,500) than the
    dtype holds as integers: a count kept in the activations' dtype stops at 256 or 2048."""
    folder = tiny_model_dirs["bloom"]
    reference, tok = always_on(stock("bloom", folder, dtype)), tokenizer(folder)
    texts = [PROMPTS[i % len(PROMPTS)] + " Danke schön." * (i % 7) for i in range(prompts)]
    enc = tok(texts, return_tensors="pt", padding=True)
    if positions == "last":
        new_expected, _, counts, _ = reference_run(reference, enc, -1, dtype, new_tokens)
        counts = torch.tensor(counts)
    else:
        new_expected, counts, _ = all_positions_reference(reference, enc, -1, new_tokens)
    assert (counts[:, ALWAYS_ON] > EXACT_UP_TO[dtype]).all()
    new, stats = recorded_run(always_on(patched(folder, dtype)), enc, -1, "patch", new_tokens, positions=positions)
    assert torch.equal(new, new_expected) and torch.equal(stats.active_counts, counts)


# -- the trained models from PyPI ----------------------------------------------------------------------------
REAL_PROMPTS = ["Translate into English.\nGerman: Der Zug fährt um sieben Uhr ab.\nEnglish:", "Paris is"]
REAL_NEW_TOKENS = 4


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name", ["gemma", "smollm2"])
def test_trained_models_equal_hooks_in_the_same_dtype(name, dtype, request):
    """Gemma-3-270M and SmolLM2-135M (2,048 and 1,536 neurons a layer: le_zero counts past 256) recorded by their
    patch against hooks on the same model with recording off (the stock code path; test_recorder checks it against
    the pristine source), on two prompts of unequal length. Gemma 3 overflows float16 (its residual stream passes
    65,504 in layer 7), so from layer 8 on its activations are NaN, counted as neither == 0, <= 0 nor > 0, and it
    generates pad tokens: recorded exactly all the same (docs/measures.md)."""
    folder = request.getfixturevalue(f"{name}_dir")
    model, tok = patched(folder, dtype), tokenizer(folder)
    enc = tok(REAL_PROMPTS, return_tensors="pt", padding=True)
    assert (enc.attention_mask == 0).any(), "left padding"
    expected = reference_run(model, enc, -1, dtype, REAL_NEW_TOKENS)
    new, stats = recorded_run(model, enc, -1, "patch", REAL_NEW_TOKENS)
    assert_equal_to_reference(stats, new, expected)
    nan = name == "gemma" and dtype == "float16"
    assert int(stats.zero_counts[:, :, 1].max()) > EXACT_UP_TO["bfloat16"] or nan
    assert int(stats.zero_counts[:, 8:, 1].max()) == 0 if nan else int(stats.zero_counts[:, 8:, 1].min()) > 0


@pytest.fixture
def bfloat16_eos_model_dir(tiny_model_dirs, tmp_path):
    """The tiny BLOOM (float32 weights) with an EOS that ends some of its bfloat16 continuations of PROMPTS early."""
    model, tok = patched(tiny_model_dirs["bloom"], "float32"), tokenizer(tiny_model_dirs["bloom"])
    low = patched(tiny_model_dirs["bloom"], "bfloat16")
    model.generation_config.eos_token_id = early_eos(greedy(low, tok(PROMPTS, return_tensors="pt", padding=True)))
    folder = tmp_path / "tiny-bloom-bf16-eos"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_infer_in_bfloat16_writes_the_files_of_the_reference(bfloat16_eos_model_dir, tmp_path):
    """scripts/infer_activate.py --dtype bfloat16 (a GPU's default) in batches of 4 and 2: its files equal hooks on
    the model loaded in bfloat16, batch by batch, and the manifest says bfloat16."""
    folder = bfloat16_eos_model_dir
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prompts.txt").write_text("".join(escape_newlines(p) + "\n" for p in PROMPTS + PROMPTS[:2]))
    res = infer(folder, tmp_path / "data", tmp_path / "results", "--batch-size", "4", "--dtype", "bfloat16",
                "--no-sort")  # the batches of the reference below
    assert res.returncode == 0, res.stderr
    model, tok = patched(folder, "bfloat16"), tokenizer(folder)
    eos = model.generation_config.eos_token_id
    texts, zero_counts, counts = [], [], 0
    for batch in (PROMPTS, PROMPTS[:2]):
        enc = tok(batch, return_tensors="pt", padding=True)
        new, rows, batch_counts, counted = reference_run(model, enc, eos, "bfloat16", MAX_NEW_TOKENS)
        width = len(batch_counts[0])
        zero_counts += [[[round(eq * width), round(le * width)] for eq, le in row] for row in rows]
        counts = counts + torch.tensor(batch_counts)
        texts += [tok.decode(row[:n], skip_special_tokens=True) for row, n in zip(new.tolist(), counted)]
    got = files(tmp_path / "results", model=folder.name)
    assert len(zero_counts) < (len(PROMPTS) + 2) * MAX_NEW_TOKENS, "some rows stop early"
    assert got["result"].decode() == "".join(escape_newlines(t) + "\n" for t in texts)
    assert got["ratio"].decode() == ratio_lines(zero_counts, width)
    assert got["index"].decode() == index_line(counts.tolist())
    manifest = json.loads((tmp_path / "results" / f"prompts-manifest-{folder.name}.json").read_text())
    assert manifest["settings"]["dtype"] == "bfloat16"
