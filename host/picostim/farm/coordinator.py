"""The lab's labgrid coordinator as the farm uses it: places (create, find by name or glob), acquire / release, and
the rfc2217:// URLs of an acquired place's DUT and rig.

A thin layer over labgrid's own client session (`labgrid.remote.client.start_session`, the code behind
`labgrid-client`), so locking means exactly what it means for `labgrid-client acquire`: the coordinator hands a
place to one client (host/user) at a time.
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import logging
import os
import time

from .benches import PORT_NAMES

DEFAULT_PORT = 20408
# pyserial's rfc2217 client waits for the server to acknowledge every modem-control change; ser2net serving a pty
# (a virtual bench) never does, and a test needs no modem control: don't wait for it (labgrid's own SerialDriver
# connects the same way).
URL_OPTIONS = "?ign_set_control"


class FarmError(RuntimeError):
    pass


def coordinator_address(address: str | None = None) -> str:
    addr = address or os.environ.get("LG_COORDINATOR")
    if not addr:
        raise FarmError("no labgrid coordinator: give --lg-coordinator HOST[:PORT] or set LG_COORDINATOR")
    return addr


def _labgrid():
    try:
        from labgrid.remote import client
    except ImportError as e:     # pragma: no cover - labgrid is a pinned dependency
        raise FarmError(f"labgrid is not installed ({e}); run `make setup`") from e
    return client


@contextlib.contextmanager
def _quiet(out=None):
    """labgrid's client prints its progress and logs connection trouble on the root logger; a FarmError says what
    went wrong once, plainly, so keep both out of the operator's terminal while a labgrid call runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(out if out is not None else io.StringIO()):
            yield
    finally:
        root.setLevel(level)


class Coordinator:
    """One client session with the coordinator. Use as a context manager."""

    def __init__(self, address: str | None = None):
        client = _labgrid()
        self.address = coordinator_address(address)
        self._errors = (client.Error, getattr(client, "ErrorGroup", client.Error))
        try:
            with _quiet():
                self._session = client.start_session(self.address, extra={"args": self._args()})
        except self._errors as e:
            raise FarmError(f"labgrid coordinator {self.address}: {str(e).removeprefix('Error: ')}") from None
        except Exception as e:  # grpc: bad address
            raise FarmError(f"labgrid coordinator {self.address}: cannot connect: {e}") from None

    @staticmethod
    def _args(**kw) -> argparse.Namespace:
        base = {"place": None, "allow_unmatched": False, "kick": False, "patterns": [], "tags": []}
        base.update(kw)
        return argparse.Namespace(**base)

    def _call(self, method, **args):
        """Run one labgrid ClientSession command (they read their arguments from `session.args`)."""
        s = self._session
        s.args = self._args(**args)
        out = io.StringIO()
        try:
            with _quiet(out):
                result = method()
                if hasattr(result, "__await__"):
                    result = s.loop.run_until_complete(result)
        except self._errors as e:
            raise FarmError(str(e)) from None
        if s.stopping.is_set():
            raise FarmError(f"labgrid coordinator {self.address} went away")
        return result

    def sync(self) -> None:
        self._call(self._session.sync_with_coordinator)

    def close(self) -> None:
        s, self._session = getattr(self, "_session", None), None
        if s is None:
            return
        try:
            with _quiet():
                s.loop.run_until_complete(s.stop())
                s.loop.run_until_complete(s.close())
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- identity, places ------------------------------------------------------------------------------------------
    @property
    def identity(self) -> str:
        """Who this client is to the coordinator (what `place.acquired` shows): host/user."""
        return f"{self._session.gethostname()}/{self._session.getuser()}"

    @property
    def places(self) -> dict:
        return self._session.places

    def resolve(self, patterns) -> list[str]:
        """Place names for names, glob patterns (rack1-*) or tags (board=handheld-pro), in the order given, each
        once."""
        out = []
        for pattern in patterns:
            if pattern in self.places:
                names = [pattern]
            elif "=" in pattern:
                key, _, value = pattern.partition("=")
                names = sorted(n for n, p in self.places.items() if p.tags.get(key) == value)
                if not names:
                    raise FarmError(f"no labgrid place is tagged {pattern!r}")
            elif any(c in pattern for c in "*?["):
                names = sorted(n for n in self.places if fnmatch.fnmatchcase(n, pattern))
                if not names:
                    raise FarmError(f"no labgrid place matches {pattern!r} (places: {', '.join(sorted(self.places)) or 'none'})")
            else:
                raise FarmError(f"no labgrid place named {pattern!r} (places: {', '.join(sorted(self.places)) or 'none'})")
            out += [n for n in names if n not in out]
        return out

    def holder(self, name: str) -> str | None:
        place = self.places.get(name)
        if place is None:
            raise FarmError(f"no labgrid place named {name!r}")
        return place.acquired or None

    def ensure_place(self, name: str, matches: list[str], tags: dict | None = None) -> None:
        """Create the place if it does not exist, add missing matches, set tags (idempotent)."""
        if name not in self.places:
            self._call(self._session.add_place, place=name)
        place = self.places[name]
        missing = [m for m in matches if not place.hasmatch(m.split("/"))]
        if missing:
            if place.acquired:
                raise FarmError(f"place {name} lacks matches {missing} but is acquired by {place.acquired}")
            self._call(self._session.add_match, place=name, patterns=missing)
        if tags and any(place.tags.get(k) != v for k, v in tags.items()):
            self._call(self._session.set_tags, place=name, tags=[f"{k}={v}" for k, v in {**place.tags, **tags}.items()])

    # -- locking ---------------------------------------------------------------------------------------------------
    def try_acquire(self, name: str) -> str | None:
        """Acquire `name`. Returns None when this client now holds it, else who holds it (nothing changed)."""
        self.sync()
        holder = self.holder(name)
        if holder:
            return holder
        try:
            self._call(self._session.acquire, place=name)
        except FarmError as e:
            self.sync()
            holder = self.holder(name)
            if holder and holder != self.identity:
                return holder      # lost a race with another client: the coordinator refused
            raise FarmError(f"acquire {name}: {e}") from None
        return None

    def acquire(self, name: str, wait_s: float = 0.0, poll_s: float = 0.5, on_wait=None) -> tuple[bool, str | None]:
        """Acquire `name`, waiting up to `wait_s` while another client holds it. (True, None) when acquired, else
        (False, holder). `on_wait(holder)` is called once when the place is found busy."""
        deadline = time.monotonic() + wait_s
        told = False
        while True:
            holder = self.try_acquire(name)
            if holder is None:
                return True, None
            if not told and on_wait is not None:
                on_wait(holder)
                told = True
            if time.monotonic() >= deadline:
                return False, holder
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    def release(self, name: str) -> None:
        """Release a place this client holds (a place held by someone else is left alone)."""
        self.sync()
        holder = self.holder(name)
        if holder is None:
            return
        if holder != self.identity:
            raise FarmError(f"place {name} is held by {holder}, not by this client ({self.identity}); not released")
        self._call(self._session.release, place=name)

    # -- the acquired place's ports ----------------------------------------------------------------------------------
    def serial_urls(self, name: str, timeout_s: float = 30.0) -> dict:
        """{"dut": "rfc2217://host:port?ign_set_control", "rig": ...} of an acquired place, once its exporter serves
        them (ser2net starts when the place is acquired)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.sync()
            place = self.places.get(name)
            if place is None:
                raise FarmError(f"no labgrid place named {name!r}")
            try:
                resources = self._call(lambda: self._session.get_target_resources(place))
            except FarmError as e:
                resources, err = {}, e
            else:
                err = None
            urls = {}
            for (rname, cls), res in resources.items():
                if cls == "NetworkSerialPort" and rname in PORT_NAMES and res.avail and res.params.get("port"):
                    urls[rname] = f"rfc2217://{res.params['host']}:{res.params['port']}{URL_OPTIONS}"
            if all(k in urls for k in PORT_NAMES):
                return urls
            if time.monotonic() >= deadline:
                missing = [k for k in PORT_NAMES if k not in urls]
                raise FarmError(f"place {name}: exporter serves no {' / '.join(missing)} port within {timeout_s:.0f} s"
                                + (f" ({err})" if err else "") + "; is its exporter running (labgrid-client resources)?")
            time.sleep(0.2)
