"""Both virtual-board engines side by side: the unix port with chip models (model clock) and `emu`, the official
MicroPython v1.28.0 image in rp2040js. Same workloads through the same port (mpremote exec): boot, heap free after
boot, peak heap of a workload, the calibration workloads (GPIO toggle loop, reference loop), mem32 read, ADC read,
Timer.init, and hard-timer IRQ entry to the first Python statement. Needs $PICOSTIM_MICROPYTHON_UF2."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import Figure

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))

WORKLOADS = {
    "heap_free_after_boot_b": "import gc; gc.collect(); print(gc.mem_free())",
    "toggle_loop_us": "import machine, time\np = machine.Pin(13, machine.Pin.OUT)\ndef loop(n):\n"
                      "    for _ in range(n):\n        p.value(1)\n        p.value(0)\nloop(10)\nt0 = time.ticks_us()\n"
                      "loop(500)\nprint(time.ticks_diff(time.ticks_us(), t0) / 500)",
    "ref_loop_us": "import time\ndef work(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s\n"
                   "t0 = time.ticks_us()\nwork(5000)\nprint(time.ticks_diff(time.ticks_us(), t0) / 5000)",
    "mem32_read_us": "import time\nfrom machine import mem32\ndef f(n):\n    x = 0\n    for i in range(n):\n"
                     "        x = mem32[0x40054028]\ndef g(n):\n    for i in range(n):\n        pass\n"
                     "t0 = time.ticks_us(); f(2000); a = time.ticks_diff(time.ticks_us(), t0)\n"
                     "t0 = time.ticks_us(); g(2000); b = time.ticks_diff(time.ticks_us(), t0)\nprint((a - b) / 2000)",
    "adc_read_us": "import time\nfrom machine import ADC, Pin\nadc = ADC(Pin(28))\ndef f(n):\n    for i in range(n):\n"
                   "        adc.read_u16()\nt0 = time.ticks_us(); f(500)\nprint(time.ticks_diff(time.ticks_us(), t0) / 500)",
    "timer_init_us": "import time\nfrom machine import Timer\nt = Timer()\ncb = lambda x: None\nt0 = time.ticks_us()\n"
                     "for i in range(200):\n    t.init(mode=Timer.ONE_SHOT, period=1000, callback=cb)\n"
                     "print(time.ticks_diff(time.ticks_us(), t0) / 200)\nt.deinit()",
    "irq_entry_p50_us": "import time, array\nfrom machine import Timer\nN = 60\nlat = array.array('i', [0] * N)\n"
                        "st = [0, 0]\ntm = Timer()\ndef cb(t):\n    now = time.ticks_us()\n    i = st[0]\n"
                        "    if i < N:\n        lat[i] = time.ticks_diff(now, st[1])\n        st[0] = i + 1\n"
                        "        st[1] = time.ticks_add(time.ticks_us(), 1000)\n"
                        "        tm.init(mode=Timer.ONE_SHOT, period=1, callback=cb_ref, hard=True)\ncb_ref = cb\n"
                        "st[1] = time.ticks_add(time.ticks_us(), 1000)\n"
                        "tm.init(mode=Timer.ONE_SHOT, period=1, callback=cb_ref, hard=True)\n"
                        "while st[0] < N:\n    time.sleep_ms(5)\ns = sorted(lat)\nprint(s[N // 2], s[N - 1])",
}


def _exec(port, code):
    r = subprocess.run([MPREMOTE, "connect", port, "exec", code], capture_output=True, text=True, timeout=120)
    if r.returncode:
        raise RuntimeError(r.stderr.strip()[-300:])
    return r.stdout.strip().split()


def _engine(engine, uf2):
    from picostim.sim import VirtualBoard
    t0 = time.monotonic()
    kw = {"engine": "emu", "micropython": uf2} if engine == "emu" else {"clock": "model"}
    with VirtualBoard(board="pico-devkit", rig_port=None, **kw) as vb:
        out = {"boot_wall_s": time.monotonic() - t0}
        for key, code in WORKLOADS.items():
            try:
                vals = _exec(vb.port, code)
                out[key] = float(vals[0])
                if key == "irq_entry_p50_us":
                    out["irq_entry_max_us"] = float(vals[1])
            except Exception as e:       # a workload the engine cannot run is reported, not hidden
                out[key] = None
                out.setdefault("errors", {})[key] = str(e)[-200:]
        return out


def run(quick: bool = False) -> dict:
    uf2 = os.environ.get("PICOSTIM_MICROPYTHON_UF2")
    if not uf2:
        return {"figures": [Figure("engines side by side", "", "skipped: no MicroPython image",
                                   note="set PICOSTIM_MICROPYTHON_UF2 to the RPI_PICO v1.28.0 UF2")],
                "setup": "skipped: no MicroPython image"}
    unix = _engine("unix", uf2)
    emu = _engine("emu", uf2)
    figs = []
    for key in ["boot_wall_s"] + list(WORKLOADS) + ["irq_entry_max_us"]:
        e, u = emu.get(key), unix.get(key)
        unit = "s" if key.endswith("_s") else ("B" if key.endswith("_b") else "us")
        note = f"unix engine (model clock): {u if u is not None else 'n/a'}"
        if isinstance(e, float) and isinstance(u, float) and e:
            note += f"; unix/emu {u / e:.2f}"
        figs.append(Figure(f"{key} (emu)", unit, round(e, 2) if isinstance(e, float) else "n/a",
                           baseline=round(u, 2) if isinstance(u, float) else None,
                           baseline_label="unix engine", note=note))
    return {"figures": figs, "setup": f"pico-devkit; emu = {Path(uf2).name} in rp2040js 1.4.1; unix = model clock",
            "details": {"emu": emu, "unix": unix}}
