"""Stock mpremote against the virtual board's port, as against a Pico (issue: virtual board Done means)."""
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from picostim.sim import VirtualBoard

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))

MAIN_PY = """\
import time
print('main running')
n = 0
while True:
    time.sleep_ms(20)
    n += 1
"""


def mp(vb, *args, timeout=60):
    r = subprocess.run([MPREMOTE, "connect", vb.port, *args], capture_output=True, text=True, timeout=timeout)
    return r


@pytest.fixture(scope="module")
def vb(tmp_path_factory):
    flash = tmp_path_factory.mktemp("flash")
    (flash / "main.py").write_text(MAIN_PY)
    with VirtualBoard(board="handheld-home", flash_dir=flash, rig_port=None) as board:
        yield board


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    (d / "lib" / "pkg").mkdir(parents=True)
    (d / "a.py").write_text("x = 1\n" * 300)
    (d / "lib" / "pkg" / "b.py").write_text("y = 2\n")
    (d / "bin.dat").write_bytes(bytes(range(256)) * 20)
    return d


def test_exec_eval_while_main_runs(vb):
    # main.py is looping: mpremote must break in with Ctrl-C and get a raw REPL.
    r = mp(vb, "exec", "print(6 * 7)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "42"
    r = mp(vb, "eval", "2**10")
    assert r.stdout.strip() == "1024"


def test_fs_copy_list_hash_cat_rm_mkdir(vb, src, tmp_path):
    r = mp(vb, "fs", "cp", "-r", str(src / "a.py"), str(src / "bin.dat"), str(src / "lib"), ":")
    assert r.returncode == 0, r.stderr
    assert (vb.flash_dir / "lib" / "pkg" / "b.py").read_text() == "y = 2\n"
    r = mp(vb, "fs", "ls", ":lib/pkg")
    assert "b.py" in r.stdout and " 6 b.py" in r.stdout.replace("  ", " ")
    r = mp(vb, "fs", "sha256sum", ":bin.dat")
    assert hashlib.sha256((src / "bin.dat").read_bytes()).hexdigest() in r.stdout
    r = mp(vb, "fs", "cat", ":lib/pkg/b.py")
    assert r.stdout == "y = 2\n"
    assert mp(vb, "fs", "mkdir", ":d1").returncode == 0
    assert (vb.flash_dir / "d1").is_dir()
    assert mp(vb, "fs", "rm", ":a.py").returncode == 0
    assert not (vb.flash_dir / "a.py").exists()
    back = tmp_path / "back.dat"
    assert mp(vb, "fs", "cp", ":bin.dat", str(back)).returncode == 0
    assert back.read_bytes() == (src / "bin.dat").read_bytes()


def test_run_and_soft_reset(vb, src, tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import sys\nprint('ran on', sys.platform)\n")
    r = mp(vb, "run", str(script))
    assert "ran on" in r.stdout
    assert mp(vb, "exec", "marker = 123").returncode == 0
    # mpremote's `resume` keeps the session; a soft reset clears the heap like on a Pico.
    assert mp(vb, "resume", "eval", "marker").stdout.strip() == "123"
    assert mp(vb, "soft-reset").returncode == 0
    r = mp(vb, "resume", "eval", "marker")
    assert "NameError" in r.stdout + r.stderr


def test_mount(vb, src):
    r = mp(vb, "mount", str(src), "exec", "import os; print(sorted(os.listdir()))")
    assert r.returncode == 0, r.stderr
    assert "['a.py', 'bin.dat', 'lib']" in r.stdout


def test_friendly_repl_and_soft_reboot_banner(vb):
    with serial.Serial(vb.port, 115200, timeout=2) as s:
        s.write(b"\r\x03\x02")
        time.sleep(0.3)
        s.reset_input_buffer()
        s.write(b"1+2\r")
        assert s.read_until(b">>> ").endswith(b"3\r\n>>> ")
        s.write(b"\x04")  # Ctrl-D at an empty prompt: soft reboot runs boot.py/main.py again
        out = s.read_until(b"main running")
        assert b"MPY: soft reboot" in out and out.endswith(b"main running")
        s.write(b"\x03")
        out = s.read_until(b">>> ")
        assert b"KeyboardInterrupt" in out


def reset_cause_after_reenumeration(vb):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = mp(vb, "exec", "import machine; print(machine.reset_cause())")
        if r.returncode == 0:
            return int(r.stdout.strip())
        time.sleep(0.2)
    raise AssertionError("the board did not come back after the reset")


def test_machine_reset_reenumerates_and_reports_wdt_reset(vb):
    # Like a Pico, the USB device drops away on reset (mpremote sees the port die) and comes back.
    r = mp(vb, "exec", "import machine; machine.reset()", timeout=30)
    assert r.returncode != 0
    assert reset_cause_after_reenumeration(vb) == 3


def test_watchdog_resets_a_hung_board(vb):
    # A WDT that is never fed resets the board into boot (reset_cause WDT_RESET), in virtual time.
    r = mp(vb, "exec", "import machine; w = machine.WDT(timeout=300)\nwhile True: pass", timeout=30)
    assert r.returncode != 0  # the port dropped at the reset
    assert reset_cause_after_reenumeration(vb) == 3
