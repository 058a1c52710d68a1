"""Persistence of the level table and config across soft reset, hard reset and power loss (also in the middle of a
write), and config integrity (S12): judged by the amplitude the rig measures at the top level afterwards.
"""
import re

import pytest

import support
from picostim import paths
from picostim.device import DeviceError
from picostim.shared import codes
from support import amp_tolerance, pulse_numbers

PHASE, GAP, RATE = 200, 100, 200


def _levels_path() -> str:
    """Where the firmware keeps the level table (read from the firmware source: one place defines it)."""
    src = (paths.FIRMWARE_DIR / "lib" / "config.py").read_text()
    m = re.search(r'^LEVELS_PATH\s*=\s*"([^"]+)"', src, re.M)
    assert m, "firmware/lib/config.py no longer defines LEVELS_PATH"
    return m.group(1)


def _top_amp(dut, rig, n_levels):
    support.start_running(dut, rig, n_levels, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    n = pulse_numbers(rig.capture(0.03))
    support.stop_quietly(dut)
    return n.get("amp_pos", 0.0)


def _tuned_table(levels, prof):
    """A table whose top level differs clearly from the board default (and stays under the cap)."""
    cap = prof["limits"]["cap_ua"]
    new_top = cap - 60 if levels[-1] > cap - 30 else min(cap, levels[-1] + 60)
    table = list(levels)
    table[-1] = max(new_top, table[-2] + 1 if len(table) > 1 else 1)
    return table


def _soft_reset(bench):
    from picostim.rawrepl import RawRepl
    repl = RawRepl(bench.device.t)
    repl.enter()
    repl.soft_reset(run_main=True)
    return bench.device.hello(timeout=30)


def _hard_reset(bench):
    return bench.device.reset()


def _power_cycle(bench):
    return bench.power_cycle()


RESETS = {"soft_reset": _soft_reset, "hard_reset": _hard_reset, "power_loss": _power_cycle}


@pytest.mark.repl
@pytest.mark.parametrize("how", list(RESETS))
def test_levels_persist(bench, dut, rig, measure, prof, restore_levels, how):
    table = _tuned_table(restore_levels, prof)
    applied = dut.levels_set(table, operator="hil-persist")
    measure("applied_top", applied[-1], "uA", low=table[-1], high=table[-1])
    RESETS[how](bench)
    amp = _top_amp(dut, rig, len(table))
    measure("top_level_amp_after_" + how, amp, "uA", low=table[-1] - amp_tolerance(table[-1]),
            high=table[-1] + amp_tolerance(table[-1]))


def test_config_persists_across_power_loss(bench, dut, rig, measure, restore_levels):
    dut.config_set({"session_s": 4})
    bench.power_cycle()
    t0 = rig.now_s()
    dut.start(level=1, phase_us=PHASE, gap_us=GAP, rate_hz=50)   # no duration: the config's session time
    cap = rig.capture(4 + 2.0 + 0.8, start_s=t0, keep_pieces=False)
    last = max((p.t_ns for p in cap.pulses if p.active), default=int(t0 * 1e9))
    measure("session_end_time", (last - int(t0 * 1e9)) / 1e9, "s", low=4 + 1.7, high=4 + 2.5)


def test_audit_entry_survives_power_loss(bench, dut, rig, measure, prof, restore_levels):
    table = _tuned_table(restore_levels, prof)
    dut.levels_set(table, operator="hil-audit")
    bench.power_cycle()
    entries = [e for e in dut.audit() if e.get("operator") == "hil-audit"]
    measure("audit_entries", len(entries), "", low=1)
    if entries:
        measure("audit_after_ua", entries[-1].get("after_ua"), "uA", low=table[-1], high=table[-1])
        measure("audit_before_ua", entries[-1].get("before_ua"), "uA", low=restore_levels[-1],
                high=restore_levels[-1])


def _within(x, window):
    return window[0] <= x <= window[1]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_power_loss_mid_write_leaves_old_or_new(bench, dut, rig, measure, prof, restore_levels, seed):
    old = list(restore_levels)
    new = _tuned_table(old, prof)
    support.inject(rig, "power_loss", during_write=True, seed=seed)
    try:
        dut.request("levels_set", levels_ua=new, operator="hil-cut", timeout=2.0)
    except Exception:
        pass  # the cut may land before the reply
    rig.wait(0.05)
    rig.inject("power_restore")
    info = support.reconnect(dut)
    measure("config_not_corrupt", info.get("config_status") != codes.E_CONFIG_CORRUPT, "", low=1)
    amp = _top_amp(dut, rig, len(new))
    near_old = _within(amp, support.level_window(prof, old[-1]))
    near_new = _within(amp, support.level_window(prof, new[-1]))
    measure("top_amp_is_old_or_new", int(near_old or near_new), "", low=1, note=f"amp {amp:.1f} uA")


def _device_exec(bench, code):
    """Run code on the DUT through the raw REPL (the application is stopped first), then restart it."""
    from picostim.rawrepl import RawRepl
    repl = RawRepl(bench.device.t)
    repl.enter()
    try:
        repl.exec(code, timeout=10)
    finally:
        repl.soft_reset(run_main=True)
    return bench.device.hello(timeout=30)


@pytest.mark.repl
def test_s12_corrupt_level_file_runs_on_board_defaults(bench, dut, rig, measure, prof, restore_levels):
    table = _tuned_table(restore_levels, prof)
    dut.levels_set(table, operator="hil-corrupt")
    path = _levels_path()
    info = _device_exec(bench, f"f=open({path!r},'rb');d=bytearray(f.read());f.close()\n"
                               f"d[-2]^=0x5A\nf=open({path!r},'wb');f.write(d);f.close()\n")
    measure("reports_config_corrupt", info.get("config_status") == codes.E_CONFIG_CORRUPT, "", low=1)
    default_top = prof["levels_ua"][-1]
    amp = _top_amp(dut, rig, len(prof["levels_ua"]))
    lo, hi = support.level_window(prof, default_top)
    measure("top_amp_board_default", amp, "uA", low=lo, high=hi)


@pytest.mark.repl
def test_s12_over_cap_level_file_rejected(bench, dut, rig, measure, prof, restore_levels):
    cap = prof["limits"]["cap_ua"]
    table = list(prof["levels_ua"])
    table[-1] = min(codes.FIRMWARE_CEILING_UA, cap + 100)
    if table[-1] <= cap:
        pytest.skip("board cap equals the firmware ceiling")
    path = _levels_path()
    # a well-formed file (right version and CRC) from another board, with a level above this board's cap
    info = _device_exec(bench, f"import store\nstore.write_atomic({path!r}, {{'levels_ua': {table!r}}})\n")
    measure("reports_config_corrupt", info.get("config_status") == codes.E_CONFIG_CORRUPT, "", low=1)
    amp = _top_amp(dut, rig, len(table))
    measure("top_amp", amp, "uA", high=cap + amp_tolerance(cap))


@pytest.mark.repl
def test_s12_truncated_file_rejected(bench, dut, rig, measure, prof, restore_levels):
    table = _tuned_table(restore_levels, prof)
    dut.levels_set(table, operator="hil-trunc")
    path = _levels_path()
    info = _device_exec(bench, f"f=open({path!r},'rb');d=f.read();f.close()\n"
                               f"f=open({path!r},'wb');f.write(d[:len(d)//2]);f.close()\n")
    measure("reports_config_corrupt", info.get("config_status") == codes.E_CONFIG_CORRUPT, "", low=1)
    default_top = prof["levels_ua"][-1]
    amp = _top_amp(dut, rig, len(prof["levels_ua"]))
    lo, hi = support.level_window(prof, default_top)
    measure("top_amp_board_default", amp, "uA", low=lo, high=hi)
    # a good write repairs it
    dut.levels_set(table, operator="hil-repair")
    info = _soft_reset(bench)
    measure("status_after_repair", info.get("config_status") == "ok", "", low=1)
