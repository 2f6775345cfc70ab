#!/usr/bin/env python3
"""Render one decode token of a sluice --trace file (Chrome trace events) as an SVG timeline.

usage: tools/trace_svg.py TRACE.json OUT.svg [--token K]   (K: 1 = last token, 2 = the one before)

The window runs from the K-th last start of layer 0 to the end of that token's last layer. Rows:
the compute thread (layers, expert compute, uploads, waits), each worker (chunk reads, demand
or prefetch) and, when cores stream, the layer-core thread. Plain Python, no dependencies.
"""
import json
import sys

COLORS = {"layer": "#d9d9d9", "expert compute": "#2ca02c", "upload": "#9467bd", "wait": "#d62728",
          "read+decode (demand)": "#ff7f0e", "read+decode (prefetch)": "#1f77b4",
          "core read+decode": "#8c564b", "core wait": "#e377c2"}
# queued (overlapped) uploads draw like uploads
COLORS_ALIAS = {"upload (queued)": "upload", "core upload (queued)": "upload", "core upload": "upload"}


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    k = int(sys.argv[sys.argv.index("--token") + 1]) if "--token" in sys.argv else 1
    all_ev = json.load(open(sys.argv[1]))["traceEvents"]
    ev = [e for e in all_ev if e.get("ph") == "X"]
    names = {e["tid"]: e["args"]["name"] for e in all_ev if e.get("ph") == "M" and e.get("name") == "thread_name"}
    starts = sorted(e["ts"] for e in ev if e["name"] == "layer" and e.get("args", {}).get("layer") == 0)
    if len(starts) < k:
        raise SystemExit("trace has fewer than %d tokens" % k)
    t0 = starts[-k]
    t1 = starts[-k + 1] if k > 1 else max(e["ts"] + e["dur"] for e in ev if e["name"] == "layer")
    win = [e for e in ev if e["ts"] + e["dur"] > t0 and e["ts"] < t1]
    tids = sorted({e["tid"] for e in win})
    W, row, left = 1200, 22, 110
    H = 40 + row * (len(tids) + 1) + 60
    sx = (W - left - 20) / max(t1 - t0, 1.0)
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="11"><rect width="100%%" height="100%%" fill="white"/>' % (W, H),
           '<text x="10" y="18" font-size="13">one decode token: %.1f ms (%s)</text>'
           % ((t1 - t0) / 1000, sys.argv[1].split("/")[-1])]
    for r, tid in enumerate(tids):
        y = 30 + r * row
        out.append('<text x="8" y="%d">%s</text>' % (y + 14, names.get(tid, "thread %d" % tid)))
        for e in win:
            if e["tid"] != tid:
                continue
            x = left + max(e["ts"] - t0, 0) * sx
            w = max(min(e["ts"] + e["dur"], t1) - max(e["ts"], t0), 0) * sx
            h, dy = (6, 0) if e["name"] == "layer" else (row - 6, 4)
            title = e["name"] + (" " + json.dumps(e.get("args", {})) if e.get("args") else "")
            out.append('<rect x="%.1f" y="%d" width="%.2f" height="%d" fill="%s"><title>%s</title></rect>'
                       % (x, y + dy, max(w, 0.5), h, COLORS.get(COLORS_ALIAS.get(e["name"], e["name"]), "#777"), title))
    # time axis and legend
    ya = 30 + len(tids) * row + 8
    for i in range(11):
        x = left + i * (W - left - 20) / 10
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999"/><text x="%.1f" y="%d">%.0f ms</text>'
                   % (x, ya, x, ya + 4, x - 10, ya + 16, (t1 - t0) / 1000 * i / 10))
    lx = left
    for name, c in COLORS.items():
        out.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>'
                   % (lx, ya + 28, c, lx + 14, ya + 37, name))
        lx += 14 + 7 * len(name) + 16
    out.append("</svg>")
    open(sys.argv[2], "w").write("\n".join(out))


if __name__ == "__main__":
    main()
