# PIO programs of the HIL rig (assembled by rp2.asm_pio on the rig Pico; by picostim's _pioasm in tests).
#
# level_durations: one state machine per bridge tap (jmp_pin = the tap). Counts PIO cycle pairs while the pin is
# low, pushes the count, then counts while it is high, pushes, and so on. X counts down from 0xFFFFFFFF, so the
# host side (rigcapture.durations_to_edges) turns each word back into a duration: n = 0xFFFFFFFF - word.
# At 125 MHz one count is 16 ns and X lasts 68 s, far longer than any capture window.
import rp2


@rp2.asm_pio(in_shiftdir=rp2.PIO.SHIFT_LEFT, autopush=True, push_thresh=32, fifo_join=rp2.PIO.JOIN_RX)
def level_durations():
    wrap_target()
    mov(x, invert(null))      # x = 0xFFFFFFFF: start counting a low level
    label("low")
    jmp(pin, "rise")          # 2 cycles per count while low
    jmp(x_dec, "low")
    label("rise")
    in_(x, 32)                # autopush: the low level's count
    mov(x, invert(null))
    label("high")
    jmp(pin, "still_high")    # 2 cycles per count while high
    jmp("fall")
    label("still_high")
    jmp(x_dec, "high")
    label("fall")
    in_(x, 32)                # autopush: the high level's count
    wrap()


# Button press / FAULT_N pulse of an exact length: pull a cycle count, drive the (open-drain, via pindirs) pin low
# for that many loop iterations, release. Keeps press timing independent of the rig's Python main loop.
@rp2.asm_pio(set_init=rp2.PIO.IN_HIGH)
def timed_low():
    pull(block)
    mov(x, osr)
    set(pins, 0)              # output latch low; the pin only drives while pindirs = 1
    set(pindirs, 1)           # pin driven (its output latch is 0): active low
    label("hold")
    jmp(x_dec, "hold")
    set(pindirs, 0)           # released: the pull-up takes it high
