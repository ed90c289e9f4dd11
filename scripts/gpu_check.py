"""The GPU path in one command: 7B-class models in bfloat16 on a GPU, recording checked against a hook reference,
the benchmark at batch 1 and 16; one table, and OUT. About 5 minutes on an H100/H200 (docs/gpu.md).

    make gpu-check                             # a GPU machine with the pinned packages; no network needed
    make gpu-check PY=python                   # the machine's own python, the patched files dropped in (docs/gpu.md)
    python scripts/gpu_check.py --tiny         # the same on the CPU with tiny configs, in seconds (the test)
    python scripts/gpu_check.py --arch qwen2 --batch-sizes 1 --no-profile

Per architecture of ARCHS (the `7b` configs of pim/models/architectures.py: BLOOM-7b1, Qwen2-7B, Llama-3.1-8B),
one model is built from its config with random weights (no download), on the GPU, one after the other:
1. check: CHECK_PROMPTS random prompts of unequal length, left-padded, generate CHECK_NEW_TOKENS greedy tokens
   with an EOS that ends some rows early; once without recording, forward hooks on the activation modules taking
   the reference (tests/hook_reference.py), then once per recording arm (patch, hooks). Each arm must generate
   the same tokens and count the same steps, eq_zero/le_zero counts and index counts: exactly.
2. speed: scripts/benchmark.py's interleaved timing (stock, patch, hooks) at each batch size of BATCH_SIZES.
3. profile, batch 1: scripts/benchmark.py's profile: kernels and host syncs that recording adds per decode step.
The exit status is 1 if a check failed or an architecture could not run; speed is reported, not judged.
"""
import argparse
import gc
import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # pim without `pip install -e .` (a GPU image); the hook reference

import benchmark  # noqa: E402  (scripts/benchmark.py: the models, the timing, the profile)

from pim.cli import argument_parser  # noqa: E402
from pim.models.architectures import bench_types  # noqa: E402

# Defaults; every one has a flag (--help). The command line overrides them.
ARCHS = ["bloom", "qwen2", "llama"]  # BLOOM-7b1, Qwen2-7B, Llama-3.1-8B: the registry's `7b` bench configs
PRESET = "7b"  # scripts/benchmark.py's preset: bfloat16 on a CUDA GPU
BATCH_SIZES = [1, 16]  # timed batch sizes
CHECK_PROMPTS = 5  # prompts of the check, left-padded to the longest
CHECK_LENGTHS = (5, 29)  # prompt tokens of the check: the shortest and the longest, the others in between
CHECK_NEW_TOKENS = 16  # greedy tokens per prompt in the check
NEW_TOKENS = 64  # the timing: tokens generated per sequence, exactly (as make bench)
PROMPT_LEN = 32  # the timing: prompt tokens per sequence
REPS = 3  # the timing: interleaved rounds of (stock, patch, hooks) per case, after WARMUP untimed ones
WARMUP = 1
PROFILE = True  # profile decode steps at batch 1: kernels and host syncs added per step
PROFILE_STEPS = 8  # decode steps the profile measures
SEED = 0  # weights and prompts
OUT = "results/gpu-check.json"  # everything measured, as JSON
# --tiny: the registry's tiny configs on the CPU, still in bfloat16, few tokens: the same code in seconds
TINY = dict(preset="tiny", dtype="bfloat16", new_tokens=4, reps=1, warmup=0, profile_steps=2)
ATTACH = ["patch", "hooks"]  # the recording arms, checked and timed against stock
_started = time.perf_counter()  # progress lines count the seconds from here (main() resets it)


def parse_args(argv=None):
    p = argument_parser(__doc__)
    p.add_argument("--tiny", action="store_true", help="the registry's tiny configs on the CPU, in bfloat16, "
                   f"few tokens (reps {TINY['reps']}, warm-up {TINY['warmup']}, {TINY['new_tokens']} new tokens)")
    p.add_argument("--arch", nargs="+", default=ARCHS, choices=bench_types(),
                   help=f"architectures (default {' '.join(ARCHS)})")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=BATCH_SIZES,
                   help=f"timed batch sizes (default {' '.join(map(str, BATCH_SIZES))})")
    p.add_argument("--check-prompts", type=int, default=CHECK_PROMPTS, help="prompts of the check")
    p.add_argument("--check-new-tokens", type=int, default=CHECK_NEW_TOKENS, help="greedy tokens per check prompt")
    p.add_argument("--new-tokens", type=int, default=None, help=f"timing: tokens per sequence (default {NEW_TOKENS})")
    p.add_argument("--prompt-len", type=int, default=PROMPT_LEN, help="timing: prompt tokens per sequence")
    p.add_argument("--reps", type=int, default=None, help=f"timing: timed rounds per case (default {REPS})")
    p.add_argument("--warmup", type=int, default=None, help=f"timing: untimed rounds first (default {WARMUP})")
    p.add_argument("--profile", default=PROFILE, action=argparse.BooleanOptionalAction,
                   help="profile decode steps at batch 1 (--no-profile: not)")
    p.add_argument("--profile-steps", type=int, default=None, help=f"decode steps profiled (default {PROFILE_STEPS})")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the weights and prompts")
    p.add_argument("--out", default=OUT, help=f"the JSON of everything measured (default {OUT}; '' writes nothing)")
    args = p.parse_args(argv)
    defaults = dict(TINY) if args.tiny else dict(preset=PRESET, dtype=None, new_tokens=NEW_TOKENS, reps=REPS,
                                                 warmup=WARMUP, profile_steps=PROFILE_STEPS)
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if min(args.check_prompts, args.check_new_tokens, args.new_tokens, args.prompt_len, args.reps,
           args.profile_steps, *args.batch_sizes) < 1 or args.warmup < 0:
        p.error("counts, token numbers and batch sizes must be at least 1 (--warmup at least 0)")
    if args.check_prompts < 2:
        p.error("--check-prompts must be at least 2: an EOS ends some rows early, not all")
    if args.out and Path(args.out).is_dir():
        p.error(f"--out {args.out}: give a file name (a JSON file), not a folder")
    args.attach = ATTACH  # what scripts/benchmark.py's timing reads
    return args


def check_prompts(model, count, seed):
    """(ids, mask) of `count` random prompts from CHECK_LENGTHS[0] to CHECK_LENGTHS[1] tokens, in shuffled order,
    left-padded; no special ids in them."""
    import torch

    g = torch.Generator().manual_seed(seed)
    short, long = CHECK_LENGTHS
    lengths = [short + (long - short) * i // (count - 1) for i in range(count)]
    lengths = [lengths[i] for i in torch.randperm(count, generator=g).tolist()]
    ids = torch.full((count, long), benchmark.PAD_ID, dtype=torch.long)
    mask = torch.zeros((count, long), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, long - n:] = torch.randint(benchmark.PAD_ID + 1, model.config.vocab_size, (n,), generator=g)
        mask[row, long - n:] = 1
    return ids.to(model.device), mask.to(model.device)


def early_eos(new_tokens, fallback):
    """A token of the continuations (not a first one) that some continuations lack: as EOS it ends as many rows
    early as such a token can, not all; `fallback` where there is none."""
    rows = new_tokens.tolist()
    ends = {t: sum(t in row[:-1] for row in rows) for row in rows for t in row[1:-1]}
    ends = {t: n for t, n in ends.items() if n < len(rows)}
    return max(ends, key=ends.get) if ends else fallback


def check_recording(model, args):
    """The check (the docstring's step 1), for each recording arm: {attach, tokens_equal, steps_equal, ratios_equal,
    counts_equal (against the reference run without recording), same_call_equal (steps, ratios and counts against
    hooks in the recording call itself: the recorder counts what the model computed, even where a GPU computed
    differently from one call to the next), passed, prompts, counted_steps, rows_ended_early, eos}."""
    import torch
    from hook_reference import HookReference

    ids, mask = check_prompts(model, args.check_prompts, args.seed)
    eos, pad = benchmark.special_ids(model)

    def run(eos_id, attach=None, hooked=True):
        """(new tokens, the hooks' (rows, counts, counted steps) or None, the recorder's stats or None)."""
        recorder = model.start_activation_recording(attach=attach) if attach else None
        reference = HookReference(model) if hooked else None  # after the recorder's hooks: sees what they return
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.check_new_tokens,
                                 do_sample=False, eos_token_id=eos_id, pad_token_id=pad)
        new = out[:, ids.shape[1]:].cpu()
        expected = None
        if reference:
            reference.remove()
            expected = reference.expected(new, {eos_id})
        stats = recorder.take() if recorder else None
        if recorder:
            model.stop_activation_recording()
        return new, expected, stats

    eos = early_eos(run(eos, hooked=False)[0], eos)
    stock_new, (rows, counts, counted), _ = run(eos)
    checks = []
    for attach in args.attach:
        new, same_call, stats = run(eos, attach)
        got = (stats.ratios().tolist(), stats.active_counts.tolist(), stats.steps.tolist())
        check = dict(attach=attach, tokens_equal=torch.equal(new, stock_new), steps_equal=got[2] == counted,
                     ratios_equal=got[0] == rows, counts_equal=got[1] == counts, same_call_equal=got == same_call)
        check["passed"] = all(v for k, v in check.items() if k.endswith("_equal"))
        checks.append(dict(check, prompts=len(ids), counted_steps=sum(counted), eos=eos,
                           rows_ended_early=sum(n < args.check_new_tokens for n in counted)))
    return checks


def run_arch(arch, args):
    """Build one model; check, time and profile it. A failure (out of memory, ...) is reported in the row and the
    next architecture still runs."""
    import torch

    row, model, start = dict(arch=arch), None, time.perf_counter()
    try:
        progress(f"{arch}: building the {args.preset} config with random weights")
        model = benchmark.build_model(arch, args.preset, args.seed, args.dtype)
        text = model.config.get_text_config()
        row.update(params=sum(p.numel() for p in model.parameters()), layers=text.num_hidden_layers,
                   dtype=str(model.dtype).removeprefix("torch."), device=str(model.device))
        progress(f"{arch}: checking the recording against the hook reference")
        row["checks"] = check_recording(model, args)
        row["cases"] = []
        for batch in args.batch_sizes:
            progress(f"{arch}: timing batch {batch}")
            row["cases"].append(dict(batch=batch, **benchmark.time_case(model, batch, args)))
        if args.profile:
            progress(f"{arch}: profiling batch 1")
            row["profile"] = benchmark.profile_arch(model, 1, args)
    except Exception as e:  # noqa: BLE001 -- reported (with the traceback above), the other architectures go on
        traceback.print_exc()
        row["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    row["seconds"] = time.perf_counter() - start
    return row


def progress(text):
    """A line on stderr with the seconds since main() started."""
    print(f"[{time.perf_counter() - _started:6.1f} s] {text}", file=sys.stderr, flush=True)


def ratio_cell(case, arm):
    r = case.get(arm)
    return f"{r['ratio']:.3f} ({r['paired_ratio']:.3f})" if r else "-"


def check_cell(row):
    """`patch equal, hooks equal`, or which comparisons differ."""
    if "checks" not in row:
        return "ERROR"
    return ", ".join(f"{c['attach']} equal" if c["passed"] else f"{c['attach']} DIFFERENT (" + ", ".join(
        k.removesuffix("_equal").replace("_", " ") for k, v in c.items() if k.endswith("_equal") and not v) + ")"
        for c in row["checks"])


def profile_cell(profile):
    """What recording adds per decode step: kernels on a GPU (ops on the CPU, which has none), host syncs."""
    kind = "kernel" if profile["device"].startswith("cuda") else "op"
    added = profile[f"{kind}s_per_step_on"] - profile[f"{kind}s_per_step_off"]
    syncs = profile["syncs_per_step_on"] - profile["syncs_per_step_off"]
    return f"{added:+.0f} {kind}s ({added / profile['layers']:.2f}/layer), {syncs:+g} syncs"


def params(row):
    if "params" not in row:
        return "-"
    return f"{row['params'] / 1e9:.2f}B" if row["params"] >= 1e9 else f"{row['params'] / 1e6:.2f}M"


def table(result):
    """The one table (markdown): per architecture and batch size, stock tok/s, recording / stock per arm (median of
    pairs in parentheses), the check and, at batch 1, the profile."""
    lines = ["| arch | params | check (tokens and counts) | batch | stock tok/s (min-max) | patch / stock (paired) "
             "| hooks / stock (paired) | added per decode step |", "|---|---|---|---|---|---|---|---|"]
    for row in result["archs"]:
        head = [row["arch"], params(row), check_cell(row)]
        for i, case in enumerate(row.get("cases") or [{}]):
            profile = row.get("profile") if case.get("batch") == 1 else None
            cells = [str(case.get("batch", "-")),
                     f"{case['tok_per_s_stock']:.1f} ({benchmark.spread(case['stock_samples'])})" if case else "-",
                     ratio_cell(case, "patch"), ratio_cell(case, "hooks"), profile_cell(profile) if profile else "-"]
            lines.append("| " + " | ".join((head if i == 0 else ["", "", ""]) + cells) + " |")
        if "error" in row:
            lines.append(f"| {row['arch']} | error: {row['error']} |||||||")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    import torch
    import transformers

    if not args.tiny and not torch.cuda.is_available():
        sys.exit(f"error: gpu_check.py builds 7B-class models on a CUDA GPU, and torch {torch.__version__} sees none. "
                 "Run it on a GPU machine (docs/gpu.md), or with --tiny on the CPU.")
    global _started
    _started = start = time.perf_counter()
    if args.tiny:
        torch.set_num_threads(1)  # tiny matrices: one thread is the fastest and steadiest on a shared CPU
    preset_name, preset, machine = benchmark.environment(args.preset)
    progress(f"{machine} | torch {torch.__version__} | transformers {transformers.__version__} from "
             f"{Path(transformers.__file__).parent}")
    result = dict(machine=machine, device=preset["device"], dtype=args.dtype or preset["dtype"], preset=preset_name,
                  torch=torch.__version__, transformers=transformers.__version__, patches=patches_sha256(),
                  transformers_path=str(Path(transformers.__file__).parent),
                  settings={k: getattr(args, k) for k in ("arch", "batch_sizes", "check_prompts", "check_new_tokens",
                                                          "new_tokens", "prompt_len", "reps", "warmup", "profile",
                                                          "profile_steps", "seed")},
                  archs=[run_arch(arch, args) for arch in args.arch])
    result["passed"] = all("error" not in r and all(c["passed"] for c in r["checks"]) for r in result["archs"])
    result["seconds"] = time.perf_counter() - start
    print(f"gpu-check: {machine} | {result['dtype']} | torch {result['torch']} | transformers {result['transformers']} "
          f"| preset {preset_name} | check: {args.check_prompts} prompts x {args.check_new_tokens} tokens | timing: "
          f"{args.new_tokens} new tokens, {args.reps} interleaved rounds after {args.warmup} warm-up")
    print(table(result))
    print(f"{'passed' if result['passed'] else 'FAILED'}: the recording arms "
          f"{'equal' if result['passed'] else 'do not all equal'} the hook reference (tokens and counts), "
          f"in {result['seconds'] / 60:.1f} minutes")
    if args.out:
        from pim.activation_files import write_atomic

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out, json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0 if result["passed"] else 1


def patches_sha256():
    """The patches the imported transformers carries (make patch, or the drop-in files), or None."""
    try:
        from transformers import activation_patch_info
    except ImportError:
        return None
    return activation_patch_info.PATCHES_SHA256


if __name__ == "__main__":
    sys.exit(main())
