# HIL rig boot: DUT power on, contact closed, load bank at 2 kohm, nothing injected (FAULT_INJ released).
from machine import Pin
import json

try:
    with open("/board.json") as f:
        _p = json.load(f)["pins"]
    Pin(_p["FAULT_INJ"], Pin.IN, Pin.PULL_UP)
    for _n in ("PRESS_POWER", "PRESS_UP", "PRESS_DOWN"):
        Pin(_p[_n], Pin.IN, Pin.PULL_UP)
    Pin(_p["POWER_EN"], Pin.OUT, value=1)
    Pin(_p["CONTACT_EN"], Pin.OUT, value=1)
except Exception:
    pass
