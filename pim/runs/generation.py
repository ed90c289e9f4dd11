"""A generation run from start to end (scripts/infer_activate.py is its command line): generate for every
prompt of data/<FILE>.txt, or of standard input, and record which MLP neurons fire (Mu et al. 2024).

The prompts are read and checked before the model is loaded (pim/models/loading.py); batches are sorted
by token length within windows (plan_batches) and halve after an out-of-memory error
(pim/run_engine.halving_batches); each batch is committed by pim/run_writer.RunWriter, so that a killed
run resumes exactly. Shards (--shard i/n, or one per process under accelerate launch) are contiguous
ranges of the prompts, merged by pim/runs/shards.py.
"""
import hashlib
import shlex
import sys
import time
from pathlib import Path

from pim.activation_files import (
    FormatError,
    escape_newlines,
    ratio_lines,
    read_input_lines,
    unescape_newlines,
)
from pim.cli import UserError
from pim.models.architectures import CHATML, TEMPLATE
from pim.models.deactivation import mlp_shape, run_suffix
from pim.models.loading import load_model, model_settings, one_line
from pim.models.names import run_model_name
from pim.runs.engine import (
    check_names,
    check_split,
    halving_batches,
    injected_oom,
    kept_shard,
    launched,
    merge_ranks,
    process_shard,
    refuse_finished,
    refuse_finished_merge,
)
from pim.runs.lock import RunLock
from pim.runs.merge import merge_shards
from pim.runs.shards import shard_dir, shard_model_name, shard_range
from pim.runs.writer import RunWriter


def read_prompts(path):
    """The prompts of an input file; any problem is reported with file and line before a model is loaded."""
    try:
        return read_input_lines(path, "prompt", "build the prompt files with `make data`, or write one prompt "
                                               "per line there")
    except FormatError as e:
        raise UserError(str(e)) from None


def use_qwen1_tokenizer(loaded, args, prompts, input_path, first):
    """A converted Qwen v1 (pim/models/qwen1.py): its exact tokenizer, and prompts that fit v1's seq_length."""
    from pim.models.qwen1 import PromptTooLong, check_prompt_lengths, load_tokenizer

    loaded.tokenizer = load_tokenizer(loaded.model.name_or_path)
    wrap = Generator(loaded, args).wrap
    try:  # interactive prompts are not checked
        check_prompt_lengths(loaded.config, [len(loaded.tokenizer(wrap(p), add_special_tokens=not args.chat_template)
                                                 ["input_ids"]) for p in prompts or []],
                             args.max_new_tokens, input_path, first_line=first + 1)
    except PromptTooLong as e:
        raise UserError(str(e)) from None


def run_manifest(args, loaded, input_path, prompts, shard=None, prompt_range=None, total=None):
    """(settings, info) of the run's manifest, all of it: the settings must be equal to resume a run;
    info says what else the run was made with. prompts: the prompts of this process (None: interactive)."""
    import torch

    config, model = loaded.config, loaded.model
    interactive = prompts is None
    settings = {**model_settings(loaded, args.max_memory),  # a run resumes only with all of these unchanged
                "max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample,
                "temperature": args.temperature if args.do_sample else None, "seed": args.seed,
                "sys_template": args.sys_template if loaded.use_sys else None, "chat_template": args.chat_template,
                "input": "stdin" if interactive else str(input_path),
                "input_sha256": None if interactive else hashlib.sha256(input_path.read_bytes()).hexdigest()}
    info = {"model": run_name(args.model, getattr(args, "deactivate", None)), "found_as": loaded.found,
            "torch": torch.__version__,
            "attach": loaded.attach,
            "devices": {k: str(v) for k, v in getattr(model, "hf_device_map", {"": model.device}).items()},
            "layers": config.num_hidden_layers, "width": mlp_shape(config)[1],
            "generation_config": model.generation_config.to_diff_dict(),
            "model_argument": args.model, "file": args.file, "prompts": None if interactive else len(prompts),
            "batch_size": args.batch_size, "sorted": bool(args.sort and not interactive),
            "command": shlex.join([sys.executable] + sys.argv)}
    if args.truncate:  # only when on, so that runs made before the flag existed still resume
        settings["truncate"] = "left"
    if shard:
        settings["shard"] = list(shard)
        info.update(shard=list(shard), prompt_range=list(prompt_range), prompts_total=total)
    return settings, info


class Generator:
    """Generates one batch with recording on and returns what the run files need."""

    def __init__(self, loaded, args):
        self.model, self.tokenizer, self.args, self.use_sys = loaded.model, loaded.tokenizer, args, loaded.use_sys
        eos = self.model.generation_config.eos_token_id
        self.eos = set([eos] if isinstance(eos, int) else (eos or []))

    def wrap(self, prompt):
        if self.args.chat_template:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return self.args.sys_template.replace("<|custom|>", prompt) if self.use_sys else prompt

    def encode(self, prompts):
        """The token ids of each prompt, wrapped as it is generated from."""
        return self.tokenizer([self.wrap(p) for p in prompts],
                              add_special_tokens=not self.args.chat_template)["input_ids"]

    def __call__(self, ids, seed):
        """Generate for a batch of token id lists; (texts, ratio text, index counts, counted steps per prompt)."""
        import torch

        enc = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding=True).to(self.model.device)
        sampling = {"do_sample": True, "temperature": self.args.temperature} if self.args.do_sample else \
            {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        torch.manual_seed(seed)
        with injected_oom(self.model, len(ids), min(2, self.args.max_new_tokens)):
            out = self.model.generate(**enc, max_new_tokens=self.args.max_new_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id, **sampling)
        stats = self.model.activation_recorder.take()
        new = out[:, enc.input_ids.shape[1]:].cpu().tolist()
        steps = stats.steps.tolist()
        for b, row in enumerate(new):
            ends = [i for i, t in enumerate(row) if t in self.eos]
            if steps[b] != (ends[0] + 1 if ends else len(row)):
                raise RuntimeError(f"the recorder counted {steps[b]} steps for prompt {b} of the batch, the tokens "
                                   "say otherwise: a bug, please report it with the manifest")
        texts = [self.tokenizer.decode(row[:n], skip_special_tokens=True) for row, n in zip(new, steps)]
        return texts, ratio_lines(stats.zero_counts, stats.width), stats.active_counts.numpy(), steps


def model_max_length(config, tokenizer):
    """Tokens a sequence may have: the config's position limit, or the tokenizer's when smaller and sane;
    None where neither says (BLOOM's ALiBi has no limit)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    limits = [getattr(text, k, None) for k in ("max_position_embeddings", "n_positions", "seq_length")]
    limits.append(getattr(tokenizer, "model_max_length", None))
    limits = [n for n in limits if isinstance(n, int) and 0 < n < 10_000_000]
    return min(limits) if limits else None


def check_lengths(ids, limit, max_new_tokens, path, first_line, truncate):
    """Prompts (token ids) that, with max_new_tokens, exceed the model's limit: an error naming file:line, or
    with truncate cut from the left, keeping their end. Returns the ids and the lines cut."""
    if limit is None:
        return ids, []
    room = limit - max_new_tokens
    if room < 1:
        raise UserError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt: the model takes at most "
                        f"{limit} tokens")
    too_long = [i for i, x in enumerate(ids) if len(x) > room]
    if not too_long:
        return ids, []
    if not truncate:
        i = too_long[0]
        more = f" (and {len(too_long) - 1} more lines)" if len(too_long) > 1 else ""
        raise UserError(f"{path}:{first_line + i}: {len(ids[i])} prompt tokens + {max_new_tokens} max_new_tokens > "
                        f"{limit}, the model's maximum length{more}: shorten it, lower --max-new-tokens, or pass "
                        "--truncate to cut such prompts from the left (keeping their end)")
    cut = [x[len(x) - room:] if len(x) > room else x for x in ids]
    print(f"note: --truncate: cut {len(too_long)} prompts from the left to {room} tokens (first: "
          f"{path}:{first_line + too_long[0]})", file=sys.stderr)
    return cut, [first_line + i for i in too_long]


def run_name(model, deactivate=None):
    """The <MODEL> part of the file names: the alias or folder name, the last part of a hub id or path;
    with --deactivate, plus -off-<LANG> (pim/deactivation.run_suffix)."""
    return run_model_name(model) + run_suffix(deactivate)


def check_args(args):
    """User errors in the arguments that argparse does not see; before anything is read or written."""
    check_names(args.file, run_name(args.model, args.deactivate), args.results_dir, args.data_dir)
    if args.do_sample and not args.temperature > 0:
        raise UserError(f"--temperature {args.temperature}: sampling needs a temperature > 0 "
                        "(greedy decoding: leave out --do-sample)")


def load_for_generation(args):
    """The Loaded model (pim/models/loading.py) with `use_sys` (the prompts are wrapped in --sys-template);
    sets args.chat_template where it was left to the alias (None)."""
    loaded = load_model(args)
    if args.chat_template is None:
        args.chat_template = loaded.prompt_format == TEMPLATE
    if args.chat_template and not getattr(loaded.tokenizer, "chat_template", None):
        raise UserError(f"model {args.model!r}: its tokenizer has no chat template, so --chat-template cannot be "
                        "used; leave it out (or --sys-prompt on for the paper's template)")
    loaded.use_sys = (args.sys_prompt == "on" or (args.sys_prompt == "auto" and loaded.prompt_format == CHATML)) \
        and not args.chat_template
    return loaded


def run(args):
    check_args(args)
    interactive = args.interactive
    input_path = Path(args.data_dir) / f"{args.file}.txt"
    prompts = None if interactive else read_prompts(input_path)
    state = launched()
    shard = process_shard(args.shard, state, interactive)
    name, results_dir, first, total = run_name(args.model, args.deactivate), Path(args.results_dir), 0, None
    refuse_finished_merge(state, results_dir, args.file, name, args.overwrite)
    if shard:
        if shard[1] > len(prompts):
            raise UserError(f"{shard[1]} shards for {len(prompts)} prompts: use at most one shard per prompt")
        check_split(results_dir, args.file, name, shard, args.overwrite, state)
        first, last = shard_range(len(prompts), *shard)
        total, prompts = len(prompts), prompts[first:last]
        name, results_dir = shard_model_name(name, *shard), shard_dir(args.results_dir)
    if kept_shard(state, results_dir, args.file, name, args.overwrite):
        return merge_launch(state, args, shard[1])
    refuse_finished(results_dir, args.file, name, args.overwrite)
    with RunLock(results_dir, args.file, name):
        loaded = load_for_generation(args)
        if getattr(loaded.config, "qwen1", None):
            use_qwen1_tokenizer(loaded, args, prompts, input_path, first)
        generate = Generator(loaded, args)
        ids = None
        if not interactive:
            ids, _ = check_lengths(generate.encode(prompts), model_max_length(loaded.config, loaded.tokenizer),
                                   args.max_new_tokens, input_path, first + 1, args.truncate)
        settings, info = run_manifest(args, loaded, input_path, prompts, shard, (first, first + len(prompts or ())),
                                      total)
        writer = RunWriter(results_dir, args.file, name, settings, overwrite=args.overwrite)
        try:
            if interactive:
                finished = run_interactive(generate, writer, info, args)
            else:
                run_file(generate, writer, ids, writer.open(info), first, args)
                finished = True
            if finished:
                writer.finish()
        except BaseException:
            writer.abandon()
            raise
    if not finished:
        return
    print(f"{writer.done} prompts, {writer.steps} counted steps: " +
          ", ".join(str(writer.paths[k]) for k in ("result", "ratio", "index", "manifest")), file=sys.stderr)
    if state:
        merge_launch(state, args, shard[1])


def merge_launch(state, args, count):
    """Launched with several processes: when all are done, rank 0 merges their shards."""
    name = run_name(args.model, args.deactivate)
    merge_ranks(state, args.results_dir, args.file, name, lambda: merge_shards(
        args.results_dir, args.file, name, overwrite=args.overwrite, command=shlex.join([sys.executable] + sys.argv)),
        count)


def plan_batches(lengths, batch_size, sort, window):
    """The generate calls of a run: lists of prompt indices. In input order, or with `sort` longest first
    within windows of `window` prompts (in input order), so that a batch holds prompts of similar length."""
    order = range(len(lengths))
    if not sort:
        return [list(order[i:i + batch_size]) for i in range(0, len(lengths), batch_size)]
    batches = []
    for start in range(0, len(lengths), window):
        chunk = sorted(order[start:start + window], key=lambda i: (-lengths[i], i))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return batches


def split_records(batch, texts, ratio_text, steps):
    """(prompt index, result line, ratio rows, steps) per prompt of a batch; its ratio rows are in batch order."""
    rows = ratio_text.splitlines(keepends=True)
    records, at = [], 0
    for index, text, n in zip(batch, texts, steps):
        records.append((index, escape_newlines(text), "".join(rows[at:at + n]), n))
        at += n
    return records


def run_file(generate, writer, ids, done, offset, args):
    from tqdm import tqdm

    if done:
        print(f"resuming {writer.paths['manifest']}: {done} of {len(ids)} prompts are done", file=sys.stderr)
    completed = writer.completed
    plan = plan_batches([len(x) for x in ids], args.batch_size, args.sort, args.batch_size * args.sort_window)
    todo = (b for b in ([i for i in batch if i not in completed] for batch in plan) if b)
    tokens, start = 0, time.perf_counter()
    desc = f"{args.file} [shard {writer.settings['shard'][0]}/{writer.settings['shard'][1]}]" \
        if "shard" in writer.settings else args.file

    def halved(old, new, e):
        print(f"note: out of memory with a batch of {old} prompts ({one_line(e)}): going on with batches of {new}",
              file=sys.stderr)
        writer.note("batch_size_changes", {"from": old, "to": new, "why": "out of memory"})
        writer.manifest["batch_size"] = new

    def step(batch):
        return generate([ids[i] for i in batch], args.seed + offset + min(batch))

    with tqdm(total=len(ids), initial=done, unit="prompt", desc=desc, dynamic_ncols=True) as bar:
        for batch, (texts, ratio_text, counts, steps) in halving_batches(todo, args.batch_size, step, halved):
            writer.commit_prompts(split_records(batch, texts, ratio_text, steps), counts)
            tokens += sum(steps)
            bar.set_postfix(tok_s=f"{tokens / (time.perf_counter() - start):.1f}")
            bar.update(len(texts))


def run_interactive(generate, writer, info, args):
    """Prompts from standard input; the run's files are made with the first prompt. Returns whether any
    prompt was recorded."""
    print("type a prompt per line (a literal \\n is a newline); Ctrl-D ends and writes the index file",
          file=sys.stderr)
    opened = False
    for line in lines_of(sys.stdin):
        prompt = unescape_newlines(line.rstrip("\n")).strip()
        if not prompt:
            continue
        if not opened:
            writer.open(info)
            opened = True
        index = len(writer.completed)
        texts, ratio_text, counts, steps = generate(generate.encode([prompt]), args.seed + index)
        print(texts[0], flush=True)
        writer.commit_prompts(split_records([index], texts, ratio_text, steps), counts)
    if not opened:
        print("no prompt was given: nothing written", file=sys.stderr)
    return opened


def lines_of(stream):
    """The lines of a text stream (standard input: its bytes, line by line, as UTF-8); bad UTF-8 is a
    UserError naming the line."""
    binary = getattr(stream, "buffer", None)
    for number, line in enumerate(iter(binary.readline if binary else stream.readline, b"" if binary else ""), 1):
        if binary:
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"standard input, line {number}: not UTF-8 ({e.reason}); type or pipe UTF-8 text "
                                "(what was committed before stays)") from None
        yield line
