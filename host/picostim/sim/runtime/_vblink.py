# RPC link from the MicroPython child process ("the CPU") to the board process ("the silicon").
# Runs under the MicroPython unix port. See ../DESIGN.md for the wire format.
import gc
import json
import micropython
import sys

_sock = None
_rt = None          # the unix port's own time module (host clock), captured before the shims replace `time`
_seq = 0
_now = 0            # virtual ns at the last sync
_wall = 0           # host ticks_us when the last sync returned
_local = 0          # virtual ns accounted locally since the last sync (model mode, ticks reads)
_factor = 40        # virtual ns per host ns while executing (cpu mode)
_factor_k = 40 * 1024  # the same in 1/1024ths: now_ns runs in hard IRQs, where a float would allocate
_mode = "cpu"
_call_ns = 4000     # fixed virtual cost of one peripheral call
_ticks_ns = 2000    # virtual cost of one ticks read (model mode)
_sync_every = 200000  # a ticks read syncs with the board after this much local virtual time
_fwd = 0            # how many stdin forwards the board had made when we last asked
_timers = []
_irq = {}
_pending_irq = []
_irq_disabled = False
_in_hard = False
_servicing = False


def init(sock, rt, mode, vclock):
    """vclock: the board profile's mcu.vclock: ref_loop_ns (RP2040 ns per iteration of _ref_loop),
    call_cost_us {op or "default": us}, ticks_cost_us."""
    global _sock, _rt, _mode, _factor, _call_ns, _wall, _costs, _ticks_ns, _overhead_us
    _sock = sock
    _rt = rt
    _mode = mode
    costs = vclock.get("call_cost_us", {})
    _call_ns = int(costs.get("default", 4) * 1000)
    _costs = {k: int(v * 1000) for k, v in costs.items()}
    _ticks_ns = int(vclock.get("ticks_cost_us", 2) * 1000)
    global _irq_entry_ns, _irq_exit_ns
    _irq_entry_ns = int(costs.get("irq_entry", 0) * 1000)
    _irq_exit_ns = int(costs.get("irq_exit", 0) * 1000)
    _wall = rt.ticks_us()
    if mode == "cpu":
        _open_sched()
        # Calibrate against this host now, so virtual time does not depend on how fast the host is:
        # the factor maps host time of a reference loop to the RP2040's time for it.
        host_ns = _measure_ref_loop()
        _factor = vclock.get("ref_loop_ns", 4000) / host_ns
    global _factor_k
    _factor_k = int(_factor * 1024 + 0.5)
    return _factor


_sched_f = None
_sched_buf = bytearray(64)
_waited_last = 0     # run-queue wait (us) at the last sync
_seen_us = 0         # the largest local extrapolation (us past _wall) the firmware has read since the last sync


def _open_sched():
    # cpu mode charges host time between two calls as firmware execution; time this process spent runnable but
    # waiting for a core (another process had it) executes nothing on a Pico, so it is taken out of each gap.
    # /proc/self/schedstat field 2 is that wait in ns, updated whenever the process gets a core back.
    global _sched_f, _waited_last
    try:
        _sched_f = open("/proc/self/schedstat", "rb")
        _waited_last = _waited_us()
    except (OSError, ValueError):
        _sched_f = None


def _waited_us():
    # allocation-free (hard IRQ callbacks make calls too)
    f = _sched_f
    if f is None:
        return 0
    f.seek(0)
    f.readinto(_sched_buf)
    field = 0
    v = 0
    for c in _sched_buf:
        if c == 32:
            if field:
                break
            field = 1
        elif field:
            if c < 48 or c > 57:
                break
            v = v * 10 + c - 48
    return v // 1000


def _ref_loop(n):
    s = 0
    for i in range(n):
        s += i
    return s


def _measure_ref_loop():
    runs = []
    for _ in range(9):
        t0 = _rt.ticks_us()
        _ref_loop(4000)
        runs.append(_rt.ticks_diff(_rt.ticks_us(), t0))
    # Host noise (other processes, interrupts) only ever adds time: the fastest run is the loop's real cost.
    return max(1, min(runs)) * 1000 / 4000


def measure_overhead(fn):
    """Host time our own plumbing (shim method, helper, call() entry and return) spends per call of `fn` (a real
    shim method) with no firmware code in between; it is not the firmware's time, so it is subtracted from every
    call (a Pico spends call_cost_us there instead)."""
    global _overhead_us
    _overhead_us = 0
    gaps = []
    for _ in range(400):
        fn()
        gaps.append(_last_gap_us)
    gaps.sort()
    # The host clock ticks in whole µs and wake-ups after each RPC scatter the gap by a few µs: treat everything
    # up to the 90th percentile as plumbing (the noise floor). Firmware work shorter than that between two
    # peripheral calls is covered by the per-call RP2040 cost, longer work is charged at the CPU factor.
    global _noise_us
    _overhead_us = gaps[360]
    # What the tail above the floor adds on average with no firmware work: subtracted too (through a bounded
    # carry), so the noise does not add up over many calls.
    _noise_us = sum(g - _overhead_us for g in gaps if g > _overhead_us) / len(gaps)
    return _overhead_us


_gc_reserve = 24 * 1024
_costs = {}
_FREE = ("sync", "repl_wait", "repl_enter", "vclock", "fs_write", "power_dead", "kbd_intr", "heap")  # board plumbing
_overhead_us = 0
_irq_entry_ns = 0     # deadline / pin edge -> the callback's first statement (mcu.vclock.call_cost_us.irq_entry)
_irq_exit_ns = 0      # the callback's return -> the interrupted code again
_last_gap_us = 0
_noise_us = 0
_carry = 0


def _elapsed(op, gap_us):
    # Virtual ns since the last sync: the firmware's own execution (scaled to RP2040 speed) plus what this
    # peripheral call costs on an RP2040.
    global _local
    loc = _local
    _local = 0
    cost = 0 if op in _FREE else _costs.get(op, _call_ns)
    if _mode == "cpu":
        global _carry
        us = gap_us - _overhead_us
        x = (us if us > 0 else 0) - _noise_us + _carry
        if x < 0:
            _carry = x if x > -_overhead_us else -_overhead_us
            x = 0
        else:
            _carry = 0
        return int(x * 1000 * _factor) + loc + cost
    if _mode == "realtime":
        return gap_us * 1000
    return loc + cost


_EXC = {"ValueError": ValueError, "TypeError": TypeError, "OSError": OSError, "MemoryError": MemoryError,
        "RuntimeError": RuntimeError, "IndexError": IndexError, "KeyError": KeyError,
        "NotImplementedError": NotImplementedError, "AttributeError": AttributeError}


def _raise(err):
    exc = _EXC.get(err.get("err"), RuntimeError)
    if exc is OSError and "errno" in err:
        raise OSError(err["errno"])
    raise exc(err.get("msg", ""))


def call(op, *args):
    global _seq, _now, _wall, _last_gap_us, _waited_last, _seen_us
    gap = _rt.ticks_diff(_rt.ticks_us(), _wall)
    if _sched_f is not None:
        gap -= _waited_us() - _waited_last
        if gap < _seen_us:
            gap = _seen_us      # never less than the firmware already read: its clock must not step back
        _seen_us = 0
    _last_gap_us = gap
    _seq += 1
    seq = _seq
    _sock.write(json.dumps([seq, op, _elapsed(op, gap)] + list(args)) + "\n")
    while True:
        r = json.loads(_readline())
        if r[0] == seq:
            break
    _now = r[2]
    if len(r) > 3:
        _wall = _rt.ticks_us()
        _events(r[3])
    res = r[1]
    if isinstance(res, dict) and "err" in res:
        _wall = _rt.ticks_us()
        _raise(res)
    if not _servicing and (_timers or _pending_irq):
        _wall = _rt.ticks_us()
        _service()
    if gc.mem_free() < _gc_reserve:
        # Collect the link's own garbage here, off the firmware's clock, so a collection the link caused is
        # not charged as firmware time (the firmware's own allocations still trigger collections in its code).
        gc.collect()
    if _sched_f is not None:
        _waited_last = _waited_us()
    _wall = _rt.ticks_us()
    return res


_rbuf = b""


def _readline():
    # The socket's own readline() reads a byte per system call; read in blocks instead.
    global _rbuf
    while True:
        i = _rbuf.find(b"\n")
        if i >= 0:
            line = _rbuf[:i]
            _rbuf = _rbuf[i + 1:]
            return line
        # (1 KB blocks: a Pico's heap never holds this shim, so its blocks must not be what the firmware's heap
        # cannot find room for; a longer line just takes more blocks)
        chunk = _sock.recv(1024)
        if not chunk:
            raise OSError(104)
        _rbuf += chunk


def _events(evs):
    for ev in evs:
        kind = ev[0]
        if kind == "irq":
            _pending_irq.append(ev[1])
        elif kind == "intr":
            raise KeyboardInterrupt
        elif kind == "hang":
            # Injected firmware hang: spin with no syncs, like a lock-up; only the watchdog gets us out.
            while True:
                pass


def _service():
    # Run pending pin IRQs and due timer callbacks, one at a time, pin IRQs first, looking at both again after
    # every callback: an edge reported in the reply to an RPC a callback made is taken as soon as that callback
    # returns (as the NVIC takes a pending IRQ), not left for some later call (the main loop may sleep first).
    global _servicing
    if _irq_disabled or (not _timers and not _pending_irq):
        return
    _servicing = True
    try:
        while True:
            if _pending_irq:
                h = _irq.get(_pending_irq.pop(0))
                if h:
                    _dispatch(h[0], h[1])
            elif _timers and _timers[0]._deadline <= now_ns():
                t = _timers.pop(0)
                _dispatch(t._expire, t._hard)
            else:
                break
    finally:
        _servicing = False


def _dispatch(cb, hard):
    global _in_hard, _local, _wall
    if hard:
        # Hard IRQ rules as on rp2: the heap is locked, so any allocation raises MemoryError.
        # Time: IRQ entry before the first statement and the return after the last, as measured on the emu engine
        # (mcu.vclock.call_cost_us irq_entry / irq_exit); the Python in between is charged per operation (calls,
        # ticks reads, Timer.init, ring words read: see machine.Timer and rp2.DMA) under the model clock, and as
        # host time under the cpu clock.
        _local += _irq_entry_ns
        _in_hard = True
        err = None
        micropython.heap_lock()
        try:
            cb()
        except Exception as e:
            err = e
        finally:
            # a Ctrl-C (SIGINT -> KeyboardInterrupt) can land inside the callback: unlock before it propagates to
            # the main code, where the firmware handles it (on rp2 it is raised in the main thread, not the IRQ)
            micropython.heap_unlock()
            _local += _irq_exit_ns
            _in_hard = False
        if err is not None:
            print("Uncaught exception in IRQ callback handler")
            sys.print_exception(err)
    else:
        try:
            micropython.schedule(_soft, cb)
        except RuntimeError:
            pass  # scheduler queue full: dropped silently, as on rp2


def _soft(cb):
    cb()


def now_ns():
    global _local, _seen_us
    if _mode == "model":
        _local += _ticks_ns
        t = _now + _local
    elif _mode == "cpu":
        _local += _ticks_ns
        us = _rt.ticks_diff(_rt.ticks_us(), _wall) - _overhead_us
        if us + _overhead_us > _seen_us:
            _seen_us = us + _overhead_us
        t = _now + _local + ((us * 1000 * _factor_k) >> 10 if us > 0 else 0)
    else:
        t = _now + _rt.ticks_diff(_rt.ticks_us(), _wall) * 1000
    if t - _now > _sync_every and not _servicing:
        call("sync")
        return _now
    return t


def cost_ns(op):
    # the profile's RP2040 cost of an operation the shims run locally (no call); model clock only (the cpu clock
    # charges the host time they take)
    return _costs.get(op, 0) if _mode == "model" else 0


def charge(ns):
    # Account virtual time for work the host does faster than an RP2040 would (e.g. busy-wait sleeps).
    global _local
    _local += ns


def add_timer(t):
    remove_timer(t)
    i = 0
    while i < len(_timers) and _timers[i]._deadline <= t._deadline:
        i += 1
    _timers.insert(i, t)


def remove_timer(t):
    for i in range(len(_timers)):
        if _timers[i] is t:
            _timers.pop(i)
            return


def set_irq(gpio, cb, hard):
    if cb is None:
        _irq.pop(gpio, None)
    else:
        _irq[gpio] = (cb, hard)


def in_hard_irq():
    return _in_hard


def disable_irq():
    global _irq_disabled
    s = _irq_disabled
    _irq_disabled = True
    return s


def enable_irq(state=False):
    global _irq_disabled
    _irq_disabled = state
    if not state:
        _service()


def sleep_until(t_ns, wake_on_stdin=False):
    # Sleep in virtual time, waking for timer deadlines; returns "stdin" if input arrived first.
    global _fwd
    while True:
        if _pending_irq and not _servicing:
            _service()      # an IRQ already pending runs before the CPU sleeps (as WFI returns at once)
        target = t_ns
        if _timers and not _irq_disabled and _timers[0]._deadline < target:
            target = _timers[0]._deadline
        if target <= _now:
            target = _now
        seq = _seq + 1
        r = call("sleep_until", target, wake_on_stdin, _fwd)
        reason = r[0]
        _fwd = r[1]
        _note_gpio_in(r, seq)
        if reason == "stdin" and wake_on_stdin:
            return "stdin"
        if _now >= t_ns:
            return "time"


# SIO GPIO_IN as the board saw it when the CPU woke up. A loop that wakes, then reads its inputs, reads them a few
# virtual microseconds later on a Pico; nothing but a rig action in that instant could change them, so a read soon
# after the wake-up returns the sample (charged as the read it replaces) instead of another round trip.
GPIO_IN_FRESH_NS = 100000
_gin = None
_gin_addr = None
_gin_seq = -1


def _note_gpio_in(r, seq):
    global _gin, _gin_addr, _gin_seq
    if len(r) > 2 and _seq == seq:     # (no other call since: a timer callback may have run after the reply)
        _gin_addr, _gin = r[2]         # (the board names the register it sampled)
        _gin_seq = seq
    else:
        _gin_seq = -1


def gpio_in_sample(addr, cost_op):
    """The wake-up sample of the register at addr (SIO GPIO_IN) while it is still fresh (no call since, little
    virtual time), else None."""
    global _local
    if _gin_seq != _seq or addr != _gin_addr:
        return None
    if _mode == "model":
        since = _local
    else:
        since = _rt.ticks_diff(_rt.ticks_us(), _wall) * 1000 * (_factor if _mode == "cpu" else 1)
    if since > GPIO_IN_FRESH_NS:
        return None
    _local += _costs.get(cost_op, _call_ns)
    return _gin


def reset(cause=3):
    call("reset", cause)
    while True:
        pass


def bootloader():
    call("bootloader")
    while True:
        pass
