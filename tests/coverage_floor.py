#!/usr/bin/env python
"""Check that each module named keeps its coverage at the floor (`make coverage`, docs/testing.md).

Reads coverage.py's JSON report (`coverage json`, written by `make coverage`) and prints per module its
statements and branch directions (a line that can go two ways has two), how many of each the tests never took,
and the shares taken. A module fails if the share of its statements run or of its branch directions taken is
below the floor, or if it has no data at all (renamed or moved: update COVERAGE_MODULES in the Makefile); the
exit status is then 1. Not a test (pytest does not collect it): the Makefile's COVERAGE_MODULES and
COVERAGE_FLOOR are the one place that names the modules and the floor.

    .venv/bin/python tests/coverage_floor.py results/coverage/coverage.json --floor 95 pim/stats/lape.py ...
    .venv/bin/python tests/coverage_floor.py results/coverage/coverage.json --markdown pim/stats/lape.py ...
"""
import argparse
import json
import sys
from pathlib import Path

FLOOR = 95.0  # percent of statements, and of branch directions, of each module (the Makefile passes its own)
HEADER = ["module", "statements", "not run", "branches", "not taken", "statements %", "branches %"]


def rows(report, modules):
    """[(module, the file's entry of the report or None)] in the order given."""
    files = {Path(name).as_posix(): data for name, data in report["files"].items()}
    return [(module, files.get(Path(module).as_posix())) for module in modules]


def shares(data):
    """(statements %, branch directions %) of a file's entry; 100 where it has none."""
    s = data["summary"]
    return (100.0 * s["covered_lines"] / s["num_statements"] if s["num_statements"] else 100.0,
            100.0 * s["covered_branches"] / s["num_branches"] if s["num_branches"] else 100.0)


def cells(module, data):
    if data is None:
        return [module, "no data", "", "", "", "", ""]
    s = data["summary"]
    lines, branches = shares(data)
    return [module, s["num_statements"], s["missing_lines"], s["num_branches"], s["missing_branches"],
            f"{lines:.1f}", f"{branches:.1f}"]


def table(found, markdown=False):
    body = [HEADER] + [cells(m, d) for m, d in found]
    if markdown:
        return "\n".join(["| " + " | ".join(map(str, body[0])) + " |", "|" + "---|" * len(HEADER)]
                         + ["| " + " | ".join(map(str, c)) + " |" for c in body[1:]])
    widths = [max(len(str(c[i])) for c in body) for i in range(len(HEADER))]
    return "\n".join("  ".join(str(c[i]).ljust(widths[i]) if i == 0 else str(c[i]).rjust(widths[i])
                               for i in range(len(HEADER))) for c in body)


def spans(data):
    """The statements not run as 'a-b' spans of consecutive statements ('57-65, 70')."""
    statements = sorted(data["executed_lines"] + data["missing_lines"])
    missing, out = set(data["missing_lines"]), []
    for i, line in enumerate(statements):
        if line in missing:
            if out and statements[i - 1] in missing:
                out[-1][1] = line
            else:
                out.append([line, line])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def problems(found, floor):
    """One line per module below the floor, naming what the tests never took."""
    out = []
    for module, data in found:
        if data is None:
            out.append(f"{module}: no data (renamed or moved? update COVERAGE_MODULES in the Makefile)")
            continue
        lines, branches = shares(data)
        if lines < floor or branches < floor:
            arcs = [f"{a}->{'exit' if b < 0 else b}" for a, b in data["missing_branches"]]
            out.append(f"{module}: statements {lines:.1f}%, branches {branches:.1f}% (floor {floor:g}%); "
                       f"lines not run: {spans(data) or 'none'}; branches not taken: {', '.join(arcs) or 'none'}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("report", help="coverage.py's JSON report (coverage json -o ...)")
    p.add_argument("modules", nargs="+", help="the modules held to the floor, paths from the repository root")
    p.add_argument("--floor", type=float, default=FLOOR, help=f"the least share, in percent (default {FLOOR:g})")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown (for docs/testing.md)")
    args = p.parse_args(argv)
    try:
        report = json.loads(Path(args.report).read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"coverage_floor.py: error: {args.report}: not a JSON report of coverage.py ({e}); run make coverage")
    found = rows(report, args.modules)
    print(table(found, args.markdown))
    low = problems(found, args.floor)
    if low:
        sys.exit(f"coverage_floor.py: {len(low)} of {len(found)} modules below the floor:\n  " + "\n  ".join(low))
    print(f"coverage_floor.py: all {len(found)} modules at {args.floor:g}% or more of their statements and branches")


if __name__ == "__main__":
    main()
