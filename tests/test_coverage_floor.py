"""tests/coverage_floor.py, the floor that `make coverage` (CI) checks: it must fail for a module below the
floor or without data, naming what was never run, and pass otherwise. Reports written here by hand in the
format of coverage.py's `coverage json`."""
import json
import subprocess
import sys

from conftest import ROOT

FLOOR = str(ROOT / "tests" / "coverage_floor.py")


def entry(executed, missing, branches, missing_branches):
    """A file's entry of coverage.py's JSON report."""
    taken = branches - len(missing_branches)
    return {"executed_lines": executed, "missing_lines": missing, "missing_branches": missing_branches,
            "summary": {"covered_lines": len(executed), "num_statements": len(executed) + len(missing),
                        "missing_lines": len(missing), "num_branches": branches, "covered_branches": taken,
                        "missing_branches": len(missing_branches)}}


def check(tmp_path, files, *modules, floor="95"):
    report = tmp_path / "coverage.json"
    report.write_text(json.dumps({"files": files}))
    return subprocess.run([sys.executable, FLOOR, str(report), "--floor", floor, *modules], capture_output=True,
                          text=True, timeout=120)


def test_a_module_below_the_floor_or_without_data_fails_naming_what_was_not_run(tmp_path):
    files = {"pim/a.py": entry(list(range(1, 101)), [], 40, []),  # all run
             # 19 of 20 statements (95.0%), 19 of 20 directions: at the floor
             "pim/b.py": entry(list(range(1, 20)), [30], 20, [[5, 7]]),
             # 94 of 100 statements; lines 95-100 are consecutive statements: one span
             "pim/c.py": entry(list(range(1, 95)), [95, 96, 97, 98, 99, 100], 10, [[3, -1], [8, 12]])}
    ok = check(tmp_path, files, "pim/a.py", "pim/b.py")
    assert ok.returncode == 0 and "all 2 modules at 95% or more" in ok.stdout, ok.stderr
    low = check(tmp_path, files, "pim/a.py", "pim/c.py", "pim/gone.py")
    assert low.returncode == 1 and "2 of 3 modules below the floor" in low.stderr
    assert ("pim/c.py: statements 94.0%, branches 80.0% (floor 95%); lines not run: 95-100; branches not taken: "
            "3->exit, 8->12") in low.stderr
    assert "pim/gone.py: no data (renamed or moved? update COVERAGE_MODULES in the Makefile)" in low.stderr
    assert "pim/a.py:" not in low.stderr
    table = {line.split()[0]: line.split()[1:] for line in low.stdout.splitlines()[1:]}
    assert table["pim/c.py"] == ["100", "6", "10", "2", "94.0", "80.0"] and table["pim/gone.py"] == ["no", "data"]
    assert check(tmp_path, files, "pim/c.py", floor="80").returncode == 0


def test_branches_alone_below_the_floor_fail(tmp_path):
    files = {"pim/d.py": entry(list(range(1, 11)), [], 10, [[2, 3]])}  # all statements, 9 of 10 directions
    low = check(tmp_path, files, "pim/d.py")
    assert low.returncode == 1 and "pim/d.py: statements 100.0%, branches 90.0%" in low.stderr
    assert "lines not run: none; branches not taken: 2->3" in low.stderr
