"""Both virtual-board engines side by side: the unix port with chip models (model clock) and `emu`, the official
MicroPython v1.28.0 image in rp2040js. The same figures from each, in one run:
* calibration workloads through the same port (mpremote exec on a bare board): boot, GPIO toggle loop, reference
  loop, mem32 read, ADC read, Timer.init, hard-timer IRQ entry to the first Python statement;
* footprint of the application (handheld-home, installed as `picostim flash` does): heap free after boot (the app
  built and running, read from the REPL it leaves on Ctrl-C, after gc) and the peak live heap (after gc, sampled)
  while the same app object serves a protocol workload with a session, telemetry at 1 kHz and a level change;
* safety latencies measured by the rig at the electrodes (bench/sections/latency.py's trials) for each waveform of
  latency.WAVES: over-current onset -> output off, contact loss -> pause, and the share of pairs with a judged sample.
Needs $PICOSTIM_MICROPYTHON_UF2; without it the section says "skipped: no MicroPython image"."""
from __future__ import annotations

import os
import time
from pathlib import Path

from benchlib import Figure, mpremote_exec


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
    "mem32_write_us": "import time\nfrom machine import mem32\ndef f(n):\n    for i in range(n):\n"
                      "        mem32[0x40050044] = 0\ndef g(n):\n    for i in range(n):\n        pass\n"
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
    return mpremote_exec(port, code, timeout=120)


def calibration_workloads(engine, uf2):
    """The WORKLOADS on a bare board of `engine` (also the supervisor section's per-operation costs)."""
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


# The app's own object after Ctrl-C (main.py keeps it in `_app`): a protocol workload through App.handle_line with
# the loop's periodic work, sampling the live heap after gc. Replies go to a sink (only the figures are printed).
PEAK_WORKLOAD = """
import gc, time
a = _app
class _Sink:
    def write(self, s):
        return len(s)
a.out = _Sink()
pk = [0]
def _s():
    gc.collect()
    u = gc.mem_alloc()
    if u > pk[0]:
        pk[0] = u
_s()
for ln in (b'{"id":1,"cmd":"hello"}', b'{"id":2,"cmd":"status"}', b'{"id":3,"cmd":"config_get"}',
           b'{"id":4,"cmd":"levels_get"}', b'{"id":5,"cmd":"zones"}', b'{"id":6,"cmd":"audit"}',
           b'{"id":7,"cmd":"start","level":2,"phase_us":200,"gap_us":50,"rate_hz":200}',
           b'{"id":8,"cmd":"telemetry","on":true,"rate_hz":1000}', b'{"id":9,"cmd":"set_level","level":3}',
           b'{"id":10,"cmd":"status"}', b'{"id":11,"cmd":"telemetry","on":false}', b'{"id":12,"cmd":"stop"}'):
    a.handle_line(ln, time.ticks_ms())
    for _ in range(20):
        now = time.ticks_ms()
        a.step(now)
        a.telemetry(now)
        time.sleep_ms(4)
    _s()
a.idle_output()
gc.collect()
print(pk[0], gc.mem_free(), gc.mem_alloc())
"""
HEAP_AFTER_BOOT = "import gc; gc.collect(); print(gc.mem_free(), gc.mem_alloc())"
JUDGE_WINDOW_S = 1.0


def _resume_exec(port, code):
    return mpremote_exec(port, code, timeout=300, resume=True)


def _app_figures(engine, uf2, n_oc, n_ct):
    """Footprint and latencies of the application on one engine (one board, handheld-home, 2 kOhm)."""
    import random
    from benchlib import board_profile, provisioned_board, reconnect, run_with_timeout, wait_port, wait_virtual
    from sections import latency as L
    prof = board_profile()
    out = {"failed": []}
    with provisioned_board(clock="model", engine=engine, micropython=uf2) as (vb, dev):
        dev.close()
        try:
            free, alloc = map(int, _resume_exec(vb.port, HEAP_AFTER_BOOT)[-2:])
            out.update(heap_free_after_boot_b=free, heap_total_b=free + alloc)
            peak, free2, _ = map(int, _resume_exec(vb.port, PEAK_WORKLOAD)[-3:])
            out.update(heap_peak_live_b=peak, heap_free_after_workload_b=free2)
        except Exception as e:  # noqa: BLE001 — reported, not hidden
            out["failed"].append(f"footprint: {type(e).__name__}: {e}"[:300])
        vb.reset()                                  # the app again, from a clean boot
        wait_port(vb)
        reconnect(dev, 30)
        rnd = random.Random(11)
        for name, wave in L.WAVES.items():
            r = {}
            try:
                L._start(vb, dev, 1, wave)
                s0, t0 = dev.status(), vb.now_ns()
                wait_virtual(vb, JUDGE_WINDOW_S)
                s1, t1 = dev.status(), vb.now_ns()
                pairs = (t1 - t0) / 1e9 * wave["rate_hz"]
                d = {k: s1.get(k, 0) - s0.get(k, 0) for k in ("samples", "missed", "late")}
                aimed = sum(d.values())
                r["judged_share"] = d["samples"] / aimed if aimed else 0.0
                r["judged_per_pair"] = d["samples"] / pairs if pairs else None
                r["looks"] = d
                L._recover(vb, dev)
            except Exception as e:  # noqa: BLE001
                out["failed"].append(f"{name} judged: {type(e).__name__}: {e}"[:300])
            for kind, fn, n in (("overcurrent_ms", L.trial_overcurrent, n_oc), ("contact_ms", L.trial_contact, n_ct)):
                vals, bad = [], 0
                for _ in range(n):
                    try:
                        v = run_with_timeout(fn, 120, vb, dev, prof, rnd, wave)
                    except Exception as e:  # noqa: BLE001
                        v = None
                        out["failed"].append(f"{name} {kind}: {type(e).__name__}: {e}"[:300])
                    if v is None:
                        bad += 1
                        err = L._recover_after_trial(vb, dev)
                        if err:
                            out["failed"].append(err)
                        continue
                    vals.append(v[0] if isinstance(v, tuple) else v)
                r[kind] = vals
                r[kind.replace("_ms", "_not_measured")] = bad
            out[name] = r
    return out


def run(quick: bool = False) -> dict:
    uf2 = os.environ.get("PICOSTIM_MICROPYTHON_UF2")
    if not uf2:
        return {"figures": [Figure("engines side by side", "", "skipped: no MicroPython image",
                                   note="set PICOSTIM_MICROPYTHON_UF2 to the RPI_PICO v1.28.0 UF2")],
                "setup": "skipped: no MicroPython image"}
    from benchlib import dist
    from sections import latency as L
    n_oc, n_ct = (2, 1) if quick else (5, 3)
    unix = calibration_workloads("unix", uf2)
    emu = calibration_workloads("emu", uf2)
    app = {eng: _app_figures(eng, uf2, n_oc, n_ct) for eng in ("unix", "emu")}
    figs = []

    def pair(name, unit, e, u, goal=None, n=None, note=""):
        note = (note + "; " if note else "") + f"unix engine (model clock): {u if u is not None else 'n/a'}"
        if isinstance(e, (int, float)) and isinstance(u, (int, float)) and e:
            note += f"; unix/emu {u / e:.2f}"
        figs.append(Figure(f"{name} (emu)", unit, round(e, 3) if isinstance(e, (int, float)) else "n/a",
                           baseline=round(u, 3) if isinstance(u, (int, float)) else None,
                           baseline_label="unix engine", goal=goal, n=n, note=note))

    for key in ["boot_wall_s"] + list(WORKLOADS) + ["irq_entry_max_us"]:
        unit = "s" if key.endswith("_s") else ("B" if key.endswith("_b") else "us")
        pair(key, unit, emu.get(key), unix.get(key))
    for key, label in (("heap_free_after_boot_b", "app: heap free after boot (gc)"),
                       ("heap_peak_live_b", "app: peak live heap under a protocol workload (gc, sampled)"),
                       ("heap_total_b", "heap size")):
        pair(label, "B", app["emu"].get(key), app["unix"].get(key))
    for name in L.WAVES:
        e, u = app["emu"].get(name, {}), app["unix"].get(name, {})
        pair(f"[{name}] looks judged (of those aimed: samples / samples + missed + late)", "%",
             None if e.get("judged_share") is None else 100 * e["judged_share"],
             None if u.get("judged_share") is None else 100 * u["judged_share"],
             note=f"emu looks in {JUDGE_WINDOW_S:.0f} s: {e.get('looks')}")
        pair(f"[{name}] judged looks per pair", "", e.get("judged_per_pair"), u.get("judged_per_pair"))
        for kind, label, goal in (("overcurrent_ms", "over-current onset -> output off", 1.0),
                                  ("contact_ms", "contact loss -> pause", 2.0)):
            de, du = dist(e.get(kind, [])), dist(u.get(kind, []))
            nb = e.get(kind.replace("_ms", "_not_measured"), 0)
            for q in ("p50", "p99", "max"):
                pair(f"[{name}] {label}, {q}", "ms", de[q] if de["n"] else None, du[q] if du["n"] else None,
                     goal=("<=", goal), n=de["n"],
                     note=f"{nb} emu trial(s) not measured (no output off / no pause seen)" if nb and q == "max"
                     else "")
    return {"figures": figs,
            "setup": f"emu = {Path(uf2).name} in rp2040js 1.4.1; unix = model clock. Calibration workloads on a "
                     "bare pico-devkit; app figures on handheld-home, 2 kOhm, level 1 (latency trials: "
                     f"{n_oc} over-current, {n_ct} contact loss per waveform and engine, onsets uniform over a "
                     "period, seed 11)",
            "details": {"emu": emu, "unix": unix, "app": app}}
