"""Campaign: attacks over USB on a locked unit (issue 14), bench/lockattack.py.

10,000 generated inputs (REPL control characters, raw REPL and raw-paste sequences, privileged requests with a
missing, wrong or replayed MAC, oversized and malformed lines) to a unit locked with `picostim lock`'s key while a
session runs at its top level. Results: REPL entries, changes to caps/levels/config/calibration/profile, the
electrode current measured by the rig over the whole campaign, and one coded error reply per line sent. Then a
boot-window attack: the unit is reset (an unprivileged request) while Ctrl-C and raw-REPL entries flood its port.
On the `emu` engine (the official MicroPython image; $PICOSTIM_MICROPYTHON_UF2) a smaller sample runs: it is ~1000x
slower per byte."""
from __future__ import annotations

import os
import secrets
import time

import lockattack as LA
from benchlib import Figure, board_profile, provisioned_board, checkpoint

CLOCK = "model"
N_FULL = 10000
N_EMU = 96
TOL_UA = 4.0       # rig amplitude resolution at the cap on the 2k load (the measured figure is reported as is)


def boot_flood(vb, dev, resets: int, flood_s: float = 1.5, gap_s: float = 0.002, wait_s: float = 60.0) -> dict:
    """`reset` (anyone may ask) then Ctrl-C / Ctrl-A / raw-paste entries, back to back while the unit boots."""
    from picostim.device import DeviceError
    out = {"resets": 0, "came_back_locked": 0, "noise": [], "repl_entries": 0}
    repl0 = getattr(vb, "repl_entries", 0)
    flood = b"\x03\x03\x01\x05A\x01\x04\x03\x02\r" * 8
    for _ in range(resets):
        try:
            dev.request("reset", timeout=3)
        except Exception:  # noqa: BLE001 - the port may vanish before the reply
            pass
        out["resets"] += 1
        end = time.monotonic() + flood_s
        while time.monotonic() < end:
            try:
                dev.t.write(flood)
            except Exception:  # noqa: BLE001 - the port vanishes during the reset (EIO, closed): reopen, go on
                try:
                    dev.t.reconnect(5)
                except Exception:  # noqa: BLE001
                    time.sleep(0.05)
            time.sleep(gap_s)
        try:
            try:
                dev.t.drain(quiet_s=0.3)
            except Exception:  # noqa: BLE001
                dev.t.reconnect(30)
            dev.noise.clear()
            h = None
            end = time.monotonic() + wait_s
            while h is None and time.monotonic() < end:
                try:
                    h = dev.hello(timeout=30)
                except DeviceError as e:
                    # a refusal of the flood's garbage still on its way (the emulator is slow): wait for hello's own
                    if e.reply.get("id") is not None:
                        raise
            if h is not None and h.get("locked"):
                out["came_back_locked"] += 1
            out["noise"] += list(dev.noise)[:3]
        except Exception as e:  # noqa: BLE001
            out["noise"].append(f"no hello: {e}"[:120])
    out["repl_entries"] = getattr(vb, "repl_entries", 0) - repl0
    return out


def campaign(vb, dev, n, seed, cap_ua, resets, progress=None):
    from picostim.auth import Signer
    signer = Signer(secrets.token_bytes(32))
    captured = LA.lock_unit(dev, signer)
    h = dev.hello()
    ctx = LA.Context(h["uid"], h["nonce"], captured, cap_ua)
    s = LA.attack(vb, dev, LA.generate(n, seed), captured, ctx, progress=progress)
    # the emulator answers every flooded line too, ~1000x slower: a sparser flood over the same boot time
    kw = {"gap_s": 0.05, "wait_s": 240.0} if getattr(vb, "engine", "unix") == "emu" else {}
    s["boot_flood"] = boot_flood(vb, dev, resets, **kw) if resets else None
    s["key_id"] = signer.key_id
    return s


def figures(s, n, cap_ua, engine):
    e = s["electrodes"]
    bf = s.get("boot_flood") or {}
    sfx = "" if engine == "unix" else f" ({engine})"
    figs = [
        Figure("generated USB inputs to the locked unit" + sfx, "", s["inputs"], goal=(">=", n), n=s["inputs"],
               note=", ".join(f"{k} {v}" for k, v in s["by_category"].items())),
        Figure("REPL entries" + sfx, "", (s["repl_entries"] or 0) + sum(1 for m in s["repl_marks"] if m["repl"]),
               goal=("==", 0), note="virtual board's count of the CPU at the REPL + REPL banners/prompts on the port"
               + ("" if s["repl_entries"] is not None else " (emu: port only)")),
        Figure("changes to caps, levels, config, calibration, profile" + sfx, "", len(s["changes"]), goal=("==", 0),
               note="hello/config_get/calib_get before and after" + (", flash file hashes" if engine == "unix" else "")),
        Figure("attack lines accepted" + sfx, "", len(s["accepted"]), goal=("==", 0), n=s["lines"]),
        Figure("rejected lines answered with a code" + sfx, "", s["answered"], goal=("==", s["lines"]), n=s["lines"],
               note=", ".join(f"{k} {v}" for k, v in sorted(s["codes"].items(), key=lambda kv: -kv[1]))),
        Figure("max electrode current during the attack (rig)" + sfx, "uA", round(e["max_amp_ua"], 1),
               goal=("<=", cap_ua + TOL_UA), baseline=cap_ua, baseline_label="board cap", n=e["pulses"],
               note=f"{e['captures']} back-to-back captures, {e['pulses']} pulses, peak |i| {e['max_abs_ua']:.1f} uA"),
        Figure("non-protocol output / lost port" + sfx, "", len(s["repl_marks"]) + len(s["port_lost"]),
               goal=("==", 0)),
    ]
    if bf:
        figs.append(Figure("boot-window flood: resets that came back locked, no REPL" + sfx, "",
                           bf["came_back_locked"] if not bf["repl_entries"] else 0, goal=("==", bf["resets"]),
                           n=bf["resets"], note=f"REPL entries {bf['repl_entries']}; noise {bf['noise'][:2]}"))
    return figs


def run(quick: bool = False) -> dict:
    prof = board_profile()
    cap_ua = prof["limits"]["cap_ua"]
    n = 1000 if quick else N_FULL
    t0 = time.monotonic()

    def prog(k, s):
        checkpoint("lock_attack", {"inputs": k, "answered": s["answered"], "lines": s["lines"],
                                   "accepted": len(s["accepted"]), "wall_s": time.monotonic() - t0})

    with provisioned_board(clock=CLOCK) as (vb, dev):
        s = campaign(vb, dev, n, 1414, cap_ua, 5 if quick else 20, prog)
    return {"figures": figures(s, n, cap_ua, "unix"), "clock": CLOCK,
            "setup": f"handheld-home virtual board (unix engine) locked with a fresh line secret; {n} inputs from "
                     f"bench/lockattack.py seed 1414; a session at the top level during the attack; then "
                     f"{5 if quick else 20} resets under a Ctrl-C / raw-REPL flood. The emu sample: lock_attack_emu",
            "details": {"unix": _short(s), "wall_s": time.monotonic() - t0, "verdict": LA.verdict(s, cap_ua, TOL_UA)}}


def run_emu(quick: bool = False) -> dict:
    """The same campaign on the emu engine (the official MicroPython v1.28.0 image in rp2040js): a smaller sample,
    the emulator runs ~1000x slower per byte than the unix port."""
    prof = board_profile()
    cap_ua = prof["limits"]["cap_ua"]
    uf2 = os.environ.get("PICOSTIM_MICROPYTHON_UF2")
    if not uf2 or not os.path.exists(uf2):
        return {"figures": [Figure("lock attack on emu", "", "skipped: no MicroPython image",
                                   note="set PICOSTIM_MICROPYTHON_UF2 to the RPI_PICO v1.28.0 UF2")],
                "setup": "skipped: no MicroPython image"}
    n = 24 if quick else N_EMU
    t0 = time.monotonic()
    from picostim.device import Device
    from picostim.sim import VirtualBoard
    with VirtualBoard(board="handheld-home", load="2k", engine="emu", micropython=uf2) as vb:
        vb.provision()
        with Device(vb.port, timeout=10) as dev:
            dev.hello(timeout=60)
            s = campaign(vb, dev, n, 1415, cap_ua, 2)
    return {"figures": figures(s, n, cap_ua, "emu"),
            "setup": f"handheld-home on the emu engine ({os.path.basename(uf2)} in rp2040js), locked with a fresh line "
                     f"secret; {n} inputs from bench/lockattack.py seed 1415 (every category); then 2 resets under "
                     f"a Ctrl-C / raw-REPL flood. REPL entries: the port only (no CPU-side count in the emulator)",
            "details": {"emu": _short(s), "wall_s": time.monotonic() - t0, "verdict": LA.verdict(s, cap_ua, TOL_UA)}}


def _short(s):
    return {**{k: v for k, v in s.items() if k not in ("accepted", "missing", "repl_marks", "uncoded", "port_lost")},
            "accepted": s["accepted"][:5], "missing": s["missing"][:5], "repl_marks": s["repl_marks"][:5],
            "uncoded": s["uncoded"][:5], "port_lost": s["port_lost"][:5]}
