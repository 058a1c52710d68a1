"""Short versions of the reliability campaigns in bench/ (the full counts run in `make bench`): protocol fuzzing on
the MicroPython unix port and end to end, power loss during flash writes and a deploy, random faults during
stimulation. Each asserts the campaign's invariants on what was measured; plus the bench runner's promise that a
failing section shows up as failed in RESULTS.md."""
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import benchlib  # noqa: E402
import run as bench_run  # noqa: E402
from sections import faults, fuzz_mpy, fuzz_vb, powerloss  # noqa: E402

pytestmark = pytest.mark.timeout(240)


def _figure(res, prefix):
    return next(f for f in res["figures"] if f.name.startswith(prefix))


def test_protocol_fuzz_on_the_unix_port():
    r = fuzz_mpy.fuzz(1500, seed=11)
    assert r["inputs"] == 1500
    assert r["crashes"] == 0, r["violations"]
    assert r["n_violations"] == 0, r["violations"]
    assert r["replies_ok"] > 100 and r["replies_err"] > 500      # both paths exercised
    assert 0 < r["max_iset_ua"] <= 400                            # sessions ran, never above the cap


def test_protocol_fuzz_end_to_end():
    prof = benchlib.board_profile()
    inputs = fuzz_vb.generate(150, seed=12)
    with benchlib.provisioned_board(clock="model") as (vb, dev):
        s = fuzz_vb.fuzz(vb, dev, inputs, prof["limits"]["cap_ua"], prof["analog"]["i_fs_ua"])
    assert s["inputs"] == 150
    assert s["violations"] == []
    assert s["max_iset_ua"] <= prof["limits"]["cap_ua"]


def test_power_loss_during_writes_and_deploy():
    res = powerloss.run(quick=True)
    assert _figure(res, "power cuts during config/levels writes").measured >= 20
    assert _figure(res, "violations after restore").measured == 0, res["details"]["bad"]
    assert _figure(res, "deploy cuts").measured == 0, res["details"]["deploys"]


def test_random_faults_during_stimulation():
    res = faults.run(quick=True)
    assert _figure(res, "trials completed").measured == 6, res["details"]["errors"]
    assert _figure(res, "violations").measured == 0, res["details"]["violations"]


def test_failed_section_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(benchlib, "RESULTS_DIR", tmp_path)
    monkeypatch.setitem(bench_run.SECTIONS, "broken", ("A section that raises", 5))
    mod = type(sys)("sections.broken")

    def boom(quick=False):
        raise RuntimeError("rig on fire")
    mod.run = boom
    monkeypatch.setitem(sys.modules, "sections.broken", mod)
    res = bench_run.run_one("broken", quick=True)
    assert res["status"] == "failed" and "rig on fire" in res["error"]
    md = bench_run.render({"broken": res})
    assert "**FAILED**: RuntimeError: rig on fire" in md
    assert "1 failed (broken)" in md
