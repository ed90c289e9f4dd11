"""Convert a downloaded Qwen v1 folder (Qwen/Qwen-7B, -14B, -72B, -Chat) to a Qwen2 model in models/<NAME>/.

    hf download Qwen/Qwen-7B --local-dir ~/hf/Qwen-7B
    make convert-qwen1 SRC=~/hf/Qwen-7B NAME=qwen-7b
    python scripts/convert_qwen1.py --src ~/hf/Qwen-7B --name qwen-7b
    make infer FILE=wmt22-deu2eng MODEL=qwen-7b

Qwen v1's remote code does not run on transformers 5.x; its weights map exactly onto Qwen2ForCausalLM,
which the patched transformers records (pim/models/qwen1.py says how). Shard by shard: memory stays at about two
shards. The output is exact up to the model's seq_length (prompt + new tokens; inference refuses more when
use_logn_attn / use_dynamic_ntk are on). Writes config.json (with a `qwen1` block), generation_config.json,
tokenizer.json, the converted shards with their index, and conversion.json (source sha256s and flags).
"""
import sys
from pathlib import Path

from pim.models.converter_cli import converter_parser, output_folder
from pim.models.qwen1 import ConversionError, convert

SRC = None  # the downloaded Qwen v1 folder (config.json, qwen.tiktoken, model-*.safetensors + index json)
NAME = None  # the output goes to <OUT_DIR>/<NAME>/; default: the source folder's name, lowercased
OUT_DIR = "models"  # where converted models go (make infer MODEL=<NAME> looks there)
OVERWRITE = False  # replace an existing <OUT_DIR>/<NAME>/


def main(argv=None):
    p = converter_parser(__doc__, SRC, NAME, OUT_DIR, OVERWRITE, "downloaded Qwen v1 folder",
                         "the source folder's name, lowercased")
    args = p.parse_args(argv)
    src = Path(args.src).expanduser()
    dest = output_folder(p, args, src.resolve().name.lower(), "qwen-7b")
    from tqdm import tqdm

    try:
        info = convert(src, dest, overwrite=args.overwrite,
                       progress=lambda shards, n: tqdm(shards, total=n, unit="shard", desc=f"converting {src.name}"))
    except ConversionError as e:
        sys.exit(f"error: {e}")
    logn = [k for k in ("use_logn_attn", "use_dynamic_ntk") if info[k]]
    print(f"wrote {dest} (Qwen2, rope theta {info['rotary_emb_base']}); exact up to seq_length "
          f"{info['seq_length']} tokens" + (f" ({', '.join(logn)} on: longer runs are refused)" if logn else ""))


if __name__ == "__main__":
    main()
