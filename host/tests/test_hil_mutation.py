"""Mutation check of the HIL suite: build firmware copies with a safety property broken (the cap check removed;
unequal phases), run the HIL tests that guard that property against each on the virtual board, and require them
to FAIL there (on a measurement, with the mutant booted and answering) while they pass on the real firmware.
A HIL test that cannot see the mutation is not testing anything.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from picostim import paths

REPO = paths.REPO_ROOT
TIMEOUT_S = 600

# (file under firmware/, exact source text, replacement): each must match exactly once, or the mutation test fails
# loudly (the firmware changed under it), never silently tests an unmutated copy.
MUTANTS = {
    "cap_check_removed": [
        ("lib/board.py", 'return min(b["limits"]["cap_ua"], FIRMWARE_CEILING_UA)', "return FIRMWARE_CEILING_UA"),
    ],
    "unequal_phases": [
        ("lib/planner.py", "cc_b = phase_c + gap_c\n", "cc_b = phase_c + gap_c + phase_c // 8\n"),
    ],
}

# The HIL tests that guard each property (node ids relative to the repo)
GUARDS = {
    "cap_check_removed": [
        "hil_tests/test_safety.py::test_s3_level_above_cap_refused_nothing_changes",
        "hil_tests/test_safety.py::test_s2_level_table_above_cap_refused",
    ],
    "unequal_phases": [
        "hil_tests/test_waveform.py::test_timing_grid",
        "hil_tests/test_waveform.py::test_dc_component_over_one_second",
    ],
}
SELECT = {"cap_check_removed": None, "unequal_phases": "p250-g50-r20 or p1000-g0-r100 or 2k"}


def make_mutant(name: str, dst: Path) -> Path:
    src = paths.FIRMWARE_DIR
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tests", "rig", "__pycache__"))
    for rel, old, new in MUTANTS[name]:
        p = dst / rel
        text = p.read_text()
        n = text.count(old)
        assert n == 1, f"mutation {name}: {rel} contains {old!r} {n} times (expected once); update MUTANTS"
        p.write_text(text.replace(old, new))
    return dst


def run_hil(node_ids, report_dir: Path, firmware: Path | None = None, keyword: str | None = None):
    args = [sys.executable, "-m", "pytest", *node_ids, "--dut", "sim", "--hil-report", str(report_dir),
            "-p", "no:cacheprovider", "-q"]
    if firmware is not None:
        args += ["--firmware", str(firmware)]
    if keyword:
        args += ["-k", keyword]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    record = json.loads((report_dir / "record.json").read_text()) if (report_dir / "record.json").exists() else None
    return proc, record


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_mutant_is_caught(mutant, tmp_path):
    fw = make_mutant(mutant, tmp_path / "fw")
    proc, record = run_hil(GUARDS[mutant], tmp_path / "report-mutant", fw, SELECT[mutant])
    out = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert record is not None, f"no HIL record written:\n{out}"
    # the mutant booted and answered: the DUT identity comes from its hello
    assert record["duts"] and record["duts"][0].get("fw"), f"mutant did not boot:\n{out}"
    failed = [t for t in record["tests"] if t["outcome"] == "failed"]
    errors = [t for t in record["tests"] if t["outcome"] == "error"]
    assert proc.returncode == 1, f"HIL tests did not fail on mutant {mutant} (rc {proc.returncode}):\n{out}"
    assert failed, f"no HIL test failed on mutant {mutant}:\n{out}"
    assert not errors, f"bench errors, not measured failures, on mutant {mutant}: {[e['message'] for e in errors]}"


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_guards_pass_on_real_firmware(mutant, tmp_path):
    """The same tests pass on the unmodified firmware (so the failures above are the mutation's doing)."""
    proc, record = run_hil(GUARDS[mutant], tmp_path / "report-real", None, SELECT[mutant])
    out = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, f"guard tests fail on the real firmware:\n{out}"
    assert record and record["summary"]["passed"] >= 1


def test_mutations_still_apply(tmp_path):
    """Cheap check that every mutation still matches the firmware source (runs even without the HIL tests)."""
    for name in MUTANTS:
        make_mutant(name, tmp_path / name)
