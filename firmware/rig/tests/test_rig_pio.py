"""Rig firmware PIO programs: they assemble (with picostim's _pioasm, the assembler the virtual board's rp2 uses)
to the expected 16-bit words, single instructions match the RP2040 datasheet encodings (section 3.4), and the
edge-capture program, run cycle by cycle on a small PIO interpreter, yields durations that rigcapture turns back
into the true edge times within one PIO cycle.
"""
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RIG = Path(__file__).resolve().parents[1]
REPO = RIG.parents[1]
RUNTIME = REPO / "host" / "picostim" / "sim" / "runtime"
MICROPYTHON = Path(sys.executable).with_name("micropython")

sys.path.insert(0, str(RUNTIME))
sys.path.insert(0, str(RIG))
import _pioasm as pio  # noqa: E402
import rigcapture  # noqa: E402

# A stand-in `rp2` module for importing the rig's programs off-target: only the assembler and constants.
RP2_SHIM = textwrap.dedent("""
    from _pioasm import asm_pio
    class PIO:
        IN_LOW = 0
        IN_HIGH = 1
        OUT_LOW = 2
        OUT_HIGH = 3
        SHIFT_LEFT = 0
        SHIFT_RIGHT = 1
        JOIN_NONE = 0
        JOIN_TX = 1
        JOIN_RX = 2
""")


@pytest.fixture(scope="module")
def shim_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("rp2shim")
    (d / "rp2.py").write_text(RP2_SHIM)
    return d


@pytest.fixture(scope="module")
def rigpio(shim_dir):
    sys.path.insert(0, str(shim_dir))
    try:
        sys.modules.pop("rp2", None)
        import rigpio as mod
        return mod
    finally:
        sys.path.remove(str(shim_dir))


# Expected words, derived by hand from the datasheet's instruction format (bits 15:13 opcode, 12:8 delay/side,
# 7:0 operands), not from the assembler.
LEVEL_DURATIONS = [
    0xA02B,  # 0 mov x, ~null        101 00000 001 01 011
    0x00C3,  # 1 jmp pin, 3           000 00000 110 00011
    0x0041,  # 2 jmp x--, 1           000 00000 010 00001
    0x4020,  # 3 in x, 32             010 00000 001 00000 (32 encodes as 0)
    0xA02B,  # 4 mov x, ~null
    0x00C7,  # 5 jmp pin, 7
    0x0008,  # 6 jmp 8
    0x0045,  # 7 jmp x--, 5
    0x4020,  # 8 in x, 32
]
TIMED_LOW = [
    0x80A0,  # pull block             100 00000 1 0 1 00000
    0xA027,  # mov x, osr             101 00000 001 00 111
    0xE000,  # set pins, 0            111 00000 000 00000
    0xE081,  # set pindirs, 1         111 00000 100 00001
    0x0044,  # jmp x--, 4
    0xE080,  # set pindirs, 0
]


def test_level_durations_words(rigpio):
    prog = rigpio.level_durations
    assert list(prog.words) == LEVEL_DURATIONS
    assert (prog.wrap_target, prog.wrap) == (0, len(LEVEL_DURATIONS) - 1)
    # SHIFTCTRL: autopush (bit 16), push threshold 32 encoded as 0, FJOIN_RX (bit 31)
    assert prog.shiftctrl == (1 << 31) | (1 << 16)
    # EXECCTRL wrap fields: WRAP_TOP 16:12 = 8, WRAP_BOTTOM 11:7 = 0
    assert prog.execctrl == 8 << 12


def test_timed_low_words(rigpio):
    assert list(rigpio.timed_low.words) == TIMED_LOW
    assert rigpio.timed_low.pinctrl >> 26 & 7 == 1  # SET_COUNT = 1 pin


def _one(src, **kw):
    ns = {}
    exec("def prog():\n    " + src + "\n", ns)
    return list(pio.assemble(ns["prog"], **kw).words)


@pytest.mark.parametrize("src, word, kw", [
    ("nop()", 0xA042, {}),                          # mov y, y
    ("set(pins, 1)", 0xE001, {}),
    ("set(x, 31)", 0xE03F, {}),
    ("wait(1, gpio, 5)", 0x2085, {}),
    ("wait(0, pin, 2)", 0x2022, {}),
    ("wait(1, irq, rel(3))", 0x20D3, {}),
    ("in_(pins, 2)", 0x4002, {}),
    ("in_(null, 32)", 0x4060, {}),
    ("out(pindirs, 1)", 0x6081, {}),
    ("out(exec, 16)", 0x60F0, {}),
    ("push(noblock)", 0x8000, {}),
    ("push(iffull, block)", 0x8060, {}),
    ("pull(ifempty, noblock)", 0x80C0, {}),
    ("mov(isr, reverse(osr))", 0xA0D7, {}),
    ("mov(pins, status)", 0xA005, {}),
    ("irq(clear, 4)", 0xC044, {}),
    ("irq(block, rel(1))", 0xC031, {}),
    ("jmp(not_osre, 0)", 0x00E0, {}),
    ("jmp(x_not_y, 0)", 0x00A0, {}),
    ("nop()[31]", 0xBF42, {}),
    ("set(pins, 1).side(1)", 0xF001, {"sideset_init": (0,)}),           # 1 side bit: bit 12
    ("set(pins, 0).side(3)[1]", 0xF900, {"sideset_init": (0, 0)}),      # 2 side bits 12:11, delay 10:8
    ("nop().side(1)", 0xB842, {"sideset_init": (0,), "sideset_opt": True}),  # enable bit 12, value bit 11
])
def test_datasheet_encodings(src, word, kw):
    assert _one(src, **kw) == [word], f"{src}: got {_one(src, **kw)[0]:#06x}, expected {word:#06x}"


@pytest.mark.parametrize("src, kw, fragment", [
    ("nop()[32]", {}, "delay"),
    ("nop()[2]", {"sideset_init": (0, 0, 0, 0)}, "delay"),        # 4 side bits leave 1 delay bit
    ("set(pins, 32)", {}, "0..31"),
    ("in_(pins, 0)", {}, "bit count"),
    ("jmp('nowhere')", {}, "unknown label"),
    ("mov(x, invert(pc))", {}, "mov source"),
    ("push(ifempty)", {}, "push/pull"),
    ("nop().side(1)", {}, "sideset"),
    ("set(exec, 1)", {}, "set destination"),
])
def test_bad_programs_rejected(src, kw, fragment):
    with pytest.raises(pio.PIOASMError, match=fragment):
        _one(src, **kw)


def test_too_long_program_rejected():
    with pytest.raises(pio.PIOASMError, match="32"):
        _one("for _ in range(33): nop()")


def test_assembler_leaves_caller_globals_alone():
    ns = {"x": "mine"}
    exec("def prog():\n    mov(x, y)\n", ns)
    pio.assemble(ns["prog"])
    assert ns["x"] == "mine" and "mov" not in ns


# --- cycle-accurate check of the capture path -------------------------------------------------------------------

def run_pio(words, wrap_target, wrap, pin_at, cycles):
    """Interpret the subset of PIO used by level_durations: jmp (always/pin/x--), mov x ~null, in x 32 with autopush.
    pin_at(cycle) -> 0/1. Returns the words pushed to the RX FIFO."""
    pc, x, out = 0, 0, []
    for cyc in range(cycles):
        w = words[pc]
        op = w >> 13
        nxt = pc + 1 if pc != wrap else wrap_target
        if op == 0:  # jmp
            cond, addr = (w >> 5) & 7, w & 31
            if cond == 0:
                nxt = addr
            elif cond == 2:
                if x != 0:
                    nxt = addr
                x = (x - 1) & 0xFFFFFFFF
            elif cond == 6:
                if pin_at(cyc):
                    nxt = addr
            else:
                raise AssertionError(f"unsupported jmp cond {cond}")
        elif w == 0xA02B:
            x = 0xFFFFFFFF
        elif w == 0x4020:
            out.append(x)
        else:
            raise AssertionError(f"unsupported instruction {w:#06x}")
        pc = nxt
    return out


@pytest.mark.parametrize("seed", range(6))
def test_capture_roundtrip_within_one_cycle(seed):
    rnd = random.Random(seed)
    # random pulse train: high/low levels of 20..3000 cycles, maybe starting high
    t, level, edges = 0, rnd.choice((0, 1)), []
    if level:
        edges.append((0, 1))
    while t < 60000:
        t += rnd.randint(20, 3000)
        level ^= 1
        edges.append((t, level))
    levels = [(e[0], e[1]) for e in edges]

    def pin_at(c):
        v = 0
        for tt, lv in levels:
            if tt <= c:
                v = lv
            else:
                break
        return v

    words = run_pio(LEVEL_DURATIONS, 0, 8, pin_at, 62000)
    got = rigcapture.durations_to_edges(words, 1, 1)  # in cycles
    assert len(got) >= len([e for e in edges if e[0] < 58000])
    for (tg, lg), (te, le) in zip(got, edges):
        assert lg == le
        assert abs(tg - te) <= 1, f"edge at cycle {te} reconstructed at {tg}"


def test_pulse_assembly_and_charge():
    # +200 us, gap 100 us, -200 us, every 1 ms, 400 uA both phases; ADC every 2 us.
    edges_a, edges_b = [], []
    for k in range(5):
        t0 = 1_000_000 * k + 50_000
        edges_a += [(t0, 1), (t0 + 200_000, 0)]
        edges_b += [(t0 + 300_000, 1), (t0 + 500_000, 0)]
    pulses, problems = rigcapture.pair_pulses(rigcapture.intervals(edges_a), rigcapture.intervals(edges_b))
    assert problems == {"unmatched_pos": 0, "unmatched_neg": 0, "overlap": 0}
    assert [(p["pos_ns"], p["gap_ns"], p["neg_ns"]) for p in pulses] == [(200_000, 100_000, 200_000)] * 5
    dt = 2000
    samples = []
    for i in range(5_000_000 // dt):
        t = i * dt
        hi = any(a <= t < b for a, b in rigcapture.intervals(edges_a) + rigcapture.intervals(edges_b))
        samples.append(400_000 if hi else 0)
    rigcapture.measure_pulses(pulses, samples, 0, dt)
    assert all(p["amp_pos_na"] == 400_000 and p["amp_neg_na"] == 400_000 and p["net_fc"] == 0 for p in pulses)
    s = rigcapture.summary(pulses, 5_000_000)
    assert s["period_ns"] == 1_000_000 and s["dc_na"] == 0


def test_overlap_and_unmatched_detected():
    pos = [(0, 200), (1000, 1200)]
    neg = [(150, 400)]  # overlaps the first +phase; second +phase has no partner
    pulses, problems = rigcapture.pair_pulses(pos, neg)
    assert problems["overlap"] == 1 and problems["unmatched_pos"] >= 1


@pytest.mark.skipif(not MICROPYTHON.exists(), reason="MicroPython unix port not installed")
def test_programs_assemble_under_micropython(shim_dir):
    """The assembler and the rig's program run on MicroPython itself (as on the rig Pico / virtual board)."""
    script = "import rigpio\nprint(list(rigpio.level_durations.words))\nprint(list(rigpio.timed_low.words))\n"
    env = {"MICROPYPATH": f"{shim_dir}:{RUNTIME}:{RIG}", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([str(MICROPYTHON), "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr + r.stdout
    lines = r.stdout.strip().splitlines()
    assert eval(lines[0]) == LEVEL_DURATIONS
    assert eval(lines[1]) == TIMED_LOW


@pytest.mark.skipif(not MICROPYTHON.exists(), reason="MicroPython unix port not installed")
def test_capture_assembly_same_under_micropython():
    words = [0xFFFFFFFF - 100, 0xFFFFFFFF - 50, 0xFFFFFFFF - 900, 0xFFFFFFFF - 50]
    script = f"import rigcapture\nprint(rigcapture.durations_to_edges({words}, 8, 1))\n"
    env = {"MICROPYPATH": str(RIG), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([str(MICROPYTHON), "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    assert [tuple(e) for e in eval(r.stdout.strip())] == rigcapture.durations_to_edges(words, 8, 1)


@pytest.mark.skipif(not (MICROPYTHON.exists() and (RUNTIME / "rp2.py").exists()), reason="virtual board rp2 missing")
def test_programs_assemble_with_the_virtual_boards_rp2():
    """Through the virtual board's own `rp2` module (its asm_pio delegates to _pioasm), unchanged rig source."""
    script = "import rigpio\nprint(list(rigpio.level_durations.words))\nprint(list(rigpio.timed_low.words))\n"
    env = {"MICROPYPATH": f"{RUNTIME}:{RIG}", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([str(MICROPYTHON), "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr + r.stdout
    lines = r.stdout.strip().splitlines()
    assert eval(lines[0]) == LEVEL_DURATIONS and eval(lines[1]) == TIMED_LOW
