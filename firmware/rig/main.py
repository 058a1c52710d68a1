# HIL rig Pico: serve the rig protocol on the USB serial port (same lines as the virtual rig), draining the
# continuous edge/ADC capture whenever no request is pending.
import sys
import json
import select

import rigserve
import righw

with open("/board.json") as f:
    profile = json.load(f)
rig = rigserve.Rig(righw.RigHardware(profile), profile)
stdin = sys.stdin.buffer
stdout = sys.stdout.buffer
poller = select.poll()
poller.register(sys.stdin, select.POLLIN)


def read_chunk():
    if poller.poll(2):          # ms
        return stdin.read(1)
    return None


rigserve.serve(rig, read_chunk, stdout.write)
