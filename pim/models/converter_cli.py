"""The command line that the converter scripts share (scripts/convert_gguf.py, scripts/convert_qwen1.py):
the source, the output folder <--out-dir>/<--name>/, and --overwrite."""
import argparse
from pathlib import Path

from pim.cli import argument_parser


def converter_parser(doc, src, name, out_dir, overwrite, src_help, name_help):
    """The parser of a converter script, its defaults the script's constants."""
    p = argument_parser(doc)
    p.add_argument("--src", default=src, required=src is None, help=src_help)
    p.add_argument("--name", default=name, help=f"output folder name under --out-dir (default: {name_help})")
    p.add_argument("--out-dir", default=out_dir, help=f"where the model folder goes (default {out_dir})")
    p.add_argument("--overwrite", default=overwrite, action=argparse.BooleanOptionalAction,
                   help="replace an existing output folder (after the new one is complete)")
    return p


def output_folder(p, args, default_name, example):
    """<--out-dir>/<name>/, the name given or the default; a name that is not a plain folder name is a usage error."""
    name = args.name or default_name
    if not name or "/" in name or name.startswith("."):
        p.error(f"--name {name!r}: a plain folder name, e.g. {example}")
    return Path(args.out_dir) / name
