# HIL rig Pico: serve the rig protocol on the USB serial port (same lines as the virtual rig).
import sys
import json

import rigserve
import righw

with open("/board.json") as f:
    profile = json.load(f)
rig = rigserve.Rig(righw.RigHardware(profile), profile)
stdin = sys.stdin.buffer
stdout = sys.stdout.buffer


def read_chunk():
    return stdin.read(1)


rigserve.serve(rig, read_chunk, stdout.write)
