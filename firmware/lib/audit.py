# Audit trail of level-table changes (who, when, before, after), kept as a persisted ring buffer.
import time

import store
from pscodes import AUDIT_MAX_ENTRIES

AUDIT_PATH = "/audit.bin"


class Audit:
    def __init__(self, path=AUDIT_PATH, max_entries=AUDIT_MAX_ENTRIES):
        self.path = path
        self.max_entries = max_entries
        self.entries = []
        self.next_seq = 1
        self.problem = None
        try:
            rec = store.read(path)
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

    def record(self, operator, level, before_ua, after_ua, utc=None, zone=None, zone_limit_ua=None):
        # zone + its limit: the treatment zone chosen when the level changed (what the output was bound by)
        return self._add({"seq": self.next_seq, "t": time.time(), "utc": utc, "operator": operator, "level": level,
                          "before_ua": before_ua, "after_ua": after_ua, "zone": zone, "zone_limit_ua": zone_limit_ua})

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
        store.write_atomic(self.path, {"next_seq": self.next_seq, "entries": self.entries})
