# Device settings and the level table: board defaults, validation and persistence through store (S12).
import store
from board import validate_levels, BoardError, cap_ua
from pscodes import E_BAD_TYPE, E_OUT_OF_RANGE, E_BAD_REQUEST, E_OVER_CAP, E_UNKNOWN_PROGRAM

CONFIG_PATH = "/config.bin"
LEVELS_PATH = "/levels.bin"

STATUS_OK = "ok"
STATUS_DEFAULTS = "defaults"
STATUS_CORRUPT = "config_corrupt"


class ConfigError(ValueError):
    def __init__(self, code, detail):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def defaults(board):
    lim = board["limits"]
    return {"session_s": lim["session_default_s"], "default_level": 1, "default_program": None,
            "start_low": start_low_default(board)}


def start_low_default(board):
    """Issue 17: every session starts at level 1 unless the profile's config_defaults say otherwise."""
    cd = board.get("config_defaults")
    return bool(cd.get("start_low", False)) if isinstance(cd, dict) else False


def check_config(board, cfg, n_levels, programs):
    """Validate a whole config object; raise ConfigError with a protocol code."""
    if not isinstance(cfg, dict):
        raise ConfigError(E_BAD_TYPE, "config must be an object")
    for k in cfg:
        if k not in ("session_s", "default_level", "default_program", "start_low"):
            raise ConfigError(E_BAD_REQUEST, "unknown config key %s" % k)
    s = cfg.get("session_s")
    if not _is_int(s):
        raise ConfigError(E_BAD_TYPE, "session_s must be an integer")
    if not 1 <= s <= board["limits"]["session_max_s"]:
        raise ConfigError(E_OUT_OF_RANGE, "session_s must be 1..%d" % board["limits"]["session_max_s"])
    lv = cfg.get("default_level")
    if not _is_int(lv):
        raise ConfigError(E_BAD_TYPE, "default_level must be an integer")
    if not 1 <= lv <= n_levels:
        raise ConfigError(E_OUT_OF_RANGE, "default_level must be 1..%d" % n_levels)
    if "start_low" in cfg and not isinstance(cfg["start_low"], bool):
        raise ConfigError(E_BAD_TYPE, "start_low must be true or false")
    p = cfg.get("default_program")
    if p is not None:
        if not isinstance(p, str):
            raise ConfigError(E_BAD_TYPE, "default_program must be a string or null")
        if p not in programs:
            raise ConfigError(E_UNKNOWN_PROGRAM, "program %s not allowed on this board" % p)


def check_levels(board, levels):
    cap = cap_ua(board)
    if not isinstance(levels, list) or not all(_is_int(x) for x in levels):
        raise ConfigError(E_BAD_TYPE, "levels_ua must be a list of integers")
    if len(levels) != len(board["levels_ua"]):
        raise ConfigError(E_OUT_OF_RANGE, "levels_ua must have %d entries" % len(board["levels_ua"]))
    for x in levels:
        if x > cap:
            raise ConfigError(E_OVER_CAP, "level %d uA above the cap %d uA" % (x, cap))
    try:
        validate_levels(levels, cap)
    except BoardError as e:
        raise ConfigError(E_OUT_OF_RANGE, str(e))


class Settings:
    """Holds the applied config and levels; every change is validated whole, then persisted, then applied."""

    def __init__(self, board, programs):
        self.board = board
        self.programs = programs
        self.status = STATUS_DEFAULTS
        self.problem = None
        self.levels = list(board["levels_ua"])
        self.config = defaults(board)
        self._load()

    def _load(self):
        found = False
        bad = []
        try:
            lv = store.read(LEVELS_PATH)
            if lv is not None:
                found = True
                check_levels(self.board, lv.get("levels_ua") if isinstance(lv, dict) else None)
                self.levels = lv["levels_ua"]
        except (store.StoreError, ConfigError, OSError) as e:
            bad.append("levels: %s" % e)
        try:
            cfg = store.read(CONFIG_PATH)
            if cfg is not None:
                found = True
                check_config(self.board, cfg, len(self.levels), self.programs)
                if "start_low" not in cfg:      # a config stored before the key existed: the board's default
                    cfg["start_low"] = start_low_default(self.board)
                self.config = cfg
        except (store.StoreError, ConfigError, OSError) as e:
            bad.append("config: %s" % e)
        if bad:
            # S12: any bad file -> everything from board defaults
            self.levels = list(self.board["levels_ua"])
            self.config = defaults(self.board)
            self.status = STATUS_CORRUPT
            self.problem = "; ".join(bad)
        elif found:
            self.status = STATUS_OK

    def prepare_config(self, partial):
        """Validate and encode the config with `partial` merged in, nothing changed yet. Returns (config, record)
        for commit_config."""
        if not isinstance(partial, dict):
            raise ConfigError(E_BAD_TYPE, "config must be an object")
        new = dict(self.config)
        for k in partial:
            new[k] = partial[k]
        check_config(self.board, new, len(self.levels), self.programs)
        return new, store.encode(new)

    def commit_config(self, new, record):
        """The commit point (see commit_levels): raises only while the old config is still stored and applied."""
        store.commit(CONFIG_PATH, record)
        self.config = new

    def update_config(self, partial):
        new, record = self.prepare_config(partial)
        self.commit_config(new, record)
        return new

    def prepare_levels(self, levels):
        """Validate and encode a new level table: everything that can fail or allocate, with nothing changed yet.
        Returns (table, record) for commit_levels."""
        check_levels(self.board, levels)
        new = list(levels)
        return new, store.encode({"levels_ua": new})

    def commit_levels(self, new, record):
        """The commit point: the record becomes current on the flash, then the table is applied (one assignment,
        no allocation). Raises only while the old table is still stored and applied."""
        store.commit(LEVELS_PATH, record)
        self.levels = new

    def update_levels(self, levels):
        new, record = self.prepare_levels(levels)
        self.commit_levels(new, record)
        return new
