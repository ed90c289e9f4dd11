"""Build the demo's tiny smoke models: random init with a fixed seed, a tokenizer trained on the demo prompts.

    python scripts/build_demo_models.py            # models/tiny-bloom, models/tiny-qwen2

They are not language models in any useful sense: their continuations are noise. They exist so that the
whole pipeline (patched transformers, recorder, inference, files, plots) runs on a laptop without a
download. Real models: `make infer MODEL=bloom-7b1` etc. (README).
"""
import argparse
import sys
from pathlib import Path

from pim.activation_files import unescape_newlines
from pim.models.architectures import tiny_types
from pim.models.tiny import build_tiny_model

ARCHS = ["bloom", "qwen2"]  # one model per architecture: models/tiny-<arch>
OUT_DIR = "models"  # where the model folders go
TRAIN_FILES = ["data/sample-deu2eng.txt", "data/sample-GPT4-deu_spa_rus_fra2eng.txt"]  # tokenizer corpus
SEED = 0  # torch seed of the random init
LAYERS = 4  # transformer layers
HIDDEN = 128  # hidden size
INTERMEDIATE = 344  # MLP width of the gated architectures (Qwen2, Llama, ...); BLOOM's is 4 x HIDDEN
OVERWRITE = False  # rebuild models that exist

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=ARCHS, choices=tiny_types(),
                   help="architectures (pim/models/architectures.py)")
    p.add_argument("--out-dir", default=OUT_DIR, help="folder for models/tiny-<arch>")
    p.add_argument("--train-files", nargs="+", default=TRAIN_FILES, help="prompt files to train the tokenizer on")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the random init")
    p.add_argument("--layers", type=int, default=LAYERS, help="transformer layers")
    p.add_argument("--hidden", type=int, default=HIDDEN, help="hidden size")
    p.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=OVERWRITE, help="rebuild")
    args = p.parse_args(argv)
    texts = []
    for name in args.train_files:
        path = ROOT / name if not Path(name).is_absolute() else Path(name)
        if not path.is_file():
            sys.exit(f"error: {path}: no such file (the tokenizer is trained on the demo prompts)")
        texts += [unescape_newlines(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for arch in args.archs:
        folder = Path(args.out_dir) / f"tiny-{arch}"
        if folder.is_dir() and not args.overwrite:
            print(f"{folder} exists (--overwrite rebuilds it)")
            continue
        sizes = dict(n_layer=args.layers, hidden_size=args.hidden) if arch == "bloom" else \
            dict(num_hidden_layers=args.layers, hidden_size=args.hidden, intermediate_size=INTERMEDIATE)
        build_tiny_model(arch, folder, texts, seed=args.seed, exact_zeros=False, **sizes)
        print(f"built {folder} (random init, seed {args.seed}: a smoke model, its output is noise)")


if __name__ == "__main__":
    main()
