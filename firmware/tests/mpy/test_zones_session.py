# Treatment zones (issue 17) on the unix port, sessions: audit entries carry the zone, start_low and the last
# session's level (persisted; a damaged record reads as level 1), the zone button's long press and LED pattern.
import gc
import json
import machine
import rp2
from mpytest import check, raises, done, app_sandbox, app_with_output, Out

import pscodes as C

d, BOARD = app_sandbox("pszones")

import app as A
import audit
import zonectl
import ui as U


# ---------------------------------------------------------------- the app: zone bound at the choke point
a, out = app_with_output(BOARD)


def req(obj):
    del machine.log[:]  # (the fakes' logs of register writes and DMA channels would fill the heap over
    del rp2.made[:]     # hundreds of sessions)
    gc.collect()
    for item in a.reader.feed(json.dumps(obj).encode() + b"\n"):
        a.handle_line(item, 0)
    rs = [x for x in out.lines() if "ok" in x]
    return rs[-1] if rs else None


def iset_ua():
    """What the ISET DAC was last told, in uA (gain 1, offset 0 in this profile): duty x I_FS."""
    return a.amp.pwm.d * BOARD["analog"]["i_fs_ua"] // 65535


cap = BOARD["limits"]["cap_ua"]
limits = {"face": 400, "jawline": 400, "periorbital": 160, "neck": 200, "near_ear": 200}

# audit of level changes carries the zone
req({"id": 17, "cmd": "set_zone", "zone": "neck"})
req({"id": 18, "cmd": "levels_set", "level": 1, "ua": 79, "operator": "zt"})
e = req({"id": 19, "cmd": "audit"})["entries"][-1]
check("audit_zone", e["zone"] == "neck" and e["zone_limit_ua"] == 200 and e["after_ua"] == 79, e)
req({"id": 20, "cmd": "levels_set", "level": 1, "ua": 80, "operator": "zt"})
req({"id": 21, "cmd": "set_zone", "zone": "face"})

# start_low (default on for handheld-home) and the last session's level
cfg = req({"id": 22, "cmd": "config_get"})["config"]
check("start_low_default_on_home", cfg["start_low"] is True, cfg)
r = req({"id": 23, "cmd": "start", "level": 4, "phase_us": 200, "gap_us": 50, "rate_hz": 10})
check("start_low_level_1", r["level"] == 1 and r["start_bound"] == C.START_BOUND_LOW and r["requested_level"] == 4, r)
req({"id": 24, "cmd": "set_level", "level": 3})
req({"id": 25, "cmd": "stop"})
r = req({"id": 26, "cmd": "config_set", "config": {"start_low": "yes"}})
check("start_low_bad_type", r["ok"] is False and r["error"] == C.E_BAD_TYPE, r)
req({"id": 27, "cmd": "config_set", "config": {"start_low": False}})
r = req({"id": 28, "cmd": "start", "level": 5, "phase_us": 200, "gap_us": 50, "rate_hz": 10})
check("never_above_last_session", r["level"] == 3 and r["start_bound"] == C.START_BOUND_LAST, r)
req({"id": 29, "cmd": "stop"})
zc2 = zonectl.ZoneControl(BOARD)
check("last_level_persisted", zc2.last_level == 3, zc2.last_level)
with open(zonectl.SESSION_PATH, "wb") as f:
    f.write(b"garbage")
zc3 = zonectl.ZoneControl(BOARD)
check("corrupt_session_record_reads_as_level_1", zc3.last_level == 1, zc3.last_level)
req({"id": 30, "cmd": "config_set", "config": {"start_low": True}})

# the zone button: long press of POWER steps the zone, a short press still starts / stops
bt = [b for b in a.ui.buttons if b.name == "power"][0]
lp = BOARD["zones"]["select"]["long_press_ms"]
bit = 1 << bt.gpio
up = 0x3FFFFFFF


def hold(t0, ms):
    """Press from t0 for ms (polling every 4 ms), then release; returns what the button reported."""
    got = []
    t = t0
    while t < t0 + ms:
        r = bt.poll(t, up & ~bit)
        if r:
            got.append(r)
        t += 4
    for _ in range(20):
        r = bt.poll(t, up)
        if r:
            got.append(r)
        t += 4
    return got, t


got, t = hold(1000, 150)
check("short_press_on_release", got == [U.PRESS], got)
got, t = hold(t + 100, lp + 300)
check("long_press_once", got == [U.LONG], got)
got, t = hold(t + 100, 10)
check("bounce_ignored", got == [], got)
z0 = a.zc.i
a.on_button("power_long", 5000)
check("long_press_steps_zone", a.zc.i == (z0 + 1) % 5, a.zc.i)
check("led_pattern_started", a.ui.zone_k == a.zc.i + 1, a.ui.zone_k)
a.ui.show(5000 + C.ZONE_BLINK_MS + 1, "idle")
check("led_on_in_blink", a.ui.led_duty == 65535, a.ui.led_duty)
a.ui.show(5000 + 2 * C.ZONE_BLINK_MS + 1, "idle")
check("led_off_between_blinks", a.ui.led_duty == 0, a.ui.led_duty)
# a running ems session in face, long press to jawline (allowed): continues; to periorbital: the session stops
a.set_zone(0, 6000)
req({"id": 31, "cmd": "start", "level": 1, "program": "ems"})
a.on_button("power_long", 7000)
check("zone_button_keeps_allowed_session", a.state in A.STIM_STATES and a.zc.zone()["name"] == "jawline", a.state)
a.on_button("power_long", 8000)
check("zone_button_stops_disallowed_session", a.state == C.ST_IDLE and a.zc.zone()["name"] == "periorbital"
      and iset_ua() == 0, (a.state, a.zc.zone()["name"], iset_ua()))
# a short press in periorbital starts a program the zone allows
a.on_button("power", 9000)
check("button_start_in_zone", a.state in A.STIM_STATES and a.program == "microcurrent", (a.state, a.program))
req({"id": 32, "cmd": "stop"})
done()
