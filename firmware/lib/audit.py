# Audit trail of level-table changes (who, when, before, after), kept as a persisted ring buffer.
import json
import struct
import time
from binascii import crc32

import store
from pscodes import AUDIT_MAX_ENTRIES

AUDIT_PATH = "/audit.bin"


class Audit:
    def __init__(self, path=None, max_entries=AUDIT_MAX_ENTRIES):
        # AUDIT_PATH read now, not when the module loaded (tests point it into a sandbox after importing audit: the
        # default used to read a stray /audit.bin of the host running the tests, heap and all)
        self.path = path or AUDIT_PATH
        self.max_entries = max_entries
        self.entries = []
        self.next_seq = 1
        self.problem = None
        try:
            rec = store.read(self.path)
            if rec is not None:
                ents = rec.get("entries") if isinstance(rec, dict) else None
                if not isinstance(ents, list):
                    raise store.StoreError("entries missing")
                self.entries = [e for e in ents if isinstance(e, dict)][-max_entries:]
                self.next_seq = rec.get("next_seq", len(self.entries) + 1)
                if not isinstance(self.next_seq, int):
                    self.next_seq = len(self.entries) + 1
        except (store.StoreError, OSError) as e:
            # a corrupt audit file must not stop the device; start a new trail and say so
            self.problem = str(e)
            self.entries = []

    def record(self, operator, level, before_ua, after_ua, utc=None, zone=None, zone_limit_ua=None, key_id=None,
               what=None):
        # zone + its limit: the treatment zone chosen when the level changed (what the output was bound by);
        # key_id: the maker's key that signed the change on a locked unit (issue 14); what: lock/unlock entries
        # (both only when given: 32 entries of one more key each would cost ~3 KB of a 192 KB heap)
        e = {"seq": self.next_seq, "t": time.time(), "utc": utc, "operator": operator, "level": level,
             "before_ua": before_ua, "after_ua": after_ua, "zone": zone, "zone_limit_ua": zone_limit_ua}
        if key_id:
            e["key_id"] = key_id
        if what:
            e["what"] = what
        return self._add(e)

    def _add(self, e):
        # (calset.py adds calibration entries: level "calibration", before/after [out_gain, out_off, sense_gain,
        # sense_off] or None)
        self.next_seq += 1
        self.entries.append(e)
        if len(self.entries) > self.max_entries:
            self.entries.pop(0)
        self._save()
        return e

    def clear(self):
        self.entries = []
        self._save()

    def _save(self):
        """The same record store.write_atomic would write (store.read reads it), encoded entry by entry: no
        allocation of the whole trail at once (a full trail is ~6 KB; a fragmented 192 KB heap may not have that
        in one piece). Pass 1 finds the payload's length and CRC, pass 2 writes the temp file; store.commit's
        rename makes it current."""
        n = 0
        crc = 0
        for part in self._parts():
            n += len(part)
            crc = crc32(part, crc)
        if n > store.MAX_PAYLOAD:
            raise store.StoreError("record too large")
        hdr = struct.pack(store.HEADER, store.MAGIC, store.CONFIG_VERSION, n, crc & 0xFFFFFFFF)
        store.commit(self.path, hdr, self._parts)

    def _parts(self):
        yield ('{"next_seq": %d, "entries": [' % self.next_seq).encode()
        first = True
        for e in self.entries:
            if not first:
                yield b", "
            first = False
            yield json.dumps(e).encode()
        yield b"]}"
