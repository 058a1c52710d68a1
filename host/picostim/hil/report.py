"""Self-contained HTML report from a HIL record: summary, DUT/rig identity, every test with its measurements and
waveform plots (inline base64 PNG drawn with matplotlib's Agg backend; no external files, scripts or fonts).
"""
from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

from . import measure as M

REPORT_NAME = "report.html"

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0} td,th{border:1px solid #ccc;padding:2px 8px;font-size:.9em}
th{background:#f0f0f0;text-align:left} .num{text-align:right;font-variant-numeric:tabular-nums}
.PASS,.passed{color:#176f2c;font-weight:600} .FAIL,.failed,.error{color:#b00020;font-weight:600}
.skipped{color:#8a6d00} .incomplete,.INCOMPLETE{color:#8a4b00;font-weight:600} details{margin:.3em 0 .8em 0} summary{cursor:pointer}
.msg{font-family:monospace;font-size:.85em;white-space:pre-wrap;color:#b00020}
.banner{padding:.5em 1em;border-radius:4px;display:inline-block;font-size:1.2em}
.bPASS{background:#dff3e4} .bFAIL{background:#fbe3e6} .bINCOMPLETE{background:#fdeccc}
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _fmt(v, unit: str = "") -> str:
    return "" if v is None else M.fmt_value(v, unit)


def plot_png(waveform: dict) -> str:
    """Return a base64 PNG of one waveform dict (t_us, series, unit, title)."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in any thread

    fig = Figure(figsize=(7.5, 2.4), dpi=90)
    ax = fig.add_subplot(1, 1, 1)
    t = waveform.get("t_us") or []
    span = (t[-1] - t[0]) if len(t) > 1 else 0
    scale, xunit = (1e-3, "ms") if span > 5000 else (1.0, "us")
    xs = [x * scale for x in t]
    lim = waveform.get("limits") or [None, None]
    if xs and any(v is not None for v in lim):
        lo, hi = lim
        if lo is not None and hi is not None:
            ax.axhspan(lo, hi, color="tab:green", alpha=0.12, label=f"limits {_fmt(lo)}..{_fmt(hi)}")
        for v in (lo, hi):
            if v is not None:
                ax.axhline(v, color="tab:green", linewidth=0.7, linestyle=":")
    if waveform.get("requested") is not None:
        ax.axhline(waveform["requested"], color="tab:red", linewidth=0.9, linestyle="--",
                   label=f"requested {_fmt(waveform['requested'])}")
    for name, ys in (waveform.get("series") or {}).items():
        ax.step(xs, ys, where="post", linewidth=0.9, label=name)
    ax.set_xlabel(f"time ({xunit})")
    ax.set_ylabel(waveform.get("unit", ""))
    ax.set_title(waveform.get("title") or waveform.get("name", ""), fontsize=9)
    ax.grid(True, linewidth=0.3)
    if ax.get_legend_handles_labels()[0] and (len(waveform.get("series") or {}) > 1
                                              or waveform.get("requested") is not None or waveform.get("limits")):
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _measurement_table(ms: list) -> str:
    rows = ["<table><tr><th>measurement</th><th>value</th><th>unit</th><th>low</th><th>high</th>"
            "<th>outcome</th><th>attempt</th></tr>"]
    for m in ms:
        u = m.get("unit") or ""
        rows.append(
            f"<tr><td>{_e(m.get('name'))}</td><td class=num>{_e(_fmt(m.get('value'), u))}</td><td>{_e(u)}</td>"
            f"<td class=num>{_e(_fmt(m.get('low'), u))}</td><td class=num>{_e(_fmt(m.get('high'), u))}</td>"
            f"<td class={_e(m.get('outcome'))}>{_e(m.get('outcome'))}</td><td class=num>{_e(m.get('attempt'))}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def render(record: dict, max_plots: int = 200) -> str:
    s = record.get("summary", {})
    out = ["<!doctype html><html><head><meta charset=utf-8><title>picostim HIL report</title>",
           f"<style>{_CSS}</style></head><body>",
           f"<h1>picostim HIL report</h1><div class='banner b{_e(record.get('outcome'))}'>"
           f"{_e(record.get('outcome'))}: {s.get('passed', 0)} passed, {s.get('failed', 0)} failed, "
           f"{s.get('error', 0)} errors, {s.get('skipped', 0)} skipped, {s.get('incomplete', 0)} did not finish, "
           f"{s.get('retried', 0)} retried "
           f"&middot; {s.get('measurements', 0)} measurements ({s.get('measurements_failed', 0)} out of limits)</div>",
           f"<p>run {_e(record.get('run_id'))} &middot; {_e(record.get('started'))} &rarr; {_e(record.get('finished'))}"
           f" &middot; {_e(record.get('duration_s'))} s &middot; picostim {_e(record.get('host', {}).get('picostim'))}"
           f" &middot; bundle {_e(', '.join(str(d.get('bundle')) for d in record.get('duts', [])) or 'none')}"
           f" on {_e(record.get('host', {}).get('node'))}</p>"]
    opts = record.get("options", {})
    out.append("<h2>Setup</h2><table>" + "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in opts.items()) + "</table>")
    for title, items in (("DUT", record.get("duts", [])), ("Rig", record.get("rigs", []))):
        out.append(f"<h2>{title}</h2>")
        if not items:
            out.append("<p>(none recorded)</p>")
            continue
        keys = sorted({k for it in items for k in it if not isinstance(it[k], (list, dict))})
        out.append("<table><tr>" + "".join(f"<th>{_e(k)}</th>" for k in keys) + "</tr>")
        for it in items:
            out.append("<tr>" + "".join(f"<td>{_e(it.get(k))}</td>" for k in keys) + "</tr>")
        out.append("</table>")

    places = any(t.get("place") for t in record.get("tests", []))   # benches / labgrid places: say which ran it
    out.append("<h2>Tests</h2><table><tr><th>test</th>" + ("<th>place</th>" if places else "") +
               "<th>outcome</th><th>DUT</th><th>duration (s)</th><th>retries</th><th>measurements</th></tr>")
    for t in record.get("tests", []):
        nfail = sum(1 for m in t.get("measurements", []) if m.get("outcome") == M.FAIL)
        anchor = "t" + str(abs(hash(t["nodeid"])))
        out.append(f"<tr><td><a href='#{anchor}'>{_e(t['nodeid'])}</a></td>"
                   + (f"<td>{_e(t.get('place'))}</td>" if places else "") + f"<td class={_e(t['outcome'])}>"
                   f"{_e(t['outcome'])}</td><td>{_e(t.get('dut') or '')}</td>"
                   f"<td class=num>{t.get('duration_s', 0):.2f}</td>"
                   f"<td class=num>{t.get('retries', 0)}</td><td class=num>{len(t.get('measurements', []))}"
                   f"{f' ({nfail} FAIL)' if nfail else ''}</td></tr>")
    out.append("</table>")

    plots = 0
    for t in record.get("tests", []):
        anchor = "t" + str(abs(hash(t["nodeid"])))
        is_bad = t["outcome"] in ("failed", "error")
        out.append(f"<details id='{anchor}'{' open' if is_bad else ''}><summary><span class={_e(t['outcome'])}>"
                   f"{_e(t['outcome'])}</span> {_e(t['nodeid'])}</summary>")
        if t.get("message"):
            out.append(f"<div class=msg>{_e(t['message'])}</div>")
        if t.get("attempts") and len(t["attempts"]) > 1:
            out.append("<p>attempts: " + "; ".join(
                f"#{a.get('attempt')} {_e(a.get('outcome'))} {_e(a.get('message', ''))}" for a in t["attempts"]) + "</p>")
        if t.get("measurements"):
            out.append(_measurement_table(t["measurements"]))
        for w in t.get("waveforms", []):
            if plots >= max_plots:
                out.append("<p>(plot limit reached)</p>")
                break
            try:
                png = plot_png(w)
            except Exception as e:  # a broken trace must not lose the report
                out.append(f"<p class=msg>plot {_e(w.get('name'))} failed: {_e(e)}</p>")
                continue
            plots += 1
            out.append(f"<div><img alt='{_e(w.get('name'))}' src='data:image/png;base64,{png}'></div>")
        out.append("</details>")
    out.append("</body></html>")
    return "\n".join(out)


def write(record: dict, directory) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    p = d / REPORT_NAME
    tmp = p.with_suffix(".html.tmp")
    tmp.write_text(render(record))
    os.replace(tmp, p)
    return p
