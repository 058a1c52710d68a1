"""Public API for a running picostim board: `picostim.Device(port)`.

Speaks the JSON-lines protocol of firmware/PROTOCOL.md (codes from firmware/lib/pscodes.py via
picostim.shared.codes). Every request gets an id; replies are matched by id, events (`"ev"`) are queued and
handed out by `events()` / `telemetry()`; lines that are not protocol (REPL or boot chatter) are kept in `noise`.
"""
from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Iterator

from .shared import codes
from .transport import SerialTransport, TransportError

DEFAULT_TIMEOUT = 3.0
TICKS_MASK = (1 << 30) - 1      # MicroPython ticks_us/ticks_ms wrap at 2**30


def utc_now() -> str:
    """The host's UTC time for audit entries, e.g. 2026-12-04T02:51:07Z."""
    import datetime as dt
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class DeviceError(Exception):
    """The device answered {"ok": false}: `.code` is a pscodes error code, `.detail` its explanation."""

    def __init__(self, cmd: str, code: str, detail: str, reply: dict):
        self.cmd, self.code, self.detail, self.reply = cmd, code, detail, reply
        super().__init__(f"{cmd}: device refused: {code}" + (f" ({detail})" if detail else ""))


class ProtocolTimeout(TransportError):
    pass


class NoMicroPython(TransportError):
    """Nothing on the port speaks MicroPython (no application, no REPL prompt)."""


REPL_PROMPT_S = 4.0     # a MicroPython board prints '>>> ' well within this after Ctrl-C, Ctrl-B


@dataclass
class TelemetryStats:
    received: int = 0
    lost: int = 0          # samples missing according to seq gaps
    gaps: int = 0          # number of gaps seen
    last_seq: int | None = None


class Device:
    """A picostim board running its application (main.py).

    `port` is a serial port path / pyserial URL, or an open SerialTransport (then `owns_transport` says whether
    close() closes it).
    """

    def __init__(self, port, timeout: float = DEFAULT_TIMEOUT, owns_transport: bool | None = None,
                 start_app: bool = False, signer=None):
        if isinstance(port, SerialTransport):
            self.t = port
            self._owns = bool(owns_transport)
        else:
            self.t = SerialTransport(port)
            self._owns = True if owns_transport is None else owns_transport
        self.timeout = timeout
        self._next_id = 1
        self._events: deque = deque(maxlen=10000)
        self.noise: deque = deque(maxlen=200)
        self.telemetry_stats = TelemetryStats()
        self._tel_us: int | None = None          # last sample time of the telemetry stream (unwrapped ticks_us)
        self._tel_ms_base: float | None = None
        self._info: dict | None = None
        # production lock (issue 14): a picostim.auth.Signer signs privileged requests to a locked unit
        self.signer = signer
        if start_app:
            self.ensure_app()

    # -- plumbing ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._owns:
            self.t.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def port(self) -> str:
        return self.t.port

    def _read_message(self, timeout: float) -> dict | None:
        """Next protocol object (reply or event) within `timeout`; non-JSON lines go to `noise`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            line = self.t.read_line(left)
            if line is None:
                return None
            text = line.decode("utf-8", errors="replace").strip()
            if not text.startswith("{"):
                if text:
                    self.noise.append(text)
                continue
            try:
                obj = json.loads(text)
            except ValueError:
                self.noise.append(text)
                continue
            if isinstance(obj, dict):
                return obj
            self.noise.append(text)

    def send_raw(self, line: bytes) -> None:
        """Write bytes as they are (robustness tests: garbage, huge lines)."""
        self.t.write(line)

    def request(self, cmd: str, timeout: float | None = None, **args) -> dict:
        """Send one request and return its reply (raises DeviceError on {"ok": false})."""
        rid = self._next_id
        self._next_id += 1
        msg = {"id": rid, "cmd": cmd, **args}
        nonce = self._nonce_to_sign(cmd, args)
        if nonce is not None:
            line = self.signer.sign_line(self.info["uid"], msg, nonce) + b"\n"
        else:
            line = json.dumps(msg, separators=(",", ":")).encode() + b"\n"
        if len(line) > codes.MAX_LINE:
            raise ValueError(f"{cmd}: request is {len(line)} bytes, the device accepts at most {codes.MAX_LINE}")
        self.t.write(line)
        return self.wait_reply(rid, cmd, timeout)

    def _nonce_to_sign(self, cmd: str, args: dict) -> str | None:
        """With a signer, a privileged request to a locked unit is signed: the unit's current nonce (asked just
        before: every signed attempt uses one up), else None (unlocked unit, no signer, or firmware without lock)."""
        if self.signer is None or "mac" in args:
            return None
        from .auth import needs_signature
        if not needs_signature(cmd, args):
            return None
        try:
            st = self.request("nonce")
        except DeviceError as e:
            if e.code == codes.E_UNKNOWN_CMD:
                return None
            raise
        return st["nonce"] if st.get("locked") else None

    def wait_reply(self, rid, cmd: str = "?", timeout: float | None = None) -> dict:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            obj = self._read_message(max(0.0, deadline - time.monotonic()))
            if obj is None:
                hint = ""
                if any(">>>" in n or "raw REPL" in n for n in self.noise):
                    hint = " (the board is at the REPL: the application is not running; try Device.ensure_app())"
                raise ProtocolTimeout(f"{self.port}: no reply to {cmd!r} within {timeout:.1f} s{hint}")
            if "ev" in obj:
                self._events.append(obj)
                continue
            if obj.get("id") == rid or (obj.get("id") is None and obj.get("ok") is False):
                if obj.get("ok") is True:
                    return obj
                raise DeviceError(cmd, str(obj.get("error")), str(obj.get("detail", "")), obj)
            # A reply to an older request we stopped waiting for: ignore.

    def ensure_app(self, timeout: float = 10.0) -> dict:
        """Make sure the application answers; if the board sits at the REPL, soft-reset it into main.py."""
        try:
            return self.hello(timeout=1.5, start_app=False)
        except ProtocolTimeout:
            pass
        from .rawrepl import RawRepl
        repl = RawRepl(self.t)
        self.t.write(b"\r\x03\x03\x02")     # leave any raw REPL / stop a stuck program, back to the friendly REPL
        try:
            self.t.read_until(b">>> ", REPL_PROMPT_S)
        except TransportError:
            raise NoMicroPython(
                f"{self.port}: no MicroPython here: neither the picostim application nor a MicroPython REPL "
                f"answers (no reply to hello, no '>>>' after Ctrl-C). Is this a Pico with MicroPython? Install it "
                f"with `picostim flash --uf2 micropython.uf2 -b BOARD -p PORT`") from None
        time.sleep(0.1)
        self.t.drain(quiet_s=0.1)
        repl.soft_reset(run_main=True)
        return self.hello(timeout=timeout, start_app=False)

    # -- protocol commands (one method per PROTOCOL.md row) -----------------------------------------------------
    def hello(self, timeout: float | None = None, start_app: bool = False) -> dict:
        if start_app:
            return self.ensure_app()
        # The app may still be booting (boot event, REPL chatter): retry until the deadline.
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._info = self.request("hello", timeout=min(1.0, max(0.1, deadline - time.monotonic())))
                return self._info
            except ProtocolTimeout:
                if time.monotonic() >= deadline:
                    raise
            except TransportError:
                # Board reset / re-enumerated (USB port re-created): reopen and ask again.
                if time.monotonic() >= deadline:
                    raise
                self.t.reconnect(wait_s=max(0.5, deadline - time.monotonic()))

    @property
    def info(self) -> dict:
        return self._info if self._info is not None else self.hello()

    def status(self) -> dict:
        return self.request("status")

    def config_get(self) -> dict:
        return self.request("config_get")["config"]

    def config_set(self, partial: dict) -> dict:
        return self.request("config_set", config=partial)["config"]

    def levels_get(self) -> list[int]:
        return self.request("levels_get")["levels_ua"]

    def levels_set(self, levels_ua: list[int] | None = None, *, level: int | None = None, ua: int | None = None,
                   operator: str | None = None, utc: str | None = None) -> list[int]:
        """Write the level table (or one level). The audit entry gets `operator` (the device refuses an empty one;
        omitted: "unknown") and the host's UTC time (`utc`, default now: the board has no calendar clock)."""
        who = {} if operator is None else {"operator": operator}
        who["utc"] = utc or utc_now()
        if levels_ua is not None:
            return self.request("levels_set", levels_ua=list(levels_ua), **who)["levels_ua"]
        if level is None or ua is None:
            raise ValueError("levels_set needs levels_ua, or level and ua")
        return self.request("levels_set", level=level, ua=ua, **who)["levels_ua"]

    def start(self, level: int, program: str | None = None, duration_s: float | None = None, zone: str | None = None,
              raise_to_level: bool = True, **waveform) -> dict:
        """Start a session. The reply states what applies: `level`, `target_ua` = min(level uA, zone limit) and
        `bound` (`level` or `zone`), `zone`, `zone_limit_ua`.

        A device may start a session lower than asked (config `start_low`: level 1; never above the last session's
        final level): its reply then has `start_bound`. The device raises a level only on a button press or a
        `set_level`; with raise_to_level (the default: the caller asked for `level` explicitly) this method sends
        that set_level (the device ramps it, S8) and returns the start reply with the raised `level`/`target_ua`/
        `bound`, `start_bound` kept so the caller sees what happened. raise_to_level=False leaves the session where
        the device started it, as the handheld's own power button does."""
        args = {"level": level, **{k: v for k, v in waveform.items() if v is not None}}
        if program is not None:
            args["program"] = program
        if zone is not None:
            args["zone"] = zone
        if duration_s is not None:
            args["duration_s"] = duration_s
        reply = self.request("start", **args)
        if raise_to_level and reply.get("start_bound") and reply.get("level", level) < level:
            raised = self.set_level(level)
            reply = {**reply, **{k: raised[k] for k in ("level", "target_ua", "bound", "level_ua", "state")
                                 if k in raised}, "raised_by": "set_level"}
        return reply

    def stop(self) -> dict:
        return self.request("stop")

    def set_level(self, level: int, ua: int | None = None) -> dict:
        """Change the running session's level; `ua` = live trial amplitude (field tuning, not persisted)."""
        return self.request("set_level", level=level, **({} if ua is None else {"ua": ua}))

    def set_zone(self, zone: str) -> dict:
        """Choose the treatment zone; while stimulating its limit holds at once (lower: immediately, higher: ramped),
        or the device refuses (`zone_refused`) when the running program is not allowed there."""
        return self.request("set_zone", zone=zone)

    def zones(self) -> dict:
        """The board's zones as the device applies them: {zones: [{name, limit_ua, programs, ...}], zone, default}."""
        return self.request("zones")

    def clear_fault(self) -> dict:
        return self.request("clear_fault")

    def telemetry_enable(self, on: bool = True, rate_hz: int = 20) -> int:
        r = self.request("telemetry", on=on, rate_hz=rate_hz)
        if on:
            self.telemetry_stats = TelemetryStats()
            self._tel_us = self._tel_ms_base = None
        return r.get("rate_hz", rate_hz)

    def audit(self, clear: bool = False) -> list[dict]:
        return self.request("audit", **({"clear": True} if clear else {}))["entries"]

    def selftest(self, expect_ohm: int | None = None, tol_pct: int | None = None, probe: bool | None = None,
                 timeout: float = 10.0) -> dict:
        """The device's self-test. With expect_ohm (a known resistor on the electrodes) or probe=True it also drives
        a short low-current probe and reports measured_ohm, probe_ua and an `output_path` check (within tol_pct of
        expect_ohm, or inside the board's contact range without it)."""
        args = {}
        if expect_ohm is not None:
            args["expect_ohm"] = int(expect_ohm)
        if tol_pct is not None:
            args["tol_pct"] = int(tol_pct)
        if probe is not None:
            args["probe"] = bool(probe)
        return self.request("selftest", timeout=timeout, **args)

    # -- production lock (issue 14; picostim.auth) ----------------------------------------------------------------
    def lock_state(self) -> dict:
        """{locked, key_id, nonce}"""
        return self.request("nonce")

    def lock(self, signer=None) -> dict:
        """Store this unit's key (derived from the signer's line secret and the unit's uid) and lock it: from now on
        its USB port speaks the protocol alone and privileged requests need the key. Verified with a signed `auth`."""
        signer = signer or self.signer
        if signer is None:
            raise ValueError("lock needs a line secret (--key-file / PICOSTIM_KEY_FILE)")
        self.signer = signer
        uid = self.hello()["uid"]
        r = self.request("lock", key=signer.unit_key(uid).hex(), key_id=signer.key_id)
        self._info = None
        check = self.request("auth")
        if not check.get("verified"):
            raise DeviceError("lock", "auth_failed", "the unit does not verify requests signed with this key", check)
        return r

    def unlock(self, wait_s: float = 15.0) -> dict:
        """Signed unlock; the unit resets and comes back unlocked (REPL and deploys work again). Returns the new
        hello."""
        if not self.request("unlock").get("state") == "reset":
            return self.hello()         # it was not locked
        time.sleep(0.3)
        self.t.reconnect(wait_s)
        self._events.clear()
        # an app that fails to start leaves an unlocked unit at its REPL: start it from there (ensure_app)
        return self.ensure_app(timeout=wait_s)

    def bootloader(self) -> dict:
        """Reboot into BOOTSEL (the port disappears; a RPI-RP2 drive appears on real hardware)."""
        return self.request("bootloader")

    def reset(self, wait_s: float = 15.0) -> dict:
        """Hard reset, then wait for the port to come back and the application to answer; returns the new hello."""
        self.request("reset")
        time.sleep(0.3)
        try:
            self.t.reconnect(wait_s)
        except TransportError:
            raise
        self._events.clear()
        return self.hello(timeout=wait_s)

    # -- events ------------------------------------------------------------------------------------------------
    def poll_events(self, timeout: float = 0.0) -> list[dict]:
        """Events received so far plus any arriving within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self._read_message(max(0.0, deadline - time.monotonic()))
            if obj is None:
                break
            if "ev" in obj:
                self._events.append(obj)
        out = list(self._events)
        self._events.clear()
        return out

    def events(self, timeout: float | None = None) -> Iterator[dict]:
        """Yield events as they arrive (all kinds); stops after `timeout` seconds of silence if given."""
        while True:
            while self._events:
                yield self._events.popleft()
            obj = self._read_message(timeout if timeout is not None else 3600.0)
            if obj is None:
                if timeout is not None:
                    return
                continue
            if "ev" in obj:
                self._events.append(obj)

    def _account(self, sample: dict) -> dict:
        st = self.telemetry_stats
        seq = sample.get("seq")
        if isinstance(seq, int):
            if st.last_seq is not None and seq != st.last_seq + 1:
                missing = seq - st.last_seq - 1
                if missing > 0:
                    st.lost += missing
                    st.gaps += 1
                    sample = {**sample, "gap": missing}
            st.last_seq = seq
        st.received += 1
        return sample

    def _unwrap_us(self, t_us: int) -> int:
        """Device ticks_us (wraps at 2**30) -> a continuous sample clock for this telemetry stream."""
        prev = self._tel_us
        if prev is None:
            self._tel_us = t_us
            return t_us
        step = (t_us - prev) & TICKS_MASK
        if step >= TICKS_MASK // 2:
            step -= TICKS_MASK + 1
        self._tel_us = prev + step
        return self._tel_us

    def telemetry_samples(self, ev: dict) -> list[dict]:
        """One telemetry event -> its samples, each {seq, t_ms, t_us, i_ua (None: no fresh measurement), v_mv, fresh,
        age_ms, setpoint_ua, state, samples, program, burst}
        (a batch event carries n samples `dt_us` apart from `t0_us`; a single-sample event is passed through)."""
        if not isinstance(ev.get("i_ua"), list):
            return [ev]
        n, dt, seq = ev.get("n", len(ev["i_ua"])), ev.get("dt_us", 0), ev.get("seq")
        t0 = self._unwrap_us(ev.get("t0_us", 0))
        if self._tel_ms_base is None:
            # device ms of this stream's first sample: the batch went out at t_ms, its last sample a little before
            self._tel_ms_base = ev.get("t_ms", 0) - (n - 1) * dt / 1000 - t0 / 1000
        common = {k: ev[k] for k in ("setpoint_ua", "state", "samples", "program", "burst", "zone", "zone_limit_ua")
                  if k in ev}
        ages = ev.get("age_ms") or ()
        out = []
        for k in range(n):
            t_us = t0 + k * dt
            i_ua = ev["i_ua"][k]
            out.append({"ev": ev.get("ev"), "seq": None if seq is None else seq + k,
                        "t_ms": round(self._tel_ms_base + t_us / 1000, 3), "t_us": t_us,
                        "i_ua": i_ua, "v_mv": ev["v_mv"][k] if k < len(ev.get("v_mv", ())) else None,
                        # null i_ua: the device has no fresh measurement (burst off, no supervisor sample yet)
                        "fresh": i_ua is not None, "age_ms": ages[k] if k < len(ages) else None,
                        **common})
        return out

    def telemetry(self, rate_hz: int = 20, duration_s: float | None = None, enable: bool = True,
                  other_events: list | None = None) -> Iterator[dict]:
        """Yield telemetry samples (seq gaps counted in `telemetry_stats`, and a `gap` key on the sample after a
        gap). Other events are appended to `other_events` if given. Telemetry is switched off when the iterator
        finishes or is closed."""
        if enable:
            self.telemetry_enable(True, rate_hz)
        end = None if duration_s is None else time.monotonic() + duration_s
        try:
            while end is None or time.monotonic() < end:
                if self._events:
                    ev = self._events.popleft()
                else:
                    left = 1.0 if end is None else max(0.0, min(1.0, end - time.monotonic()))
                    ev = self._read_message(left)
                    if ev is None or "ev" not in ev:
                        continue
                if ev.get("ev") == codes.EV_TELEMETRY:
                    for sample in self.telemetry_samples(ev):
                        yield self._account(sample)
                elif other_events is not None:
                    other_events.append(ev)
        finally:
            if enable:
                try:
                    self.telemetry_enable(False)
                except (DeviceError, TransportError):
                    pass
