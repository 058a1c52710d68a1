# Pure firmware modules on the MicroPython unix port (single-precision-free integer maths, 30-bit small ints).
import os
from mpytest import check, raises, done
import planner
import store
import protocol
import pscodes as C

SMALL = 1 << 30

# planner over a grid of waveforms: balanced, non-overlapping, exact period, no long ints in the schedule
bad = 0
count = 0
for ph in (20, 21, 99, 250, 300, 777, 1000):
    for gp in (0, 1, 50, 100, 333, 500):
        for rt in (500, 1000, 2000, 8000, 10000, 30000, 50000, 123457, 500000):
            period_us = (1000000000 + rt // 2) // rt
            if 2 * ph + gp > period_us:
                raises("plan_rejects_%d_%d_%d" % (ph, gp, rt), planner.PlanError, planner.plan, ph, gp, rt, 125000000)
                continue
            p = planner.plan(ph, gp, rt, 125000000)
            count += 1
            w = p["active_word"]
            cc_a = w & 0xFFFF
            cc_b = w >> 16
            ok = cc_a == p["top_pair"] + 1 - cc_b and cc_a <= cc_b and p["top_pair"] <= planner.TOP_MAX
            total = 0
            for t, n in p["top_segments"]:
                total += (t + 1) * n
                ok = ok and t < 0xFFFF
            ok = ok and total * p["div"] == p["period_ticks"] and p["period_ticks"] < SMALL
            ok = ok and sum(n for _, n in p["cc_segments"]) == sum(n for _, n in p["top_segments"])
            if not ok:
                bad += 1
                print("bad plan", ph, gp, rt)
check("planner_grid_%d_plans" % count, bad == 0)

# store on the unix VFS: round trip, corruption, stale temp file
import time
d = "/tmp/pst_%d" % (time.ticks_us() & 0xFFFFFF)
try:
    os.mkdir(d)
except OSError:
    pass
path = d + "/rec.bin"
store.write_atomic(path, {"levels_ua": [80, 160]})
check("store_round_trip", store.read(path) == {"levels_ua": [80, 160]})
with open(path, "rb") as f:
    blob = bytearray(f.read())
blob[-2] ^= 0x20
with open(path, "wb") as f:
    f.write(blob)
raises("store_crc_rejected", store.StoreError, store.read, path)
store.write_atomic(path, {"x": 1})
with open(path + ".tmp", "wb") as f:
    f.write(b"PSC1\x01")
check("store_stale_tmp_ignored", store.read(path) == {"x": 1})
check("store_stale_tmp_removed", ".tmp" not in " ".join(os.listdir(d)) if hasattr(os, "listdir") else True)
check("store_missing_is_none", store.read(d + "/nothing.bin") is None)

# protocol
for line in (b"\xff\xfe", b"{", b"[]", b"{\"id\":1}", b"{\"id\":[1],\"cmd\":\"x\"}", b"null", b"1e999",
             b"{\"cmd\":5}", b"[" * 200 + b"]" * 200,
             # MicroPython's json.loads takes these (',' and ':' read as white space); the firmware must not
             b'{"cmd" "hello"}', b'{"id":1 "cmd":"hello"}', b'{"cmd":"hello",}', b'{,"cmd":"hello"}',
             b'{"cmd"::"hello"}', b'{"cmd":"hello","l":[1 2]}', b'{"cmd":"hello","l":[1,,2]}'):
    try:
        protocol.parse(line)
        check("parse_garbage_%r" % line[:8], False, "accepted")
    except protocol.ProtoError as e:
        check("parse_garbage_%r" % line[:8], e.code in C.ERROR_CODES)
rid, cmd, req = protocol.parse(b'{"id": 7, "cmd": "hello"}')
check("parse_ok", rid == 7 and cmd == "hello")
r = protocol.LineReader(C.MAX_LINE)
out = r.feed(b"a" * 5000 + b"\n{\"id\":2,\"cmd\":\"status\"}\n")
check("line_too_long", isinstance(out[0], protocol.ProtoError) and out[0].code == C.E_LINE_TOO_LONG)
check("line_after_long", out[1] == b'{"id":2,"cmd":"status"}')
check("reader_bounded", len(r.buf) <= C.MAX_LINE)
e = raises("num_nan", protocol.ProtoError, protocol.get_num_milli, {"r": float("nan")}, "r", 500, 500000)
check("num_ok", protocol.get_num_milli({"r": 0.5}, "r", 500, 500000) == 500)
done()
