# levels_set under memory pressure (issue #3): the heap is filled so that only `leave` bytes stay free, for `leave`
# swept in small steps, so a MemoryError lands at every allocation point of the request in turn (parse, validation,
# record encoding, file write, reply, audit). Whatever happens, the host's view must match the flash: an ok reply
# <=> the new table is stored (and applied); an error reply (or none) <=> the old table is still stored and applied.
import gc
import json
import os
import time
from mpytest import check, done, app_sandbox

import config
import audit
import store
import board as B
import pscodes as C

d, BOARD = app_sandbox("psoom")

HOG_SLOTS = 4000
hog = [None] * HOG_SLOTS      # the harness's own 32 KB block first, before compiling app.py fragments the heap

import app as A

OUT_PATH = d + "/out.txt"


class FileOut:
    """Replies go to a file: writing a str to a file allocates nothing (the device's stdout does not either), so
    the harness itself never adds a MemoryError."""

    def __init__(self):
        self.f = open(OUT_PATH, "w")

    def write(self, s):
        self.f.write(s)

    def take(self):
        self.f.close()
        with open(OUT_PATH) as f:
            txt = f.read()
        self.f = open(OUT_PATH, "w")
        return [json.loads(x) for x in txt.split("\n") if x.strip()]


out = FileOut()
a = A.App(BOARD, out)
a.audit = audit.Audit(audit.AUDIT_PATH)
TABLES = ([80, 160, 240, 320, 400], [70, 150, 230, 310, 390])


def squeeze(leave):
    """Fill the heap until about `leave` bytes are free (in whatever holes remain)."""
    gc.collect()
    i = 0
    size = 8192
    while i < HOG_SLOTS and size >= 16:
        free = gc.mem_free()
        if free <= leave:
            break
        n = min(size, free - leave)
        if n < 16:
            break
        try:
            hog[i] = bytearray(n - 8 if n > 24 else 16)
            i += 1
        except MemoryError:
            size //= 2
    return i


def release():
    for i in range(HOG_SLOTS):
        hog[i] = None
    gc.collect()


def stored_levels():
    rec = store.read(config.LEVELS_PATH)
    return rec["levels_ua"] if rec else list(BOARD["levels_ua"])


n_ok = n_err = n_silent = n_unaudited = n_escaped = 0
bad = {0: [], 1: []}          # by request form: 0 whole table, 1 one level
codes_bad = []
two = []
cur = 0
store.write_atomic(config.LEVELS_PATH, {"levels_ua": TABLES[0]})
a.settings.levels = list(TABLES[0])
out.take()
STEP_B = 96
for step in range(300):
    leave = step * STEP_B
    old = TABLES[cur]
    form = 0 if step % 3 == 0 else 1
    if form == 0:
        want = TABLES[1 - cur]
        line = json.dumps({"id": step, "cmd": "levels_set", "levels_ua": want, "operator": "tech%d" % step}).encode()
    else:
        lv = 1 + (step % 5)
        want = list(old)
        want[lv - 1] = TABLES[1 - cur][lv - 1]
        line = json.dumps({"id": step, "cmd": "levels_set", "level": lv, "ua": want[lv - 1]}).encode()
    squeeze(leave)
    escaped = None
    try:
        a.handle_line(line, 0)
    except MemoryError:
        escaped = True
    except Exception as e:
        escaped = e
    release()
    if escaped is not None:
        n_escaped += 1
    replies = [r for r in out.take() if "ok" in r]
    got = stored_levels()
    mem = list(a.settings.levels)
    if len(replies) > 1:
        two.append((step, replies))
    r = replies[0] if replies else None
    if r is not None and r.get("ok"):
        n_ok += 1
        if r.get("audited") is False:
            n_unaudited += 1
        if not (got == want and r["levels_ua"] == want and mem == want and r["id"] == step):
            bad[form].append(("ok reply but", step, leave, got, r, mem))
    else:
        if r is None:
            n_silent += 1
        else:
            n_err += 1
            if r.get("error") not in C.ERROR_CODES:
                codes_bad.append(r)
        if not (got == old and mem == old):
            bad[form].append(("error reply but saved", step, leave, r, escaped, got, mem))
    # the next trial starts from a whole stored table (a one-level change leaves a mixed one: store a clean one)
    if got == TABLES[1 - cur]:
        cur = 1 - cur
    elif got != TABLES[cur]:
        store.write_atomic(config.LEVELS_PATH, {"levels_ua": TABLES[cur]})
        a.settings.levels = list(TABLES[cur])
        out.take()

print("levels_set under pressure: ok", n_ok, "(unaudited", n_unaudited, ") error", n_err, "no reply", n_silent,
      "escaped", n_escaped,
      "violations", len(bad[0]) + len(bad[1]))
for v in (bad[0] + bad[1])[:5]:
    print("VIOLATION", v)
check("oom_whole_table_reply_matches_flash", not bad[0], bad[0][:3])
check("oom_one_level_reply_matches_flash", not bad[1], bad[1][:3])
check("oom_both_outcomes_seen", n_ok > 5 and n_err + n_silent > 5, (n_ok, n_err, n_silent))
check("oom_always_a_reply", n_silent == 0, n_silent)
check("oom_never_escapes_handle_line", n_escaped == 0, n_escaped)
check("oom_never_two_replies", not two, two[:3])
check("oom_error_codes_known", not codes_bad, codes_bad[:3])
# config_set follows the same rule: the reply says what the flash holds
def stored_default_level():
    rec = store.read(config.CONFIG_PATH)
    return rec["default_level"] if rec else a.settings.config["default_level"]


cfg_bad, cfg_ok, cfg_err = [], 0, 0
for step in range(300):
    old_lv = stored_default_level()
    want_lv = 2 if old_lv == 1 else 1
    line = json.dumps({"id": 5000 + step, "cmd": "config_set", "config": {"default_level": want_lv}}).encode()
    squeeze(step * STEP_B)
    escaped = None
    try:
        a.handle_line(line, 0)
    except Exception as e:
        escaped = e
    release()
    replies = [r for r in out.take() if "ok" in r]
    got = stored_default_level()
    r = replies[0] if replies else None
    if escaped is not None or len(replies) != 1:
        cfg_bad.append(("reply count", step, escaped, replies))
    elif r.get("ok"):
        cfg_ok += 1
        if not (got == want_lv and r["config"]["default_level"] == want_lv
                and a.settings.config["default_level"] == want_lv):
            cfg_bad.append(("ok reply but", step, got, r))
    else:
        cfg_err += 1
        if not (got == old_lv and a.settings.config["default_level"] == old_lv):
            cfg_bad.append(("error reply but saved", step, got, r))
print("config_set under pressure: ok", cfg_ok, "error", cfg_err, "violations", len(cfg_bad))
check("oom_config_set_reply_matches_flash", not cfg_bad, cfg_bad[:3])
check("oom_config_set_both_outcomes_seen", cfg_ok > 5 and cfg_err > 5, (cfg_ok, cfg_err))

# without pressure the device works as before, and a fresh App reads back exactly what it last reported
hog = None                    # (the harness's block goes too: no pressure left at all)
gc.collect()
a.handle_line(json.dumps({"id": 9001, "cmd": "levels_set", "levels_ua": TABLES[1 - cur]}).encode(), 0)
r = [x for x in out.take() if x.get("id") == 9001]
check("oom_then_normal_levels_set", r and r[0]["ok"] and r[0]["audited"] and stored_levels() == TABLES[1 - cur], r)
a.handle_line(b'{"id": 9002, "cmd": "hello"}', 0)
r = [x for x in out.take() if x.get("id") == 9002]
check("oom_then_hello", r and r[0]["ok"] and r[0]["levels_ua"] == TABLES[1 - cur], r)
b = A.App(BOARD, FileOut())
check("oom_reload_matches", b.settings.levels == a.settings.levels == stored_levels(),
      (b.settings.levels, a.settings.levels))
check("oom_reload_status_ok", b.settings.status == "ok", b.settings.status)
done()
