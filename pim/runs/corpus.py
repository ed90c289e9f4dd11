"""A corpus run from start to end (scripts/corpus_activate.py is its command line): check the inputs, load the
model once, and for each FILE count, window by window, which neurons fire at every token of its texts.

The input is read as it is processed (pim/runs/corpus_input.py). Within a window of `sort_window` lines the
texts are batched longest first when `sort` is on (less padding; the counts are those of file order up
to float rounding), and each batch is committed (pim/corpus_runs.CorpusWriter) before the next. Shards
(--shard i/n, or one per process under accelerate launch) are contiguous runs of whole windows, so that
a shard's batches are exactly those of one process over the same lines and merged shards give its
bytes; with --max-tokens they split the file's prefix that holds the budget, found by tokenizing it
first, so that shards and one process count the same texts.
"""
import shlex
import sys
import time
from dataclasses import dataclass

from pim.cli import UserError
from pim.models.deactivation import mlp_shape, run_suffix
from pim.models.loading import load_model, model_settings
from pim.models.names import run_model_name
from pim.runs.corpus_files import CorpusWriter
from pim.runs.corpus_input import find_corpus, scan, token_windows
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
from pim.runs.merge import merge_corpus_shards
from pim.runs.shards import shard_dir, shard_model_name, shard_range
from pim.runs.teacher_forcing import left_padded


def run_corpora(args):
    """Every FILE of args.file with one model load; refusals before the model is loaded where possible."""
    name = run_model_name(args.model) + run_suffix(args.deactivate)
    for file in args.file:
        check_names(file, name, args.results_dir, args.data_dir)
    scans = {file: scan(find_corpus(args.data_dir, file)) for file in args.file}  # every input checked first
    state = launched()
    shard = process_shard(args.shard, state)
    todo = []  # the files this process counts (under a launch, a rank's finished shard is kept)
    for file in args.file:
        refuse_finished_merge(state, args.results_dir, file, name, args.overwrite)
        if shard:
            check_split(args.results_dir, file, name, shard, args.overwrite, state, done_key="lines_done")
        folder, model = (shard_dir(args.results_dir), shard_model_name(name, *shard)) if shard else \
            (args.results_dir, name)
        if not kept_shard(state, folder, file, model, args.overwrite, kind="corpus"):
            refuse_finished(folder, file, model, args.overwrite, kind="corpus")
            todo.append(file)
    loaded = load_model(args, positions="all") if todo else None
    for file in args.file:
        if file in todo:
            count_file(args, loaded, name, file, scans[file], shard)
        if state:
            merge_ranks(state, args.results_dir, file, name, lambda: merge_corpus_shards(
                args.results_dir, file, name, overwrite=args.overwrite, command=command()), shard[1])


def command():
    return shlex.join([sys.executable] + sys.argv)


def budget_end(loaded, path, lines, args):
    """The line after the last text a --max-tokens run counts (file order), found by tokenizing the prefix."""
    end = lines
    for window in token_windows(path, loaded.tokenizer, args.max_length, 0, lines, args.sort_window,
                                budget=args.max_tokens):
        end = window.end
    return end


@dataclass
class Plan:
    """The lines one process counts, and the names of its files."""
    first: int
    last: int  # exclusive
    total: int  # the lines that all shards together cover, [0, total)
    budget: int | None  # --max-tokens where this process applies it (one process; shards get their range)
    name: str
    results_dir: str


def plan_file(args, loaded, name, found, shard):
    total, budget = found.lines, args.max_tokens
    if shard and budget is not None:  # shards split the prefix that one process would count
        print(f"--max-tokens with shards: finding where {budget} tokens end in {found.path}", file=sys.stderr)
        total, budget = budget_end(loaded, found.path, found.lines, args), None
    if not shard:
        return Plan(0, total, total, budget, name, args.results_dir)
    window = args.sort_window  # shards are whole windows: they count in the batches of one process
    windows = -(-total // window)
    if shard[1] > windows:
        raise UserError(f"{shard[1]} shards for {total} lines of {found.path}, {windows} window(s) of --sort-window "
                        f"{window} lines: shards are whole windows (so that they count in exactly the batches of one "
                        f"process); use at most {windows} shards or a smaller --sort-window")
    first, last = (min(total, w * window) for w in shard_range(windows, *shard))
    return Plan(first, last, total, None, shard_model_name(name, *shard), str(shard_dir(args.results_dir)))


def run_facts(args, loaded, file, found, shard, plan):
    """(settings, info) of a corpus run's manifest: a run resumes, and shards merge, only with equal settings."""
    import torch

    settings = {**model_settings(loaded, args.max_memory), "positions": "all", "max_length": args.max_length,
                "input": str(found.path), "input_sha256": found.sha256, "max_tokens": args.max_tokens,
                # the lines of a window are committed in any order: a resume skips them by its window
                "sort_window": args.sort_window}
    info = {"model": run_model_name(args.model) + run_suffix(args.deactivate), "model_argument": args.model,
            "file": file, "dtype": settings["dtype"], "max_length": args.max_length,
            "deactivated": loaded.deactivate_info, "batch_size": args.batch_size, "sorted": args.sort,
            "sort_window": args.sort_window, "layers": loaded.config.get_text_config().num_hidden_layers,
            "width": mlp_shape(loaded.config)[1], "attach": loaded.attach, "torch": torch.__version__,
            "devices": {k: str(v) for k, v in getattr(loaded.model, "hf_device_map", {"": loaded.model.device}).items()},
            "input_lines": found.lines, "command": command()}
    if shard:
        settings["shard"] = list(shard)
        info.update(shard=list(shard), line_range=[plan.first, plan.last], lines_total=plan.total)
    return settings, info


def count_file(args, loaded, name, file, found, shard):
    plan = plan_file(args, loaded, name, found, shard)
    settings, info = run_facts(args, loaded, file, found, shard, plan)
    with RunLock(plan.results_dir, file, plan.name, command=command()):
        writer = CorpusWriter(plan.results_dir, file, plan.name, settings, overwrite=args.overwrite)
        try:
            if writer.open(info, plan.first):
                print(f"resuming {writer.final['manifest']}: {writer.texts} texts ({writer.tokens} tokens) are done",
                      file=sys.stderr)
            stopped = count_windows(args, loaded, writer, found, plan)
            writer.finish(**stopped)
        except BaseException:
            writer.abandon()
            raise
    print(f"{file}: {writer.texts} texts ({writer.cut} cut to {args.max_length} tokens), {writer.tokens} counted "
          f"tokens: {writer.paths['index']}, {writer.paths['manifest']}", file=sys.stderr)


def count_windows(args, loaded, writer, found, plan):
    """Count every window from the writer's next line; returns the manifest's facts of where the run stopped."""
    from tqdm import tqdm

    step = Counter(loaded)
    start, before = time.perf_counter(), writer.tokens
    desc = file_desc(found, writer)
    with tqdm(total=plan.last - plan.first, initial=writer.next_line - plan.first, unit="line", desc=desc,
              dynamic_ncols=True) as bar:
        for window in token_windows(found.path, loaded.tokenizer, args.max_length, writer.next_line, plan.last,
                                    args.sort_window, budget=plan.budget, spent=writer.tokens_before):
            todo = [row for row in window.rows if row[0] not in writer.window_done]
            for batch, stats in halving_batches(batches(todo, args.batch_size, args.sort), args.batch_size, step,
                                                lambda old, new, e: halved(writer, old, new, e)):
                writer.commit([row[0] for row in batch], stats.tokens, sum(row[2] for row in batch),
                              stats.active_counts.numpy())
                bar.set_postfix(tok_s=f"{(writer.tokens - before) / (time.perf_counter() - start):.0f}")
                bar.update(len(batch))
            writer.end_window(window.end)
            bar.update(window.end - window.start - len(todo))  # its empty lines, and texts done before a resume
    end, reached = writer.next_line, plan.budget is not None and writer.tokens >= plan.budget
    facts = {"line_range": [plan.first, end], "empty_lines": (end - plan.first) - writer.texts}
    if plan.budget is not None and not reached:
        print(f"note: {found.path} ended after {writer.tokens} tokens, before --max-tokens {plan.budget}",
              file=sys.stderr)
    if plan.budget is not None:
        facts["stopped"] = {"max_tokens": plan.budget, "budget_reached": reached,
                            "last_line": end if reached else None}
    return facts


def file_desc(found, writer):
    shard = writer.settings.get("shard")
    return f"{found.path.name}" + (f" [shard {shard[0]}/{shard[1]}]" if shard else "")


def halved(writer, old, new, e):
    from pim.models.loading import one_line

    print(f"note: out of memory with a batch of {old} texts ({one_line(e)}): going on with batches of {new}",
          file=sys.stderr)
    writer.manifest.setdefault("batch_size_changes", []).append({"from": old, "to": new, "why": "out of memory"})


def batches(rows, batch_size, sort):
    """Batches of a window's rows (line, ids, cut): longest first with `sort` (ties in file order), else in
    file order."""
    if sort:
        rows = sorted(rows, key=lambda r: (-len(r[1]), r[0]))
    return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]


class Counter:
    """One forward pass over a batch with recording on; returns the recorder's stats (tokens, counts)."""

    def __init__(self, loaded):
        self.model, self.pad = loaded.model, loaded.tokenizer.pad_token_id
        self.recorder = loaded.model.activation_recorder

    def __call__(self, batch):
        import torch

        ids, mask = left_padded([row[1] for row in batch], self.pad, self.model.device)
        try:
            with torch.no_grad(), injected_oom(self.model, len(batch)):
                self.model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
        except BaseException:
            self.recorder._abort()  # forget the partial counts of the failed call
            raise
        stats = self.recorder.take()
        expected = sum(len(row[1]) for row in batch)
        if stats.tokens != expected:
            raise RuntimeError(f"the recorder counted {stats.tokens} tokens, the batch has {expected}: a bug, "
                               "please report it with the manifest")
        return stats
