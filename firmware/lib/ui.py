# Buttons (power/up/down, active low, sampled and debounced in the main loop) and indicators (status LED PWM,
# red therapy LED and vibration motor where the board has them). A soft pin IRQ notes when a button's level moved,
# so the main loop may sleep longer while nothing happens and still time the debounce from the real edge.
import time
from machine import Pin, PWM

from pscodes import DEBOUNCE_MS, ZONE_BLINK_MS

BUTTONS = ("BTN_POWER", "BTN_UP", "BTN_DOWN")
NAMES = {"BTN_POWER": "power", "BTN_UP": "up", "BTN_DOWN": "down"}


PRESS = 1
LONG = 2


class Button:
    def __init__(self, gpio, name, long_ms=0):
        self.pin = Pin(gpio, Pin.IN, Pin.PULL_UP)
        self.gpio = gpio
        self.name = name
        self.stable = 1
        self.last_raw = 1
        self.t_change = 0
        self.edge = False
        self.t_edge = 0
        # long_ms > 0 (the zone button, board profile zones.select): a press counts on release when shorter than
        # long_ms; held that long it counts once as a long press (and its release does nothing)
        self.long_ms = long_ms
        self.t_down = 0
        self.held = False
        self.long_fired = False
        self.pin.irq(handler=self._on_edge, trigger=Pin.IRQ_FALLING | Pin.IRQ_RISING)

    def _on_edge(self, _pin):
        self.t_edge = time.ticks_ms()
        self.edge = True

    def busy(self):
        """True while a level change is not yet debounced (the loop then samples at its fast rate)."""
        return self.edge or self.last_raw != self.stable or (self.held and not self.long_fired)

    def poll(self, now, gpio_in):
        """PRESS once per debounced press (high -> low held for DEBOUNCE_MS), or with long_ms PRESS on a short
        press's release / LONG once a press lasted long_ms; 0 otherwise. gpio_in = SIO GPIO_IN word."""
        raw = (gpio_in >> self.gpio) & 1
        edge = self.edge
        self.edge = False
        if raw != self.last_raw:
            self.last_raw = raw
            # the IRQ saw the edge (possibly well before this sample): debounce from there
            self.t_change = self.t_edge if edge else now
            return 0
        if raw != self.stable and time.ticks_diff(now, self.t_change) >= DEBOUNCE_MS:
            self.stable = raw
            if not self.long_ms:
                return PRESS if raw == 0 else 0
            if raw == 0:
                self.held = True
                self.long_fired = False
                self.t_down = self.t_change
                return 0
            was_short = self.held and not self.long_fired
            self.held = False
            return PRESS if was_short else 0
        if self.held and not self.long_fired and self.stable == 0 and \
                time.ticks_diff(now, self.t_down) >= self.long_ms:
            self.long_fired = True
            return LONG
        return 0


class UI:
    def __init__(self, board):
        pins = board["pins"]
        zs = board.get("zones")
        sel = zs.get("select") if isinstance(zs, dict) else None     # validated by board.py (zones.py)
        zone_button, long_ms = (sel["button"], sel["long_press_ms"]) if sel else (None, 0)
        self.buttons = [Button(pins[b], NAMES[b], long_ms if NAMES[b] == zone_button else 0) for b in BUTTONS]
        self.zone_k = 0           # zone LED pattern: k blinks (the zone's 1-based place in the profile) from zone_t0
        self.zone_t0 = 0
        self.led = PWM(Pin(pins["LED_STATUS"]), freq=1000, duty_u16=0)
        self.red = None
        self.vib = None
        feats = board.get("features", {})
        if feats.get("red_led") and pins.get("LED_RED") is not None:
            self.red = PWM(Pin(pins["LED_RED"]), freq=1000, duty_u16=0)
        if feats.get("vibration") and pins.get("VIBRATION") is not None:
            self.vib = Pin(pins["VIBRATION"], Pin.OUT, value=0)
        self.vib_until = 0
        self.vib_on = False
        self.led_duty = -1
        self.red_duty = -1

    def poll(self, now, gpio_in):
        """List of button names pressed since the last poll."""
        out = []
        for b in self.buttons:
            r = b.poll(now, gpio_in)
            if r == PRESS:
                out.append(b.name)
            elif r == LONG:
                out.append(b.name + "_long")
        return out

    def show_zone(self, now, k):
        """Status LED: one dark ZONE_BLINK_MS, then k blinks of ZONE_BLINK_MS on / off (zone k of the profile)."""
        self.zone_k = k
        self.zone_t0 = now

    def _zone_duty(self, now):
        el = time.ticks_diff(now, self.zone_t0)
        slot = el // ZONE_BLINK_MS        # 0: dark; odd slots 1, 3, ..: on; even: off
        if slot >= 2 * self.zone_k + 1:
            self.zone_k = 0
            return -1
        return 65535 if slot & 1 else 0

    def busy(self):
        """Something needs the main loop's fast rate: a button press being debounced, the vibration pulse."""
        if self.vib_on or self.zone_k:
            return True
        for b in self.buttons:
            if b.busy():
                return True
        return False

    def buzz(self, now, ms=60):
        if self.vib is not None:
            self.vib.value(1)
            self.vib_on = True
            self.vib_until = time.ticks_add(now, ms)

    def show(self, now, state):
        """Status LED: idle dim, running on, ramping/paused slow blink, fault/charging fast blink."""
        if state == "running":
            d = 65535
        elif state in ("ramping", "paused"):
            d = 65535 if (now // 500) & 1 else 4000
        elif state in ("fault", "charging"):
            d = 65535 if (now // 125) & 1 else 0
        else:
            d = 3000
        if self.zone_k:
            zd = self._zone_duty(now)
            if zd >= 0:
                d = zd
        if d != self.led_duty:
            self.led.duty_u16(d)
            self.led_duty = d
        if self.red is not None:
            rd = 40000 if state in ("running", "ramping") else 0
            if rd != self.red_duty:
                self.red.duty_u16(rd)
                self.red_duty = rd
        if self.vib_on and time.ticks_diff(now, self.vib_until) >= 0:
            self.vib.value(0)
            self.vib_on = False

    def off(self):
        self.led.duty_u16(0)
        if self.red is not None:
            self.red.duty_u16(0)
        if self.vib is not None:
            self.vib.value(0)
