"""Production lock (issue 14) on the bench: a locked DUT refuses USB attacks without the key and its output, as the
rig measures it at the electrodes, does not move; with the key (--lock-key-file) the change is done and audited.
Runs on a locked DUT only (`picostim hil --lock-key-file FILE`, which locks a virtual DUT first); an unlocked DUT
skips: these tests judge the lock, not its absence."""
import json

import pytest

import support
from picostim.shared import codes
from support import amp_tolerance, pulse_numbers

PHASE, GAP, RATE = 200, 100, 200
ATTACKS = [
    b"\r\x03\x03\x01import os\nos.remove('/lock.bin')\x04\n",             # raw REPL
    b"\r\x03\x03\x01\x05A\x01import machine\nmachine.bootloader()\x04\n",   # raw paste
    b"\x03\x03\x04\x02\x05print(1)\x04\n",                                   # Ctrl-C, Ctrl-D, Ctrl-B, paste mode
    json.dumps({"id": "a1", "cmd": "set_level", "level": 1, "ua": 400}).encode() + b"\n",
    json.dumps({"id": "a2", "cmd": "levels_set", "levels_ua": [400] * 5}).encode() + b"\n",
    json.dumps({"id": "a3", "cmd": "unlock", "nonce": "0.0.0", "mac": "0" * 64}).encode() + b"\n",
    json.dumps({"id": "a4", "cmd": "bootloader"}).encode() + b"\n",
]


@pytest.fixture
def locked_dut(bench, dut):
    h = dut.hello()
    if not h.get("locked"):
        pytest.skip("the DUT is not locked (run with --lock-key-file to test the production lock)")
    return dut


def _replies(dut, n, timeout=10.0):
    out = []
    import time
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        obj = dut._read_message(0.2)
        if obj is not None and "ev" not in obj:
            out.append(obj)
    return out


def test_locked_dut_refuses_usb_attacks_and_its_output_holds(locked_dut, rig, measure, levels_ua):
    dut = locked_dut
    top = len(levels_ua)
    support.start_running(dut, rig, 1, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    before = pulse_numbers(rig.capture(0.05))
    lines = 0
    refused = 0
    for raw in ATTACKS:
        dut.t.write(raw)
        n = sum(1 for seg in raw.replace(b"\r", b"\n").split(b"\n") if seg)
        lines += n
        rs = _replies(dut, n)
        refused += sum(1 for r in rs if r.get("ok") is False and r.get("error") in codes.ERROR_CODES)
    rig.wait(0.3)
    after = pulse_numbers(rig.capture(0.05))
    measure("attack_lines_refused_with_a_code", refused, "", low=lines, high=lines)
    measure("amp_change_at_electrodes", abs(after["amp_pos"] - before["amp_pos"]), "uA",
            high=amp_tolerance(before["amp_pos"]))
    measure("level_table_unchanged", int(dut.levels_get() == levels_ua), "", low=1)
    h = dut.hello()
    measure("still_locked", int(bool(h.get("locked"))), "", low=1)
    measure("no_repl_output", len([x for x in dut.noise if ">>>" in x or "raw REPL" in x]), "", high=0)
    support.stop_quietly(dut)
    assert top >= 1


def test_locked_dut_with_the_key_tunes_and_audits(locked_dut, rig, measure, restore_levels):
    dut = locked_dut
    if dut.signer is None:
        pytest.skip("no key (--lock-key-file)")
    table = list(restore_levels)
    table[0] = max(1, table[0] - 10)
    dut.levels_set(table, operator="hil-lock")
    measure("signed_levels_set_applied", int(dut.levels_get() == table), "", low=1)
    e = dut.audit()[-1]
    measure("audit_key_id", int(e.get("key_id") == dut.signer.key_id), "", low=1)
    support.start_running(dut, rig, 1, phase_us=PHASE, gap_us=GAP, rate_hz=RATE)
    amp = pulse_numbers(rig.capture(0.05))["amp_pos"]
    measure("level1_amp_at_electrodes", amp, "uA", low=table[0] - amp_tolerance(table[0]),
            high=table[0] + amp_tolerance(table[0]))
    support.stop_quietly(dut)
