"""Campaign: protocol fuzzing end to end on the virtual board (USB pty -> firmware -> rig).

Each generated input is written to the port as it is, followed by a `status` sentinel. Invariants: the application
keeps answering (no crash, no traceback or REPL prompt on the port, no reset), every reply is JSON, the rig's ISET
register log never shows a write above the cap, and when every reply to an input was an error the session's
commanded state (state, level, target) is the same before and after."""
from __future__ import annotations

import json
import random
import time

from benchlib import Figure, board_profile, provisioned_board, reconnect, wait_virtual
from fuzzgen import one_input
from picostim.transport import TransportError

CLOCK = "model"


def generate(n, seed):
    rnd = random.Random(seed)
    out = []
    while len(out) < n:
        x = one_input(rnd)
        if b'"reset"' in x or b'"bootloader"' in x:
            continue     # these reset the board by design; the campaign is about everything else
        out.append(x)
    return out


def read_until_sentinel(dev, sid, timeout=10.0):
    """Replies (and events) up to the sentinel's reply; None if the sentinel never came back."""
    replies, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        obj = dev._read_message(max(0.01, end - time.monotonic()))
        if obj is None:
            continue
        if "ev" in obj:
            continue
        if obj.get("id") == sid:
            return replies, obj
        replies.append(obj)
    return replies, None


def recover(vb, dev, stats):
    """The app stopped answering: note what the port shows, then get it back (reconnect, else power cycle)."""
    stats["violations"][-1]["noise"] = list(dev.noise)[-5:]
    for attempt in ("status", "ensure_app", "reconnect", "power_cycle"):
        try:
            if attempt == "status":
                return dev.request("status", timeout=1.0)
            if attempt == "ensure_app":
                dev.ensure_app(timeout=5)
            elif attempt == "reconnect":
                reconnect(dev)
            elif attempt == "power_cycle":
                stats["power_cycles"] = stats.get("power_cycles", 0) + 1
                vb.reset()
                reconnect(dev)
            return dev.status()
        except Exception:  # noqa: BLE001
            continue
    raise RuntimeError("the virtual board did not come back after a power cycle")


def fuzz(vb, dev, inputs, cap_ua, i_fs):
    stats = {"inputs": 0, "replies_ok": 0, "replies_err": 0, "violations": [], "lost_sentinel": 0}
    t_start = vb.now_ns()
    boots = vb.boot_count
    noise0 = len(dev.noise)
    dev.noise.clear()
    prev = dev.status()
    for k, data in enumerate(inputs):
        stats["inputs"] += 1
        sid = f"s{k}"
        try:
            dev.send_raw(data + b"\n")
            dev.send_raw(json.dumps({"id": sid, "cmd": "status"}).encode() + b"\n")
            replies, st = read_until_sentinel(dev, sid)
        except TransportError as e:
            replies, st = [], None
            stats["violations"].append({"input": k, "kind": "port_lost", "detail": str(e)[:120],
                                        "reset_cause": vb.reset_cause, "boots": vb.boot_count - boots})
        if st is None:
            stats["lost_sentinel"] += 1
            stats["violations"].append({"input": k, "kind": "no_answer", "data": data[:120].hex(),
                                        "reset_cause": vb.reset_cause, "boots": vb.boot_count - boots})
            if vb.boot_count != boots:
                boots = vb.boot_count
                stats["violations"].append({"input": k, "kind": "reset"})
            prev = recover(vb, dev, stats)
            boots = vb.boot_count
            continue
        for r in replies:
            if r.get("ok") is True:
                stats["replies_ok"] += 1
            else:
                stats["replies_err"] += 1
        if dev.noise:
            stats["violations"].append({"input": k, "kind": "non_json_output", "detail": list(dev.noise)[:3]})
            dev.noise.clear()
        if replies and all(r.get("ok") is False for r in replies) and st.get("state") == prev.get("state"):
            keys = ("level", "target_ua", "program")
            if any(st.get(x) != prev.get(x) for x in keys):
                stats["violations"].append({"input": k, "kind": "rejected_changed_state",
                                            "before": {x: prev.get(x) for x in keys},
                                            "after": {x: st.get(x) for x in keys}})
        if vb.boot_count != boots:
            boots = vb.boot_count
            stats["violations"].append({"input": k, "kind": "reset", "data": data[:120].hex()})
        prev = st
        if k % 50 == 49:
            wait_virtual(vb, 0.4)        # let ramps and sessions move on between bursts
    log = vb.rig.iset_log(since_ns=t_start)
    stats["iset_writes"] = len(log)
    stats["max_iset_ua"] = max((e["duty"] * i_fs for e in log), default=0.0)
    if stats["max_iset_ua"] > cap_ua + 0.5:
        stats["violations"].append({"kind": "iset_above_cap", "detail": stats["max_iset_ua"]})
    stats["noise_before"] = noise0
    return stats


def run(quick: bool = False) -> dict:
    prof = board_profile()
    cap_ua = prof["limits"]["cap_ua"]
    n = 150 if quick else 1200
    inputs = generate(n, seed=4242)
    t0 = time.monotonic()
    with provisioned_board(clock=CLOCK) as (vb, dev):
        factor = vb.cpu_factor
        s = fuzz(vb, dev, inputs, cap_ua, prof["analog"]["i_fs_ua"])
    kinds = {}
    for v in s["violations"]:
        kinds[v["kind"]] = kinds.get(v["kind"], 0) + 1
    figs = [
        Figure("inputs sent end to end", "", s["inputs"], goal=(">=", n), n=s["inputs"],
               note=f"{s['replies_ok']} accepted, {s['replies_err']} rejected replies"),
        Figure("invariant violations", "", len(s["violations"]), goal=("==", 0), n=s["inputs"],
               note=", ".join(f"{k} {v}" for k, v in kinds.items())),
        Figure("highest ISET write in the rig's register log", "uA", s["max_iset_ua"], goal=("<=", cap_ua),
               baseline=cap_ua, baseline_label="board cap", n=s["iset_writes"]),
    ]
    return {"figures": figs, "clock": CLOCK, "cpu_factor": factor,
            "counts": {"inputs": s["inputs"], "violations": len(s["violations"])},
            "setup": "handheld-home virtual board, inputs from bench/fuzzgen.py seed 4242 (reset/bootloader excluded)",
            "details": {**s, "violations": s["violations"][:30], "wall_s": time.monotonic() - t0}}
