"""`accelerate launch` for the run scripts (make infer / make corpus with NPROC > 1), with one line per error.

    python -m pim.runs.launch --multi_gpu --num_processes 4 scripts/corpus_activate.py --file corpus-deu ...

The processes report a user error (pim.cli.fail) into a folder named by PIM_RANK_ERRORS instead of
printing it, so that when they fail, this launcher prints each distinct message once (naming the ranks
when not all of them had it) and exits 1, instead of one line per rank and accelerate's traceback.
"""
import logging
import os
import sys
import tempfile
from pathlib import Path

ERRORS_VARIABLE = "PIM_RANK_ERRORS"  # the folder where failing ranks leave their message


def main(argv=None):
    from accelerate.commands.launch import launch_command, launch_command_parser

    args = launch_command_parser().parse_args(argv)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its "failed (exitcode: 1)" lines
    with tempfile.TemporaryDirectory(prefix="pim-launch-") as folder:
        os.environ[ERRORS_VARIABLE] = folder
        try:
            launch_command(args)
        except Exception as e:  # noqa: BLE001 -- a failed process: torch's ChildFailedError, CalledProcessError
            sys.exit(summary(Path(folder), args.num_processes, e))


def summary(folder, processes, error):
    """The lines to print for failed processes: each rank's message once, or what the launcher says."""
    by_message = {}
    for path in sorted(folder.glob("rank*")):
        by_message.setdefault(path.read_text(encoding="utf-8").strip(), []).append(int(path.name[4:]))
    if not by_message:
        text = " ".join(str(error).split())
        return f"error: a launched process failed ({text[:300]}); its messages are above"
    lines = []
    for message, ranks in by_message.items():
        if processes and len(ranks) < processes:
            message += f" (rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, sorted(ranks)))})"
        lines.append(message)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
