# A small RP2040 PIO assembler that runs under MicroPython (and CPython).
#
# The virtual board's `rp2.asm_pio` delegates here, so firmware written for a real Pico
# (e.g. the HIL rig's edge capture in firmware/rig/) assembles unchanged.  Encodings follow
# the RP2040 datasheet section 3.4 (PIO instruction set):
#   bits 15:13 opcode, 12:8 delay and side-set, 7:0 operands.
#
# Usage (same shape as MicroPython's rp2.asm_pio):
#
#   @asm_pio(in_shiftdir=1, autopush=True, push_thresh=32)
#   def capture():
#       wrap_target()
#       wait(1, pin, 0)
#       in_(x, 32)
#       jmp(x_dec, "next")
#       label("next")
#       wrap()
#
# The decorator returns a Program: `.words` (array 'H'), `.wrap_target`, `.wrap`, the
# EXECCTRL/SHIFTCTRL/PINCTRL side-set fields, and the pin init tuples.
from array import array

try:
    from micropython import const
except ImportError:  # CPython (host tests)
    def const(x):
        return x

_MAX_INSTR = const(32)

# PIO pin states for *_init tuples (match rp2.PIO.OUT_LOW/OUT_HIGH/IN_LOW/IN_HIGH)
IN_LOW = const(0)
IN_HIGH = const(1)
OUT_LOW = const(2)
OUT_HIGH = const(3)
SHIFT_LEFT = const(0)
SHIFT_RIGHT = const(1)
JOIN_NONE = const(0)
JOIN_TX = const(1)
JOIN_RX = const(2)


class PIOASMError(Exception):
    pass


class _Operand:
    """A named operand (pins, x, null, block, ...); instructions decide what number it encodes to."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


class _Modified:
    """invert(src) / reverse(src) for mov, rel(n) for irq/wait indices."""

    def __init__(self, kind, value):
        self.kind = kind
        self.value = value


def invert(src):
    return _Modified("invert", src)


def reverse(src):
    return _Modified("reverse", src)


def rel(index):
    return _Modified("rel", index)


_OPERAND_NAMES = ("pins", "x", "y", "null", "pindirs", "pc", "isr", "osr", "exec", "status",
                  "gpio", "pin", "not_x", "x_dec", "not_y", "y_dec", "x_not_y", "not_osre",
                  "block", "noblock", "iffull", "ifempty", "clear")
_OPS = {}
for _n in _OPERAND_NAMES:
    _OPS[_n] = _Operand(_n)

# Operand codes per instruction field (datasheet 3.4.x tables)
_JMP_COND = {None: 0, "not_x": 1, "x_dec": 2, "not_y": 3, "y_dec": 4, "x_not_y": 5, "pin": 6, "not_osre": 7}
_WAIT_SRC = {"gpio": 0, "pin": 1, "irq": 2}
_IN_SRC = {"pins": 0, "x": 1, "y": 2, "null": 3, "isr": 6, "osr": 7}
_OUT_DEST = {"pins": 0, "x": 1, "y": 2, "null": 3, "pindirs": 4, "pc": 5, "isr": 6, "exec": 7}
_MOV_DEST = {"pins": 0, "x": 1, "y": 2, "exec": 4, "pc": 5, "isr": 6, "osr": 7}
_MOV_SRC = {"pins": 0, "x": 1, "y": 2, "null": 3, "status": 5, "isr": 6, "osr": 7}
_MOV_OP = {None: 0, "invert": 1, "reverse": 2}
_SET_DEST = {"pins": 0, "x": 1, "y": 2, "pindirs": 4}


def _code(table, operand, what):
    name = operand.name if isinstance(operand, _Operand) else operand
    if name not in table:
        raise PIOASMError("invalid %s: %r" % (what, operand))
    return table[name]


def _bitcount(n):
    if not isinstance(n, int) or not 1 <= n <= 32:
        raise PIOASMError("bit count must be 1..32, got %r" % (n,))
    return n & 31  # 32 is encoded as 0


def _index(idx, what):
    """IRQ index with optional rel(): bits 4 (rel) and 2:0 (index)."""
    r = 0
    if isinstance(idx, _Modified) and idx.kind == "rel":
        r = 0x10
        idx = idx.value
    if not isinstance(idx, int) or not 0 <= idx <= 7:
        raise PIOASMError("%s index must be 0..7, got %r" % (what, idx))
    return r | idx


class Program:
    def __init__(self, name, words, wrap_target, wrap, labels, sideset_count, sideset_opt, side_pindir,
                 out_init, set_init, sideset_init, execctrl, shiftctrl, pinctrl):
        self.name = name
        self.words = words
        self.wrap_target = wrap_target
        self.wrap = wrap
        self.labels = labels
        self.sideset_count = sideset_count
        self.sideset_opt = sideset_opt
        self.side_pindir = side_pindir
        self.out_init = out_init
        self.set_init = set_init
        self.sideset_init = sideset_init
        self.execctrl = execctrl
        self.shiftctrl = shiftctrl
        self.pinctrl = pinctrl

    def __len__(self):
        return len(self.words)

    def __getitem__(self, i):
        return self.words[i]

    def __repr__(self):
        return "<PIO program %s: %d instr, wrap %d..%d>" % (self.name, len(self.words), self.wrap_target, self.wrap)


class _Emitter:
    """Runs the decorated function twice: pass 0 collects labels, pass 1 emits the words."""

    def __init__(self, sideset_bits, sideset_opt):
        self.sideset_bits = sideset_bits  # side-set pins, not counting the enable bit
        self.sideset_opt = sideset_opt
        self.field_bits = sideset_bits + (1 if sideset_opt else 0)
        self.delay_max = (1 << (5 - self.field_bits)) - 1
        self.labels = {}
        self.pass_no = 0
        self.irq_ref = self.irq_  # one bound object, so wait(1, irq, n) can recognise it
        self.reset()

    def reset(self):
        self.words = []
        self.wrap_target = None
        self.wrap_at = None
        self.last = -1
        self.has_delay = False
        self.has_side = False

    # --- instruction plumbing -----------------------------------------------------------------
    def _emit(self, word):
        if len(self.words) >= _MAX_INSTR:
            raise PIOASMError("program longer than %d instructions" % _MAX_INSTR)
        self.words.append(word)
        self.last = len(self.words) - 1
        self.has_delay = False
        self.has_side = False
        return self

    def __getitem__(self, delay):
        if self.last < 0:
            raise PIOASMError("delay without an instruction")
        if self.has_delay:
            raise PIOASMError("delay given twice")
        if not isinstance(delay, int) or not 0 <= delay <= self.delay_max:
            raise PIOASMError("delay %r out of range 0..%d" % (delay, self.delay_max))
        self.words[self.last] |= delay << 8
        self.has_delay = True
        return self

    def side(self, value):
        if self.last < 0:
            raise PIOASMError("side() without an instruction")
        if self.sideset_bits == 0:
            raise PIOASMError("side() used but no sideset_init declared")
        if self.has_side:
            raise PIOASMError("side() given twice")
        if not isinstance(value, int) or not 0 <= value < (1 << self.sideset_bits):
            raise PIOASMError("side value %r out of range" % (value,))
        # Side-set occupies the most significant bits of the 5-bit field; the enable bit is bit 12.
        shift = 13 - self.field_bits
        bits = value << shift
        if self.sideset_opt:
            bits |= 1 << 12
        self.words[self.last] |= bits
        self.has_side = True
        return self

    def _target(self, label):
        if isinstance(label, int):
            if not 0 <= label < _MAX_INSTR:
                raise PIOASMError("jump address %d out of range" % label)
            return label
        if self.pass_no == 0:
            return 0
        if label not in self.labels:
            raise PIOASMError("unknown label %r" % (label,))
        return self.labels[label]

    # --- directives -----------------------------------------------------------------------
    def label(self, name):
        if self.pass_no == 0:
            if name in self.labels:
                raise PIOASMError("duplicate label %r" % (name,))
            self.labels[name] = len(self.words)

    def wrap_target_(self):
        self.wrap_target = len(self.words)

    def wrap_(self):
        if not self.words:
            raise PIOASMError("wrap() before any instruction")
        self.wrap_at = len(self.words) - 1

    def word(self, instr, label=None):
        if label is not None:
            instr |= self._target(label)
        if not 0 <= instr <= 0xFFFF:
            raise PIOASMError("word %r is not 16 bits" % (instr,))
        return self._emit(instr)

    # --- instructions (datasheet 3.4.2 .. 3.4.10) -----------------------------------------------
    def jmp(self, cond, label=None):
        if label is None:
            cond, label = None, cond
        c = _code(_JMP_COND, cond, "jmp condition") if cond is not None else 0
        return self._emit(0x0000 | c << 5 | self._target(label))

    def wait(self, polarity, src, index):
        if polarity not in (0, 1):
            raise PIOASMError("wait polarity must be 0 or 1")
        if src is self.irq_ref:
            s = 2
            idx = _index(index, "irq")
        else:
            s = _code(_WAIT_SRC, src, "wait source")
            if not isinstance(index, int) or not 0 <= index <= 31:
                raise PIOASMError("wait index must be 0..31")
            idx = index
        return self._emit(0x2000 | polarity << 7 | s << 5 | idx)

    def in_(self, src, count):
        return self._emit(0x4000 | _code(_IN_SRC, src, "in source") << 5 | _bitcount(count))

    def out(self, dest, count):
        return self._emit(0x6000 | _code(_OUT_DEST, dest, "out destination") << 5 | _bitcount(count))

    def _flags(self, args, allowed):
        seen = []
        for a in args:
            name = a.name if isinstance(a, _Operand) else None
            if name not in allowed:
                raise PIOASMError("invalid push/pull option %r" % (a,))
            seen.append(name)
        if "block" in seen and "noblock" in seen:
            raise PIOASMError("both block and noblock given")
        return seen

    def push(self, *args):
        f = self._flags(args, ("iffull", "block", "noblock"))
        return self._emit(0x8000 | ("iffull" in f) << 6 | ("noblock" not in f) << 5)

    def pull(self, *args):
        f = self._flags(args, ("ifempty", "block", "noblock"))
        return self._emit(0x8080 | ("ifempty" in f) << 6 | ("noblock" not in f) << 5)

    def mov(self, dest, src):
        op = None
        if isinstance(src, _Modified):
            op, src = src.kind, src.value
        d = _code(_MOV_DEST, dest, "mov destination")
        return self._emit(0xA000 | d << 5 | _code(_MOV_OP, op, "mov operation") << 3 | _code(_MOV_SRC, src, "mov source"))

    def irq_(self, *args):
        # irq(index) sets; irq(block, index) sets and waits; irq(clear, index) clears.
        if len(args) == 1:
            mode, index = None, args[0]
        elif len(args) == 2:
            mode, index = args
        else:
            raise PIOASMError("irq takes (index) or (mode, index)")
        clr = wait = 0
        if mode is not None:
            name = mode.name if isinstance(mode, _Operand) else None
            if name == "clear":
                clr = 1
            elif name == "block":
                wait = 1
            elif name != "noblock":
                raise PIOASMError("invalid irq mode %r" % (mode,))
        return self._emit(0xC000 | clr << 6 | wait << 5 | _index(index, "irq"))

    def set(self, dest, data):
        if not isinstance(data, int) or not 0 <= data <= 31:
            raise PIOASMError("set data must be 0..31, got %r" % (data,))
        return self._emit(0xE000 | _code(_SET_DEST, dest, "set destination") << 5 | data)

    def nop(self):
        return self.mov(_OPS["y"], _OPS["y"])

    def namespace(self):
        ns = dict(_OPS)
        ns.update({
            "label": self.label, "wrap_target": self.wrap_target_, "wrap": self.wrap_, "word": self.word,
            "jmp": self.jmp, "wait": self.wait, "in_": self.in_, "out": self.out, "push": self.push,
            "pull": self.pull, "mov": self.mov, "irq": self.irq_ref, "set": self.set, "nop": self.nop,
            "invert": invert, "reverse": reverse, "rel": rel,
        })
        return ns


def _pin_count(init):
    if init is None:
        return 0
    if isinstance(init, int):
        return 1
    return len(init)


def assemble(func, out_init=None, set_init=None, sideset_init=None, side_pindir=False, sideset_opt=False,
             in_shiftdir=SHIFT_LEFT, out_shiftdir=SHIFT_LEFT, autopush=False, autopull=False,
             push_thresh=32, pull_thresh=32, fifo_join=JOIN_NONE):
    """Assemble a PIO function (its body calls jmp/wait/in_/... as globals) into a Program."""
    ss_bits = _pin_count(sideset_init)
    if ss_bits + (1 if sideset_opt else 0) > 5:
        raise PIOASMError("side-set uses more than 5 bits")
    em = _Emitter(ss_bits, sideset_opt)
    ns = em.namespace()
    g = func.__globals__
    saved = {}
    missing = []
    for k in ns:
        if k in g:
            saved[k] = g[k]
        else:
            missing.append(k)
    try:
        g.update(ns)
        for pass_no in (0, 1):
            em.pass_no = pass_no
            em.reset()
            func()
    finally:
        for k in missing:
            if k in g:
                del g[k]
        g.update(saved)
    if not em.words:
        raise PIOASMError("empty program")
    n = len(em.words)
    wrap_target = em.wrap_target if em.wrap_target is not None else 0
    wrap = em.wrap_at if em.wrap_at is not None else n - 1
    for t in (push_thresh, pull_thresh):
        if not 1 <= t <= 32:
            raise PIOASMError("push/pull threshold must be 1..32")
    # EXECCTRL: SIDE_EN 30, SIDE_PINDIR 29, WRAP_TOP 16:12, WRAP_BOTTOM 11:7
    execctrl = (1 if sideset_opt else 0) << 30 | (1 if side_pindir else 0) << 29 | wrap << 12 | wrap_target << 7
    # SHIFTCTRL: FJOIN_RX 31, FJOIN_TX 30, PULL_THRESH 29:25, PUSH_THRESH 24:20, OUT_SHIFTDIR 19,
    # IN_SHIFTDIR 18, AUTOPULL 17, AUTOPUSH 16
    shiftctrl = ((fifo_join == JOIN_RX) << 31 | (fifo_join == JOIN_TX) << 30 | (pull_thresh & 31) << 25
                 | (push_thresh & 31) << 20 | (out_shiftdir & 1) << 19 | (in_shiftdir & 1) << 18
                 | (1 if autopull else 0) << 17 | (1 if autopush else 0) << 16)
    # PINCTRL: SIDESET_COUNT 31:29 (includes the enable bit), SET_COUNT 28:26, OUT_COUNT 25:20
    pinctrl = (em.field_bits << 29 | _pin_count(set_init) << 26 | _pin_count(out_init) << 20)
    return Program(getattr(func, "__name__", "pio"), array("H", em.words), wrap_target, wrap, dict(em.labels),
                   ss_bits, sideset_opt, side_pindir, out_init, set_init, sideset_init, execctrl, shiftctrl, pinctrl)


def asm_pio(**kw):
    """Decorator: @asm_pio(...) def prog(): ...  ->  Program."""
    def deco(func):
        return assemble(func, **kw)
    return deco


def disassemble(word):
    """Return a short text form of one instruction word (for error messages and tests)."""
    op = word >> 13
    arg = word & 0xFF
    names = ("jmp", "wait", "in", "out", "push/pull", "mov", "irq", "set")
    return "%s %02x (d/s %02x)" % (names[op], arg, (word >> 8) & 31)
