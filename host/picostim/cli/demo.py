"""`picostim demo` (`make demo`): nothing attached needed. Starts a virtual board, flashes it, runs a short session
at a few levels, captures each with the virtual rig and prints requested vs measured (amplitude, phase widths,
gap, rate, DC), then writes a waveform plot (PNG)."""
from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from . import main
from ._common import check_board, check_load, check_output_file, friendly_errors


def _wait_running(dev, timeout_s: float = 20.0) -> dict:
    """Until the device runs at a steady setpoint (it ramps increases, S8): its target, or the unit's cap bound
    when the level lies above it."""
    end = time.monotonic() + timeout_s
    last = None
    st = dev.status()
    while not (st.get("state") == "running" and (st.get("setpoint_ua") == st.get("target_ua")
                                                  or st.get("setpoint_ua") == last)):
        if time.monotonic() > end:
            raise click.ClickException(f"the board did not settle at its target amplitude: {st}")
        last = st.get("setpoint_ua") if st.get("state") == "running" else None
        time.sleep(0.1)
        st = dev.status()
    return st


def measure(vb, dev, level: int, phase_us: int, gap_us: int, rate_hz: float, capture_s: float) -> dict:
    """One level: start, wait out the device's ramp, capture at the electrodes, stop."""
    applied = dev.start(level=level, phase_us=phase_us, gap_us=gap_us, rate_hz=rate_hz, duration_s=60)
    st = _wait_running(dev)
    cap = vb.rig.capture(capture_s)
    dev.stop()
    act = [p for p in cap.active_pulses() if not p.partial]
    amps = [abs(a) for p in act for a in p.amp_ua]
    widths = [w / 1000 for p in act for w in p.widths_ns]
    gaps = [p.gap_ns / 1000 for p in act if p.gap_ns is not None]
    mean = (lambda xs: sum(xs) / len(xs) if xs else float("nan"))
    return {"level": level, "state": st.get("state"), "target_ua": st.get("target_ua", st.get("setpoint_ua")),
            "setpoint_ua": st.get("setpoint_ua"),
            "applied": applied, "capture": cap,
            "amp_ua": mean(amps), "amp_spread_ua": (max(amps) - min(amps)) if amps else float("nan"),
            "phase_us": mean(widths), "gap_us": mean(gaps), "rate_hz": cap.rate_hz, "dc_ua": cap.dc_ua,
            "n_pulses": len(act), "unbalanced": cap.n_unbalanced}


def plot(results: list[dict], path: Path, board: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7))
    for r in results:
        cap = r["capture"]
        act = [p for p in cap.active_pulses() if not p.partial]
        if not act:
            continue
        p = act[len(act) // 2]
        span = int(sum(p.widths_ns) + (p.gap_ns or 0))
        t0, t1 = max(cap.t0_ns, p.t_ns - span // 4), min(cap.t1_ns, p.t_ns + span + span // 4)
        tr = cap.trace(1500, t0, t1)
        ax1.plot((tr.t_ns - p.t_ns) / 1000, tr.i_ua, label=f"level {r['level']} ({r['amp_ua']:.0f} µA)")
        tr2 = cap.trace(3000)
        ax2.plot((tr2.t_ns - cap.t0_ns) / 1e6, tr2.i_ua, linewidth=0.6, label=f"level {r['level']}")
    ax1.set_title(f"{board}: one biphasic pulse pair per level (virtual rig, electrode current)")
    ax1.set_xlabel("µs from pulse start")
    ax1.set_ylabel("µA")
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.set_title("capture window")
    ax2.set_xlabel("ms")
    ax2.set_ylabel("µA")
    ax2.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _levels_param(ctx, param, value):
    try:
        levels = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give level numbers separated by commas, e.g. 1,3,5") from None
    if not levels or min(levels) < 1:
        raise click.BadParameter(f"{value!r}: levels are numbered from 1")
    return levels


@main.command()
@click.option("--board", "-b", default="handheld-home", show_default=True, callback=lambda c, p, v: check_board(v) and v)
@click.option("--load", default="2k", show_default=True, help="electrode load: 500, 2k, 10k, skin, ...",
              callback=lambda c, p, v: check_load(v))
@click.option("--levels", "levels", default="1,3,5", show_default=True, help="levels to run",
              callback=_levels_param)
@click.option("--phase-us", type=int, default=200, show_default=True)
@click.option("--gap-us", type=int, default=100, show_default=True)
@click.option("--rate-hz", "--rate", "rate_hz", type=float, default=50.0, show_default=True)
@click.option("--capture-s", type=float, default=0.5, show_default=True, help="rig capture per level (s)")
@click.option("--clock", type=click.Choice(["model", "cpu", "realtime"]), default="model", show_default=True,
              help="virtual clock: model = deterministic, cpu = host-speed scaled to RP2040 speed")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False, path_type=Path), default=Path("demo.png"),
              show_default=True)
@friendly_errors
def demo(board, load, levels, phase_us, gap_us, rate_hz, capture_s, clock, plot_file):
    """Virtual board end to end: flash, stimulate at a few levels, measure at the electrodes, plot."""
    from .. import deploy
    from ..device import Device
    from ..sim import VirtualBoard
    from ..target import wait_alive
    from ..transport import SerialTransport

    check_output_file(plot_file, "--plot")
    n_levels = len(check_board(board)["levels_ua"])
    if max(levels) > n_levels:
        raise click.BadParameter(f"{board} has levels 1..{n_levels}", param_hint="--levels")
    console = Console(width=max(110, Console().width))
    t_start = time.monotonic()
    with VirtualBoard(board=board, load=load, clock=clock) as vb:
        console.print(f"virtual board [bold]{board}[/] on {vb.port}, load {load}, clock {clock}")
        wait_alive(vb.port)
        with SerialTransport(vb.port) as t:
            r = deploy.deploy(t, board)
            console.print("flash: " + r.summary())
            r2 = deploy.deploy(t, board)
            console.print("flash again: " + r2.summary() + f" ({r2.seconds:.2f} s)")
            console.print("flash again, without --verify: " + deploy.deploy(t, board, verify=False).summary())
            dev = Device(t, owns_transport=False)
            hello = dev.hello()
            console.print(f"hello: fw {hello.get('fw')}, board {hello.get('board')}, uid {hello.get('uid')}, "
                          f"cap {hello.get('cap_ua')} µA, levels {hello.get('levels_ua')}")
            # a virtual unit has real parts (tolerances): calibrate it against the rig, as the production station
            from ..calibration import calibrate
            vb.rig.set_load("2k")
            c = calibrate(dev, vb.rig, operator="demo")
            vb.rig.set_load(load)
            console.print(f"calibrated (unit seed {vb.unit_seed}): worst level error "
                          f"{c.summary(c.before)['worst_error_pct']:.2f} % before, "
                          f"{c.summary(c.after)['worst_error_pct']:.2f} % after; cap bound {c.cap_bound_ua} µA")
            results = [measure(vb, dev, lv, phase_us, gap_us, rate_hz, capture_s) for lv in levels]
        table = Table(title=f"requested vs measured at the electrodes ({board}, {load} load, "
                            f"{capture_s:g} s per level; a level above the unit's cap bound is requested at it)")
        for c in ("level", "amplitude µA\nreq / meas", "phase µs\nreq / meas", "gap µs\nreq / meas",
                  "rate Hz\nreq / meas", "DC µA", "pairs", "unbal."):
            table.add_column(c, justify="right")
        for res in results:
            req_ua = min(hello["levels_ua"][res["level"] - 1], res["setpoint_ua"] or 0)
            ap = res["applied"]
            table.add_row(str(res["level"]), f"{req_ua} / {res['amp_ua']:.1f}",
                          f"{ap.get('phase_us', phase_us)} / {res['phase_us']:.2f}",
                          f"{ap.get('gap_us', gap_us)} / {res['gap_us']:.2f}",
                          f"{ap.get('rate_hz', rate_hz)} / {res['rate_hz']:.2f}",
                          f"{res['dc_ua']:.3f}", str(res["n_pulses"]), str(res["unbalanced"]))
        console.print(table)
        plot(results, plot_file, board)
    console.print(f"waveform plot: {plot_file}   (demo took {time.monotonic() - t_start:.1f} s)")
