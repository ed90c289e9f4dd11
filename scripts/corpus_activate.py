"""Count, over a text corpus, which MLP neurons fire at every token (teacher-forced, no generation): for LAPE.

    make corpus FILE=corpus-fra MODEL=bloom-7b1
    python scripts/corpus_activate.py --file corpus-deu corpus-fra --model tiny-bloom --max-length 256
    python scripts/corpus_activate.py --file corpus-deu --model bloom-7b1 --deactivate results/neurons/bloom-7b1-language-neurons.json:deu

Each line of data/<FILE>.txt (one text per line, a literal \\n is a newline) is tokenized, cut to its first
--max-length tokens, and run through the model in left-padded batches; every non-pad position of every
text counts (the recorder's positions="all"), so the counts do not depend on the batch size (exactly
for BLOOM; see docs/measures.md for the last bits of gated MLPs under padding). Writes
results/<FILE>-index-<MODEL>.jsonl (per neuron the counted tokens with activation > 0, the inference
format) and results/<FILE>-manifest-<MODEL>.json (kind "corpus", positions "all", tokens, lines, cut
lines, max length, model, dtype, deactivated neurons). No result or ratio file. Committed batch by
batch: a killed run resumes with the same command; a finished one is redone only with --overwrite.
With --deactivate the MODEL part of the names is <MODEL>-off-<lang> (or -off-all).
"""
import shlex
import sys
import time
from pathlib import Path

# Defaults; every one has a flag (--help).
MODEL = "tiny-bloom"  # a folder models/<MODEL>/, an alias (README), or a hub id or path
FILES = ["sample-corpus-deu"]  # reads <DATA_DIR>/<FILE>.txt, one text per line; several FILEs share one model load
DATA_DIR = "data"  # where <FILE>.txt lives
RESULTS_DIR = "results"  # where the run's files go
MAX_LENGTH = 512  # tokens per text at most (special tokens included); longer texts are cut, and counted as cut
BATCH_SIZE = 8  # texts per forward call, left-padded
DTYPE = "auto"  # auto: bfloat16 on a GPU, float32 on the CPU
ATTACH = "auto"  # how the recorder attaches: patch, hooks, auto (patch where there is one)
DEACTIVATE = None  # FILE.json[:LANG]: switch off these language-specific neurons (pim/deactivation.py)
OVERWRITE = False  # redo a finished run

from pim import cli
from pim.corpus_runs import CorpusWriter
from pim.deactivation import mlp_shape, run_suffix
from pim.models import run_model_name
from pim.run_writer import RunRefused
from pim.teacher_forcing import encode, left_padded, load, read_texts


def build_parser():
    p = cli.argument_parser(__doc__)
    p.add_argument("--model", default=MODEL, help=f"folder models/<MODEL>/, alias, or hub id/path (default {MODEL})")
    p.add_argument("--file", nargs="+", default=FILES, metavar="FILE",
                   help=f"input {DATA_DIR}/<FILE>.txt, one or more (default {' '.join(FILES)})")
    p.add_argument("--data-dir", default=DATA_DIR, help=f"folder of the input files (default {DATA_DIR})")
    p.add_argument("--results-dir", default=RESULTS_DIR, help=f"folder of the output files (default {RESULTS_DIR})")
    p.add_argument("--max-length", type=cli.positive_int, default=MAX_LENGTH,
                   help=f"tokens per text at most; longer texts are cut (default {MAX_LENGTH})")
    p.add_argument("--batch-size", type=cli.positive_int, default=BATCH_SIZE, help=f"texts per forward call (default {BATCH_SIZE})")
    p.add_argument("--dtype", default=DTYPE, choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--attach", default=ATTACH, choices=["auto", "patch", "hooks"], help="how the recorder attaches")
    p.add_argument("--deactivate", default=DEACTIVATE, metavar="FILE.json[:LANG]",
                   help="switch off the neurons of a language-neurons file (all languages, or LANG's); the MODEL "
                        "part of the names gets -off-<LANG> (or -off-all)")
    p.add_argument("--overwrite", default=OVERWRITE, action="store_true", help="redo a finished run")
    return p


def run(args):
    import hashlib

    import torch
    from tqdm import tqdm

    inputs = {f: Path(args.data_dir) / f"{f}.txt" for f in args.file}
    texts = {f: read_texts(p) for f, p in inputs.items()}  # every input is checked before a model is loaded
    loaded = load(args.model, args.dtype, args.attach, args.deactivate, positions="all")
    model, tokenizer = loaded.model, loaded.tokenizer
    name = run_model_name(args.model) + run_suffix(args.deactivate)
    recorder = model.activation_recorder
    for file, path in inputs.items():
        rows, cut = encode(tokenizer, texts[file], args.max_length)
        settings = {**loaded.settings(), "positions": "all", "max_length": args.max_length, "input": str(path),
                    "input_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        info = {"model": name, "model_argument": args.model, "file": file, "lines": len(rows), "cut_lines": cut,
                "max_length": args.max_length, "dtype": loaded.dtype, "deactivated": loaded.deactivate_info,
                "batch_size": args.batch_size, "layers": loaded.config.get_text_config().num_hidden_layers,
                "width": mlp_shape(loaded.config)[1],
                "torch": torch.__version__, "command": shlex.join([sys.executable] + sys.argv)}
        writer = CorpusWriter(args.results_dir, file, name, settings, overwrite=args.overwrite)
        done = writer.open(info)
        if done:
            print(f"resuming {writer.paths['manifest']}: {done} of {len(rows)} texts are done", file=sys.stderr)
        start = time.perf_counter()
        with tqdm(total=len(rows), initial=done, unit="text", desc=file, dynamic_ncols=True) as bar:
            for first in range(done, len(rows), args.batch_size):
                batch = rows[first:first + args.batch_size]
                ids, mask = left_padded(batch, tokenizer.pad_token_id, model.device)
                with torch.no_grad():
                    model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
                stats = recorder.take()
                writer.commit(len(batch), stats.tokens, stats.active_counts.numpy())
                bar.set_postfix(tok_s=f"{(writer.tokens) / (time.perf_counter() - start):.0f}")
                bar.update(len(batch))
        writer.finish()
        print(f"{file}: {writer.done} texts ({cut} cut to {args.max_length} tokens), {writer.tokens} counted tokens: "
              f"{writer.paths['index']}, {writer.paths['manifest']}", file=sys.stderr)


@cli.user_errors("corpus_activate.py")
def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except RunRefused as e:
        raise cli.UserError(str(e)) from None


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: the batches committed so far stay, and the same command resumes after them
        sys.exit("\ninterrupted: the batches committed so far are kept; start the same command again to resume")
