"""Campaign: power loss in the middle of a flash write, at random byte offsets (the virtual board tears the write at
the cut point, as a real power loss does).

* config/levels writes: arm `vb.power_cut(during_write=True, seed=k)`, send a config_set or levels_set, wait for
  the board to die, `power_restore`; then: the device boots and answers, the level table and the config are exactly
  the old or exactly the new ones (never a mix, never corrupt), and the rig measures a safe output (no current,
  compliance supply off).
* deploy: a full deploy over the raw REPL with the cut armed after a random delay (so it lands in a random file);
  after restore the output is safe (S1 safe boot with a half-written image), and a redeploy recovers with every
  file verified."""
from __future__ import annotations

import json
import random
import threading
import time

from benchlib import (Figure, TrialHung, board_profile, checkpoint, provisioned_board, reconnect, run_with_timeout,
                      wait_port, wait_virtual)

CLOCK = "model"


def output_safe(vb) -> tuple[bool, dict]:
    c = vb.rig.capture(0.05, keep_pieces=False, trace_bins=10)
    ok = c.max_abs_ua < 2.0 and c.hv_on_ns == 0 and c.n_active == 0
    return ok, {"max_abs_ua": c.max_abs_ua, "hv_on_ns": c.hv_on_ns, "n_active": c.n_active}


def wait_dead(vb, timeout=5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not vb.powered:
            return True
        time.sleep(0.005)
    return False


def random_levels(rnd, n, cap):
    return sorted(rnd.randint(1, cap) for _ in range(n))


def write_trial(vb, dev, prof, rnd, k):
    cap = prof["limits"]["cap_ua"]
    n = len(prof["levels_ua"])
    for attempt in range(3):                 # before the cut nothing is under test: retry a lost port
        try:
            old_levels = dev.levels_get()
            old_cfg = dev.config_get()
            break
        except Exception:  # noqa: BLE001
            if attempt == 2:
                raise
            reconnect(dev)
    kind = rnd.choice(["levels", "config"])
    if kind == "levels":
        new_levels = random_levels(rnd, n, cap)
        while new_levels == old_levels:
            new_levels = random_levels(rnd, n, cap)
        new_cfg = old_cfg
        req = {"cmd": "levels_set", "levels_ua": new_levels, "operator": "bench"}
    else:
        new_levels = old_levels
        new_cfg = dict(old_cfg, default_level=rnd.choice([x for x in range(1, n + 1)
                                                          if x != old_cfg.get("default_level")]),
                       session_s=rnd.randint(60, prof["limits"]["session_max_s"]))
        req = {"cmd": "config_set", "config": {"default_level": new_cfg["default_level"],
                                               "session_s": new_cfg["session_s"]}}
    # Half the trials arm the cut before the request (it lands in the record's temp file), half a few ms after
    # sending it (it can land after the rename, e.g. in the audit-trail write that follows a levels change).
    late = rnd.random() < 0.5
    if not late:
        vb.power_cut(during_write=True, seed=k)
    dev.send_raw(json.dumps({"id": f"p{k}", **req}).encode() + b"\n")
    if late:
        time.sleep(rnd.uniform(0.0, 0.004))
        vb.power_cut(during_write=True, seed=k)
    died = wait_dead(vb, 1.0 if late else 5.0)
    row = {"k": k, "kind": kind, "cut": died, "armed": "late" if late else "before"}
    if not died:
        vb._power_cut_armed = None          # nothing was written: disarm (the rig has no disarm call)
        row["note"] = "no write happened"
        return row
    vb.power_restore()
    hello = reconnect(dev)
    row["config_status"] = hello.get("config_status")
    lv = dev.levels_get()
    cfg = dev.config_get()
    row["levels"] = "old" if lv == old_levels else "new" if lv == new_levels else "mixed"
    row["config"] = "old" if cfg == old_cfg else "new" if cfg == new_cfg else "mixed"
    row["safe"], row["out"] = output_safe(vb)
    row["ok"] = (row["levels"] != "mixed" and row["config"] != "mixed" and row["safe"]
                 and row["config_status"] != "config_corrupt")
    return row


def deploy_trial(vb, dev, rnd, k, board="handheld-home"):
    from picostim import deploy
    from picostim.hil.bench import wipe_flash
    from picostim.transport import SerialTransport
    dev.close()
    wipe_flash(vb.flash_dir)                 # an empty flash: the deploy writes every file
    vb.reset()
    wait_port(vb)                            # the port re-enumerates after the reset
    time.sleep(0.1)
    delay = rnd.uniform(0.0, 0.4)            # a full deploy takes about 0.5 s here: cut somewhere inside it
    timer = threading.Timer(delay, vb.power_cut, kwargs={"during_write": True, "seed": 10_000 + k})
    row = {"k": k, "delay_s": round(delay, 3)}
    with SerialTransport(vb.port) as t:
        timer.start()
        try:
            deploy.deploy(t, board, handshake=False)
            row["deploy"] = "finished before the cut"
        except Exception as e:  # noqa: BLE001 — the cut is expected to break the deploy
            row["deploy"] = f"interrupted: {type(e).__name__}"
        timer.join()
    row["cut"] = wait_dead(vb, 1.0)
    vb._power_cut_armed = None               # the rig has no disarm call; a cut that found no write is dropped
    vb.power_restore()
    wait_port(vb)
    time.sleep(0.1)
    row["safe"], row["out"] = output_safe(vb)
    with SerialTransport(vb.port) as t:
        r = deploy.deploy(t, board, handshake=True)
    row["redeploy_verified"] = bool(r.verified)
    row["hello_ok"] = bool(r.hello and r.hello.get("ok"))
    dev.t.reconnect(10)
    row["ok"] = row["safe"] and row["redeploy_verified"] and row["hello_ok"]
    return row


def run(quick: bool = False) -> dict:
    prof = board_profile()
    n_writes = 20 if quick else 200
    n_deploys = 2 if quick else 10
    rnd = random.Random(1234)
    rows, drows, errors = [], [], []
    hung = []
    t0 = time.monotonic()
    with provisioned_board(clock=CLOCK) as (vb, dev):
        factor = vb.cpu_factor
        k = -1
        while sum(1 for r in rows if r.get("cut")) < n_writes and k < n_writes * 2 and not hung:
            k += 1
            if k % 20 == 0:
                checkpoint("powerloss", {"write_trials": len(rows), "cuts": sum(1 for r in rows if r.get("cut")),
                                         "violations": sum(1 for r in rows if r.get("cut") and not r.get("ok"))})
            try:
                rows.append(run_with_timeout(write_trial, 45, vb, dev, prof, rnd, k))
            except TrialHung as e:
                hung.append(f"write {k}: {e}")
            except Exception as e:  # noqa: BLE001
                errors.append(f"write {k}: {type(e).__name__}: {e}"[:200])
                rows.append({"k": k, "ok": False, "error": str(e)[:200], "cut": True})
                try:
                    if not vb.powered:
                        vb.power_restore()
                    reconnect(dev)
                except Exception:  # noqa: BLE001
                    pass
        for k in range(n_deploys if not hung else 0):
            try:
                drows.append(run_with_timeout(deploy_trial, 60, vb, dev, rnd, k))
            except TrialHung as e:
                hung.append(f"deploy {k}: {e}")
                break
            except Exception as e:  # noqa: BLE001
                errors.append(f"deploy {k}: {type(e).__name__}: {e}"[:200])
                drows.append({"k": k, "ok": False, "error": str(e)[:200]})
    cut = [r for r in rows if r.get("cut")]
    bad = [r for r in cut if not r.get("ok")]
    dcut = [r for r in drows if r.get("cut") or r.get("error")]
    dbad = [r for r in dcut if not r.get("ok")]
    old = sum(1 for r in cut if r.get("levels") == "old" and r.get("config") == "old")
    figs = [
        Figure("power cuts during config/levels writes", "", len(cut), goal=(">=", 200 if not quick else 20),
               n=len(rows), note=f"{old} kept the old record, {len(cut) - old - len(bad)} had the new one"),
        Figure("violations after restore (mixed/corrupt record, unsafe output, no boot)", "", len(bad),
               goal=("==", 0), n=len(cut)),
        Figure("power cuts during a flash deploy", "", len(dcut), n=len(drows),
               note=f"{len(drows) - len(dcut)} deploy(s) finished before the armed cut"),
        Figure("deploy cuts: unsafe output after restore or redeploy not verified", "", len(dbad), goal=("==", 0),
               n=len(drows)),
        Figure("trials that hung (board never answered; campaign stopped there)", "", len(hung), goal=("==", 0),
               note="; ".join(hung)),
    ]
    return {"figures": figs, "clock": CLOCK, "cpu_factor": factor,
            "counts": {"write cuts": len(cut), "deploy cuts": len(dcut), "violations": len(bad) + len(dbad)},
            "setup": "handheld-home; cut at a random byte of the next flash write (seeded); deploy cut armed after "
                     "a random 0-0.4 s delay into a full deploy (about 0.5 s)",
            "details": {"writes": rows[:50], "bad": bad[:20], "deploys": drows, "errors": errors[:20],
                        "wall_s": time.monotonic() - t0}}
